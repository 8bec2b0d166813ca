"""``cabinlink``: one command table for every host tool (after mpremote).

Each subcommand imports its module only when it runs, so ``cabinlink --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]


def _demo(args: argparse.Namespace) -> int:
    if args.minimal:
        from . import demo_minimal

        return demo_minimal.run(speed=args.speed)
    from . import demo

    return demo.run(headless=args.headless, speed=args.speed, port=args.port, verbose=args.verbose)


def _registry(args: argparse.Namespace) -> int:
    from . import registry_gen

    argv = ["--check"] if args.check else ["--write"]
    return registry_gen.main(argv)


def _sim(args: argparse.Namespace) -> int:
    from .sim import cli_sim

    return cli_sim.run(args)


def _deploy(args: argparse.Namespace) -> int:
    from . import deploy

    return deploy.run(args)


def _config(args: argparse.Namespace) -> int:
    from . import devconfig

    return devconfig.run(args)


def _monitor(args: argparse.Namespace) -> int:
    from . import serial_monitor

    return serial_monitor.run(args)


def _car(args: argparse.Namespace) -> int:
    from .car import cli as car_cli

    return car_cli.run(args)


def _flash(args: argparse.Namespace) -> int:
    from . import flasher

    return flasher.run(args)


def _doctor(args: argparse.Namespace) -> int:
    from . import doctor

    return doctor.run(args)


def _dbc(args: argparse.Namespace) -> int:
    from . import dbc

    return dbc.run(args)


def _conformance(args: argparse.Namespace) -> int:
    from .conformance import runner

    return runner.run(args)


def _version(args: argparse.Namespace) -> int:
    from cabinlink import msg

    from . import __version__

    print(f"cabinlink tools {__version__}, protocol v{msg.VERSION_MAJOR}.{msg.VERSION_MINOR}")
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    p = argparse.ArgumentParser(
        prog="cabinlink",
        description="CabinLink host tools: one open interface for cabin accessories over CAN and BLE.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict[str, Handler] = {}

    d = sub.add_parser("demo", help="a scripted drive: three simulated accessories, the reference car, its screen",
                       description="Starts the simulated world with the three reference accessories running "
                                   "their real firmware (controller on CAN, ambient on BLE, mount on both), "
                                   "the reference car with the default bindings and the car screen (its "
                                   "address is printed), then plays a short drive (doors, ignition, music, "
                                   "phone clamped, CO2 -> fresh air, knob -> volume, speed -> clamp locked) "
                                   "with a timeline, and keeps running until Ctrl-C. No hardware.")
    d.add_argument("--headless", action="store_true",
                   help="end after the script; exit 0 only when every scripted step was observed (CI)")
    d.add_argument("--speed", type=float, default=1.0, help="time scale of the scripted pauses (default 1.0)")
    d.add_argument("--port", type=int, default=0, help="the car screen's port on 127.0.0.1 (default: a free one)")
    d.add_argument("--verbose", action="store_true", help="every value report in the timeline")
    d.add_argument("--minimal", action="store_true",
                   help="instead: the protocol core alone, a car and an accessory on python-can's virtual "
                        "bus (address claim, HELLO, DESCRIBE, SUBSCRIBE, REPORT, WRITE, INVOKE, EVENT)")
    handlers["demo"] = _demo

    r = sub.add_parser("registry", help="regenerate (or --check) firmware/lib/cabinlink/registry.py",
                       description="Regenerates the firmware's compact registry and docs/registry.md from "
                                   "spec/registry.json, after validating it against its schema.")
    r.add_argument("--check", action="store_true", help="exit 1 if the generated files are stale")
    handlers["registry"] = _registry

    s = sub.add_parser("sim", help="run simulated boards on a simulated CAN bus and show the traffic",
                       description="Starts the simulated world (boards from boards/*.json, chip models, "
                                   "cabin, CAN bus) with the chosen accessories running the real firmware, "
                                   "and prints their consoles and the decoded bus traffic.")
    from .sim.cli_args import add_sim_arguments

    add_sim_arguments(s)
    handlers["sim"] = _sim

    from .car import cli as car_cli

    ca = sub.add_parser("car", help=car_cli.HELP)
    car_cli.add_arguments(ca)
    handlers["car"] = _car

    from .device_args import add_config_arguments, add_deploy_arguments, add_monitor_arguments

    dp = sub.add_parser("deploy", help="copy the firmware to a board (compiled, only what changed)",
                        description="Compiles firmware/ with mpy-cross for the board's architecture, "
                                    "adds boards/<board>.json as /board.json and copies it to the board "
                                    "over its raw REPL (mpremote's transport), skipping files whose "
                                    "SHA-256 already matches and removing files that are gone. Files are "
                                    "written as .tmp and renamed; main.py comes last, so an interrupted "
                                    "deploy never boots and a re-run finishes it. See docs/tools/deploy.md.")
    add_deploy_arguments(dp)
    handlers["deploy"] = _deploy

    cp = sub.add_parser("config", help="write a unit's /config.json (identity, app, links), validated",
                        description="Builds the unit's /config.json (serial from the chip's unique id, "
                                    "app, links, keys, calibration, app_config), validates it against "
                                    "spec/config.schema.json with messages naming the field, writes it "
                                    "atomically, reads it back and resets the board. "
                                    "See docs/tools/config.md.")
    add_config_arguments(cp)
    handlers["config"] = _config

    mp = sub.add_parser("monitor", help="show a board's log over USB serial, with timestamps",
                        description="Prints the board's console lines with timestamps until Ctrl-C or "
                                    "--timeout; --reset restarts the firmware first so the log starts "
                                    "at the boot. See docs/tools/monitor.md.")
    add_monitor_arguments(mp)
    handlers["monitor"] = _monitor

    from .flasher import DESCRIPTION as FLASH_DESCRIPTION, HELP as FLASH_HELP, add_arguments

    fl = sub.add_parser("flash", help=FLASH_HELP, description=FLASH_DESCRIPTION)
    add_arguments(fl)
    handlers["flash"] = _flash

    dr = sub.add_parser("doctor", help="list serial ports, CAN and BLE adapters, check the tools",
                        description="Lists serial ports (with a hint for ESP32 USB bridges), CAN "
                                    "adapters (python-can's detection, time-bounded) and Bluetooth "
                                    "adapters, checks esptool, mpremote, mpy-cross, the MicroPython "
                                    "unix port and the image cache, and says how to fix what is "
                                    "missing. Exits 0 when flashing and deploying can work. "
                                    "See docs/tools/doctor.md.")
    dr.add_argument("--can-timeout", type=float, default=3.0, metavar="S",
                    help="give python-can's adapter detection at most S seconds (default 3)")
    dr.add_argument("--cache", metavar="DIR", help="image cache directory to check")
    handlers["doctor"] = _doctor

    db = sub.add_parser("dbc", help="export the CAN side of CabinLink as a DBC (cantools, SavvyCAN)",
                        description="Writes a DBC (built with cantools) describing CabinLink's CAN frames: "
                                    "address claim NAME fields, requests, the HEARTBEAT single frame, ISO-TP "
                                    "PCI fields multiplexed by frame type, the priority-3 event channel. "
                                    "Decode a candump log with `python -m cantools decode -m 0x1FFF0000 "
                                    "FILE.dbc < LOG`. See docs/tools/dbc.md.")
    db.add_argument("-o", "--output", metavar="FILE", help="write the DBC here (default: standard output)")
    db.add_argument("--address", action="append", default=[], metavar="ADDR",
                    help="concrete ids for the accessory at ADDR (e.g. 0x85), repeatable; default: one "
                         "pattern message per id kind (match with frame id mask 0x1FFF0000)")
    db.add_argument("--car", default="0x00", metavar="ADDR", help="the car's address (default 0x00)")
    handlers["dbc"] = _dbc

    from .conformance.runner import DESCRIPTION as CONF_DESCRIPTION, add_arguments as add_conformance_arguments

    cf = sub.add_parser("conformance", help="run the conformance suite against an accessory or a car, with a report",
                        description=CONF_DESCRIPTION)
    add_conformance_arguments(cf)
    handlers["conformance"] = _conformance

    v = sub.add_parser("version", help="print tool and protocol versions")
    v.set_defaults()
    handlers["version"] = _version
    return p, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
