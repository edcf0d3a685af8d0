"""Problem plugins written to temporary files for the tests (never installed, never imported
by name): :data:`BUMP` is a well-behaved one, :data:`BROKEN` defines one class per kind of
broken plugin, :func:`write_plugin` writes them."""

from __future__ import annotations

from pathlib import Path

#: A numpy-only problem as a user would write it (comm ignored): Gaussian bumps
#: c_j = scale * height * exp(-((x_j - centre) / width)^2) at n_points points x_j in [0, 1].
#: ``mode`` makes sample ``bad_sample`` misbehave (raise, NaN, hang, wrong shape or dtype).
BUMP = '''
"""Gaussian bumps at a grid of points: a tiny problem plugin."""
import time

import numpy as np


class Bump:
    """Gaussian bump y = (centre, width, height) -> its values at n_points points."""

    name = "bump"
    n_parameters = 3
    parameter_names = ("centre", "width", "height")
    parameter_bounds = [[0.3, 0.7], [0.3, 0.6], [0.5, 1.5]]
    default_samples = 12
    default_split = (0.5, 0.25, 0.25)
    training_hints = {"standardize_inputs": True, "center_targets": True}

    def __init__(self, comm, *, n_points=12, scale=1.0, mode="ok", bad_sample=2):
        self.comm = comm
        self.n_observables = int(n_points)
        self.scale = float(scale)
        self.mode, self.bad_sample = mode, int(bad_sample)
        self.x = np.linspace(0.0, 1.0, self.n_observables)

    def settings(self):
        return {"n_points": self.n_observables, "scale": self.scale, "mode": self.mode,
                "bad_sample": self.bad_sample}

    def sample_parameters(self, rng):
        box = np.array(self.parameter_bounds)
        return rng.uniform(box[:, 0], box[:, 1])

    def observable_coords(self):
        return {"x": self.x}

    def solve(self, y, *, sample=None):
        centre, width, height = y
        c = self.scale * height * np.exp(-((self.x - centre) / width) ** 2)
        if sample != self.bad_sample or self.mode == "ok":
            return c
        if self.mode == "raise":
            return 1 / 0
        if self.mode == "nan":
            c[3] = np.nan
            return c
        if self.mode == "hang":
            time.sleep(60)
        if self.mode == "shape":
            return c[:-1]
        if self.mode == "dtype":
            return np.array(["a"] * self.n_observables)
        return c
'''

#: broken plugins, one class each (appended to BUMP, so they may subclass Bump)
BROKEN = '''

class NoSolve:
    """Lacks solve()."""

    name = "nosolve"
    n_parameters = 1
    n_observables = 1

    def __init__(self, comm):
        pass

    def settings(self):
        return {}

    def sample_parameters(self, rng):
        return rng.random(1)


class Explodes(Bump):
    """Its constructor raises."""

    def __init__(self, comm, **settings):
        raise RuntimeError("licence server unreachable")


class NotJson(Bump):
    """settings() holds a numpy array."""

    def settings(self):
        return {**super().settings(), "grid": self.x}


class Dice(Bump):
    """Draws from a global generator, not from the one it is given."""

    def sample_parameters(self, rng):
        return np.random.default_rng().uniform(0.2, 0.8, 3)
'''

#: a plugin whose module cannot be imported
IMPORT_ERROR = '''
import no_such_module_for_the_tests  # noqa: F401


class Bump:
    pass
'''


def write_plugin(folder: Path, name: str = "bump.py", text: str | None = None) -> Path:
    """Write a plugin file into ``folder`` (BUMP + BROKEN by default); returns its path."""
    path = folder / name
    path.write_text(text if text is not None else BUMP + BROKEN)
    return path
