"""Separable neural surrogates c = W [F(y, theta); 1] (Neural ODE and ResNet features)."""

from surrogate.artifact import SurrogateFormatError, save_surrogate
from surrogate.neural_ode import NeuralODE
from surrogate.normalization import Normalizer
from surrogate.predict import Surrogate, load_surrogate
from surrogate.resnet import ResNet
from surrogate.separable import SeparableModel, build_extractor

__all__ = ["NeuralODE", "Normalizer", "ResNet", "SeparableModel", "Surrogate",
           "SurrogateFormatError", "build_extractor", "load_surrogate", "save_surrogate"]
