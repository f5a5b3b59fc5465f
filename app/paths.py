"""How a command names a file it could not find or use.

A relative path is resolved against the directory the command runs in, which is
not always the one the user thinks of (a wrapper script, another terminal), so an
error that repeats "ticks.csv" leaves them guessing where it looked. These name
the absolute path that was tried and, for a relative one, where it came from.
"""

from __future__ import annotations

import os
from pathlib import Path


def tried(path: str | os.PathLike[str]) -> str:
    """'/abs/ticks.csv (resolved from ticks.csv in /abs)'; an absolute path as it is."""
    if Path(path).is_absolute():
        return os.path.normpath(path)
    cwd = os.getcwd()
    return f"{os.path.normpath(os.path.join(cwd, path))} (resolved from {os.fspath(path)} in {cwd})"
