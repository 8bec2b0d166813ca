"""The MicroPython gate: every firmware file compiles with mpy-cross for both ESP32
families, and the firmware tree keeps to the MicroPython subset."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cabinlink_tools import mpycheck

FIRMWARE = mpycheck.FIRMWARE
FILES = sorted(FIRMWARE.rglob("*.py"))
FORBIDDEN = ("typing", "dataclasses", "enum", "abc", "pathlib", "logging", "functools")


@pytest.mark.parametrize("march", mpycheck.ARCHES)
def test_every_firmware_file_compiles(march: str) -> None:
    assert FILES, "no firmware files found"
    assert mpycheck.check(march=march) == {}


def test_gate_rejects_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n    pass\n")
    assert "SyntaxError" in (mpycheck.compile_file(bad, "xtensawin", tmp_path) or "")


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(FIRMWARE)))
def test_firmware_keeps_to_the_micropython_subset(path: Path) -> None:
    text = path.read_text()
    for mod in FORBIDDEN:
        assert not re.search(rf"^\s*(import|from)\s+{mod}\b", text, re.M), f"{path.name} imports {mod}"
    assert not re.search(r"simulat", text, re.I), f"{path.name} mentions the simulation"
    assert not re.search(r"^\s*(import|from)\s+(cabinlink_tools|host)\b", text, re.M)


def test_core_never_imports_hardware() -> None:
    for path in (FIRMWARE / "lib" / "cabinlink").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(machine|bluetooth|esp32|neopixel)\b", text, re.M), path.name
