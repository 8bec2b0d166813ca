"""Start firmware under CPython with the parts of MicroPython that CPython lacks.

Usage (by the board runner): ``python cpython_boot.py main.py`` with the simulated
platform directory first on ``PYTHONPATH``. Before running the script it adds, with
MicroPython's semantics: ``time.ticks_ms/us/cpu``, ``ticks_add``, ``ticks_diff`` (period
2**30 as on the ESP32), ``time.sleep_ms/us``; ``asyncio.sleep_ms`` and
``asyncio.ThreadSafeFlag``; ``sys.print_exception``; and a ``micropython`` module
(``const``, ``schedule``, ``mem_info``, ``native``/``viper``, ...). CPython's own ``time``
and ``asyncio`` stay otherwise untouched. Under the MicroPython unix port none of this is
needed: the runner starts ``main.py`` directly.
"""
from __future__ import annotations

import asyncio
import runpy
import sys
import threading
import time
import traceback
import types
from pathlib import Path
from collections.abc import Callable
from typing import Any

PERIOD = 1 << 30
_T0 = time.monotonic_ns()


def _ticks(div: int) -> Callable[[], int]:
    return lambda: ((time.monotonic_ns() - _T0) // div) & (PERIOD - 1)


def ticks_diff(a: int, b: int) -> int:
    half = PERIOD >> 1
    return ((a - b + half) & (PERIOD - 1)) - half


def ticks_add(t: int, d: int) -> int:
    if not -(PERIOD >> 1) < d < (PERIOD >> 1):
        raise OverflowError("ticks interval overflow")
    return (t + d) & (PERIOD - 1)


class ThreadSafeFlag:
    """MicroPython's ``asyncio.ThreadSafeFlag``: ``set()`` from any thread or IRQ
    handler, one waiter, auto-clears on wake."""

    def __init__(self) -> None:
        self._flag = False
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def set(self) -> None:
        self._flag = True
        loop, ev = self._loop, self._event
        if loop is not None and ev is not None:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:
                pass  # loop closed

    def clear(self) -> None:
        self._flag = False

    async def wait(self) -> None:
        if self._event is None:
            self._event = asyncio.Event()
            self._loop = asyncio.get_running_loop()
        while not self._flag:
            await self._event.wait()
            self._event.clear()
        self._flag = False


def _run_with_watchers(real_run: Callable[..., Any]) -> Callable[..., Any]:
    # On a board an IRQ can be armed before the scheduler starts; on CPython a
    # socket watcher needs a running loop, so the platform queues it and the
    # wrapped asyncio.run installs it first thing.
    def run(main: Any, **kw: Any) -> Any:
        async def with_watchers() -> Any:
            w = sys.modules.get("_world")
            if w is not None:
                w.start_pending()
            return await main

        return real_run(with_watchers(), **kw)

    return run


def _micropython_module() -> types.ModuleType:
    m = types.ModuleType("micropython")
    m.const = lambda x: x  # type: ignore[attr-defined]
    m.native = m.viper = m.bytecode = lambda f: f  # type: ignore[attr-defined]
    m.opt_level = lambda *a: 0  # type: ignore[attr-defined]
    m.alloc_emergency_exception_buf = lambda n: None  # type: ignore[attr-defined]
    m.heap_lock = m.heap_unlock = lambda: 0  # type: ignore[attr-defined]
    m.kbd_intr = lambda c: None  # type: ignore[attr-defined]
    m.stack_use = lambda: 0  # type: ignore[attr-defined]
    queue: list[tuple[Callable[[Any], None], Any]] = []
    lock = threading.Lock()

    def schedule(fn: Callable[[Any], None], arg: Any) -> None:
        with lock:
            if len(queue) >= 4:
                raise RuntimeError("schedule queue full")
            queue.append((fn, arg))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            loop.call_soon(_run_scheduled)
        else:
            _run_scheduled()

    def _run_scheduled() -> None:
        while True:
            with lock:
                if not queue:
                    return
                fn, arg = queue.pop(0)
            fn(arg)

    def mem_info(verbose: int = 0) -> None:
        print("mem: total=n/a (CPython)")

    m.schedule = schedule  # type: ignore[attr-defined]
    m.mem_info = mem_info  # type: ignore[attr-defined]
    return m


def install() -> None:
    """Add MicroPython's extras to this CPython process (idempotent)."""
    t: Any = time
    if not hasattr(t, "ticks_ms"):
        t.ticks_ms = _ticks(1_000_000)
        t.ticks_us = _ticks(1_000)
        t.ticks_cpu = _ticks(1)
        t.ticks_diff = ticks_diff
        t.ticks_add = ticks_add
        t.sleep_ms = lambda ms: time.sleep(ms / 1000)
        t.sleep_us = lambda us: time.sleep(us / 1_000_000)
    a: Any = asyncio
    if not hasattr(a, "sleep_ms"):
        a.sleep_ms = lambda ms: asyncio.sleep(ms / 1000)
        a.ThreadSafeFlag = ThreadSafeFlag
        a.run = _run_with_watchers(asyncio.run)
    s: Any = sys
    if not hasattr(s, "print_exception"):
        s.print_exception = lambda e, file=None: traceback.print_exception(e, file=file or sys.stdout)
    sys.modules.setdefault("micropython", _micropython_module())


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: cpython_boot.py MAIN_PY")
    install()
    # Python put this bootstrap's directory first on sys.path; a board has no such
    # entry, and it holds simulation modules that must not shadow firmware ones.
    here = Path(__file__).resolve().parent
    if sys.path and Path(sys.path[0] or ".").resolve() == here:
        del sys.path[0]  # only the implicit entry: the runner may list this dir later
    sys.argv = argv[1:]
    runpy.run_path(argv[1], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv)
