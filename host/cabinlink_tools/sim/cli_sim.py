"""``cabinlink sim``: start simulated boards on one CAN bus and show what happens.

Prints each board's console (prefixed by its name) and every CabinLink message on the bus,
decoded, plus the bus load every few seconds. Runs until Ctrl-C or ``--duration``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

from ..monitor import BusDecoder
from . import boards
from .simulation import Simulation, default_config


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    apps = args.apps or list(boards.APPS)
    t0 = time.monotonic()

    def say(who: str, text: str) -> None:
        out.write(f"[{time.monotonic() - t0:7.3f}] {who:<12} {text}\n")
        out.flush()

    try:
        boards.load(args.board)
    except ValueError as e:
        print(f"cabinlink sim: {e}", file=sys.stderr)
        return 2
    with Simulation(log_path=args.log) as sim:
        say("sim", f"bus {sim.bus_address}, {sim.bus.bitrate // 1000} kbit/s; "
                   f"board {args.board}; firmware under {args.runtime}")
        ble = getattr(args, "ble", False)
        names = [f"{app}{i + 1}" for i, app in enumerate(apps)]
        accs = [sim.add(args.board, app, args.runtime, name=n,
                        config=default_config(args.board, app, n, ble=True) if ble else None)
                for app, n in zip(apps, names)]
        if ble:
            port = sim.ble.serve_hci()
            say("sim", f"BLE radio: HCI over TCP on 127.0.0.1:{port} "
                       f"(cabinlink car --ble bumble:tcp-client:127.0.0.1:{port})")
        for a in accs:
            say("sim", f"{a.name}: {a.app} on {args.board}, unique id {a.board.unique_id.hex()}")
        peer = sim.can_peer()
        decoder = BusDecoder()
        seen = {a.name: 0 for a in accs}
        started = time.monotonic()
        next_stats = started + args.stats_every
        try:
            while args.duration is None or time.monotonic() - started < args.duration:
                m = peer.recv(timeout=0.05)
                while m is not None:
                    for line in decoder.feed(m.arbitration_id, bytes(m.data), m.is_extended_id):
                        say("bus", line)
                    m = peer.recv(timeout=0)
                for a in accs:
                    log = a.log
                    while seen[a.name] < len(log):
                        say(a.name, log[seen[a.name]])
                        seen[a.name] += 1
                if time.monotonic() >= next_stats:
                    st = sim.bus.stats()
                    say("sim", f"bus load {sim.bus.load(args.stats_every) * 100:.1f} %, "
                               f"{st.frames} frames, {st.error_frames} error frames")
                    next_stats += args.stats_every
        except KeyboardInterrupt:
            say("sim", "stopping")
    return 0
