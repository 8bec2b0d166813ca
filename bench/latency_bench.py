"""Button edge -> event frame on the bus, in bus time, with the bus 50% loaded (issue 4).

The controller accessory runs the real firmware on a simulated board under the chosen
runtime: an ESP32-DevKitC (MCP2515 over SPI, every SPI transfer a round trip to the simulated
world) or an ESP32-C6 (on-chip controller). A car on the bus says HELLO, so button events are sent to it.
A load generator fills about half of the 500 kbit/s bus with 8-byte frames at the normal
priority (6) from another node; CabinLink events go at priority 3 and win arbitration, so the
load can only make them wait for the frame already on the wire.

Each sample: the simulated button contact moves (its time taken in the bus's clock), the
firmware's IRQ wakes the button task, the PRESS or RELEASE event goes out as an ISO-TP single
frame; the sample is the end of that frame on the bus minus the edge. The simulation runs in
real time on the host, so the figure includes the host's process scheduling and the
simulated SPI round trips (each a socket hop to the world): it is an upper bound of what
the firmware logic costs, not a cycle count of an ESP32.
"""
from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import can

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT / "firmware" / "lib", ROOT / "host", ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from cabinlink import msg  # noqa: E402
from cabinlink_tools.sim.canbus import BusEvent  # noqa: E402
from cabinlink_tools.sim.simulation import Simulation  # noqa: E402

from carhelper import SimCar  # noqa: E402

BOARDS = ("esp32-devkitc", "esp32-c6-devkitc-1")
LOAD = 0.5
FRAME_BITS = 137  # 8-byte 29-bit frame with typical stuffing and the 3-bit intermission
EVENT_PRIO = 3


def _load(sim: Simulation, stop: threading.Event, fraction: float) -> None:
    """Send 8-byte priority-6 frames from address 0x30 at ``fraction`` of the bus rate."""
    bus = sim.can_peer()
    rate = fraction * sim.bus.bitrate / FRAME_BITS  # frames per second
    msg_ = can.Message(arbitration_id=0x18FF0030, is_extended_id=True, data=bytes(8))
    t0 = time.monotonic()
    sent = 0
    while not stop.is_set():
        due = int((time.monotonic() - t0) * rate)
        while sent < due:
            try:
                bus.send(msg_, timeout=0.05)
            except can.CanError:
                break
            sent += 1
        time.sleep(0.001)


def measure(board: str, runtime: str, presses: int = 25) -> dict[str, Any]:
    with Simulation() as sim:
        acc = sim.add(board, "controller", runtime, name="ctl")
        acc.wait_for("controller:", 60)
        car = SimCar(sim)
        a = car.find()
        if not car.ask(a, msg.hello, timeout=10).ok:
            return {"board": board, "runtime": runtime, "error": "no answer to HELLO"}
        ends: list[float] = []

        def listen(ev: BusEvent) -> None:
            f = ev.frame
            if ev.kind == "frame" and f is not None and f.extended \
                    and f.can_id >> 26 == EVENT_PRIO and f.can_id & 0xFF == a:
                ends.append(ev.timestamp)

        stop = threading.Event()
        gen = threading.Thread(target=_load, args=(sim, stop, LOAD), daemon=True)
        gen.start()
        car.pump(1.0)  # let the load settle
        sim.bus.add_listener(listen)
        samples: list[float] = []
        loads: list[float] = []
        try:
            for i in range(presses):
                for action in (acc.press, acc.release):
                    n = len(ends)
                    edge = sim.bus.to_epoch(time.monotonic())
                    action(0)
                    if car.pump(1.0, lambda: len(ends) > n):
                        samples.append(ends[n] - edge)
                    car.pump(0.35)  # beyond double_press_ms: every press is a plain one
                loads.append(sim.bus.load(1.0))
        finally:
            sim.bus.remove_listener(listen)
            stop.set()
            gen.join()
    if len(samples) < presses:
        return {"board": board, "runtime": runtime,
                "error": f"only {len(samples)} of {2 * presses} events seen"}
    samples.sort()
    return {"board": board, "runtime": runtime, "n": len(samples), "median_ms": statistics.median(samples) * 1e3,
            "p95_ms": samples[int(0.95 * (len(samples) - 1))] * 1e3, "max_ms": samples[-1] * 1e3,
            "load": statistics.mean(loads)}


def run_all() -> list[dict[str, Any]]:
    return [measure(b, rt) for b in BOARDS for rt in ("micropython", "cpython")]


if __name__ == "__main__":
    for r in run_all():
        print(r)
