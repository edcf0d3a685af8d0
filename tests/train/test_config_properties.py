"""Property-based tests of the training TOML reader: arbitrary input gives a valid
configuration or a ConfigError, never another exception (issue 11)."""

from __future__ import annotations

import math
import tomllib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from train.config import (
    _TYPES,
    AUTO,
    DEFAULTS,
    PROBLEM_DEFAULTS,
    ConfigError,
    merge_config,
    read_toml,
    resolve_config,
    value_range,
)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

numbers = st.one_of(st.integers(-10**19, 10**19), st.floats(allow_nan=True,
                                                             allow_infinity=True))
scalars = st.one_of(numbers, st.booleans(), st.text(max_size=8), st.just(AUTO))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


def typed_value(key: str):
    """Values of the type the key expects (so that the range checks are reached), or any."""
    kind = _TYPES.get(key, float)
    if kind is int:
        typed = st.one_of(st.integers(-2, 40), st.integers(-10**19, 10**19))
    elif kind is float:
        typed = st.one_of(st.floats(0, 1), st.sampled_from(
            [math.nan, math.inf, -math.inf, 0.0, -1.0, 1e300, 2.0]), st.floats(),
            st.integers(-5, 5))
    elif kind is list:
        typed = st.lists(st.one_of(st.integers(-3, 20), st.floats(-1, 2), st.booleans()),
                         max_size=4)
    else:
        typed = values
    return st.one_of(typed, typed, typed, values)


@st.composite
def user_configs(draw):
    """Nested dicts like tomllib returns: mostly known sections and keys with values of the
    expected type (so that the range checks are reached), sometimes anything."""
    names = draw(st.lists(st.sampled_from(list(DEFAULTS)), max_size=3, unique=True))
    if draw(st.integers(0, 9)) == 0:
        names.append(draw(st.sampled_from(["optimizer", "", "Model"])))
    cfg = {}
    for section in names:
        keys = draw(st.lists(st.sampled_from(list(DEFAULTS.get(section, {"x": 0}))),
                             max_size=4, unique=True))
        if draw(st.integers(0, 9)) == 0:
            keys.append("bogus")
        table = {k: draw(typed_value(k)) for k in keys}
        cfg[section] = table if draw(st.integers(0, 19)) else draw(values)
    return cfg


def assert_valid(cfg: dict) -> None:
    """Every numeric setting of a merged configuration is finite and within value_range."""
    for section, table in cfg.items():
        for key, value in table.items():
            items = value if isinstance(value, list) else [value]
            if isinstance(value, list):
                assert not any(isinstance(v, bool) for v in value), (section, key, value)
            for v in items:
                if isinstance(v, bool) or not isinstance(v, int | float):
                    continue
                assert math.isfinite(v), (section, key, value)
                lo, hi, lo_in, hi_in = value_range(section, key)
                if lo is not None:
                    assert v > lo or (lo_in and v == lo), (section, key, value)
                if hi is not None:
                    assert v < hi or (hi_in and v == hi), (section, key, value)


@SETTINGS
@given(user_configs())
def test_merge_gives_a_valid_config_or_a_config_error(user):
    try:
        cfg = merge_config(user, source="t.toml")
    except ConfigError as exc:
        assert str(exc).startswith("t.toml: ")
        return
    assert_valid(cfg)
    for problem in PROBLEM_DEFAULTS:
        resolved = resolve_config(cfg, problem, seed=1)
        assert_valid(resolved)
        assert AUTO not in [v for t in resolved.values() for v in t.values()]


@SETTINGS
@given(st.one_of(st.binary(max_size=200),
                 st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
                 st.lists(st.sampled_from(["[model]", "[adam]", "width = 3", "lr = nan",
                                           "levels = [2, 4]", "levels = [4, 2]", "x = {",
                                           "batch_size = 0", "r_max = 1e400", "= 1", "\xe9"]),
                          max_size=6).map(lambda ls: "\n".join(ls).encode("latin-1"))))
def test_arbitrary_file_bytes_give_a_config_or_a_config_error(tmp_path, content):
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    try:
        user = read_toml(path)
    except ConfigError as exc:
        assert str(path) in str(exc)          # the message names the file
        return
    try:
        tomllib.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):   # pragma: no cover
        raise AssertionError("read_toml accepted a file tomllib refuses") from None
    try:
        assert_valid(merge_config(user, source=str(path)))
    except ConfigError:
        pass
