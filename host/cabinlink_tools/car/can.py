"""The car's CAN side: any python-can bus, a candump recorder, bus load, and replay.

- :func:`open_can` opens ``INTERFACE:CHANNEL`` (``socketcan:can0``, ``pcan:PCAN_USBBUS1``,
  ``slcan:/dev/ttyACM0``, ``virtual:demo``, ``cabinlink:127.0.0.1:PORT`` - the simulated
  bus) with python-can and wraps it in :class:`CarController`, the ``machine.CAN``-shaped
  view the protocol core's ``CanLink`` drives. The controller counts every frame it sends
  and receives for the bus load, and can record them.
- :class:`CandumpRecorder` writes ``candump -L`` lines (``(1700000000.123456) can0
  18DA0080#0210C0``): received frames and the car's own, stamped with the car's clock at
  the moment the car handled them, in that order - so a replay sees what the car saw.
- :class:`Sniffer` decodes a whole bus passively (claims, heartbeats, ISO-TP in both
  directions between the car and the accessories) for a replay: the engine then turns the
  recorded traffic into the same events as live (see :mod:`.engine`, passive mode).
- :func:`read_candump` reads a log with python-can's own ``candump -L`` reader.

Contract: nothing here blocks: ``send`` queues with a zero timeout (a full queue is "try
again", as on a controller), ``recv`` never waits.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import can

from cabinlink import claim, isotp

from ..canbus import PythonCanController, open_bus
from ..sim.canbus import frame_bits

DEFAULT_BITRATE = 500_000
SETTLE_MS = 250


def open_can(spec: str, record: CandumpRecorder | None = None,
             bitrate: int = DEFAULT_BITRATE) -> CarController:
    """Open ``INTERFACE:CHANNEL`` (see the module text). ValueError names the problem."""
    interface, _, channel = spec.partition(":")
    kwargs: dict[str, Any] = {}
    if interface not in ("virtual", "cabinlink"):
        kwargs["bitrate"] = bitrate  # real adapters are configured; the simulations know theirs
    bus = open_bus(spec, **kwargs)
    return CarController(bus, spec, record=record, bitrate=bitrate)


class CandumpRecorder:
    """``candump -L`` lines to a file; ``channel`` names the bus in every line."""

    def __init__(self, path: str | Path | TextIO, channel: str = "can0",
                 clock: Callable[[], float] = time.time) -> None:
        if isinstance(path, (str, Path)):
            self._file: TextIO = open(path, "w", encoding="ascii")  # noqa: SIM115
            self._owns = True
        else:
            self._file, self._owns = path, False
        self.channel = channel
        self.clock = clock
        self.lines = 0

    def frame(self, can_id: int, data: bytes, extended: bool = True) -> None:
        ident = f"{can_id:08X}" if extended else f"{can_id:03X}"
        self._file.write(f"({self.clock():.6f}) {self.channel} {ident}#{bytes(data).hex().upper()}\n")
        self.lines += 1

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        if self._owns and not self._file.closed:
            self._file.close()
        else:
            self.flush()


@lru_cache(maxsize=4096)
def _bits(can_id: int, extended: bool, data: bytes) -> int:
    return frame_bits(can_id, extended, data)  # ~30 us; heartbeats and FCs repeat


class BusMeter:
    """Frames and bits seen on one bus, for the load (bits from the real frame layout,
    stuffing included)."""

    def __init__(self, bitrate: int) -> None:
        self.bitrate = bitrate
        self.frames = 0
        self.bits = 0
        self._last = (0, 0)

    def count(self, can_id: int, data: bytes, extended: bool) -> None:
        self.frames += 1
        self.bits += _bits(can_id, extended, bytes(data))

    def take(self, seconds: float) -> tuple[float, float]:
        """(frames/s, load 0..1) since the previous call, ``seconds`` ago."""
        frames, bits = self.frames - self._last[0], self.bits - self._last[1]
        self._last = (self.frames, self.bits)
        if seconds <= 0:
            return 0.0, 0.0
        return frames / seconds, min(1.0, bits / seconds / self.bitrate)


class CarController(PythonCanController):
    """``machine.CAN`` view of a python-can bus for the car: counts and records frames."""

    def __init__(self, bus: can.BusABC, spec: str, record: CandumpRecorder | None = None,
                 bitrate: int = DEFAULT_BITRATE) -> None:
        super().__init__(bus)
        self.spec = spec
        self.recorder = record
        self.meter = BusMeter(bitrate)
        self.on_rx: Callable[[int, bytes], None] | None = None  # every frame received

    def send(self, can_id: int, data: bytes | bytearray | memoryview, flags: int = 0) -> int | None:
        r = super().send(can_id, data, flags)
        if r is not None:
            ext = bool(flags & 2)
            self.meter.count(can_id, bytes(data), ext)
            if self.recorder is not None:
                self.recorder.frame(can_id, bytes(data), ext)
        return r

    def recv(self, lst: list | None = None) -> list | None:
        r = super().recv(lst)
        if r is not None:
            ext = bool(r[2] & 2)
            data = bytes(r[1])
            self.meter.count(r[0], data, ext)
            if self.recorder is not None:
                self.recorder.frame(r[0], data, ext)
            if self.on_rx is not None and ext:
                self.on_rx(r[0], data)
        return r


@dataclass(frozen=True)
class LoggedFrame:
    t: float  # seconds, as in the log
    can_id: int
    data: bytes
    extended: bool
    error: bool


def read_candump(path: str | Path) -> Iterator[LoggedFrame]:
    """The frames of a ``candump -L`` log, in file order (python-can's reader)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such log file")
    reader = can.io.CanutilsLogReader(str(p))
    try:
        for m in reader:
            yield LoggedFrame(float(m.timestamp), int(m.arbitration_id), bytes(m.data),
                              bool(m.is_extended_id), bool(m.is_error_frame))
    except (ValueError, IndexError) as e:
        raise ValueError(f"{p}: not a candump -L log ({e})") from e
    finally:
        reader.stop()


def is_claim_request(can_id: int, data: bytes) -> bool:
    """A Request (PGN 0xEA00) for Address Claimed (data ``00 EE 00``), spec 7.3."""
    return (can_id >> 16) & 0xFF == 0xEA and len(data) >= 3 and bytes(data[:3]) == b"\x00\xee\x00"


class _Discard:
    """Frames a passive channel would send (its FCs): nowhere."""

    def __call__(self, can_id: int, data: Any) -> bool:
        return True


class Sniffer:
    """Passive decoder of one recorded CAN bus for the engine (replay).

    Feed every frame with :meth:`frame` and call :meth:`poll` as time passes. The car is
    the node that claims an address in 0x00..0x0F with a car NAME (bit 63 clear), or
    ``car_address`` when given. Calls, on the engine side ``side``: ``car_claimed``,
    ``can_claim`` (other nodes' claims), ``claims_requested`` (the car's Request for Address
    Claimed), ``can_receive`` (messages to the car, heartbeats), ``can_observe_sent``
    (messages from the car)."""

    def __init__(self, engine: Any, side: Any, clock: Any, car_address: int | None = None) -> None:
        self.engine = engine
        self.side = side
        self.clock = clock
        self.car = car_address
        self._car_name: int | None = None
        self._car_claim_at: int | None = None  # settle time running (spec 7.3: 250 ms)
        self._channels: dict[int, isotp.Channel] = {}
        self.frames = 0

    def _channel(self, can_id: int, sa: int, ta: int) -> isotp.Channel:
        ch = self._channels.get(can_id)
        if ch is None:
            prio = can_id >> 26
            if sa == self.car:
                deliver = lambda p, ta=ta: self.engine.can_observe_sent(self.side, ta, bytes(p))  # noqa: E731
            else:
                deliver = lambda p, sa=sa: self.engine.can_receive(self.side, sa, bytes(p))  # noqa: E731
            ch = isotp.Channel(self.clock, _Discard(), isotp.phys_id(prio, sa, ta), rx_max=4095,
                               on_message=deliver)
            self._channels[can_id] = ch
        return ch

    def frame(self, can_id: int, data: bytes, extended: bool = True) -> None:
        self.frames += 1
        if not extended:
            return
        pf = (can_id >> 16) & 0xFF
        sa = can_id & 0xFF
        ta = (can_id >> 8) & 0xFF
        if pf == 0xEE and len(data) >= 8:
            name = claim.name_of(data)
            if sa == claim.NULL:
                return
            if self.car is None and not name >> 63 and sa <= 0x0F:
                self.car = sa
            if sa == self.car and not name >> 63:
                if self._car_name != name:
                    self._car_name = name
                    self._car_claim_at = self.clock.ticks_ms()
                return
            self.engine.can_claim(self.side, sa, name)
            return
        if pf == 0xEA:
            if is_claim_request(can_id, data):
                self.engine.claims_requested(self.side)
            return
        if (can_id >> 24) & 3 or self.car is None:
            return
        if pf == 0xDB:
            if sa != self.car and (ta == claim.GLOBAL or ta == self.car) and data:
                n = data[0]
                if 0 < n <= 7 and len(data) > n:
                    self.engine.can_receive(self.side, sa, bytes(data[1:1 + n]))
            return
        if pf == 0xDA and (sa == self.car or ta == self.car):
            self._channel(can_id, sa, ta).on_frame(data)

    def poll(self) -> None:
        if self._car_claim_at is not None and \
                self.clock.ticks_diff(self.clock.ticks_ms(), self._car_claim_at) >= SETTLE_MS:
            self._car_claim_at = None  # as live: the car's claim counts once it settled
            self.engine.car_claimed(self.side, self.car)
        for ch in self._channels.values():
            ch.poll()
