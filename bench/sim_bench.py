"""Throughput of the simulated CAN bus: frames per wall-clock second it sustains.

Traffic: 29-bit ids, 8 random data bytes (the worst ordinary case, ~136 bits on the wire).
Real hardware at 500 kbit/s carries ~3,680 of these per second; the real-time bus must
deliver exactly that (never faster), and the unthrottled bus (``realtime=False``, virtual
time only) shows how much headroom the host has above it.

Rows: in-process nodes (one sender, one receiver), and two TCP clients (``canwire`` in this
process, on threads: the GIL is shared with the server, so this is a lower bound for
separate processes), and two python-can peers through the ``cabinlink`` plugin.

``python bench/sim_bench.py`` prints the table; :func:`bus_throughput` returns the figures.
"""
from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT / "host", ROOT / "firmware" / "lib"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from cabinlink_tools.sim import canwire  # noqa: E402
from cabinlink_tools.sim.canbus import Frame, SimBus, SimBusServer  # noqa: E402

BITRATE = 500_000


def _frames(n: int, seed: int = 1) -> list[Frame]:
    rnd = random.Random(seed)
    return [Frame(0x18DA0000 | rnd.randrange(1 << 16), rnd.randbytes(8), True) for _ in range(n)]


def _result(n: int, wall: float, bus: SimBus) -> dict:
    st = bus.stats()
    return {"frames": n, "wall_s": wall, "fps": n / wall, "bus_busy_s": st.busy_s,
            "bus_fps": n / st.busy_s if st.busy_s else 0.0}


def inprocess(n: int, realtime: bool) -> dict:
    frames = _frames(n)
    with SimBus(BITRATE, realtime=realtime) as bus:
        tx = bus.attach("tx", tx_queue_len=16)
        rx = bus.attach("rx")
        done = threading.Event()

        def receive() -> None:
            for _ in range(n):
                if rx.recv(30) is None:
                    break
            done.set()

        t = threading.Thread(target=receive)
        t0 = time.perf_counter()
        t.start()
        i = 0
        while i < n:  # a 16-deep controller queue, refilled as fast as it drains
            if tx.send(frames[i]):
                i += 1
            else:
                time.sleep(0.0001)
        done.wait(60)
        wall = time.perf_counter() - t0
        t.join()
        return _result(n, wall, bus)


def tcp(n: int, realtime: bool) -> dict:
    frames = [(f.can_id, f.data) for f in _frames(n)]
    with SimBus(BITRATE, realtime=realtime) as bus:
        srv = SimBusServer(bus)
        host, port = srv.start()
        a = canwire.CanWire(host, port, "tx")
        b = canwire.CanWire(host, port, "rx", rx_max=1 << 30)
        got = [0]

        def receive() -> None:
            deadline = time.monotonic() + 60
            while got[0] < n and time.monotonic() < deadline:
                b.wait(5)
                while b.recv() is not None:
                    got[0] += 1

        t = threading.Thread(target=receive)
        t0 = time.perf_counter()
        t.start()
        i = 0
        while i < n:
            cid, data = frames[i]
            if a.send(cid, data, canwire.FLAG_EXT_ID):
                i += 1
            else:
                a.wait(1)
        t.join()
        wall = time.perf_counter() - t0
        a.close()
        b.close()
        srv.stop()
        return _result(got[0], wall, bus)


def pycan(n: int, realtime: bool) -> dict:
    import can

    msgs = [can.Message(arbitration_id=f.can_id, data=f.data, is_extended_id=True) for f in _frames(n)]
    with SimBus(BITRATE, realtime=realtime) as bus:
        srv = SimBusServer(bus)
        srv.start()
        from cabinlink_tools.sim.pycan_plugin import CabinLinkSimBus

        a = CabinLinkSimBus(channel=srv.channel, name="tx")
        b = CabinLinkSimBus(channel=srv.channel, name="rx")
        got = [0]

        def receive() -> None:
            while got[0] < n and b.recv(30) is not None:
                got[0] += 1

        t = threading.Thread(target=receive)
        t0 = time.perf_counter()
        t.start()
        for m in msgs:
            a.send(m, timeout=30)
        t.join()
        wall = time.perf_counter() - t0
        a.shutdown()
        b.shutdown()
        srv.stop()
        return _result(got[0], wall, bus)


def bus_throughput(seconds: float = 1.0) -> dict:
    """Frames per wall-clock second the simulated bus sustains, per path and mode.

    ``seconds`` sizes the real-time runs (frames = seconds x the theoretical rate); the
    unthrottled runs use 4x as many frames."""
    frames = _frames(2000)
    mean_bits = sum(f.bits for f in frames) / len(frames)
    ideal = BITRATE / mean_bits
    n = max(200, int(seconds * ideal))
    out: dict = {"bitrate": BITRATE, "mean_frame_bits": mean_bits, "theoretical_fps": ideal, "rows": {}}
    for label, fn in (("in-process", inprocess), ("TCP, 2 canwire clients", tcp),
                      ("TCP, 2 python-can peers", pycan)):
        out["rows"][label] = {"realtime": fn(n, True), "unthrottled": fn(4 * n, False)}
    return out


def table(r: dict) -> str:
    head = ["path", "real-time fps", "of ideal", "unthrottled fps", "headroom"]
    rows = []
    for label, v in r["rows"].items():
        rt, un = v["realtime"], v["unthrottled"]
        rows.append([label, f"{rt['fps']:.0f}", f"{100 * rt['fps'] / r['theoretical_fps']:.1f}%",
                     f"{un['fps']:.0f}", f"{un['fps'] / r['theoretical_fps']:.1f}x"])
    widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    title = (f"Simulated CAN bus, {r['bitrate'] // 1000} kbit/s, 29-bit id + 8 random bytes "
             f"({r['mean_frame_bits']:.1f} bits/frame): ideal {r['theoretical_fps']:.0f} frames/s")
    return "\n".join([title, fmt(head), "  ".join("-" * w for w in widths)] + [fmt(x) for x in rows])


if __name__ == "__main__":
    print(table(bus_throughput(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)))
