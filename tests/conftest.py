from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The dual-runtime tests import their helpers as top-level modules, exactly as
# the MicroPython runner does; vectors are read relative to the repository root.
sys.path.insert(0, str(ROOT / "tests" / "mp"))
sys.path.insert(0, str(ROOT / "tests"))
os.chdir(ROOT)


@pytest.fixture
def world() -> Iterator[Any]:
    """A simulated world serving boards to firmware processes (stopped after the test)."""
    from cabinlink_tools.sim.world import World

    with World() as w:
        yield w


@pytest.fixture
def ble(world: Any) -> Iterator[Any]:
    """The simulated radio (Bumble on one virtual link) of ``world``."""
    from cabinlink_tools.sim.ble import BleWorld

    b = BleWorld(world)
    yield b
    b.close()
