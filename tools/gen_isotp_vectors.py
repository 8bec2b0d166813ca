#!/usr/bin/env python3
"""Writes spec/vectors/isotp.json: golden ISO 15765-2 (ISO-TP) frame sequences.

The frames of the sender cases are recorded from can-isotp, an implementation we did
not write, never produced by our channel: two can-isotp stacks talk to each other over
a python-can virtual bus while a third Bus on the same channel (the monitor) records
every frame in bus order. The tests then check that our channel sends and accepts
exactly these frames. can-isotp is deterministic here (same payload and parameters,
same frames); only the timing between frames varies, and it is not recorded.

The receiver cases (malformed or out-of-order input and what a receiver must do with
it) are written by hand in this file from the ISO 15765-2 PCI rules and spec 7.4.

Run: .venv/bin/python tools/gen_isotp_vectors.py           (then review the diff)
     .venv/bin/python tools/gen_isotp_vectors.py --check   (exit 1 if the file is stale)
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import can
import isotp  # can-isotp

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "spec" / "vectors" / "isotp.json"

ACC = 0x80           # accessory: the sender in every case
CAR = 0x00           # car: the receiver
BROADCAST = 0xFF     # TA of functional (SF-only) requests
PRIO_NORMAL = 6
PRIO_EVENT = 3
MAX_LEN = 4095       # classic CAN ISO-TP limit (12-bit FF_DL)

TIMEOUT_S = 30.0     # per recorded case; a 4095-byte message takes well under 1 s
QUIET_S = 0.02       # after the message is complete, this long without a frame ends it

_channels = itertools.count()


class Pattern(NamedTuple):
    """A payload given by formula: byte i is (i*mul + add) mod 256."""

    len: int
    mul: int = 1
    add: int = 0

    def expand(self) -> bytes:
        return bytes((i * self.mul + self.add) & 0xFF for i in range(self.len))


def pattern(n: int, mul: int = 1, add: int = 0) -> bytes:
    return Pattern(n, mul, add).expand()


class Frame(NamedTuple):
    can_id: int
    data: bytes


@dataclass(frozen=True)
class SenderCase:
    """One message sent by a can-isotp sender (ACC) to a can-isotp receiver.

    bs and stmin are the receiver's flow-control parameters (the sender asks for none);
    pad is the padding byte both sides use, None for no padding. A payload given as a
    Pattern is stored as the formula with frame counts and the first and last frames.
    """

    name: str
    note: str
    payload: bytes | Pattern
    bs: int = 0
    stmin: int = 0
    pad: int | None = 0xCC
    prio: int = PRIO_NORMAL
    functional: bool = False

    @property
    def data(self) -> bytes:
        return self.payload.expand() if isinstance(self.payload, Pattern) else self.payload

    @property
    def ta(self) -> int:
        return BROADCAST if self.functional else CAR

    @property
    def sender_id(self) -> int:
        pf = 0xDB if self.functional else 0xDA
        return (self.prio << 26) | (pf << 16) | (self.ta << 8) | ACC

    @property
    def receiver_id(self) -> int | None:
        """Where the receiver's FCs go; None for functional requests (SF only, no FC)."""
        return None if self.functional else (self.prio << 26) | (0xDA << 16) | (ACC << 8) | self.ta


SENDER_CASES = [
    SenderCase("sf_1", "single frame, 1 byte: PCI 0x01, padded to 8 bytes", pattern(1, add=0x42)),
    SenderCase("sf_7", "single frame, 7 bytes: the largest classic CAN SF, no padding needed",
               pattern(7, add=0xA0)),
    SenderCase("sf_7_unpadded", "same frame with padding off", pattern(7, add=0xA0), pad=None),
    SenderCase("sf_event_prio3", "event channel: priority 3, id 0x0CDA<TA><SA>",
               bytes.fromhex("0b020100"), prio=PRIO_EVENT),
    SenderCase("sf_functional", "functional addressing, 0x18DB<TA><SA> with TA 0xFF; SF only",
               bytes.fromhex("0301"), functional=True),
    SenderCase("ff_8", "smallest multi-frame message: FF carries 6 bytes, one CF the last 2",
               pattern(8, add=0x10)),
    SenderCase("ff_20", "FF + FC(CTS, BS 0, STmin 0) + 2 CFs", pattern(20, add=0x30)),
    SenderCase("ff_20_unpadded", "padding off: FC is 3 bytes, a full last CF stays 8",
               pattern(20, add=0x30), pad=None),
    SenderCase("ff_100", "14 CFs after one FC (BS 0 = no further FC); last CF carries 3 bytes",
               pattern(100, 3, 1)),
    SenderCase("ff_100_bs2", "BS 2: an FC after the FF and after every 2nd CF except the last; 7 FCs",
               pattern(100, 3, 1), bs=2),
    SenderCase("ff_100_stmin5", "STmin 5 ms: the sender leaves at least 5 ms between CFs",
               pattern(100, 3, 1), stmin=5),
    SenderCase("ff_120_sn_wrap", "17 CFs: SN runs 1..15, wraps to 0, then 1", pattern(120)),
    SenderCase("ff_4095", "largest classic CAN message: FF_DL 0xFFF, 585 CFs, last SN 9 carrying 1 byte",
               Pattern(MAX_LEN, 1, 0)),
    SenderCase("ff_4095_bs8_unpadded",
               "BS 8, padding off: 74 FCs (after the FF and after every 8th CF but the last)",
               Pattern(MAX_LEN, 7, 0), bs=8, pad=None),
]

# Written by hand: frames fed into our receiver (rx_max 4095, bs 0, stmin 0, pad CC unless
# given), the FCs it must send, the messages it must deliver and its drop/abort counters.
RECEIVER_CASES: list[dict[str, Any]] = [
    {"name": "ff_overflow", "note": "FF_DL 100 > rx_max 64: the receiver answers FC OVFLW (FS 2) and drops the message",
     "rx_max": 64, "in": ["1064000102030405"], "out": ["320000CCCCCCCCCC"], "messages": [], "dropped": 1},
    {"name": "sf_dl_0", "note": "SF_DL 0 is the CAN FD escape: ignored on classic CAN",
     "in": ["00CCCCCCCCCCCCCC"], "out": [], "messages": [], "dropped": 1},
    {"name": "sf_dl_8", "note": "SF_DL 8 cannot fit a classic frame: ignored",
     "in": ["0801020304050607"], "out": [], "messages": [], "dropped": 1},
    {"name": "sf_short", "note": "unpadded SF shorter than its SF_DL: ignored",
     "in": ["05010203"], "out": [], "messages": [], "dropped": 1},
    {"name": "sf_unpadded", "note": "unpadded frames are accepted",
     "in": ["03010203"], "out": [], "messages": ["010203"], "dropped": 0},
    {"name": "ff_dl_7", "note": "FF_DL below 8 is invalid: ignored, no FC",
     "in": ["1007010203040506"], "out": [], "messages": [], "dropped": 1},
    {"name": "ff_escape", "note": "FF_DL 0 (the 32-bit escape) is CAN FD only here: ignored, no FC",
     "in": ["1000000000140102"], "out": [], "messages": [], "dropped": 1},
    {"name": "ff_short", "note": "an FF must fill the classic frame (8 bytes)",
     "in": ["1014303132"], "out": [], "messages": [], "dropped": 1},
    {"name": "cf_unexpected", "note": "a CF with no reception in progress: ignored",
     "in": ["2101020304050607"], "out": [], "messages": [], "dropped": 1},
    {"name": "fc_unexpected", "note": "an FC while not sending: ignored",
     "in": ["300000CCCCCCCCCC"], "out": [], "messages": [], "dropped": 1},
    {"name": "sn_mismatch", "note": "CF with SN 2 where 1 is due: the reception is aborted; the next CF is then unexpected",
     "in": ["1014303132333435", "223D3E3F40414243", "21363738393A3B3C"], "out": ["300000CCCCCCCCCC"],
     "messages": [], "dropped": 2, "aborted": 1},
    {"name": "sf_preempts", "note": "an SF during a reception ends it (ISO 15765-2) and is delivered",
     "in": ["1014303132333435", "21363738393A3B3C", "03AABBCCCCCCCCCC", "223D3E3F40414243"],
     "out": ["300000CCCCCCCCCC"], "messages": ["AABBCC"], "dropped": 1, "aborted": 1},
    {"name": "ff_preempts", "note": "a new FF during a reception restarts it",
     "in": ["1014303132333435", "21363738393A3B3C", "1008101112131415", "211617CCCCCCCCCC"],
     "out": ["300000CCCCCCCCCC", "300000CCCCCCCCCC"], "messages": ["1011121314151617"], "dropped": 0, "aborted": 1},
    {"name": "cf_short", "note": "unpadded CF shorter than the bytes still due: ignored, reception goes on",
     "in": ["1014303132333435", "21363738", "21363738393A3B3C", "223D3E3F40414243"],
     "out": ["300000CCCCCCCCCC"], "messages": ["303132333435363738393A3B3C3D3E3F40414243"], "dropped": 1},
    {"name": "receiver_bs_stmin", "note": "our FC carries our BS and STmin; after BS CFs another FC",
     "bs": 1, "stmin": 241,
     "in": ["1014303132333435", "21363738393A3B3C", "223D3E3F40414243"],
     "out": ["3001F1CCCCCCCCCC", "3001F1CCCCCCCCCC"], "messages": ["303132333435363738393A3B3C3D3E3F40414243"],
     "dropped": 0},
]

DESCRIPTION = (
    "ISO 15765-2 (ISO-TP) golden frames for CabinLink on classic CAN, normal fixed addressing "
    "(spec section 7.4). Accessory SA 0x80 sends to car TA 0x00: sender frames on 0x18DA0080, "
    "the receiver's flow control on 0x18DA8000. 'frames' lists every frame on the bus in order. "
    "bs/stmin are the receiver's flow-control parameters; pad is the byte both sides pad frames "
    "to 8 bytes with (null: no padding). Long cases give payload_pattern "
    "(byte i = (i*mul + add) mod 256), the frame counts and the first and last frames. "
    "receiver_cases feed frames into a receiver (rx_max 4095, bs 0, stmin 0, pad CC unless given) "
    "and list the FCs it sends, the messages it delivers and how many frames it drops."
)


class RecordError(RuntimeError):
    pass


def sender_bytes(frames: list[Frame], sender_id: int) -> tuple[int | None, bytes]:
    """Reassembles the sender's SF/FF/CF frames: (declared length or None, bytes so far)."""
    total: int | None = None
    got = bytearray()
    for f in frames:
        if f.can_id != sender_id or not f.data:
            continue
        kind = f.data[0] >> 4
        if kind == 0:                                   # SF
            total = f.data[0] & 0x0F
            got[:] = f.data[1:1 + total]
        elif kind == 1 and len(f.data) >= 2:            # FF
            total = ((f.data[0] & 0x0F) << 8) | f.data[1]
            got[:] = f.data[2:]
        elif kind == 2 and total is not None:           # CF
            got += f.data[1:1 + total - len(got)]
    return total, bytes(got)


def _drain(mon: can.BusABC, frames: list[Frame], timeout: float) -> bool:
    """Moves the monitor's frames into `frames`; waits up to `timeout` for the first one."""
    msg = mon.recv(timeout=timeout)
    if msg is None:
        return False
    while msg is not None:
        frames.append(Frame(msg.arbitration_id, bytes(msg.data)))
        msg = mon.recv(timeout=0)
    return True


def record(case: SenderCase, timeout: float = TIMEOUT_S) -> list[Frame]:
    """Every frame on the bus while can-isotp sends case.data to can-isotp, in bus order."""
    deadline = time.monotonic() + timeout
    name = f"gen-isotp-vectors-{os.getpid()}-{next(_channels)}"
    tx_bus = can.Bus(interface="virtual", channel=name)
    rx_bus = can.Bus(interface="virtual", channel=name)
    mon = can.Bus(interface="virtual", channel=name)   # sees both sides' frames
    # Padding: tx_data_min_length 8 makes can-isotp pad every frame, FCs included.
    common: dict[str, Any] = {"tx_padding": case.pad, "max_frame_size": MAX_LEN,
                              "tx_data_min_length": 8 if case.pad is not None else None}

    def address(sa: int, ta: int) -> isotp.Address:
        return isotp.Address(isotp.AddressingMode.NormalFixed_29bits, source_address=sa, target_address=ta,
                             physical_id=(case.prio << 26) | 0xDA0000, functional_id=(case.prio << 26) | 0xDB0000)

    sender = isotp.CanStack(tx_bus, address=address(ACC, case.ta), params={**common, "blocksize": 8, "stmin": 0})
    receiver = isotp.CanStack(rx_bus, address=address(case.ta, ACC),
                              params={**common, "blocksize": case.bs, "stmin": case.stmin})
    frames: list[Frame] = []
    try:
        sender.start()
        receiver.start()
        sender.send(case.data, target_address_type=isotp.TargetAddressType.Functional if case.functional else None)
        got = receiver.recv(block=True, timeout=max(0.0, deadline - time.monotonic()))
        if got is None or bytes(got) != case.data:
            raise RecordError(f"{case.name}: can-isotp receiver got {None if got is None else len(got)} bytes,"
                              f" expected {len(case.data)}")
        # The monitor gets each frame in the same send() that hands it to the receiver, but
        # wait for it anyway: until the sender frames seen carry the whole payload...
        while sender_bytes(frames, case.sender_id)[1] != case.data:
            if time.monotonic() >= deadline:
                raise RecordError(f"{case.name}: monitor saw an incomplete message by the deadline")
            _drain(mon, frames, 0.01)
        while sender.transmitting():
            if time.monotonic() >= deadline:
                raise RecordError(f"{case.name}: can-isotp sender still busy at the deadline")
            time.sleep(0.001)
        # ...then for a quiet spell, so a stray frame after the message would be recorded too.
        while _drain(mon, frames, QUIET_S):
            if time.monotonic() >= deadline:
                raise RecordError(f"{case.name}: the bus never went quiet")
    finally:
        sender.stop()
        receiver.stop()
        for bus in (tx_bus, rx_bus, mon):
            bus.shutdown()
    return frames


def check_frames(case: SenderCase, frames: list[Frame]) -> None:
    """The recorded frames use the expected identifiers and carry exactly the payload."""
    for f in frames:
        want = case.receiver_id if f.data and f.data[0] >> 4 == 3 else case.sender_id
        if f.can_id != want:
            where = "no frame" if want is None else f"{want:08X}"
            raise RecordError(f"{case.name}: frame {f.data.hex().upper()} on {f.can_id:08X}, expected {where}")
    total, got = sender_bytes(frames, case.sender_id)
    if total != len(case.data) or got != case.data:
        raise RecordError(f"{case.name}: the sender frames do not reassemble to the payload")


def frame_json(case: SenderCase, f: Frame) -> dict[str, str]:
    side = "sender" if f.can_id == case.sender_id else "receiver"
    return {"from": side, "id": f"{f.can_id:08X}", "data": f.data.hex().upper()}


def case_json(case: SenderCase, frames: list[Frame]) -> dict[str, Any]:
    head: dict[str, Any] = {"name": case.name, "note": case.note}
    if isinstance(case.payload, Pattern):
        head["payload_pattern"] = case.payload._asdict()
    else:
        head["payload"] = case.payload.hex().upper()
    rid = case.receiver_id
    head.update({"bs": case.bs, "stmin": case.stmin, "pad": None if case.pad is None else f"{case.pad:02X}",
                 "sender_id": f"{case.sender_id:08X}", "receiver_id": None if rid is None else f"{rid:08X}"})
    out = [frame_json(case, f) for f in frames]
    if isinstance(case.payload, Pattern):
        head["frame_count"] = {"sender": sum(1 for f in frames if f.can_id == case.sender_id),
                               "receiver": sum(1 for f in frames if f.can_id == rid)}
        head["frames_head"] = out[:5]
        head["frames_tail"] = out[-3:]
    else:
        head["frames"] = out
    return head


def build() -> dict[str, Any]:
    cases = []
    for case in SENDER_CASES:
        frames = record(case)
        check_frames(case, frames)
        cases.append(case_json(case, frames))
    return {
        "description": DESCRIPTION,
        "source": f"sender cases recorded from can-isotp {version('can-isotp')} (an independent implementation)"
                  " talking to itself over a python-can virtual bus; hand-checked against the ISO 15765-2 PCI rules",
        "cases": cases,
        "receiver_cases": RECEIVER_CASES,
    }


def render(v: Any, indent: int = 0) -> str:
    """JSON with one space per level; a list or object of scalars only stays on one line."""
    if isinstance(v, dict):
        items = [f"{json.dumps(k)}: {render(x, indent + 1)}" for k, x in v.items()]
        open_, close = "{", "}"
    elif isinstance(v, list):
        items = [render(x, indent + 1) for x in v]
        open_, close = "[", "]"
    else:
        return json.dumps(v)
    values = v.values() if isinstance(v, dict) else v
    if not any(isinstance(x, (dict, list)) for x in values):
        return open_ + ", ".join(items) + close
    pad = " " * (indent + 1)
    return open_ + "\n" + ",\n".join(pad + s for s in items) + "\n" + " " * indent + close


def write_atomic(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def first_difference(want: str, have: str) -> str:
    a, b = want.splitlines(), have.splitlines()
    for i, (x, y) in enumerate(zip(a, b), 1):
        if x != y:
            return f"line {i}:\n  generated: {x}\n  committed: {y}"
    n = min(len(a), len(b)) + 1
    if len(a) != len(b):
        return f"line {n}: the {'committed' if len(a) > len(b) else 'generated'} text ends first"
    return "line endings or the final newline differ"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help=f"regenerate in memory and exit 1 if {OUT.relative_to(ROOT)} differs")
    args = ap.parse_args(argv)
    try:
        text = render(build()) + "\n"
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rel = OUT.relative_to(ROOT)
    if args.check:
        try:
            have = OUT.read_text(encoding="utf-8")
        except FileNotFoundError:
            print(f"{rel}: missing", file=sys.stderr)
            return 1
        if have != text:
            print(f"{rel} is stale, first difference at {first_difference(text, have)}", file=sys.stderr)
            return 1
        print(f"{rel} is up to date")
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(OUT, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
