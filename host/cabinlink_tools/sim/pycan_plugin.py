"""python-can interface ``cabinlink``: a peer on a simulated CabinLink CAN bus.

Registered as a python-can plugin (``[project.entry-points."can.interface"]`` in
pyproject.toml), so once the package is installed::

    bus = can.Bus(interface="cabinlink", channel="127.0.0.1:PORT")

joins the :class:`~cabinlink_tools.sim.canbus.SimBus` served by a
:class:`~cabinlink_tools.sim.canbus.SimBusServer` on that port - the car, can-isotp,
canopen or pycyphal then share the bus with simulated firmware. Filters are python-can's
own (software, via :class:`can.BusABC`). Error frames on the bus arrive as messages with
``is_error_frame=True`` (``receive_errors=False`` turns that off).

``send(msg, timeout)`` queues the frame in the node's TX queue (16 deep, like a
controller); when it is full it waits up to ``timeout`` seconds (None: until there is
room) and raises :class:`can.CanOperationError` on timeout or when the node is bus-off.
"""
from __future__ import annotations

import os
import select
import threading
import time
from collections import deque
from typing import Any

import can

from . import canwire

_STATES = {
    canwire.STATE_ACTIVE: can.BusState.ACTIVE,
    canwire.STATE_WARNING: can.BusState.ACTIVE,
    canwire.STATE_PASSIVE: can.BusState.PASSIVE,
    canwire.STATE_BUS_OFF: can.BusState.ERROR,
}


def parse_channel(channel: Any) -> tuple[str, int]:
    """``"127.0.0.1:PORT"`` (or ``"localhost:PORT"``, or a bare port) -> (host, port)."""
    text = str(channel).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    if host not in ("127.0.0.1", "localhost"):
        raise can.CanInitializationError(
            f"cabinlink: channel {channel!r}: the simulated bus is served on 127.0.0.1 only")
    try:
        return "127.0.0.1", int(port)
    except ValueError:
        raise can.CanInitializationError(
            f"cabinlink: channel {channel!r}: expected 127.0.0.1:PORT (the SimBusServer's port)") from None


class CabinLinkSimBus(can.BusABC):
    """A python-can bus that is one node of a simulated CabinLink CAN bus."""

    def __init__(self, channel: Any = None, can_filters: can.typechecking.CanFilters | None = None,
                 receive_own_messages: bool = False, receive_errors: bool = True,
                 name: str | None = None, bitrate: int | None = None, **kwargs: object) -> None:
        if channel is None:
            raise can.CanInitializationError("cabinlink: channel required: 127.0.0.1:PORT")
        host, port = parse_channel(channel)
        self.channel = f"{host}:{port}"
        self.channel_info = f"CabinLink simulated CAN bus {self.channel}"
        try:
            self._wire = canwire.CanWire(host, port, name or f"python-can-{os.getpid()}",
                                         receive_own=receive_own_messages,
                                         errors=receive_errors, rx_max=1 << 30)
        except OSError as e:
            raise can.CanInitializationError(f"cabinlink: cannot join the bus at {self.channel}: {e}") from e
        self.bitrate = self._wire.bitrate
        if bitrate is not None and int(bitrate) != self.bitrate:
            self._wire.close()
            raise can.CanInitializationError(
                f"cabinlink: bitrate {bitrate} does not match the simulated bus ({self.bitrate} bit/s)")
        self._cv = threading.Condition()
        self._rx: deque[tuple[int, bytes, int, int]] = deque()
        self._closing = False
        self._reader = threading.Thread(target=self._read_loop, name=f"cabinlink {self.channel}",
                                        daemon=True)
        self._reader.start()
        super().__init__(channel=channel, can_filters=can_filters, **kwargs)

    # ---- reader thread ------------------------------------------------------------
    def _read_loop(self) -> None:
        w = self._wire
        fd = w.fileno()
        while not self._closing:
            try:
                ready, _, _ = select.select([fd], [], [], 0.05)
            except (OSError, ValueError):
                break
            with self._cv:
                if self._closing or w.closed:
                    break
                if ready or w._out:
                    w.poll()
                    while True:
                        f = w.recv_ts()
                        if f is None:
                            break
                        self._rx.append(f)
                    self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    # ---- BusABC -------------------------------------------------------------------
    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        with self._cv:
            if not self._rx:
                if self._wire.closed:
                    raise can.CanOperationError(f"cabinlink: connection lost: {self._wire.last_error}")
                self._cv.wait_for(lambda: bool(self._rx) or self._wire.closed or self._closing, timeout)
            if not self._rx:
                return None, False
            can_id, data, flags, ts = self._rx.popleft()
        if flags & canwire.FLAG_ERROR:
            msg = can.Message(timestamp=ts / 1e6, is_error_frame=True, channel=self.channel)
        else:
            rtr = bool(flags & canwire.FLAG_RTR)
            msg = can.Message(timestamp=ts / 1e6, arbitration_id=can_id,
                              is_extended_id=bool(flags & canwire.FLAG_EXT_ID),
                              is_remote_frame=rtr, dlc=len(data), data=None if rtr else data,
                              channel=self.channel, is_rx=not flags & canwire.FLAG_OWN)
        return msg, False

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        if msg.is_fd:
            raise can.CanOperationError("cabinlink: the simulated bus is classic CAN (no CAN FD)")
        if msg.is_error_frame:
            raise can.CanOperationError("cabinlink: error frames cannot be sent; use SimBus.error_frames()")
        flags = (canwire.FLAG_EXT_ID if msg.is_extended_id else 0) | (
            canwire.FLAG_RTR if msg.is_remote_frame else 0)
        data = bytes(msg.dlc) if msg.is_remote_frame else bytes(msg.data)
        w = self._wire
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while True:
                try:
                    if w.send(msg.arbitration_id, data, flags):
                        return
                except OverflowError as e:
                    raise can.CanOperationError(f"cabinlink: {e}") from e
                except ValueError as e:
                    raise can.CanOperationError(f"cabinlink: {e} 0x{msg.arbitration_id:X}") from e
                except OSError as e:
                    raise can.CanOperationError(f"cabinlink: cannot send: {e}") from e
                # TX queue full: the reader thread notifies when TX_DONEs arrive
                if deadline is None:
                    self._cv.wait(1.0)
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise can.CanOperationError("cabinlink: transmit queue full (timeout)")
                self._cv.wait(left)

    @property
    def state(self) -> can.BusState:
        with self._cv:
            return _STATES.get(self._wire._state, can.BusState.ACTIVE)

    @state.setter
    def state(self, new_state: can.BusState) -> None:
        raise NotImplementedError("cabinlink: the bus state is the simulation's (use SimBus.force_bus_off)")

    def restart(self) -> bool:
        """Leave BUS_OFF (machine.CAN ``restart()``): counters cleared, pending frames dropped."""
        with self._cv:
            return bool(self._wire.restart())

    def counters(self) -> list[int] | None:
        """machine.CAN ``get_counters()`` + tx_frames, rx_frames, asked of the bus."""
        with self._cv:
            return self._wire.counters()

    def shutdown(self) -> None:
        if self._is_shutdown:
            return
        self._closing = True
        if self._reader.is_alive() and self._reader is not threading.current_thread():
            self._reader.join(2)
        with self._cv:
            self._wire.close()
            self._cv.notify_all()
        super().shutdown()
