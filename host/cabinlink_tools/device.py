"""A MicroPython board on a serial port, as the device tools (deploy, config, monitor) use it.

:class:`Device` wraps mpremote's ``SerialTransport`` (the raw REPL; no mpremote subprocess)
with what those tools need on top of it:

- one clear :class:`DeviceError` for everything that can go wrong on the way to the board: a
  port that does not exist, is busy (another program holds it) or is not readable, a device
  that does not answer like MicroPython, a board lost mid-command, a failed command on the
  board (the last line of its traceback);
- helpers defined once per session on the board (``_cl_h`` hashes a file with
  ``hashlib.sha256`` in 1 KB chunks, ``_cl_mv`` renames over a file, also on FAT);
- :meth:`Device.put` writes a file **atomically**: to ``<path>.tmp`` in base64 chunks, then
  checks the SHA-256 of the ``.tmp`` on the board and renames it over ``<path>``, so an
  interrupted transfer leaves a stray ``.tmp``, never a half-written ``<path>``;
- a count of every byte sent to the board (:attr:`Device.bytes_sent`), for the reports and
  the benchmark;
- hard reset with reconnection (a board with native USB drops off the bus while it resets).

:func:`load_board` reads a board description (``boards/<name>.json``) for all of them.
"""
from __future__ import annotations

import ast
import binascii
import contextlib
import errno
import io
import json
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"
CHUNK = 3072  # file bytes per raw-REPL command (4 KB of base64: small for an ESP32 heap)

# Defined on the board once per session (MicroPython; compact: every byte crosses the UART).
_HELPERS = """\
import os, hashlib, binascii
def _cl_h(p):
 h=hashlib.sha256();b=bytearray(1024);m=memoryview(b)
 with open(p,'rb') as f:
  while 1:
   n=f.readinto(b)
   if not n:break
   h.update(m[:n])
 return binascii.hexlify(h.digest()).decode()
def _cl_mv(a,b):
 try:os.rename(a,b)
 except OSError:
  os.stat(a);os.remove(b);os.rename(a,b)
def _cl_fin(t,p,e):
 global _cl_f
 _cl_f.close();_cl_f=None
 if _cl_h(t)!=e:
  os.remove(t);raise ValueError('sha256 of %s does not match what was sent'%t)
 _cl_mv(t,p)
"""


class DeviceError(Exception):
    """What went wrong with the board, and what to do: printed as is, without a traceback."""


def known_boards() -> list[str]:
    """The board names ``boards/*.json`` describes (schema files excluded)."""
    return sorted(p.stem for p in BOARDS_DIR.glob("*.json") if "schema" not in p.stem)


def load_board(name: str) -> dict[str, Any]:
    """The description of board ``name`` (``boards/<name>.json``) as a dict.

    Raises DeviceError naming the known boards when there is no such board, or saying what
    is wrong with the file. Uses ``cabinlink_tools.boards.load_board`` (schema-checked) when
    that module exists, else reads the file directly."""
    path = BOARDS_DIR / f"{name}.json"
    if not name or "/" in name or not path.is_file():
        raise DeviceError(f"unknown board {name!r}; known boards: {', '.join(known_boards())} "
                          "(wiring and sources: docs/boards.md)")
    try:
        from .boards import load_board as checked  # type: ignore[import-not-found, attr-defined]
    except ImportError:
        checked = None
    try:
        if checked is not None:
            spec = checked(name)
        else:
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
    except (OSError, ValueError, KeyError) as e:  # BoardError is a ValueError naming the file
        text = str(e)
        raise DeviceError(text if path.name in text else f"boards/{path.name}: {text}") from None
    if not isinstance(spec, dict):
        raise DeviceError(f"board file {path.name}: not a JSON object")
    return dict(spec)


def _is_device_path(port: str) -> bool:
    """A port named by a filesystem path (not a pyserial URL, not a Windows COM name)."""
    return "://" not in port and os.name != "nt"


def _port_problem(port: str) -> str:
    """Why ``port`` cannot be opened, as a sentence that says what to do."""
    if "://" in port:
        return f"cannot open {port}: check the URL and that the device server runs"
    if os.name == "nt":
        return (f"cannot open {port}: check the COM port in Device Manager and close any "
                "program that uses it")
    if not os.path.exists(port):
        return (f"{port}: no such serial port. Is the board plugged in (with a data cable)? "
                "`cabinlink doctor` lists the serial ports; on Linux they are usually "
                "/dev/ttyUSB0 or /dev/ttyACM0, on macOS /dev/cu.usbserial-* or /dev/cu.usbmodem*")
    try:
        fd = os.open(port, os.O_RDWR | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_NONBLOCK", 0))
    except PermissionError:
        return (f"{port}: permission denied. On Linux add yourself to the group that owns it "
                f"(`sudo usermod -aG dialout $USER`, then log in again)")
    except OSError as e:
        if e.errno == errno.EBUSY:
            return f"{port} is busy: close the program that uses it (a serial monitor, mpremote, ...)"
        return f"{port}: {e.strerror or e}"
    try:
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return (f"{port} is busy: another program holds it (a serial monitor, mpremote, "
                    "esptool, another cabinlink). Close it and try again")
        fcntl.flock(fd, fcntl.LOCK_UN)
    except ImportError:  # not POSIX
        pass
    finally:
        os.close(fd)
    return f"cannot open {port}"


class Device:
    """A MicroPython board at ``port``, driven over its raw REPL. Use as a context manager:
    ``with Device(port) as dev: dev.eval("1 + 1")``; entering opens the port and the raw
    REPL (with a soft reset unless ``soft_reset=False``), leaving closes the port. Every
    method raises :class:`DeviceError` (and nothing else) when the board misbehaves."""

    def __init__(self, port: str, baudrate: int = 115200, *, soft_reset: bool = True,
                 timeout: float = 10.0, wait: float = 0.0, connect_timeout: float = 10.0) -> None:
        """``timeout``: seconds a read may wait for the board before it counts as lost.
        ``connect_timeout``: seconds the board has to show its raw REPL.
        ``wait``: seconds :meth:`open` waits for a missing port to appear (a board with
        native USB shows up a moment after it was flashed or reset)."""
        self.port = port
        self.wait = wait
        self.connect_timeout = connect_timeout
        self.baudrate = baudrate
        self.soft_reset = soft_reset
        self.timeout = timeout
        self.bytes_sent = 0
        self._t: Any = None
        self._helpers = False

    # -- connection ---------------------------------------------------------------------
    def __enter__(self) -> Device:
        self.open()
        try:
            self.enter_raw()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        """Open the serial port (exclusively); DeviceError saying why when it cannot."""
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        deadline = time.monotonic() + self.wait
        while _is_device_path(self.port) and not os.path.exists(self.port) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            t = SerialTransport(self.port, baudrate=self.baudrate, exclusive=True,
                                timeout=self.timeout)
        except (TransportError, OSError, ValueError):
            raise DeviceError(_port_problem(self.port)) from None
        write = t.serial.write

        def counted(data: bytes) -> int | None:
            self.bytes_sent += len(data)
            return write(data)

        t.serial.write = counted
        self._t = t
        self._helpers = False

    def close(self) -> None:
        """Close the port (idempotent); the board keeps running whatever it runs."""
        t, self._t = self._t, None
        if t is not None:
            try:
                t.close()
            except Exception:  # the port may already be gone (unplugged board)
                pass

    def enter_raw(self) -> None:
        """Stop what the board runs (Ctrl-C) and enter its raw REPL."""
        def enter(t: Any) -> None:
            # Short reads while waiting for the banner (on a pty a read blocks for the whole
            # timeout), and mpremote's own print() of what it got instead kept quiet.
            t.serial.timeout = min(self.timeout, 0.5)
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    t.enter_raw_repl(soft_reset=self.soft_reset,
                                     timeout_overall=self.connect_timeout)
            finally:
                t.serial.timeout = self.timeout

        self._call(enter,
                   "connecting", lost=(
                       f"the device on {self.port} does not answer like MicroPython (no raw "
                       "REPL). Is MicroPython flashed (`cabinlink flash`)? Is it the board's "
                       "USB port? If the board runs a program that ignores Ctrl-C, press its "
                       "reset button and try again"))
        self._helpers = False

    @property
    def transport(self) -> Any:
        """The underlying ``mpremote.transport_serial.SerialTransport`` (open)."""
        if self._t is None:
            raise DeviceError("not connected")
        return self._t

    def _call(self, fn: Callable[[Any], Any], what: str, lost: str | None = None) -> Any:
        from mpremote.transport import TransportError, TransportExecError

        t = self.transport
        try:
            return fn(t)
        except TransportExecError as e:
            lines = [ln for ln in e.error_output.strip().splitlines() if ln.strip()]
            raise DeviceError(f"{what}: the board said: {lines[-1] if lines else e}") from None
        except (TransportError, OSError, ValueError, struct.error) as e:
            raise DeviceError(lost or (
                f"lost contact with the board on {self.port} while {what} ({e or type(e).__name__}). "
                "Check the cable and run the command again (a deploy resumes where it stopped)")
                              ) from None

    # -- commands -----------------------------------------------------------------------
    def exec(self, code: str, what: str = "running a command") -> bytes:
        """Run ``code`` in the raw REPL; its output. A board exception is a DeviceError
        ``"<what>: the board said: <last traceback line>"``."""
        out: bytes = self._call(lambda t: t.exec(code), what)
        return out

    def eval(self, expr: str, what: str = "reading a value") -> Any:
        """The value of ``expr`` on the board (a Python literal: repr() read back)."""
        out = self.exec(f"print(repr({expr}))", what).decode(errors="replace").strip()
        try:
            return ast.literal_eval(out)
        except (ValueError, SyntaxError):
            raise DeviceError(f"{what}: unexpected answer from the board: {out[:80]!r}") from None

    def lines(self, code: str, what: str) -> list[Any]:
        """Run ``code``, which prints one Python literal per line; the literals."""
        out = self.exec(code, what).decode(errors="replace")
        result = []
        for line in out.splitlines():
            line = line.strip()
            if line:
                try:
                    result.append(ast.literal_eval(line))
                except (ValueError, SyntaxError):
                    raise DeviceError(f"{what}: unexpected answer from the board: {line[:80]!r}") from None
        return result

    def helpers(self) -> None:
        """Define the session helpers on the board (once per raw-REPL session)."""
        if not self._helpers:
            self.exec(_HELPERS, "preparing the board (hashlib, binascii)")
            self._helpers = True

    # -- files ----------------------------------------------------------------------------
    def read(self, path: str) -> bytes | None:
        """The content of file ``path`` on the board, or None if it does not exist."""
        code = (f"try:\n f=open({path!r},'rb')\nexcept OSError:\n print('None')\nelse:\n"
                " import binascii\n while 1:\n  b=f.read(768)\n  if not b:break\n"
                "  print(repr(binascii.b2a_base64(b)))\n f.close()\n print(\"b''\")")
        parts = self.lines(code, f"reading {path}")
        if parts == [None]:
            return None
        return b"".join(binascii.a2b_base64(p) for p in parts)

    def put(self, path: str, data: bytes, sha256: str,
            progress: Callable[[int], None] | None = None) -> None:
        """Write ``data`` (whose SHA-256 hex is ``sha256``) to ``path`` atomically: to
        ``path + '.tmp'``, checked on the board, renamed over ``path``. ``progress(n)`` is
        called after each chunk with the bytes written so far; an exception it raises stops
        the transfer there (as a host that dies would)."""
        self.helpers()
        tmp = path + ".tmp"
        head = f"_cl_f=open({tmp!r},'wb');_cl_w=_cl_f.write;_cl_a=binascii.a2b_base64\n"
        done = 0
        chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
        for i, chunk in enumerate(chunks):
            code = head if i == 0 else ""
            if chunk:
                code += f"_cl_w(_cl_a({binascii.b2a_base64(chunk, newline=False)!r}))\n"
            if i == len(chunks) - 1:
                code += f"_cl_fin({tmp!r},{path!r},{sha256!r})\n"
            self.exec(code, f"writing {path}")
            done += len(chunk)
            if progress is not None:
                progress(done)

    # -- resets -------------------------------------------------------------------------
    def send_reset(self) -> None:
        """Have the board run ``machine.reset()`` (from the raw REPL) and return at once;
        the port stays open (on a board with native USB it goes away by itself)."""
        self._call(lambda t: t.exec_raw_no_follow("import machine\nmachine.reset()"),
                   "resetting the board")

    def hard_reset(self, reconnect: bool = True, timeout: float = 15.0) -> None:
        """``machine.reset()``: the board reboots (boot.py, then main.py if there is one).
        With ``reconnect``, wait for it to come back (reopening the port, which a board with
        native USB drops meanwhile) and enter the raw REPL again; else close the port."""
        self.send_reset()
        time.sleep(0.1)
        self.close()
        if not reconnect:
            return
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            time.sleep(0.3)
            try:
                self.open()
                self.enter_raw()
                return
            except DeviceError as e:
                last = str(e)
                self.close()
            if time.monotonic() > deadline:
                raise DeviceError(f"the board did not come back after a reset in {timeout:.0f} s "
                                  f"({last}). Press its reset button and run the command again")

