"""boards/*.json: every file passes the schema and the wiring checks, builds a simulated
board, boots the real firmware for each app it wires and joins the simulated CAN bus; bad
files are refused with the field named; docs/boards.md is the rendering of the files."""
from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cabinlink_tools import boards as B
from cabinlink_tools.sim import boards as simboards
from cabinlink_tools.sim.cabin import Cabin
from cabinlink_tools.sim.canbus import SimBus
from cabinlink_tools.sim.chips.mcp2515 import Mcp2515
from cabinlink_tools.sim.simulation import unique_id_for
from cabinlink_tools.sim.world import SimBoard, World

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = ["esp32-devkitc", "esp32-s3-devkitc-1", "esp32-c3-devkitm-1", "esp32-c6-devkitc-1",
            "lilygo-t-2can", "m5stack-atom-lite-can", "m5stack-atoms3-can"]
NAMES = B.list_boards()
PAIRS = [(b, a) for b in NAMES for a in B.APPS if a in json.loads((B.BOARDS_DIR / f"{b}.json").read_text())["apps"]]


def test_the_board_set_and_schema() -> None:
    import jsonschema

    assert set(REQUIRED) <= set(NAMES), NAMES
    assert "schema" not in NAMES and NAMES == simboards.board_names()
    schema = json.loads(B.SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"].endswith("2020-12/schema")


@pytest.mark.parametrize("name", NAMES)
def test_board_file_validates_and_has_what_the_tools_read(name: str) -> None:
    b = B.load_board(name)
    assert B.load_board(B.BOARDS_DIR / f"{name}.json") == b  # by path too
    assert b["id"] == name and b["chip"] in B._CHIP_IMAGE
    offset, arch, _ = B._CHIP_IMAGE[b["chip"]]
    assert B.image_offset(b) == int(b["micropython"]["offset"], 16) == offset
    assert b["mpy_arch"] == arch and b["flash_size"].endswith("MB")
    assert b["micropython"]["variant"] and b["sources"]
    # Every board says where its facts come from, and an on-chip CAN board says that it
    # needs a machine.CAN build.
    if B.needs_machine_can(b):
        assert any("machine.CAN" in s for s in b["sources"]), b["sources"]


def _attach(bus: SimBus, world: World) -> Callable[[SimBoard, dict[str, Any]], Any]:
    def attach(board: SimBoard, spec: dict[str, Any]) -> Any:
        if spec["controller"] == "onchip":
            board.can_addr = "127.0.0.1:1"  # never connected: no firmware runs here
            return None
        return Mcp2515.wire(board, bus, spec, time.monotonic, lock=world.lock, spi=board.spec.get("spi"))

    return attach


@pytest.mark.parametrize(("name", "app"), PAIRS)
def test_wiring_builds_a_simulated_board(name: str, app: str) -> None:
    """sim/boards.py builds each (board, app) with the devices the file wires, on GPIOs the
    simulated chip has (SimBoard.pin refuses others)."""
    spec = B.load_board(name)
    w = spec["apps"][app]
    world, bus = World(), SimBus(start=False)
    try:
        sb, dev = simboards.build(world, name, app, "u1", unique_id_for("u1"), Cabin(), time.monotonic,
                                  _attach(bus, world))
        for use in B.pin_uses(spec, app):
            assert sb.pin(use.gpio).number == use.gpio
        if spec["can"]["controller"] == "mcp2515":
            assert isinstance(dev.can, Mcp2515) and dev.can.osc_hz == spec["can"]["osc_hz"]
            assert sb.spi  # the MCP2515 sits on the board's SPI pins
        else:
            assert dev.can is None and sb.can_addr
        if app == "ambient":
            assert sorted(dev.sensors) == sorted(w)
            i2c = spec["i2c"]
            assert sorted(sb.i2c[f"{i2c['scl']}/{i2c['sda']}"]) == sorted(
                s.get("addr") for s in w.values())
        elif app == "controller":
            assert [b.pin.number for b in dev.buttons] == w.get("buttons", [])
            assert (dev.encoder is not None) == ("encoder" in w)
            assert (dev.leds is not None and dev.leds.n == w["leds"]["count"]) if "leds" in w else dev.leds is None
            assert (dev.haptic is not None) == ("haptic" in w)
        else:
            assert dev.motor is not None
            assert (dev.servo is not None) == ("servo" in w)
            assert (dev.charger is not None) == ("charger" in w)
            assert (dev.phone_sense is not None) == ("phone_sense" in w)
    finally:
        bus.close()


def test_every_board_and_app_boots_the_firmware_and_joins_the_bus() -> None:
    """The real firmware (CPython runtime) on every (board, app) pair: it starts its app on
    the file's wiring and claims an address through the board's CAN path (MCP2515 at the
    file's crystal, or the on-chip controller), as a python-can peer hears."""
    from cabinlink_tools.monitor import BusDecoder
    from cabinlink_tools.sim.simulation import Simulation

    with Simulation() as sim:
        peer = sim.can_peer()
        accs = [sim.add(b, a, "cpython", name=f"{b}.{a}") for b, a in PAIRS]
        names: dict[str, str] = {}
        for acc in accs:
            acc.wait_for("ready", 60)
            log = "\n".join(acc.log)
            assert f"app {acc.app}:" in log and "SAFE MODE" not in log and "Traceback" not in log, log
            assert not [line for line in acc.log if line.startswith("E ")], log
            link = [line for line in acc.log if "can link:" in line]
            assert link and "500000 bit/s" in link[0], log
            names[link[0].split("NAME ")[1].strip().upper()] = acc.name
        decoder = BusDecoder()
        heard: set[str] = set()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not set(names) <= heard:
            m = peer.recv(timeout=0.2)
            if m is not None:
                for line in decoder.feed(m.arbitration_id, bytes(m.data), m.is_extended_id):
                    if "claims address" in line:
                        heard.add(line.split("NAME ")[1].rstrip(")"))
        assert set(names) <= heard, sorted(names[n] for n in set(names) - heard)


# --- bad board files ---------------------------------------------------------------------
def _devkitc() -> dict[str, Any]:
    return json.loads((B.BOARDS_DIR / "esp32-devkitc.json").read_text())


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(b: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            b = b[p]
        b[last] = value

    return edit


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("typo'd key", lambda b: b["apps"]["controller"]["encoder"].update(swtch=13),
     "apps.controller.encoder.swtch", "unknown field"),
    ("typo'd top-level key", lambda b: b.update(stauts_led=b.pop("status_led")), "stauts_led", "unknown field"),
    ("pin used twice in an app", _set("apps.controller.haptic", 33),
     "apps.controller.haptic", "already used by apps.controller.buttons[1]"),
    ("app pin on a bus pin", _set("apps.mount.servo", 18), "apps.mount.servo", "already used by spi.sck"),
    ("input-only pin as an output", _set("apps.controller.haptic", 34),
     "apps.controller.haptic", "input-only"),
    ("unknown chip", _set("chip", "esp8266"), "chip", "is not one of"),
    ("no pull-up where the controller needs one", _set("apps.controller.encoder.a", 36),
     "apps.controller.encoder.a", "no internal pull-up"),
    ("analog input on a pin without ADC", _set("apps.mount.charger.ntc_adc", 23),
     "apps.mount.charger.ntc_adc", "no ADC channel"),
    ("flash pin", _set("apps.controller.leds.pin", 7), "apps.controller.leds.pin", "SPI flash"),
    ("reserved pin", _set("status_led", 1), "status_led", "reserved on this board"),
    ("pin not on a connector", _set("apps.mount.phone_sense", 38), "apps.mount.phone_sense", "not on a connector"),
    ("pin the chip lacks", _set("apps.mount.servo", 20), "apps.mount.servo", "does not exist on esp32"),
    ("offset of another chip", _set("micropython.offset", "0x0"), "micropython.offset", "0x1000"),
    ("arch of another chip", _set("mpy_arch", "rv32imc"), "mpy_arch", "xtensawin"),
    ("image of another chip", _set("micropython.variant", "ESP32_GENERIC_C3"), "micropython.variant", "not an image"),
    ("MCP2515 without its SPI bus", lambda b: b.pop("spi"), "spi", "required field missing"),
    ("missing wiring field", lambda b: b["apps"]["mount"]["motor"].pop("limit"),
     "apps.mount.motor.limit", "required field missing"),
    ("offset not hex", _set("micropython.offset", "4096"), "micropython.offset", "does not match"),
    ("note on no field", lambda b: b["pin_notes"].update({"apps.mount.servoo": "x"}),
     "pin_notes.apps.mount.servoo", "names no wired field"),
]


@pytest.mark.parametrize(("what", "edit", "field", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_board_file_names_the_field(tmp_path: Path, what: str, edit: Callable[[dict[str, Any]], None],
                                        field: str, reason: str) -> None:
    b = _devkitc()
    edit(b)
    path = tmp_path / "esp32-devkitc.json"
    path.write_text(json.dumps(b))
    with pytest.raises(B.BoardError) as e:
        B.load_board(path)
    assert field in e.value.fields, str(e.value)
    line = [ln for ln in str(e.value).splitlines() if f": {field}: " in ln]
    assert line and str(path) in line[0] and reason in line[0], str(e.value)


def test_exposed_pins_are_enforced(tmp_path: Path) -> None:
    b = json.loads((B.BOARDS_DIR / "m5stack-atom-lite-can.json").read_text())
    b["apps"]["controller"]["buttons"] = [19, 4]  # GPIO4 exists but is on no connector
    path = tmp_path / "m5stack-atom-lite-can.json"
    path.write_text(json.dumps(b))
    with pytest.raises(B.BoardError, match=r"apps\.controller\.buttons\[1\]: GPIO4 is not on a connector"):
        B.load_board(path)


def test_id_must_match_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "my-board.json"
    path.write_text(json.dumps(_devkitc()))
    with pytest.raises(B.BoardError) as e:
        B.load_board(path)
    assert e.value.fields == ["id"]
    assert "my-board.json" in str(e.value) and "'esp32-devkitc' does not match" in str(e.value)


def test_apps_are_alternatives_and_may_reuse_pins(tmp_path: Path) -> None:
    b = _devkitc()
    assert b["apps"]["controller"]["buttons"][3] == b["apps"]["mount"]["servo"] == 26
    del b["apps"]["mount"]  # a board may wire only some apps (and then note only those)
    b["pin_notes"] = {k: v for k, v in b["pin_notes"].items() if not k.startswith("apps.mount.")}
    path = tmp_path / "esp32-devkitc.json"
    path.write_text(json.dumps(b))
    assert "mount" not in B.load_board(path)["apps"]
    b["apps"] = {}
    path.write_text(json.dumps(b))
    with pytest.raises(B.BoardError, match="apps: .* should be non-empty|apps: .*fewer than 1"):
        B.load_board(path)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    b = _devkitc()
    b["apps"]["controller"]["haptic"] = 34
    b["apps"]["mount"]["servo"] = 16
    b["mpy_arch"] = "rv32imc"
    path = tmp_path / "esp32-devkitc.json"
    path.write_text(json.dumps(b))
    with pytest.raises(B.BoardError) as e:
        B.load_board(path)
    assert {"apps.controller.haptic", "apps.mount.servo", "mpy_arch"} <= set(e.value.fields)
    assert len(str(e.value).splitlines()) == len(e.value.problems)


def test_unknown_board_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(B.BoardError) as e:
        B.load_board("esp32-devkit")
    msg = str(e.value)
    assert "unknown board 'esp32-devkit'" in msg and all(n in msg for n in NAMES)
    with pytest.raises(B.BoardError, match="unknown board 'schema'"):
        B.load_board("schema")
    with pytest.raises(B.BoardError, match="no such board file"):
        B.load_board(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(B.BoardError, match="broken.json: not valid JSON"):
        B.load_board(tmp_path / "broken.json")


def test_chip_facts_come_from_the_simulation() -> None:
    from cabinlink_tools.sim.world import CHIPS

    for chip, facts in CHIPS.items():
        p = B.chip_pins(chip)
        assert (p.gpios, p.input_only, p.adc) == (facts.gpios, facts.input_only, facts.adc)
    s2 = B.chip_pins("esp32s2")  # not simulated: ESP-IDF's facts
    assert 46 in s2.input_only and 22 not in s2.gpios and 45 in s2.gpios


# --- docs -----------------------------------------------------------------------------
def test_docs_page_is_the_rendering_of_the_board_files() -> None:
    page = (ROOT / "docs" / "boards.md").read_text()
    assert B.summary([B.load_board(n) for n in NAMES]) in page
    for name in NAMES:
        section = B.markdown(B.load_board(name))
        assert section in page, f"docs/boards.md is out of date for {name}: regenerate with " \
                                f"python -m cabinlink_tools.boards"
    assert "docs/boards.md" in (ROOT / "boards" / "README.md").read_text()
    for acc in sorted((ROOT / "docs" / "accessories").glob("*.md")):
        assert "../boards.md" in acc.read_text(), acc


def test_markdown_marks_what_needs_a_can_build() -> None:
    c3 = B.markdown(B.load_board("esp32-c3-devkitm-1"))
    assert "needs a MicroPython build with `machine.CAN`" in c3 and "`ESP32_GENERIC_C3` at `0x0`" in c3
    dk = B.markdown(B.load_board("esp32-devkitc"))
    assert "works on the stock image" in dk and "`ESP32_GENERIC` at `0x1000`" in dk
    assert "| status LED (high = on) | 2 | output |" in dk
    assert "no internal pull-up on GPIO35: fit a 10k pull-up" in dk  # the file's own note
    b = B.load_board("esp32-devkitc")
    del b["pin_notes"]
    assert "| clamp open-limit switch (to GND) | 35 | input | no internal pull-up: fit one (10k to 3V3) |" in B.markdown(b)


def test_copy_is_not_mutated_by_checks() -> None:
    b = B.load_board("lilygo-t-2can")
    before = copy.deepcopy(b)
    assert B.check_board(b, "lilygo-t-2can") == []
    B.markdown(b)
    assert b == before
