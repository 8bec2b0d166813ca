#!/usr/bin/env python3
"""Writes spec/vectors/cbor.json and spec/vectors/messages.json.

The hex of every vector is produced by cbor2 (canonical mode), an implementation we did
not write, never by our codec: the tests then check that our codec produces and parses
exactly these bytes. Values are stored in a JSON form that can carry CBOR's types:
bytes as {"$bytes": "hex"}, maps as {"$map": [[key, value], ...]}.

Run: .venv/bin/python tools/gen_cbor_vectors.py   (then review the diff)
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import cbor2

ROOT = Path(__file__).resolve().parent.parent


def to_json(v: Any) -> Any:
    if isinstance(v, bytes):
        return {"$bytes": v.hex()}
    if isinstance(v, dict):
        return {"$map": [[to_json(k), to_json(x)] for k, x in v.items()]}
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    return v


def vec(name: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "hex": cbor2.dumps(value, canonical=True).hex(), "value": to_json(value), **extra}


CBOR = [
    vec("uint 0", 0), vec("uint 23 (last one-byte)", 23), vec("uint 24 (first two-byte)", 24),
    vec("uint 255", 255), vec("uint 256", 256), vec("uint 65535", 65535), vec("uint 65536", 65536),
    vec("uint 2^32-1", 2**32 - 1), vec("uint 2^32", 2**32), vec("uint 2^64-1", 2**64 - 1),
    vec("nint -1", -1), vec("nint -24", -24), vec("nint -25", -25), vec("nint -1000 (-10.00 C)", -1000),
    vec("nint -2^64", -(2**64)),
    vec("false", False), vec("true", True), vec("null", None),
    vec("empty bytes", b""), vec("bytes", b"\x00\x01\xff"), vec("empty text", ""),
    vec("text", "CabinLink"), vec("text utf-8", "Kühlschrank °C"),
    vec("empty array", []), vec("nested array", [1, [2, [3, []]]]),
    vec("empty map", {}), vec("map int keys sorted", {0: "a", 1: 2, 10: [1], 24: True}),
    vec("map negative key after positives", {1: 1, -1: 2}),
    vec("map text keys", {"a": 1, "b": 2}),
    vec("text 24 bytes (two-byte head)", "x" * 24),
    vec("bytes 300 (three-byte head)", bytes(range(256)) + bytes(44)),
]

# Decoders accept these (floats are never sent, but must not break a message).
DECODE_ONLY = [
    {"name": "float16 1.5", "hex": "f93e00", "value": 1.5},
    {"name": "float32 100000.0", "hex": "fa47c35000", "value": 100000.0},
    {"name": "float64 1.1", "hex": "fb3ff199999999999a", "value": 1.1},
    {"name": "non-shortest uint 1 in two bytes", "hex": "1801", "value": 1},
]

INVALID = [
    {"name": "empty input", "hex": ""},
    {"name": "truncated uint16", "hex": "19 01"},
    {"name": "truncated text", "hex": "63 61 62"},
    {"name": "array shorter than its count", "hex": "83 01 02"},
    {"name": "map missing a value", "hex": "a1 01"},
    {"name": "indefinite array", "hex": "9f 01 ff"},
    {"name": "indefinite bytes", "hex": "5f 41 00 ff"},
    {"name": "reserved additional info 28", "hex": "1c"},
    {"name": "tag (unsupported)", "hex": "c1 1a 00 00 00 00"},
    {"name": "undefined", "hex": "f7"},
    {"name": "simple value 16", "hex": "f0"},
    {"name": "break outside indefinite item", "hex": "ff"},
    {"name": "trailing bytes", "hex": "01 02"},
    {"name": "bad utf-8", "hex": "62 c3 28"},
    {"name": "duplicate map key", "hex": "a2 01 01 01 02"},
    {"name": "array key", "hex": "a1 80 01"},
    {"name": "bool map key", "hex": "a1 f5 01"},
    {"name": "nesting 9 deep, innermost empty", "hex": "81" * 8 + "80"},
    {"name": "huge declared byte length", "hex": "5b ff ff ff ff ff ff ff ff 00"},
    {"name": "huge declared array count", "hex": "9b 00 00 00 01 00 00 00 00 01"},
    {"name": "nesting 9 deep", "hex": "81" * 9 + "00"},
]

# message vectors: (name, direction, value, note)
MESSAGES: list[tuple[str, str, list[Any], str]] = [
    ("HEARTBEAT uptime 3601 s, nominal, operational", "node -> all", [1, 3601, 0, 0], "7.6"),
    ("HEARTBEAT uptime 65535 s (largest), safe mode", "node -> all", [1, 65535, 2, 2], "7.6"),
    ("HELLO v0.1", "car -> accessory", [2, 1, 0, 1], ""),
    ("RESULT OK to HELLO: v0.1, ambient sensor", "accessory -> car", [9, 1, 0, [0, 1, 2]], ""),
    ("RESULT VERSION_MISMATCH to HELLO v1.0", "accessory -> car", [9, 2, 10, [0, 1]], ""),
    ("DESCRIBE", "car -> accessory", [3, 3], ""),
    ("READ slot 1 attr 0", "car -> accessory", [4, 4, 1, 0], ""),
    ("RESULT OK 21.50 C", "accessory -> car", [9, 4, 0, 2150], ""),
    ("WRITE slot 1 attr 2 (temperature.offset -0.50 C)", "car -> accessory", [5, 5, 1, 2, -50], ""),
    ("RESULT OK (no value)", "accessory -> car", [9, 5, 0], ""),
    ("RESULT INVALID_VALUE", "accessory -> car", [9, 6, 5], ""),
    ("SUBSCRIBE slot 1 attr 0 min 1000 ms max 60 s threshold 10", "car -> accessory", [6, 7, 1, 0, 1000, 60, 10], ""),
    ("RESULT OK granted [1000, 60]", "accessory -> car", [9, 7, 0, [1000, 60]], ""),
    ("SUBSCRIBE max 7200 s (granted 3600)", "car -> accessory", [6, 8, 3, 0, 0, 7200], ""),
    ("UNSUBSCRIBE slot 1 attr 0", "car -> accessory", [7, 9, 1, 0], ""),
    ("INVOKE slot 1 cmd 0 (clamp.clamp) no args", "car -> accessory", [8, 10, 1, 0], ""),
    ("INVOKE slot 1 cmd 1 (clamp.release) confirm=true", "car -> accessory", [8, 11, 1, 1, [True]], ""),
    ("RESULT CONFIRM_REQUIRED", "accessory -> car", [9, 11, 7], ""),
    ("REPORT temperature 21.50 C", "accessory -> car", [10, 1, 0, 2150], "single frame"),
    ("REPORT temperature -10.00 C", "accessory -> car", [10, 1, 0, -1000], "single frame"),
    ("REPORT humidity 45.00 %", "accessory -> car", [10, 2, 0, 4500], "single frame"),
    ("REPORT CO2 1250 ppm", "accessory -> car", [10, 3, 0, 1250], "single frame"),
    ("EVENT button 2 long press", "accessory -> car", [11, 0, 2, 2], "single frame"),
    ("EVENT encoder delta -3", "accessory -> car", [11, 1, 0, -3], "single frame"),
    ("EVENT clamp fault code 1 (stall)", "accessory -> car", [11, 1, 1, 1], "single frame"),
    ("future request type 20 (answered UNSUPPORTED)", "car -> accessory", [20, 12, "x"], ""),
    ("RESULT UNSUPPORTED", "accessory -> car", [9, 12, 2], ""),
    ("future notice type 40 (ignored)", "any", [40, 1, 2], ""),
    ("SECURED envelope (reserved; v0.1 drops it)", "any", [15, 1, 42, bytes.fromhex("8201"), bytes(4)], ""),
    ("HELLO with an unknown trailing element (ignored)", "car -> accessory", [2, 13, 0, 1, {"x": 1}], ""),
]


def write_json(path: Path, data: Any) -> None:
    # One vector per line: reviewable diffs, still plain JSON.
    parts = []
    for key, val in data.items():
        if isinstance(val, list):
            items = ",\n  ".join(json.dumps(v, ensure_ascii=False) for v in val)
            parts.append(f' {json.dumps(key)}: [\n  {items}\n ]')
        else:
            parts.append(f" {json.dumps(key)}: {json.dumps(val, ensure_ascii=False)}")
    text = "{\n" + ",\n".join(parts) + "\n}\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; vectors are for everyone
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main() -> int:
    out = ROOT / "spec" / "vectors"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "cbor.json", {
        "about": "CabinLink CBOR subset (spec 4). 'valid': encoder output must equal hex and decoding hex must give value; 'decode_only': accepted on input, never produced; 'invalid': decoding must fail with the protocol error. Values: bytes as {\"$bytes\": hex}, maps as {\"$map\": [[k, v], ...]}. Hex made by cbor2 canonical mode.",
        "valid": CBOR, "decode_only": DECODE_ONLY,
        "invalid": [{"name": v["name"], "hex": v["hex"].replace(" ", "")} for v in INVALID],
    })
    msgs = []
    for name, direction, value, note in MESSAGES:
        v = vec(name, value, direction=direction)
        if note:
            v["spec"] = note
        msgs.append(v)
    write_json(out / "messages.json", {
        "about": "CabinLink v0.1 messages (spec 5) as CBOR hex, made by cbor2 canonical mode. Values as in cbor.json.",
        "messages": msgs,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
