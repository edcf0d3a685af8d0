"""JIT options for the CDR forms: optimised flags and a per-CPU (or per-ISA) cache folder.

dolfinx compiles every form of :class:`~solvers.cdr.CDRSolver` to C once; the compiled code
is cached on disk. :func:`jit_options` chooses the compiler flags and the cache folder
(see its docstring for ``$VARPRO_JIT_CACHE_DIR``, ``$VARPRO_JIT_MARCH`` and
``$VARPRO_JIT_SEED_DIR``, which the container images use).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any


def jit_options() -> dict[str, Any]:
    """Optimised JIT flags with a cache directory specific to this CPU (-march=native).

    The cache lives in ``$VARPRO_JIT_CACHE_DIR`` if set, else ``~/.cache/fenics``, in a
    sub-folder named by a hash of the CPU model and flags, so that a home directory shared
    by different nodes of a cluster never runs code compiled for another CPU.

    Containers set ``$VARPRO_JIT_MARCH`` to a portable ISA level (e.g. ``x86-64-v2``): the
    forms are then compiled with ``-march=<that>`` and the sub-folder is named by the level
    instead of the CPU, so a cache compiled when the image was built is valid on any machine
    of that level. ``$VARPRO_JIT_SEED_DIR`` names a (read-only) cache of that kind, copied
    into the writable cache the first time a sub-folder is missing there (:func:`seed_cache`).

    Returns
    -------
    dict
        ``jit_options`` for :func:`dolfinx.fem.form` / :class:`dolfinx.fem.Expression`:
        ``cffi_extra_compile_args``, ``cache_dir`` (str) and ``timeout`` (seconds).
    """
    march = os.environ.get("VARPRO_JIT_MARCH", "native")
    if march == "native":
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
            tag_src = "".join(ln for ln in cpuinfo.splitlines(True)
                              if ln.startswith(("model name", "flags")))[:4096]
        except OSError:
            tag_src = platform.processor()
    else:
        tag_src = f"march={march}"
    tag = hashlib.sha1((platform.machine() + tag_src).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("VARPRO_JIT_CACHE_DIR", "~/.cache/fenics")).expanduser() \
        / f"varpro-{tag}"
    seed_cache(cache)
    return {
        "cffi_extra_compile_args": ["-O3", f"-march={march}"],
        "cache_dir": str(cache),
        "timeout": 300,
    }


def seed_cache(cache: Path) -> None:
    """Copy ``$VARPRO_JIT_SEED_DIR/<cache.name>`` to ``cache`` if ``cache`` does not exist.

    The copy goes to a temporary sibling that is renamed into place, so concurrent ranks never
    see a half-copied cache (the loser of the race discards its copy).
    """
    seed = os.environ.get("VARPRO_JIT_SEED_DIR")
    if not seed or cache.exists() or not (Path(seed) / cache.name).is_dir():
        return
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}."))
    try:
        shutil.copytree(Path(seed) / cache.name, tmp, dirs_exist_ok=True)
        for path in (tmp, *tmp.rglob("*")):  # the seed may be read-only; the copy is the
            path.chmod(path.stat().st_mode | 0o200)  # user's, to compile new forms into
        os.rename(tmp, cache)
    except OSError:
        if not cache.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["jit_options", "seed_cache"]
