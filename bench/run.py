"""``make bench``: the CabinLink benchmark table, every figure measured in this run.

1. Encode+decode of a typical REPORT, CPython and the MicroPython unix port, each beside
   that runtime's built-in json round trip of the same content.
2. Wire size of a temperature report, an event and a heartbeat, beside the same content
   as JSON; the goal is one classic CAN frame (ISO-TP single frame: <= 7 payload bytes).
3. The simulated CAN bus: frames per wall-clock second it sustains, beside a real bus.
4. Simulated boards: the largest fleet per runtime that keeps real time, and start-up time.
5. Firmware: live heap per app, .mpy size, CPU per received CAN frame (bench/firmware_bench.py).
   (``--no-sim`` skips 3 to 5 and 7.)
6. Deploy of the firmware to a virtual board, first and unchanged; ``cabinlink --help``
   start-up (bench/deploy_bench.py).
7. Issue 6: plug-in to bound (1 and 16 accessories), bus load of 16 at 1 Hz, 64 KiB over
   ISO-TP vs CANopen SDO block transfer (bench/issue6_bench.py, docs/benchmarks.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware" / "lib"))

from cabinlink import msg  # noqa: E402
from cabinlink.codec import encode  # noqa: E402

SF_PAYLOAD = 7


def micropython() -> str:
    exe = Path(sys.executable).parent / "micropython"
    return str(exe) if exe.exists() else "micropython"


def run_codec_bench(cmd: list[str]) -> dict[str, float]:
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware" / "lib"),
               PYTHONPATH=str(ROOT / "firmware" / "lib"))
    out = subprocess.run(cmd + [str(ROOT / "bench" / "codec_bench.py")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{cmd[0]} bench/codec_bench.py failed:\n{out.stdout}{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([title, fmt(header), line] + [fmt(r) for r in rows])


def codec_rows() -> list[list[str]]:
    rows = []
    for label, cmd in (("CPython " + sys.version.split()[0], [sys.executable]),
                       ("MicroPython unix port", [micropython(), "-X", "heapsize=256K"])):
        r = run_codec_bench(cmd)
        heap = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
        rows.append([label, f"{r['cabinlink_us']:.2f}", f"{r['json_us']:.2f}",
                     f"{r['cabinlink_us'] / r['json_us']:.2f}x",
                     heap(r.get("cabinlink_heap")), heap(r.get("json_heap"))])
    return rows


def size_rows() -> list[list[str]]:
    cases = [
        ("temperature REPORT 21.50 C", msg.report(1, 0, 2150),
         {"type": "report", "capability": "temperature", "attribute": "value", "value": 21.5}),
        ("button long-press EVENT", msg.event(0, 2, 2),
         {"type": "event", "capability": "buttons", "event": "long_press", "button": 2}),
        ("HEARTBEAT (uptime 50000 s)", msg.heartbeat(50000),
         {"type": "heartbeat", "uptime": 50000, "health": "nominal", "mode": "operational"}),
    ]
    rows = []
    for label, m, named in cases:
        cbor = len(encode(m))
        same_json = len(json.dumps(m, separators=(",", ":")))
        named_json = len(json.dumps(named, separators=(",", ":")))
        rows.append([label, str(cbor), str(same_json), str(named_json),
                     "yes" if cbor <= SF_PAYLOAD else "NO"])
    return rows


def sim_bus_rows() -> tuple[str, list[list[str]]]:
    sys.path.insert(0, str(ROOT / "bench"))
    import sim_bench

    r = sim_bench.bus_throughput()
    title = (f"Simulated CAN bus: frames per wall-clock second at {r['bitrate'] // 1000} kbit/s "
             f"(a real bus carries {r['theoretical_fps']:.0f}/s of these 8-byte 29-bit frames)")
    rows = [[label, f"{v['realtime']['fps']:.0f}", f"{v['realtime']['fps'] / r['theoretical_fps'] * 100:.0f} %",
             f"{v['unthrottled']['fps']:.0f}"] for label, v in r["rows"].items()]
    return title, rows


def sim_board_rows() -> list[list[str]]:
    sys.path.insert(0, str(ROOT / "bench"))
    import sim_boards

    rows = []
    for runtime in ("cpython", "micropython"):
        results = sim_boards.largest_realtime(runtime)
        best = max((r["n"] for r in results if r["realtime"]), default=0)
        first = results[0]
        rows.append([runtime, str(best), "yes" if best >= 32 else "NO",
                     f"{first['start_median_s']:.2f}",
                     " ".join(f"{r['n']}:{'ok' if r['realtime'] else 'late'}" for r in results)])
    return rows


def firmware_rows() -> tuple[list[list[str]], list[list[str]]]:
    sys.path.insert(0, str(ROOT / "bench"))
    import firmware_bench

    r = firmware_bench.run_all()
    heap_rows = []
    for h in r["heaps"]:
        if "error" in h:
            heap_rows.append([h["app"], "error", h["error"][:60], "", "", ""])
            continue
        heap_rows.append([h["app"], "ROMFS (in place)" if h["romfs"] else ".mpy files",
                          f"{h['peak_live'] / 1024:.1f}", f"{h['growth']:+.0f}",
                          f"{r['sizes'][h['app']] / 1024:.1f}",
                          "yes" if h["peak_live"] <= 48 * 1024 else "NO"])
    f = r["frame"]
    frame_rows = [["MicroPython unix port", f"{f['us_per_frame']:.1f}", f"{firmware_bench.FRAME_US}",
                   f"{f['fraction'] * 100:.1f} %", "yes" if f["fraction"] <= 0.05 else "NO"]]
    return heap_rows, frame_rows


def latency_rows() -> list[list[str]]:
    sys.path.insert(0, str(ROOT / "bench"))
    import latency_bench

    rows = []
    for r in latency_bench.run_all():
        if "error" in r:
            rows.append([r["board"], r["runtime"], "error", r["error"], "", "", ""])
            continue
        rows.append([r["board"], r["runtime"], f"{r['load'] * 100:.0f} %", f"{r['median_ms']:.2f}",
                     f"{r['p95_ms']:.2f}", f"{r['max_ms']:.1f}", "yes" if r["median_ms"] <= 2 else "NO"])
    return rows


def deploy_rows() -> tuple[list[list[str]], dict[str, float]]:
    sys.path.insert(0, str(ROOT / "bench"))
    import deploy_bench

    r = deploy_bench.run_all()
    rows = [[f"{d['path']}, {d['run']}", str(d["files"]), str(d["file_bytes"]), str(d["wire_bytes"]),
             f"{d['seconds']:.2f}", ("yes" if d["file_bytes"] == 0 else "NO") if d["run"] == "unchanged" else ""]
            for d in r["deploy"]]
    return rows, r["startup"]


def issue6_tables() -> list[tuple[str, list[str], list[list[str]]]]:
    sys.path.insert(0, str(ROOT / "bench"))
    import issue6_bench

    return issue6_bench.tables(issue6_bench.run_all())


def main() -> int:
    print(table("Encode+decode of REPORT [10, 1, 0, 2150], µs per round trip (best of 5 x 20000)",
                ["runtime", "CabinLink CBOR", "built-in json", "ratio", "CBOR heap B", "json heap B"],
                codec_rows()))
    print()
    rows = size_rows()
    print(table("Wire size in bytes (goal: one classic CAN frame = ISO-TP single frame, <= 7 bytes)",
                ["message", "CBOR", "JSON same array", "JSON with names", "fits 1 frame"], rows))
    ok = all(r[-1] == "yes" for r in rows)
    print()
    dep_rows, startup = deploy_rows()
    print(table("cabinlink deploy of the full firmware (.mpy, all apps) to a virtual board "
                "(goal: an unchanged re-deploy sends no file data)",
                ["port path, run", "files copied", "file bytes", "bytes sent", "seconds", "goal met"], dep_rows))
    print(f"cabinlink --help start-up: {startup['median_s']:.3f} s median of {startup['runs']} "
          f"(goal < 0.3 s: {'yes' if startup['median_s'] < 0.3 else 'NO'})")
    ok = ok and all(r[-1] != "NO" for r in dep_rows) and startup["median_s"] < 0.3
    if "--no-sim" not in sys.argv:
        print()
        title, bus_rows = sim_bus_rows()
        print(table(title, ["path", "real-time fps", "of a real bus", "unthrottled fps"], bus_rows))
        print()
        board_rows = sim_board_rows()
        print(table("Simulated boards in real time (1 Hz heartbeat + 1 Hz report each, >= 90 % kept; "
                    "goal >= 32) and start-up (process start to address claimed, incl. 250 ms settle)",
                    ["runtime", "largest real-time fleet", "goal met", "start-up s (median, 8 boards)",
                     "fleets tried"], board_rows))
        ok = ok and all(r[2] == "yes" for r in board_rows)
        print()
        heap_rows, frame_rows = firmware_rows()
        print(table("Firmware live heap per app on the unix port (64-bit; compiled .mpy, both links, "
                    "simulated platform subtracted; goal: fits 64 KB with room, i.e. <= 48 KB)",
                    ["app", "code in", "peak live KB", "growth B", ".mpy tree KB", "goal met"], heap_rows))
        print()
        print(table("Firmware CPU per received CAN frame (goal <= 5 % of the frame's bus time)",
                    ["runtime", "us per frame", "frame us", "share", "goal met"], frame_rows))
        print()
        print(table("Button edge -> event frame on the bus, bus time, bus 50 % loaded at priority 6 "
                    "(goal <= 2 ms; simulated in real time, host scheduling and simulated SPI included)",
                    ["board", "runtime", "bus load", "median ms", "p95 ms", "max ms", "goal met (median)"],
                    latency_rows()))
        for title, header, rows6 in issue6_tables():
            print()
            print(table(title, header, rows6))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
