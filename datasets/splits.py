"""Seeded train / validation / test splits that leave out failed samples.

A split is requested either as sample counts (``400,200,200``) or as fractions
(``0.5,0.25,0.25``); the default is the problem's declared ``default_split`` (SPEC 3's ratios
for CDR and DCR, which give 400/200/200 for 800 CDR samples and 8000/1000/1000 for 10,000 DCR
samples).
The split is drawn from its own random stream of the dataset seed, independent of the
per-sample parameter streams: all sample indices are permuted, failed samples are dropped
from the permutation, and consecutive blocks of it form the three splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.errors import ConfigError

#: the split names, in the order of their sizes
SPLIT_NAMES: tuple[str, str, str] = ("train", "validation", "test")

#: spawn key of the split's random stream (distinct from the sample streams [seed, i])
SPLIT_STREAM = 1


@dataclass(frozen=True)
class SplitSpec:
    """Requested split sizes: sample counts, or fractions of the successful samples.

    Attributes
    ----------
    sizes : (float, float, float)
        Train, validation and test sizes; integers if ``fractions`` is False.
    fractions : bool
        Whether ``sizes`` are fractions (summing to at most 1) rather than counts.
    """

    sizes: tuple[float, float, float]
    fractions: bool

    @classmethod
    def parse(cls, text: str) -> SplitSpec:
        """Parse ``"400,200,200"`` (counts) or ``"0.5,0.25,0.25"`` (fractions)."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 3:
            raise ConfigError(f"--split needs 3 comma-separated sizes (train,validation,test), "
                              f"got {text!r}")
        fractions = any("." in p or "e" in p.lower() for p in parts)
        try:
            train, validation, test = (float(p) if fractions else int(p) for p in parts)
        except ValueError:
            raise ConfigError(f"--split sizes must be numbers, got {text!r}") from None
        spec = cls((train, validation, test), fractions)
        spec.check()
        return spec

    @classmethod
    def default(cls, problem: str) -> SplitSpec:
        """The default split fractions the registered problem ``problem`` declares (SPEC 3's
        for CDR and DCR), else :data:`solvers.plugins.DEFAULT_SPLIT`."""
        from solvers.facts import registered_facts
        from solvers.plugins import DEFAULT_SPLIT

        facts = registered_facts(problem)
        split = facts.default_split if facts is not None else None
        return cls.from_fractions(split if split is not None else DEFAULT_SPLIT)

    @classmethod
    def from_fractions(cls, fractions: tuple[float, float, float]) -> SplitSpec:
        """Fractions (train, validation, test), e.g. a problem's ``default_split``."""
        train, validation, test = (float(f) for f in fractions)
        return cls((train, validation, test), True)

    def check(self, n_samples: int | None = None) -> None:
        """Raise ConfigError if sizes are negative, fractions sum above 1, or counts sum above
        ``n_samples``."""
        if any(not np.isfinite(s) or s < 0 for s in self.sizes):
            raise ConfigError(f"split sizes must be >= 0, got {list(self.sizes)}")
        if self.fractions and sum(self.sizes) > 1 + 1e-9:
            raise ConfigError(f"split fractions must sum to at most 1, got {list(self.sizes)}")
        if not self.fractions and n_samples is not None and sum(self.sizes) > n_samples:
            raise ConfigError(f"split sizes {list(self.sizes)} add up to {sum(self.sizes)}, "
                              f"more than the {n_samples} samples")

    def to_json(self) -> dict[str, object]:
        """JSON form stored in the dataset's configuration."""
        return {"sizes": list(self.sizes), "fractions": self.fractions}


def split_sizes(spec: SplitSpec, n_available: int) -> tuple[int, int, int]:
    """Train, validation and test sizes for ``n_available`` successful samples.

    Counts are used as given when they fit; if failures left fewer samples than requested,
    the counts are scaled down in proportion. Fractions are rounded half up, and when they sum
    to 1 the test split takes the remainder so that no sample is left over.
    """
    sizes = np.asarray(spec.sizes, dtype=np.float64)
    if not spec.fractions:
        if sizes.sum() <= n_available:
            n_train, n_val, n_test = (int(s) for s in sizes)
            return n_train, n_val, n_test
        sizes = sizes / sizes.sum()
    n_train, n_val, n_test = (int(np.floor(f * n_available + 0.5)) for f in sizes)
    n_val = min(n_val, n_available - n_train)
    rest = n_available - n_train - n_val
    n_test = rest if abs(sizes.sum() - 1.0) < 1e-9 else min(n_test, rest)
    return n_train, n_val, n_test


def make_splits(ok: np.ndarray, spec: SplitSpec, seed: int) -> dict[str, np.ndarray]:
    """Seeded, disjoint train / validation / test index sets over the successful samples.

    Parameters
    ----------
    ok : numpy.ndarray
        Shape (n_samples,), bool: which samples were solved successfully.
    spec : SplitSpec
        Requested sizes.
    seed : int
        Dataset seed; the permutation comes from its split stream.

    Returns
    -------
    dict
        ``{"train": idx, "validation": idx, "test": idx}``, each a sorted int64 array of
        sample indices.
    """
    ok = np.asarray(ok, dtype=bool)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SPLIT_STREAM,)))
    order = rng.permutation(ok.size)
    order = order[ok[order]]
    bounds = np.cumsum((0, *split_sizes(spec, order.size)))
    return {name: np.sort(order[bounds[k]:bounds[k + 1]]).astype(np.int64)
            for k, name in enumerate(SPLIT_NAMES)}
