"""Output paths are checked before a command does any work: an unwritable `--json`/`--out` fails
at once with one line, not after minutes of sampling (or after printing a table it then cannot save)."""

from __future__ import annotations

import os
from pathlib import Path

from ds_core.errors import UserError

# command -> the options that name a file it writes / a directory it writes into
OUTPUT_FILES = {
    "eval": ("json",),
    "decisions": ("csv", "json"),
    "report": ("out",),
    "attribute": ("out",),
    "explore": ("json",),
    "balance": ("out",),
}
OUTPUT_DIRS = {"train": ("out",), "real-model": ("out",)}


class OutputPathError(UserError, ValueError):
    """An output path the command could not write."""


def check_file(path: str, flag: str) -> Path:
    """`path` can be written as a file: not a directory, its directory exists and takes files
    (tried by opening it for appending; a file the check created is removed again)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise OutputPathError(f"{flag} {path}: that is a directory; give a file name")
    if not p.parent.is_dir():
        raise OutputPathError(f"{flag} {path}: the directory {p.parent} does not exist")
    existed = p.exists()
    try:
        with open(p, "a"):
            pass
    except OSError as e:
        raise OutputPathError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
    if not existed:
        p.unlink(missing_ok=True)
    return p


def check_dir(path: str, flag: str) -> Path:
    """`path` is (or can be made) a directory this process can write into."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{flag} {path}: that is a file, not a directory")
    probe = p if p.exists() else next((q for q in p.parents if q.exists()), None)
    if probe is None or not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path}: cannot write into {probe or p}")
    return p


def check_outputs(cmd: str, args) -> None:
    """Every output path of `cmd` (OUTPUT_FILES, OUTPUT_DIRS) that was given."""
    for name in OUTPUT_FILES.get(cmd, ()):
        if getattr(args, name, None):
            check_file(getattr(args, name), f"--{name}")
    for name in OUTPUT_DIRS.get(cmd, ()):
        if getattr(args, name, None):
            check_dir(getattr(args, name), f"--{name}")
