# Encode+decode timing of a typical REPORT with the CabinLink codec beside the
# runtime's built-in json, on whatever runtime runs this file (CPython or
# MicroPython). Prints one JSON line: runtime, µs per round trip for each,
# and (MicroPython only) heap bytes per round trip for each.
import json
import sys
import time

from cabinlink.codec import Encoder, decode

REPORT = [10, 1, 0, 2150]
N = 20000


def _now_us():
    try:
        return time.ticks_us()
    except AttributeError:
        return time.perf_counter_ns() // 1000


def _elapsed(t0):
    t1 = _now_us()
    try:
        return time.ticks_diff(t1, t0)
    except AttributeError:
        return t1 - t0


def best_of(fn, rounds=5):
    best = None
    for _ in range(rounds):
        t0 = _now_us()
        fn()
        dt = _elapsed(t0)
        if best is None or dt < best:
            best = dt
    return best / N


def ours(n=N):
    e = Encoder(32)
    for _ in range(n):
        decode(e.encode(REPORT))


def builtin_json(n=N):
    for _ in range(n):
        json.loads(json.dumps(REPORT))


def heap_per_round_trip(fn, n=100):
    # MicroPython: bytes taken from the heap per round trip, with the collector
    # off for n round trips (None elsewhere).
    try:
        import gc

        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
    except (ImportError, AttributeError):
        return None
    try:
        fn(n)
        return (gc.mem_alloc() - before) / n
    finally:
        gc.enable()


impl = sys.implementation.name
print(json.dumps({"runtime": impl, "cabinlink_us": best_of(ours), "json_us": best_of(builtin_json),
                  "cabinlink_heap": heap_per_round_trip(ours),
                  "json_heap": heap_per_round_trip(builtin_json)}))
