"""Separable neural surrogates c = W [F(y, theta); 1] (Neural ODE and ResNet features).

``surrogate.load(model_dir)`` returns a callable UQ model (:mod:`surrogate.uq_model`).
"""

from surrogate.artifact import SurrogateFormatError, save_surrogate
from surrogate.neural_ode import NeuralODE
from surrogate.normalization import Normalizer
from surrogate.predict import Surrogate, load_surrogate
from surrogate.resnet import ResNet
from surrogate.separable import SeparableModel, build_extractor
from surrogate.uq_model import OutOfBoxWarning, SurrogateModel, load

__all__ = ["NeuralODE", "Normalizer", "OutOfBoxWarning", "ResNet", "SeparableModel", "Surrogate",
           "SurrogateFormatError", "SurrogateModel", "build_extractor", "load", "load_surrogate",
           "save_surrogate"]
