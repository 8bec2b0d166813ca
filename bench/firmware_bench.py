"""Firmware benchmarks on the simulation (``make bench`` runs them; see bench/run.py).

* heap: each app, compiled to .mpy as deployed, runs under the MicroPython unix port with
  both links on; a car on the CAN bus subscribes to its values and reads
  ``device_info.mem_free`` (sampled by the runtime after a GC) every second. In the
  simulation the *platform* (``machine``, ``bluetooth``, the world and bus clients) is
  Python on the same heap, where a board has it in C; its own import cost is measured
  separately and subtracted, so the figure is the firmware's live heap. The unix port is
  64-bit: objects take roughly 1.6-2x the bytes they take on a 32-bit ESP32, so the 64 KB
  goal is checked against a stricter yardstick than the chip's. Reported: peak firmware
  live heap, its growth from the first to the last fifth of the run, and the .mpy size.
  ``CABINLINK_BENCH_SECONDS`` sets the run length (default 90 s; the issue's 10-minute and
  1-hour figures come from 600 and 3600).
  Two deployments are measured: .mpy files on the board's filesystem (imported into RAM),
  and the same files in a ROMFS image (MicroPython >= 1.25, e.g. the ESP32_GENERIC-ROMFS
  image), imported in place from memory-mapped flash. The unix port holds the image as one
  bytes object on its heap; its size is subtracted like the platform's.
* frame cost: bench/frame_cost.py on the unix port, beside the frame's own bus time.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT / "firmware" / "lib", ROOT / "host", ROOT / "tests"):
    sys.path.insert(0, str(p))

from cabinlink import msg  # noqa: E402
from cabinlink import registry as reg  # noqa: E402
from cabinlink_tools import mpycheck  # noqa: E402
from cabinlink_tools.sim.simulation import Simulation, default_config  # noqa: E402

from carhelper import SimCar  # noqa: E402

HEAP = 512 * 1024  # room to run; the figure reported is the live heap, not this
APPS = ("ambient", "mount", "controller")
BOARD = "esp32-devkitc"
FRAME_US = 268  # an 8-byte 29-bit frame at 500 kbit/s (134 bits with typical stuffing)


def app_heap(app: str, seconds: float, firmware: Path) -> dict[str, Any]:
    """``firmware``: a compiled tree, or a ROMFS image file of one."""
    rom = firmware.stat().st_size if firmware.is_file() else 0
    with Simulation() as sim:
        cfg = default_config(BOARD, app, f"{app}-bench", ble=True)
        acc = sim.add(BOARD, app, "micropython", name=f"{app}-bench", heap="512K",
                      config=cfg, firmware=firmware)
        acc.wait_for("ready", 60)
        car = SimCar(sim)
        a = car.find()
        car.ask(a, msg.hello)
        d = car.ask(a, msg.describe)
        if not d.ok:
            return {"app": app, "error": f"DESCRIBE failed ({d.status}); log: {acc.log[-5:]}"}
        for slot, entry in enumerate(d.value[msg.D_CAPS]):
            for attr in entry.get(msg.C_ATTRS, []):
                car.ask(a, msg.subscribe, slot, attr, 500, 60)
        samples: list[int] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            p = car.ask(a, msg.read, 0, reg.ATTR_DEVICE_INFO_MEM_FREE)
            if p.ok:
                samples.append(HEAP - p.value)
            car.pump(1.0)
        safe = any("SAFE MODE" in line for line in acc.log)
    if len(samples) < 5:
        return {"app": app, "error": "too few samples"}
    base = platform_baseline() + rom
    samples = [s - base for s in samples]
    fifth = max(1, len(samples) // 5)
    first = sum(samples[:fifth]) / fifth
    last = sum(samples[-fifth:]) / fifth
    return {"app": app, "romfs": bool(rom), "seconds": seconds, "peak_live": max(samples),
            "growth": last - first,
            "samples": len(samples), "safe_mode": safe}


_BASELINE: list[int] = []


def platform_baseline() -> int:
    """Live heap the simulated platform modules take in a firmware process (a board has
    them in C), measured under the unix port as the firmware process loads them."""
    if not _BASELINE:
        sim = ROOT / "host" / "cabinlink_tools" / "sim"
        code = ("import gc\ngc.collect()\na = gc.mem_alloc()\n"
                "import _world, machine, bluetooth, canwire, neopixel\n"
                "gc.collect()\nprint(gc.mem_alloc() - a)\n")
        exe = Path(sys.executable).parent / "micropython"
        env = dict(os.environ, MICROPYPATH=f"{sim / 'platform'}:{sim}:.frozen")
        out = subprocess.run([str(exe), "-X", "heapsize=4M", "-c", code], env=env,
                             capture_output=True, text=True, timeout=120, check=True)
        _BASELINE.append(int(out.stdout.split()[-1]))
    return _BASELINE[0]


def romfs_image(tree: Path) -> bytes:
    """The ROMFS image ``mpremote romfs build`` makes of a compiled tree."""
    import contextlib
    import io

    from mpremote.romfs import make_romfs

    with contextlib.redirect_stdout(io.StringIO()):  # it prints the tree
        return bytes(make_romfs(str(tree), mpy_cross=False))


def tree_sizes(firmware: Path) -> dict[str, int]:
    def size(p: Path) -> int:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())

    common = size(firmware / "lib") + size(firmware / "runtime") + (firmware / "main.py").stat().st_size
    drivers = size(firmware / "drivers")
    return {app: common + drivers + size(firmware / "apps" / app) for app in APPS
            if (firmware / "apps" / app).exists()}


def frame_cost() -> dict[str, Any]:
    exe = Path(sys.executable).parent / "micropython"
    env = dict(os.environ, MICROPYPATH=f"{ROOT / 'firmware' / 'lib'}:.frozen")
    out = subprocess.run([str(exe), "-X", "heapsize=512K", str(ROOT / "bench" / "frame_cost.py")],
                         env=env, capture_output=True, text=True, timeout=300, check=True)
    r: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    r["fraction"] = r["us_per_frame"] / FRAME_US
    return r


def run_all(seconds: float | None = None) -> dict[str, Any]:
    seconds = seconds or float(os.environ.get("CABINLINK_BENCH_SECONDS", "90"))
    with tempfile.TemporaryDirectory() as tmp:
        fw = Path(tmp) / "fw"
        mpycheck.compile_tree(fw)
        sizes = tree_sizes(fw)
        rom = Path(tmp) / "fw.romfs"
        rom.write_bytes(romfs_image(fw))
        heaps = [app_heap(app, seconds, image) for app in APPS if app in sizes for image in (fw, rom)]
    return {"sizes": sizes, "heaps": heaps, "frame": frame_cost()}


if __name__ == "__main__":
    print(json.dumps(run_all(), indent=1))
