"""The virtual board: the MicroPython unix port behind a pty, driven by the real mpremote.

Every test talks to the board the way the host tools talk to an ESP32: the ``mpremote``
command line on ``board.port``, or ``mpremote.transport_serial.SerialTransport`` from Python.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from runtimes import micropython_binary

from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from cabinlink_tools.sim.virtual_board import RESET_EXIT_CODE, VirtualBoard

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(os.name != "posix", reason="needs POSIX pseudo-terminals"),
]


@pytest.fixture
def board():
    with VirtualBoard(micropython=micropython_binary()) as b:
        yield b


def mpremote(board: VirtualBoard, *args: str, check: bool = True) -> str:
    """Run the mpremote command line against the board; its stdout, CR-LF made LF."""
    r = subprocess.run([sys.executable, "-m", "mpremote", "connect", board.port, *args],
                       capture_output=True, timeout=60)
    out = r.stdout.decode(errors="replace").replace("\r\n", "\n")
    if check and r.returncode != 0:
        pytest.fail(f"mpremote {' '.join(args)} exited {r.returncode}:\n{out}\n"
                    f"{r.stderr.decode(errors='replace')}\nboard log tail: {board.log[-500:]!r}")
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_exec_eval_and_a_root_that_is_not_the_host_root(board: VirtualBoard) -> None:
    (board.root / "from_host.txt").write_text("hello")
    assert mpremote(board, "eval", "6 * 7").strip() == "42"
    out = mpremote(board, "exec", "import os; print(sorted(os.listdir('/')), os.getcwd())")
    assert out.strip() == "['from_host.txt'] /"
    assert mpremote(board, "exec", "print(open('/from_host.txt').read())").strip() == "hello"
    # A sentinel written at the board's / lands in board.root, not in the host's /.
    name = f"vboard_sentinel_{uuid.uuid4().hex}.txt"
    mpremote(board, "exec", f"open('/{name}', 'w').write('x')")
    assert (board.root / name).read_text() == "x"
    assert not Path("/", name).exists()
    # A board error comes back as a failed exec with the traceback.
    r = subprocess.run([sys.executable, "-m", "mpremote", "connect", board.port,
                        "exec", "1/0"], capture_output=True, timeout=30)
    assert r.returncode == 1 and b"ZeroDivisionError" in r.stdout


def test_fs_commands(board: VirtualBoard, tmp_path: Path) -> None:
    src = tmp_path / "main.py"
    src.write_text("print('hello from main')\n")
    tree = tmp_path / "lib"
    (tree / "pkg" / "sub").mkdir(parents=True)
    (tree / "top.py").write_text("X = 1\n")
    (tree / "pkg" / "__init__.py").write_text("")
    (tree / "pkg" / "sub" / "__init__.py").write_text("")
    (tree / "pkg" / "sub" / "mod.py").write_text("Y = 2\n")
    (tree / "pkg" / "sub" / "deep.py").write_bytes(bytes(range(256)) * 4)

    # one mpremote session running several commands, as in a deploy
    out = mpremote(board, "fs", "cp", str(src), ":main.py",
                   "+", "fs", "cp", "-r", str(tree), ":",
                   "+", "fs", "ls", ":", "+", "fs", "ls", ":lib",
                   "+", "fs", "sha256sum", ":lib/pkg/sub/deep.py")
    assert (board.root / "main.py").read_bytes() == src.read_bytes()
    for f in tree.rglob("*"):
        twin = board.root / "lib" / f.relative_to(tree)
        assert twin.is_dir() if f.is_dir() else twin.read_bytes() == f.read_bytes()
    assert " main.py\n" in out and " lib/\n" in out and " top.py\n" in out
    assert sha256((tree / "pkg" / "sub" / "deep.py").read_bytes()) in out
    # The board imports from /lib, as on an ESP32.
    out = mpremote(board, "exec", "import top, pkg.sub.mod; print(top.X, pkg.sub.mod.Y)")
    assert out.strip() == "1 2"

    back = tmp_path / "back.py"
    mpremote(board, "fs", "mkdir", ":data", "+", "fs", "rm", ":main.py",
             "+", "fs", "cp", ":lib/top.py", str(back))
    assert (board.root / "data").is_dir() and not (board.root / "main.py").exists()
    assert back.read_text() == "X = 1\n"
    # rmdir, and rename (VfsPosix with a root gets that wrong; the board's filesystem not)
    mpremote(board, "fs", "rmdir", ":data",
             "+", "exec", "import os; os.rename('/lib/top.py', '/lib/top2.py')")
    assert not (board.root / "data").exists()
    assert (board.root / "lib" / "top2.py").exists()
    assert not (board.root / "lib" / "top.py").exists()


def test_large_file_round_trip_cli(board: VirtualBoard, tmp_path: Path) -> None:
    data = os.urandom(64 * 1024)  # every byte value, \r \n \x03 \x04 included
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    back = tmp_path / "back.bin"
    out = mpremote(board, "fs", "cp", str(src), ":blob.bin", "+", "fs", "sha256sum", ":blob.bin",
                   "+", "fs", "cp", ":blob.bin", str(back))
    assert (board.root / "blob.bin").read_bytes() == data
    assert sha256(data) in out
    assert back.read_bytes() == data


def test_transport_api(board: VirtualBoard) -> None:
    t = SerialTransport(board.port, baudrate=115200)
    try:
        t.enter_raw_repl()
        assert t.eval("1 + 1") == 2
        assert t.exec("print('hi')").replace(b"\r\n", b"\n") == b"hi\n"
        with pytest.raises(TransportExecError):
            t.exec("raise ValueError('nope')")
        t.fs_mkdir("lib")
        data = os.urandom(64 * 1024)
        t.fs_writefile("lib/blob.bin", data, chunk_size=2048)
        assert (board.root / "lib" / "blob.bin").read_bytes() == data
        assert t.fs_readfile("lib/blob.bin", chunk_size=2048) == data
        assert t.fs_hashfile("lib/blob.bin", "sha256") == hashlib.sha256(data).digest()
        assert t.fs_stat("lib/blob.bin").st_size == len(data)
        assert [e.name for e in t.fs_listdir("/")] == ["lib"]
        t.fs_rmfile("lib/blob.bin")
        assert t.fs_listdir("lib") == []
        t.exit_raw_repl()
    finally:
        t.close()


def test_reset_runs_boot_and_main(board: VirtualBoard, tmp_path: Path) -> None:
    (board.root / "boot.py").write_text("print('boot ran')\n")
    main = tmp_path / "main.py"
    main.write_text("import sys\nprint('main ran', sys.path)\nleft_by_main = 5\n")
    mpremote(board, "fs", "cp", str(main), ":main.py")

    # A soft reset in the raw REPL (what every mpremote command starts with) runs boot.py
    # but not main.py, as on a board.
    mark = len(board.log)
    mpremote(board, "soft-reset")
    tail = board.log[mark:]
    assert b"MPY: soft reboot\r\nboot ran\r\nraw REPL; CTRL-B to exit\r\n>" in tail
    assert b"main ran" not in tail

    # mpremote reset: machine.reset(), a hard reset: boot.py, main.py, the friendly REPL.
    mark = len(board.log)
    boots = board.boots
    mpremote(board, "reset")
    end = board.wait_for(b"main ran", start=mark)
    assert board.log.find(b"boot ran", mark) < end
    board.wait_for(b">>> ", start=end)
    # two boots: the soft reset mpremote does on connecting, then the hard reset
    assert board.boots == boots + 2 and board.mode == "friendly"
    seg = board.log[mark:end]  # after the raw REPL that ran machine.reset(): no soft reboot
    assert b"MPY: soft reboot" not in seg[seg.rfind(b"raw REPL; CTRL-B to exit"):]

    # Connected over the serial port during the reset, a tool sees it like over USB.
    t = SerialTransport(board.port)
    try:
        t.enter_raw_repl()
        t.exec_raw_no_follow("import machine; machine.reset()")
        seen = t.read_until(1, b">>> ", timeout=10)
        assert b"boot ran" in seen and b"main ran" in seen
        # main.py ran in the REPL's namespace, as on a board
        t.serial.write(b"print(left_by_main * 2)\r")
        assert b"10\r\n>>> " in t.read_until(1, b"10\r\n>>> ", timeout=10)
        # Ctrl-D at the friendly REPL: a soft reboot that runs main.py again
        t.serial.write(b"\x04")
        seen = t.read_until(1, b">>> ", timeout=10)
        assert b"MPY: soft reboot" in seen and b"main ran" in seen
    finally:
        t.close()


def test_ctrl_c_interrupts_a_main_py_that_never_returns(board: VirtualBoard) -> None:
    (board.root / "main.py").write_text(
        "import time\nn = 0\nwhile True:\n"
        "    n += 1\n    print('tick', n)\n    time.sleep_ms(20)\n")
    board.reset()
    board.wait_for(b"tick 3")
    assert not board.wait_repl(0.2)
    # mpremote interrupts it with Ctrl-C; `resume` skips the soft reset, so main.py's
    # globals are still there ...
    assert mpremote(board, "resume", "eval", "n > 2").strip() == "True"
    # ... which a soft reset (into the raw REPL: main.py does not run again) clears.
    out = mpremote(board, "exec", "print('n' in globals())")
    assert out.strip() == "False"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the relay reads SigCgt in /proc")
def test_ctrl_c_is_data_when_kbd_intr_is_off(board: VirtualBoard) -> None:
    t = SerialTransport(board.port)
    try:
        t.enter_raw_repl()
        # Ctrl-C interrupts code the raw REPL runs ...
        t.exec_raw_no_follow("print('looping')\nwhile True:\n    pass")
        t.read_until(1, b"looping\r\n", timeout=10)
        t.serial.write(b"\x03")
        out, err = t.follow(10)
        assert b"KeyboardInterrupt" in err
        # ... but with micropython.kbd_intr(-1) it is a byte like any other (what
        # `mpremote mount` relies on), and so are Ctrl-Z and Ctrl-\.
        t.exec_raw_no_follow(
            "import micropython, sys\nmicropython.kbd_intr(-1)\nprint('reading')\n"
            "b = sys.stdin.buffer.read(4)\nmicropython.kbd_intr(3)\nprint(b)")
        t.read_until(1, b"reading\r\n", timeout=10)
        t.serial.write(b"\x03\x1a\x1c\x04")
        out, err = t.follow(10)
        assert (out, err) == (b"b'\\x03\\x1a\\x1c\\x04'\r\n", b"")
        assert t.eval("'alive'") == "alive"
    finally:
        t.close()


def test_port_link_gets_mpremote_timeouts(board: VirtualBoard) -> None:
    # Through the symlink mpremote sees a plain serial port, so a board reset in the
    # middle of a command is a TransportError, not a read that never returns.
    t = SerialTransport(board.port_link)
    try:
        assert not t.is_pty
        t.enter_raw_repl()
        assert t.eval("2 ** 10") == 1024
        t.exec_raw_no_follow("while True:\n    pass")
        board.reset()
        with pytest.raises(TransportError):
            t.follow(timeout=1)
    finally:
        t.close()


def test_extra_path_comes_before_builtins(tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    sim.mkdir()
    (sim / "machine.py").write_text(
        "import sys\nSIMULATED = True\n\n\ndef reset():\n"
        f"    sys.exit({RESET_EXIT_CODE})\n")
    (sim / "simhelper.py").write_text("VALUE = 'from the host'\n")
    with VirtualBoard(micropython=micropython_binary(), extra_path=[sim],
                      env={"VBOARD_TEST": "yes"}) as board:
        out = mpremote(board, "exec",
                       "import machine, simhelper, os, sys\n"
                       "print(machine.SIMULATED, machine.__file__)\n"
                       "print(simhelper.VALUE, os.listdir('/'), sys.path[0])\n"
                       "print(os.getenv('VBOARD_TEST'))")
        lines = out.strip().splitlines()
        assert lines[0] == f"True {sim / 'machine.py'}"
        assert lines[1] == f"from the host [] {sim}"
        assert lines[2] == "yes"
        (board.root / "main.py").write_text("print('main after simulated reset')\n")
        mark = len(board.log)
        mpremote(board, "reset")
        board.wait_for(b"main after simulated reset", start=mark)


def test_two_boards_are_independent(tmp_path: Path) -> None:
    mp = micropython_binary()
    with VirtualBoard(micropython=mp) as a, \
            VirtualBoard(micropython=mp, root=tmp_path / "b") as b:
        assert a.port != b.port and a.root != b.root
        assert b.root == (tmp_path / "b").resolve()
        results: dict[str, str] = {}

        def work(board: VirtualBoard, name: str) -> None:
            mpremote(board, "exec", f"open('/{name}.txt', 'w').write('{name}')")
            results[name] = mpremote(board, "exec", "import os; print(os.listdir('/'))").strip()

        threads = [threading.Thread(target=work, args=(a, "alpha")),
                   threading.Thread(target=work, args=(b, "beta"))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert results == {"alpha": "['alpha.txt']", "beta": "['beta.txt']"}
        assert not (a.root / "beta.txt").exists() and not (b.root / "alpha.txt").exists()
    assert (tmp_path / "b" / "beta.txt").exists()  # a given root is kept


def test_close_leaves_nothing_behind() -> None:
    fds_before = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    threads_before = threading.active_count()
    board = VirtualBoard(micropython=micropython_binary()).start()
    root, private, child = board.root, board._private, board._child
    assert child is not None and child.proc.poll() is None
    mpremote(board, "exec", "print(1)")
    board.close()
    board.close()  # idempotent
    assert child.proc.poll() is not None
    assert board._child is None or board._child.proc.poll() is not None
    assert not root.exists() and private is not None and not private.exists()
    assert threading.active_count() == threads_before
    if fds_before is not None:
        assert set(os.listdir("/proc/self/fd")) <= fds_before | {str(n) for n in range(3)}


def test_a_missing_interpreter_fails_start_with_a_message(tmp_path: Path) -> None:
    with pytest.raises((RuntimeError, OSError)):
        VirtualBoard(micropython=str(tmp_path / "no-such-micropython"), boot_timeout=5).start()
