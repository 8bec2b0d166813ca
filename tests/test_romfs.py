"""The firmware from a ROMFS image (MicroPython >= 1.25, ESP32_GENERIC-ROMFS): the compiled
tree packed by mpremote's own ROMFS builder, mounted at /rom by the simulated board and
imported in place. The tree is deleted before the board boots, so the code can only come
from the image."""
from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
from mpremote.romfs import make_romfs

from cabinlink import msg
from cabinlink_tools import mpycheck
from cabinlink_tools.sim.simulation import Simulation

from carhelper import SimCar


def test_firmware_boots_from_a_romfs_image_and_answers(tmp_path: Path) -> None:
    tree = tmp_path / "fw"
    mpycheck.compile_tree(tree)
    with contextlib.redirect_stdout(io.StringIO()):
        image = bytes(make_romfs(str(tree), mpy_cross=False))
    shutil.rmtree(tree)
    rom = tmp_path / "fw.romfs"
    rom.write_bytes(image)
    with Simulation() as sim:
        acc = sim.add("esp32-devkitc", "ambient", "micropython", name="rom", firmware=rom)
        acc.wait_for("ready", 60)
        car = SimCar(sim)
        a = car.find()
        assert car.ask(a, msg.hello).ok
        assert not any("Traceback" in line for line in acc.log), acc.log


def test_a_romfs_image_needs_the_micropython_runtime(tmp_path: Path) -> None:
    rom = tmp_path / "fw.romfs"
    rom.write_bytes(b"R\xd3\x4d")
    with Simulation() as sim, pytest.raises(ValueError, match="MicroPython runtime only"):
        sim.add("esp32-devkitc", "ambient", "cpython", name="rom", firmware=rom)
