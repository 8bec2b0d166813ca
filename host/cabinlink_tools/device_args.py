"""Arguments of ``cabinlink deploy``, ``config`` and ``monitor``: argparse only, so building
the command table (and ``cabinlink --help``) imports nothing heavy."""
from __future__ import annotations

import argparse
from pathlib import Path

BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"
APPS = ("ambient", "mount", "controller")


def _boards() -> str:
    return ", ".join(sorted(p.stem for p in BOARDS_DIR.glob("*.json") if "schema" not in p.stem))


def _port(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--port", required=required, metavar="PORT",
                   help="the board's serial port (/dev/ttyUSB0, /dev/ttyACM0, COM3, ...; "
                        "`cabinlink doctor` lists them)")
    p.add_argument("--baud", type=int, default=115200, help="serial speed (default 115200)")
    p.add_argument("--wait", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for the port to appear (after flashing a board "
                        "with native USB)")


def add_deploy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--board", required=True, metavar="BOARD",
                   help=f"board file in boards/ (known: {_boards()})")
    _port(p)
    p.add_argument("--app", choices=APPS, default=None,
                   help="deploy only this app's package (default: all apps)")
    p.add_argument("--source", action="store_true",
                   help="copy .py sources instead of .mpy (tracebacks show source lines)")
    p.add_argument("--dry-run", action="store_true",
                   help="compare with the board and list what would change; change nothing")
    p.add_argument("--no-reset", dest="reset", action="store_false",
                   help="leave the board at its REPL afterwards instead of resetting it "
                        "(and do not reset it before the transfer)")


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--board", metavar="BOARD", help=f"board file in boards/ (known: {_boards()})")
    _port(p, required=False)
    p.add_argument("--app", choices=APPS, help="the accessory this unit runs")
    p.add_argument("--name", help="BLE name (1..20 bytes); turns BLE on unless --no-ble")
    p.add_argument("--vendor", help="identity.vendor (default CabinLink)")
    p.add_argument("--product", help="identity.product (default 'CabinLink <app>')")
    p.add_argument("--serial", help="identity.serial (default: the chip's unique id, as hex)")
    p.add_argument("--can", action=argparse.BooleanOptionalAction, default=None,
                   help="CAN link on/off (default: on when the board has a CAN controller)")
    p.add_argument("--ble", action=argparse.BooleanOptionalAction, default=None,
                   help="BLE link on/off (default: on when the board has no CAN controller)")
    p.add_argument("--set", action="append", metavar="KEY=JSON",
                   help="set any field by dotted path, value as JSON: "
                        "--set links.can.bitrate=250000 --set 'identity.vendor=\"Acme\"'")
    p.add_argument("--from", dest="from_file", type=Path, metavar="FILE",
                   help="start from this JSON file (options and --set apply on top)")
    p.add_argument("--show", action="store_true", help="print the board's current /config.json")
    p.add_argument("--dry-run", action="store_true",
                   help="build and validate, print the file, write nothing")
    p.add_argument("--no-reset", dest="reset", action="store_false",
                   help="do not reset the board after writing (it uses the file from its next boot)")


def add_monitor_arguments(p: argparse.ArgumentParser) -> None:
    _port(p)
    p.add_argument("--reset", action="store_true",
                   help="restart the firmware first (soft reboot: boot.py and main.py run again)")
    p.add_argument("--hard-reset", action="store_true",
                   help="restart the chip first (machine.reset(), like its reset button)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--until", metavar="TEXT",
                   help="stop after the first line containing TEXT (exit 1 if --timeout comes "
                        "first), e.g. --until ready in a script")
