"""Arguments of ``cabinlink sim``, kept free of heavy imports so ``--help`` stays fast."""
from __future__ import annotations

import argparse
from pathlib import Path

BOARDS_DIR = Path(__file__).resolve().parents[3] / "boards"
APPS = ("ambient", "mount", "controller")
RUNTIMES = ("cpython", "micropython")


def add_sim_arguments(p: argparse.ArgumentParser) -> None:
    known = sorted(b.stem for b in BOARDS_DIR.glob("*.json") if not b.stem.endswith("schema"))
    p.add_argument("--board", default="esp32-devkitc",
                   help=f"board description in boards/ (known: {', '.join(known)})")
    p.add_argument("--app", action="append", choices=APPS, dest="apps",
                   help="an accessory to start (repeat for several; default: all three)")
    p.add_argument("--runtime", choices=RUNTIMES, default="cpython",
                   help="run the firmware under CPython or the MicroPython unix port")
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--log", type=Path, default=None, help="also write every frame to this candump file")
    p.add_argument("--stats-every", type=float, default=5.0, help="seconds between bus load lines")
    p.add_argument("--ble", action="store_true",
                   help="the accessories also advertise over BLE, and the simulated radio is served "
                        "as HCI over TCP for a host in another process (cabinlink car --ble "
                        "bumble:tcp-client:127.0.0.1:PORT)")
