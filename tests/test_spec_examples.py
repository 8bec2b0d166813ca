"""The hex examples in docs/spec.md are real: every table row that pairs a CBOR value with
its hex is re-encoded with the core codec and decoded with cbor2 (an independent decoder),
so the spec cannot drift from the code."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import cbor2

from cabinlink.codec import encode

SPEC = Path(__file__).resolve().parent.parent / "docs" / "spec.md"
HEX = re.compile(r"^(?:[0-9A-F]{2})(?: [0-9A-F]{2})*$")


def _value(text: str) -> object:
    py = re.sub(r"\btrue\b", "True", text)
    py = re.sub(r"\bfalse\b", "False", py)
    py = re.sub(r"\bnull\b", "None", py)
    py = re.sub(r"h'([0-9A-Fa-f ]*)'", lambda m: repr(bytes.fromhex(m.group(1))), py)
    return ast.literal_eval(py)


def _is_cbor_item(h: str) -> bool:
    try:
        cbor2.loads(bytes.fromhex(h))  # raises on trailing bytes: a frame, not a message
        return True
    except Exception:  # noqa: BLE001 - anything cbor2 refuses is not an example pair
        return False


def pairs() -> list[tuple[int, str, object]]:
    """(line, hex, value) for each table cell holding one whole CBOR item in hex next to
    the cell holding its value (value after the hex, else before it)."""
    found = []
    for n, line in enumerate(SPEC.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        code = [re.fullmatch(r"`([^`]+)`", c) for c in cells]
        for i, m in enumerate(code):
            if not m or not HEX.match(m.group(1)) or not _is_cbor_item(m.group(1)):
                continue
            for j in (i + 1, i - 1):
                if 0 <= j < len(code) and code[j] and not HEX.match(code[j].group(1)):
                    try:
                        found.append((n, m.group(1), _value(code[j].group(1))))
                        break
                    except (ValueError, SyntaxError):
                        continue
    return found


def test_spec_has_many_checkable_examples() -> None:
    assert len(pairs()) >= 30


def test_every_spec_example_encodes_to_its_hex() -> None:
    wrong = []
    for line, h, v in pairs():
        want = bytes.fromhex(h)
        try:
            got = encode(v)
        except Exception as e:  # noqa: BLE001 - reported below
            wrong.append(f"docs/spec.md:{line}: {v!r} does not encode ({e})")
            continue
        if got != want:
            wrong.append(f"docs/spec.md:{line}: {v!r} encodes to {got.hex(' ').upper()}, spec says {h}")
        elif cbor2.loads(want) != v:
            wrong.append(f"docs/spec.md:{line}: cbor2 reads {h} as {cbor2.loads(want)!r}")
    assert not wrong, "\n".join(wrong)


def test_rows_marked_vector_are_in_the_vector_file() -> None:
    import json

    vectors = json.loads((SPEC.parent.parent / "spec" / "vectors" / "messages.json").read_text())
    known = {v["hex"] for v in vectors["messages"]}
    missing = []
    for n, line in enumerate(SPEC.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("|") and "(vector)" in line:
            for h in re.findall(r"`([0-9A-F]{2}(?: [0-9A-F]{2})*)`", line):
                if h.replace(" ", "").lower() not in known:
                    missing.append(f"docs/spec.md:{n}: {h}")
    assert not missing, "\n".join(missing)


def test_describe_worked_example_is_what_the_node_sends() -> None:
    from cabinlink import msg
    from cabinlink import registry as reg
    from cabinlink.clock import ManualClock
    from cabinlink.model import Capability, device_info
    from cabinlink.node import Node

    ok = lambda *a: msg.OK  # noqa: E731
    temp = Capability(reg.CAP_TEMPERATURE, values={0: 2150, 1: 0, 2: 0, 3: 2000},
                      ranges={0: (-2000, 8500)}, label="front")
    co2 = Capability(reg.CAP_CO2, values={0: 420, 1: 0, 2: 0, 3: 5000, 5: 1000, 6: 100, 7: 0},
                     commands=(0,), events=(0,), on_invoke=ok)
    node = Node(ManualClock(), reg.CLASS_AMBIENT,
                [device_info("Acme", "AQ-1", "0042", "0.1.0", "B", ok), temp, co2])
    node.poll()  # the node fills device_info's live attributes
    text = SPEC.read_text(encoding="utf-8")
    section = text[text.index("### 5.4 DESCRIBE"):text.index("### 5.5 READ")]
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    hex_block = next(b for b in blocks if HEX.match(b.split("\n")[0].strip()))
    want = bytes.fromhex(hex_block.replace("\n", " "))
    head = bytes([0x84]) + encode([msg.RESULT, 2, msg.OK])[1:]
    assert head + node.description() == want
