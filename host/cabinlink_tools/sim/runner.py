"""Board runner: a firmware process per simulated board, under either runtime.

``BoardProcess`` starts a firmware script (normally ``firmware/main.py``) as its own
process, under CPython or under the MicroPython unix port, with the simulated platform
modules first on its module path and the board's filesystem (a directory) as its current
directory. It captures the board's console, restarts the process when the firmware resets
the board or its watchdog fires, and can cut the power at any moment (SIGKILL, then a
cold start: nothing the firmware had not written survives).
"""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

from . import world as W

SIM = Path(__file__).resolve().parent
PLATFORM = SIM / "platform"
ROOT = SIM.parents[2]
FIRMWARE = ROOT / "firmware"
LIB = FIRMWARE / "lib"
from .cli_args import RUNTIMES  # noqa: E402


def micropython_binary() -> str:
    exe = Path(sys.executable).parent / "micropython"
    if exe.exists():
        return str(exe)
    return "micropython"


_LIVE: weakref.WeakSet[BoardProcess] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    # A test that forgot stop() must not leave firmware processes behind.
    for p in list(_LIVE):
        p.stop()


class BoardProcess:
    """One simulated board's firmware process. Restarts on reset; thread-safe."""

    def __init__(self, world: W.World, board: W.SimBoard, runtime: str, script: Path | str,
                 fs_dir: Path, extra_path: Sequence[Path] = (), heap: str = "512K",
                 firmware: Path = FIRMWARE) -> None:
        # firmware: the tree the board runs (the repository's, or one compiled to .mpy), or a
        # ROMFS image file (mpremote's format; MicroPython runtime only): mounted at /rom and
        # imported in place, as on a board whose image has a ROMFS partition.
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
        if Path(firmware).is_file() and runtime != "micropython":
            raise ValueError("a ROMFS image runs under the MicroPython runtime only")
        self.world = world
        self.board = board
        self.runtime = runtime
        self.script = Path(script)
        self.fs_dir = Path(fs_dir)
        self.fs_dir.mkdir(parents=True, exist_ok=True)
        self.extra_path = [Path(p) for p in extra_path]
        self.heap = heap
        self.firmware = Path(firmware)
        self.log: list[str] = []
        self.boots = 0
        self.proc: subprocess.Popen[str] | None = None
        self._lock = threading.RLock()
        self._log_cv = threading.Condition()
        self._stopping = False
        board.on_reset = self._on_reset
        _LIVE.add(self)

    # --- life cycle ----------------------------------------------------------------
    def command(self) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that start this board's firmware."""
        # The platform modules first; the bus client they use (sim/canwire.py) last, so
        # no module of the simulation can shadow a firmware module.
        fw = self.firmware
        script = str(self.script)
        env = dict(os.environ, CABINLINK_WORLD=self.world.address, CABINLINK_BOARD=self.board.name)
        if fw.is_file():  # a ROMFS image: mp_boot.py mounts it at /rom
            env["CABINLINK_ROMFS"] = str(fw)
            code = ["/rom/lib", "/rom"]
            if self.script.parent == fw:
                script = "/rom/" + self.script.name
        else:
            code = [str(fw / "lib"), str(fw)]
        path = [str(PLATFORM), *map(str, self.extra_path), *code, str(SIM)]
        if self.runtime == "micropython":
            env["MICROPYPATH"] = ":".join(path + [".frozen"])
            return [micropython_binary(), "-X", f"heapsize={self.heap}", str(SIM / "mp_boot.py"),
                    script], env
        env["PYTHONPATH"] = ":".join(path)
        env["PYTHONUNBUFFERED"] = "1"
        return [sys.executable, str(SIM / "cpython_boot.py"), str(self.script)], env

    def start(self, cause: int = W.PWRON_RESET) -> None:
        with self._lock:
            self._stopping = False
            with self.world.lock:
                self.board.reset_cause = cause
                self.board.wdt_timeout_ms = None
                self.board.timers.clear()
            cmd, env = self.command()
            self.proc = subprocess.Popen(cmd, env=env, cwd=self.fs_dir, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True, bufsize=1, start_new_session=True)
            self.boots += 1
            threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._log_cv:
                self.log.append(line.rstrip("\n"))
                self._log_cv.notify_all()
        proc.wait()

    def _kill(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=5)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._kill()

    def cut_power(self, off_s: float = 0.0) -> None:
        """Power cut now, wherever the firmware is; power returns after ``off_s``."""
        with self._lock:
            self._kill()
            with self.world.lock:
                if self.board.conn is not None:
                    self.board.conn.closed = True
            if off_s:
                time.sleep(off_s)
            self.start(W.PWRON_RESET)

    def _on_reset(self, board: W.SimBoard, cause: int) -> None:
        # Called by the world (firmware reset, watchdog): restart off the world's lock.
        threading.Thread(target=self._restart, args=(cause,), daemon=True).start()

    def _restart(self, cause: int) -> None:
        with self._lock:
            if self._stopping:
                return
            p = self.proc
            if p is not None:
                try:
                    p.wait(timeout=1)  # a firmware reset exits by itself
                except subprocess.TimeoutExpired:
                    self._kill()
            self.start(cause)

    # --- observation -----------------------------------------------------------------
    def wait_for(self, text: str, timeout: float = 10.0, start: int = 0) -> int:
        """Index of the first log line from ``start`` on containing ``text``; raises
        TimeoutError with the log so far when it does not appear in time."""
        deadline = time.monotonic() + timeout
        with self._log_cv:
            while True:
                for i in range(start, len(self.log)):
                    if text in self.log[i]:
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{text!r} not seen on {self.board.name} "
                                       f"({self.runtime}); log:\n" + "\n".join(self.log[-40:]))
                self._log_cv.wait(left)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> BoardProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
