"""Deploy and CLI start-up benchmark (``make bench`` prints it; run alone for JSON).

1. ``cabinlink deploy`` of the full firmware (all apps, .mpy for the ESP32-DevKitC) to a
   fresh virtual board (the MicroPython unix port on a pty), then again unchanged: file data
   and all bytes sent over the port, and seconds. Goal: the re-deploy sends no file data.
   Measured on both ways into the pty: its ``/dev/pts`` path (mpremote reads without
   timeouts) and a symlink to it (mpremote's code path for a real USB serial port, which polls
   every 10 ms). A real board at 115200 baud adds about 87 us per byte sent.
2. ``cabinlink --help`` as a subprocess, median of several runs. Goal: < 0.3 s.
"""
from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BOARD = "esp32-devkitc"
STARTUP_GOAL_S = 0.3


def deploy_runs() -> list[dict[str, Any]]:
    """First and unchanged deploy per port path; one dict per run."""
    from cabinlink_tools.deploy import deploy
    from cabinlink_tools.sim.virtual_board import VirtualBoard

    rows = []
    for label, attr in (("pty", "port"), ("serial-port path", "port_link")):
        with VirtualBoard() as board:
            port = getattr(board, attr)
            for run in ("first", "unchanged"):
                r = deploy(BOARD, port, out=io.StringIO(), show_progress=False)
                rows.append({"path": label, "run": run, "files": len(r.copied),
                             "file_bytes": r.file_bytes, "wire_bytes": r.wire_bytes,
                             "seconds": r.seconds})
    return rows


def cli_startup(runs: int = 9) -> dict[str, float]:
    """Seconds for ``cabinlink --help`` as a fresh process: median and min of ``runs``."""
    exe = Path(sys.executable).parent / "cabinlink"
    cmd = [str(exe), "--help"] if exe.exists() else [sys.executable, "-m", "cabinlink_tools.cli", "--help"]
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True, timeout=60)
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": runs}


def run_all() -> dict[str, Any]:
    return {"deploy": deploy_runs(), "startup": cli_startup()}


if __name__ == "__main__":
    print(json.dumps(run_all(), indent=1))
