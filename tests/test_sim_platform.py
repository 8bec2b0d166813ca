"""The simulated MicroPython platform, each test run under CPython AND the MicroPython
unix port: a firmware-side script imports ``machine`` exactly as on a board and the world
answers, raising where the real port raises."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cabinlink_tools.sim import world as W
from cabinlink_tools.sim.chips.base import I2CTarget
from cabinlink_tools.sim.runner import RUNTIMES, BoardProcess


class Echo(I2CTarget):
    """Remembers what was written; reads return it reversed. NACKs a write of 0xFF."""

    def __init__(self, address: int) -> None:
        self.address = address
        self.last = b""

    def i2c_write(self, data: bytes) -> bool:
        if data[:1] == b"\xff":
            return False
        self.last = bytes(data)
        return True

    def i2c_read(self, n: int) -> bytes | None:
        return (self.last[::-1] + bytes(n))[:n]



def run_script(world: W.World, tmp_path: Path, runtime: str, body: str,
               board: W.SimBoard | None = None) -> BoardProcess:
    board = board or world.add_board(W.SimBoard("b1", "esp32", bytes.fromhex("24a16012ab01")))
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    proc = BoardProcess(world, board, runtime, script, tmp_path / "fs")
    proc.start()
    return proc


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_pins_i2c_and_errors_like_the_real_port(world: W.World, tmp_path: Path, runtime: str) -> None:
    board = world.add_board(W.SimBoard("b1", "esp32", bytes.fromhex("24a16012ab01")))
    board.attach_i2c(22, 21, Echo(0x44))
    board.pin(4).drive = 0
    p = run_script(world, tmp_path, runtime, """
        import machine
        from machine import Pin, SoftI2C, I2C
        print("uid", machine.unique_id().hex(), "cause", machine.reset_cause())
        led = Pin(2, Pin.OUT)
        led.value(1)
        print("in4", Pin(4, Pin.IN, Pin.PULL_UP).value())
        for bad in (34, 20, 99):
            try:
                Pin(bad, Pin.OUT)
            except ValueError as e:
                print("valueerror", bad)
        i2c = SoftI2C(scl=Pin(22), sda=Pin(21))
        print("scan", i2c.scan())
        i2c.writeto(0x44, b"\\x01\\x02\\x03")
        print("read", i2c.readfrom(0x44, 3).hex())
        for addr, data in ((0x45, b"\\x01"), (0x44, b"\\xff")):
            try:
                i2c.writeto(addr, data)
            except OSError as e:
                print("oserror", e.args[0])
        try:
            I2C(5)
        except ValueError:
            print("valueerror i2c")
        print("done")
        import time
        time.sleep(60)  # keep powered: when the script ends, the board's pins float again
    """, board)
    p.wait_for("done", 30)
    text = "\n".join(p.log)
    assert "uid 24a16012ab01 cause 1" in text
    assert "in4 0" in text  # driven low from outside beats the pull-up
    assert board.pin(2).level() == 1
    assert all(f"valueerror {n}" in text for n in (34, 20, 99)), text
    assert "scan [68]" in text and "read 030201" in text
    assert text.count("oserror 19") == 2 and "valueerror i2c" in text
    p.stop()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_pin_irq_reaches_an_awaiting_task(world: W.World, tmp_path: Path, runtime: str) -> None:
    p = run_script(world, tmp_path, runtime, """
        import asyncio
        from machine import Pin
        flag = asyncio.ThreadSafeFlag()
        edges = []
        def handler(pin):
            edges.append(pin.value())
            flag.set()
        async def main():
            Pin(13, Pin.IN, Pin.PULL_UP).irq(handler, Pin.IRQ_FALLING)
            print("armed")
            for _ in range(2):
                await flag.wait()
                print("edge", edges[-1])
        asyncio.run(main())
        print("done")
    """)
    p.wait_for("armed", 30)
    pin = p.board.pin(13)
    seen = 0
    for level in (0, 1, 0):  # falling, rising (must not trigger), falling
        with world.lock:
            pin.drive = level
        if level == 0:
            seen = p.wait_for("edge", 10, start=seen) + 1
    p.wait_for("done", 10)
    assert [l for l in p.log if l.startswith("edge")] == ["edge 0", "edge 0"]
    p.stop()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_watchdog_really_resets_and_reset_cause_tells(world: W.World, tmp_path: Path, runtime: str) -> None:
    p = run_script(world, tmp_path, runtime, """
        import machine, time
        cause = machine.reset_cause()
        print("boot cause", cause)
        if cause == machine.PWRON_RESET:
            wdt = machine.WDT(timeout=300)
            for _ in range(5):
                wdt.feed()
                time.sleep_ms(100)
            print("stop feeding")
            time.sleep_ms(5000)
            print("not reset!")
        elif cause == machine.WDT_RESET:
            machine.reset()
        print("end")
    """)
    p.wait_for(f"boot cause {W.WDT_RESET}", 30)
    p.wait_for(f"boot cause {W.HARD_RESET}", 30)
    assert "not reset!" not in p.log and p.boots == 3
    p.stop()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_machine_can_frames_reach_a_python_can_peer_and_back(world: W.World, tmp_path: Path,
                                                              runtime: str) -> None:
    import can

    from cabinlink_tools.sim.canbus import SimBus, SimBusServer

    bus = SimBus()
    server = SimBusServer(bus)
    host, port = server.start()
    board = world.add_board(W.SimBoard("b1", "esp32", bytes(6), can_addr=f"{host}:{port}"))
    peer = can.Bus(interface="cabinlink", channel=f"{host}:{port}")
    try:
        p = run_script(world, tmp_path, runtime, """
            import asyncio
            from machine import CAN
            can = CAN(0, 500000)
            try:
                can.send(0x123, bytes(9))
            except OverflowError:
                print("overflow")
            try:
                can.send(1 << 11, b"")
            except ValueError:
                print("invalid id")
            can.set_filters([(0x18DA0080, 0x1FFFFFFF, CAN.FLAG_EXT_ID)])
            flag = asyncio.ThreadSafeFlag()
            def on_irq(c):
                while c.irq().flags():
                    pass
                flag.set()
            can.irq(on_irq, CAN.IRQ_RX)
            async def main():
                print("sent", can.send(0x18DA0080 + 0x100, b"\\x02\\x10\\x01", CAN.FLAG_EXT_ID))
                got = []
                while len(got) < 1:
                    await flag.wait()
                    while True:
                        r = can.recv()
                        if r is None:
                            break
                        got.append("%x %s" % (r[0], bytes(r[1]).hex()))
                print("got", got)
            asyncio.run(main())
        """, board)
        p.wait_for("sent 0", 30)
        m = peer.recv(timeout=10)
        assert m is not None and m.arbitration_id == 0x18DA0180 and m.data == b"\x02\x10\x01"
        peer.send(can.Message(arbitration_id=0x18DA0081, data=b"\x00", is_extended_id=True))  # filtered
        peer.send(can.Message(arbitration_id=0x18DA0080, data=b"\x03\x7f\x10\x31", is_extended_id=True))
        p.wait_for("got", 10)
        text = "\n".join(p.log)
        assert "overflow" in text and "invalid id" in text
        assert "got ['18da0080 037f1031']" in text, text
        p.stop()
    finally:
        peer.shutdown()
        server.stop() if hasattr(server, "stop") else server.close()
        bus.close()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_sht4x_driver_reads_the_simulated_chip_and_rejects_bad_crc(world: W.World, tmp_path: Path,
                                                                    runtime: str) -> None:
    from cabinlink_tools.sim.cabin import Cabin
    from cabinlink_tools.sim.chips.sht4x import Sht4x

    # Held constant: no HVAC pull, no occupants, so the reading is exactly the set air.
    cabin = Cabin(temperature=21.5, humidity=40.0, occupants=0, hvac_setpoint=None)
    chip = Sht4x(0x44, env=cabin)
    board = world.add_board(W.SimBoard("b1", "esp32", bytes(6)))
    board.attach_i2c(22, 21, chip)
    p = run_script(world, tmp_path, runtime, """
        from machine import I2C, Pin
        from drivers.sht4x import SHT4x
        from drivers.sensirion import SensorError
        s = SHT4x(I2C(0, scl=Pin(22), sda=Pin(21)))
        print("reading", s.measure())
        import time
        go = Pin(4, Pin.IN)
        print("armed")
        while not go.value():  # the test corrupts the next CRC, then raises GPIO 4
            time.sleep_ms(5)
        try:
            print("bad", s.measure())
        except SensorError as e:
            print("sensorerror", e.args)
        try:
            SHT4x(I2C(0, scl=Pin(22), sda=Pin(21)), addr=0x45).measure()
        except SensorError as e:
            print("absent", e.args)
        print("done")
    """, board)
    p.wait_for("armed", 30)
    with world.lock:
        chip.corrupt_crc_next()
        board.pin(4).drive = 1
    p.wait_for("done", 30)
    text = "\n".join(p.log)
    assert "reading (2150, 4000)" in text, text
    assert "sensorerror" in text and "crc" in text and "absent" in text, text
    p.stop()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_firmware_process_ends_when_the_world_goes_away(tmp_path: Path, runtime: str) -> None:
    # A board without its world has no hardware and no power: it must not linger.
    w = W.World()
    w.start()
    p = run_script(w, tmp_path, runtime, """
        import asyncio
        from machine import Pin
        async def main():
            Pin(13, Pin.IN).irq(lambda p: None)
            print("armed")
            while True:
                await asyncio.sleep_ms(50)
        asyncio.run(main())
    """)
    p.wait_for("armed", 30)
    w.stop()
    assert p.proc is not None
    p.proc.wait(timeout=10)
    assert "simulated world closed the connection: stopping" in p.log
