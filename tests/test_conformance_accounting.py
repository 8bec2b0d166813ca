"""The conformance suite's accounting of its own requests (Dut.sent_by, Dut.pairs): which
requests the accessory could take, rebuilt from the frames on the bus, and which RESULT
answers which. Frames are made by hand here, so each rule is checked on its own; the
suite's runs against the simulation (tests/test_conformance.py) exercise it end to end."""
from __future__ import annotations

import threading
from types import SimpleNamespace

from cabinlink import claim, isotp, msg
from cabinlink.codec import encode

from cabinlink_tools.conformance.can_probe import Frame, Message
from cabinlink_tools.conformance.dut import CLAIM_PF, Dut

CAR, ACC = 0x00, 0x80
NAME = claim.make_name(0x1234, 0xC0, arbitrary=True)


def _dut(frames: list[Frame]) -> Dut:
    dut = Dut.__new__(Dut)
    dut.probe = SimpleNamespace(lock=threading.RLock(), frames=frames)  # type: ignore[assignment]
    dut.name, dut.first_addr = NAME, ACC
    return dut


def _session(messages: list[Message]) -> SimpleNamespace:
    return SimpleNamespace(transport="can", peer=SimpleNamespace(sa=CAR), born=0.0, retired=None,
                           messages=messages)


def _claim(t: float) -> Frame:
    return Frame(t, (6 << 26) | (CLAIM_PF << 16) | (0xFF << 8) | ACC, claim.name_bytes(NAME))


def _own(t: float, data: bytes) -> Frame:
    return Frame(t, isotp.phys_id(6, ACC, CAR), data, own=True)


def _fc(t: float, status: int = 0) -> Frame:
    return Frame(t, isotp.phys_id(6, CAR, ACC), bytes([0x30 | status, 0, 0]) + bytes(5))


def _sf(t: float, raw: bytes) -> Frame:
    return _own(t, bytes([len(raw)]) + raw + bytes(7 - len(raw)))


def _multi(raw: bytes) -> tuple[bytes, bytes]:
    assert 8 <= len(raw) <= 13
    ff = bytes([0x10, len(raw)]) + raw[:6]
    cf = bytes([0x21]) + raw[6:] + bytes(7 - len(raw[6:]))
    return ff, cf


def _result(t: float, tid: int) -> Message:
    v = [msg.RESULT, tid, msg.OK, 1]
    return Message(t, t, "can", ACC, CAR, encode(v), v, None, 6)


LONG_READ = encode(msg.read(300, 2, 70000))  # 10 bytes: a first frame and one consecutive frame


def test_a_request_split_over_frames_counts_when_its_last_frame_came_within_n_cr() -> None:
    ff, cf = _multi(LONG_READ)
    # the accessory's flow control came 0.9 s after the first frame (it was busy, within
    # the sender's N_Bs), the consecutive frame 0.15 s after that: more than N_Cr (1 s)
    # after the first frame, but the accessory's N_Cr runs from its flow control
    dut = _dut([_claim(0.0), _own(1.0, ff), _fc(1.9), _own(2.05, cf)])
    sent = dut.sent_by(_session([]))  # type: ignore[arg-type]
    assert [(x.tid, x.raw) for x in sent] == [(300, LONG_READ)]
    assert sent[0].t == 2.05


def test_a_consecutive_frame_late_or_out_of_sequence_is_not_a_request() -> None:
    ff, cf = _multi(LONG_READ)
    late = _dut([_claim(0.0), _own(1.0, ff), _fc(1.01), _own(2.2, cf)])
    assert late.sent_by(_session([])) == []  # type: ignore[arg-type]
    wrong_sn = _dut([_claim(0.0), _own(1.0, ff), _fc(1.01), _own(1.02, bytes([0x22]) + cf[1:])])
    assert wrong_sn.sent_by(_session([])) == []  # type: ignore[arg-type]
    overflow = _dut([_claim(0.0), _own(1.0, ff), _fc(1.01, status=2), _own(1.02, cf)])
    assert overflow.sent_by(_session([])) == []  # type: ignore[arg-type]


def test_frames_to_an_address_the_accessory_did_not_hold_are_not_requests() -> None:
    raw = encode(msg.hello(5))
    other = Frame(1.0, isotp.phys_id(6, 0x81, CAR), bytes([len(raw)]) + raw, own=True)
    dut = _dut([_claim(0.0), other, _sf(1.1, raw)])
    assert [x.t for x in dut.sent_by(_session([]))] == [1.1]  # type: ignore[arg-type]


def test_results_pair_with_the_latest_request_of_their_tid_and_strays_are_reported() -> None:
    r1, r2 = encode(msg.read(7, 1, 2)), encode(msg.read(8, 1, 2))
    dut = _dut([_claim(0.0), _sf(1.0, r1), _sf(1.2, r2)])
    a, b, stray = _result(1.01, 7), _result(1.21, 8), _result(1.3, 9)
    pairs, left, strays = dut.pairs(_session([a, b, stray]))  # type: ignore[arg-type]
    assert [(x.tid, m.value[1]) for x, m in pairs] == [(7, 7), (8, 8)]
    assert left == [] and strays == [stray]
    again = _result(1.4, 8)  # a second RESULT to one request is a stray too
    _, _, strays = dut.pairs(_session([a, b, again]))  # type: ignore[arg-type]
    assert strays == [again]
