"""`cabinlink deploy` and `cabinlink monitor` against the virtual board (the MicroPython unix
port on a pty, driven by real mpremote transport code), and the whole path on a virtual
board that is part of the simulated world: deploy + config, then the deployed firmware boots
and answers a car on the simulated CAN bus."""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from runtimes import micropython_binary

from cabinlink_tools import cli, deploy, mpycheck
from cabinlink_tools.device import Device, DeviceError, load_board
from cabinlink_tools.serial_monitor import monitor
from cabinlink_tools.sim.virtual_board import VirtualBoard

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(os.name != "posix", reason="needs POSIX pseudo-terminals"),
]

ROOT = Path(__file__).resolve().parent.parent
BOARD = "esp32-devkitc"
STATE = {  # device state written by the firmware and `cabinlink config`: never deploy's
    "config.json": '{"version": 1}',
    "settings.json": '{"offset": -50}',
    "settings.json.tmp": '{"offset": -40}',
    "log.json": '["I boot"]',
    "boot.json": '{"failed_boots": 0, "boots": 7}',
    "lib/other/keep.py": "X = 1\n",  # a package installed by other means (mip)
}


@pytest.fixture
def board() -> Iterator[VirtualBoard]:
    with VirtualBoard(micropython=micropython_binary()) as b:
        yield b


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    """A copy of firmware/ the test may change."""
    fw = tmp_path / "firmware"
    shutil.copytree(ROOT / "firmware", fw, ignore=shutil.ignore_patterns("__pycache__"))
    return fw


def expected_tree(fw: Path, tmp: Path, app: str | None = None) -> dict[str, bytes]:
    """What the board must hold: mpy-cross's output for the board's arch + board.json."""
    spec = load_board(BOARD)
    out = tmp / "expected"
    shutil.rmtree(out, ignore_errors=True)
    mpycheck.compile_tree(out, fw, march=spec["mpy_arch"],
                          include=None if app is None else
                          lambda r: len(r.parts) < 3 or r.parts[0] != "apps" or r.parts[1] == app)
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    return files


def board_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def deployed(root: Path) -> dict[str, bytes]:
    """The board's files minus device state and board.json."""
    return {k: v for k, v in board_files(root).items() if k not in STATE and k != "board.json"}


def put_state(root: Path) -> None:
    for name, text in STATE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_deploy_copies_the_compiled_tree_then_only_what_changed(
        board: VirtualBoard, firmware: Path, tmp_path: Path) -> None:
    put_state(board.root)
    out = io.StringIO()
    r = deploy.deploy(BOARD, board.port, firmware=firmware, out=out)
    want = expected_tree(firmware, tmp_path)
    assert deployed(board.root) == want
    assert "main.py" in want and "runtime/boot.mpy" in want and "runtime/boot.py" not in want
    assert (board.root / "main.py").read_bytes() == (firmware / "main.py").read_bytes()
    assert b"M\x06" == (board.root / "lib/cabinlink/codec.mpy").read_bytes()[:2]
    spec = load_board(BOARD)
    import json

    assert json.loads((board.root / "board.json").read_text()) == spec
    assert len(r.copied) == len(want) + 1 and r.file_bytes == sum(map(len, want.values())) + \
        len((board.root / "board.json").read_bytes())
    assert r.wire_bytes > r.file_bytes
    for name, text in STATE.items():
        assert (board.root / name).read_text() == text, name

    # unchanged: nothing but the listing crosses the wire, no file is written
    before = {p: p.stat().st_mtime_ns for p in board.root.rglob("*") if p.is_file()}
    r = deploy.deploy(BOARD, board.port, firmware=firmware)
    assert r.copied == [] and r.file_bytes == 0 and r.removed == []
    assert not r.plan.changed and "up to date" in deploy.report(r)
    assert {p: p.stat().st_mtime_ns for p in board.root.rglob("*") if p.is_file()} == before

    # one source changed, one removed: exactly that file re-sent, the other removed
    node = firmware / "lib" / "cabinlink" / "clock.py"
    node.write_text(node.read_text() + "\n_DEPLOY_TEST = 1\n")
    (firmware / "drivers" / "servo.py").unlink()
    r = deploy.deploy(BOARD, board.port, firmware=firmware)
    assert r.copied == ["/lib/cabinlink/clock.mpy"]
    assert r.removed == ["/drivers/servo.mpy"]
    assert r.file_bytes == (board.root / "lib/cabinlink/clock.mpy").stat().st_size
    assert deployed(board.root) == expected_tree(firmware, tmp_path)
    assert not (board.root / "main.py.off").exists()
    for name, text in STATE.items():
        assert (board.root / name).read_text() == text, name
    assert [p.name for p in board.root.rglob("*.tmp")] == ["settings.json.tmp"]


def test_app_only_source_and_dry_run(board: VirtualBoard, firmware: Path, tmp_path: Path) -> None:
    deploy.deploy(BOARD, board.port, firmware=firmware)
    assert (board.root / "apps" / "controller" / "__init__.mpy").exists()
    # --app mount --dry-run: lists, changes nothing
    before = board_files(board.root)
    r = deploy.deploy(BOARD, board.port, app="mount", dry_run=True, firmware=firmware)
    assert r.dry_run and "/apps/controller/__init__.mpy" in r.plan.remove
    assert board_files(board.root) == before
    text = deploy.report(r)
    assert "dry run" in text and "remove  apps/controller/__init__.mpy" in text
    # --app mount: the other apps go
    deploy.deploy(BOARD, board.port, app="mount", firmware=firmware)
    assert deployed(board.root) == expected_tree(firmware, tmp_path, app="mount")
    assert not (board.root / "apps" / "controller").exists()
    # --source: .py instead of .mpy, the .mpy files removed
    r = deploy.deploy(BOARD, board.port, app="mount", source=True, firmware=firmware)
    files = deployed(board.root)
    assert "runtime/boot.py" in files and not any(k.endswith(".mpy") for k in files)
    assert files["runtime/boot.py"] == (firmware / "runtime" / "boot.py").read_bytes()
    one_app = {"id": "one-app", "mpy_arch": "xtensawin", "apps": {"ambient": {}}}
    with pytest.raises(DeviceError, match="no wiring for app 'mount'"):
        deploy.build(one_app, tmp_path / "t1", app="mount", root=firmware)
    with pytest.raises(DeviceError, match="unknown mpy-cross architecture 'z80'"):
        deploy.build(dict(one_app, mpy_arch="z80"), tmp_path / "t2", root=firmware)


class Interrupt(Exception):
    pass


def test_an_interrupted_deploy_never_boots_and_a_rerun_finishes_it(
        board: VirtualBoard, firmware: Path, tmp_path: Path) -> None:
    (firmware / "boot.py").write_text("print('boot.py ran')\n")  # marks every boot in the log
    deploy.deploy(BOARD, board.port, firmware=firmware)
    # a new version: a large module (several chunks) and a small one change
    big = firmware / "runtime" / "config.py"
    big.write_text(big.read_text() + "".join(f"\n_PAD{i} = 'x' * {i}" for i in range(600)) + "\n")
    small = firmware / "lib" / "cabinlink" / "clock.py"
    small.write_text(small.read_text() + "\n_V2 = 2\n")

    seen: list[tuple[str, int, int]] = []

    def pull_the_cable(path: str, done: int, size: int) -> None:
        seen.append((path, done, size))
        if path == "/runtime/config.mpy" and done < size:  # mid-file
            raise Interrupt

    with pytest.raises(Interrupt):
        deploy.deploy(BOARD, board.port, firmware=firmware, on_progress=pull_the_cable)
    assert seen[-1][0] == "/runtime/config.mpy" and 0 < seen[-1][1] < seen[-1][2]
    # half a file exists only as .tmp; the old file is intact; nothing will boot
    tmp = board.root / "runtime" / "config.mpy.tmp"
    assert tmp.exists() and tmp.stat().st_size == seen[-1][1]
    assert not (board.root / "main.py").exists() and (board.root / "main.py.off").exists()
    mark = len(board.log)
    board.reset()
    board.wait_for(b"boot.py ran", start=mark)
    assert board.wait_repl(10)
    assert b"Traceback" not in board.log[mark:] and b"boot: firmware" not in board.log[mark:]

    out = io.StringIO()
    r = deploy.deploy(BOARD, board.port, firmware=firmware, out=out)
    assert "did not finish" in out.getvalue() and r.plan.interrupted
    assert "/runtime/config.mpy" in r.copied and "/runtime/config.mpy.tmp" in r.removed
    assert deployed(board.root) == expected_tree(firmware, tmp_path)
    assert not list(board.root.rglob("*.tmp")) and not (board.root / "main.py.off").exists()
    r = deploy.deploy(BOARD, board.port, firmware=firmware)
    assert not r.plan.changed


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command line in-process; a failure must be one line on stderr."""
    code = cli.main(args)
    got = capsys.readouterr()
    if code != 0:
        assert got.err.count("\n") == 1 and "Traceback" not in got.err, got.err
    return code, got.out, got.err


def test_bad_input_gets_one_clear_message(board: VirtualBoard, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "ttyUSB9")
    code, out, err = run_cli(["deploy", "--board", BOARD, "--port", missing], capsys)
    assert code == 1 and "no such serial port" in err and "cabinlink doctor" in err
    code, out, err = run_cli(["deploy", "--board", "esp32-toaster", "--port", board.port], capsys)
    assert code == 1 and "unknown board 'esp32-toaster'" in err and BOARD in err
    code, out, err = run_cli(["monitor", "--port", missing, "--timeout", "1"], capsys)
    assert code == 1 and "no such serial port" in err
    # busy: another program holds the port (mpremote, esptool and pyserial lock it so)
    with serial.Serial(board.port, exclusive=True):
        code, out, err = run_cli(["deploy", "--board", BOARD, "--port", board.port], capsys)
        assert code == 1 and "busy" in err
        code, out, err = run_cli(["config", "--board", BOARD, "--port", board.port,
                                  "--app", "ambient"], capsys)
        assert code == 1 and "busy" in err
    # not a MicroPython board: a serial device that never answers
    master, slave = os.openpty()
    try:
        with pytest.raises(DeviceError, match="does not answer like MicroPython"):
            with Device(os.ttyname(slave), connect_timeout=1.0):
                pass
    finally:
        os.close(master)
        os.close(slave)
    # the real entry point, as a person runs it: one line, exit status 1, no traceback
    p = subprocess.run([sys.executable, "-m", "cabinlink_tools.cli", "deploy", "--board", BOARD,
                        "--port", missing], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_monitor_prints_the_boot_log_after_reset(board: VirtualBoard) -> None:
    (board.root / "boot.py").write_text("print('boot says hi')\n")
    (board.root / "main.py").write_text(
        "import time\nprint('I boot: unit 7')\nn = 0\nwhile True:\n"
        "    n += 1\n    print('tick', n)\n    time.sleep_ms(100)\n")
    board.reset()
    board.wait_for(b"tick 2")
    out = io.StringIO()
    assert monitor(board.port, reset="soft", timeout=3.0, out=out) == 0
    lines = out.getvalue().splitlines()
    assert all(re.match(r"\[ *\d+\.\d{3}\] ", ln) for ln in lines), lines[:5]
    text = [ln.split("] ", 1)[1] for ln in lines]
    i = text.index("MPY: soft reboot")
    assert text[i + 1:i + 3] == ["boot says hi", "I boot: unit 7"]
    assert "tick 1" in text[i:]
    stamps = [float(ln[1:ln.index("]")]) for ln in lines]
    assert stamps == sorted(stamps)


def esp32_image(size: int) -> bytes:
    """Bytes that start like an ESP32 app image (magic 0xE9, chip id 0 in the extended
    header): what `cabinlink flash` accepts for an ESP32 board. The virtual board runs the
    unix port whatever the image holds."""
    head = bytes([0xE9, 0, 2, 0x20]) + (0x40080000).to_bytes(4, "little") + bytes([0xEE, 0, 0, 0]) \
        + (0).to_bytes(2, "little") + bytes(10)
    return head + bytes(range(256)) * ((size - len(head)) // 256)


def make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    # -o: never rebuild .venv here (that would be pip, i.e. the network)
    return subprocess.run(["make", "-s", "-o", ".venv/.stamp", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def test_make_flash_then_the_firmware_answers_on_the_simulated_bus(tmp_path: Path) -> None:
    """`make flash` = cabinlink flash (real esptool into the board's ROM loader), deploy,
    config; then the deployed firmware boots on the virtual board, which is a board of the
    simulated world, and answers a car on the simulated CAN bus."""
    from carhelper import SimCar

    from cabinlink import msg
    from cabinlink_tools.sim.simulation import Simulation, unique_id_for

    image = tmp_path / "ESP32_GENERIC-test.bin"
    image.write_bytes(esp32_image(64 * 1024))
    with Simulation() as sim:
        vb, _, _ = sim.add_virtual_board(BOARD, "ambient", name="unit1",
                                         micropython=micropython_binary())
        vb.enter_download_mode()  # BOOT held while plugging in
        p = make("flash", f"BOARD={BOARD}", "APP=ambient", f"PORT={vb.port}",
                 f"FLASH_ARGS=--image {image} --before no-reset --after soft-reset",
                 "CONFIG_ARGS=--vendor Acme")
        assert p.returncode == 0, p.stdout + p.stderr
        assert vb.flash.read(0x1000, image.stat().st_size) == image.read_bytes()
        assert f"deployed {BOARD} (.mpy for xtensawin, app ambient)" in p.stdout
        assert "wrote /config.json" in p.stdout
        vb.wait_for(b"ready", timeout=60)
        car = SimCar(sim)
        a = car.find()
        assert car.ask(a, msg.hello).ok
        d = car.ask(a, msg.describe)
        assert d.ok and d.value[msg.D_SERIAL] == unique_id_for("unit1").hex()
        assert d.value[msg.D_VENDOR] == "Acme"
        # its log from the chip's reset on, over the serial port
        out = io.StringIO()
        assert monitor(vb.port, reset="hard", timeout=60, until="ready", out=out) == 0
        log = [ln.split("] ", 1)[1] for ln in out.getvalue().splitlines()]
        assert "I boot: firmware 0.1.0, reset cause 2" in log and log[-1] == "ready"
        assert any(ln.startswith("I can link: 500000 bit/s") for ln in log)


def test_make_deploy_and_its_usage_messages(board: VirtualBoard) -> None:
    p = make("deploy")
    assert p.returncode != 0 and "give BOARD= and PORT=" in p.stdout and BOARD in p.stdout
    p = make("flash", f"BOARD={BOARD}", "PORT=/dev/ttyUSB0")
    assert p.returncode != 0 and "give APP=" in p.stdout
    p = make("deploy", f"BOARD={BOARD}", f"PORT={board.port}", "APP=controller")
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"deployed {BOARD} (.mpy for xtensawin, app controller)" in p.stdout
    assert (board.root / "apps" / "controller" / "__init__.mpy").exists()
    assert not (board.root / "apps" / "ambient").exists()
