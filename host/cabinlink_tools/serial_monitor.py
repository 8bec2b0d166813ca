"""``cabinlink monitor``: a board's console (its log) over USB serial, with timestamps.

(``cabinlink_tools.monitor`` is something else: the CAN bus decoder.)

The firmware mirrors every log line to the console (docs/firmware.md, boot sequence), so
the serial port shows the unit's log as it happens. :func:`monitor` prints each line the
board sends, prefixed with the seconds since the monitor started, until Ctrl-C or the
timeout. With ``reset`` it restarts the firmware first, so the log starts at the boot:

- ``"soft"``: Ctrl-C (stop what runs), Ctrl-B (the friendly REPL), Ctrl-D: MicroPython's
  soft reboot, which runs ``boot.py`` and ``main.py`` again; the port stays open;
- ``"hard"``: ``machine.reset()`` over the raw REPL: the chip restarts as from its reset
  button. A board with native USB (ESP32-S3/C3/C6 without a USB-UART chip) drops off the bus
  meanwhile; the monitor reopens the port when it comes back.
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from .device import Device, DeviceError

_IDLE_FLUSH = 0.3  # print a line without its end (a prompt) after this long of silence


class _Lines:
    """Bytes in, timestamped lines out."""

    def __init__(self, out: TextIO, t0: float, until: str | None = None) -> None:
        self.out = out
        self.t0 = t0
        self.pending = b""
        self.until = until
        self.seen = False  # a line contained ``until``

    def feed(self, data: bytes) -> None:
        self.pending += data
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            self.emit(line)

    def flush(self) -> None:
        if self.pending:
            line, self.pending = self.pending, b""
            self.emit(line)

    def emit(self, line: bytes) -> None:
        text = line.replace(b"\r", b"").replace(b"\x04", b"").decode("utf-8", "replace")
        if self.until is not None and self.until in text:
            self.seen = True
        self.out.write(f"[{time.monotonic() - self.t0:9.3f}] {text}\n")
        self.out.flush()


def _soft_reset(ser: Any) -> None:
    ser.write(b"\r\x03\x03")  # stop the running program (twice: one may be swallowed)
    time.sleep(0.1)
    ser.write(b"\x02")  # leave the raw REPL if a tool left it there: the friendly REPL
    deadline = time.monotonic() + 5
    seen = b""
    while not seen.endswith(b">>> ") and time.monotonic() < deadline:
        seen += ser.read(max(1, ser.in_waiting))
    if not seen.endswith(b">>> "):
        raise DeviceError("the board did not show its REPL prompt after Ctrl-C: is MicroPython "
                          "running on it? Try --hard-reset, or press its reset button")
    ser.write(b"\x04")  # Ctrl-D at the friendly prompt: soft reboot, boot.py + main.py


def monitor(port: str, reset: str | None = None, timeout: float | None = None,
            baudrate: int = 115200, out: TextIO | None = None, wait: float = 0.0,
            until: str | None = None) -> int:
    """Print the board's console lines with timestamps until Ctrl-C, ``timeout`` seconds, or
    a line containing ``until``; ``reset``: None, ``"soft"`` or ``"hard"`` (see the module
    docstring). Returns 0, or 1 when ``until`` was given and not seen before the timeout;
    raises DeviceError when the port cannot be opened or the reset fails."""
    out = out or sys.stdout
    t0 = time.monotonic()
    deadline = None if timeout is None else t0 + timeout
    dev = Device(port, baudrate, soft_reset=False, wait=wait)
    dev.open()
    lines = _Lines(out, t0, until)
    try:
        if reset == "hard":  # the port stays open: a USB-UART bridge keeps it through the reset
            dev.enter_raw()
            dev.send_reset()
        dev.transport.serial.timeout = 0.1  # reads return often: timeout, Ctrl-C
        if reset == "soft":
            _soft_reset(dev.transport.serial)
        last_rx = time.monotonic()
        while (deadline is None or time.monotonic() < deadline) and not lines.seen:
            try:
                ser = dev.transport.serial
                data = ser.read(max(1, ser.in_waiting))
            except (OSError, DeviceError):  # the port went away (native USB reset, unplug)
                lines.flush()
                out.write(f"[{time.monotonic() - t0:9.3f}] (port lost; waiting for it to come back)\n")
                dev.close()
                _reopen(dev, deadline)
                dev.transport.serial.timeout = 0.1
                continue
            now = time.monotonic()
            if data:
                lines.feed(data)
                last_rx = now
            elif lines.pending and now - last_rx > _IDLE_FLUSH:
                lines.flush()
    except KeyboardInterrupt:
        pass
    finally:
        lines.flush()
        dev.close()
    return 1 if until is not None and not lines.seen else 0


def _reopen(dev: Device, deadline: float | None) -> None:
    while True:
        try:
            dev.open()
            return
        except DeviceError:
            if deadline is not None and time.monotonic() > deadline:
                raise DeviceError(f"{dev.port} did not come back") from None
            time.sleep(0.2)


def run(args: Any) -> int:
    """The ``cabinlink monitor`` handler."""
    reset = "hard" if args.hard_reset else "soft" if args.reset else None
    try:
        return monitor(args.port, reset=reset, timeout=args.timeout, baudrate=args.baud,
                       wait=args.wait, until=args.until)
    except DeviceError as e:
        print(f"cabinlink monitor: {e}", file=sys.stderr)
        return 1
