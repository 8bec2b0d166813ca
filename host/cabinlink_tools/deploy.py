"""``cabinlink deploy``: put the firmware on a board, sending only what changed.

The tree (:func:`build`): ``firmware/`` compiled with mpy-cross for the board's
``mpy_arch`` (``.py`` sources with ``--source``), ``main.py`` always as source (MicroPython
runs only a ``main.py``), ``boards/<board>.json`` as ``/board.json``; with ``--app`` only that
app's package under ``apps/`` (the runtime, the protocol core and the drivers always).

What deploy owns on the board (and may overwrite or remove): the tree's files in ``/``
(``/main.py``, ``/board.json``; their ``.tmp`` twins, ``/main.py.off``), and everything
under ``/runtime``, ``/apps``, ``/drivers`` and ``/lib/cabinlink``. Nothing else: not ``/config.json``, ``/settings.json``,
``/boot.json``, ``/log.json`` or their ``.tmp`` files, not other packages in ``/lib``.

One run (:func:`deploy`):

1. Enter the raw REPL (mpremote's ``SerialTransport``); hash every owned file on the board
   (``hashlib.sha256`` in 1 KB chunks, one command for the whole tree) and compare with the
   local tree. Nothing differs: done, no file data sent, nothing reset.
2. **Disarm**: rename ``/main.py`` to ``/main.py.off`` and hard-reset the board, so from here
   on no firmware runs (no app driving outputs with half-old code, no watchdog that would
   reset the board in the middle of the transfer) and a reset during the deploy boots to the
   REPL, never into a mixed tree.
3. Write each changed file atomically (``Device.put``: ``.tmp``, SHA-256 checked on the
   board, renamed over the old one), create and remove directories, remove owned files that
   are not in the tree (stale ``.tmp`` files of an interrupted run included).
4. **Arm**, last: ``/main.py.off`` renamed back when it is still the right ``main.py``, else
   the new ``main.py`` written; then a hard reset boots the new firmware (``--no-reset``:
   the board is left at the REPL).

An interrupted deploy (cable pulled, host killed, board reset) therefore leaves a board that
has no ``/main.py``: it boots to the REPL, and the next deploy recognises the state (a
``main.py.off`` or a missing ``main.py``), says so, and finishes the job, sending only the
files still missing or different.
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .device import Device, DeviceError, load_board

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
MAIN = "/main.py"
MAIN_OFF = "/main.py.off"
BOARD_JSON = "/board.json"

# Lists the owned files on the board: one (path, is_dir, sha256 hex) literal per line.
_MANIFEST = """\
def _cl_walk(d):
 try:l=list(os.ilistdir(d))
 except OSError:return
 for e in l:
  p=d+'/'+e[0]
  if e[1]&0x4000:
   print(repr((p,1,'')));_cl_walk(p)
  else:print(repr((p,0,_cl_h(p))))
for n in %(files)r:
 try:os.stat(n)
 except OSError:continue
 print(repr((n,0,_cl_h(n))))
for d in %(dirs)r:_cl_walk(d)
"""

# The unit's config.json, for a warning when it does not fit what is deployed.
_CONFIG_PEEK = """\
import json
try:
 with open('/config.json') as f:c=json.load(f)
 print(repr((c.get('board'),c.get('app'))))
except Exception:print('None')
"""


@dataclass
class LocalFile:
    """One file of the tree to deploy."""

    path: str  # on the board, absolute ("/lib/cabinlink/codec.mpy")
    data: bytes
    sha256: str


@dataclass
class Plan:
    """What a deploy does to one board: the difference between its files and the tree."""

    send: list[str] = field(default_factory=list)  # owned files to write (main.py excluded)
    skip: list[str] = field(default_factory=list)  # already identical
    remove: list[str] = field(default_factory=list)  # owned files not in the tree
    mkdirs: list[str] = field(default_factory=list)
    rmdirs: list[str] = field(default_factory=list)  # deepest first
    main: str = "ok"  # "ok" (in place), "write" (send main.py), "rename" (main.py.off back)
    armed: bool = False  # /main.py exists now (a firmware may be running)
    interrupted: bool = False  # traces of a deploy that did not finish

    @property
    def changed(self) -> bool:
        return bool(self.send or self.remove or self.mkdirs or self.rmdirs or self.main != "ok")


@dataclass
class DeployResult:
    """What :func:`deploy` did (or, with ``dry_run``, would do)."""

    board: str
    arch: str
    source: bool
    app: str | None
    plan: Plan
    copied: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    file_bytes: int = 0  # file content written to the board
    wire_bytes: int = 0  # everything sent over the serial port (commands included)
    seconds: float = 0.0
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.plan.skip) + (1 if self.plan.main != "write" else 0)


def owned_dirs(root: Path = FIRMWARE) -> list[str]:
    """The directories deploy owns on the board: each top-level firmware directory, except
    ``lib`` where only its subdirectories (``/lib/cabinlink``): ``/lib`` is shared with
    packages installed by other means (``mip``)."""
    dirs = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        if d.name == "lib":
            dirs += [f"/lib/{s.name}" for s in sorted(d.iterdir())
                     if s.is_dir() and not s.name.startswith(("_", "."))]
        else:
            dirs.append(f"/{d.name}")
    return dirs


def build(board: dict[str, Any], out: Path, app: str | None = None, source: bool = False,
          root: Path = FIRMWARE) -> dict[str, LocalFile]:
    """Build the tree for ``board`` in directory ``out``; returns it keyed by board path.

    ``app``: only ``apps/<app>`` of the apps (all when None). ``source``: copy the ``.py``
    files instead of compiling them. Raises DeviceError for an unknown app, a board without
    wiring for it, an unknown architecture, or a file that does not compile."""
    from . import mpycheck

    apps = sorted(p.name for p in (root / "apps").iterdir() if (p / "__init__.py").exists())
    if app is not None:
        if app not in apps:
            raise DeviceError(f"unknown app {app!r}; the firmware has: {', '.join(apps)}")
        wired = board.get("apps") or {}
        if app not in wired:
            raise DeviceError(f"board {board.get('id')!r} has no wiring for app {app!r} "
                              f"(it has: {', '.join(wired) or 'none'}); pick another app or board")

    def include(rel: Path) -> bool:  # apps/<name>/... only for the chosen app
        parts = rel.parts
        return app is None or len(parts) < 3 or parts[0] != "apps" or parts[1] == app

    out.mkdir(parents=True, exist_ok=True)
    if source:
        for src in sorted(root.rglob("*.py")):
            rel = src.relative_to(root)
            if include(rel):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(src.read_bytes())
    else:
        arch = board.get("mpy_arch")
        if not isinstance(arch, str):
            raise DeviceError(f"board {board.get('id')!r} names no mpy_arch; fix its board file")
        try:
            mpycheck.compile_tree(out, root, march=arch, include=include)
        except (ValueError, RuntimeError) as e:
            raise DeviceError(f"compiling the firmware: {e}") from None
    spec = json.dumps(board, separators=(",", ":")).encode()
    (out / "board.json").write_bytes(spec)
    tree: dict[str, LocalFile] = {}
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        data = f.read_bytes()
        path = "/" + f.relative_to(out).as_posix()
        tree[path] = LocalFile(path, data, hashlib.sha256(data).hexdigest())
    return tree


def plan(tree: dict[str, LocalFile], remote: dict[str, str], remote_dirs: set[str],
         dirs: list[str]) -> Plan:
    """Compare the tree with the board's owned files (``remote``: path -> sha256 hex;
    ``remote_dirs``: owned subdirectories found) and decide what to do."""
    p = Plan(armed=MAIN in remote)
    main = tree[MAIN]
    for path, f in tree.items():
        if path == MAIN:
            continue
        (p.skip if remote.get(path) == f.sha256 else p.send).append(path)
    if remote.get(MAIN) == main.sha256:
        p.main = "ok"
    elif MAIN not in remote and remote.get(MAIN_OFF) == main.sha256:
        p.main = "rename"
    else:
        p.main = "write"
    p.remove = sorted(path for path in remote if path not in tree and path != MAIN_OFF)
    if MAIN_OFF in remote and p.main == "ok":
        p.remove.append(MAIN_OFF)  # left by an interrupted arm: main.py is in place
    needed = set()
    for path in tree:
        parent = path.rsplit("/", 1)[0]
        while parent:
            needed.add(parent)
            parent = parent.rsplit("/", 1)[0]
    p.mkdirs = sorted(d for d in needed if d not in remote_dirs and d not in ("/lib",)
                      and any(d == o or d.startswith(o + "/") for o in dirs))
    if any(d not in remote_dirs for d in needed if d.startswith("/lib/")):
        p.mkdirs.insert(0, "/lib")
    p.rmdirs = sorted((d for d in remote_dirs if d not in needed),
                      key=lambda d: (-d.count("/"), d))
    p.interrupted = (MAIN_OFF in remote or any(path.endswith(".tmp") for path in remote)
                     or (MAIN not in remote and bool(remote)))
    return p


def root_files(tree: dict[str, LocalFile]) -> list[str]:
    """The files deploy owns in ``/``: the tree's (``main.py``, ``board.json``, ...), their
    ``.tmp`` twins and ``main.py.off``. Only while the tree has them: a root file the tree
    no longer has is left alone (it may be the user's own ``boot.py``)."""
    top = sorted(p for p in tree if p.count("/") == 1)
    return top + [p + ".tmp" for p in top] + [MAIN_OFF]


def scan(dev: Device, dirs: list[str], files_in_root: list[str]) -> tuple[dict[str, str], set[str]]:
    """The board's owned files (path -> sha256 hex) and owned subdirectories."""
    dev.helpers()
    files: dict[str, str] = {}
    subdirs: set[str] = set()
    for entry in dev.lines(_MANIFEST % {"files": files_in_root, "dirs": dirs},
                           "listing the files on the board"):
        path, is_dir, sha = entry
        if is_dir:
            subdirs.add(path)
        else:
            files[path] = sha
    # the owned roots themselves, where they exist (a listed child proves it)
    for d in dirs:
        if any(k.startswith(d + "/") for k in list(files) + list(subdirs)):
            subdirs.add(d)
    return files, subdirs


def deploy(board_name: str, port: str, app: str | None = None, source: bool = False,
           dry_run: bool = False, reset: bool = True, *, baudrate: int = 115200,
           on_progress: Callable[[str, int, int], None] | None = None,
           out: TextIO | None = None, show_progress: bool | None = None,
           firmware: Path = FIRMWARE, wait: float = 0.0) -> DeployResult:
    """Deploy the firmware for ``board_name`` to the board at ``port`` (see the module
    docstring for the order of operations). ``on_progress(path, done, size)`` is called after
    every chunk written (an exception it raises interrupts the deploy there). Messages go to
    ``out`` (default stdout); a rich progress bar to stderr when it is a terminal (or
    ``show_progress``). ``firmware``: the tree to deploy (default: the repository's).
    ``wait``: seconds to wait for the port to appear. Raises DeviceError with one clear
    message on any failure."""
    out = out or sys.stdout
    t0 = time.monotonic()
    board = load_board(board_name)
    arch = str(board.get("mpy_arch", "?"))
    dirs = owned_dirs(firmware)
    with tempfile.TemporaryDirectory(prefix="cabinlink-deploy-") as tmp:
        tree = build(board, Path(tmp), app=app, source=source, root=firmware)
    result = DeployResult(board_name, arch, source, app, Plan(), dry_run=dry_run)
    with Device(port, baudrate, wait=wait) as dev:
        remote, remote_dirs = scan(dev, dirs, root_files(tree))
        p = result.plan = plan(tree, remote, remote_dirs, dirs)
        result.warnings = _config_warnings(dev, board_name, app, tree)
        if p.interrupted:
            print("a previous deploy did not finish on this board: "
                  + ("a deploy would finish it" if dry_run else "finishing it"), file=out)
        if dry_run or not p.changed:
            result.wire_bytes = dev.bytes_sent
            result.seconds = time.monotonic() - t0
            _leave(dev)
            return result
        if p.armed:
            dev.exec(f"_cl_mv({MAIN!r},{MAIN_OFF!r})", "disarming main.py")
            if MAIN_OFF in p.remove:  # a stale one was just replaced by the current main.py
                p.remove.remove(MAIN_OFF)
            if p.main == "ok":
                p.main = "rename"
            if reset:  # stop the running firmware (and its watchdog) for the transfer
                dev.hard_reset(reconnect=True)
        _transfer(dev, tree, p, result, on_progress, show_progress)
        result.wire_bytes = dev.bytes_sent
        if reset:
            dev.hard_reset(reconnect=False)
            result.wire_bytes = dev.bytes_sent
        else:
            _leave(dev)
    result.seconds = time.monotonic() - t0
    return result


def _leave(dev: Device) -> None:
    """Back to the friendly REPL, as mpremote leaves a board."""
    try:
        dev.transport.exit_raw_repl()
    except Exception:
        pass


def _transfer(dev: Device, tree: dict[str, LocalFile], p: Plan, result: DeployResult,
              on_progress: Callable[[str, int, int], None] | None,
              show_progress: bool | None) -> None:
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn)

    dev.helpers()  # again after a reset: a new session
    console = Console(stderr=True)
    show = console.is_terminal if show_progress is None else show_progress
    files = [tree[path] for path in sorted(p.send, key=lambda s: (s != BOARD_JSON, s))]
    if p.main == "write":
        files.append(tree[MAIN])  # last: the board boots the new tree only once it is complete
    total = sum(len(f.data) for f in files)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=console, transient=True,
                  disable=not show) as bar:
        task = bar.add_task("deploy", total=total)
        if p.mkdirs:
            dev.exec("for d in %r:\n try:os.mkdir(d)\n except OSError:pass\n" % p.mkdirs,
                     "creating directories")
        base = 0
        for f in files:
            if f.path == MAIN:
                _remove(dev, p, result)
            bar.update(task, description=f.path.lstrip("/"))

            def step(n: int, f: LocalFile = f, base: int = base) -> None:
                result.file_bytes = base + n
                bar.update(task, completed=base + n)
                if on_progress is not None:
                    on_progress(f.path, n, len(f.data))

            dev.put(f.path, f.data, f.sha256, step)
            base += len(f.data)
            result.copied.append(f.path)
        _remove(dev, p, result)
        if p.main == "write":
            dev.exec(f"try:os.remove({MAIN_OFF!r})\nexcept OSError:pass", "removing main.py.off")
        elif p.main == "rename":
            dev.exec(f"_cl_mv({MAIN_OFF!r},{MAIN!r})", "arming main.py")


def _remove(dev: Device, p: Plan, result: DeployResult) -> None:
    """Remove stale owned files and directories (once per deploy)."""
    if result.removed or not (p.remove or p.rmdirs):
        return
    dev.exec("for n in %r:\n try:os.remove(n)\n except OSError:pass\n"
             "for n in %r:\n try:os.rmdir(n)\n except OSError:pass\n" % (p.remove, p.rmdirs),
             "removing stale files")
    result.removed = list(p.remove) + [d + "/" for d in p.rmdirs]


def _config_warnings(dev: Device, board_name: str, app: str | None,
                     tree: dict[str, LocalFile]) -> list[str]:
    got = dev.lines(_CONFIG_PEEK, "reading /config.json")
    cfg = got[0] if got else None
    if cfg is not None and not isinstance(cfg[0], str):
        cfg = None
    fix = f"run `cabinlink config --board {board_name} --port PORT --app APP`"
    if cfg is None:
        return [f"the board has no valid /config.json yet: {fix} (the firmware starts in "
                "safe mode without it)"]
    warnings = []
    cboard, capp = cfg
    if cboard != board_name:
        warnings.append(f"/config.json on the board is for board {cboard!r}, not {board_name!r}: {fix}")
    if isinstance(capp, str) and f"/apps/{capp}/__init__.mpy" not in tree and \
            f"/apps/{capp}/__init__.py" not in tree:
        warnings.append(f"/config.json runs app {capp!r}, which this deploy does not include: "
                        f"deploy with --app {capp} (or without --app), or {fix}")
    return warnings


def report(r: DeployResult) -> str:
    """The summary lines for a person."""
    kind = "source" if r.source else f".mpy for {r.arch}"
    what = f"{r.board} ({kind}{', app ' + r.app if r.app else ', all apps'})"
    p = r.plan
    if r.dry_run:
        lines = [f"dry run for {what}: would copy {len(p.send) + (p.main == 'write')}, "
                 f"skip {r.skipped}, remove {len(p.remove) + len(p.rmdirs)}"]
        lines += [f"  copy    {s.lstrip('/')}" for s in p.send + ([MAIN] if p.main == "write" else [])]
        lines += [f"  remove  {s.lstrip('/')}" for s in p.remove + [d + "/" for d in p.rmdirs]]
    elif not p.changed:
        lines = [f"up to date: {what}, {r.skipped} files checked, no file data sent "
                 f"({r.wire_bytes} bytes of commands, {r.seconds:.1f} s)"]
    else:
        lines = [f"deployed {what}: {len(r.copied)} copied, {r.skipped} skipped, "
                 f"{len(r.removed)} removed; {r.file_bytes} bytes of file data, "
                 f"{r.wire_bytes} bytes sent in all, {r.seconds:.1f} s"]
        if r.removed:
            lines.append("removed: " + ", ".join(s.lstrip("/") for s in r.removed))
    lines += [f"warning: {w}" for w in r.warnings]
    return "\n".join(lines)


def run(args: Any) -> int:
    """The ``cabinlink deploy`` handler: 0 on success, 1 with one message on failure."""
    try:
        r = deploy(args.board, args.port, app=args.app, source=args.source,
                   dry_run=args.dry_run, reset=args.reset, baudrate=args.baud, wait=args.wait)
    except DeviceError as e:
        print(f"cabinlink deploy: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cabinlink deploy: interrupted (the board never boots a half-deployed tree): "
              "run the same command again to finish", file=sys.stderr)
        return 130
    print(report(r))
    return 0
