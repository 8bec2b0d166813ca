"""The simulated classic CAN bus: bit timing, arbitration, error counters, logging, TCP.

Model
=====
* **Frame length.** :func:`frame_bits` builds the real bit sequence of a classic (CAN 2.0)
  data or remote frame - SOF, arbitration and control fields, data, the CRC-15 (polynomial
  0x4599) computed over SOF..data - inserts a complementary stuff bit after every five equal
  bits from SOF to the end of the CRC sequence, then adds the fixed-form tail: CRC delimiter,
  ACK slot and delimiter, 7-bit EOF and the 3-bit interframe space. A 29-bit frame with 8
  random data bytes is 131 bits before stuffing (about 136 after); at 500 kbit/s that is
  ~0.27 ms and ~3,680 frames/s.
* **Arbitration.** Every node has a TX queue ordered by identifier, like a CAN controller
  (equal identifiers leave in submission order). At each arbitration point the frames that
  were queued by then compete; the winner is the one whose arbitration field
  (base id, SRR/RTR, IDE, extended id, RTR) is lowest bit by bit, which gives the CAN rules:
  lower id wins; for an equal base id an 11-bit data frame beats an 11-bit remote frame,
  which beats any 29-bit frame; a remote frame loses to the data frame with the same id.
  (Two nodes sending the identical id is a configuration error on a real bus; here they
  leave one after the other in submission order.)
* **Time and real-time policy.** The bus keeps a *virtual bus time*. A frame starts at
  ``max(end of the previous frame, the moment it was queued)`` and lasts
  ``frame_bits / bitrate``; error frames and corrupted frames last as long as they would on
  the wire. With ``realtime=True`` (the default) the bus thread delivers a frame only once
  the wall clock has reached its virtual end time, so delivery is never faster than a real
  bus; if the host falls behind, frames are delivered as soon as it can, but their timestamps,
  the busy time and the load are still those of the virtual bus (back to back while frames
  are waiting), so accounting stays exact and the virtual clock catches up with the wall
  clock as soon as the queues run dry. With ``realtime=False`` nothing sleeps: virtual time
  runs ahead of the wall clock (for fast tests and for measuring host headroom).
* **Error confinement** (after ISO 11898-1, as machine.CAN reports it): a successful
  transmission decrements the sender's TEC by 1, a successful reception each receiver's REC
  by 1 (floor 0); a corrupted frame (an error frame on the bus) adds 8 to the sender's TEC
  and 1 to every receiver's REC, and the sender retransmits it automatically at the next
  arbitration point. States: ACTIVE 1 (TEC and REC < 96), WARNING 2 (either >= 96),
  PASSIVE 3 (either >= 128), BUS_OFF 4 (TEC > 255). A bus-off node neither sends nor
  receives until it calls ``restart()``, which clears TEC/REC and drops its pending frames.
  Not modelled: the suspend-transmission time of error-passive senders, overload frames,
  bit errors of individual nodes other than the injected ones.
* **Error injection:** :meth:`SimBus.drop_next` (frame lost: it occupies the bus but nobody
  receives it; the sender counts it as sent), :meth:`SimBus.corrupt_next` (an error frame
  destroys the transmission: receivers discard it, TEC += 8 / REC += 1, automatic
  retransmission), :meth:`SimBus.error_frames` (k error frames from bus noise; every
  listening node's REC += 1), :meth:`SimBus.force_bus_off`.

Wire protocol (TCP on 127.0.0.1; one connection = one node)
============================================================
Every message is ``u16 length | u8 type | payload``, big-endian, ``length`` counting the
type byte and the payload. Frame flags are machine.CAN's: ``FLAG_RTR 1``, ``FLAG_EXT_ID 2``;
in RX also ``FLAG_OWN 0x80`` (our own frame, looped back). Times are ``u64`` microseconds
of bus time since the Unix epoch (the frame's end of transmission).

Client -> server:

=========== ==== ==================================================================
HELLO       0x01 u8 version (1), u8 options (1 = receive own frames), name (UTF-8)
                 - must be the first message
SEND        0x02 u32 id, u8 flags, u8 dlc, data (dlc bytes; none for RTR)
RESTART     0x03 (empty) - leave BUS_OFF / clear the counters, drop pending frames
QUERY       0x04 (empty) - ask for STATE (cause 2) and COUNTERS
FILTERS     0x05 u8 n, then n x (u32 id, u32 mask, u8 flags): the controller's acceptance
                 filters (machine.CAN ``set_filters``): from now on only frames with
                 ``id & mask == fid & mask`` and the same FLAG_EXT_ID reach this node, as
                 hardware filters keep them from a board's CPU. n = 255: every frame (the
                 default after HELLO)
=========== ==== ==================================================================

Server -> client:

=========== ==== ==================================================================
WELCOME     0x81 u8 version, u32 bitrate, u16 node id, u8 TX queue length, u64 now
RX          0x82 u64 time, u32 id, u8 flags, u8 dlc, data (dlc bytes; none for RTR)
TX_DONE     0x83 u8 status, u64 time - exactly one per SEND, in order of completion.
                 status: 0 sent, 1 aborted (restart/detach), 2 refused: bus-off,
                 3 refused: queue full, 4 refused: invalid frame
STATE       0x84 u8 state, u16 TEC, u16 REC, u8 cause (0 change, 1 reply to RESTART,
                 2 reply to QUERY)
COUNTERS    0x85 10 x u32: machine.CAN get_counters() order (TEC, REC, n_warn,
                 n_passive, n_busoff, tx_pending, rx_pending, rx_overruns), then
                 tx_frames, rx_frames - reply to QUERY
ERROR       0x86 u8 code (1 protocol violation: the server closes the connection,
                 2 invalid frame), text (UTF-8)
BUS_ERROR   0x87 u64 time, u8 kind (1 corrupted frame, 2 error frame from noise),
                 u8 role (1 = we were the transmitter)
=========== ==== ==================================================================

The client keeps at most TX-queue-length (16) SENDs without TX_DONE outstanding, so the
server's queue never overflows. RX and BUS_ERROR messages to a client that does not read are
dropped beyond ``out_limit`` buffered bytes (counted as rx_overruns); TX_DONE and STATE are
never dropped. :mod:`cabinlink_tools.sim.canwire` is the client (MicroPython subset);
:mod:`cabinlink_tools.sim.pycan_plugin` puts a python-can interface on top of it.
"""
from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import logging
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TextIO

_log = logging.getLogger(__name__)

# machine.CAN constants (MicroPython extmod/machine_can_port.h)
FLAG_RTR = 1
FLAG_EXT_ID = 2
FLAG_OWN = 0x80  # wire protocol only: a looped-back frame of our own
STATE_STOPPED = 0
STATE_ACTIVE = 1
STATE_WARNING = 2
STATE_PASSIVE = 3
STATE_BUS_OFF = 4
STATE_NAMES = {0: "STOPPED", 1: "ACTIVE", 2: "WARNING", 3: "PASSIVE", 4: "BUS_OFF"}

# TX outcomes (TX_DONE status)
TX_OK = 0
TX_ABORTED = 1
TX_BUS_OFF = 2
TX_FULL = 3
TX_INVALID = 4

# BUS_ERROR kinds
ERR_CORRUPT = 1
ERR_NOISE = 2

DEFAULT_BITRATE = 500_000
DEFAULT_TX_QUEUE_LEN = 16  # machine.CAN on FDCAN
CRC15_POLY = 0x4599
TAIL_BITS = 1 + 2 + 7 + 3  # CRC delimiter, ACK slot + delimiter, EOF, interframe space
# An error frame: 6-bit error flag + 8-bit error delimiter, then the interframe space.
ERROR_FRAME_BITS = 6 + 8 + 3
# A transmission destroyed by a CRC error is seen up to the ACK delimiter: the error flag
# starts on the bit after it (so the EOF and the interframe space are not sent).
CORRUPT_TAIL_BITS = 7 + 3

# Linux SocketCAN error frame encoding (linux/can/error.h), as candump writes it
CAN_ERR_FLAG = 0x20000000
CAN_ERR_PROT = 0x00000008
CAN_ERR_BUSERROR = 0x00000080
CAN_ERR_PROT_LOC_CRC_SEQ = 0x08


# ---------------------------------------------------------------------------------------
# Frames and their length on the wire
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """A classic CAN frame. For a remote frame ``data`` is empty and ``dlc`` is the
    requested length (machine.CAN: with FLAG_RTR the DLC is ``len(data)``)."""

    can_id: int
    data: bytes = b""
    extended: bool = False
    rtr: bool = False
    dlc: int = -1

    def __post_init__(self) -> None:
        data = bytes(self.data)
        if self.can_id < 0 or self.can_id >= (1 << 29 if self.extended else 1 << 11):
            raise ValueError(f"invalid id 0x{self.can_id:X} for a {'29' if self.extended else '11'}-bit frame")
        if len(data) > 8:
            raise ValueError("data too long: classic CAN carries at most 8 bytes")
        dlc = self.dlc
        if self.rtr:
            if dlc < 0:
                dlc = len(data)
            data = b""
        elif dlc < 0:
            dlc = len(data)
        elif dlc != len(data):
            raise ValueError("dlc does not match the data length")
        if dlc > 8:
            raise ValueError("dlc above 8")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "dlc", dlc)

    @property
    def flags(self) -> int:
        return (FLAG_EXT_ID if self.extended else 0) | (FLAG_RTR if self.rtr else 0)

    @classmethod
    def from_flags(cls, can_id: int, data: bytes, flags: int, dlc: int = -1) -> Frame:
        rtr = bool(flags & FLAG_RTR)
        return cls(can_id, b"" if rtr else bytes(data), bool(flags & FLAG_EXT_ID), rtr,
                   (len(data) if dlc < 0 else dlc) if rtr else -1)

    @property
    def bits(self) -> int:
        return frame_bits(self.can_id, self.extended, bytes(self.dlc) if self.rtr else self.data, self.rtr)

    def arbitration_key(self) -> int:
        return arbitration_key(self.can_id, self.extended, self.rtr)

    def __str__(self) -> str:
        ident = f"{self.can_id:08X}" if self.extended else f"{self.can_id:03X}"
        return f"{ident}#R{self.dlc}" if self.rtr else f"{ident}#{self.data.hex().upper()}"


def arbitration_key(can_id: int, extended: bool, rtr: bool) -> int:
    """The arbitration field as a 32-bit number: the numerically lowest key wins.

    Bits (first sent = most significant): base id (11), then for an 11-bit frame RTR, IDE=0;
    for a 29-bit frame SRR=1, IDE=1, extended id (18), RTR."""
    if extended:
        base, ext = can_id >> 18, can_id & 0x3FFFF
        return (base << 21) | (1 << 20) | (1 << 19) | (ext << 1) | int(rtr)
    return (can_id << 21) | (int(rtr) << 20)


def _header(can_id: int, extended: bool, dlc: int, rtr: bool) -> tuple[str, int]:
    # SOF..DLC as a bit string, and its length
    r = "1" if rtr else "0"
    d = format(dlc, "04b")
    if extended:
        # SOF, base id 11, SRR 1, IDE 1, extended id 18, RTR, r1 0, r0 0, DLC 4
        return "0" + format(can_id >> 18, "011b") + "11" + format(can_id & 0x3FFFF, "018b") + r + "00" + d, 39
    # SOF, id 11, RTR, IDE 0, r0 0, DLC 4
    return "0" + format(can_id, "011b") + r + "00" + d, 19


def crc15(bits: str) -> int:
    """CAN CRC-15 (polynomial 0x4599, initial value 0) over a string of '0'/'1'."""
    crc = 0
    for c in bits:
        if (c == "1") != bool(crc & 0x4000):
            crc = ((crc << 1) ^ CRC15_POLY) & 0x7FFF
        else:
            crc = (crc << 1) & 0x7FFF
    return crc


def stuff(bits: str) -> str:
    """Insert a complementary stuff bit after every five equal consecutive bits; the stuff
    bit counts as the first bit of the next run (ISO 11898-1 bit stuffing)."""
    out = []
    prev = ""
    run = 0
    for c in bits:
        out.append(c)
        if c == prev:
            run += 1
        else:
            prev = c
            run = 1
        if run == 5:
            prev = "1" if c == "0" else "0"
            out.append(prev)
            run = 1
    return "".join(out)


def frame_bit_string(can_id: int, extended: bool, data: bytes, rtr: bool = False) -> str:
    """The bits on the wire from SOF to the end of the CRC sequence, stuff bits included."""
    dlc = len(data)
    if dlc > 8:
        raise ValueError("data too long")
    head, _ = _header(can_id, extended, dlc, rtr)
    body = head if rtr else head + "".join(format(b, "08b") for b in data)
    return stuff(body + format(crc15(body), "015b"))


def frame_bits(can_id: int, extended: bool, data: bytes, rtr: bool = False) -> int:
    """Exact length in bits of a classic CAN frame on the wire, stuff bits and the 3-bit
    interframe space included. For a remote frame pass ``len(data) == DLC`` (the data bytes
    themselves are not sent), as machine.CAN does."""
    return len(frame_bit_string(can_id, extended, data, rtr)) + TAIL_BITS


def unstuffed_bits(extended: bool, dlc: int, rtr: bool = False) -> int:
    """Frame length without stuff bits: 47 + 8*dlc (11-bit) or 67 + 8*dlc (29-bit)."""
    return (67 if extended else 47) + (0 if rtr else 8 * dlc)


# ---------------------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------------------


class Received(NamedTuple):
    timestamp: float  # bus time (Unix epoch seconds) at the end of the frame
    frame: Frame
    own: bool  # our own frame, looped back


@dataclass(slots=True)
class BusEvent:
    """What a listener (e.g. :class:`CandumpLogger`) sees: every transmission on the wire."""

    timestamp: float  # end of the transmission, Unix epoch seconds
    kind: str  # "frame" (received by the nodes), "lost" (drop_next), "error" (error frame)
    frame: Frame | None  # the frame sent (for "error": the one destroyed, or None for noise)
    sender: str | None
    bits: int  # bus time it took, in bits


@dataclass(slots=True)
class NodeStats:
    name: str
    attached: bool
    state: int
    tec: int
    rec: int
    tx_frames: int
    tx_bits: int
    rx_frames: int
    tx_errors: int
    rx_errors: int
    rx_overruns: int


@dataclass(slots=True)
class BusStats:
    bitrate: int
    elapsed_s: float  # bus time since start (or reset_stats)
    busy_s: float
    load: float  # busy / elapsed
    frames: int  # frames delivered (incl. lost ones, excl. corrupted attempts)
    bits: int  # every bit time the bus was busy
    error_frames: int
    corrupted: int
    dropped: int
    nodes: dict[str, NodeStats] = field(default_factory=dict)


class _Entry:
    __slots__ = ("key", "seq", "t", "frame", "bits", "node")

    def __init__(self, key: int, seq: int, t: float, frame: Frame, bits: int, node: SimNode) -> None:
        self.key = key
        self.seq = seq
        self.t = t
        self.frame = frame
        self.bits = bits
        self.node = node

    def __lt__(self, other: _Entry) -> bool:
        return (self.key, self.seq) < (other.key, other.seq)


FrameCallback = Callable[[Received], None]
TxDoneCallback = Callable[[Frame, int, float], None]
StateCallback = Callable[["SimNode"], None]
BusErrorCallback = Callable[[float, int, int], None]


def compute_state(tec: int, rec: int) -> int:
    if tec > 255:
        return STATE_BUS_OFF
    if tec >= 128 or rec >= 128:
        return STATE_PASSIVE
    if tec >= 96 or rec >= 96:
        return STATE_WARNING
    return STATE_ACTIVE


class SimNode:
    """One controller on the bus. Use :meth:`SimBus.attach` to make one.

    Without an ``on_frame`` callback, received frames queue here for :meth:`recv`.
    Callbacks run on the bus thread: keep them short and never block in them."""

    def __init__(self, bus: SimBus, node_id: int, name: str, receive_own: bool,
                 tx_queue_len: int, rx_queue_len: int, on_frame: FrameCallback | None,
                 on_tx_done: TxDoneCallback | None, on_state: StateCallback | None,
                 on_bus_error: BusErrorCallback | None) -> None:
        self.bus = bus
        self.node_id = node_id
        self.name = name
        self.receive_own = receive_own
        self.tx_queue_len = tx_queue_len
        self.rx_queue_len = rx_queue_len
        self.on_frame = on_frame
        self.on_tx_done = on_tx_done
        self.on_state = on_state
        self.on_bus_error = on_bus_error
        self.attached = True
        self.state = STATE_ACTIVE
        self.tec = 0
        self.rec = 0
        self.n_warn = 0
        self.n_passive = 0
        self.n_busoff = 0
        self.tx_frames = 0
        self.tx_bits = 0
        self.rx_frames = 0
        self.tx_errors = 0
        self.rx_errors = 0
        self.rx_overruns = 0
        self._txq: list[_Entry] = []
        self._inflight = 0
        self._rxq: deque[Received] = deque()
        self._rx_cv = threading.Condition()
        # acceptance filters: None hears every frame, else (id, mask, extended) tuples
        self.filters: tuple[tuple[int, int, bool], ...] | None = None

    def __repr__(self) -> str:
        return f"<SimNode {self.name!r} {STATE_NAMES[self.state]} TEC={self.tec} REC={self.rec}>"

    # machine.CAN-like surface
    def send(self, frame: Frame) -> bool:
        return self.bus.submit(self, frame)

    def recv(self, timeout: float | None = None) -> Received | None:
        with self._rx_cv:
            if not self._rxq and timeout != 0:
                self._rx_cv.wait_for(lambda: bool(self._rxq), timeout)
            return self._rxq.popleft() if self._rxq else None

    def restart(self) -> None:
        self.bus.restart(self)

    @property
    def tx_pending(self) -> int:
        return len(self._txq) + self._inflight

    def counters(self) -> list[int]:
        """machine.CAN ``get_counters()``: TEC, REC, n_warn, n_passive, n_busoff,
        tx_pending, rx_pending, rx_overruns."""
        return [self.tec, self.rec, self.n_warn, self.n_passive, self.n_busoff,
                self.tx_pending, len(self._rxq), self.rx_overruns]

    def stats(self) -> NodeStats:
        return NodeStats(self.name, self.attached, self.state, self.tec, self.rec, self.tx_frames,
                         self.tx_bits, self.rx_frames, self.tx_errors, self.rx_errors, self.rx_overruns)

    # bus side (called with the bus lock held)
    def _set_counters(self, tec: int, rec: int, calls: list) -> None:
        self.tec = tec
        self.rec = min(rec, 255)
        if self.state == STATE_BUS_OFF:
            return  # only restart() leaves bus-off
        new = compute_state(self.tec, self.rec)
        if new != self.state:
            if new > self.state:
                if new >= STATE_WARNING > self.state:
                    self.n_warn += 1
                if new >= STATE_PASSIVE > self.state:
                    self.n_passive += 1
                if new == STATE_BUS_OFF:
                    self.n_busoff += 1
            self.state = new
            if self.on_state is not None:
                calls.append((self.on_state, (self,)))

    def accepts(self, frame: Frame) -> bool:
        """Whether the node's acceptance filters let ``frame`` through (a frame they stop
        is still received and acknowledged by the controller, just not handed on)."""
        f = self.filters
        return f is None or any(ext == frame.extended and frame.can_id & mask == fid & mask
                                for fid, mask, ext in f)

    def _deliver(self, rec: Received, calls: list) -> None:
        if self.on_frame is not None:
            calls.append((self.on_frame, (rec,)))
            return
        calls.append((self._enqueue, (rec,)))

    def _enqueue(self, rec: Received) -> None:
        with self._rx_cv:
            if len(self._rxq) >= self.rx_queue_len:
                self.rx_overruns += 1
                return
            self._rxq.append(rec)
            self._rx_cv.notify_all()


# ---------------------------------------------------------------------------------------
# The bus
# ---------------------------------------------------------------------------------------


Match = Callable[[Frame], bool] | int | None


class _Rule:
    __slots__ = ("kind", "left", "match")

    def __init__(self, kind: str, left: int, match: Match) -> None:
        self.kind = kind
        self.left = left
        self.match = match

    def hits(self, frame: Frame) -> bool:
        m = self.match
        if m is None:
            return True
        if isinstance(m, int):
            return frame.can_id == m
        return bool(m(frame))


class _Job:
    __slots__ = ("kind", "entry", "start", "end", "bits")

    def __init__(self, kind: str, entry: _Entry | None, start: float, end: float, bits: int) -> None:
        self.kind = kind  # "frame", "lost", "corrupt", "noise"
        self.entry = entry
        self.start = start
        self.end = end
        self.bits = bits


class SimBus:
    """A classic CAN bus shared by simulated nodes (see the module docstring for the model).

    Thread-safe. One bus thread transmits one frame at a time and delivers it to every
    other attached node (and to the sender when it asked for its own frames), in bus order.
    """

    HISTORY_S = 10.0  # how far back load(window) can look

    def __init__(self, bitrate: int = DEFAULT_BITRATE, *, realtime: bool = True,
                 channel: str = "vcan0", start: bool = True) -> None:
        if not 10_000 <= bitrate <= 1_000_000:
            raise ValueError("classic CAN bitrate must be 10 kbit/s .. 1 Mbit/s")
        self.bitrate = bitrate
        self.realtime = realtime
        self.channel = channel
        self._cv = threading.Condition()
        self._nodes: dict[int, SimNode] = {}
        self._by_name: dict[str, SimNode] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self._rules: list[_Rule] = []
        self._noise: deque[float] = deque()
        self._listeners: list[Callable[[BusEvent], None]] = []
        self._paused = 0
        self._busy_job = False
        self._closed = False
        self._mono0 = time.monotonic()
        self._epoch0 = time.time()
        self._vt_end = self._mono0
        self._hist: deque[tuple[float, float]] = deque()
        self._reset_counters()
        self._thread = threading.Thread(target=self._run, name=f"SimBus {channel}", daemon=True)
        if start:
            self._thread.start()

    # ---- time ---------------------------------------------------------------------
    def _reset_counters(self) -> None:
        self._t_stats = max(time.monotonic(), self._vt_end)
        self._busy = 0.0
        self._frames = 0
        self._bits = 0
        self._error_frames = 0
        self._corrupted = 0
        self._dropped = 0

    def to_epoch(self, mono: float) -> float:
        return self._epoch0 + (mono - self._mono0)

    def now(self) -> float:
        """Bus time now (Unix epoch seconds): the wall clock, or the virtual end of the last
        transmission when it runs ahead of the wall clock (``realtime=False``)."""
        with self._cv:
            return self.to_epoch(max(time.monotonic(), self._vt_end))

    def bit_time(self, bits: int) -> float:
        return bits / self.bitrate

    # ---- nodes --------------------------------------------------------------------
    def attach(self, name: str = "node", *, receive_own: bool = False,
               tx_queue_len: int = DEFAULT_TX_QUEUE_LEN, rx_queue_len: int = 1 << 16,
               on_frame: FrameCallback | None = None, on_tx_done: TxDoneCallback | None = None,
               on_state: StateCallback | None = None,
               on_bus_error: BusErrorCallback | None = None) -> SimNode:
        """Attach a node; it hears every frame that starts after this call."""
        with self._cv:
            if self._closed:
                raise RuntimeError("bus closed")
            base, n = name, 1
            while name in self._by_name and self._by_name[name].attached:
                n += 1
                name = f"{base}#{n}"
            node = SimNode(self, next(self._ids), name, receive_own, tx_queue_len, rx_queue_len,
                           on_frame, on_tx_done, on_state, on_bus_error)
            self._nodes[node.node_id] = node
            self._by_name[name] = node
            return node

    def detach(self, node: SimNode) -> None:
        """Detach a node: its pending frames are aborted; its statistics are kept."""
        calls: list = []
        with self._cv:
            if not node.attached:
                return
            node.attached = False
            self._nodes.pop(node.node_id, None)
            self._abort_pending(node, calls)
            self._cv.notify_all()
        _run_calls(calls)

    def find(self, name: str) -> SimNode | None:
        with self._cv:
            return self._by_name.get(name)

    def nodes(self) -> list[SimNode]:
        with self._cv:
            return list(self._nodes.values())

    def submit(self, node: SimNode, frame: Frame) -> bool:
        """Queue a frame in the node's TX queue. False when the queue is full; OSError(EIO)
        when the node is bus-off (as machine.CAN); ValueError when it is not attached."""
        bits = frame.bits
        with self._cv:
            if not node.attached:
                raise ValueError(f"node {node.name!r} is not attached")
            if node.state == STATE_BUS_OFF:
                raise OSError(errno.EIO, "bus off")
            if len(node._txq) + node._inflight >= node.tx_queue_len:
                return False
            e = _Entry(frame.arbitration_key(), next(self._seq), time.monotonic(), frame, bits, node)
            heapq.heappush(node._txq, e)
            self._cv.notify_all()
            return True

    def restart(self, node: SimNode) -> None:
        """machine.CAN ``restart()``: TEC = REC = 0, ACTIVE, pending frames dropped."""
        calls: list = []
        with self._cv:
            self._abort_pending(node, calls)
            old = node.state
            node.tec = node.rec = 0
            node.state = STATE_ACTIVE
            if old != STATE_ACTIVE and node.on_state is not None:
                calls.append((node.on_state, (node,)))
            self._cv.notify_all()
        _run_calls(calls)

    def _abort_pending(self, node: SimNode, calls: list) -> None:
        t = self.to_epoch(time.monotonic())
        for e in sorted(node._txq):
            if node.on_tx_done is not None:
                calls.append((node.on_tx_done, (e.frame, TX_ABORTED, t)))
        node._txq.clear()

    # ---- listeners ----------------------------------------------------------------
    def add_listener(self, listener: Callable[[BusEvent], None]) -> None:
        """``listener(event)`` is called on the bus thread for every transmission."""
        with self._cv:
            self._listeners = self._listeners + [listener]

    def remove_listener(self, listener: Callable[[BusEvent], None]) -> None:
        with self._cv:
            self._listeners = [x for x in self._listeners if x is not listener]

    # ---- error injection ----------------------------------------------------------
    def drop_next(self, n: int = 1, match: Match = None) -> None:
        """The next n matching frames are lost: they take their bus time, nobody receives
        them, and their senders count them as sent. ``match``: an id or a predicate."""
        with self._cv:
            self._rules.append(_Rule("lost", n, match))

    def corrupt_next(self, n: int = 1, match: Match = None) -> None:
        """The next n matching transmissions are destroyed by an error frame (CRC error):
        receivers discard them (REC += 1), the sender's TEC += 8 and it retransmits."""
        with self._cv:
            self._rules.append(_Rule("corrupt", n, match))

    def error_frames(self, k: int = 1) -> None:
        """k error frames from bus noise at the next arbitration points: 17 bit times each,
        every listening node's REC += 1."""
        with self._cv:
            t = time.monotonic()
            self._noise.extend([t] * k)
            self._cv.notify_all()

    def force_bus_off(self, node: SimNode) -> None:
        """TEC -> 256 and BUS_OFF: the node neither sends nor receives until restart()."""
        calls: list = []
        with self._cv:
            node.tec = 256
            if node.state != STATE_BUS_OFF:
                node.state = STATE_BUS_OFF
                node.n_busoff += 1
                if node.on_state is not None:
                    calls.append((node.on_state, (node,)))
        _run_calls(calls)

    def clear_injections(self) -> None:
        with self._cv:
            self._rules.clear()
            self._noise.clear()

    # ---- control ------------------------------------------------------------------
    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No transmission starts inside the block; everything queued meanwhile arbitrates
        when it ends (as if the bus had been busy until then)."""
        with self._cv:
            self._paused += 1
        try:
            yield
        finally:
            with self._cv:
                self._paused -= 1
                if not self._paused:
                    self._vt_end = max(self._vt_end, time.monotonic())
                self._cv.notify_all()

    def wait_idle(self, timeout: float | None = 10.0) -> bool:
        """Wait until no frame is queued (bus-off nodes aside) and none is on the wire."""
        def idle() -> bool:
            return not self._busy_job and not self._noise and not any(
                n._txq for n in self._nodes.values() if n.state != STATE_BUS_OFF)
        with self._cv:
            return self._cv.wait_for(idle, timeout)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)

    def __enter__(self) -> SimBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- accounting ---------------------------------------------------------------
    def stats(self) -> BusStats:
        with self._cv:
            end = max(time.monotonic(), self._vt_end)
            elapsed = max(end - self._t_stats, 1e-9)
            return BusStats(self.bitrate, elapsed, self._busy, min(1.0, self._busy / elapsed),
                            self._frames, self._bits, self._error_frames, self._corrupted,
                            self._dropped, {n: node.stats() for n, node in self._by_name.items()})

    def reset_stats(self) -> None:
        with self._cv:
            self._reset_counters()
            self._hist.clear()
            for n in self._by_name.values():
                n.tx_frames = n.tx_bits = n.rx_frames = n.tx_errors = n.rx_errors = 0

    def load(self, window: float = 1.0) -> float:
        """Fraction of the last ``window`` seconds of bus time the bus was busy."""
        window = min(window, self.HISTORY_S)
        with self._cv:
            end = max(time.monotonic(), self._vt_end)
            lo = end - window
            busy = 0.0
            for s, e in reversed(self._hist):
                if e <= lo:
                    break
                busy += e - max(s, lo)
            return busy / window

    # ---- the bus thread -----------------------------------------------------------
    def _arbitrate(self) -> _Job | None:
        t0 = self._noise[0] if self._noise else None
        for node in self._nodes.values():
            if node.state == STATE_BUS_OFF:
                continue
            for e in node._txq:
                if t0 is None or e.t < t0:
                    t0 = e.t
        if t0 is None:
            return None
        start = max(self._vt_end, t0)
        if self._noise and self._noise[0] <= start:
            self._noise.popleft()
            return _Job("noise", None, start, start + ERROR_FRAME_BITS / self.bitrate, ERROR_FRAME_BITS)
        best: _Entry | None = None
        for node in self._nodes.values():
            q = node._txq
            if not q or node.state == STATE_BUS_OFF:
                continue
            cand = q[0]
            if cand.t > start:  # the head was queued too late for this arbitration point
                cand = None
                for e in q:
                    if e.t <= start and (cand is None or e < cand):
                        cand = e
                if cand is None:
                    continue
            if best is None or cand < best:
                best = cand
        assert best is not None
        q = best.node._txq
        if q[0] is best:
            heapq.heappop(q)
        else:
            q.remove(best)
            heapq.heapify(q)
        best.node._inflight += 1
        kind = "frame"
        for r in self._rules:
            if r.left > 0 and r.hits(best.frame):
                r.left -= 1
                kind = r.kind
                break
        if self._rules and self._rules[0].left <= 0:
            self._rules = [r for r in self._rules if r.left > 0]
        bits = best.bits
        if kind == "corrupt":
            bits = bits - CORRUPT_TAIL_BITS + ERROR_FRAME_BITS
        return _Job(kind, best, start, start + bits / self.bitrate, bits)

    def _run(self) -> None:
        cv = self._cv
        while True:
            with cv:
                while True:
                    if self._closed:
                        return
                    job = None if self._paused else self._arbitrate()
                    if job is not None:
                        break
                    cv.wait()
                self._vt_end = job.end
                self._busy_job = True
            if self.realtime:
                d = job.end - time.monotonic()
                if d > 0:
                    time.sleep(d)
            with cv:
                calls, event = self._complete(job)
                listeners = self._listeners
            _run_calls_guarded(calls)
            if event is not None:
                _run_calls_guarded([(lst, (event,)) for lst in listeners])
            with cv:
                self._busy_job = False
                cv.notify_all()

    def _complete(self, job: _Job) -> tuple[list, BusEvent | None]:
        calls: list = []
        dur = job.end - job.start
        self._busy += dur
        self._bits += job.bits
        self._hist.append((job.start, job.end))
        lo = job.end - self.HISTORY_S
        while self._hist and self._hist[0][1] < lo:
            self._hist.popleft()
        ts = self.to_epoch(job.end)
        listening = [n for n in self._nodes.values() if n.state != STATE_BUS_OFF]
        if job.kind == "noise":
            self._error_frames += 1
            for n in listening:
                n.rx_errors += 1
                n._set_counters(n.tec, n.rec + 1, calls)
                if n.on_bus_error is not None:
                    calls.append((n.on_bus_error, (ts, ERR_NOISE, 0)))
            return calls, BusEvent(ts, "error", None, None, job.bits)
        e = job.entry
        assert e is not None
        sender = e.node
        sender._inflight -= 1
        if job.kind == "corrupt":
            self._error_frames += 1
            self._corrupted += 1
            sender.tx_errors += 1
            if sender.attached:
                heapq.heappush(sender._txq, e)  # automatic retransmission
            sender._set_counters(sender.tec + 8, sender.rec, calls)
            for n in listening:
                if n is not sender:
                    n.rx_errors += 1
                    n._set_counters(n.tec, n.rec + 1, calls)
                if n.on_bus_error is not None:
                    calls.append((n.on_bus_error, (ts, ERR_CORRUPT, 1 if n is sender else 0)))
            return calls, BusEvent(ts, "error", e.frame, sender.name, job.bits)
        self._frames += 1
        sender.tx_frames += 1
        sender.tx_bits += e.bits
        sender._set_counters(max(0, sender.tec - 1), sender.rec, calls)
        if job.kind == "lost":
            self._dropped += 1
            kind = "lost"
        else:
            kind = "frame"
            for n in listening:
                if n is sender:
                    continue
                n.rx_frames += 1
                if n.rec:
                    n._set_counters(n.tec, n.rec - 1, calls)
                if n.accepts(e.frame):
                    n._deliver(Received(ts, e.frame, False), calls)
            if sender.receive_own and sender.attached and sender.state != STATE_BUS_OFF:
                sender._deliver(Received(ts, e.frame, True), calls)
        if sender.on_tx_done is not None:
            calls.append((sender.on_tx_done, (e.frame, TX_OK, ts)))
        return calls, BusEvent(ts, kind, e.frame, sender.name, job.bits)


def _run_calls(calls: list) -> None:
    for fn, args in calls:
        fn(*args)


def _run_calls_guarded(calls: list) -> None:
    # On the bus thread: a failing callback is logged and must not stop the bus.
    for fn, args in calls:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001
            _log.exception("SimBus callback %r failed", fn)


# ---------------------------------------------------------------------------------------
# candump -L log
# ---------------------------------------------------------------------------------------


def candump_line(event: BusEvent, channel: str) -> str | None:
    """One ``candump -L`` line for a bus event, or None for what a bus monitor cannot see
    (a lost frame). Error frames are written as SocketCAN reports a bus error
    (CAN_ERR_FLAG | CAN_ERR_PROT | CAN_ERR_BUSERROR; data[3] = CRC sequence for a corrupted
    frame), 8 data bytes, as candump prints them."""
    if event.kind == "lost":
        return None
    ts = f"({event.timestamp:.6f}) {channel} "
    if event.kind == "error":
        data = bytearray(8)
        if event.frame is not None:
            data[3] = CAN_ERR_PROT_LOC_CRC_SEQ
        return ts + f"{CAN_ERR_FLAG | CAN_ERR_PROT | CAN_ERR_BUSERROR:08X}#{data.hex().upper()}"
    f = event.frame
    assert f is not None
    return ts + (f"{f.can_id:08X}#" if f.extended else f"{f.can_id:03X}#") + (
        ("R" + (str(f.dlc) if f.dlc else "")) if f.rtr else f.data.hex().upper())


class CandumpLogger:
    """Writes every frame and error frame on the bus as ``candump -L`` lines, e.g.
    ``(1700000000.123456) vcan0 18DA0080#0210C0`` - readable by can-utils (canplayer,
    log2asc) and python-can's ``can.LogReader``. Pass ``bus`` to attach at once, or give
    the logger to :meth:`SimBus.add_listener` (it is callable)."""

    def __init__(self, path: str | Path | TextIO, bus: SimBus | None = None,
                 channel: str | None = None) -> None:
        if isinstance(path, (str, Path)):
            self._file: TextIO = open(path, "w", encoding="ascii", buffering=1 << 16)  # noqa: SIM115
            self._owns = True
        else:
            self._file = path
            self._owns = False
        self.channel = channel or (bus.channel if bus is not None else "vcan0")
        self._lock = threading.Lock()
        self._bus = bus
        self.lines = 0
        if bus is not None:
            bus.add_listener(self)

    def __call__(self, event: BusEvent) -> None:
        line = candump_line(event, self.channel)
        if line is None:
            return
        with self._lock:
            if not self._file.closed:
                self._file.write(line + "\n")
                self.lines += 1

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def close(self) -> None:
        if self._bus is not None:
            self._bus.remove_listener(self)
            self._bus = None
        with self._lock:
            if self._owns and not self._file.closed:
                self._file.close()
            elif not self._file.closed:
                self._file.flush()

    def __enter__(self) -> CandumpLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# TCP server: other processes join the bus (wire protocol in the module docstring)
# ---------------------------------------------------------------------------------------

WIRE_VERSION = 1
MSG_HELLO = 0x01
MSG_SEND = 0x02
MSG_RESTART = 0x03
MSG_QUERY = 0x04
MSG_FILTERS = 0x05
MSG_WELCOME = 0x81
MSG_RX = 0x82
MSG_TX_DONE = 0x83
MSG_STATE = 0x84
MSG_COUNTERS = 0x85
MSG_ERROR = 0x86
MSG_BUS_ERROR = 0x87
ERRC_PROTOCOL = 1
ERRC_FRAME = 2
HELLO_RECEIVE_OWN = 1
FILTERS_ALL = 255  # FILTERS count meaning "every frame"
STATE_CHANGE = 0
STATE_RESTARTED = 1
STATE_QUERIED = 2

_S_RX = struct.Struct(">HBQIBB")
_S_TX_DONE = struct.Struct(">HBBQ")
_S_STATE = struct.Struct(">HBBHHB")
_S_BUS_ERROR = struct.Struct(">HBQBB")
_S_WELCOME = struct.Struct(">HBBIHBQ")
_S_COUNTERS = struct.Struct(">HB10I")
_LOOPBACK = ("127.0.0.1", "localhost")


def _us(t: float) -> int:
    return int(round(t * 1e6))


class _Conn:
    def __init__(self, server: SimBusServer, sock: socket.socket, peer: tuple) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self.inbuf = bytearray()
        self.out = bytearray()
        self.lock = threading.Lock()
        self.closed = False
        self.node: SimNode | None = None

    def write(self, data: bytes, droppable: bool = False) -> bool:
        with self.lock:
            if self.closed:
                return False
            if self.out:
                if droppable and len(self.out) >= self.server.out_limit:
                    return False
                self.out += data
                return True
            try:
                n = self.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                return False  # the reader notices the broken connection
            if n < len(data):
                self.out += data[n:]
                self.server._want_write(self)
            return True

    # bus callbacks (bus thread)
    def on_frame(self, rec: Received) -> None:
        f = rec.frame
        flags = f.flags | (FLAG_OWN if rec.own else 0)
        msg = _S_RX.pack(_S_RX.size - 2 + len(f.data), MSG_RX, _us(rec.timestamp), f.can_id, flags, f.dlc) + f.data
        if not self.write(msg, droppable=True) and self.node is not None:
            self.node.rx_overruns += 1

    def on_tx_done(self, frame: Frame, status: int, ts: float) -> None:
        self.write(_S_TX_DONE.pack(_S_TX_DONE.size - 2, MSG_TX_DONE, status, _us(ts)))

    def on_state(self, node: SimNode, cause: int = STATE_CHANGE) -> None:
        self.write(_S_STATE.pack(_S_STATE.size - 2, MSG_STATE, node.state, min(node.tec, 0xFFFF),
                                 node.rec, cause))

    def on_bus_error(self, ts: float, kind: int, role: int) -> None:
        self.write(_S_BUS_ERROR.pack(_S_BUS_ERROR.size - 2, MSG_BUS_ERROR, _us(ts), kind, role),
                   droppable=True)

    def error(self, code: int, text: str) -> None:
        t = text.encode()[:200]
        self.write(struct.pack(">HBB", 2 + len(t), MSG_ERROR, code) + t)


class SimBusServer:
    """Serves a :class:`SimBus` on 127.0.0.1: each TCP connection is one node.

    ``start()`` returns ``(host, port)``; port 0 picks a free one. ``stop()`` closes every
    connection (detaching their nodes), joins the I/O thread and closes the sockets; the bus
    itself is left running (it belongs to the caller)."""

    def __init__(self, bus: SimBus, host: str = "127.0.0.1", port: int = 0,
                 out_limit: int = 1 << 20) -> None:
        if host not in _LOOPBACK:
            raise ValueError("the simulated bus is served on the loopback interface only (127.0.0.1)")
        self.bus = bus
        self.host = "127.0.0.1"
        self.port = port
        self.out_limit = out_limit
        self._sel = selectors.DefaultSelector()
        self._lsock: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._conns: set[_Conn] = set()
        self._lock = threading.Lock()
        self._writers: set[_Conn] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def channel(self) -> str:
        """The python-can channel string: ``"127.0.0.1:PORT"``."""
        return f"{self.host}:{self.port}"

    def start(self) -> tuple[str, int]:
        if self._thread is not None:
            return self.address
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, self.port))
        ls.listen(64)
        ls.setblocking(False)
        self._lsock = ls
        self.port = ls.getsockname()[1]
        self._sel.register(ls, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._serve, name=f"SimBusServer :{self.port}", daemon=True)
        self._thread.start()
        return self.address

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        for c in list(self._conns):
            self._close(c)
        with contextlib.suppress(Exception):
            self._sel.close()
        if self._lsock is not None:
            self._lsock.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> SimBusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connections(self) -> int:
        return sum(1 for c in self._conns if c.node is not None and not c.closed)

    def wait_connections(self, n: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.connections() < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    # ---- I/O thread ---------------------------------------------------------------
    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _want_write(self, conn: _Conn) -> None:
        with self._lock:
            self._writers.add(conn)
        self._wake()

    def _serve(self) -> None:
        sel = self._sel
        while not self._stopping:
            try:
                events = sel.select(0.5)
            except (OSError, ValueError):
                break
            for key, ev in events:
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(OSError):
                        while self._wake_r.recv(4096):
                            pass
                else:
                    conn: _Conn = key.data
                    if ev & selectors.EVENT_WRITE:
                        self._flush(conn)
                    if ev & selectors.EVENT_READ and not conn.closed:
                        self._read(conn)
            with self._lock:
                writers, self._writers = self._writers, set()
            for c in writers:
                if not c.closed:
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    def _accept(self) -> None:
        assert self._lsock is not None
        while True:
            try:
                s, peer = self._lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = _Conn(self, s, peer)
            self._conns.add(c)
            self._sel.register(s, selectors.EVENT_READ, c)

    def _flush(self, c: _Conn) -> None:
        with c.lock:
            if c.out:
                try:
                    n = c.sock.send(c.out)
                except BlockingIOError:
                    n = 0
                except OSError:
                    n = -1
                if n > 0:
                    del c.out[:n]
            empty = not c.out
        if empty and not c.closed:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.modify(c.sock, selectors.EVENT_READ, c)

    def _read(self, c: _Conn) -> None:
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(c)
            return
        buf = c.inbuf
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 3:
            ln = (buf[pos] << 8) | buf[pos + 1]
            if ln < 1 or ln > 1024:
                c.error(ERRC_PROTOCOL, "bad message length")
                self._close(c)
                return
            if n - pos - 2 < ln:
                break
            typ = buf[pos + 2]
            body = bytes(buf[pos + 3 : pos + 2 + ln])
            pos += 2 + ln
            if not self._handle(c, typ, body):
                self._close(c)
                return
        del buf[:pos]

    def _handle(self, c: _Conn, typ: int, body: bytes) -> bool:
        node = c.node
        if node is None:
            if typ != MSG_HELLO or len(body) < 2 or body[0] != WIRE_VERSION:
                c.error(ERRC_PROTOCOL, "expected HELLO version %d first" % WIRE_VERSION)
                return False
            name = body[2:].decode("utf-8", "replace") or "client"
            try:
                node = self.bus.attach(name, receive_own=bool(body[1] & HELLO_RECEIVE_OWN),
                                       on_frame=c.on_frame, on_tx_done=c.on_tx_done,
                                       on_state=c.on_state, on_bus_error=c.on_bus_error)
            except RuntimeError as e:
                c.error(ERRC_PROTOCOL, str(e))
                return False
            c.node = node
            c.write(_S_WELCOME.pack(_S_WELCOME.size - 2, MSG_WELCOME, WIRE_VERSION, self.bus.bitrate,
                                    node.node_id & 0xFFFF, node.tx_queue_len, _us(self.bus.now())))
            c.on_state(node, STATE_CHANGE)
            return True
        if typ == MSG_SEND:
            if len(body) < 6:
                c.error(ERRC_PROTOCOL, "short SEND")
                return False
            can_id, flags, dlc = struct.unpack_from(">IBB", body)
            data = body[6:]
            try:
                if flags & FLAG_RTR:
                    frame = Frame(can_id, b"", bool(flags & FLAG_EXT_ID), True, dlc)
                else:
                    if len(data) != dlc:
                        raise ValueError("dlc does not match the data length")
                    frame = Frame(can_id, data, bool(flags & FLAG_EXT_ID))
            except ValueError as e:
                c.on_tx_done(Frame(0), TX_INVALID, self.bus.now())
                c.error(ERRC_FRAME, str(e))
                return True
            try:
                ok = self.bus.submit(node, frame)
            except OSError:
                c.on_tx_done(frame, TX_BUS_OFF, self.bus.now())
                return True
            except ValueError:
                return False
            if not ok:
                c.on_tx_done(frame, TX_FULL, self.bus.now())
            return True
        if typ == MSG_RESTART:
            self.bus.restart(node)
            c.on_state(node, STATE_RESTARTED)
            return True
        if typ == MSG_QUERY:
            c.on_state(node, STATE_QUERIED)
            cnt = node.counters()
            c.write(_S_COUNTERS.pack(_S_COUNTERS.size - 2, MSG_COUNTERS,
                                     *[min(v, 0xFFFFFFFF) for v in cnt], node.tx_frames & 0xFFFFFFFF,
                                     node.rx_frames & 0xFFFFFFFF))
            return True
        if typ == MSG_FILTERS:
            if not body or body[0] != FILTERS_ALL and len(body) != 1 + 9 * body[0]:
                c.error(ERRC_PROTOCOL, "bad FILTERS")
                return False
            node.filters = None if body[0] == FILTERS_ALL else tuple(
                (fid, mask, bool(fl & FLAG_EXT_ID)) for fid, mask, fl in struct.iter_unpack(">IIB", body[1:]))
            return True
        c.error(ERRC_PROTOCOL, "unknown message type 0x%02X" % typ)
        return False

    def _close(self, c: _Conn) -> None:
        with c.lock:
            if c.closed:
                return
            c.closed = True
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(c.sock)
        self._conns.discard(c)
        if c.node is not None:
            self.bus.detach(c.node)
        with contextlib.suppress(OSError):
            c.sock.close()
