"""The suite's own car on a CAN bus: every frame recorded, messages reassembled, any
number of car addresses, and hooks to misbehave on purpose.

:class:`CanProbe` owns one python-can bus and a pump thread that reads every frame into
:attr:`CanProbe.frames` (with the adapter's timestamp; the suite's own frames come back
as echoes when the interface supports ``receive_own_messages``, so both directions share
one time base) and feeds the ISO-TP connections of the suite's car addresses.

A :class:`CarPeer` is one car address of the suite (spec 1.2: 0x00-0x0F). It may claim its
address and send heartbeats like a well-behaved car, or stay silent (a car that went away,
spec 6.6). It sends requests as ISO-TP messages with the core's :class:`cabinlink.isotp.
Channel` and reassembles what the accessory sends back; a connection can be *captured* so a
test sees its raw frames and plays the ISO-TP protocol by hand (withheld or odd flow
control, short frames, wrong sequence numbers).

Thread safety: every public method takes :attr:`CanProbe.lock`; waiting happens on
:attr:`CanProbe.cv`, notified whenever something arrives.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import can

from cabinlink import claim, isotp, msg
from cabinlink.clock import Clock
from cabinlink.codec import ProtocolError, decode, encode

from .cbor_check import encode_any

PAD = 0xCC
PRIO_EVENT = 3
PRIO_NORMAL = 6


@dataclass(frozen=True)
class Frame:
    """One CAN frame as seen on the bus. ``t`` is the adapter's timestamp in seconds
    (epoch based); ``own`` marks the suite's frames."""

    t: float
    can_id: int
    data: bytes
    ext: bool = True
    rtr: bool = False
    own: bool = False

    @property
    def prio(self) -> int:
        return self.can_id >> 26

    @property
    def pf(self) -> int:
        return (self.can_id >> 16) & 0xFF

    @property
    def ta(self) -> int:
        return (self.can_id >> 8) & 0xFF

    @property
    def sa(self) -> int:
        return self.can_id & 0xFF

    @property
    def edp_dp(self) -> int:
        return (self.can_id >> 24) & 3

    def __str__(self) -> str:
        return f"{self.t:.3f} {self.can_id:08X} [{len(self.data)}] {self.data.hex(' ').upper()}"


@dataclass
class Message:
    """One whole message received by the suite. ``t`` is the time of its first frame (SF
    or FF; on BLE the first fragment), ``t_end`` of its last; ``value`` the decoded CBOR or
    None with ``error`` set; ``prio`` the CAN priority it travelled on."""

    t: float
    t_end: float
    transport: str
    src: Any
    dst: Any
    raw: bytes
    value: Any = None
    error: str | None = None
    prio: int | None = None

    @property
    def type(self) -> int | None:
        v = self.value
        if isinstance(v, list) and v and isinstance(v[0], int) and not isinstance(v[0], bool):
            return v[0]
        return None

    def is_result(self, tid: int | None = None) -> bool:
        return self.type == msg.RESULT and len(self.value) >= 3 and (tid is None or self.value[1] == tid)


@dataclass
class Sent:
    """A message the suite sent: local send time (epoch seconds), bytes, tid if a request."""

    t: float
    raw: bytes
    tid: int | None
    type: int | None
    dst: Any


def _decode(raw: bytes) -> tuple[Any, str | None]:
    try:
        return decode(raw), None
    except ProtocolError as e:
        return None, str(e)


def request_info(raw: bytes) -> tuple[int | None, int | None]:
    """(type, tid) of an encoded message when it is a readable request, else (type, None)."""
    v, _ = _decode(raw)
    if not isinstance(v, list) or not v or not isinstance(v[0], int) or isinstance(v[0], bool):
        return None, None
    t = v[0]
    if msg.is_request(t) and len(v) > 1 and isinstance(v[1], int) and not isinstance(v[1], bool) \
            and 0 <= v[1] <= 0xFFFF:
        return t, v[1]
    return t, None


def wait_on(cv: threading.Condition, pred: Callable[[], Any], timeout: float) -> Any:
    """Wait on ``cv`` until ``pred()`` (called under it) is truthy; its value, or None after
    ``timeout`` seconds. Wakes at least every 50 ms, so a missed notify costs no more."""
    end = time.time() + timeout
    with cv:
        while True:
            v = pred()
            if v:
                return v
            left = end - time.time()
            if left <= 0:
                return None
            cv.wait(min(left, 0.05))


def first_result(messages: list[Message], tid: int, since: int) -> Message | None:
    """The first RESULT with ``tid`` in ``messages[since:]``."""
    return next((m for m in messages[since:] if m.is_result(tid)), None)


class CarPeer:
    """One car address of the suite. Create with :meth:`CanProbe.add_peer`."""

    def __init__(self, probe: CanProbe, sa: int, name: int, claim_address: bool,
                 heartbeat_s: float | None, bs: int, stmin: int) -> None:
        self.probe = probe
        self.sa = sa
        self.name = name
        self.heartbeat_s = heartbeat_s
        self.bs = bs
        self.stmin = stmin
        self.clock = Clock()
        self.channels: dict[tuple[int, int], isotp.Channel] = {}
        self.captured: dict[tuple[int, int], list[Frame]] = {}
        self.messages: list[Message] = []
        self.sent: list[Sent] = []
        self._start: dict[tuple[int, int], float] = {}
        self._pbuf: dict[tuple[int, int], tuple[bytearray, int, int, float]] = {}
        self._tid = 0
        self._hb_at: float | None = None
        self._t0 = time.time()
        self.ready_at = time.time()
        self.closed = False
        if claim_address:
            probe.send(claim.claim_id(sa), claim.name_bytes(name))
            self.ready_at = time.time() + 0.26  # spec 7.3: settle before other traffic

    # --- ISO-TP ------------------------------------------------------------------------------
    def channel(self, prio: int, acc: int) -> isotp.Channel:
        key = (prio, acc)
        ch = self.channels.get(key)
        if ch is None:
            def deliver(payload: memoryview, k: tuple[int, int] = key) -> None:
                self._deliver(k, bytes(payload))

            ch = isotp.Channel(self.clock, self._tx_frame, isotp.phys_id(prio, acc, self.sa),
                               rx_max=4095, bs=self.bs, stmin=self.stmin, on_message=deliver)
            self.channels[key] = ch
        return ch

    def _tx_frame(self, can_id: int, data: Any) -> bool:
        return self.probe.send(can_id, bytes(data))

    def _deliver(self, key: tuple[int, int], raw: bytes) -> None:
        now = self.probe.last_t
        value, err = _decode(raw)
        m = Message(self._start.pop(key, now), now, "can", key[1], self.sa, raw, value, err, key[0])
        self.messages.append(m)
        self.probe.messages.append(m)

    def on_frame(self, f: Frame) -> None:
        key = (f.prio, f.sa)
        cap = self.captured.get(key)
        if cap is not None:
            cap.append(f)
            self._passive(key, f)
            return
        if f.data and f.data[0] >> 4 in (0, 1):
            self._start[key] = f.t
        self.channel(f.prio, f.sa).on_frame(f.data)

    def _passive(self, key: tuple[int, int], f: Frame) -> None:
        # A captured connection still records the messages the accessory completes on it
        # (the test plays the flow control itself): single frames, and first frames with
        # their consecutive frames in sequence.
        d = f.data
        if not d:
            return
        k = d[0] >> 4
        if k == 0 and 0 < d[0] & 0xF <= 7 and len(d) > d[0] & 0xF:
            self._start[key] = f.t
            self._deliver(key, bytes(d[1:1 + (d[0] & 0xF)]))
            self._pbuf.pop(key, None)
        elif k == 1 and len(d) == 8:
            self._pbuf[key] = (bytearray(d[2:]), ((d[0] & 0xF) << 8) | d[1], 1, f.t)
        elif k == 2 and key in self._pbuf:
            buf, n, sn, t0 = self._pbuf[key]
            if d[0] & 0xF != sn:
                del self._pbuf[key]
                return
            buf.extend(d[1:1 + min(7, n - len(buf))])
            if len(buf) >= n:
                del self._pbuf[key]
                self._start[key] = t0
                self._deliver(key, bytes(buf[:n]))
            else:
                self._pbuf[key] = (buf, n, (sn + 1) & 0xF, t0)

    def capture(self, prio: int, acc: int) -> list[Frame]:
        """From now on the frames of connection (prio, acc) -> this peer go to the returned
        list instead of the ISO-TP channel, until :meth:`release`."""
        with self.probe.lock:
            self.channel(prio, acc).abort()
            return self.captured.setdefault((prio, acc), [])

    def release(self, prio: int, acc: int) -> None:
        with self.probe.lock:
            self.captured.pop((prio, acc), None)

    def poll(self, now: float) -> None:
        for ch in self.channels.values():
            ch.poll()
        if self.heartbeat_s and now >= self.ready_at and not self.closed:
            if self._hb_at is None or now - self._hb_at >= self.heartbeat_s:
                self.heartbeat()

    def heartbeat(self) -> None:
        """Send one HEARTBEAT now (spec 7.6) and restart the period from it."""
        with self.probe.lock:
            hb = encode(msg.heartbeat(int(time.time() - self._t0) & 0xFFFF))
            data = bytes([len(hb)]) + hb
            self.probe.send(isotp.func_id(PRIO_NORMAL, claim.GLOBAL, self.sa), data + bytes([PAD] * (8 - len(data))))
            self._hb_at = time.time()

    # --- messages ------------------------------------------------------------------------------
    def next_tid(self) -> int:
        with self.probe.lock:
            self._tid = (self._tid + 1) & 0xFFFF
            return self._tid

    def send(self, acc: int, m: list[Any] | bytes, prio: int = PRIO_NORMAL, timeout: float = 2.0) -> Sent:
        """Send one message (a list is encoded by the core codec, bytes go as they are) as
        ISO-TP from this address to ``acc``; waits while the connection is still busy with
        the previous message (spec 7.4, M-7.4-14)."""
        raw = m if isinstance(m, (bytes, bytearray)) else encode_any(m)
        end = time.time() + timeout
        with self.probe.cv:
            while time.time() < self.ready_at:
                self.probe.cv.wait(0.01)
            ch = self.channel(prio, acc)
            while ch.tx_busy:
                if time.time() > end:
                    raise TimeoutError(f"CAN 0x{self.sa:02X}: connection to 0x{acc:02X} still busy")
                self.probe.cv.wait(0.01)
            t, tid = request_info(bytes(raw))
            s = Sent(time.time(), bytes(raw), tid, t, acc)
            self.sent.append(s)
            if not ch.send(bytes(raw)):
                raise RuntimeError(f"ISO-TP refused a message of {len(raw)} bytes")
            ch.poll()
            return s

    def result(self, tid: int, timeout: float = 2.0, since: int = 0) -> Message | None:
        """The first RESULT with ``tid`` among this peer's messages from index ``since``,
        waiting up to ``timeout`` s; None if none came."""
        return wait_on(self.probe.cv, lambda: first_result(self.messages, tid, since), timeout)

    def stop(self) -> None:
        """No more heartbeats from this address (it goes silent)."""
        self.closed = True


class CanProbe:
    """The suite on the bus: frame log, accessory claims, car addresses. ``bus`` is any
    python-can bus; it is read by the probe's own thread until :meth:`close`."""

    def __init__(self, bus: can.BusABC, echo: bool = True) -> None:
        self.bus = bus
        self.echo = echo
        self.lock = threading.RLock()
        self.cv = threading.Condition(self.lock)
        self.frames: list[Frame] = []
        self.messages: list[Message] = []
        self.peers: dict[int, CarPeer] = {}
        self.listeners: list[Callable[[Frame], None]] = []
        self.last_t = time.time()
        self.offset: float | None = None
        self.tx_errors = 0
        self.inputs = 0
        self._inputs_by_thread: dict[int, int] = {}
        self.quiet_sa: set[int] = set()  # senders whose messages are all well-formed (scenarios)
        self.quiet_prio: set[int] = set()
        self.min_gap = 0.008
        self._pace = threading.Lock()
        self._next_tx = 0.0
        self._heard = 0.0  # monotonic time of the last frame from another node
        self._skip_at = 0.0  # the _heard that last let a frame go without the gap
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conformance-can", daemon=True)
        self._thread.start()

    # --- sending -------------------------------------------------------------------------------
    def send(self, can_id: int, data: bytes, ext: bool = True, rtr: bool = False) -> bool:
        """Queue one frame on the bus; False when the adapter refused it."""
        m = can.Message(arbitration_id=can_id, data=b"" if rtr else bytes(data), is_extended_id=ext,
                        is_remote_frame=rtr, dlc=len(data))
        with self._pace:
            # A gap between the suite's own frames, flow controls included: a controller
            # with two receive buffers (the MCP2515) is not flooded by the suite's
            # threads at once. Not needed for one frame when the other side sent a frame
            # after the suite's last one (its firmware has been round and emptied its
            # buffers: an answer to a request), but only once per such round (frames it
            # sends within 2 ms of each other come from one round).
            now = time.monotonic()
            wait = self._next_tx - now
            if wait > 0:
                if self._heard > self._next_tx - self.min_gap and self._heard >= self._skip_at + 0.002:
                    self._skip_at = self._heard
                else:
                    time.sleep(wait)
            self._next_tx = time.monotonic() + self.min_gap
        try:
            self.bus.send(m, timeout=0.2)
        except can.CanError:
            self.tx_errors += 1
            return False
        pf = (can_id >> 16) & 0xFF
        if ext and (pf == 0xDA or pf == 0xDB and bytes(data[1:3]) != b"\x84\x01") \
                and can_id & 0xFF not in self.quiet_sa and can_id >> 26 not in self.quiet_prio:
            self.inputs += 1  # a frame that may carry a message (not a heartbeat, not a scenario's)
            k = threading.get_ident()
            self._inputs_by_thread[k] = self._inputs_by_thread.get(k, 0) + 1
        if not self.echo:
            with self.lock:
                self._record(Frame(time.time(), can_id, bytes(data), ext, rtr, True))
        return True

    def inputs_of_thread(self) -> int:
        """How many frames that may carry a message the calling thread sent (:attr:`inputs`
        counts everybody's)."""
        return self._inputs_by_thread.get(threading.get_ident(), 0)

    # --- peers ---------------------------------------------------------------------------------
    def add_peer(self, sa: int, *, claim_address: bool = True, heartbeat_s: float | None = 1.0,
                 bs: int = 0, stmin: int = 0, name: int | None = None) -> CarPeer:
        """A car address of the suite (replacing any earlier one at ``sa``). By default it
        claims the address with a car NAME (bit 63 clear) and sends a heartbeat a second."""
        with self.lock:
            if name is None:
                name = claim.make_name(0x1C0000 | sa, 0xBF, arbitrary=False)
            p = CarPeer(self, sa, name, claim_address, heartbeat_s, bs, stmin)
            self.peers[sa] = p
            return p

    def remove_peer(self, sa: int) -> None:
        with self.lock:
            p = self.peers.pop(sa, None)
            if p is not None:
                p.stop()

    # --- waiting -------------------------------------------------------------------------------
    def wait(self, pred: Callable[[], Any], timeout: float) -> Any:
        """Wait until ``pred()`` (called under the lock) is truthy; returns its value or
        None after ``timeout`` seconds."""
        return wait_on(self.cv, pred, timeout)

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def frames_since(self, index: int, pred: Callable[[Frame], bool] | None = None) -> list[Frame]:
        with self.lock:
            return [f for f in self.frames[index:] if pred is None or pred(f)]

    # --- pump ----------------------------------------------------------------------------------
    def _record(self, f: Frame) -> None:
        self.frames.append(f)
        self.last_t = max(self.last_t, f.t)
        for fn in self.listeners:
            fn(f)

    def _on_message(self, m: can.Message) -> None:
        if m.is_error_frame:
            return
        own = not getattr(m, "is_rx", True)
        if self.offset is None and m.timestamp:
            # Adapter clocks differ: most stamp frames with the epoch (SocketCAN, the
            # simulated bus), which is time.time()'s base as it is; others count from their
            # own start: one fixed offset maps those onto time.time(), keeping the adapter's
            # precision between frames.
            d = m.timestamp - time.time()
            self.offset = 0.0 if abs(d) < 5.0 else d
        t = m.timestamp - self.offset if m.timestamp and self.offset is not None else time.time()
        f = Frame(t, m.arbitration_id, bytes(m.data), bool(m.is_extended_id), bool(m.is_remote_frame), own)
        if not own:
            self._heard = time.monotonic()
        self._record(f)
        if own or not f.ext or f.rtr:
            return
        if f.pf == isotp.KIND_PHYS and f.edp_dp == 0:
            p = self.peers.get(f.ta)
            if p is not None:
                p.on_frame(f)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                m = self.bus.recv(timeout=0.002)
            except (can.CanError, OSError, ValueError):
                if self._stop.is_set():
                    break
                time.sleep(0.01)
                continue
            with self.cv:
                while m is not None:
                    self._on_message(m)
                    try:
                        m = self.bus.recv(timeout=0)
                    except (can.CanError, OSError, ValueError):
                        m = None
                now = time.time()
                for p in list(self.peers.values()):
                    p.poll(now)
                self.cv.notify_all()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
