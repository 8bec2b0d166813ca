"""A python-can bus presented with MicroPython's ``machine.CAN`` surface.

The protocol core's :class:`cabinlink.can_link.CanLink` drives a controller through the
``machine.CAN`` API (``send``/``recv``/``state``/``restart``). This adapter gives it any
python-can bus (``socketcan``, ``pcan``, ``slcan``, ``virtual``, ...), so the car and the
tests run the very same link code as the firmware.
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable

import can

# machine.CAN constants (MicroPython extmod/machine_can_port.h)
FLAG_RTR = 1
FLAG_EXT_ID = 2
STATE_STOPPED = 0
STATE_ACTIVE = 1
STATE_WARNING = 2
STATE_PASSIVE = 3
STATE_BUS_OFF = 4

_STATES = {
    can.BusState.ACTIVE: STATE_ACTIVE,
    can.BusState.PASSIVE: STATE_PASSIVE,
    can.BusState.ERROR: STATE_BUS_OFF,
}


def open_bus(spec: str, **kwargs: object) -> can.BusABC:
    """Open a python-can bus from ``interface:channel`` (e.g. ``socketcan:can0``,
    ``virtual:demo``, ``slcan:/dev/ttyACM0``). Raises ValueError naming the problem."""
    interface, sep, channel = spec.partition(":")
    if not sep or not interface or not channel:
        raise ValueError(f"CAN bus {spec!r}: expected INTERFACE:CHANNEL, e.g. socketcan:can0 or virtual:demo")
    try:
        return can.Bus(interface=interface, channel=channel, **kwargs)  # type: ignore[arg-type]
    except (can.CanError, OSError, ImportError, ValueError) as e:
        raise ValueError(f"CAN bus {spec!r}: {e}") from e


class PythonCanController:
    """``machine.CAN``-shaped view of a python-can bus.

    Contract (as MicroPython's): ``send`` returns a TX index, or None when the frame could
    not be queued; data longer than 8 bytes raises OverflowError; ``recv(lst)`` fills and
    returns the given ``[id, memoryview, flags, errors]`` list, or returns None; neither
    waits. :meth:`wake_on_rx` is the counterpart of ``irq(handler, IRQ_RX)``: an asyncio
    owner learns of a frame at once instead of on its next poll.
    """

    def __init__(self, bus: can.BusABC) -> None:
        self.bus = bus
        self._bus_off = False
        self.tx_errors = 0
        self._notifier: can.Notifier | None = None
        self._rx: deque[can.Message] = deque()

    def wake_on_rx(self, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> None:
        """From now on frames are taken off the bus by a python-can ``Notifier`` (a reader
        on ``loop`` when the bus has a file descriptor, else its thread), queued for
        :meth:`recv`, and ``wake()`` is called in ``loop`` after each arrives (at once when
        the reader runs there). Call it from ``loop``'s thread."""
        if self._notifier is not None:
            return
        loop_thread = threading.get_ident()

        def on_message(m: can.Message) -> None:
            self._rx.append(m)
            if threading.get_ident() == loop_thread:
                wake()
                return
            try:
                loop.call_soon_threadsafe(wake)
            except RuntimeError:
                pass  # the loop is closed: the car is stopping

        self._notifier = can.Notifier(self.bus, [on_message], timeout=0.1, loop=loop)

    def _take(self) -> can.Message | None:
        if self._notifier is None:
            return self.bus.recv(timeout=0)
        try:
            return self._rx.popleft()
        except IndexError:
            return None

    def send(self, can_id: int, data: bytes | bytearray | memoryview, flags: int = 0) -> int | None:
        if len(data) > 8:
            raise OverflowError("data too long")
        ext = bool(flags & FLAG_EXT_ID)
        if can_id < 0 or can_id >= (1 << 29 if ext else 1 << 11):
            raise ValueError("invalid id")
        if self._bus_off:
            raise OSError(5, "bus off")
        m = can.Message(arbitration_id=can_id, data=bytes(data), is_extended_id=ext,
                        is_remote_frame=bool(flags & FLAG_RTR))
        try:
            self.bus.send(m, timeout=0)
        except can.CanOperationError:
            self.tx_errors += 1
            return None
        return 0

    def recv(self, lst: list | None = None) -> list | None:
        m = self._take()
        if m is None or m.is_error_frame:
            return None
        flags = (FLAG_EXT_ID if m.is_extended_id else 0) | (FLAG_RTR if m.is_remote_frame else 0)
        if lst is None:
            return [m.arbitration_id, memoryview(bytes(m.data)), flags, 0]
        buf = lst[1].obj if isinstance(lst[1], memoryview) else bytearray(8)  # type: ignore[union-attr]
        n = len(m.data)
        buf[:n] = m.data
        lst[0] = m.arbitration_id
        lst[1] = memoryview(buf)[:n]
        lst[2] = flags
        lst[3] = 0
        return lst

    def state(self) -> int:
        if self._bus_off:
            return STATE_BUS_OFF
        try:
            return _STATES.get(self.bus.state, STATE_ACTIVE)
        except NotImplementedError:
            return STATE_ACTIVE

    def restart(self) -> None:
        self._bus_off = False

    def force_bus_off(self) -> None:
        """Test hook: behave as a controller that went bus-off."""
        self._bus_off = True

    def shutdown(self) -> None:
        if self._notifier is not None:
            self._notifier.stop()
            self._notifier = None
        self.bus.shutdown()
