"""Property and fuzz tests on CPython (hypothesis), cross-checked with cbor2.

Bad input must only ever raise the core's ProtocolError (codec) or nothing at all (node,
link, BLE reassembly), and valid values must survive a trip through our codec and cbor2.
"""
from __future__ import annotations

import sys

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, "tests/mp")
from fakecan import FakeBus  # noqa: E402

from cabinlink import claim, msg  # noqa: E402
from cabinlink import registry as reg  # noqa: E402
from cabinlink.ble_frag import Reassembler  # noqa: E402
from cabinlink.can_link import CanLink  # noqa: E402
from cabinlink.clock import ManualClock  # noqa: E402
from cabinlink.codec import ProtocolError, decode, encode  # noqa: E402
from cabinlink.model import Capability, device_info  # noqa: E402
from cabinlink.node import Node  # noqa: E402

ints = st.integers(min_value=-(2**64), max_value=2**64 - 1)
scalars = st.one_of(ints, st.booleans(), st.none(), st.binary(max_size=40), st.text(max_size=20))
values = st.recursive(
    scalars,
    lambda kids: st.one_of(st.lists(kids, max_size=6),
                           st.dictionaries(st.one_of(ints, st.text(max_size=5)), kids, max_size=5)),
    max_leaves=25,
)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _depth(v: object) -> int:
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


@FAST
@given(values)
def test_round_trip_through_cbor2_both_ways(v: object) -> None:
    if _depth(v) > 8:
        return
    ours = encode(v)
    assert cbor2.loads(ours) == v
    assert decode(ours) == v
    assert decode(cbor2.dumps(v, canonical=True)) == v
    assert encode(decode(ours)) == ours  # deterministic: one encoding per value


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_decode_raises_only_protocol_error(b: bytes) -> None:
    try:
        decode(b)
    except ProtocolError:
        pass


@FAST
@given(values, st.integers(0, 200), st.integers(0, 255))
def test_mutated_encodings_raise_only_protocol_error(v: object, pos: int, byte: int) -> None:
    if _depth(v) > 8:
        return
    b = bytearray(encode(v))
    b[pos % len(b)] = byte
    for data in (bytes(b), bytes(b[: pos % len(b)])):
        try:
            decode(data)
        except ProtocolError:
            pass


def _node() -> tuple[Node, object]:
    clk = ManualClock()
    caps = [Capability(reg.CAP_TEMPERATURE, values={0: 2150, 2: 0}),
            device_info("v", "p", "s", "1", "a", lambda c, cmd, a: msg.OK)]
    node = Node(clk, reg.CLASS_AMBIENT, caps)

    class L:
        liveness_ms = 3000
        sent: list[bytes] = []

        def send(self, peer: int, data: bytes, urgent: bool = False) -> bool:
            self.sent.append(bytes(data))
            return True

    link = L()
    return node, link


@FAST
@given(st.lists(st.one_of(st.binary(max_size=30),
                          st.lists(st.one_of(st.integers(-5, 70), values), min_size=1, max_size=8)
                          .map(lambda m: encode(m) if _depth(m) <= 8 else b"")),
                max_size=20))
def test_node_never_raises_and_answers_only_requests(inputs: list[bytes]) -> None:
    node, link = _node()
    for data in inputs:
        node.receive(link, 1, data)
        node.poll()
    for out in link.sent:  # whatever it sent is a valid message
        assert msg.parse(out)[0] in (msg.RESULT, msg.REPORT, msg.EVENT)


@FAST
@given(st.lists(st.tuples(st.integers(0, 2**29 - 1), st.binary(max_size=8), st.integers(0, 3)),
                max_size=60))
def test_can_link_never_raises_on_arbitrary_frames(frames: list[tuple[int, bytes, int]]) -> None:
    clk = ManualClock()
    bus = FakeBus()
    node = Node(clk, 0, [device_info("v", "p", "s", "1", "a", lambda c, cmd, a: msg.OK)])
    link = CanLink(bus.controller(), node, clk, claim.make_name(3, 0xC0), 0x80)
    link.start()
    for _ in range(260):
        clk.advance(1)
        link.poll()
    for i, (can_id, data, flags) in enumerate(frames):
        if i % 3 == 0:
            can_id = (can_id & 0x1C00FF00) | 0xDA0000 | (0x80 << 8)  # aim some at us
        link.can.inject(can_id, data, flags)
        clk.advance(1)
        link.poll()


@FAST
@given(st.lists(st.binary(max_size=25), max_size=40))
def test_ble_reassembler_never_raises_or_overflows(frags: list[bytes]) -> None:
    got: list[bytes] = []
    r = Reassembler(lambda m: got.append(bytes(m)), max_len=256)
    for f in frags:
        r.feed(f)
    assert all(0 < len(m) <= 256 for m in got)
