"""Separable neural surrogates c = W [F(y, theta); 1] (Neural ODE and ResNet features).

The surrogate core: models, the saved artifact and its metadata, metrics, and the one loader
``surrogate.load(model_dir)``, which returns a callable :class:`SurrogateModel`
(``model(y)``, ``model.predict(y)``, Jacobians). Loading imports only numpy and torch.
Above the training layer: :mod:`surrogate.evaluation` (evaluate-surrogate) and
:mod:`surrogate.serving` (UM-Bridge server, PDE model).
"""

from surrogate.artifact import save_surrogate
from surrogate.ensemble import EnsembleSurrogate
from surrogate.errors import SurrogateFormatError
from surrogate.neural_ode import NeuralODE
from surrogate.normalization import Normalizer
from surrogate.resnet import ResNet
from surrogate.separable import SeparableModel, build_extractor
from surrogate.uq_model import OutOfBoxWarning, SurrogateModel, load, load_surrogate

__all__ = ["EnsembleSurrogate", "NeuralODE", "Normalizer", "OutOfBoxWarning", "ResNet",
           "SeparableModel", "SurrogateFormatError", "SurrogateModel", "build_extractor", "load",
           "load_surrogate", "save_surrogate"]
