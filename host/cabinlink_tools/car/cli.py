"""``cabinlink car``: run the reference car on CAN and/or BLE and print what happens.

The argument definitions import nothing heavy (``cabinlink --help`` stays fast); the car
itself is imported when the command runs.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

HELP = "run the reference car (head unit) on CAN and/or BLE and print its timeline"
DESCRIPTION = """\
Runs the reference car: claims a CAN address, finds accessories (address claim on CAN,
advertising on BLE), says HELLO, reads DESCRIBE, binds them by capability (--bindings),
subscribes and keeps the subscriptions alive, notices unplug (3 s without a frame) and
re-plug, and prints a readable timeline of everything. See docs/tools/car.md."""
EPILOG = """\
CAN interfaces (python-can): socketcan:can0, pcan:PCAN_USBBUS1, slcan:/dev/ttyACM0,
virtual:NAME, cabinlink:127.0.0.1:PORT (the simulated bus of `cabinlink sim`).
BLE: bleak (the OS adapter; needs `pip install bleak`, not pinned), bleak:hci1,
bumble:usb:0 or any Bumble HCI transport (bumble:tcp-client:127.0.0.1:PORT, ...).

Console commands (--console, one per line on standard input):
  speed KMH | ignition on|off | door NAME open|closed | clamp | release [confirm]
  list | read ACC PATH | write ACC PATH JSON | invoke ACC PATH [JSON-ARGS] | quit
  (ACC: an accessory's serial or uid; PATH: capability.member, e.g. co2.value)

examples:
  cabinlink car --can socketcan:can0 --record drive.log
  cabinlink car --can cabinlink:127.0.0.1:40123 --bindings my.toml --duration 30
  cabinlink car --can cabinlink:127.0.0.1:40123 --screen 8080   (open http://127.0.0.1:8080/)
  cabinlink car --replay drive.log
  cabinlink car --bindings my.toml --check"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = DESCRIPTION
    p.epilog = EPILOG
    p.add_argument("--can", action="append", default=[], metavar="IFACE:CHANNEL",
                   help="a CAN bus through python-can (repeatable: one car on several buses)")
    p.add_argument("--ble", metavar="SPEC", default=None,
                   help="BLE central: bleak[:ADAPTER] or bumble:TRANSPORT (default: no BLE)")
    p.add_argument("--bindings", type=Path, metavar="FILE",
                   help="bindings file, TOML or JSON (default: the shipped default_bindings.toml)")
    p.add_argument("--record", type=Path, metavar="FILE.log",
                   help="write every CAN frame the car sends and receives as a candump -L log")
    p.add_argument("--replay", type=Path, metavar="FILE.log",
                   help="feed a recorded candump -L log into the car as if live (sends nothing)")
    p.add_argument("--speed", type=float, default=None, metavar="X",
                   help="replay at X times real time (default: as fast as possible)")
    p.add_argument("--address", default="0x00", metavar="ADDR",
                   help="the car's CAN address, 0x00..0x0F (default 0x00)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--values", choices=("all", "changes", "none"), default="all",
                   help="value reports in the timeline: all, only changed values, or none")
    p.add_argument("--bus-load", action="store_true", help="print the bus load every second")
    p.add_argument("--json", action="store_true",
                   help="print every event as one JSON object per line instead of the timeline")
    p.add_argument("--console", action="store_true",
                   help="read commands from standard input (see below)")
    p.add_argument("--check", action="store_true",
                   help="only validate the bindings file and list the bindings, then exit")
    p.add_argument("--screen", nargs="?", type=int, const=0, default=None, metavar="PORT",
                   help="serve the car screen (a live web page) on http://127.0.0.1:PORT/ "
                        "(no PORT: a free one; the address is printed)")


class _Printer:
    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self._last: dict[tuple[str | None, Any], Any] = {}

    def __call__(self, ev: Any) -> None:
        a = self.args
        if ev.kind == "bus" and not a.bus_load:
            return
        if ev.kind == "value":
            if a.values == "none":
                return
            key = (ev.acc, ev.data.get("path"))
            if a.values == "changes" and self._last.get(key, object()) == ev.data.get("value"):
                return
            self._last[key] = ev.data.get("value")
        if a.json:
            self.out.write(json.dumps(ev.to_dict(), default=str) + "\n")
        else:
            self.out.write(ev.line() + "\n")
        self.out.flush()


def _parse_address(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise ValueError(f"--address {text!r}: expected a number such as 0x00") from None
    if not 0 <= v <= 0x0F:
        raise ValueError(f"--address {text}: a car's address is 0x00..0x0F (spec 7.3)")
    return v


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from .bindings import BindingsError, load_bindings

    err = sys.stderr
    try:
        bindings = load_bindings(args.bindings)
    except BindingsError as e:
        print(f"cabinlink car: {e}", file=err)
        return 2
    if args.check:
        print(f"{bindings.source}: {len(bindings.bindings)} bindings, valid", file=out)
        for b in bindings.bindings:
            print(f"  {b.name}: {b.trigger} -> {b.action}", file=out)
        return 0
    try:
        address = _parse_address(args.address)
    except ValueError as e:
        print(f"cabinlink car: {e}", file=err)
        return 2
    if args.replay is not None:
        if args.can or args.ble or args.record or args.screen is not None:
            print("cabinlink car: --replay plays a log; it cannot be combined with --can, --ble, "
                  "--record or --screen", file=err)
            return 2
        return asyncio.run(_replay(args, bindings, out))
    if not args.can and not args.ble:
        print("cabinlink car: nothing to drive: give --can IFACE:CHANNEL and/or --ble SPEC "
              "(or --replay FILE.log)", file=err)
        return 2
    try:
        return asyncio.run(_live(args, bindings, address, out))
    except KeyboardInterrupt:
        return 0


async def _replay(args: argparse.Namespace, bindings: Any, out: TextIO) -> int:
    from .car import Car

    r = Car.replay(args.replay, bindings=bindings)
    r.on(_Printer(args, out))
    try:
        await r.run(args.speed)
    except ValueError as e:
        print(f"cabinlink car: {e}", file=sys.stderr)
        return 2
    return 0


async def _live(args: argparse.Namespace, bindings: Any, address: int, out: TextIO) -> int:
    from .ble import BleUnavailable
    from .car import Car

    car = Car(args.can or None, args.ble, bindings=bindings, address=address, record=args.record)
    car.on(_Printer(args, out))
    try:
        await car.start()
    except (ValueError, OSError, BleUnavailable) as e:
        print(f"cabinlink car: {e}", file=sys.stderr)
        return 1
    screen = None
    if getattr(args, "screen", None) is not None:
        from .screen import CarScreen

        screen = CarScreen(car, port=args.screen)
        try:
            out.write(f"car screen: {await screen.start()}\n")
            out.flush()
        except OSError as e:
            print(f"cabinlink car: the car screen cannot listen on port {args.screen}: {e}",
                  file=sys.stderr)
            await car.stop()
            return 1
    stop = asyncio.Event()
    if args.console:
        _start_console(car, stop, out)
    try:
        if args.duration is not None:
            try:
                await asyncio.wait_for(stop.wait(), args.duration)
            except asyncio.TimeoutError:
                pass
        else:
            await stop.wait()
    except asyncio.CancelledError:
        pass
    finally:
        if screen is not None:
            await screen.stop()
        await car.stop()
        _summary(car, out)
    return 0


def _summary(car: Any, out: TextIO) -> None:
    accs = car.accessories()
    out.write(f"{len(accs)} accessor{'y' if len(accs) == 1 else 'ies'}:\n")
    for a in accs:
        state = "ready" if a.ready else "online" if a.online else "offline"
        where = f"0x{a.address:02X}" if isinstance(a.address, int) else a.address
        out.write(f"  {a.label}: {a.class_name or '?'} over {a.transport.upper()} {where}, "
                  f"{state}, {len(a.subscriptions)} subscriptions, restarts {a.restarts}\n")
    out.flush()


def _start_console(car: Any, stop: asyncio.Event, out: TextIO) -> None:
    loop = asyncio.get_running_loop()

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lambda ln=line: loop.create_task(_command(car, ln, stop, out)))
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=reader, daemon=True, name="car-console").start()


async def _command(car: Any, line: str, stop: asyncio.Event, out: TextIO) -> None:
    from .accessory import RequestFailed

    try:
        words = shlex.split(line)
    except ValueError as e:
        out.write(f"? {e}\n")
        return
    if not words:
        return
    cmd, rest = words[0], words[1:]
    v = car.vehicle
    try:
        if cmd in ("quit", "exit"):
            stop.set()
        elif cmd == "speed" and len(rest) == 1:
            v.set_speed(float(rest[0]))
        elif cmd == "ignition" and rest in (["on"], ["off"]):
            v.set_ignition(rest[0] == "on")
        elif cmd == "door" and len(rest) == 2 and rest[1] in ("open", "closed"):
            v.set_door(rest[0], rest[1] == "open")
        elif cmd == "clamp":
            out.write(f"clamp: {await car.clamp_phone()}\n")
        elif cmd == "release":
            out.write(f"release: {await car.release_phone(confirm=rest == ['confirm'])}\n")
        elif cmd == "list":
            for a in car.accessories():
                out.write(f"  {a.label} ({a.uid}): {'ready' if a.ready else 'online' if a.online else 'offline'}\n")
        elif cmd in ("read", "write", "invoke") and len(rest) >= 2:
            acc = car.accessory(rest[0])
            if acc is None:
                out.write(f"? no accessory {rest[0]!r}\n")
            elif cmd == "read":
                out.write(f"{rest[1]} = {await acc.read(rest[1])!r}\n")
            elif cmd == "write" and len(rest) == 3:
                await acc.write(rest[1], json.loads(rest[2]))
                out.write("OK\n")
            elif cmd == "invoke":
                res = await acc.invoke(rest[1], json.loads(rest[2]) if len(rest) > 2 else None)
                out.write(f"OK {res!r}\n")
            else:
                out.write("? write ACC PATH JSON-VALUE\n")
        else:
            out.write(f"? unknown command {line.strip()!r} (see cabinlink car --help)\n")
    except (RequestFailed, LookupError, ValueError) as e:
        out.write(f"! {e}\n")
    out.flush()
