"""The simulated ``esp32`` module (Partition, NVS) and ``neopixel`` module, each firmware
test under CPython AND the MicroPython unix port; the world-side flash (sim/flash.py):
NOR semantics in a sparse file, the partition tables, the ESP-IDF bootloader's OTA
selection and rollback, NVS that persists only what was committed."""
from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from cabinlink_tools.sim import flash as F
from cabinlink_tools.sim import world as W
from cabinlink_tools.sim.chips.gpio_devices import Ws2812
from cabinlink_tools.sim.flash import Esp32Flash, Esp32Services, SimFlash, install_esp32
from cabinlink_tools.sim.runner import RUNTIMES, BoardProcess



@pytest.fixture
def services(world: W.World, tmp_path: Path) -> Iterator[Esp32Services]:
    s = install_esp32(world, tmp_path / "flash", variants={"ota": "ESP32_GENERIC-OTA"})
    yield s
    s.close()


def run_script(world: W.World, tmp_path: Path, runtime: str, body: str,
               name: str = "b1") -> BoardProcess:
    board = world.boards.get(name) or world.add_board(W.SimBoard(name, "esp32", bytes(6)))
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    proc = BoardProcess(world, board, runtime, script, tmp_path / "fs")
    proc.start()
    return proc


# ---------------------------------------------------------------------------------------
# world side
# ---------------------------------------------------------------------------------------


def test_sim_flash_is_nor_flash_in_a_sparse_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    f = SimFlash(path, 1 << 20)
    assert f.read(0, 4) == b"\xff" * 4
    f.write(0x1000, b"\x0f\xf0\x55")
    f.write(0x1000, b"\xf3\x3f\xff")  # a write can only clear bits
    assert f.read(0x1000, 3) == b"\x03\x30\x55"
    with pytest.raises(ValueError):
        f.erase(0x1001, 4096)
    f.erase(0x1000, 4096)
    assert f.read(0x1000, 3) == b"\xff\xff\xff" and f.erases == 1
    f.write(0xFFFF0, b"\x00" * 16)
    f.close()
    assert os.stat(path).st_blocks * 512 < 64 * 1024  # 1 MiB of flash, barely any disk
    g = SimFlash(path, 1 << 20)  # persists
    assert g.read(0xFFFF0, 16) == bytes(16) and g.read(0x1000, 1) == b"\xff"
    assert g.image()[0xFFFF0:] == bytes(16)
    g.close()


def test_partition_tables_and_the_bootloader_rollback_state_machine(tmp_path: Path) -> None:
    gen = Esp32Flash(tmp_path / "gen.flash")
    assert [(p.label, p.offset, p.size) for p in gen.find(F.TYPE_APP)] == [("factory", 0x10000, 0x1F0000)]
    assert gen.boot().label == "factory" and gen.otadata() is None
    ota = Esp32Flash(tmp_path / "ota.flash", "ESP32_GENERIC-OTA")
    assert [(p.label, p.offset, p.size) for p in ota.ota_apps()] == [
        ("ota_0", 0x10000, 0x180000), ("ota_1", 0x190000, 0x180000)]
    assert ota.boot().label == "ota_0"
    assert ota.ota_states() == [(1, F.OTA_VALID), (0xFFFFFFFF, 0xFFFFFFFF)]  # set_actual_ota_seq
    # the entry as ESP-IDF writes it: seq 1, crc32_le(UINT32_MAX, seq) = 0x4743989A
    raw = ota.flash.read(0xD000, 32)
    assert raw[:4] == b"\x01\x00\x00\x00" and raw[24:28] == b"\x02\x00\x00\x00"
    assert raw[28:] == bytes.fromhex("9a984347")
    slot1 = ota.by_label("ota_1")
    with pytest.raises(W.OpError) as e:
        ota.set_boot_partition(slot1)  # no image there
    assert e.value.errno == -0x1503
    ota.write(slot1, 0, F.STUB_IMAGE)
    ota.set_boot_partition(slot1)
    assert ota.get_boot_partition() == slot1 and ota.running.label == "ota_0"
    assert ota.boot() == slot1 and ota.ota_states()[1] == (2, F.OTA_PENDING_VERIFY)
    assert ota.boot().label == "ota_0"  # not confirmed: rolled back
    assert ota.ota_states()[1] == (2, F.OTA_ABORTED)
    ota.set_boot_partition(slot1)
    assert ota.boot() == slot1
    ota.mark_app_valid()
    assert ota.boot() == slot1 and ota.boot() == slot1  # confirmed: stays
    ota.set_boot_partition(ota.by_label("ota_0"))
    assert ota.ota_states()[0] == (3, F.OTA_NEW)
    gen.close()
    ota.close()


# ---------------------------------------------------------------------------------------
# esp32.Partition in a firmware process
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_partition_api_like_the_esp32_port(world: W.World, services: Esp32Services,
                                           tmp_path: Path, runtime: str) -> None:
    p = run_script(world, tmp_path, runtime, """
        from esp32 import Partition
        r = Partition(Partition.RUNNING)
        print("running", r.info())
        print(repr(r))
        for bad in (2, -1):
            try:
                Partition(bad)
            except ValueError:
                print("valueerror", bad)
        for what in ("nope", Partition.BOOT):
            try:
                Partition(what)
            except OSError as e:
                print("oserror", what, e.args[0])
        print("data", [p.info()[4] for p in Partition.find(Partition.TYPE_DATA)])
        print("apps", [p.info()[4] for p in Partition.find()])
        print("nvs", [p.info()[4] for p in Partition.find(Partition.TYPE_DATA, 2)])
        v = Partition("vfs")
        print("ioctl", v.ioctl(1, 0), v.ioctl(2, 0), v.ioctl(3, 0), v.ioctl(4, 0), v.ioctl(5, 0),
              v.ioctl(7, 0))
        buf = bytearray(4096)
        v.writeblocks(3, b"\\x0f" * 4096)
        v.readblocks(3, buf)
        print("erase+write", buf[0], buf[4095])
        print("returns", v.writeblocks(3, b"\\xf5" * 16, 100), v.readblocks(3, buf))
        print("and", buf[99], buf[100], buf[115], buf[116])
        small = bytearray(4)
        v.readblocks(3, small, 98)
        print("offset", bytes(small).hex())
        print("erase", v.ioctl(6, 3))
        v.readblocks(3, buf)
        print("erased", min(buf))
        s = Partition("vfs", 512)
        print("512", s.ioctl(4, 0), s.ioctl(5, 0), s.ioctl(6, 0))
        s.writeblocks(0, b"\\x22" * 512)
        s.writeblocks(1, b"\\x11" * 512)
        b = bytearray(512)
        s.readblocks(0, b)
        c = bytearray(512)
        s.readblocks(1, c)
        print("blocks", b[0], b[511], c[0])
        try:
            v.readblocks(v.ioctl(4, 0), buf)
        except OSError as e:
            print("past end", e.args[0])
        try:
            r.get_next_update()
        except OSError as e:
            print("no ota", e.args[0])
        try:
            Partition.mark_app_valid_cancel_rollback()
        except OSError as e:
            print("no otadata", e.args[0])
        print("done")
    """)
    p.wait_for("done", 30)
    text = "\n".join(p.log)
    assert "running (0, 0, 65536, 2031616, 'factory', False)" in text, text
    assert "<Partition type=0, subtype=0, address=65536, size=2031616, label=factory, encrypted=0>" in text
    assert "valueerror 2" in text and "valueerror -1" in text
    assert "oserror nope 2" in text and "oserror 0 2" in text  # no otadata: no boot partition
    assert "data ['nvs', 'phy_init', 'vfs']" in text and "apps ['factory']" in text
    assert "nvs ['nvs']" in text
    assert "ioctl 0 0 0 512 4096 None" in text
    assert "erase+write 15 15" in text and "returns None None" in text
    assert "and 15 5 5 15" in text  # written without erase: old AND new
    assert "offset 0f0f0505" in text
    assert "erase 0" in text and "erased 255" in text
    assert "512 4096 512 -22" in text
    assert "blocks 34 34 17" in text  # a 512-byte block rewritten, its sector's others kept
    assert "past end -260" in text  # ESP_ERR_INVALID_SIZE
    assert "no ota 2" in text and "no otadata -261" in text
    vfs = services.flashes["b1"].by_label("vfs")
    assert services.flashes["b1"].read(vfs, 3 * 4096 + 99, 3) == b"\xff\xff\xff"
    p.stop()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ota_update_rolls_back_unless_marked_valid(world: W.World, services: Esp32Services,
                                                   tmp_path: Path, runtime: str) -> None:
    p = run_script(world, tmp_path, runtime, """
        import machine
        from esp32 import Partition

        def stage():
            try:
                with open("stage") as f:
                    return int(f.read())
            except OSError:
                return 0

        def next_stage(n):
            with open("stage", "w") as f:
                f.write(str(n))
            machine.reset()

        s = stage()
        run = Partition(Partition.RUNNING)
        print("boot", s, run.info()[4], Partition(Partition.BOOT).info()[4])
        if s == 0:
            Partition.mark_app_valid_cancel_rollback()  # safe: the flashed image is VALID
            nxt = run.get_next_update()
            img = bytearray(8192)
            img[0] = 0xE9
            img[1:5] = b"NEW1"
            nxt.writeblocks(0, img)
            nxt.set_boot()
            print("set", nxt.info()[4], Partition(Partition.BOOT).info()[4])
            next_stage(1)
        elif s == 1:
            next_stage(2)  # the new image never confirms itself
        elif s == 2:
            nxt = run.get_next_update()
            head = bytearray(8)
            nxt.readblocks(0, head)
            print("slot keeps", bytes(head[1:5]))
            nxt.ioctl(6, 0)
            try:
                nxt.set_boot()
            except OSError as e:
                print("no image", e.args[0])
            img = bytearray(4096)  # writeblocks without offset: whole 4096-byte blocks
            img[:8] = head
            nxt.writeblocks(0, img)
            nxt.set_boot()
            next_stage(3)
        elif s == 3:
            Partition.mark_app_valid_cancel_rollback()
            next_stage(4)
        else:
            print("done")
    """, name="ota")
    p.wait_for("done", 60)
    boots = [l for l in p.log if l.startswith("boot")]
    assert boots == ["boot 0 ota_0 ota_0", "boot 1 ota_1 ota_1", "boot 2 ota_0 ota_0",
                     "boot 3 ota_1 ota_1", "boot 4 ota_1 ota_1"], p.log
    text = "\n".join(p.log)
    assert "set ota_1 ota_1" in text and "slot keeps b'NEW1'" in text
    assert "no image -5379" in text  # ESP_ERR_OTA_VALIDATE_FAILED
    assert services.flashes["ota"].ota_states() == [(1, F.OTA_VALID), (2, F.OTA_VALID)]
    p.stop()


# ---------------------------------------------------------------------------------------
# esp32.NVS
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_nvs_keeps_what_was_committed_across_a_power_cut(world: W.World, services: Esp32Services,
                                                         tmp_path: Path, runtime: str) -> None:
    p = run_script(world, tmp_path, runtime, """
        import time
        from esp32 import NVS
        n = NVS("cabin")
        try:
            v = n.get_i32("boots")
        except OSError as e:
            print("first", e.args[0])
            v = 0
        n.set_i32("boots", v + 1)
        if v == 0:
            n.set_blob("blob", b"hello")
            n.set_i32("neg", -5)
            n.set_i32("wrap", 0x80000001)
            n.commit()
            n.set_i32("lost", 7)  # never committed
            print("visible", n.get_i32("lost"))
            for bad in ("x" * 16,):
                try:
                    NVS(bad)
                except OSError as e:
                    print("long namespace", e.args[0])
            try:
                n.get_blob("boots", bytearray(4))
            except OSError as e:
                print("mismatch", e.args[0])
            print("written")
            while True:
                time.sleep_ms(100)
        buf = bytearray(8)
        print("second", v, n.get_blob("blob", buf), bytes(buf[:5]), n.get_i32("neg"),
              n.get_i32("wrap"))
        try:
            n.get_i32("lost")
        except OSError as e:
            print("lost", e.args[0], e.args[1])
        try:
            n.get_blob("blob", bytearray(2))
        except OSError as e:
            print("short", e.args[0])
        n.erase_key("blob")
        n.commit()
        try:
            n.erase_key("blob")
        except OSError as e:
            print("erased", e.args[0])
        print("done")
    """)
    p.wait_for("written", 30)
    text = "\n".join(p.log)
    assert "first -4354" in text and "visible 7" in text
    assert "long namespace -4361" in text and "mismatch -4355" in text
    p.cut_power()
    p.wait_for("done", 30)
    text = "\n".join(p.log)
    assert "second 1 5 b'hello' -5 -2147483647" in text, text
    assert "lost -4354 ESP_ERR_NVS_NOT_FOUND" in text
    assert "short -4364" in text and "erased -4354" in text
    committed = services.flashes["b1"].nvs_committed()
    assert committed["cabin"]["boots"] == ("i32", 2) and "blob" not in committed["cabin"]
    p.stop()


# ---------------------------------------------------------------------------------------
# neopixel
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_neopixel_writes_grb_to_a_ws2812_chain(world: W.World, tmp_path: Path, runtime: str) -> None:
    board = world.add_board(W.SimBoard("b1", "esp32", bytes(6)))
    chain = Ws2812(board.pin(13), 3)
    frames: list[tuple[bytes, list[tuple[int, int, int]]]] = []

    def sink(data: bytes) -> None:
        chain(data)
        frames.append((bytes(data), list(chain.pixels)))

    board.bitstream_sinks[13] = sink
    p = run_script(world, tmp_path, runtime, """
        from machine import Pin
        from neopixel import NeoPixel
        np = NeoPixel(Pin(13), 3)
        np[0] = (255, 0, 0)
        np[1] = (0, 128, 0)
        np[2] = (1, 2, 3)
        print("px", np[1], len(np), np.timing)
        np.write()
        np.fill((9, 8, 7))
        np.write()
        w = NeoPixel(Pin(14), 2, bpp=4, timing=0)
        w[1] = (1, 2, 3, 4)
        print("rgbw", bytes(w.buf).hex(), w[1], w.timing)
        print("done")
    """, name="b1")
    p.wait_for("done", 30)
    text = "\n".join(p.log)
    assert "px (0, 128, 0) 3 (400, 850, 800, 450)" in text, text
    assert "rgbw 0000000002010304 (1, 2, 3, 4) (800, 1700, 1600, 900)" in text, text
    assert frames[0] == (bytes.fromhex("00ff00800000020103"), [(255, 0, 0), (0, 128, 0), (1, 2, 3)])
    assert frames[1][1] == [(9, 8, 7)] * 3 and len(frames) == 2
    assert board.pin(13).mode == 3  # NeoPixel made the pin an output
    p.stop()
