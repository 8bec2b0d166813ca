"""Runs every dual-runtime test module of tests/mp/ under the MicroPython unix port.

The same files are collected by pytest on CPython; here they run on the real
MicroPython VM with a small heap, so syntax, builtins and memory use are MicroPython's.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runtimes import micropython_binary

ROOT = Path(__file__).resolve().parent.parent
MP_DIR = ROOT / "tests" / "mp"
HEAP = "256K"


MODULES = sorted(p.stem for p in MP_DIR.glob("test_*.py"))


@pytest.mark.micropython
@pytest.mark.parametrize("module", MODULES)
def test_under_micropython(module: str) -> None:
    # .frozen keeps the port's frozen modules (asyncio) importable; firmware/ holds drivers/.
    env = dict(os.environ, MICROPYPATH=f"{ROOT / 'firmware' / 'lib'}:{MP_DIR}:{ROOT / 'firmware'}:.frozen")
    proc = subprocess.run(
        [micropython_binary(), "-X", f"heapsize={HEAP}", str(MP_DIR / "run.py"), module],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert " 0 failed" in out and "PASS" in out, out
