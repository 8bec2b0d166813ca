"""`cabinlink config`: the schema agrees with the firmware's own validation (run under the
MicroPython unix port and CPython), messages name the field, and the file is built from the
chip's unique id, written to a virtual board, read back, and refused when invalid."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtimes import micropython_binary

from cabinlink_tools import cli, deploy, devconfig
from cabinlink_tools.device import DeviceError, load_board
from cabinlink_tools.sim.virtual_board import RESET_EXIT_CODE, VirtualBoard

ROOT = Path(__file__).resolve().parent.parent
BOARD = "esp32-devkitc"
UID = bytes.fromhex("240ac4123456")

VALID: dict[str, Any] = {
    "version": 1, "app": "ambient", "board": BOARD,
    "identity": {"vendor": "Acme", "product": "AQ-1", "serial": "0042", "hardware": "B"},
    "links": {"can": {"enabled": True, "bitrate": 500000},
              "ble": {"enabled": True, "name": "AQ-1 0042", "bond": False}},
    "keys": {}, "calibration": {}, "app_config": {},
}


def variant(path: str, value: Any, base: dict[str, Any] = VALID) -> Any:
    """VALID with the field at dotted ``path`` set to ``value`` (``DELETE`` removes it)."""
    cfg = copy.deepcopy(base)
    node = cfg
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return cfg


DELETE = object()
BLE_ONLY = variant("links.can", {"enabled": False, "bitrate": 7})

# (label, config, the field a rejection must name; None = valid)
EXAMPLES: list[tuple[str, Any, str | None]] = [
    ("valid", VALID, None),
    ("ble only, a disabled CAN's bitrate is not checked", BLE_ONLY, None),
    ("can only", variant("links.ble", {"enabled": False}), None),
    ("empty can object, ble on", variant("links.can", {}), None),
    ("unknown keys are ignored", variant("future", {"x": 1}, variant("links.can.fd", True)), None),
    ("optional objects may be absent",
     {k: v for k, v in VALID.items() if k not in ("keys", "calibration", "app_config")}, None),
    ("version 1.0 is 1 in JSON", variant("version", 1.0), None),
    ("preferred address", variant("links.can.preferred_address", 0x80), None),
    ("bond true", variant("links.ble.bond", True), None),
    ("UTF-8 within 32 bytes", variant("identity.vendor", "é" * 16), None),
    ("BLE name of 20 bytes", variant("links.ble.name", "x" * 20), None),
    ("not an object", [VALID], "(top level)"),
    ("version 2", variant("version", 2), "version"),
    ("version true", variant("version", True), "version"),
    ("version as text", variant("version", "1"), "version"),
    ("no version", variant("version", DELETE), "version"),
    ("unknown app", variant("app", "toaster"), "app"),
    ("no app", variant("app", DELETE), "app"),
    ("board not text", variant("board", 5), "board"),
    ("another board", variant("board", "esp32-s3-devkitc-1"), "board"),
    ("no identity", variant("identity", DELETE), "identity"),
    ("identity not an object", variant("identity", "Acme"), "identity"),
    ("empty vendor", variant("identity.vendor", ""), "identity.vendor"),
    ("no serial", variant("identity.serial", DELETE), "identity.serial"),
    ("serial too long", variant("identity.serial", "9" * 33), "identity.serial"),
    ("product 17 chars but 34 bytes", variant("identity.product", "é" * 17), "identity.product"),
    ("hardware a number", variant("identity.hardware", 2), "identity.hardware"),
    ("no links", variant("links", DELETE), "links"),
    ("links a list", variant("links", []), "links"),
    ("no link enabled", variant("links.ble.enabled", False, variant("links.can.enabled", False)),
     "links"),
    ("can null", variant("links.can", None, BLE_ONLY), "links.can"),
    ("can enabled as text", variant("links.can.enabled", "yes"), "links.can.enabled"),
    ("bitrate 123", variant("links.can.bitrate", 123), "links.can.bitrate"),
    ("bitrate true", variant("links.can.bitrate", True), "links.can.bitrate"),
    ("address 0x7F", variant("links.can.preferred_address", 0x7F), "links.can.preferred_address"),
    ("address 0xF8", variant("links.can.preferred_address", 0xF8), "links.can.preferred_address"),
    ("address 128.0", variant("links.can.preferred_address", 128.0), "links.can.preferred_address"),
    ("address true", variant("links.can.preferred_address", True), "links.can.preferred_address"),
    ("ble on without a name", variant("links.ble.name", DELETE), "links.ble.name"),
    ("ble name 21 bytes", variant("links.ble.name", "x" * 21), "links.ble.name"),
    ("ble name 7 chars, 21 bytes", variant("links.ble.name", "€" * 7), "links.ble.name"),
    ("bond as text", variant("links.ble.bond", "no"), "links.ble.bond"),
    ("ble a list", variant("links.ble", [1], variant("links.can.enabled", True)), "links.ble"),
    ("keys a list", variant("keys", []), "keys"),
    ("calibration null", variant("calibration", None), "calibration"),
    ("app_config a number", variant("app_config", 5), "app_config"),
]

# Runs the firmware's runtime/config.validate on each line of a JSON-lines file.
FIRMWARE_VALIDATE = """\
import json, sys
from runtime.config import validate
with open(sys.argv[-1]) as f:
    for line in f:
        print(json.dumps(validate(json.loads(line), %r)))
""" % BOARD


def fields(messages: list[str]) -> set[str]:
    return {m.split(":", 1)[0] for m in messages}


@pytest.fixture(scope="module")
def firmware_verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[list[str]]]:
    """The firmware validator's messages per example, under both runtimes."""
    tmp = tmp_path_factory.mktemp("fwvalidate")
    script, data = tmp / "fwvalidate.py", tmp / "configs.jsonl"
    script.write_text(FIRMWARE_VALIDATE)
    data.write_text("".join(json.dumps(cfg) + "\n" for _, cfg, _ in EXAMPLES))
    fw = str(ROOT / "firmware")
    out = {}
    for name, cmd, env in (
            ("micropython", [micropython_binary(), str(script), str(data)],
             dict(os.environ, MICROPYPATH=f"{fw}:.frozen")),
            ("cpython", [sys.executable, str(script), str(data)],
             dict(os.environ, PYTHONPATH=fw))):
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=tmp)
        assert p.returncode == 0, p.stderr
        out[name] = [json.loads(line) for line in p.stdout.splitlines()]
        assert len(out[name]) == len(EXAMPLES)
    return out


@pytest.mark.micropython
def test_schema_and_firmware_accept_and_reject_the_same_configs(
        firmware_verdicts: dict[str, list[list[str]]]) -> None:
    disagree = []
    for i, (label, cfg, field) in enumerate(EXAMPLES):
        host = devconfig.validate(cfg, BOARD)
        for runtime, verdicts in firmware_verdicts.items():
            fw = verdicts[i]
            if bool(host) != bool(fw) or bool(host) != (field is not None):
                disagree.append(f"{label} [{runtime}]: host {host}, firmware {fw}")
            elif field is not None:
                # both name the field; the host names nothing the firmware does not
                if field not in fields(host) or field not in fields(fw) \
                        or not fields(host) <= fields(fw):
                    disagree.append(f"{label} [{runtime}]: host {host}, firmware {fw}")
    assert not disagree, "\n".join(disagree)


def test_messages_name_the_field_and_the_rule() -> None:
    assert devconfig.validate(variant("links.can.bitrate", 250)) == [
        "links.can.bitrate: must be one of 125000, 250000, 500000, 1000000"]
    assert devconfig.validate(variant("identity.serial", DELETE)) == [
        "identity.serial: missing; must be a string of 1..32 bytes"]
    assert devconfig.validate(variant("links.ble.enabled", False, variant("links.can.enabled", False))) == [
        "links: enable at least one of can, ble"]
    assert devconfig.validate(variant("links.can.preferred_address", 300)) == [
        "links.can.preferred_address: must be 128..247 (0x80..0xF7)"]
    many = devconfig.validate(variant("app", "x", variant("version", 3)))
    assert many == ["app: must be one of ambient, mount, controller", "version: must be 1"]


def test_build_config_defaults_options_from_file_and_set(tmp_path: Path) -> None:
    board = load_board(BOARD)
    cfg = devconfig.build_config(board, "mount", "240ac4123456")
    assert devconfig.validate(cfg, BOARD) == [] and devconfig.unit_problems(cfg, board) == []
    assert cfg["identity"]["serial"] == "240ac4123456" and cfg["board"] == BOARD
    assert cfg["links"]["can"] == {"enabled": True, "bitrate": board["can"]["bitrate"]}
    assert cfg["links"]["ble"]["enabled"] is False
    # a board without CAN: BLE by default
    no_can = {k: v for k, v in board.items() if k != "can"}
    cfg = devconfig.build_config(no_can, "ambient", "240ac4123456")
    assert cfg["links"]["can"]["enabled"] is False and cfg["links"]["ble"]["enabled"] is True
    assert devconfig.validate(cfg, BOARD) == []
    # a base file, then options, then --set (JSON values, dotted paths)
    base = {"identity": {"vendor": "Acme", "serial": "A-1"}, "app_config": {"co2_alarm": 1200}}
    cfg = devconfig.build_config(board, "ambient", None, base=base, name="Acme AQ", product="AQ-1",
                                 can=False, sets=["links.ble.bond=true", "calibration.t_offset=-12"])
    assert cfg["identity"] == {"vendor": "Acme", "product": "AQ-1", "serial": "A-1",
                               "hardware": BOARD}
    assert cfg["links"]["ble"] == {"enabled": True, "name": "Acme AQ", "bond": True}
    assert cfg["links"]["can"]["enabled"] is False
    assert cfg["app_config"] == {"co2_alarm": 1200} and cfg["calibration"] == {"t_offset": -12}
    with pytest.raises(DeviceError, match="the value must be JSON"):
        devconfig.parse_set("identity.vendor=Acme")
    with pytest.raises(DeviceError, match="KEY=JSON"):
        devconfig.parse_set("bitrate")
    # a board without wiring for the app
    problems = devconfig.unit_problems(variant("app", "mount"), dict(board, apps={"ambient": {}}))
    assert problems and problems[0].startswith("app: board 'esp32-devkitc' has no wiring for 'mount'")


FAKE_MACHINE = f"""\
import sys
def unique_id():
    return {UID!r}
def reset():
    sys.exit({RESET_EXIT_CODE})
"""


@pytest.fixture
def board(tmp_path: Path) -> Iterator[VirtualBoard]:
    """A virtual board whose machine module has the chip's unique id, with the firmware
    (ambient only) deployed."""
    plat = tmp_path / "platform"
    plat.mkdir()
    (plat / "machine.py").write_text(FAKE_MACHINE)
    with VirtualBoard(micropython=micropython_binary(), extra_path=[plat]) as b:
        deploy.deploy(BOARD, b.port, app="ambient", reset=False)
        yield b


@pytest.mark.micropython
def test_config_written_read_back_shown_and_refused(board: VirtualBoard, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    r = devconfig.configure(BOARD, board.port, "ambient", vendor="Acme", reset=False)
    on_board = (board.root / "config.json").read_text()
    assert r.written and on_board == r.text and json.loads(on_board) == r.config
    assert r.config["identity"]["serial"] == UID.hex() and r.serial_from_chip
    assert devconfig.validate(r.config, BOARD) == []
    assert not (board.root / "config.json.tmp").exists()

    assert cli.main(["config", "--port", board.port, "--show"]) == 0
    shown = capsys.readouterr().out
    assert json.loads(shown) == r.config

    # invalid: refused with the field named, the file on the board untouched
    code = cli.main(["config", "--board", BOARD, "--port", board.port, "--app", "ambient",
                     "--set", "links.can.bitrate=123", "--set", "identity.vendor=\"\""])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "links.can.bitrate: must be one of 125000, 250000, 500000, 1000000" in err
    assert "identity.vendor: must be a string of 1..32 bytes" in err
    assert (board.root / "config.json").read_text() == on_board
    # an app the board does not hold, a board it was not deployed for
    with pytest.raises(DeviceError, match=r"no apps/controller: run `cabinlink deploy"):
        devconfig.configure(BOARD, board.port, "controller", reset=False)
    with pytest.raises(DeviceError, match="deployed for 'esp32-devkitc'"):
        devconfig.configure("esp32-s3-devkitc-1", board.port, "ambient", reset=False)
    assert (board.root / "config.json").read_text() == on_board

    # --from with a serial, a dry run: printed, not written
    src = tmp_path / "unit.json"
    src.write_text(json.dumps({"app": "ambient", "identity": {"serial": "SN-7"},
                               "links": {"ble": {"enabled": True}}}))
    assert cli.main(["config", "--board", BOARD, "--port", board.port, "--from", str(src),
                     "--name", "Cabin AQ", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert '"serial": "SN-7"' in out and '"name": "Cabin AQ"' in out and "dry run" in out
    assert (board.root / "config.json").read_text() == on_board
    # written for real, with a reset: the board boots (main.py runs) afterwards
    mark = len(board.log)
    assert cli.main(["config", "--board", BOARD, "--port", board.port, "--from", str(src)]) == 0
    assert "wrote /config.json" in capsys.readouterr().out
    assert json.loads((board.root / "config.json").read_text())["identity"]["serial"] == "SN-7"
    board.wait_for(b"runtime/boot.py", start=mark)  # the firmware started (and met the fake machine)


@pytest.mark.micropython
def test_config_needs_a_deployed_board() -> None:
    with VirtualBoard(micropython=micropython_binary()) as b:
        with pytest.raises(DeviceError, match="no complete CabinLink deploy"):
            devconfig.configure(BOARD, b.port, "ambient", serial="X1")
        assert not (b.root / "config.json").exists()
    # without a board: a dry run needs a serial
    with pytest.raises(DeviceError, match="--port is needed"):
        devconfig.configure(BOARD, None, "ambient", dry_run=True)
    r = devconfig.configure(BOARD, None, "ambient", serial="X1", dry_run=True)
    assert not r.written and json.loads(r.text)["identity"]["serial"] == "X1"
