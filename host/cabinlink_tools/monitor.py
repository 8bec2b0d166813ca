"""Readable CabinLink traffic from raw CAN frames (a passive listener).

:class:`BusDecoder` takes every frame seen on a bus (a python-can ``Message``, from a live
bus or a candump log) and returns lines such as::

    0x93 claims address (NAME 80FEC2000000A5A5)
    0x93 → all  HEARTBEAT uptime 12 s, health nominal, mode operational
    0x00 → 0x93 READ tid 4 slot 1 attr 0
    0x93 → 0x00 RESULT tid 4 OK 2150

Multi-frame ISO-TP messages are reassembled per connection (the whole 29-bit id, so the
event channel is separate) without ever transmitting: flow-control frames are only seen.
"""
from __future__ import annotations

from typing import Any

from cabinlink import claim, isotp, msg
from cabinlink.clock import Clock
from cabinlink.codec import ProtocolError

from . import catalog

_TYPES = {v: k for k, v in vars(msg).items() if k.isupper() and isinstance(v, int) and k in (
    "HEARTBEAT", "HELLO", "DESCRIBE", "READ", "WRITE", "SUBSCRIBE", "UNSUBSCRIBE", "INVOKE",
    "RESULT", "REPORT", "EVENT", "SECURED")}
_HEALTH = ("nominal", "advisory", "caution", "warning")
_MODE = ("operational", "initializing", "safe", "update")


def describe_message(data: bytes) -> str:
    """One CabinLink message as text (raw hex when it does not decode)."""
    try:
        m = msg.parse(data)
    except ProtocolError as e:
        return f"undecodable ({e}): {data.hex()}"
    t = m[0]
    name = _TYPES.get(t, f"type{t}")
    if t == msg.HEARTBEAT and len(m) >= 4:
        h, mo = m[2], m[3]
        return (f"HEARTBEAT uptime {m[1]} s, health {_HEALTH[h] if h < 4 else h}, "
                f"mode {_MODE[mo] if mo < 4 else mo}")
    if t == msg.RESULT and len(m) >= 3:
        value = "" if len(m) < 4 else " " + _short(m[3])
        return f"RESULT tid {m[1]} {catalog.status_name(m[2])}{value}"
    if t == msg.DESCRIBE:
        return f"DESCRIBE tid {m[1]}"
    fields = {msg.READ: ("slot", "attr"), msg.WRITE: ("slot", "attr", "value"),
              msg.SUBSCRIBE: ("slot", "attr", "min_ms", "max_s", "threshold"),
              msg.UNSUBSCRIBE: ("slot", "attr"), msg.INVOKE: ("slot", "cmd", "args"),
              msg.HELLO: ("major", "minor"), msg.REPORT: ("slot", "attr", "value"),
              msg.EVENT: ("slot", "event", "data")}.get(t)
    if fields is None:
        return f"{name} {_short(m[1:])}"
    rest = m[2:] if msg.is_request(t) else m[1:]
    head = f"{name} tid {m[1]} " if msg.is_request(t) else f"{name} "
    return head + " ".join(f"{k} {_short(v)}" for k, v in zip(fields, rest))


def _short(v: Any, limit: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _addr(a: int) -> str:
    return "all" if a == claim.GLOBAL else f"0x{a:02X}"


class BusDecoder:
    """Feed frames with :meth:`feed`; each returns the lines that frame completes."""

    def __init__(self, clock: Any = None) -> None:
        self.clock = clock or Clock()
        self._rx: dict[int, isotp.Channel] = {}
        self._out: list[str] = []

    def _channel(self, can_id: int) -> isotp.Channel:
        ch = self._rx.get(can_id)
        if ch is None:
            p = isotp.parse_id(can_id)
            assert p is not None
            prio, kind, ta, sa = p
            label = f"{_addr(sa)} → {_addr(ta)}" + (" [event channel]" if prio == isotp.PRIO_EVENT else "")
            # A listener: flow control is the receiver's to send, so ours goes nowhere.
            ch = isotp.Channel(self.clock, lambda i, d: True, isotp.phys_id(prio, sa, ta),
                               on_message=lambda payload, lb=label: self._out.append(
                                   f"{lb}  {describe_message(bytes(payload))}"))
            self._rx[can_id] = ch
        return ch

    def feed(self, can_id: int, data: bytes, extended: bool = True) -> list[str]:
        self._out = []
        if not extended:
            return [f"11-bit frame 0x{can_id:03X} {data.hex()} (not CabinLink)"]
        pf = (can_id >> 16) & 0xFF
        sa = can_id & 0xFF
        if pf == 0xEE and len(data) >= 8:
            name = claim.name_of(data)
            if sa == claim.NULL:
                return [f"cannot claim (NAME {name:016X})"]
            return [f"{_addr(sa)} claims address (NAME {name:016X})"]
        if pf == 0xEA:
            return [f"{_addr(sa)} requests address claims from {_addr((can_id >> 8) & 0xFF)}"]
        p = isotp.parse_id(can_id)
        if p is None:
            return [f"frame 0x{can_id:08X} {data.hex()} (not CabinLink)"]
        prio, kind, ta, sa = p
        if data and data[0] >> 4 == 3:
            return []  # flow control: transport detail
        if kind == isotp.KIND_FUNC:
            n = data[0] if data else 0
            if data and 0 < n <= 7 and len(data) > n:
                return [f"{_addr(sa)} → {_addr(ta)}  {describe_message(bytes(data[1:1 + n]))}"]
            return [f"{_addr(sa)} → {_addr(ta)}  bad functional frame {data.hex()}"]
        self._channel(can_id).on_frame(data)
        return self._out
