"""``cabinlink config``: build a unit's ``/config.json``, check it, write it to the board.

The config (:func:`build_config`) starts from defaults for the board and app, then a
``--from`` file on top, then the options (``--name``, ``--vendor``, ``--product``,
``--serial``, ``--can/--no-can``, ``--ble/--no-ble``), then each ``--set KEY=JSON``
(a dotted path: ``--set links.can.bitrate=250000``). The identity serial is the chip's
unique id (``machine.unique_id()``, read over the raw REPL, as hex) unless ``--serial`` or
the ``--from`` file gives one.

:func:`validate` checks it against ``spec/config.schema.json`` plus the rules a JSON Schema
cannot say (string limits in UTF-8 bytes, the board's name): it accepts exactly what the
firmware's ``runtime/config.py`` accepts, with messages that name the field
(``links.can.bitrate: must be one of 125000, 250000, 500000, 1000000``). Before writing,
:func:`configure` also checks the unit: the board has wiring for the app, and the board
holds a deploy for this board with this app.

The file is written atomically (``/config.json.tmp``, SHA-256 checked on the board, renamed
over ``/config.json``; the firmware reads a leftover ``.tmp`` if the rename was cut short),
read back and compared, then the board is reset so the firmware starts with it.
"""
from __future__ import annotations

import copy
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .device import Device, DeviceError, load_board

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "spec" / "config.schema.json"
CONFIG = "/config.json"
_TEXT_BYTES = {("identity", "vendor"): 32, ("identity", "product"): 32,
               ("identity", "serial"): 32, ("identity", "hardware"): 32}

# Facts about the unit, one command: unique id (hex), deployed board id, app present, main.py.
_FACTS = """\
import os, json, binascii
try:
 import machine;_u=binascii.hexlify(machine.unique_id()).decode()
except Exception:_u=None
try:
 with open('/board.json') as f:_b=json.load(f).get('id')
except Exception:_b=None
def _cl_x(p):
 try:os.stat(p);return True
 except OSError:return False
print(repr((_u,_b,_cl_x(%(app)r),_cl_x('/main.py'))))
"""


@dataclass
class ConfigResult:
    """What :func:`configure` did."""

    config: dict[str, Any]
    text: str
    written: bool = False
    serial_from_chip: bool = False
    wire_bytes: int = 0
    warnings: list[str] = field(default_factory=list)


# -- validation ---------------------------------------------------------------------------

_validator_cache: list[Any] = []


def _validator() -> Any:
    """A Draft 2020-12 validator for the schema, with JSON's types as Python reads them:
    ``integer`` is an int that is not a bool (128.0 is not an integer, as on the firmware)."""
    if not _validator_cache:
        from jsonschema import Draft202012Validator, validators

        checker = Draft202012Validator.TYPE_CHECKER.redefine(
            "integer", lambda _c, v: isinstance(v, int) and not isinstance(v, bool))
        cls = validators.extend(Draft202012Validator, type_checker=checker)
        with open(SCHEMA_PATH, encoding="utf-8") as f:
            schema = json.load(f)
        cls.check_schema(schema)
        _validator_cache.append(cls(schema))
    return _validator_cache[0]


def _field(path: Any, *more: str) -> str:
    parts = [str(p) for p in path] + list(more)
    return ".".join(parts) if parts else "(top level)"


def _reason(schema: Any, keyword: str) -> str | None:
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref.startswith("#/$defs/"):
            schema = _validator().schema["$defs"][ref.split("/")[-1]]
    msgs = schema.get("x-messages") or {}
    return msgs.get(keyword) or schema.get("x-message") or msgs.get("type")


def validate(cfg: Any, board_name: str | None = None) -> list[str]:
    """Every problem with ``cfg`` as ``"field: reason"``; empty when the firmware accepts it.

    ``board_name``: the board the unit is (``config.board`` must name it)."""
    found: dict[str, None] = {}
    for e in sorted(_validator().iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path))):
        if e.validator == "required":
            have = e.instance if isinstance(e.instance, dict) else {}
            for name in e.validator_value:
                if name not in have:
                    sub = (e.schema.get("properties") or {}).get(name)
                    why = _reason(sub, "type") or "is required"
                    found[f"{_field(e.absolute_path, name)}: missing; {why}"] = None
        else:
            why = _reason(e.schema, str(e.validator)) or e.message
            found[f"{_field(e.absolute_path)}: {why}"] = None
    if isinstance(cfg, dict):
        ident = cfg.get("identity")
        if isinstance(ident, dict):
            for (_, key), limit in _TEXT_BYTES.items():
                v = ident.get(key)
                if isinstance(v, str) and len(v.encode()) > limit:
                    found[f"identity.{key}: must be a string of 1..{limit} bytes"] = None
        links = cfg.get("links")
        ble = links.get("ble") if isinstance(links, dict) else None
        if isinstance(ble, dict) and ble.get("enabled") is True:
            name = ble.get("name")
            if isinstance(name, str) and len(name.encode()) > 20:
                found["links.ble.name: must be a string of 1..20 bytes (it fits the scan "
                      "response)"] = None
        board = cfg.get("board")
        if board_name is not None and isinstance(board, str) and board != board_name:
            found[f"board: is {board!r} but this is a {board_name!r} board"] = None
    return list(found)


def unit_problems(cfg: dict[str, Any], board: dict[str, Any]) -> list[str]:
    """What keeps a valid config from running on this board (host-side knowledge)."""
    app = cfg.get("app")
    wired = board.get("apps") or {}
    problems = []
    if isinstance(app, str) and app not in wired:
        problems.append(f"app: board {board.get('id')!r} has no wiring for {app!r} "
                        f"(it has: {', '.join(wired) or 'none'})")
    can = (cfg.get("links") or {}).get("can") or {}
    if can.get("enabled") is True and not board.get("can"):
        problems.append(f"links.can.enabled: board {board.get('id')!r} has no CAN controller; "
                        "use --no-can --ble")
    return problems


# -- building -----------------------------------------------------------------------------

def parse_set(item: str) -> tuple[list[str], Any]:
    """``"links.can.bitrate=250000"`` -> ``(["links", "can", "bitrate"], 250000)``."""
    key, sep, raw = item.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if not sep or not path:
        raise DeviceError(f"--set {item!r}: write KEY=JSON, e.g. --set links.can.bitrate=250000")
    try:
        value = json.loads(raw)
    except ValueError:
        raise DeviceError(f"--set {item!r}: the value must be JSON; quote strings: "
                          f"--set '{key}=\"{raw}\"'") from None
    return path, value


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) \
            else copy.deepcopy(v)
    return out


def build_config(board: dict[str, Any], app: str | None, serial: str | None, *,
                 base: dict[str, Any] | None = None, name: str | None = None,
                 vendor: str | None = None, product: str | None = None,
                 can: bool | None = None, ble: bool | None = None,
                 sets: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The unit's config from the board's defaults, ``base`` (a ``--from`` file), the
    options and the ``--set`` items, in that order; ``serial`` (when not None) is the
    identity serial. Not validated here (see :func:`validate`)."""
    base = base or {}
    sn = serial or _base_serial(base) or "unknown"
    bcan = board.get("can") or {}
    cfg: dict[str, Any] = {
        "version": 1, "app": app, "board": board.get("id"),
        "identity": {"vendor": "CabinLink", "product": f"CabinLink {app}",
                     "serial": sn, "hardware": str(board.get("id", "?"))[:32]},
        "links": {"can": {"enabled": bool(bcan), "bitrate": bcan.get("bitrate", 500000)},
                  "ble": {"enabled": not bcan, "name": f"CabinLink {sn[-4:]}", "bond": False}},
        "keys": {}, "calibration": {}, "app_config": {},
    }
    cfg = _merge(cfg, base)
    cfg["board"] = board.get("id")
    if app is not None:
        cfg["app"] = app
    if serial is not None and isinstance(cfg.get("identity"), dict):
        cfg["identity"]["serial"] = serial
    ident, links = cfg.get("identity"), cfg.get("links")
    if isinstance(ident, dict):
        if vendor is not None:
            ident["vendor"] = vendor
        if product is not None:
            ident["product"] = product
    if isinstance(links, dict):
        if can is not None and isinstance(links.get("can"), dict):
            links["can"]["enabled"] = can
        if isinstance(links.get("ble"), dict):
            if ble is not None:
                links["ble"]["enabled"] = ble
            if name is not None:
                links["ble"]["name"] = name
                if ble is None:
                    links["ble"]["enabled"] = True
    for item in sets:
        path, value = parse_set(item)
        node: Any = cfg
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return cfg


def config_text(cfg: dict[str, Any]) -> str:
    """The file as written to the board."""
    return json.dumps(cfg, indent=1) + "\n"


# -- the command --------------------------------------------------------------------------

def _load_from(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            base = json.load(f)
    except OSError as e:
        raise DeviceError(f"--from {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise DeviceError(f"--from {path}: not valid JSON ({e})") from None
    if not isinstance(base, dict):
        raise DeviceError(f"--from {path}: must hold a JSON object")
    return base


def configure(board_name: str, port: str | None, app: str | None = None, *,
              serial: str | None = None, name: str | None = None, vendor: str | None = None,
              product: str | None = None, can: bool | None = None, ble: bool | None = None,
              sets: list[str] | tuple[str, ...] = (), from_file: Path | None = None,
              dry_run: bool = False, reset: bool = True, baudrate: int = 115200,
              wait: float = 0.0) -> ConfigResult:
    """Build, validate and (unless ``dry_run``) write the config of the unit at ``port``.

    Raises DeviceError with every problem (one per line) when the config is invalid, and
    with one clear message when the board cannot be reached or the read-back differs.
    ``port`` may be None only for a dry run with ``serial`` given."""
    board = load_board(board_name)
    base = _load_from(from_file) if from_file else None
    given = serial or _base_serial(base)
    if port is None and not (dry_run and given):
        raise DeviceError("--port is needed (to read the chip's unique id and write the file); "
                          "for a dry run without a board give --serial")
    want_app = app or (base or {}).get("app")
    if not want_app:
        raise DeviceError('--app is needed (or an "app" in the --from file)')

    def make(sn: str | None) -> dict[str, Any]:
        return build_config(board, want_app, sn, base=base, name=name, vendor=vendor,
                            product=product, can=can, ble=ble, sets=sets)

    def checked(cfg: dict[str, Any], facts: tuple[Any, ...] | None) -> str:
        problems = validate(cfg, board_name) or unit_problems(cfg, board)
        if not problems and facts is not None:
            problems = _device_problems(cfg, board_name, port or "", facts)
        if problems:
            raise DeviceError("invalid config:\n  " + "\n  ".join(problems))
        return config_text(cfg)

    if port is None:
        cfg = make(serial)
        return ConfigResult(cfg, checked(cfg, None))
    with Device(port, baudrate, wait=wait) as dev:
        facts = dev.lines(_FACTS % {"app": f"/apps/{want_app}"}, "reading the unit's identity")[0]
        chip = facts[0]
        if not given and not chip:
            raise DeviceError("cannot read machine.unique_id() on the board; give the serial "
                              "number with --serial")
        cfg = make(serial or (None if given else chip))
        text = checked(cfg, facts)
        result = ConfigResult(cfg, text, serial_from_chip=not given)
        if dry_run:
            result.wire_bytes = dev.bytes_sent
            return result
        data = text.encode()
        dev.put(CONFIG, data, hashlib.sha256(data).hexdigest())
        back = dev.read(CONFIG)
        if back != data:
            raise DeviceError(f"{CONFIG} read back from the board differs from what was "
                              "written (flash full or failing?); run the command again")
        result.written = True
        if reset:
            dev.hard_reset(reconnect=False)
        result.wire_bytes = dev.bytes_sent
    return result


def _base_serial(base: dict[str, Any] | None) -> str | None:
    ident = (base or {}).get("identity")
    sn = ident.get("serial") if isinstance(ident, dict) else None
    return sn if isinstance(sn, str) and sn else None


def _device_problems(cfg: dict[str, Any], board_name: str, port: str,
                     facts: tuple[Any, ...]) -> list[str]:
    _, deployed_board, has_app, has_main = facts
    deploy = f"cabinlink deploy --board {board_name} --port {port}"
    if deployed_board is None or not has_main:
        return [f"the board holds no complete CabinLink deploy: run `{deploy}` first"]
    if deployed_board != board_name:
        return [f"board: the firmware on the board was deployed for {deployed_board!r} "
                f"(its /board.json), not {board_name!r}: run `{deploy}` or pass "
                f"--board {deployed_board}"]
    if not has_app:
        return [f"app: the board has no apps/{cfg.get('app')}: run `{deploy} --app "
                f"{cfg.get('app')}` (or without --app)"]
    return []


def show(port: str, baudrate: int = 115200, board_name: str | None = None) -> str:
    """The board's current /config.json, pretty, plus its problems if it has any."""
    with Device(port, baudrate) as dev:
        data = dev.read(CONFIG)
    if data is None:
        raise DeviceError(f"the board has no {CONFIG}: write one with `cabinlink config "
                          f"--board BOARD --port {port} --app APP`")
    try:
        cfg = json.loads(data)
    except ValueError as e:
        return data.decode(errors="replace") + f"\n(not valid JSON: {e}; the firmware runs in safe mode)"
    text = json.dumps(cfg, indent=2)
    problems = validate(cfg, board_name)
    if problems:
        text += "\nproblems (the firmware runs in safe mode):\n  " + "\n  ".join(problems)
    return text


def run(args: Any) -> int:
    """The ``cabinlink config`` handler: 0 on success, 1 with the problems on failure."""
    try:
        if args.show:
            if not args.port:
                raise DeviceError("--show needs --port")
            print(show(args.port, args.baud, args.board))
            return 0
        if not args.board:
            raise DeviceError("--board is needed (a file name in boards/ without .json)")
        r = configure(args.board, args.port, args.app, serial=args.serial, name=args.name,
                      vendor=args.vendor, product=args.product, can=args.can, ble=args.ble,
                      sets=args.set or [], from_file=args.from_file, dry_run=args.dry_run,
                      reset=args.reset, baudrate=args.baud, wait=args.wait)
    except DeviceError as e:
        print(f"cabinlink config: {e}", file=sys.stderr)
        return 1
    ident = r.config["identity"]
    src = " (the chip's unique id)" if r.serial_from_chip else ""
    if r.written:
        print(f"wrote {CONFIG}: app {r.config['app']}, serial {ident['serial']}{src}; "
              f"read back and compared{'' if not args.reset else '; board reset'}")
    else:
        print(r.text, end="")
        print(f"dry run: valid, not written (serial {ident['serial']}{src})")
    return 0
