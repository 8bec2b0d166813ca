"""The CabinLink capability registry: load, validate, generate.

``spec/registry.json`` is the single source. This module checks it against
``spec/registry.schema.json`` plus the rules a schema cannot express, and renders
two derived files from it:

* ``firmware/lib/cabinlink/registry.py``: constants and the packed specs (one ``bytes``
  object) the accessory node uses to validate writes and invocations (MicroPython subset);
* ``docs/registry.md``: the human-readable catalogue.

Command line (from the repository root, with ``host`` and ``firmware/lib`` on the path)::

    python -m cabinlink_tools.registry_gen --write     # regenerate both files
    python -m cabinlink_tools.registry_gen --check     # exit 1 if either is stale
    python -m cabinlink_tools.registry_gen --markdown  # print docs/registry.md
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jsonschema

Registry = dict[str, Any]
Obj = Mapping[str, Any]

ROOT: Final = Path(__file__).resolve().parents[2]
REGISTRY_PATH: Final = ROOT / "spec" / "registry.json"
SCHEMA_PATH: Final = ROOT / "spec" / "registry.schema.json"
FIRMWARE_PATH: Final = ROOT / "firmware" / "lib" / "cabinlink" / "registry.py"
MARKDOWN_PATH: Final = ROOT / "docs" / "registry.md"

# Wire codes shared with the firmware (the generated module repeats them).
TYPE_CODES: Final[dict[str, int]] = {
    "bool": 0, "uint": 1, "int": 2, "str": 3, "bytes": 4, "enum": 5, "bitmap": 6, "list": 7,
}
ACCESS_FLAGS: Final[dict[str, int]] = {"read": 1, "write": 2, "report": 4, "persist": 8}

# Value range of each integer BLE characteristic format.
BLE_INT_FORMATS: Final[dict[str, tuple[int, int]]] = {
    "uint8": (0, 0xFF),
    "uint16": (0, 0xFFFF),
    "uint24": (0, 0xFFFFFF),
    "sint16": (-0x8000, 0x7FFF),
}

# An event [11, slot, event, data] must fit one ISO-TP single frame on classic CAN
# (7 bytes): 4 bytes of header with a one-byte slot leave 3 for the data.
EVENT_DATA_BUDGET: Final = 3
SINGLE_FRAME: Final = 7


@dataclass(frozen=True)
class Problem:
    """One reason the registry is invalid: where (a JSONPath) and why.

    ``names`` repeats the location by name (``temperature.value``) when it is known.
    """

    path: str
    reason: str
    names: str = ""

    def __str__(self) -> str:
        where = f" ({self.names})" if self.names else ""
        return f"{self.path}{where}: {self.reason}"


class RegistryError(ValueError):
    """The registry failed validation; ``problems`` lists every reason found."""

    def __init__(self, problems: Sequence[Problem], source: str = "registry") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{source} is invalid ({len(self.problems)} problem(s)):\n{lines}")


# --------------------------------------------------------------------------- loading


def load_schema() -> dict[str, Any]:
    with SCHEMA_PATH.open(encoding="utf-8") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """Read and fully validate a registry file (default ``spec/registry.json``)."""
    p = Path(path) if path is not None else REGISTRY_PATH
    try:
        with p.open(encoding="utf-8") as f:
            registry = json.load(f)
    except json.JSONDecodeError as e:
        raise RegistryError([Problem("$", f"not valid JSON: {e}")], str(p)) from e
    if not isinstance(registry, dict):
        raise RegistryError([Problem("$", "the registry must be a JSON object")], str(p))
    validate(registry, source=str(p))
    return registry


def validate(registry: Registry, source: str = "registry") -> None:
    """Raise RegistryError naming every problem: schema first, then semantics."""
    problems = schema_problems(registry)
    if not problems:  # semantic checks assume the structure is right
        problems = semantic_problems(registry)
    if problems:
        raise RegistryError([_named(registry, p) for p in problems], source)


_MEMBER_PATH: Final = re.compile(r"^\$\.capabilities\[(\d+)\](?:\.(attributes|commands|events)\[(\d+)\])?")


def _named(registry: Registry, p: Problem) -> Problem:
    # Add "capability.member" to a problem inside a capability, as far as names exist.
    m = _MEMBER_PATH.match(p.path)
    if not m:
        return p
    try:
        cap = registry["capabilities"][int(m.group(1))]
        names = str(cap["name"])
        if m.group(2):
            names += "." + str(cap[m.group(2)][int(m.group(3))]["name"])
    except (KeyError, IndexError, TypeError):
        return p
    return Problem(p.path, p.reason, names)


def _lookup(node: Any, path: Iterable[str | int]) -> Any:
    for key in path:
        node = node[key]
    return node


def _schema_problem(registry: Registry, err: jsonschema.ValidationError) -> Problem:
    # The schema forbids keys with propertyNames/not/enum; say which key and why.
    if err.validator == "not" and list(err.schema_path)[-2:] == ["propertyNames", "not"]:
        parent = list(err.absolute_path)
        key = str(err.instance)
        obj = _lookup(registry, parent)
        if isinstance(obj, dict) and "type" in obj:
            why = f"{key!r} is not allowed for type {obj['type']!r}"
        elif isinstance(obj, dict) and obj.get("reserved"):
            why = f"{key!r} is not allowed on a reserved capability"
        elif isinstance(obj, dict) and "format" in obj:
            why = f"{key!r} is not allowed with format {obj['format']!r}"
        else:
            why = f"{key!r} is not allowed here"
        return Problem(f"{err.json_path}.{key}", why)
    return Problem(err.json_path, err.message)


def schema_problems(registry: Registry) -> list[Problem]:
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(registry), key=lambda e: [str(p) for p in e.absolute_path])
    # When part of an allOf fails, JSON Schema forgets which properties it evaluated,
    # so unevaluatedProperties then also complains about valid keys: drop that echo.
    real = [e for e in errors if e.validator != "unevaluatedProperties"]
    found = []
    for err in errors:
        if err.validator == "unevaluatedProperties" and any(
                list(err.absolute_path) == list(o.absolute_path)[: len(err.absolute_path)] for o in real):
            continue
        found.append(_schema_problem(registry, err))
    return found


# ------------------------------------------------------------------ semantic checks


def _hex(v: int) -> str:
    return f"0x{v:04X}"


def _path(*parts: str | int) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _floats(node: Any, path: str) -> Iterator[Problem]:
    # JSON Schema's "integer" accepts 1.0; CabinLink has no floats anywhere.
    if isinstance(node, float):
        yield Problem(path, f"float {node!r} is not allowed: use a scaled integer")
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _floats(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _floats(v, f"{path}[{i}]")


def _duplicates(items: Sequence[Obj], key: str, base: str, what: str) -> Iterator[Problem]:
    seen: dict[Any, int] = {}
    for i, item in enumerate(items):
        v = item[key]
        if v in seen:
            yield Problem(f"{base}[{i}].{key}", f"duplicate {what} {key} {v!r} (also at index {seen[v]})")
        else:
            seen[v] = i


def value_bounds(spec: Obj, enum_values: Sequence[Obj] | None = None) -> tuple[int | None, int | None]:
    """(min, max) as the firmware tables carry them: None where not bounded."""
    t = spec["type"]
    if t in ("int", "uint"):
        return spec["min"], spec["max"]
    if t in ("str", "bytes"):
        return None, spec["max_length"]
    if t == "list":
        return None, spec["max_items"]
    if t == "bitmap":
        return 0, (1 << spec["bits"]) - 1
    if t == "enum":
        values = enum_values if enum_values is not None else spec["values"]
        return 0, max(v["value"] for v in values)
    return None, None  # bool


def _cbor_uint_size(v: int) -> int:
    if v < 24:
        return 1
    if v <= 0xFF:
        return 2
    if v <= 0xFFFF:
        return 3
    if v <= 0xFFFFFFFF:
        return 5
    return 9


def cbor_max_size(spec: Obj, enum_values: Sequence[Obj] | None = None) -> int:
    """Largest deterministic CBOR encoding of any value the spec allows."""
    t = spec["type"]
    lo, hi = value_bounds(spec, enum_values)
    if t == "bool":
        return 1
    if t in ("str", "bytes"):
        assert hi is not None
        return _cbor_uint_size(hi) + hi
    if t == "list":
        assert hi is not None
        return _cbor_uint_size(hi) + hi * cbor_max_size(spec["items"])
    assert lo is not None and hi is not None
    size = _cbor_uint_size(max(hi, 0))
    if lo < 0:
        size = max(size, _cbor_uint_size(-1 - lo))
    return size


def _check_value_spec(spec: Obj, path: str, units: Mapping[str, str]) -> Iterator[Problem]:
    if "unit" in spec and spec["unit"] not in units:
        yield Problem(f"{path}.unit", f"unknown unit {spec['unit']!r}: add it to $.units")
    if spec["type"] in ("int", "uint") and spec["min"] > spec["max"]:
        yield Problem(f"{path}.min", f"min {spec['min']} is greater than max {spec['max']}")
    if spec["type"] == "list":
        yield from _check_value_spec(spec["items"], f"{path}.items", units)


def _check_enum(values: Sequence[Obj], path: str) -> Iterator[Problem]:
    yield from _duplicates(values, "value", path, "enum")
    yield from _duplicates(values, "name", path, "enum")
    got = sorted(v["value"] for v in values)
    if got != list(range(len(values))) and len(set(got)) == len(got):
        # Contiguous from 0 so the firmware's (0, max) range check is exact.
        yield Problem(path, f"enum values must be 0..{len(values) - 1} without gaps, got {got}")


def _valid_default(attr: Obj, default: Any) -> str | None:
    # None if the default is acceptable, else why not.
    t = attr["type"]
    if t == "bool":
        return None if isinstance(default, bool) else "default must be true or false"
    if t == "enum":
        names = [v["name"] for v in attr["values"]]
        return None if default in names else f"default must be one of {names}"
    if t in ("str", "bytes"):
        if not isinstance(default, str):
            return "default must be a string"
        try:
            n = len(default.encode()) if t == "str" else len(bytes.fromhex(default))
        except ValueError:
            return "a bytes default must be a hex string"
        return None if n <= attr["max_length"] else "default is longer than max_length"
    if not isinstance(default, int) or isinstance(default, bool):
        return "default must be an integer"
    lo, hi = value_bounds(attr)
    if lo is not None and default < lo or hi is not None and default > hi:
        return f"default {default} is outside {lo}..{hi}"
    if t == "bitmap" and hi is not None and default & ~hi:
        return f"default {default} sets bits outside the mask {hi:#x}"
    return None


def _check_ble(attr: Obj, ble: Obj, path: str, services: set[str]) -> Iterator[Problem]:
    if ble["service"] not in services:
        yield Problem(f"{path}.service", f"service {ble['service']} is not listed in $.ble_services")
    fmt = ble["format"]
    if fmt == "utf8s":
        if attr["type"] != "str":
            yield Problem(f"{path}.format", "utf8s maps only a str attribute")
        return
    if attr["type"] not in ("int", "uint"):
        yield Problem(f"{path}.format", f"{fmt} maps only an int or uint attribute")
        return
    if fmt not in BLE_INT_FORMATS:
        return  # medfloat16: no integer conversion is described
    lo, hi = BLE_INT_FORMATS[fmt]
    for key in ("raw_min", "raw_max", "unknown"):
        if key in ble and not lo <= ble[key] <= hi:
            yield Problem(f"{path}.{key}", f"{ble[key]} does not fit {fmt} ({lo}..{hi})")
    if "raw_min" in ble and "raw_max" in ble:
        if ble["raw_min"] > ble["raw_max"]:
            yield Problem(f"{path}.raw_min", "raw_min is greater than raw_max")
        elif "unknown" in ble and ble["raw_min"] <= ble["unknown"] <= ble["raw_max"]:
            yield Problem(f"{path}.unknown", "the 'unknown' value lies inside raw_min..raw_max")


def _check_fields(
    fields: Sequence[Obj], path: str, units: Mapping[str, str], enums: Mapping[str, Obj],
) -> Iterator[Problem]:
    yield from _duplicates(fields, "name", path, "field")
    seen_optional = False
    for i, f in enumerate(fields):
        fp = f"{path}[{i}]"
        yield from _check_value_spec(f, fp, units)
        if "values_from" in f and f["values_from"] not in enums:
            yield Problem(f"{fp}.values_from",
                          f"{f['values_from']!r} is not an enum attribute of this capability")
        if f.get("optional"):
            seen_optional = True
        elif seen_optional:
            yield Problem(f"{fp}.optional", "a required field cannot follow an optional one")


def _check_capability(cap: Obj, cp: str, units: Mapping[str, str], services: set[str]) -> Iterator[Problem]:
    attrs: list[Obj] = cap.get("attributes", [])
    for kind in ("attributes", "commands", "events"):
        members = cap.get(kind, [])
        yield from _duplicates(members, "id", f"{cp}.{kind}", kind[:-1])
        yield from _duplicates(members, "name", f"{cp}.{kind}", kind[:-1])
    enums = {a["name"]: a for a in attrs if a["type"] == "enum"}
    for i, a in enumerate(attrs):
        ap = f"{cp}.attributes[{i}]"
        yield from _check_value_spec(a, ap, units)
        if a["type"] == "enum":
            yield from _check_enum(a["values"], f"{ap}.values")
        readable = a["access"] in ("read", "read_write")
        writable = a["access"] in ("write", "read_write")
        if a.get("reportable") and not readable:
            yield Problem(f"{ap}.reportable", "a reportable attribute must be readable")
        if a.get("persistent") and not writable:
            yield Problem(f"{ap}.persistent", "persistent applies to writable attributes only")
        if "default" in a:
            if not writable:
                yield Problem(f"{ap}.default", "only writable attributes have a default")
            else:
                why = _valid_default(a, a["default"])
                if why:
                    yield Problem(f"{ap}.default", why)
        if "ble" in a:
            yield from _check_ble(a, a["ble"], f"{ap}.ble", services)
    for i, c in enumerate(cap.get("commands", [])):
        for part in ("args", "result"):
            if part in c:
                yield from _check_fields(c[part], f"{cp}.commands[{i}].{part}", units, enums)
    for i, e in enumerate(cap.get("events", [])):
        data = e.get("data", [])
        dp = f"{cp}.events[{i}].data"
        yield from _check_fields(data, dp, units, enums)
        if any("values_from" in f and f["values_from"] not in enums for f in data):
            continue
        if data:
            size = _fields_size(data, enums)
            if size > EVENT_DATA_BUDGET:
                yield Problem(dp, f"event data can take {size} bytes; at most {EVENT_DATA_BUDGET} "
                                  "fit one CAN single frame")


def _fields_size(fields: Sequence[Obj], enums: Mapping[str, Obj]) -> int:
    sizes = [cbor_max_size(f, enums[f["values_from"]]["values"] if "values_from" in f else None)
             for f in fields]
    # One field travels bare, several as an array.
    return sizes[0] if len(sizes) == 1 else _cbor_uint_size(len(sizes)) + sum(sizes)


def semantic_problems(registry: Registry) -> list[Problem]:
    """Rules beyond the schema. Assumes the registry already passed the schema."""
    out: list[Problem] = list(_floats(registry, "$"))
    units: Mapping[str, str] = registry["units"]

    ranges: list[Obj] = registry["id_ranges"]
    extend = out.extend
    extend(_duplicates(ranges, "name", "$.id_ranges", "range"))
    for i, r in enumerate(ranges):
        if r["first"] > r["last"]:
            out.append(Problem(_path("id_ranges", i, "first"), f"first {_hex(r['first'])} > last {_hex(r['last'])}"))
    ordered = sorted(range(len(ranges)), key=lambda i: ranges[i]["first"])
    for a, b in zip(ordered, ordered[1:]):
        if ranges[b]["first"] <= ranges[a]["last"]:
            out.append(Problem(_path("id_ranges", b, "first"),
                               f"range {ranges[b]['name']!r} overlaps {ranges[a]['name']!r}"))

    services = {s["uuid"] for s in registry["ble_services"]}
    extend(_duplicates(registry["ble_services"], "uuid", "$.ble_services", "service"))

    caps: list[Obj] = registry["capabilities"]
    extend(_duplicates(caps, "id", "$.capabilities", "capability"))
    extend(_duplicates(caps, "name", "$.capabilities", "capability"))
    for i, cap in enumerate(caps):
        cp = _path("capabilities", i)
        home = next((r for r in ranges if r["first"] <= cap["id"] <= r["last"]), None)
        if home is None:
            out.append(Problem(f"{cp}.id", f"id {_hex(cap['id'])} is in no range of $.id_ranges"))
        elif not home["standard"]:
            out.append(Problem(f"{cp}.id", f"id {_hex(cap['id'])} is in the {home['name']!r} range, "
                                           "which this registry never assigns"))
        elif cap["group"] != home["name"]:
            out.append(Problem(f"{cp}.group", f"group {cap['group']!r} does not match the range of "
                                              f"id {_hex(cap['id'])} ({home['name']!r})"))
        extend(_check_capability(cap, cp, units, services))

    classes: list[Obj] = registry["device_classes"]
    extend(_duplicates(classes, "id", "$.device_classes", "device class"))
    extend(_duplicates(classes, "name", "$.device_classes", "device class"))
    cap_names = {c["name"] for c in caps}
    for i, dc in enumerate(classes):
        for j, name in enumerate(dc["capabilities"]):
            if name not in cap_names:
                out.append(Problem(_path("device_classes", i, "capabilities", j), f"unknown capability {name!r}"))

    if not out:  # names are only meaningful once the rest holds
        seen: dict[str, str] = {}
        for name, where in _constant_names(registry):
            if name in seen:
                out.append(Problem(where, f"generated constant {name} collides with the one from {seen[name]}"))
            else:
                seen[name] = where
    return out


# ----------------------------------------------------------------- constant names

_FIXED_CONSTANTS: Final = (
    [f"T_{t.upper()}" for t in TYPE_CODES] + [f"A_{a.upper()}" for a in ACCESS_FLAGS]
    + ["VERSION", "const"]
)


def _constant_names(registry: Registry) -> Iterator[tuple[str, str]]:
    for name in _FIXED_CONSTANTS:
        yield name, "the fixed header"
    for i, dc in enumerate(registry["device_classes"]):
        yield f"CLASS_{dc['name'].upper()}", _path("device_classes", i)
    for i, cap in enumerate(registry["capabilities"]):
        cp = _path("capabilities", i)
        cn = cap["name"].upper()
        yield f"CAP_{cn}", cp
        for j, a in enumerate(cap.get("attributes", [])):
            yield f"ATTR_{cn}_{a['name'].upper()}", f"{cp}.attributes[{j}]"
            for k, v in enumerate(a.get("values", [])):
                yield f"{cn}_{a['name'].upper()}_{v['name'].upper()}", f"{cp}.attributes[{j}].values[{k}]"
        for j, c in enumerate(cap.get("commands", [])):
            yield f"CMD_{cn}_{c['name'].upper()}", f"{cp}.commands[{j}]"
        for j, e in enumerate(cap.get("events", [])):
            yield f"EV_{cn}_{e['name'].upper()}", f"{cp}.events[{j}]"


# ----------------------------------------------------------------- firmware module

_FIRMWARE_HEADER: Final = '''\
# GENERATED from spec/registry.json by host/cabinlink_tools/registry_gen.py: do not edit.
# Regenerate with `make registry`, i.e.
#   PYTHONPATH=host:firmware/lib python -m cabinlink_tools.registry_gen --write
# CabinLink capability registry: constants, and the specs the node checks WRITE
# and INVOKE against, packed in one bytes object to save RAM: a spec becomes a
# tuple only when asked for (find, attr_spec, arg_specs).
try:
    from micropython import const
except ImportError:  # CPython (host tools)
    def const(x):
        return x

'''

_SPECS_COMMENT: Final = '''\
# _SPECS: per capability, ids ascending:
#   cap id (2 bytes, big-endian), attribute count, command bytes, event count,
#   per attribute: attr, type, access, min, max                     (5 bytes)
#   per command:   cmd, arg count, per argument: type | 0x80 if optional, min, max
#   per event:     event
# min/max are indices into _VALS (0 = None: unbounded); str/bytes: max = length
# in bytes; list: max = items; enum: 0..largest value; bitmap: 0..mask of all
# defined bits.
'''

_ACCESSORS: Final = '''

def find(cap):
    # Offset of cap's records in _SPECS, the `at` of attr_spec and arg_specs;
    # None if cap is not in the registry.
    b = _SPECS
    i = 0
    while i < len(b):
        if b[i] << 8 | b[i + 1] == cap:
            return i
        i += 5 + 5 * b[i + 2] + b[i + 3] + b[i + 4]
    return None


def attr_spec(at, attr):
    # (type, access, min, max) of an attribute; None if the capability has none such.
    b = _SPECS
    for k in range(at + 5, at + 5 + 5 * b[at + 2], 5):
        if b[k] == attr:
            v = _VALS
            return b[k + 1], b[k + 2], v[b[k + 3]], v[b[k + 4]]
    return None


def arg_specs(at, cmd):
    # ((type, min, max, optional), ...) of a command's arguments in order; None if
    # the capability has no such command.
    b = _SPECS
    k = at + 5 + 5 * b[at + 2]
    end = k + b[at + 3]
    while k < end:
        n = k + 2 + 3 * b[k + 1]
        if b[k] == cmd:
            v = _VALS
            return tuple((b[j] & 0x7F, v[b[j + 1]], v[b[j + 2]], b[j] > 0x7F) for j in range(k + 2, n, 3))
        k = n
    return None


def attr_specs(cap):
    # {attr: (type, access, min, max)} of a capability; None if not in the registry.
    at = find(cap)
    if at is None:
        return None
    b = _SPECS
    return {b[k]: attr_spec(at, b[k]) for k in range(at + 5, at + 5 + 5 * b[at + 2], 5)}


def cmd_specs(cap):
    # {cmd: ((type, min, max, optional), ...)} of a capability; None if not in the registry.
    at = find(cap)
    if at is None:
        return None
    b = _SPECS
    d = {}
    k = at + 5 + 5 * b[at + 2]
    end = k + b[at + 3]
    while k < end:
        d[b[k]] = arg_specs(at, b[k])
        k += 2 + 3 * b[k + 1]
    return d


def events(cap):
    # (event, ...) of a capability; None if not in the registry.
    at = find(cap)
    if at is None:
        return None
    k = at + 5 + 5 * _SPECS[at + 2] + _SPECS[at + 3]
    return tuple(_SPECS[k:k + _SPECS[at + 4]])
'''

_OPTIONAL: Final = 0x80


def _access_flags(a: Obj) -> int:
    flags = 0
    if a["access"] in ("read", "read_write"):
        flags |= ACCESS_FLAGS["read"]
    if a["access"] in ("write", "read_write"):
        flags |= ACCESS_FLAGS["write"]
    if a.get("reportable"):
        flags |= ACCESS_FLAGS["report"]
    if a.get("persistent"):
        flags |= ACCESS_FLAGS["persist"]
    return flags


def _enum_source(cap: Obj, field: Obj) -> Sequence[Obj] | None:
    if "values_from" not in field:
        return None
    attr = next(a for a in cap["attributes"] if a["name"] == field["values_from"])
    values: Sequence[Obj] = attr["values"]
    return values


def spec_tables(registry: Registry) -> tuple[list[tuple[Obj, bytes]], list[int | None]]:
    """The packed specs: one record group per capability (ascending id) and the value pool.

    The layout is described in the generated module (``_SPECS_COMMENT``); the pool starts
    with None and then lists every bound in ascending order, so index 0 means unbounded.
    """
    caps = sorted(registry["capabilities"], key=lambda c: c["id"])
    bounds: set[int] = set()
    for cap in caps:
        for a in cap.get("attributes", []):
            bounds.update(b for b in value_bounds(a) if b is not None)
        for c in cap.get("commands", []):
            for f in c.get("args", []):
                bounds.update(b for b in value_bounds(f, _enum_source(cap, f)) if b is not None)
    vals: list[int | None] = [None, *sorted(bounds)]
    if len(vals) > 256:
        raise RegistryError([Problem("$", f"{len(vals)} distinct min/max values; the firmware "
                                          "tables index them with one byte (at most 256)")])
    index = {v: i for i, v in enumerate(vals)}

    groups: list[tuple[Obj, bytes]] = []
    for cap in caps:
        attrs = bytearray()
        for a in cap.get("attributes", []):
            lo, hi = value_bounds(a)
            attrs += bytes((a["id"], TYPE_CODES[a["type"]], _access_flags(a), index[lo], index[hi]))
        cmds = bytearray()
        for c in cap.get("commands", []):
            args = c.get("args", [])
            cmds += bytes((c["id"], len(args)))
            for f in args:
                lo, hi = value_bounds(f, _enum_source(cap, f))
                opt = _OPTIONAL if f.get("optional") else 0
                cmds += bytes((TYPE_CODES[f["type"]] | opt, index[lo], index[hi]))
        evs = bytes(e["id"] for e in cap.get("events", []))
        counts = (len(cap.get("attributes", [])), len(cmds), len(evs))
        if max(counts) > 255:
            raise RegistryError([Problem("$", f"capability {cap['name']!r} has more specs than the "
                                              "firmware tables' one-byte counts allow")])
        header = bytes((cap["id"] >> 8, cap["id"] & 0xFF, *counts))
        groups.append((cap, header + attrs + cmds + evs))
    return groups, vals


def _bytes_literal(data: bytes) -> str:
    return 'b"' + "".join(f"\\x{b:02x}" for b in data) + '"'


def render_firmware(registry: Registry) -> str:
    """The text of firmware/lib/cabinlink/registry.py for this registry."""
    validate(registry)
    caps: list[Obj] = registry["capabilities"]
    out: list[str] = [_FIRMWARE_HEADER, f'VERSION = "{registry["version"]}"\n', "\n# Value types\n"]
    out += [f"T_{t.upper()} = const({code})\n" for t, code in TYPE_CODES.items()]
    out.append("\n# Attribute access flags (bit set)\n")
    out += [f"A_{a.upper()} = const({bit})\n" for a, bit in ACCESS_FLAGS.items()]
    out.append("\n# Device classes (HELLO result, DESCRIBE)\n")
    out += [f"CLASS_{dc['name'].upper()} = const({dc['id']})\n" for dc in registry["device_classes"]]
    out.append("\n# Capabilities\n")
    out += [f"CAP_{c['name'].upper()} = const(0x{c['id']:04X})\n" for c in caps]

    for cap in caps:
        cn = cap["name"].upper()
        body: list[str] = []
        for a in cap.get("attributes", []):
            body.append(f"ATTR_{cn}_{a['name'].upper()} = const({a['id']})\n")
        for a in cap.get("attributes", []):
            for v in a.get("values", []):
                body.append(f"{cn}_{a['name'].upper()}_{v['name'].upper()} = const({v['value']})\n")
        for c in cap.get("commands", []):
            body.append(f"CMD_{cn}_{c['name'].upper()} = const({c['id']})\n")
        for e in cap.get("events", []):
            body.append(f"EV_{cn}_{e['name'].upper()} = const({e['id']})\n")
        if body:
            out.append(f"\n# {cap['name']} (0x{cap['id']:04X})\n")
            out += body

    groups, vals = spec_tables(registry)
    out.append("\n" + _SPECS_COMMENT + "_VALS = (\n")
    for i in range(0, len(vals), 8):
        out.append("    " + " ".join(f"{'None' if v is None else v}," for v in vals[i:i + 8]) + "\n")
    out.append(")\n\n_SPECS = (\n")
    for cap, data in groups:
        out.append(f"    # {cap['name']}\n    {_bytes_literal(data)}\n")
    out.append(")\n")
    out.append(_ACCESSORS)
    return "".join(out)


# ------------------------------------------------------------------------ markdown


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _range_text(spec: Obj, enum_values: Sequence[Obj] | None = None) -> str:
    t = spec["type"]
    lo, hi = value_bounds(spec, enum_values)
    if t == "bool":
        return "false, true"
    if t in ("str", "bytes"):
        return f"≤ {hi} bytes"
    if t == "list":
        return f"≤ {hi} × {spec['items']['type']} {_range_text(spec['items'])}"
    if t == "bitmap":
        return f"{spec['bits']} bits (mask 0x{hi:X})"
    if t == "enum":
        return f"0..{hi}"
    return f"{lo}..{hi}"


def _field_text(cap: Obj, f: Obj) -> str:
    if f["type"] == "enum":
        desc = f"`{f['name']}` enum (values of `{f['values_from']}`)"
    else:
        unit = f" {f['unit']}" if "unit" in f else ""
        desc = f"`{f['name']}` {f['type']}{unit} {_range_text(f)}"
    return f"[{desc}]" if f.get("optional") else desc


def _fields_text(cap: Obj, fields: Sequence[Obj]) -> str:
    if not fields:
        return "—"
    return "<br>".join(_field_text(cap, f) for f in fields)


def _default_text(a: Obj) -> str:
    if "default" not in a:
        return ""
    d = a["default"]
    return "true" if d is True else "false" if d is False else str(d)


def _conversion_text(ble: Obj) -> str:
    if ble["format"] == "utf8s":
        return "the string as is (UTF-8)"
    if "multiplier" not in ble:
        return "not defined (format unverified)"
    m = ble["multiplier"]
    core = "value" if m == 1 else f"value × {m}"
    return f"{core}, clamped to {ble['raw_min']}..{ble['raw_max']}"


def render_markdown(registry: Registry) -> str:
    """The text of docs/registry.md for this registry."""
    validate(registry)
    caps: list[Obj] = registry["capabilities"]
    w: list[str] = []
    add = w.append
    add("<!-- GENERATED from spec/registry.json by host/cabinlink_tools/registry_gen.py: do not edit. "
        "Regenerate with `make registry`. -->\n")
    add(f"# CabinLink capability registry v{registry['version']}\n\n")
    add(f"{registry['description']} The machine-readable source is `spec/registry.json` "
        "(structure: `spec/registry.schema.json`); accessory firmware uses the generated "
        "`firmware/lib/cabinlink/registry.py`.\n\n")

    add("## Conventions\n\n")
    add("- **Identifiers.** A capability has a 16-bit registry id; its attributes, commands and events "
        "each have an id 0..23, so every id on the wire is one CBOR byte. Ids are never reused for a "
        "different meaning. Capabilities with the same layout use the same ids (every environment "
        "sensor has `value` 0, `status` 1, `offset` 2 where it has one, `sample_period_ms` 3).\n")
    add("- **Numbers.** There are no floats: quantities are scaled integers in the unit given. "
        "Ranges are inclusive. A value outside its range is answered `INVALID_VALUE`.\n")
    add("- **Sensor values** are meaningful only while the capability's `status` is `ok`.\n")
    add("- **Command arguments** travel as one CBOR array in `INVOKE`, in the order listed; arguments "
        "in [brackets] are optional and may be left off the end. Unknown trailing arguments are ignored.\n")
    add("- **Command results and event data**: no field → the element is absent; exactly one field → "
        "the bare value; several fields → a CBOR array in the order listed. An event with one field "
        "therefore never gains a second one: a new event is defined instead.\n")
    add(f"- **Frame budget.** Every event's data fits in {EVENT_DATA_BUDGET} bytes so that "
        f"`[11, slot, event, data]` is one {SINGLE_FRAME}-byte CAN single frame (the generator checks it).\n")
    add("- **Access.** R readable, W writable, report: may be subscribed to, persist: a written value "
        "survives reboots. Writable attributes are written by the car, some only by it (for example "
        "`clamp.vehicle_moving`).\n")
    add("- **Optional** attributes may be left out by an accessory that has the capability; DESCRIBE "
        "lists the attributes actually present. Every other attribute is mandatory.\n\n")

    add("### Value types\n\n| type | code | CBOR | min/max in the firmware tables |\n|---|---|---|---|\n")
    type_rows = {
        "bool": ("true/false", "None, None"),
        "uint": ("unsigned integer", "the range"),
        "int": ("integer", "the range"),
        "str": ("UTF-8 text string", "None, length limit in bytes"),
        "bytes": ("byte string", "None, length limit"),
        "enum": ("unsigned integer from a listed set", "0, largest value"),
        "bitmap": ("unsigned integer, bit n = item n", "0, mask of the defined bits"),
        "list": ("array", "None, item limit"),
    }
    for t, code in TYPE_CODES.items():
        cbor, table = type_rows[t]
        add(f"| {t} | {code} | {cbor} | {table} |\n")

    add("\n### Capability id ranges\n\n| first | last | name | description |\n|---|---|---|---|\n")
    for r in sorted(registry["id_ranges"], key=lambda r: r["first"]):
        add(f"| {_hex(r['first'])} | {_hex(r['last'])} | {r['name']} | {_md(r['description'])} |\n")
    add("\nIds outside these ranges are reserved for future versions. A car ignores capabilities it "
        "does not know.\n")

    add("\n### Units\n\n| unit | meaning |\n|---|---|\n")
    for u, meaning in registry["units"].items():
        add(f"| {u} | {_md(meaning)} |\n")

    add("\n### Device classes\n\n| id | name | description | typical capabilities |\n|---|---|---|---|\n")
    for dc in registry["device_classes"]:
        add(f"| {dc['id']} | {dc['name']} | {_md(dc['description'])} | "
            f"{', '.join(dc['capabilities'])} |\n")

    add("\n## Capabilities\n\n| id | name | group | description |\n|---|---|---|---|\n")
    for cap in caps:
        flag = " (reserved)" if cap.get("reserved") else " (required)" if cap.get("required") else ""
        add(f"| {_hex(cap['id'])} | [{cap['name']}](#{cap['name']}){flag} | {cap['group']} | "
            f"{_md(cap['description'])} |\n")

    for cap in caps:
        add(f"\n### {cap['name']}\n\n")
        add(f"Id **{_hex(cap['id'])}**, group {cap['group']}. {_md(cap['description'])}")
        if cap.get("required"):
            add(" Every accessory has exactly one instance of this capability.")
        if cap.get("reserved"):
            add(" Reserved: no attributes, commands or events are defined yet; the id must not be "
                "used for anything else.")
        add("\n")
        attrs = cap.get("attributes", [])
        if attrs:
            add("\n**Attributes**\n\n| id | name | type | unit | range | access | report | persist | "
                "default | description |\n|---|---|---|---|---|---|---|---|---|---|\n")
            for a in attrs:
                access = {"read": "R", "write": "W", "read_write": "RW"}[a["access"]]
                opt = " (optional)" if a.get("optional") else ""
                add(f"| {a['id']} | `{a['name']}`{opt} | {a['type']} | {a.get('unit', '')} | "
                    f"{_range_text(a)} | {access} | {'yes' if a.get('reportable') else ''} | "
                    f"{'yes' if a.get('persistent') else ''} | {_default_text(a)} | "
                    f"{_md(a['description'])} |\n")
            for a in attrs:
                if a["type"] == "enum":
                    add(f"\n`{a['name']}` values:\n\n| value | name | description |\n|---|---|---|\n")
                    for v in a["values"]:
                        add(f"| {v['value']} | {v['name']} | {_md(v['description'])} |\n")
        cmds = cap.get("commands", [])
        if cmds:
            add("\n**Commands**\n\n| id | name | arguments | result | description |\n|---|---|---|---|---|\n")
            for c in cmds:
                add(f"| {c['id']} | `{c['name']}` | {_fields_text(cap, c.get('args', []))} | "
                    f"{_fields_text(cap, c.get('result', []))} | {_md(c['description'])} |\n")
        evs = cap.get("events", [])
        if evs:
            add("\n**Events**\n\n| id | name | data | description |\n|---|---|---|---|\n")
            for e in evs:
                add(f"| {e['id']} | `{e['name']}` | {_fields_text(cap, e.get('data', []))} | "
                    f"{_md(e['description'])} |\n")

    add("\n## Bluetooth SIG mapping\n\n")
    add("Besides the CabinLink GATT service, an accessory may expose attributes through standard SIG "
        "services so that a phone understands them without CabinLink. The raw characteristic value is "
        "the CabinLink value times the multiplier, clamped to the characteristic's range; while the "
        "value is not valid (`status` not `ok`) the characteristic's *unknown* value is sent. "
        "Multi-byte values are little-endian, as everywhere in GATT.\n\n")
    add("| capability.attribute | service | characteristic | format | conversion | unknown | verified | "
        "source |\n|---|---|---|---|---|---|---|---|\n")
    for cap in caps:
        for a in cap.get("attributes", []):
            ble = a.get("ble")
            if not ble:
                continue
            unknown = str(ble["unknown"]) if "unknown" in ble else "—"
            verified = "yes" if ble["verified"] else "**no**"
            note = f"<br>{_md(ble['note'])}" if "note" in ble else ""
            add(f"| {cap['name']}.{a['name']} | {ble['service']} | {ble['uuid']} | {ble['format']} | "
                f"{_conversion_text(ble)}{note} | {unknown} | {verified} | {ble['source']} |\n")
    add("\nAttributes without a row have no SIG characteristic. In particular `voc_index.value` is "
        "not VOC Concentration (0x2BE7, a ppb concentration): an index cannot be converted to it.\n")

    add("\n### SIG services\n\n| service | name | verified | source |\n|---|---|---|---|\n")
    for s in registry["ble_services"]:
        add(f"| {s['uuid']} | {s['name']} | {'yes' if s['verified'] else '**no**'} | {_md(s['source'])} |\n")

    add("\n### How the mapping was verified\n\n")
    add("Characteristic UUIDs, formats, resolutions and special values were checked against the "
        "characteristic descriptions in the `trouble-host` crate's documentation, which reproduce the "
        "structure, unit and special-value text of the Bluetooth SIG GATT Specification Supplement, and, "
        "for the Device Information strings, against vendor SDK documentation; the source of each row is "
        "in the table. The GATT Specification Supplement itself was not read. Rows marked **no** were not "
        "confirmed and must not be exposed until checked against it:\n\n")
    unverified = [f"{c['name']}.{a['name']} ({a['ble']['uuid']}): {a['ble'].get('note', 'unverified')}"
                  for c in caps for a in c.get("attributes", []) if "ble" in a and not a["ble"]["verified"]]
    unverified += [f"service {s['uuid']} {s['name']}: {s['source']}"
                   for s in registry["ble_services"] if not s["verified"]]
    for line in unverified:
        add(f"- {_md(line)}\n")
    if not unverified:
        add("- none\n")

    add("\n## Report sizes\n\n")
    add(f"A REPORT `[10, slot, attribute, value]` fits one {SINGLE_FRAME}-byte CAN single frame when "
        "the value encodes in 3 bytes or less (any integer -65536..65535). These reportable attributes "
        "can exceed that at the ends of their range and then take an ISO-TP multi-frame transfer:\n\n")
    big = [f"{c['name']}.{a['name']} ({_range_text(a)})" for c in caps for a in c.get("attributes", [])
           if a.get("reportable") and cbor_max_size(a) > SINGLE_FRAME - 4]
    for line in big:
        add(f"- {line}\n")
    if not big:
        add("- none\n")
    return "".join(w)


# ---------------------------------------------------------------------- file output


def write_atomic(path: Path, text: str) -> None:
    """Write text to path so that readers see the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644  # mkstemp's 0600 would make a checked-in file private
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def outputs(registry: Registry) -> dict[Path, str]:
    """Every generated file with its expected content."""
    return {FIRMWARE_PATH: render_firmware(registry), MARKDOWN_PATH: render_markdown(registry)}


def stale_files(registry: Registry) -> list[Path]:
    stale = []
    for path, text in outputs(registry).items():
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            stale.append(path)
    return stale


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cabinlink_tools.registry_gen",
        description="Validate spec/registry.json and generate the firmware registry module and docs/registry.md.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the firmware module and docs/registry.md")
    mode.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date")
    mode.add_argument("--markdown", action="store_true", help="print the docs/registry.md content")
    mode.add_argument("--validate", action="store_true", help="only validate the registry")
    parser.add_argument("--registry", type=Path, default=None, help="registry file (default: spec/registry.json)")
    args = parser.parse_args(list(argv) if argv is not None else None)

    try:
        registry = load_registry(args.registry)
    except RegistryError as e:
        print(f"error: {e}", file=sys.stderr)
        print("Fix the registry and run this command again.", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot read the registry: {e}", file=sys.stderr)
        return 2

    if args.validate:
        print(f"{_rel(args.registry or REGISTRY_PATH)}: valid, {len(registry['capabilities'])} capabilities")
        return 0
    if args.markdown:
        sys.stdout.write(render_markdown(registry))
        return 0
    if args.check:
        stale = stale_files(registry)
        for path in stale:
            print(f"stale: {_rel(path)} (run `make registry`)", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs(registry).items():
        try:
            unchanged = path.read_text(encoding="utf-8") == text
        except FileNotFoundError:
            unchanged = False
        if unchanged:
            print(f"unchanged: {_rel(path)}")
        else:
            write_atomic(path, text)
            print(f"wrote: {_rel(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
