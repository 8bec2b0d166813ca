"""Our ISO-TP channel against can-isotp, an implementation we did not write.

Both stacks share a python-can virtual bus (one Bus object per side, plus a
monitor that sees every frame). can-isotp runs its own threads; our side is
driven the way firmware drives it: a pump loop on the real clock that feeds
frames to on_frame() and calls poll(), with a deadline. Normal fixed 29-bit
addressing: the accessory (SA 0x80) talks to the car (0x00).

The last test is a hypothesis fuzz of our receiver: arbitrary frame sequences
never raise, never grow memory beyond rx_max, and the counters agree with the
independent model in tests/mp/test_isotp_fuzz.py.
"""
from __future__ import annotations

import itertools
import time

import can
import isotp  # can-isotp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cabinlink.clock import Clock
from cabinlink.isotp import Channel, phys_id, stmin_ms
from test_isotp_fuzz import GAP, check

ACC = 0x80
CAR = 0x00
_names = itertools.count()


def pattern(n: int) -> bytes:
    return bytes((i * 31 + 7) & 0xFF for i in range(n))


class Ours:
    """Our Channel on its own Bus, pumped like firmware would pump it."""

    def __init__(self, bus: can.BusABC, prio: int = 6, **kw) -> None:
        self.bus = bus
        self.clock = Clock()
        self.rx_id = phys_id(prio, ACC, CAR)
        self.messages: list[bytes] = []
        self.ch = Channel(self.clock, self._send, phys_id(prio, CAR, ACC),
                          on_message=lambda p: self.messages.append(bytes(p)), **kw)

    def _send(self, can_id: int, data) -> bool:
        self.bus.send(can.Message(arbitration_id=can_id, data=bytes(data), is_extended_id=True))
        return True

    def pump(self, done, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.bus.recv(timeout=0.0005)
            while msg is not None:
                if msg.is_extended_id and msg.arbitration_id == self.rx_id:
                    self.ch.on_frame(msg.data)
                msg = self.bus.recv(timeout=0)
            self.ch.poll()
            if done():
                return True
        return False


class Link:
    def __init__(self, their_params: dict, prio: int = 6, **our_kw) -> None:
        name = "isotp-interop-%d" % next(_names)
        self.our_bus = can.Bus(interface="virtual", channel=name)
        self.their_bus = can.Bus(interface="virtual", channel=name)
        self.mon = can.Bus(interface="virtual", channel=name)
        self.ours = Ours(self.our_bus, prio=prio, **our_kw)
        self.errors: list[Exception] = []
        addr = isotp.Address(isotp.AddressingMode.NormalFixed_29bits, source_address=CAR,
                             target_address=ACC, physical_id=(prio << 26) | 0xDA0000,
                             functional_id=(prio << 26) | 0xDB0000)
        params = {"max_frame_size": 4095, "rx_flowcontrol_timeout": 1000,
                  "rx_consecutive_frame_timeout": 1000}
        params.update(their_params)
        self.theirs = isotp.CanStack(self.their_bus, address=addr, params=params,
                                     error_handler=self.errors.append)
        self.theirs.start()

    def frames(self) -> list[can.Message]:
        # The virtual bus hands a frame to each other bus in turn, so the receiver under test
        # may finish before the monitor has the last frame: read until 50 ms without one.
        out = []
        while (m := self.mon.recv(timeout=0.05)) is not None:
            out.append(m)
        return out

    def close(self) -> None:
        self.theirs.stop()
        for b in (self.our_bus, self.their_bus, self.mon):
            b.shutdown()


@pytest.fixture
def link_factory():
    made: list[Link] = []

    def make(*a, **kw) -> Link:
        lk = Link(*a, **kw)
        made.append(lk)
        return lk

    yield make
    for lk in made:
        lk.close()


def their_padding(pad: bool) -> dict:
    return {"tx_padding": 0xCC, "tx_data_min_length": 8} if pad else {"tx_padding": None}


SIZES = [7, 8, 62, 500, 4095]
# (block size, STmin) that the receiving side asks for in its FCs
FLOW = [(0, 0), (8, 0), (3, 2)]


def _flow_id(f):
    return "bs%d-st%d" % f


@pytest.mark.parametrize("pad", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("flow", FLOW, ids=_flow_id)
@pytest.mark.parametrize("size", SIZES)
def test_our_sender_to_can_isotp_receiver(link_factory, size, flow, pad):
    bs, stmin = flow
    if size == 4095 and stmin:
        stmin = 1  # keeps the run short; pacing is still checked
    lk = link_factory(dict(their_padding(pad), blocksize=bs, stmin=stmin),
                      pad=0xCC if pad else None)
    payload = pattern(size)
    assert lk.ours.ch.send(payload)
    assert lk.ours.pump(lambda: lk.theirs.available() or lk.errors), lk.ours.ch.last_error
    assert lk.theirs.recv() == payload
    assert lk.errors == []
    ch = lk.ours.ch
    assert lk.ours.pump(lambda: not ch.tx_busy, 2)
    assert ch.tx_ok == 1 and ch.tx_failed == 0 and ch.rx_dropped == 0

    frames = lk.frames()
    ours = [m for m in frames if m.arbitration_id == 0x18DA0080]
    fcs = [m for m in frames if m.arbitration_id == 0x18DA8000]
    for m in ours:
        assert m.is_extended_id and (m.dlc == 8 if pad else m.dlc <= 8)
    if size <= 7:
        assert len(ours) == 1 and fcs == []
        return
    n_cf = -(-(size - 6) // 7)
    assert len(ours) == 1 + n_cf
    assert len(fcs) == (1 if bs == 0 else 1 + (n_cf - 1) // bs)
    assert all(bytes(m.data[:3]) == bytes([0x30, bs, stmin]) for m in fcs)
    if stmin and n_cf > 1:
        cf_t = [m.timestamp for m in ours[1:]]
        gaps = [b - a for a, b in zip(cf_t, cf_t[1:])]
        # bus timestamps are taken a little after our tick check: allow 0.3 ms
        assert min(gaps) >= stmin_ms(stmin) / 1000.0 - 3e-4, min(gaps)


@pytest.mark.parametrize("pad", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("flow", FLOW, ids=_flow_id)
@pytest.mark.parametrize("size", SIZES)
def test_can_isotp_sender_to_our_receiver(link_factory, size, flow, pad):
    bs, stmin = flow
    if size == 4095 and stmin:
        stmin = 1
    lk = link_factory(their_padding(pad), bs=bs, stmin=stmin, pad=0xCC if pad else None)
    payload = pattern(size)
    lk.theirs.send(payload)
    ch = lk.ours.ch
    assert lk.ours.pump(lambda: lk.ours.messages or lk.errors), (ch.last_error, lk.errors)
    assert lk.ours.messages == [payload]
    assert lk.errors == []
    assert ch.rx_ok == 1 and ch.rx_dropped == 0 and ch.rx_timeouts == 0 and not ch.rx_busy

    frames = lk.frames()
    theirs = [m for m in frames if m.arbitration_id == 0x18DA8000]
    fcs = [m for m in frames if m.arbitration_id == 0x18DA0080]
    # can-isotp's last frame is exactly as short as its data when unpadded
    last = 1 + size if size <= 7 else 2 + (size - 7) % 7
    assert theirs[-1].dlc == (8 if pad else last)
    if size > 7:
        n_cf = -(-(size - 6) // 7)
        assert len(fcs) == (1 if bs == 0 else 1 + (n_cf - 1) // bs)
        for m in fcs:
            assert bytes(m.data[:3]) == bytes([0x30, bs, stmin])
            assert m.dlc == (8 if pad else 3)
        if stmin and n_cf > 1:
            # can-isotp understood our STmin (its own timer jitters: compare the mean)
            cf_t = [m.timestamp for m in theirs[1:]]
            assert (cf_t[-1] - cf_t[0]) / (len(cf_t) - 1) >= stmin / 1000.0 * 0.9


def test_both_directions_at_once_on_the_event_priority(link_factory):
    lk = link_factory({"tx_padding": 0xCC, "tx_data_min_length": 8, "blocksize": 4, "stmin": 1},
                      prio=3, bs=5, stmin=1)
    up = pattern(300)
    down = bytes(reversed(pattern(200)))
    lk.theirs.send(down)
    assert lk.ours.ch.send(up)
    assert lk.ours.pump(lambda: lk.ours.messages and lk.theirs.available())
    assert lk.ours.messages == [down]
    assert lk.theirs.recv() == up
    ids = {m.arbitration_id for m in lk.frames()}
    assert ids == {0x0CDA0080, 0x0CDA8000}


def test_can_isotp_overflow_fc_aborts_our_sender(link_factory):
    lk = link_factory({"max_frame_size": 100, "tx_padding": 0xCC, "tx_data_min_length": 8})
    ch = lk.ours.ch
    assert ch.send(pattern(200))
    assert lk.ours.pump(lambda: not ch.tx_busy, 5)
    assert ch.tx_failed == 1 and ch.last_error == "overflow"
    fcs = [m for m in lk.frames() if m.arbitration_id == 0x18DA8000]
    assert [bytes(m.data[:1]) for m in fcs] == [b"\x32"]


def test_our_overflow_fc_stops_can_isotp(link_factory):
    lk = link_factory({"tx_padding": 0xCC, "tx_data_min_length": 8}, rx_max=64)
    lk.theirs.send(pattern(65))
    deadline = time.monotonic() + 5
    while not lk.errors and time.monotonic() < deadline:
        lk.ours.pump(lambda: False, 0.01)
    assert lk.errors, "can-isotp did not report our FC(OVFLW)"
    assert not lk.theirs.transmitting()
    assert lk.ours.messages == [] and lk.ours.ch.rx_dropped == 1
    fcs = [m for m in lk.frames() if m.arbitration_id == 0x18DA0080]
    assert [bytes(m.data) for m in fcs] == [bytes.fromhex("320000CCCCCCCCCC")]
    # and the connection still works afterwards
    lk.theirs.send(pattern(64))
    assert lk.ours.pump(lambda: lk.ours.messages)
    assert lk.ours.messages == [pattern(64)]


def test_can_isotp_stops_mid_message_our_n_cr_fires(link_factory):
    lk = link_factory({"tx_padding": 0xCC, "tx_data_min_length": 8}, n_cr=100)
    ch = lk.ours.ch
    # An FF only, as if the sender died: our receiver gives up after N_Cr.
    lk.their_bus.send(can.Message(arbitration_id=0x18DA8000, is_extended_id=True,
                                  data=bytes.fromhex("1014303132333435")))
    assert lk.ours.pump(lambda: ch.rx_timeouts == 1, 3)
    assert not ch.rx_busy and ch.last_error == "N_Cr"


# ---- fuzz ----------------------------------------------------------------------

def _sf(ln, body):
    return bytes([ln]) + body


def _ff(ln, body):
    return bytes([0x10 | (ln >> 8), ln & 0xFF]) + body


def _cf(sn, body):
    return bytes([0x20 | sn]) + body


def _fc(fs, body):
    return bytes([0x30 | fs]) + body


FRAME = st.one_of(
    st.binary(max_size=10),
    st.builds(_sf, st.integers(0, 15), st.binary(max_size=8)),
    st.builds(_ff, st.one_of(st.integers(0, 40), st.integers(0, 4095)), st.binary(max_size=7)),
    st.builds(_cf, st.integers(0, 15), st.binary(max_size=8)),
    st.builds(_cf, st.integers(1, 3), st.binary(min_size=7, max_size=7)),
    st.builds(_fc, st.integers(0, 15), st.binary(max_size=7)),
    st.just(GAP),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=st.lists(FRAME, max_size=60),
       rx_max=st.one_of(st.integers(7, 64), st.just(4095)),
       bs=st.integers(0, 3),
       pad=st.sampled_from([0xCC, None]))
def test_fuzz_receiver_never_raises_and_accounts_for_every_frame(seq, rx_max, bs, pad):
    # check() feeds the channel and the model, and asserts: no exception,
    # identical counters, messages and FCs, one rx buffer of exactly rx_max.
    ch = check(seq, rx_max, bs, pad)
    assert ch.rx_frames == sum(1 for f in seq if f is not GAP)
    assert ch.rx_dropped <= ch.rx_frames
