"""Section 8 (BLE transport): advertising, the GATT service, fragmentation both ways, the
Bluetooth SIG services, liveness; and 6.6-3 (the session ends with the connection).

The accessory may accept a single connection at a time (8.1 allows more, requires none), so
the tests that need a fresh connection close the suite's standing one first."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from cabinlink import msg
from cabinlink import registry as reg
from cabinlink.codec import encode

from cabinlink_tools.conformance.ble_probe import SERVICE, SERVICE_LE, RX, TX, Advert, uuid_str
from cabinlink_tools.conformance.check import Req, must, show
from cabinlink_tools.conformance.scenarios import padded_read

START, END = 0x80, 0x40


@pytest.fixture(scope="module")
def ble_dut(dut: Any) -> Any:
    if not dut.target.has_ble:
        pytest.skip("the target has no BLE link")
    live = dut.backgrounds.get("liveness")
    if live is not None:  # a BLE session would be a fifth one while it keeps to four
        live._thread.join(60)
    return dut


@pytest.fixture
def ble(ble_dut: Any) -> Any:
    return ble_dut.ble()


@pytest.fixture(scope="module")
def fresh(ble_dut: Any) -> Iterator[Any]:
    """A new connection at the default ATT MTU (23), notifications enabled (one for the
    module: the accessory may take one connection at a time)."""
    ble_dut.drop_ble()
    s = ble_dut.ble_connect(mtu=None, label="BLE (MTU 23)")
    yield s
    s.s.conn.disconnect()


def _advert(ble_dut: Any) -> Advert:
    """The accessory's advertising as the suite's last scan saw it (it stops advertising
    while its one connection is taken)."""
    if ble_dut.advert is None:
        ble_dut.drop_ble()
        ble_dut.advert = ble_dut.ble_central().scan(ble_dut.target.ble_match, timeout=30)
    return ble_dut.advert


def frag(seq: int, payload: bytes, start: bool = False, end: bool = False, total: int | None = None) -> bytes:
    h = (START if start else 0) | (END if end else 0) | (seq & 0x3F)
    if start:
        return bytes([h, (total if total is not None else len(payload)) >> 8,
                      (total if total is not None else len(payload)) & 0xFF]) + payload
    return bytes([h]) + payload


class RawWriter:
    """Writes fragments by hand on a session, keeping its sequence numbers in step."""

    def __init__(self, s: Any) -> None:
        self.s = s

    @property
    def seq(self) -> int:
        return self.s.s.sender.seq

    def write(self, f: bytes, advance: bool = True, response: bool = True) -> None:
        self.s.s.write_fragment(f, response)
        if advance and f:
            self.s.s.sender.seq = ((f[0] & 0x3F) + 1) & 0x3F


def _probe_ok(req: Req, s: Any, dut: Any, what: str) -> None:
    r = s.ask(msg.read, dut.info_slot(), reg.ATTR_DEVICE_INFO_HEALTH)
    req(r[2] == msg.OK, f"after {what}, a good READ was answered {show(r)}")


def _none_before_good(s: Any, dut: Any, tids: list[int], mark: int) -> Any:
    """A good READ, answered; then the RESULT of any of ``tids`` that came before it (the
    RESULTs of one connection come in request order, 5.2), else None."""
    s.ask(msg.read, dut.info_slot(), reg.ATTR_DEVICE_INFO_HEALTH)
    return next((m for m in s.since(mark) if m.is_result() and m.value[1] in tids), None)


def _check_fragments(req: Req, sessions: list[Any]) -> None:
    for s in sessions:
        size = s.s.conn.mtu - 3 if s.s.conn.connected else None
        frs = s.s.fragments
        if not frs:
            continue
        for t, f in frs:
            req(f, f"{s.label}: an empty notification")
            if size is not None:
                req(len(f) <= max(size, 20), f"{s.label}: a {len(f)}-byte fragment on ATT_MTU {size + 3}")


ESS = {reg.CAP_TEMPERATURE: (0x2A6E, 2, True, 1, -27315, 32767, -32768),
       reg.CAP_HUMIDITY: (0x2A6F, 2, False, 1, 0, 10000, 65535),
       reg.CAP_CO2: (0x2B8C, 2, False, 1, 0, 65533, 65535),
       reg.CAP_ILLUMINANCE: (0x2AFB, 3, False, 100, 0, 16777214, 16777215)}


@must("M-8.2-1")
def test_M_8_2_1_advertising(ble_dut: Any, req: Req) -> None:
    adv = _advert(ble_dut)
    req(adv.adv_type == 0, f"advertising PDU type {adv.adv_type}: must be ADV_IND (0), connectable undirected")
    fields = Advert.fields(adv.adv_data)
    flags = [v for t, v in fields if t == 0x01]
    req(flags == [b"\x06"], f"advertising Flags must be 0x06, got {[f.hex() for f in flags]}")
    lists = [v for t, v in fields if t == 0x07]
    req(any(SERVICE_LE in [v[i:i + 16] for i in range(0, len(v), 16)] for v in lists),
        f"no Complete List of 128-bit Service UUIDs (AD type 0x07) with {SERVICE} in {adv.adv_data.hex(' ').upper()}")


@must("M-8.2-2")
def test_M_8_2_2_scan_response(ble_dut: Any, req: Req) -> None:
    adv = _advert(ble_dut)
    fields = Advert.fields(adv.scan_response)
    req(fields and fields[0][0] == 0x21, f"the scan response must begin with Service Data - 128-bit UUID (0x21): "
                                         f"{adv.scan_response.hex(' ').upper()}")
    v = fields[0][1]
    req(len(v) >= 22 and v[:16] == SERVICE_LE, f"the service data must carry the CabinLink UUID, got {v.hex(' ').upper()}")
    data = v[16:22]
    d = ble_dut.declaration
    want = d.raw[msg.D_VERSION]
    req(list(data[:2]) == list(want), f"service data version {list(data[:2])} is not the accessory's {want}")
    req(data[2] == d.device_class, f"service data device class {data[2]} is not D_CLASS {d.device_class}")
    if ble_dut.name is not None:
        short = (ble_dut.name & 0x1FFFFF) & 0xFFFF
        got = (data[3] << 8) | data[4]
        req(got == short, f"short id 0x{got:04X} must be the identity number mod 65536, 0x{short:04X} (NAME on CAN), "
                          "most significant byte first")
        req(data[5] & 0x01, "flag bit 0 (also reachable on CAN) is clear, but the accessory is on CAN")
    req(not data[5] & 0xF8, f"flag bits 3-7 must be 0, flags are 0x{data[5]:02X}")
    names = [(t, n) for t, n in fields[1:] if t in (0x08, 0x09)]
    req(len(names) <= 1, f"{len(names)} name fields in the scan response")
    req(len(adv.scan_response) <= 31, f"scan response of {len(adv.scan_response)} bytes")
    if names and names[0][0] == 0x08:
        req(len(adv.scan_response) >= 30, "a Shortened Local Name although the whole name would fit")


@must("M-8.3-1")
def test_M_8_3_1_gatt_service_and_writes(ble_dut: Any, ble: Any, req: Req) -> None:
    svcs = ble.s.conn.services()
    chars = svcs.get(SERVICE.upper())
    req(chars is not None, f"no CabinLink service {SERVICE}; services: {list(svcs)}")
    props = {c: p for c, _, p in chars}
    req(RX.upper() in props and props[RX.upper()] & 0x08 and props[RX.upper()] & 0x04,
        f"RX {RX} must allow Write and Write Without Response, properties 0x{props.get(RX.upper(), 0):02X}")
    req(TX.upper() in props and props[TX.upper()] & 0x10, f"TX {TX} must allow Notify, properties 0x{props.get(TX.upper(), 0):02X}")
    size = ble.s.conn.mtu - 3
    info = ble_dut.info_slot()
    for response in (True, False):
        tid = ble.next_tid()
        m = padded_read(tid, info, 0, size - 3)  # START and length: 3 bytes
        mark = ble.mark()
        RawWriter(ble).write(frag(ble.s.sender.seq, m, True, True), response=response)
        r = ble.result(tid, 2.0, mark)
        req(r is not None and r.value[2] == msg.OK, f"one {size}-byte fragment (ATT_MTU - 3) written "
                                                    f"{'with' if response else 'without'} response was answered "
                                                    f"{show(r.value if r else None)}")
    for response in (True, False):
        tid = ble.next_tid()
        mark = ble.mark()
        ble.send(msg.read(tid, info, 0), response=response)
        r = ble.result(tid, 2.0, mark)
        req(r is not None, f"a READ written {'with' if response else 'without'} response got no RESULT")


@must("M-8.4-4")
def test_M_8_4_4_gap_abandons_the_message(ble_dut: Any, ble: Any, req: Req) -> None:
    w = RawWriter(ble)
    info = ble_dut.info_slot()
    tid = ble.next_tid()
    m = encode([msg.READ, tid, info, 0, b"x" * 30])
    mark = ble.mark()
    w.write(frag(w.seq, m[:10], start=True, total=len(m)))
    w.write(frag(w.seq + 1, m[10:20]))  # one sequence number skipped
    w.write(frag(w.seq, m[20:], end=True))
    r = _none_before_good(ble, ble_dut, [tid], mark)
    req(r is None, f"a message with a sequence gap in the middle was delivered: {show(r.value if r else None)}")
    # a gap right before a complete message: the START is processed as usual
    tid = ble.next_tid()
    m = encode(msg.read(tid, info, 0))
    mark = ble.mark()
    w.write(frag(w.seq + 5, m, True, True))
    r = ble.result(tid, 1.0, mark)
    req(r is not None, "a complete message after a sequence gap (START+END) was not delivered")


@must("M-8.4-5")
def test_M_8_4_5_inconsistent_messages_abandoned(ble_dut: Any, ble: Any, req: Req) -> None:
    w = RawWriter(ble)
    info = ble_dut.info_slot()
    cases = []
    for name in ("a START in the middle", "more than the announced length", "END before the length",
                 "length reached without END"):
        tid = ble.next_tid()
        m = encode([msg.READ, tid, info, 0, b"x" * 30])
        mark = ble.mark()
        if name == "a START in the middle":
            w.write(frag(w.seq, m[:10], start=True, total=len(m)))
            w.write(frag(w.seq, m[:10], start=True, total=len(m) + 50))  # a new START, never finished
            w.write(frag(w.seq, m[10:], end=True))
        elif name == "more than the announced length":
            w.write(frag(w.seq, m[:10], start=True, total=len(m) - 2))
            w.write(frag(w.seq, m[10:], end=True))
        elif name == "END before the length":
            w.write(frag(w.seq, m[:10], start=True, total=len(m)))
            w.write(frag(w.seq, m[10:20], end=True))
        else:
            w.write(frag(w.seq, m[:10], start=True, total=len(m)))
            w.write(frag(w.seq, m[10:]))
        cases.append((name, tid, mark))
    r = _none_before_good(ble, ble_dut, [tid for _, tid, _ in cases], cases[0][2])
    name = next((n for n, t, _ in cases if r is not None and t == r.value[1]), "")
    req(r is None, f"a message with {name} was delivered: {show(r.value if r else None)}")


@must("M-8.4-6")
def test_M_8_4_6_bad_fragments_dropped(ble_dut: Any, ble: Any, req: Req) -> None:
    w = RawWriter(ble)
    info = ble_dut.info_slot()
    tid = ble.next_tid()
    m = encode(msg.read(tid, info, 0))
    limit = ble_dut.declaration.max_rx
    mark = ble.mark()
    for name, f in (("an empty fragment", b""), ("a START of 2 bytes", bytes([START | END | w.seq, 0])),
                    ("a START announcing length 0", frag(w.seq, m, True, True, total=0)),
                    (f"a START announcing {limit + 1} bytes (> D_MAX_RX)", frag(w.seq, m, True, False, total=limit + 1)),
                    ("a continuation with no message", frag(w.seq, m, False, True))):
        w.write(f, advance=bool(f))
    r = _none_before_good(ble, ble_dut, [tid], mark)
    req(r is None, f"a fragment that must be dropped delivered a message: {show(r.value if r else None)}")


@must("M-8.4-7")
def test_M_8_4_7_delivered_when_end_completes_length(ble_dut: Any, ble: Any, req: Req) -> None:
    w = RawWriter(ble)
    tid = ble.next_tid()
    m = encode(msg.read(tid, ble_dut.info_slot(), 0))
    mark = ble.mark()
    w.write(frag(w.seq, m[:1], start=True, total=len(m)))
    for i in range(1, len(m)):
        w.write(frag(w.seq, m[i:i + 1], end=i == len(m) - 1))
    r = ble.result(tid, 1.0, mark)
    req(r is not None and r.value[2] == msg.OK, f"a message in one-byte fragments was answered {show(r.value if r else None)}")


@must("M-8.4-8")
def test_M_8_4_8_mtu_247(ble_dut: Any, ble: Any, req: Req) -> None:
    req(ble.s.conn.mtu >= 247, f"ATT MTU exchange asking 247 ended at {ble.s.conn.mtu}")
    mark = len(ble.s.fragments)
    req.status(ble.ask(msg.describe), msg.OK, "DESCRIBE at ATT_MTU 247")
    sizes = [len(f) for _, f in ble.s.fragments[mark:]]
    total = len(ble_dut.describe_raw) + 3
    req(sizes and (max(sizes) == min(244, total) or len(sizes) == 1),
        f"at ATT_MTU 247 the DESCRIBE answer came in fragments of {sizes} bytes (244 each, but the last)")


@must("M-8.6-1")
def test_M_8_6_1_device_information_service(ble_dut: Any, ble: Any, req: Req) -> None:
    svcs = ble.s.conn.services()
    dis = svcs.get("180A")
    req(dis is not None, f"no Device Information service 0x180A; services: {list(svcs)}")
    info = ble_dut.info_slot()
    for uuid, attr, name in ((0x2A29, 0, "vendor"), (0x2A24, 1, "product"), (0x2A25, 2, "serial"),
                             (0x2A26, 3, "firmware_version"), (0x2A27, 4, "hardware_version")):
        c = [p for u, _, p in dis if u == uuid_str(uuid)]
        req(c and c[0] & 0x02, f"Device Information has no readable characteristic 0x{uuid:04X} ({name})")
        raw = ble.s.conn.read(uuid, 0x180A)
        want = ble.value(msg.read, info, attr)
        req(raw.decode("utf-8", "replace") == want, f"0x{uuid:04X} reads {raw!r}, device_info.{name} is {want!r}")


@must("M-8.6-2")
def test_M_8_6_2_environmental_sensing(ble_dut: Any, ble: Any, req: Req) -> None:
    d = ble_dut.declaration
    if d.device_class != reg.CLASS_AMBIENT:
        pytest.skip(f"applies to ambient sensors (class 2); this accessory is class {d.device_class}")
    svcs = ble.s.conn.services()
    ess = svcs.get("181A")
    present = [c for c in d.caps if c.id in ESS and 0 in c.attrs]
    if present:
        req(ess is not None, f"no Environmental Sensing service 0x181A; services: {list(svcs)}")
    for c in present:
        uuid, n, signed, mul, lo, hi, unknown = ESS[c.id]
        props = [p for u, _, p in ess if u == uuid_str(uuid)]
        req(props and props[0] & 0x02, f"no readable characteristic 0x{uuid:04X} for {c.name}.value")
        for _ in range(3):  # a sensor value may move between the two reads
            v0 = ble.value(msg.read, c.slot, 0)
            st = ble.value(msg.read, c.slot, 1)
            raw = ble.s.conn.read(uuid, 0x181A)
            v1 = ble.value(msg.read, c.slot, 0)
            req(len(raw) == n, f"0x{uuid:04X} holds {len(raw)} bytes, must be {n}")
            got = int.from_bytes(raw, "little", signed=signed)
            wants = {unknown} if st != 0 else {max(lo, min(hi, v * mul)) for v in (v0, v1)}
            if got in wants:
                break
        req(got in wants, f"0x{uuid:04X} reads {got}, expected {sorted(wants)} for {c.name}.value {v0}..{v1} (status {st})")


@must("M-8.6-3")
def test_M_8_6_3_no_pm25_characteristic(ble_dut: Any, ble: Any, req: Req) -> None:
    for svc, chars in ble.s.conn.services().items():
        req(not [u for u, _, _ in chars if u == "2BD6"], f"service {svc} exposes PM2.5 Concentration 0x2BD6, whose "
                                                          "mapping the registry has not verified")


@must("M-8.6-4")
def test_M_8_6_4_battery_service(ble_dut: Any, ble: Any, req: Req) -> None:
    power = ble_dut.declaration.find(reg.CAP_POWER)
    if power is None or reg.ATTR_POWER_BATTERY_PERCENT not in power.attrs:
        pytest.skip("applies to accessories whose power capability lists battery_percent; this one does not")
    bas = ble.s.conn.services().get("180F")
    req(bas is not None, "no Battery service 0x180F although power.battery_percent is listed")
    raw = ble.s.conn.read(0x2A19, 0x180F)
    req(len(raw) == 1 and raw[0] <= 100, f"Battery Level 0x2A19 reads {raw.hex()}, must be one byte 0..100")


@must("M-6.6-3")
def test_M_6_6_3_ble_session_ends_with_connection(ble_dut: Any, req: Req) -> None:
    info = ble_dut.info_slot()
    a = ble_dut.ble()
    req.status(a.ask(msg.hello), msg.OK, "HELLO")
    req.status(a.ask(msg.subscribe, info, reg.ATTR_DEVICE_INFO_HEALTH, 0, 1), msg.OK, "SUBSCRIBE health, max_s 1")
    mark = a.mark()
    a.wait(lambda: a.reports(mark), 1.0)
    ble_dut.drop_ble()
    b = ble_dut.ble()  # a new connection, the suite's standing one from now on
    # the old session's subscription must be gone: not found by UNSUBSCRIBE on the new
    # connection (had the session outlived its connection and been taken over by the new
    # one, the subscription would be found), and none of its REPORTs on the new connection
    req.status(b.ask(msg.unsubscribe, info, reg.ATTR_DEVICE_INFO_HEALTH), msg.NOT_FOUND,
               "UNSUBSCRIBE on the new connection (the old subscription must be gone)")
    reps = b.reports(0)
    req(not reps, f"{len(reps)} REPORT(s) of the previous connection's subscription on the new connection: the "
                  "session must end with the connection")


@must("M-8.3-3")
def test_M_8_3_3_no_notification_before_enabled(ble_dut: Any, req: Req) -> None:
    ble_dut.drop_ble()
    s = ble_dut.ble_connect(enable=False, label="BLE (notifications off)")
    try:
        stim = ble_dut.target.stimulus()
        if stim is not None:  # an event the accessory would notify at once
            stim.fire()
            time.sleep(0.35)
            stim.undo()
        time.sleep(0.05)
        req(not s.s.fragments, f"{len(s.s.fragments)} notification(s) on TX before the car enabled them: "
                               f"{s.s.fragments[0][1].hex(' ').upper() if s.s.fragments else ''}")
        s.s.enable()
        req.status(s.ask(msg.hello), msg.OK, "HELLO once notifications are on")
    finally:
        s.s.conn.disconnect()


@must("M-8.4-2")
def test_M_8_4_2_sequence_numbers(ble_dut: Any, fresh: Any, req: Req) -> None:
    for _ in range(16):  # until more than 64 fragments at ATT_MTU 23: the numbers wrap
        fresh.ask(msg.describe)
        if len(fresh.s.fragments) > 70:
            break
    seqs = [f[0] & 0x3F for _, f in fresh.s.fragments]
    req(seqs and seqs[0] == 0, f"the first fragment on a new connection has sequence number {seqs[:1]}, must be 0")
    bad = [(i, a, b) for i, (a, b) in enumerate(zip(seqs, seqs[1:])) if b != (a + 1) & 0x3F]
    req(not bad, f"sequence numbers must rise by 1 modulo 64 across messages: {bad[:3]} (fragment index, n, next)")
    req(len(seqs) > 64, f"only {len(seqs)} fragments: the wrap was not observed")


@must("M-8.4-1")
def test_M_8_4_1_fragment_size(ble_dut: Any, fresh: Any, req: Req) -> None:
    mark = 0  # everything so far on this connection went at ATT_MTU 23
    req.status(fresh.ask(msg.describe), msg.OK, "DESCRIBE at ATT_MTU 23")
    big = [f for _, f in fresh.s.fragments[mark:] if len(f) > 20]
    req(not big, f"fragments of {[len(f) for f in big]} bytes at ATT_MTU 23: at most 20")
    req(len(fresh.s.fragments[mark:]) > 1, "a DESCRIBE answer in one 20-byte fragment?")
    fresh.s.conn.exchange_mtu(247)
    mark = len(fresh.s.fragments)
    req.status(fresh.ask(msg.describe), msg.OK, "DESCRIBE at ATT_MTU 247")
    big = [f for _, f in fresh.s.fragments[mark:] if len(f) > 244]
    req(not big, f"fragments of {[len(f) for f in big]} bytes at ATT_MTU 247: at most 244")
    _check_fragments(req, ble_dut.ble_sessions)


@must("M-8.4-3")
def test_M_8_4_3_messages_not_interleaved(ble_dut: Any, req: Req) -> None:
    sessions = [s for s in ble_dut.ble_sessions if s.s.fragments]
    req(sessions, "no BLE traffic observed")
    for s in sessions:
        open_ = False
        for t, f in s.s.fragments:
            if f[0] & START:
                req(not open_, f"{s.label}: a new message started before the previous one ended")
                open_ = not f[0] & END
            else:
                req(open_, f"{s.label}: a continuation fragment outside a message")
                if f[0] & END:
                    open_ = False
        req(s.s.rx.dropped == 0, f"{s.label}: {s.s.rx.dropped} notification(s) did not fit the message in progress")
