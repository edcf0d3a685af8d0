"""Parameter/observable datasets: the ``generate-dataset`` MPI engine and a reader.

``open_dataset(path)`` reads a dataset (HDF5 from generate-dataset, .npz, MATLAB .mat) into an
xarray.Dataset. This package never imports torch, and ``import datasets`` does not start MPI
(only :mod:`datasets.generate` and :mod:`datasets.cli` do).
"""

from datasets.errors import ConfigError, ConfigMismatchError, DataError, DatasetFileError
from datasets.reader import open_dataset
from datasets.split_data import SplitData, load_split_data

__all__ = ["ConfigError", "ConfigMismatchError", "DataError", "DatasetFileError", "SplitData",
           "load_split_data", "open_dataset"]
