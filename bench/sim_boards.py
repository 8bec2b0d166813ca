"""How many simulated boards run in real time, and how fast a board starts, per runtime.

Each board runs ``bench/sim_node.py`` (the protocol core over ``machine.CAN``: a 1 Hz
heartbeat and a temperature that changes every second) as its own process. A car on the
same simulated bus subscribes to every board's temperature (min 1 s, max 1 s), so each
board owes the bus one HEARTBEAT and one REPORT per second. A fleet "runs in real time"
when, over the measuring window, every board delivered at least 90 % of both.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT / "firmware" / "lib", ROOT / "host"):
    sys.path.insert(0, str(p))

from cabinlink import claim, msg  # noqa: E402
from cabinlink.can_link import CanLink  # noqa: E402
from cabinlink.clock import Clock  # noqa: E402
from cabinlink_tools.canbus import PythonCanController  # noqa: E402
from cabinlink_tools.car.client import CarClient  # noqa: E402
from cabinlink_tools.sim.simulation import Simulation  # noqa: E402

NODE = ROOT / "bench" / "sim_node.py"
BOARD = "esp32-c6-devkitc-1"


def fleet(n: int, runtime: str, window_s: float = 10.0) -> dict[str, Any]:
    """Run ``n`` boards; returns start-up times and whether all kept the 1 Hz pace."""
    with Simulation() as sim:
        t0 = time.monotonic()
        accs = [sim.add(BOARD, "ambient", runtime, name=f"n{i}", script=NODE, heap="256K")
                for i in range(n)]
        starts = []
        for a in accs:
            a.wait_for("ready", 120)
            starts.append(time.monotonic() - t0)
        clock = Clock()
        car = CarClient(clock)
        addrs: dict[int, int] = {}
        link = CanLink(PythonCanController(sim.can_peer()), car, clock,
                       claim.make_name(1, 0xBF, arbitrary=False), 0x00, pool=(0, 15), rx_max=4095,
                       on_peer=lambda a, nm: addrs.__setitem__(a, nm))
        link.start()
        reports: dict[int, int] = {}
        car.on_report = lambda acc, s, at, v: reports.__setitem__(acc.peer, reports.get(acc.peer, 0) + 1)

        def pump(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                link.poll()
                time.sleep(0.002)

        pump(0.5)  # the car's claim settles
        link.claim.request_claims()  # the boards claimed before the car listened
        pump(0.5)
        for a in [a for a in addrs if a >= 0x80]:
            car.request(link, a, msg.subscribe, 1, 0, 1000, 1)
            pump(0.02)
        pump(2.0)  # settle: every subscription primed
        hb0 = {k: v for k, v in _heartbeats(car).items()}
        reports.clear()
        pump(window_s)
        hb = {k: v - hb0.get(k, 0) for k, v in _heartbeats(car).items() if k >= 0x80}
        need = 0.9 * window_s
        ok = len(hb) == n and all(v >= need for v in hb.values()) and \
            len(reports) == n and all(v >= need for v in reports.values())
        return {"n": n, "runtime": runtime, "realtime": ok,
                "min_hb_per_s": min(hb.values(), default=0) / window_s,
                "min_reports_per_s": min(reports.values(), default=0) / window_s,
                "start_first_s": min(starts), "start_median_s": sorted(starts)[len(starts) // 2],
                "bus_load": sim.bus.load(window_s)}


def _heartbeats(car: CarClient) -> dict[int, int]:
    return {acc.peer: acc.heartbeats for acc in car.accessories.values()}


def largest_realtime(runtime: str, sizes: tuple[int, ...] = (8, 16, 32, 48)) -> list[dict[str, Any]]:
    out = []
    for n in sizes:
        r = fleet(n, runtime)
        out.append(r)
        if not r["realtime"]:
            break
    return out


if __name__ == "__main__":
    for rt in ("cpython", "micropython"):
        for r in largest_realtime(rt):
            print(r)
