"""Section 3 (data model) and 5.4 (DESCRIBE): the declaration itself, read against the
registry."""
from __future__ import annotations

from typing import Any

from cabinlink import msg
from cabinlink import registry as reg

from cabinlink_tools.conformance.check import Req, must, show
from cabinlink_tools.conformance.model import registry_caps

IDENTITY = [(msg.D_VENDOR, 0, "vendor"), (msg.D_PRODUCT, 1, "product"), (msg.D_SERIAL, 2, "serial"),
            (msg.D_FIRMWARE, 3, "firmware_version"), (msg.D_HARDWARE, 4, "hardware_version")]


@must("M-5.4-1")
def test_M_5_4_1_describe_answers_ok_with_the_map(dut: Any, req: Req) -> None:
    r = dut.session().ask(msg.describe)
    req.status(r, msg.OK, "DESCRIBE")
    req(len(r) > 3 and isinstance(r[3], dict), f"the RESULT OK to DESCRIBE must carry the description map, got {show(r)}")


@must("M-5.4-3")
def test_M_5_4_3_mandatory_description_keys(dut: Any, req: Req) -> None:
    d = dut.declaration.raw
    for key, name in ((msg.D_VERSION, "D_VERSION"), (msg.D_CLASS, "D_CLASS"), (msg.D_VENDOR, "D_VENDOR"),
                      (msg.D_PRODUCT, "D_PRODUCT"), (msg.D_SERIAL, "D_SERIAL"), (msg.D_CAPS, "D_CAPS"),
                      (msg.D_MAX_RX, "D_MAX_RX")):
        req(key in d, f"the description has no key {key} ({name})")
    v = d[msg.D_VERSION]
    req(isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v),
        f"D_VERSION must be [major, minor], got {show(v)}")
    for k in (msg.D_VENDOR, msg.D_PRODUCT, msg.D_SERIAL):
        req(isinstance(d[k], str) and len(d[k].encode()) <= 32, f"key {k} must be a str of at most 32 bytes, got {show(d[k])}")
    req(isinstance(d[msg.D_CAPS], list) and d[msg.D_CAPS], "D_CAPS must be a non-empty array of capability entries")
    for slot, e in enumerate(d[msg.D_CAPS]):
        req(isinstance(e, dict), f"slot {slot}: a capability entry must be a map, got {show(e)}")
        for key, name in ((msg.C_ID, "C_ID"), (msg.C_INSTANCE, "C_INSTANCE"), (msg.C_ATTRS, "C_ATTRS")):
            req(key in e, f"slot {slot}: the capability entry has no key {key} ({name})")
        attrs = e[msg.C_ATTRS]
        req(isinstance(attrs, list) and attrs == sorted(set(attrs)),
            f"slot {slot}: C_ATTRS must be the attribute ids in ascending order, got {show(attrs)}")
        for key, name in ((msg.C_COMMANDS, "C_COMMANDS"), (msg.C_EVENTS, "C_EVENTS")):
            if key in e:
                req(isinstance(e[key], list) and e[key], f"slot {slot}: {name} present but not a non-empty array")
        if msg.C_RANGES in e:
            req(isinstance(e[msg.C_RANGES], dict) and e[msg.C_RANGES],
                f"slot {slot}: C_RANGES present but not a non-empty map")
    # "keys 3-5 whenever the condition holds": a command the entry does not list must not work
    s = dut.session()
    for c in dut.declaration.caps:
        if c.reg and msg.C_COMMANDS not in c.entry:
            for cmd in c.reg.get("commands", []):
                r = s.ask(msg.invoke, c.slot, cmd["id"], [])
                req(r[2] == msg.NOT_FOUND, f"slot {c.slot} ({c.name}) lists no commands (no key 3) but INVOKE of "
                                           f"{cmd['name']} answered status {r[2]}, not NOT_FOUND")


@must("M-5.4-4")
def test_M_5_4_4_max_rx_within_512_4095(dut: Any, req: Req) -> None:
    v = dut.declaration.raw.get(msg.D_MAX_RX)
    req(isinstance(v, int) and not isinstance(v, bool) and 512 <= v <= 4095, f"D_MAX_RX must be 512..4095, got {show(v)}")


@must("M-3.1-1")
def test_M_3_1_1_exactly_one_device_info(dut: Any, req: Req) -> None:
    n = sum(1 for c in dut.declaration.caps if c.id == reg.CAP_DEVICE_INFO)
    req(n == 1, f"the accessory lists {n} device_info capabilities (registry id 0x0001), not exactly one")


@must("M-3.1-2")
def test_M_3_1_2_identity_strings_equal_device_info(dut: Any, req: Req) -> None:
    s = dut.session()
    slot = dut.info_slot()
    d = dut.declaration.raw
    for key, attr, name in IDENTITY:
        if key not in d:
            continue
        r = s.ask(msg.read, slot, attr)
        got = r[3] if r[2] == msg.OK and len(r) > 3 else None
        req(got == d[key], f"DESCRIBE key {key} is {d[key]!r} but device_info.{name} reads {got!r}")


@must("M-3.2-1")
def test_M_3_2_1_capability_id_instance_unique(dut: Any, req: Req) -> None:
    seen: dict[tuple[int, int], int] = {}
    for c in dut.declaration.caps:
        key = (c.id, c.instance)
        req(key not in seen, f"slots {seen.get(key)} and {c.slot} both are capability 0x{c.id:04X} instance {c.instance}")
        seen[key] = c.slot


@must("M-3.3-1")
def test_M_3_3_1_mandatory_attributes_listed(dut: Any, req: Req) -> None:
    for c in dut.declaration.caps:
        if not c.reg:
            continue
        need = [a["id"] for a in c.reg.get("attributes", []) if not a.get("optional")]
        missing = [a for a in need if a not in c.attrs]
        names = [next(x["name"] for x in c.reg["attributes"] if x["id"] == a) for a in missing]
        req(not missing, f"slot {c.slot} ({c.name}) lacks mandatory attribute(s) {missing} {names}")
        unknown = [a for a in c.attrs if c.attr(a) is None]
        req(not unknown, f"slot {c.slot} ({c.name}) lists attribute ids {unknown} the registry does not define")


@must("M-3.3-4")
def test_M_3_3_4_declared_ranges_within_registry(dut: Any, req: Req) -> None:
    for c in dut.declaration.caps:
        for attr, rng in c.ranges.items():
            a = c.attr(attr)
            req(a is not None and a.type in ("int", "uint"),
                f"slot {c.slot} ({c.name}) declares a range for attribute {attr}, which is not an int or uint attribute")
            req(isinstance(rng, list) and len(rng) == 2 and all(isinstance(x, int) for x in rng) and rng[0] <= rng[1],
                f"slot {c.slot} ({c.name}): declared range of {a.label} must be [min, max], got {show(rng)}")
            req(a.reg_lo <= rng[0] and rng[1] <= a.reg_hi,
                f"slot {c.slot}: declared range {rng} of {a.label} is not within the registry range "
                f"{a.reg_lo}..{a.reg_hi}")


@must("M-3.3-5")
def test_M_3_3_5_declared_range_enforced(dut: Any, req: Req) -> None:
    s = dut.session()
    checked = 0
    for c in dut.declaration.caps:
        for attr, rng in c.ranges.items():
            a = c.attr(attr)
            if a is None:
                continue
            r = s.ask(msg.read, c.slot, attr)
            if r[2] == msg.OK:
                req(rng[0] <= r[3] <= rng[1], f"{a.label} reads {r[3]}, outside its declared range {rng}")
            if not a.writable:
                continue
            for bad in (rng[0] - 1, rng[1] + 1):
                if a.reg_lo <= bad <= a.reg_hi:
                    before = s.ask(msg.read, c.slot, attr)
                    w = s.ask(msg.write, c.slot, attr, bad)
                    if w[2] == msg.OK and before[2] == msg.OK:  # put it back before failing
                        s.ask(msg.write, c.slot, attr, before[3])
                    req(w[2] == msg.INVALID_VALUE, f"WRITE {a.label} = {bad} (inside the registry range, outside the "
                                                   f"declared {rng}) must get INVALID_VALUE, got status {w[2]}")
                    checked += 1
    if not checked:
        # nothing declared narrower that is writable: the values read above were the check
        pass


@must("M-3.6-2")
def test_M_3_6_2_no_reserved_capability(dut: Any, req: Req) -> None:
    reserved = {cid for cid, c in registry_caps().items() if c.get("reserved")}
    for c in dut.declaration.caps:
        req(c.id not in reserved, f"slot {c.slot} lists capability 0x{c.id:04X}, which the registry marks reserved")


# Commands the suite runs for real because they change nothing lasting; the others are checked
# through argument validation only (a reboot, a motor move, a sensor recalibration).
SAFE = {("device_info", "identify"): [0], ("device_info", "read_log"): [0], ("leds", "off"): [],
        ("clamp", "release"): [False]}


@must("M-3.4-1")
def test_M_3_4_1_listed_commands_are_implemented(dut: Any, req: Req) -> None:
    s = dut.session()
    for c, cmd in dut.declaration.commands():
        args = SAFE.get((c.name, cmd.name))
        if args is not None:
            r = s.ask(msg.invoke, c.slot, cmd.id, args)
            req(r[2] not in (msg.UNSUPPORTED, msg.NOT_FOUND),
                f"{cmd.label} is listed in C_COMMANDS but INVOKE answered status {r[2]}")
        required = [a for a in cmd.args if not a.optional]
        if required:
            r = s.ask(msg.invoke, c.slot, cmd.id, [])
            req(r[2] == msg.INVALID_VALUE, f"{cmd.label} without its required argument(s) must get INVALID_VALUE "
                                           f"(5.7 step 3, so the command is known), got status {r[2]}")
    for c in dut.declaration.caps:
        for cid in c.commands:
            req(c.command(cid) is not None or c.reg is None,
                f"slot {c.slot} ({c.name}) lists command {cid}, which the registry does not define")
