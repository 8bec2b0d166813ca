"""Board descriptions, ``boards/<id>.json``: load, validate, and tell how each board is wired.

One JSON file per supported board says which chip it carries, which MicroPython image to
flash where, how ``mpy-cross`` compiles for it, its buses (I2C, SPI, CAN) and, per app, the
devices wired to it. The firmware (``firmware/runtime/board.py``, from the ``/board.json``
copy a deploy writes), the simulation (``sim/boards.py``) and the host tools all read them.

Contract:

* :func:`load_board` returns a board as a plain ``dict`` that passed ``boards/schema.json``
  (JSON Schema 2020-12) *and* the checks a schema cannot express (:func:`check_board`).
  Anything wrong raises :class:`BoardError`, whose message names the file, the field path
  (``apps.controller.encoder.a``) and the reason, one line per problem.
* The keys the tools rely on are always present: ``board["chip"]``,
  ``board["micropython"]["variant"]``, ``board["micropython"]["offset"]`` (a hex string:
  use :func:`image_offset`), ``board["mpy_arch"]``, ``board["flash_size"]``.
* :func:`list_boards` names the boards in ``boards/``; :func:`pin_uses` lists every GPIO a
  board's buses and one app's wiring use, with its role; :func:`markdown` renders the
  board's section of ``docs/boards.md`` (``python -m cabinlink_tools.boards`` prints all).

Pin legality uses the simulation's chip facts (``sim/world.py``: GPIOs, input-only pins,
pins without pulls, ADC pins; imported lazily, nothing is started), plus the SPI flash pins
of each chip from ESP-IDF's GPIO reference. ``jsonschema`` is imported lazily too, so
importing this module stays cheap for the CLI.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .sim.cli_args import APPS, BOARDS_DIR

__all__ = ["APPS", "BOARDS_DIR", "SCHEMA_PATH", "BoardError", "ChipPins", "PinUse", "check_board",
           "chip_pins", "image_offset", "list_boards", "load_board", "markdown", "needs_machine_can",
           "pin_uses", "summary", "validate_board"]

SCHEMA_PATH = BOARDS_DIR / "schema.json"

Problem = tuple[str, str]  # (field path, reason); "" for the file as a whole


class BoardError(ValueError):
    """A board file that cannot be used: missing, unknown, malformed or mis-wired.

    ``source`` names the file (``boards/<id>.json`` for the repository's boards),
    ``problems`` holds ``(field path, reason)`` pairs; ``str(error)`` is one line per
    problem, ``"<source>: <field>: <reason>"``.
    """

    def __init__(self, source: str, problems: Iterable[Problem]) -> None:
        self.source = source
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(f"{source}: {f}: {r}" if f else f"{source}: {r}"
                                   for f, r in self.problems))

    @property
    def fields(self) -> list[str]:
        """The field paths named by the problems (for tests and tools)."""
        return [f for f, _ in self.problems]


# ---------------------------------------------------------------------------------------
# chip facts
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChipPins:
    """What a chip's GPIOs can do, for checking a wiring."""

    gpios: frozenset[int]
    input_only: frozenset[int]
    no_pull: frozenset[int]
    adc: frozenset[int]
    flash: frozenset[int]  # SPI0/1 pins of the boot flash: never part of a wiring


def _span(*spans: tuple[int, int]) -> frozenset[int]:
    return frozenset(n for a, b in spans for n in range(a, b + 1))


# SPI0/1 flash pins per chip (ESP-IDF docs/en/api-reference/peripherals/gpio.rst; C6 from its
# datasheet's pin list, outside the GPIOs the simulation offers anyway). Module-level extras
# (ESP32 GPIO16/17 on WROVER, S3 GPIO33-37 with octal PSRAM) are board facts: pins.reserved.
_FLASH = {
    "esp32": _span((6, 11)),
    "esp32s2": _span((26, 32)),
    "esp32s3": _span((26, 32)),
    "esp32c3": _span((12, 17)),
    "esp32c6": _span((24, 30)),
}

# (merged-image flash offset, mpy-cross -march, MicroPython generic board name) per chip:
# MicroPython ports/esp32/boards/*/board.json and the facts file, sections 5 and 7.
_CHIP_IMAGE = {
    "esp32": (0x1000, "xtensawin", "ESP32_GENERIC"),
    "esp32s2": (0x1000, "xtensawin", "ESP32_GENERIC_S2"),
    "esp32s3": (0x0, "xtensawin", "ESP32_GENERIC_S3"),
    "esp32c3": (0x0, "rv32imc", "ESP32_GENERIC_C3"),
    "esp32c6": (0x0, "rv32imc", "ESP32_GENERIC_C6"),
}


@lru_cache(maxsize=None)
def chip_pins(chip: str) -> ChipPins:
    """The GPIO facts of ``chip`` (one of the schema's chips); KeyError for others.

    ESP32, S3, C3 and C6 come from the simulation (``sim.world.CHIPS``), so a board that
    passes here also builds there. The simulation has no ESP32-S2: its facts are ESP-IDF's
    (GPIO0-21 and 26-46, GPIO46 input-only with a fixed pull-down, ADC on GPIO1-20).
    """
    if chip == "esp32s2":
        return ChipPins(_span((0, 21), (26, 46)), frozenset({46}), frozenset({46}), _span((1, 20)),
                        _FLASH[chip])
    from .sim.world import CHIPS

    f = CHIPS[chip]
    return ChipPins(f.gpios, f.input_only, f.no_pull, f.adc, _FLASH[chip])


# ---------------------------------------------------------------------------------------
# what each field of a wiring is
# ---------------------------------------------------------------------------------------
OUT, IN, PULL, IO, ADC = "output", "input", "input with pull-up", "open-drain I/O", "analog input"


@dataclass(frozen=True)
class PinUse:
    """One GPIO as a board file wires it: the field naming it, its role and what it is."""

    field: str  # path in the board file, e.g. "apps.mount.motor.in_a"
    gpio: int
    role: str  # OUT, IN, PULL (the firmware enables the internal pull-up), IO or ADC
    signal: str  # for people: "clamp motor IN_A (PWM)"


def _bus_uses(board: Mapping[str, Any]) -> list[PinUse]:
    uses: list[PinUse] = []
    i2c = board.get("i2c")
    if i2c:
        uses += [PinUse("i2c.scl", i2c["scl"], IO, "I2C SCL"), PinUse("i2c.sda", i2c["sda"], IO, "I2C SDA")]
    can = board.get("can") or {}
    mcp = can.get("controller") == "mcp2515"
    spi = board.get("spi")
    if spi:
        name = "MCP2515 " if mcp else "SPI "
        uses += [PinUse("spi.sck", spi["sck"], OUT, name + "SCK"),
                 PinUse("spi.mosi", spi["mosi"], OUT, name + ("SI (MOSI)" if mcp else "MOSI")),
                 PinUse("spi.miso", spi["miso"], IN, name + ("SO (MISO)" if mcp else "MISO"))]
    if mcp:
        uses += [PinUse("can.cs", can["cs"], OUT, "MCP2515 CS"),
                 PinUse("can.int", can["int"], IN, "MCP2515 INT (active low)")]
        if "rst" in can:
            uses.append(PinUse("can.rst", can["rst"], OUT, "MCP2515 RESET"))
    elif can.get("controller") == "onchip":
        uses += [PinUse("can.tx", can["tx"], OUT, "CAN transceiver TXD (TWAI TX)"),
                 PinUse("can.rx", can["rx"], IN, "CAN transceiver RXD (TWAI RX)")]
    if "status_led" in board:
        uses.append(PinUse("status_led", board["status_led"], OUT, "status LED (high = on)"))
    return uses


def _app_uses(app: str, w: Mapping[str, Any]) -> list[PinUse]:
    uses: list[PinUse] = []
    p = f"apps.{app}."
    if app == "controller":
        for i, n in enumerate(w.get("buttons", ())):
            uses.append(PinUse(f"{p}buttons[{i}]", n, PULL, f"button {i + 1} (to GND)"))
        enc = w.get("encoder")
        if enc:
            uses += [PinUse(p + "encoder.a", enc["a"], PULL, "encoder A (to GND)"),
                     PinUse(p + "encoder.b", enc["b"], PULL, "encoder B (to GND)")]
            if "switch" in enc:
                uses.append(PinUse(p + "encoder.switch", enc["switch"], PULL, "encoder push switch (to GND)"))
        leds = w.get("leds")
        if leds:
            uses.append(PinUse(p + "leds.pin", leds["pin"], OUT, f"LED chain data ({leds['count']} x WS2812)"))
        if "haptic" in w:
            uses.append(PinUse(p + "haptic", w["haptic"], OUT, "vibration motor driver (PWM)"))
    elif app == "mount":
        m = w.get("motor")
        if m:
            uses += [PinUse(p + "motor.in_a", m["in_a"], OUT, "clamp motor H-bridge IN_A (PWM)"),
                     PinUse(p + "motor.in_b", m["in_b"], OUT, "clamp motor H-bridge IN_B (PWM)"),
                     PinUse(p + "motor.current_adc", m["current_adc"], ADC, "clamp motor current sense (ADC)"),
                     PinUse(p + "motor.limit", m["limit"], IN, "clamp open-limit switch (to GND)")]
        if "servo" in w:
            uses.append(PinUse(p + "servo", w["servo"], OUT, "rotation servo signal (PWM)"))
        if "phone_sense" in w:
            uses.append(PinUse(p + "phone_sense", w["phone_sense"], IN, "phone presence switch (to GND)"))
        ch = w.get("charger")
        if ch:
            uses += [PinUse(p + "charger.status", ch["status"], IN, "charger status (active low)"),
                     PinUse(p + "charger.ntc_adc", ch["ntc_adc"], ADC, "charger NTC divider (ADC)")]
            if "enable" in ch:
                uses.append(PinUse(p + "charger.enable", ch["enable"], OUT, "charger enable"))
    return uses  # ambient: sensors on the I2C bus, no pins of its own


def pin_uses(board: Mapping[str, Any], app: str | None = None) -> list[PinUse]:
    """Every GPIO the board's buses use, followed by those of ``app``'s wiring (if given).

    The board must have passed the schema (:func:`validate_board`); an app the board does
    not wire contributes nothing."""
    uses = _bus_uses(board)
    if app is not None:
        uses += _app_uses(app, (board.get("apps") or {}).get(app) or {})
    return uses


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------
def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _schema_problems(board: Any) -> list[Problem]:
    problems: list[Problem] = []
    for e in _validator().iter_errors(board):
        # An if/then or allOf failure carries its real causes as context: report those.
        leaves = [e]
        while leaves and all(x.context for x in leaves) and any(x.validator in ("allOf", "anyOf", "oneOf") for x in leaves):
            leaves = [c for x in leaves for c in x.context]
        for err in leaves:
            where = list(err.absolute_path)
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                allowed = sorted(err.schema.get("properties", {}))
                for key in sorted(k for k in err.instance if k not in allowed):
                    problems.append((_path([*where, key]),
                                     f"unknown field (allowed here: {', '.join(allowed)})"))
            elif err.validator == "required":
                missing = err.message.split("'")[1] if "'" in err.message else err.message
                problems.append((_path([*where, missing]), "required field missing"))
            else:
                problems.append((_path(where) or "(top level)", err.message))
    return sorted(set(problems))


def validate_board(board: Any, source: str = "<board>", stem: str | None = None) -> None:
    """Raise :class:`BoardError` unless ``board`` passes the schema and :func:`check_board`.

    ``stem`` is the file name without ``.json``: the board's ``id`` must equal it."""
    problems = _schema_problems(board)
    if not problems:
        problems = check_board(board, stem)
    if problems:
        raise BoardError(source, problems)


def check_board(board: Mapping[str, Any], stem: str | None = None) -> list[Problem]:
    """The problems a schema cannot see in a schema-valid ``board`` (empty when none).

    * ``id`` equals the file name (``stem``) when one is given;
    * the image offset, ``mpy_arch`` and a generic image's name fit the chip;
    * every wired GPIO exists on the chip, is not a flash pin, not ``pins.reserved``, and is
      on a connector (``pins.exposed``, when given) or part of the board (``pins.onboard``);
    * outputs (and I2C) are not on input-only pins, inputs that get the internal pull-up
      are on pins that have one, analog inputs are on ADC pins;
    * no GPIO is used twice by the buses, nor by the buses plus any one app's wiring
      (apps are alternatives, so two apps may reuse a pin);
    * ``pin_notes`` keys name wired fields, ``pins`` lists only the chip's GPIOs.
    """
    problems: list[Problem] = []
    chip = board["chip"]
    if stem is not None and board["id"] != stem:
        problems.append(("id", f"{board['id']!r} does not match the file name {stem + '.json'!r}"))
    offset, arch, generic = _CHIP_IMAGE[chip]
    mp = board["micropython"]
    if int(mp["offset"], 16) != offset:
        problems.append(("micropython.offset", f"{chip} images go at {offset:#x}, not {mp['offset']}"))
    if board["mpy_arch"] != arch:
        problems.append(("mpy_arch", f"{chip} needs -march={arch}, not {board['mpy_arch']}"))
    for where, name in [("micropython.variant", mp["variant"])] + [
            (f"micropython.other_variants.{k}", k) for k in mp.get("other_variants", {})]:
        base = name.split("-")[0]
        if base.startswith("ESP32_GENERIC") and base != generic:
            problems.append((where, f"{name} is not an image for {chip} (its generic image is {generic})"))

    facts = chip_pins(chip)
    pins = board.get("pins") or {}
    reserved = {int(k): v for k, v in (pins.get("reserved") or {}).items()}
    onboard = {int(k): v for k, v in (pins.get("onboard") or {}).items()}
    exposed = set(pins["exposed"]) if "exposed" in pins else None
    for key, listed in (("exposed", pins.get("exposed", [])), ("strapping", pins.get("strapping", [])),
                        ("onboard", onboard), ("reserved", reserved)):
        for n in listed:
            if n not in facts.gpios:
                problems.append((f"pins.{key}", f"GPIO{n} does not exist on {chip}"))

    def legal(u: PinUse) -> list[Problem]:
        n = u.gpio
        if n not in facts.gpios:
            return [(u.field, f"GPIO{n} does not exist on {chip}")]
        if n in facts.flash:
            return [(u.field, f"GPIO{n} is wired to the SPI flash on {chip}")]
        if n in reserved:
            return [(u.field, f"GPIO{n} is reserved on this board: {reserved[n]}")]
        out: list[Problem] = []
        if exposed is not None and n not in exposed and n not in onboard:
            out.append((u.field, f"GPIO{n} is not on a connector of this board (pins.exposed)"))
        if u.role in (OUT, IO) and n in facts.input_only:
            out.append((u.field, f"GPIO{n} is input-only on {chip} and cannot drive the {u.signal}"))
        if u.role == PULL and n in facts.no_pull:
            out.append((u.field, f"GPIO{n} has no internal pull-up on {chip}, which the {u.signal} needs"))
        if u.role == ADC and n not in facts.adc:
            out.append((u.field, f"GPIO{n} has no ADC channel on {chip} "
                                 f"(ADC pins: {', '.join(map(str, sorted(facts.adc)))})"))
        return out

    def twice(uses: list[PinUse], seen: dict[int, str]) -> list[Problem]:
        out: list[Problem] = []
        for u in uses:
            if u.gpio in seen:
                out.append((u.field, f"GPIO{u.gpio} is already used by {seen[u.gpio]}"))
            else:
                seen[u.gpio] = u.field
        return out

    bus = _bus_uses(board)
    wired = {u.field for u in bus}
    for u in bus:
        problems += legal(u)
    bus_seen: dict[int, str] = {}
    problems += twice(bus, bus_seen)
    for app in board["apps"]:
        uses = _app_uses(app, board["apps"][app])
        wired.update(u.field for u in uses)
        for u in uses:
            problems += legal(u)
        problems += twice(uses, dict(bus_seen))
    for key in board.get("pin_notes", {}):
        if key not in wired:
            problems.append((f"pin_notes.{key}", "names no wired field of this board"))
    return list(dict.fromkeys(problems))


# ---------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------
def list_boards(boards_dir: Path = BOARDS_DIR) -> list[str]:
    """The ids of the board files in ``boards_dir`` (``schema.json`` excluded), sorted."""
    return sorted(p.stem for p in boards_dir.glob("*.json") if p.name != SCHEMA_PATH.name)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(BOARDS_DIR.parent))
    except ValueError:
        return str(path)


def load_board(name_or_path: str | os.PathLike[str], boards_dir: Path = BOARDS_DIR) -> dict[str, Any]:
    """The validated board ``name_or_path``: a board id (``esp32-devkitc``, looked up in
    ``boards_dir``) or the path of a board file (anything with a ``/`` or ending ``.json``).

    Raises :class:`BoardError`: an unknown id (the message lists the known ones), a file
    that cannot be read or parsed, a schema violation or a failed :func:`check_board`."""
    raw = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or "/" in raw or os.sep in raw or raw.endswith(".json"):
        path = Path(raw)
        if not path.is_file():
            raise BoardError(_display(path), [("", "no such board file")])
    else:
        path = boards_dir / f"{raw}.json"
        if raw == SCHEMA_PATH.stem or not path.is_file():
            known = ", ".join(list_boards(boards_dir)) or "none"
            raise BoardError(_display(path), [("", f"unknown board {raw!r}; known boards: {known}")])
    source = _display(path)
    try:
        board = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise BoardError(source, [("", f"cannot read: {e}")]) from None
    except json.JSONDecodeError as e:
        raise BoardError(source, [("", f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")]) from None
    validate_board(board, source, path.stem)
    return board


def image_offset(board: Mapping[str, Any]) -> int:
    """Flash address of the board's MicroPython image, as an int (``0x1000`` -> 4096)."""
    return int(board["micropython"]["offset"], 16)


def needs_machine_can(board: Mapping[str, Any]) -> bool:
    """True when the board's CAN controller is the chip's own (TWAI): stock ESP32
    MicroPython has no ``machine.CAN``, so CAN then needs a build that adds it."""
    return (board.get("can") or {}).get("controller") == "onchip"


# ---------------------------------------------------------------------------------------
# docs/boards.md
# ---------------------------------------------------------------------------------------
def _notes(board: Mapping[str, Any], u: PinUse) -> str:
    facts = chip_pins(board["chip"])
    pins = board.get("pins") or {}
    notes = []
    own = (board.get("pin_notes") or {}).get(u.field)
    if own:
        notes.append(own)
    onboard = (pins.get("onboard") or {}).get(str(u.gpio))
    if onboard and not own:
        notes.append("wired on the board" if onboard.lower() in u.signal.lower() else f"on the board: {onboard}")
    if u.gpio in pins.get("strapping", []) and not (own and "strapping" in own):
        notes.append("strapping pin: its level at reset matters")
    if u.role == IN and u.gpio in facts.no_pull and not (own and "pull" in own):
        notes.append("no internal pull-up: fit one (10k to 3V3)")
    return "; ".join(notes)


def _table(board: Mapping[str, Any], uses: list[PinUse]) -> list[str]:
    rows = ["| signal | GPIO | as | notes |", "|---|---|---|---|"]
    rows += [f"| {u.signal} | {u.gpio} | {u.role} | {_notes(board, u)} |" for u in uses]
    return rows


_SENSORS = {"sht4x": ("SHT4x", "temperature, humidity", 0x44), "scd4x": ("SCD4x", "CO2", 0x62),
            "bh1750": ("BH1750", "illuminance", 0x23)}


def markdown(board: Mapping[str, Any]) -> str:
    """The board's section of ``docs/boards.md``: image, CAN, wiring tables per app, pins to
    avoid, sources. Deterministic, so the docs test can compare it with the page."""
    mp = board["micropython"]
    can = board.get("can") or {}
    lines = [f"## {board['name']} (`{board['id']}`)", ""]
    lines += ["| | |", "|---|---|"]
    chip = board["chip"]
    lines.append(f"| chip | {chip}" + (f", {board['module']}" if "module" in board else "")
                 + f", {board['flash_size']} flash |")
    lines.append(f"| MicroPython image | `{mp['variant']}` at `{mp['offset']}` |")
    for name, when in mp.get("other_variants", {}).items():
        lines.append(f"| other image | `{name}`: {when} |")
    lines.append(f"| flash by hand | `esptool --chip {chip} --port PORT write-flash {mp['offset']} "
                 f"{mp['variant']}-DATE-VERSION.bin` |")
    lines.append(f"| mpy-cross | `-march={board['mpy_arch']}` |")
    if can.get("controller") == "mcp2515":
        lines.append(f"| CAN | MCP2515 on SPI ({can['osc_hz'] // 1_000_000} MHz crystal), {can['bitrate']} bit/s:"
                     " works on the stock image |")
    elif can:
        lines.append(f"| CAN | on-chip TWAI + transceiver, {can['bitrate']} bit/s: **needs a MicroPython build"
                     " with `machine.CAN`** (stock images: BLE only) |")
    else:
        lines.append("| CAN | none: BLE only |")
    if "usb" in board:
        lines.append(f"| USB | {board['usb']} |")
    lines.append(f"| apps | {', '.join(a for a in APPS if a in board['apps'])} |")
    if board.get("notes"):
        lines += [""] + [f"- {n}" for n in board["notes"]]
    lines += ["", "### Buses", ""] + _table(board, _bus_uses(board))
    for app in APPS:
        w = board["apps"].get(app)
        if w is None:
            continue
        lines += ["", f"### {app}", ""]
        if app == "ambient":
            i2c = board["i2c"]
            lines += ["| sensor | I2C address | notes |", "|---|---|---|"]
            for key, (name, what, default) in _SENSORS.items():
                if key in w:
                    addr = w[key].get("addr", default)
                    lines.append(f"| {name} ({what}) | {addr:#04x} | on the I2C bus, SCL GPIO{i2c['scl']}"
                                 f" / SDA GPIO{i2c['sda']} |")
        else:
            lines += _table(board, _app_uses(app, w))
    pins = board.get("pins") or {}
    avoid = [f"GPIO{k} ({v})" for k, v in sorted((pins.get("reserved") or {}).items(), key=lambda kv: int(kv[0]))]
    lines += ["", "### Pins to avoid", ""]
    lines.append("- SPI flash: GPIO" + ", ".join(map(str, sorted(_FLASH[chip]))))
    if avoid:
        lines.append("- reserved on this board: " + ", ".join(avoid))
    if pins.get("strapping"):
        lines.append("- strapping pins (level at reset matters): GPIO"
                     + ", ".join(map(str, sorted(pins["strapping"]))))
    lines += ["", "### Sources", ""] + [f"- {s}" for s in board["sources"]]
    return "\n".join(lines) + "\n"


def summary(boards: Iterable[Mapping[str, Any]]) -> str:
    """The overview table at the top of ``docs/boards.md``, one row per board."""
    rows = ["| board | chip | MicroPython image | offset | CAN | apps |", "|---|---|---|---|---|---|"]
    for b in boards:
        can = (b.get("can") or {}).get("controller")
        what = {"mcp2515": "MCP2515 (stock image)", "onchip": "on-chip (needs `machine.CAN` build)"}.get(
            can or "", "none")
        rows.append(f"| [{b['name']}](#{_anchor(b)}) | {b['chip']} | `{b['micropython']['variant']}` "
                    f"| `{b['micropython']['offset']}` | {what} | "
                    f"{', '.join(a for a in APPS if a in b['apps'])} |")
    return "\n".join(rows) + "\n"


def _anchor(board: Mapping[str, Any]) -> str:
    # GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes.
    title = f"{board['name']} ({board['id']})".lower()
    return "".join(c if c.isalnum() or c in "-_" else "-" if c == " " else "" for c in title)


def main(argv: list[str] | None = None) -> int:
    """Print the overview table and every board's section of docs/boards.md (validating
    each board on the way); 1 and the problems on stderr if a board is invalid."""
    try:
        boards = [load_board(name) for name in list_boards()]
    except BoardError as e:
        print(e, file=sys.stderr)
        return 1
    sys.stdout.write(summary(boards) + "\n")
    for b in boards:
        sys.stdout.write(markdown(b) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
