"""Flashing without hardware: real esptool against the simulated ROM bootloader.

The simulation (``cabinlink_tools.sim.rom_bootloader``) is only the chip side; the host
side is esptool itself (``esptool.cmds``), so these tests check our ROM model against the
real flasher and ``cabinlink flash`` against both. ``cabinlink doctor`` is at the end.
"""
from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from cabinlink_tools import cli, doctor, flasher
from cabinlink_tools.sim.rom_bootloader import CHIPS, RomBootloader

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX pseudo-terminals")

MB = 1024 * 1024
IMAGE_CHIP_ID = {"esp32": 0, "esp32s3": 9, "esp32c3": 5, "esp32c6": 13}


def esp_image(chip: str, size: int, seed: int = 1, compressible: bool = False) -> bytes:
    """An image that starts like an ESP app image for ``chip`` (magic, no segments, the
    chip id in the extended header) followed by pseudo-random bytes."""
    r = random.Random(seed)
    head = (bytes([0xE9, 0, 2, 0x20]) + struct.pack("<I", 0x40080000) + bytes([0xEE, 0, 0, 0])
            + struct.pack("<H", IMAGE_CHIP_ID[chip]) + bytes(10))
    if compressible:  # few symbols: zlib roughly halves it, so esptool really sends it deflated
        body = bytes(r.choice(b"MicroPython") for _ in range(size - len(head)))
    else:
        body = r.randbytes(size - len(head))
    return head + body


@pytest.fixture
def rom() -> Iterator[RomBootloader]:
    with RomBootloader("esp32") as r:
        yield r


def flash_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``cabinlink flash ...`` in this process: (exit status, stdout, stderr)."""
    rc = cli.main(["flash", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def connect(port: str, stub: bool = True):  # -> esptool ESPLoader
    from esptool import cmds

    esp = cmds.detect_chip(port, 115200, "no-reset", connect_attempts=2)
    if stub:
        esp = cmds.run_stub(esp)
    cmds.attach_flash(esp)
    return esp


# ---------------------------------------------------------------------------------------
# the ROM model, driven by esptool's own API
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("chip,size", [("esp32", 4 * MB), ("esp32s3", 8 * MB),
                                       ("esp32c3", 4 * MB), ("esp32c6", 8 * MB)])
def test_esptool_detects_each_chip(chip: str, size: int) -> None:
    from esptool import cmds

    mac = bytes([0x24, 0x0A, 0xC4, 0x01, 0x02, IMAGE_CHIP_ID[chip]])
    with RomBootloader(chip, flash_size=size, mac=mac) as r:
        esp = cmds.detect_chip(r.port, 115200, "no-reset", connect_attempts=2)
        try:
            assert esp.CHIP_NAME == flasher.chip_display(chip)
            assert bytes(esp.read_mac()) == mac
            assert cmds.detect_flash_size(esp) == f"{size // MB}MB"
            assert "revision v" in esp.get_chip_description()
        finally:
            esp._port.close()
        seen = r.protocol.commands
        if chip == "esp32":  # no chip id in its ROM: the magic word decides
            assert seen["READ_REG"] > 0
        else:
            assert seen["GET_SECURITY_INFO"] > 0


@pytest.mark.parametrize("chip,stub,compress", [
    ("esp32", True, True), ("esp32s3", True, False), ("esp32c3", False, True), ("esp32", False, False)])
def test_write_lands_at_the_board_offset(chip: str, stub: bool, compress: bool) -> None:
    from esptool import cmds

    offset = CHIPS[chip].boot_offset
    image = esp_image(chip, 300_000, seed=7, compressible=compress)
    marker = b"\x5a" * 4096
    with RomBootloader(chip) as r:
        end = offset + len(image)
        tail_sector = -(-end // 4096) * 4096
        r.flash.write(offset, bytes(tail_sector - offset))  # old contents: must be erased
        r.flash.write(tail_sector, marker)  # first sector after the image: not to be touched
        if offset:
            r.flash.write(0, marker)  # below the image: not to be touched
        esp = connect(r.port, stub)
        try:
            cmds.write_flash(esp, [(offset, image)], compress=compress, no_compress=not compress)
        finally:
            esp._port.close()
        assert r.flash.read(offset, len(image)) == image
        assert r.flash.read(end, tail_sector - end) == b"\xff" * (tail_sector - end)  # erased tail
        assert r.flash.read(tail_sector, 4096) == marker
        if offset:
            assert r.flash.read(0, 4096) == marker
        seen = r.protocol.commands
        assert (seen["FLASH_DEFL_DATA"] > 0) == compress
        assert (seen["FLASH_DATA"] > 0) == (not compress)
        assert (seen["MEM_END"] > 0) == stub  # the stub was uploaded and started


def test_rom_and_stub_refuse_bad_blocks(rom: RomBootloader) -> None:
    from esptool.util import FatalError

    esp = connect(rom.port, stub=False)
    try:
        esp.flash_begin(4096, 0x10000)
        block = bytes(range(256)) * 4
        payload = struct.pack("<IIII", len(block), 0, 0, 0) + block
        with pytest.raises(FatalError, match="Checksum error"):
            esp.check_command("write", esp.ESP_CMDS["FLASH_DATA"], payload, esp.checksum(block) ^ 1)
        with pytest.raises(FatalError):  # beyond the 4 MB flash
            esp.flash_begin(0x4000, 4 * MB - 0x1000)
        esp.flash_block(block, 0)  # the right checksum goes through
        assert rom.flash.read(0x10000, len(block)) == block
    finally:
        esp._port.close()
    stub = connect(rom.port, stub=True)
    try:
        stub.flash_begin(4096, 0x20000)
        with pytest.raises(FatalError, match="Bad data checksum"):
            stub.check_command("write", stub.ESP_CMDS["FLASH_DATA"], payload, stub.checksum(block) ^ 1)
        with pytest.raises(FatalError):
            stub.erase_region(0x1000, 100)  # not sector-aligned
    finally:
        stub._port.close()


def test_stub_reads_back_and_erases_a_region(rom: RomBootloader) -> None:
    from esptool import cmds

    data = random.Random(3).randbytes(40_000)
    rom.flash.write(0x30000, data)
    esp = connect(rom.port)
    try:
        assert esp.read_flash(0x30000, len(data)) == data  # windowed READ_FLASH + MD5 trailer
        cmds.erase_region(esp, 0x30000, 0x8000)
    finally:
        esp._port.close()
    assert rom.flash.read(0x30000, 0x8000) == b"\xff" * 0x8000
    assert rom.flash.read(0x38000, len(data) - 0x8000) == data[0x8000:]


def test_final_verification_names_the_first_bad_byte(rom: RomBootloader) -> None:
    from esptool import cmds

    target = flasher.load_target("esp32-devkitc")
    image = esp_image("esp32", 64 * 1024, seed=9)
    esp = connect(rom.port)
    try:
        cmds.write_flash(esp, [(target.offset, image)])
        flasher.verify_image(esp, target, image)  # intact: passes
        at = next(i for i in range(0x1234, len(image)) if image[i])  # a byte with a 1 bit
        rom.flash.write(target.offset + at, bytes([image[at] & (image[at] - 1)]))  # it goes bad
        with pytest.raises(flasher.FlashError, match=f"first at {target.offset + at:#x}"):
            flasher.verify_image(esp, target, image)
    finally:
        esp._port.close()


# ---------------------------------------------------------------------------------------
# cabinlink flash
# ---------------------------------------------------------------------------------------


def test_cabinlink_flash_writes_verifies_and_runs_the_app(
        rom: RomBootloader, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = esp_image("esp32", 250_000, seed=11)
    (tmp_path / "fw.bin").write_bytes(image)
    rc, out, err = flash_cli(capsys, "--board", "esp32-devkitc", "--port", rom.port, "--image",
                             str(tmp_path / "fw.bin"), "--before", "no-reset", "--after", "soft-reset")
    assert rc == 0, err
    assert rom.flash.read(0x1000, len(image)) == image
    assert "verified at 0x1000" in out and "ESP32-D0WD-V3" in out
    assert rom.wait_state("app", 5) and rom.app_starts == 1  # stub -> ROM -> "run user code"
    assert rom.protocol.commands["SPI_FLASH_MD5"] >= 2  # esptool's check + the final pass


def test_cabinlink_flash_erase(rom: RomBootloader, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    image = esp_image("esp32", 100_000, seed=12)
    (tmp_path / "fw.bin").write_bytes(image)
    for where in (0x0, 0x200000, 4 * MB - 4096):
        rom.flash.write(where, b"old data")
    rc, _, err = flash_cli(capsys, "--board", "esp32-devkitc", "--port", rom.port, "--image",
                           str(tmp_path / "fw.bin"), "--before", "no-reset", "--erase",
                           "--after", "no-reset")
    assert rc == 0, err
    assert rom.protocol.commands["ERASE_FLASH"] == 1
    for where in (0x0, 0x200000, 4 * MB - 4096):
        assert rom.flash.read(where, 8) == b"\xff" * 8
    assert rom.flash.read(0x1000, len(image)) == image
    # Without the stub there is no erase command: the ROM erases what FLASH_BEGIN announces.
    rom.flash.write(0x300000, b"old data")
    rc, _, err = flash_cli(capsys, "--board", "esp32-devkitc", "--port", rom.port, "--image",
                           str(tmp_path / "fw.bin"), "--before", "no-reset", "--erase", "--no-stub",
                           "--after", "no-reset")
    assert rc == 0, err
    assert rom.flash.read(0x300000, 8) == b"\xff" * 8
    assert rom.flash.read(0x1000, len(image)) == image


@pytest.mark.parametrize("stub", [True, False])
def test_cabinlink_flash_catches_a_bad_flash_cell(tmp_path: Path, stub: bool,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    image = esp_image("esp32", 64 * 1024, seed=13)
    bad = 0x1000 + 0x2345
    image = image[:0x2345] + bytes([image[0x2345] & 0xEF]) + image[0x2346:]  # bit 4 must be 0
    (tmp_path / "fw.bin").write_bytes(image)
    with RomBootloader("esp32", stuck_bits={bad: 0x10}) as r:
        rc, _, err = flash_cli(capsys, "--board", "esp32-devkitc", "--port", r.port, "--image",
                               str(tmp_path / "fw.bin"), "--before", "no-reset",
                               *(() if stub else ("--no-stub",)))
        assert r.flash.read(bad, 1) != image[0x2345:0x2346]
    assert rc == 1
    assert "verification failed" in err


def test_image_from_the_cache(rom: RomBootloader, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(flasher.CACHE_ENV, str(tmp_path))
    old, new, other = (esp_image("esp32", 20_000, seed=s) for s in (1, 2, 3))
    (tmp_path / "ESP32_GENERIC-20240105-v1.22.1.bin").write_bytes(old)
    (tmp_path / "ESP32_GENERIC-20250415-v1.25.0.bin").write_bytes(new)
    (tmp_path / "ESP32_GENERIC-OTA-20250901-v1.26.0.bin").write_bytes(other)  # another variant
    rc, out, err = flash_cli(capsys, "--board", "esp32-devkitc", "--port", rom.port,
                             "--before", "no-reset", "--after", "no-reset")
    assert rc == 0, err
    assert "ESP32_GENERIC-20250415-v1.25.0.bin" in out
    assert rom.flash.read(0x1000, len(new)) == new


# -- bad input: one message each, non-zero exit, no traceback ------------------------------


def test_missing_image_says_what_to_download(tmp_path: Path, rom: RomBootloader,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "images"
    rc, _, err = flash_cli(capsys, "--board", "esp32-c6-devkitc-1", "--port", rom.port,
                           "--cache", str(cache))
    assert rc == 1
    assert "https://micropython.org/download/ESP32_GENERIC_C6/" in err
    assert str(cache) in err and "ESP32_GENERIC_C6-" in err
    assert rom.protocol.commands["SYNC"] == 0  # the board was not touched


def test_unknown_board(rom: RomBootloader) -> None:
    r = subprocess.run([sys.executable, "-m", "cabinlink_tools.cli", "flash", "--board", "esp33-nope",
                        "--port", rom.port], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "unknown board 'esp33-nope'" in r.stderr and "esp32-devkitc" in r.stderr
    assert "Traceback" not in r.stderr


def test_port_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "fw.bin").write_bytes(esp_image("esp32", 4096))
    rc, _, err = flash_cli(capsys, "--board", "esp32-devkitc", "--port", "/dev/ttyCABINLINK-NOPE",
                           "--image", str(tmp_path / "fw.bin"))
    assert rc == 1
    assert "/dev/ttyCABINLINK-NOPE does not exist" in err and "cabinlink doctor" in err


def test_busy_port(rom: RomBootloader, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "fw.bin").write_bytes(esp_image("esp32", 4096))
    holder = serial.Serial(rom.port, exclusive=True)  # e.g. a serial monitor (or esptool)
    try:
        rc, _, err = flash_cli(capsys, "--board", "esp32-devkitc", "--port", rom.port,
                               "--image", str(tmp_path / "fw.bin"), "--before", "no-reset")
    finally:
        holder.close()
    assert rc == 1
    assert f"port {rom.port} is busy" in err and "Close it" in err
    assert rom.protocol.commands["SYNC"] == 0


def test_wrong_chip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "fw.bin").write_bytes(esp_image("esp32", 4096))
    with RomBootloader("esp32s3") as r:
        rc, _, err = flash_cli(capsys, "--board", "esp32-devkitc", "--port", r.port,
                               "--image", str(tmp_path / "fw.bin"), "--before", "no-reset")
        assert r.protocol.commands["FLASH_BEGIN"] == 0
    assert rc == 1
    assert f"board esp32-devkitc needs an ESP32 but {r.port} has an ESP32-S3" in err


def test_image_built_for_another_chip(rom: RomBootloader, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "s3.bin").write_bytes(esp_image("esp32s3", 4096))
    rc, _, err = flash_cli(capsys, "--board", "esp32-devkitc", "--port", rom.port,
                           "--image", str(tmp_path / "s3.bin"))
    assert rc == 1
    assert "built for an ESP32-S3" in err and "ESP32_GENERIC" in err
    assert rom.protocol.commands["SYNC"] == 0


def test_no_bootloader_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "fw.bin").write_bytes(esp_image("esp32", 4096))
    with RomBootloader("esp32", boot_held=False) as r:
        r.reset(boot_held=False)  # running its app: nobody speaks the protocol
        assert r.wait_state("app", 5)
        rc, _, err = flash_cli(capsys, "--board", "esp32-devkitc", "--port", r.port, "--image",
                               str(tmp_path / "fw.bin"), "--connect-attempts", "1")
    assert rc == 1
    assert "no ESP bootloader answered" in err and "hold BOOT" in err
    assert "no DTR/RTS lines" in err  # default-reset could not work on a pty


def test_help_texts() -> None:
    for cmd, needle in (("flash", "--board"), ("doctor", "--can-timeout")):
        r = subprocess.run([sys.executable, "-m", "cabinlink_tools.cli", cmd, "--help"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and needle in r.stdout


# ---------------------------------------------------------------------------------------
# the virtual board in download mode
# ---------------------------------------------------------------------------------------


@pytest.mark.micropython
def test_flash_the_virtual_board_then_it_boots_micropython(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mpremote.transport_serial import SerialTransport
    from runtimes import micropython_binary

    from cabinlink_tools.sim.virtual_board import VirtualBoard

    image = esp_image("esp32", 200_000, seed=21)
    (tmp_path / "fw.bin").write_bytes(image)
    with VirtualBoard(micropython=micropython_binary()) as board:
        (board.root / "main_data.txt").write_text("kept")
        board.enter_download_mode()
        assert board.download_mode
        rc, out, err = flash_cli(capsys, "--board", "esp32-devkitc", "--port", board.port, "--image",
                                 str(tmp_path / "fw.bin"), "--before", "no-reset",
                                 "--after", "soft-reset")
        assert rc == 0, err
        assert board.flash.read(0x1000, len(image)) == image
        assert board.wait_repl(15), board.log[-400:]
        assert not board.download_mode
        t = SerialTransport(board.port, baudrate=115200)
        try:
            t.enter_raw_repl()
            assert t.eval("6 * 7") == 42
            assert t.eval("open('/main_data.txt').read()") == "kept"  # no --erase: files stay
            t.exit_raw_repl()
        finally:
            t.close()


@pytest.mark.micropython
def test_virtual_board_with_an_erased_flash_does_not_boot() -> None:
    from esptool import cmds
    from runtimes import micropython_binary

    from cabinlink_tools.sim.virtual_board import VirtualBoard

    with VirtualBoard(micropython=micropython_binary()) as board:
        (board.root / "boot.py").write_text("pass\n")
        board.enter_download_mode()
        esp = connect(board.port)
        try:
            cmds.erase_flash(esp)
        finally:
            esp._port.close()
        assert list(board.root.iterdir()) == []  # the filesystem went with the flash
        with pytest.raises(RuntimeError, match="no app image"):
            board.reset()
        assert b"invalid header: 0xffffffff" in board.log


# ---------------------------------------------------------------------------------------
# cabinlink doctor
# ---------------------------------------------------------------------------------------


def test_doctor_reports_tools_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["doctor", "--can-timeout", "0.5"])
    out = capsys.readouterr().out
    assert rc == 0
    for title in ("Serial ports", "CAN adapters", "Bluetooth", "Tools", "MicroPython images"):
        assert title in out
    line = next(x for x in out.splitlines() if "micropython (unix port)" in x)
    assert "not found" not in line and " at " in line
    assert "esptool 5." in out


def test_doctor_names_esp_bridges_and_ble_adapters(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    from serial.tools import list_ports, list_ports_common

    fake = list_ports_common.ListPortInfo("/dev/ttyUSB7")
    fake.vid, fake.pid, fake.description = 0x10C4, 0xEA60, "CP2102 USB to UART Bridge Controller"
    monkeypatch.setattr(list_ports, "comports", lambda: [fake])
    report = doctor.check(sections=("serial",))
    assert report.esp_ports == ["/dev/ttyUSB7"]
    assert "Silicon Labs CP210x" in report.text()

    (tmp_path / "hci0").mkdir()
    report = doctor.Report()
    sec = doctor._ble_section(report, tmp_path)
    if sys.platform.startswith("linux"):
        assert report.ble_adapters == ["hci0"] and any("hci0" in x for x in sec.lines)
    assert any("bleak" in x for x in sec.lines)


def test_doctor_fails_when_a_tool_is_missing(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda d: None if d == "esptool" else real(d))
    rc = cli.main(["doctor", "--can-timeout", "0"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "esptool: MISSING" in out and "Not ready" in out
