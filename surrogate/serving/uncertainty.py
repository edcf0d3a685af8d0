"""UM-Bridge model ``surrogate_std``: an ensemble's predictive standard deviation.

Served by ``serve-surrogate`` next to ``surrogate`` when the model directory holds an
ensemble (``train-surrogate --ensemble K``): y (d,) -> std (m,), physical units, the
calibrated spread of :meth:`surrogate.ensemble.EnsembleSurrogate.predict`. Evaluate only
(the std is not differentiated: Gradient and ApplyJacobian answer ``UnsupportedFeature``).
"""

from __future__ import annotations

from typing import Any

from surrogate.serving.adapters import VectorModel, as_float_array, finite_result

__all__ = ["STD_MODEL_NAME", "StdModel"]

#: the UM-Bridge name of the std model
STD_MODEL_NAME = "surrogate_std"


class StdModel(VectorModel):
    """y (d,) -> predictive std (m,) of an ensemble surrogate.

    Parameters
    ----------
    model : surrogate.ensemble.EnsembleSurrogate
        ``predict(y, return_std=True)``, ``n_in``, ``n_out``.
    name : str
        The UM-Bridge model name.
    """

    def __init__(self, model: Any, name: str = STD_MODEL_NAME) -> None:
        super().__init__(name, model)

    def __call__(self, parameters: list, config: dict | None = None) -> list:
        std = self.model.predict(as_float_array(parameters[0]), return_std=True)[1]
        return [finite_result(std, f"the output of {self.name!r}").tolist()]
