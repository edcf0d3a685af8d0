"""UM-Bridge model ``surrogate_std``: an ensemble's predictive standard deviation.

Served by ``serve-surrogate`` next to ``surrogate`` when the model directory holds an
ensemble (``train-surrogate --ensemble K``): y (d,) -> std (m,), physical units, the
calibrated spread of :meth:`surrogate.ensemble.EnsembleSurrogate.predict`. Evaluate only
(the std is not differentiated: Gradient and ApplyJacobian answer ``UnsupportedFeature``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import umbridge

__all__ = ["STD_MODEL_NAME", "StdModel"]

#: the UM-Bridge name of the std model
STD_MODEL_NAME = "surrogate_std"


class StdModel(umbridge.Model):
    """y (d,) -> predictive std (m,) of an ensemble surrogate.

    Parameters
    ----------
    model : surrogate.ensemble.EnsembleSurrogate
        ``predict(y, return_std=True)``, ``n_in``, ``n_out``.
    name : str
        The UM-Bridge model name.
    """

    def __init__(self, model: Any, name: str = STD_MODEL_NAME) -> None:
        super().__init__(name)
        self.model = model

    def get_input_sizes(self, config: dict | None = None) -> list[int]:
        return [int(self.model.n_in)]

    def get_output_sizes(self, config: dict | None = None) -> list[int]:
        return [int(self.model.n_out)]

    def __call__(self, parameters: list, config: dict | None = None) -> list:
        y = np.asarray(parameters[0], dtype=np.float64)
        return [self.model.predict(y, return_std=True)[1].tolist()]

    def supports_evaluate(self) -> bool:
        return True
