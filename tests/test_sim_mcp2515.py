"""The MCP2515 model (sim/chips/mcp2515.py) at the register level, and the firmware driver
(firmware/drivers/mcp2515.py) on a simulated board with the chip wired on SPI, its INT
pin on a GPIO and the chip on a simulated CAN bus - under CPython and the MicroPython
unix port. Peers on the bus are SimBus nodes and python-can (``interface="cabinlink"``).
Times are generous timeouts, never pass/fail speed limits."""
from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cabinlink_tools.sim import world as W
from cabinlink_tools.sim.canbus import Frame, SimBus, SimBusServer, SimNode
from cabinlink_tools.sim.chips import mcp2515 as M
from cabinlink_tools.sim.chips.mcp2515 import Mcp2515, bitrate_from_cnf
from cabinlink_tools.sim.chips.pins import SimPin
from cabinlink_tools.sim.runner import RUNTIMES, BoardProcess

CNF_500K_8MHZ = (0x82, 0x90, 0x00)  # CNF3, CNF2, CNF1 (address order)


# ---------------------------------------------------------------------------------------
# register-level helpers
# ---------------------------------------------------------------------------------------


def xfer(chip: Mcp2515, *data: int) -> bytes:
    chip.spi_select()
    out = chip.spi_transfer(bytes(data))
    chip.spi_deselect()
    return out


def rd(chip: Mcp2515, addr: int, n: int = 1) -> bytes:
    return xfer(chip, M.READ, addr, *([0] * n))[2:]


def wr(chip: Mcp2515, addr: int, *values: int) -> None:
    xfer(chip, M.WRITE, addr, *values)


def bm(chip: Mcp2515, addr: int, mask: int, value: int) -> None:
    xfer(chip, M.BIT_MODIFY, addr, mask, value)


def set_mode(chip: Mcp2515, mode: int) -> None:
    bm(chip, M.CANCTRL, 0xE0, mode << 5)


def start(chip: Mcp2515, cnf: tuple[int, int, int] = CNF_500K_8MHZ, mode: int = M.MODE_NORMAL,
          rxm_any: bool = True, inte: int = 0xFF) -> None:
    xfer(chip, M.RESET)
    wr(chip, M.CNF3, *cnf)
    if rxm_any:
        wr(chip, M.RXB[0], 0x60)
        wr(chip, M.RXB[1], 0x60)
    wr(chip, M.CANINTE, inte)
    set_mode(chip, mode)


def load(chip: Mcp2515, n: int, can_id: int, data: bytes = b"", ext: bool = False,
         rtr: bool = False) -> None:
    if ext:
        sid, eid = can_id >> 18, can_id & 0x3FFFF
        regs = [sid >> 3, ((sid & 7) << 5) | 0x08 | (eid >> 16), (eid >> 8) & 0xFF, eid & 0xFF]
    else:
        regs = [can_id >> 3, (can_id & 7) << 5, 0, 0]
    dlc = (0x40 if rtr else 0) | len(data)
    xfer(chip, M.LOAD_TX | (n << 1), *regs, dlc, *([] if rtr else data))


def filt(chip: Mcp2515, addr: int, can_id: int, ext: bool) -> None:
    if ext:
        sid, eid = can_id >> 18, can_id & 0x3FFFF
        wr(chip, addr, sid >> 3, ((sid & 7) << 5) | 0x08 | (eid >> 16), (eid >> 8) & 0xFF, eid & 0xFF)
    else:
        wr(chip, addr, can_id >> 3, (can_id & 7) << 5, 0, 0)


def read_rx(chip: Mcp2515, n: int) -> tuple[int, bool, bool, bytes]:
    raw = xfer(chip, M.READ_RX | (n << 2), *([0] * 13))[1:]
    sidh, sidl, eid8, eid0, dlc = raw[:5]
    ext = bool(sidl & 0x08)
    if ext:
        can_id = (sidh << 21) | ((sidl >> 5) << 18) | ((sidl & 3) << 16) | (eid8 << 8) | eid0
        rtr = bool(dlc & 0x40)
    else:
        can_id = (sidh << 3) | (sidl >> 5)
        rtr = bool(sidl & 0x10)
    return can_id, ext, rtr, bytes(raw[5:5 + (dlc & 0x0F)])


def wait(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.001)


@pytest.fixture
def rig() -> Iterator[tuple[SimBus, Mcp2515, SimNode, SimPin]]:
    bus = SimBus(realtime=False)
    pin = SimPin(4)
    chip = Mcp2515(bus, 8_000_000, pin, name="chip")
    peer = bus.attach("peer")
    try:
        yield bus, chip, peer, pin
    finally:
        chip.close()
        bus.close()


# ---------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------


def test_reset_state_and_config_only_registers(rig: tuple) -> None:
    bus, chip, peer, pin = rig
    assert rd(chip, M.CANSTAT)[0] == 0x80 and rd(chip, M.CANCTRL)[0] == 0x87
    assert rd(chip, 0x7E)[0] == 0x80 and rd(chip, 0x5F)[0] == 0x87  # mirrors
    assert pin.level() == 1  # INT idle high
    wr(chip, M.CNF3, *CNF_500K_8MHZ)
    wr(chip, M.RXF[0], 0x12, 0x34)
    set_mode(chip, M.MODE_NORMAL)
    assert rd(chip, M.CANSTAT)[0] >> 5 == M.MODE_NORMAL and chip.bitrate == 500_000
    wr(chip, M.CNF1, 0x3F)  # CNF and filters only change in configuration mode
    wr(chip, M.RXF[0], 0xAA)
    assert rd(chip, M.CNF1)[0] == 0x00 and rd(chip, M.RXF[0])[0] == 0x12
    wr(chip, M.CANSTAT, 0xFF)
    wr(chip, M.TEC, 0x55)  # read-only
    assert rd(chip, M.CANSTAT)[0] >> 5 == 0 and rd(chip, M.TEC)[0] == 0
    set_mode(chip, M.MODE_CONFIG)
    wr(chip, M.CNF1, 0x3F)
    assert rd(chip, M.CNF1)[0] == 0x3F
    xfer(chip, M.RESET)
    assert rd(chip, M.CNF1)[0] == 0 and rd(chip, M.CANSTAT)[0] == 0x80


def test_bit_modify_only_on_bit_modifiable_registers(rig: tuple) -> None:
    bus, chip, peer, pin = rig
    wr(chip, M.CANINTE, 0xF0)
    bm(chip, M.CANINTE, 0x0F, 0x05)  # bit-modifiable: only the masked bits change
    assert rd(chip, M.CANINTE)[0] == 0xF5
    wr(chip, M.TXB[0] + 1, 0xF0)  # TXB0SIDH is not: the mask is forced to 0xFF
    bm(chip, M.TXB[0] + 1, 0x0F, 0x05)
    assert rd(chip, M.TXB[0] + 1)[0] == 0x05
    wr(chip, M.RXF[0], 0xF0)  # nor is a filter register (in configuration mode)
    bm(chip, M.RXF[0], 0x01, 0x01)
    assert rd(chip, M.RXF[0])[0] == 0x01
    # BUKT1 mirrors BUKT; FILHIT/RXRTR cannot be written
    wr(chip, M.RXB[0], 0xFF)
    assert rd(chip, M.RXB[0])[0] == 0x66


def test_transmit_standard_extended_and_remote_frames(rig: tuple) -> None:
    bus, chip, peer, pin = rig
    start(chip, inte=M.TX0IF | M.TX1IF)
    load(chip, 0, 0x123, b"\x01\x02\x03")
    load(chip, 1, 0x18DA0080, b"\xAA", ext=True)
    assert xfer(chip, M.READ_STATUS, 0)[1] == 0  # nothing requested yet
    xfer(chip, M.RTS | 0x01)
    got = peer.recv(timeout=2)
    assert got is not None and got.frame == Frame(0x123, b"\x01\x02\x03")
    wait(lambda: pin.level() == 0)  # TX0IF enabled: INT low
    assert xfer(chip, M.READ_STATUS, 0)[1] == 0x08  # TX0IF, no TXREQ
    assert rd(chip, M.CANSTAT)[0] & 0x0E == 3 << 1  # ICOD: TXB0
    bm(chip, M.CANINTF, M.TX0IF, 0)
    assert pin.level() == 1
    bm(chip, M.TXB[1], M.TXREQ, M.TXREQ)  # TXREQ by bit modify
    got = peer.recv(timeout=2)
    assert got is not None and got.frame == Frame(0x18DA0080, b"\xAA", True)
    load(chip, 2, 0x7FF, bytes(4), rtr=True)
    wr(chip, M.TXB[2], M.TXREQ)
    got = peer.recv(timeout=2)
    assert got is not None and got.frame.rtr and got.frame.dlc == 4 and got.frame.can_id == 0x7FF
    assert chip.frames_tx == 3


def test_tx_priority_then_buffer_number_and_aborts(rig: tuple) -> None:
    bus, chip, peer, pin = rig
    start(chip)
    with bus.paused():
        load(chip, 0, 0x100)
        load(chip, 1, 0x101)
        load(chip, 2, 0x102)
        wr(chip, M.TXB[0], M.TXREQ | 3)  # highest TXP: taken at once, held by the paused bus
        wr(chip, M.TXB[1], M.TXREQ | 1)
        wr(chip, M.TXB[2], M.TXREQ | 1)  # same TXP as TXB1: the higher buffer number wins
        load(chip, 1, 0x7EE)  # ignored: TXB1 is pending
        time.sleep(0.01)
    order = [peer.recv(timeout=2).frame.can_id for _ in range(3)]  # type: ignore[union-attr]
    assert order == [0x100, 0x102, 0x101]
    # abort: clearing TXREQ of a waiting buffer sets ABTF; ABAT aborts all waiting buffers
    with bus.paused():
        load(chip, 0, 0x200)
        load(chip, 1, 0x201)
        load(chip, 2, 0x202)
        wr(chip, M.TXB[0], M.TXREQ | 3)  # on its way
        wr(chip, M.TXB[1], M.TXREQ)
        wr(chip, M.TXB[2], M.TXREQ)
        bm(chip, M.TXB[1], M.TXREQ, 0)
        bm(chip, M.CANCTRL, M.ABAT, M.ABAT)
        assert rd(chip, M.TXB[1])[0] & M.ABTF and rd(chip, M.TXB[2])[0] & M.ABTF
    assert peer.recv(timeout=2).frame.can_id == 0x200  # type: ignore[union-attr]
    assert peer.recv(timeout=0.1) is None


def test_masks_filters_rollover_overflow_and_rx_status(rig: tuple) -> None:
    bus, chip, peer, pin = rig
    start(chip, mode=M.MODE_CONFIG, rxm_any=False, inte=M.RX0IF | M.RX1IF)
    wr(chip, M.RXM[0], 0xFF, 0xE0, 0, 0)  # RXB0: all 11 standard id bits
    filt(chip, M.RXF[0], 0x123, False)
    filt(chip, M.RXF[1], 0x124, False)
    wr(chip, M.RXM[1], 0xFF, 0xE3, 0xFF, 0xFF)  # RXB1: all 29 bits
    for i in (2, 3, 4, 5):
        filt(chip, M.RXF[i], 0x18DA0080, True)
    wr(chip, M.RXB[0], M.BUKT)
    set_mode(chip, M.MODE_NORMAL)
    for f in (Frame(0x125), Frame(0x18DA0081, b"", True), Frame(0x123 << 18, b"", True),
              Frame(0x124, b"\x01"), Frame(0x18DA0080, b"\x02", True)):
        peer.send(f)
    wait(lambda: chip.frames_rx == 2)
    bus.wait_idle()
    # RXB0 has 0x124 (filter 1), RXB1 the extended frame (filter 2); the rest was rejected
    assert xfer(chip, M.RX_STATUS, 0)[1] == 0xC0 | 1  # both full; RXB0: std data, RXF1
    assert rd(chip, M.RXB[0])[0] & 0x01 and rd(chip, M.RXB[1])[0] & 0x07 == 2
    assert pin.level() == 0
    assert read_rx(chip, 0) == (0x124, False, False, b"\x01")  # CS high clears RX0IF
    assert xfer(chip, M.RX_STATUS, 0)[1] == 0x80 | (2 << 3) | 2  # RXB1: ext data, RXF2
    assert read_rx(chip, 1) == (0x18DA0080, True, False, b"\x02")
    assert rd(chip, M.CANINTF)[0] & 0x03 == 0 and pin.level() == 1
    # rollover: two frames for RXB0 -> the second lands in RXB1 (RX STATUS filter 6/7)
    peer.send(Frame(0x123, b"\x0a"))
    peer.send(Frame(0x124, b"\x0b"))
    wait(lambda: rd(chip, M.CANINTF)[0] & 0x03 == 0x03)
    assert read_rx(chip, 0)[3] == b"\x0a"
    assert xfer(chip, M.RX_STATUS, 0)[1] == 0x80 | 7  # RXF1, rolled over into RXB1
    # a third frame while both are full: RX1OVR and ERRIF
    peer.send(Frame(0x123, b"\x0c"))
    peer.send(Frame(0x123, b"\x0d"))
    wait(lambda: rd(chip, M.EFLG)[0] & M.RX1OVR != 0)
    assert rd(chip, M.CANINTF)[0] & M.ERRIF and chip.overflows == 1
    bm(chip, M.EFLG, M.RX1OVR, 0)
    assert rd(chip, M.EFLG)[0] == 0
    assert read_rx(chip, 0)[3] == b"\x0c" and read_rx(chip, 1)[3] == b"\x0b"


def test_standard_frames_can_be_filtered_on_their_first_data_bytes(rig: tuple) -> None:
    bus, chip, peer, pin = rig
    start(chip, mode=M.MODE_CONFIG, rxm_any=False)
    wr(chip, M.RXM[0], 0xFF, 0xE0, 0xFF, 0x00)  # id and data byte 0
    wr(chip, M.RXF[0], 0x123 >> 3, (0x123 & 7) << 5, 0x42, 0x00)
    wr(chip, M.RXF[1], 0x123 >> 3, (0x123 & 7) << 5, 0x42, 0x00)
    wr(chip, M.RXM[1], 0xFF, 0xFF, 0xFF, 0xFF)
    for i in (2, 3, 4, 5):
        filt(chip, M.RXF[i], 0x1FFFFFFF, True)
    set_mode(chip, M.MODE_NORMAL)
    peer.send(Frame(0x123, b"\x41\x00"))
    peer.send(Frame(0x123, b"\x42\x99"))
    bus.wait_idle()
    wait(lambda: chip.frames_rx == 1)
    assert read_rx(chip, 0)[3] == b"\x42\x99"


def test_loopback_and_listen_only(rig: tuple) -> None:
    bus, chip, peer, pin = rig
    start(chip, mode=M.MODE_LOOPBACK)
    load(chip, 0, 0x321, b"\x05")
    xfer(chip, M.RTS | 1)
    assert rd(chip, M.CANINTF)[0] & (M.RX0IF | M.TX0IF) == M.RX0IF | M.TX0IF
    assert read_rx(chip, 0) == (0x321, False, False, b"\x05")
    peer.send(Frame(0x55))  # loopback ignores the bus
    bus.wait_idle()
    assert peer.recv(timeout=0.05) is None and rd(chip, M.CANINTF)[0] & 0x03 == 0
    set_mode(chip, M.MODE_CONFIG)
    set_mode(chip, M.MODE_LISTEN)
    load(chip, 0, 0x321, b"\x06")
    xfer(chip, M.RTS | 1)  # listen-only never transmits
    peer.send(Frame(0x56, b"\x07"))
    wait(lambda: rd(chip, M.CANINTF)[0] & M.RX0IF != 0)
    assert read_rx(chip, 0)[0] == 0x56
    assert peer.recv(timeout=0.05) is None and rd(chip, M.TXB[0])[0] & M.TXREQ


def test_sleep_wakes_on_bus_activity(rig: tuple) -> None:
    bus, chip, peer, pin = rig
    start(chip, inte=M.WAKIF)
    set_mode(chip, M.MODE_SLEEP)
    peer.send(Frame(0x10))
    wait(lambda: pin.level() == 0)
    assert rd(chip, M.CANINTF)[0] & M.WAKIF and chip.mode == M.MODE_LISTEN


def test_bit_rate_from_cnf_and_a_mismatch_goes_bus_off_then_recovers(rig: tuple) -> None:
    bus, chip, peer, pin = rig
    assert bitrate_from_cnf(8_000_000, 0x00, 0x90, 0x82) == 500_000
    assert bitrate_from_cnf(16_000_000, 0x00, 0xF0, 0x86) == 500_000
    assert bitrate_from_cnf(16_000_000, 0x03, 0xF0, 0x86) == 125_000
    start(chip, cnf=(0x86, 0xF0, 0x00), inte=M.ERRIF)  # 16 MHz values on an 8 MHz chip: 250k
    assert chip.bitrate == 250_000
    load(chip, 0, 0x123, b"\x01")
    xfer(chip, M.RTS | 1)
    wait(lambda: rd(chip, M.TEC)[0] >= 96)  # every attempt is an error: +8
    assert rd(chip, M.EFLG)[0] & (M.TXWAR | M.EWARN) and pin.level() == 0  # ERRIF
    assert rd(chip, M.TXB[0])[0] & (M.TXERR | M.TXREQ) == M.TXERR | M.TXREQ
    wait(lambda: chip.recoveries >= 1)  # bus-off, then back after 128 x 11 bits
    # ... and round again, as the real chip would: the frame is still pending
    assert peer.recv(timeout=0.05) is None  # nothing ever reached the bus
    assert rd(chip, M.TXB[0])[0] & M.TXREQ and rd(chip, M.TEC)[0] <= 255


def test_bus_off_by_error_frames_then_automatic_recovery_and_retransmission(rig: tuple) -> None:
    bus, chip, peer, pin = rig
    start(chip, inte=M.ERRIF)
    bus.corrupt_next(32, match=0x123)  # 32 x (TEC += 8) = 256: bus-off
    load(chip, 0, 0x123, b"\x01")
    xfer(chip, M.RTS | 1)
    wait(lambda: chip.recoveries == 1)
    got = peer.recv(timeout=2)  # retransmitted after the recovery
    assert got is not None and got.frame.can_id == 0x123
    wait(lambda: rd(chip, M.TXB[0])[0] & M.TXREQ == 0)
    assert rd(chip, M.TXB[0])[0] & M.TXERR
    assert rd(chip, M.TEC, 2) == b"\x00\x00" and rd(chip, M.EFLG)[0] == 0
    assert rd(chip, M.CANINTF)[0] & (M.ERRIF | M.MERRF) == M.ERRIF | M.MERRF


def test_forced_bus_off_holds_until_released(rig: tuple) -> None:
    bus, chip, peer, pin = rig
    start(chip, inte=M.ERRIF)
    chip.force_bus_off(hold=True)
    assert rd(chip, M.EFLG)[0] & M.TXBO and rd(chip, M.TEC)[0] == 255 and pin.level() == 0
    load(chip, 0, 0x42)
    xfer(chip, M.RTS | 1)
    time.sleep(0.05)
    assert rd(chip, M.EFLG)[0] & M.TXBO and peer.recv(timeout=0.01) is None
    bm(chip, M.CANINTF, M.ERRIF, 0)
    chip.release_bus_off()
    wait(lambda: rd(chip, M.EFLG)[0] == 0)
    assert peer.recv(timeout=2).frame.can_id == 0x42  # type: ignore[union-attr]
    assert rd(chip, M.CANINTF)[0] & M.ERRIF  # leaving bus-off is an error-state change too


def test_recovery_time_follows_the_clock(rig: tuple) -> None:
    bus, _, peer, _ = rig
    now = [100.0]
    chip = Mcp2515(bus, 8_000_000, name="manual", clock=lambda: now[0], timers=False)
    try:
        start(chip)
        chip.force_bus_off()
        now[0] += 128 * 11 / 500_000 * 0.99
        chip.poll()
        assert chip.bus_off()
        now[0] += 128 * 11 / 500_000 * 0.02
        chip.poll()
        assert not chip.bus_off() and chip.recoveries == 1
    finally:
        chip.close()


# ---------------------------------------------------------------------------------------
# the driver in a firmware process
# ---------------------------------------------------------------------------------------

SPI_PINS = (18, 23, 19)  # VSPI: sck, mosi, miso
CS, INT = 5, 4
PRELUDE = """
from machine import SPI, Pin
from drivers.mcp2515 import MCP2515
spi = SPI(2, baudrate=8000000, sck=Pin(18), mosi=Pin(23), miso=Pin(19))
can = MCP2515(spi, Pin(5, Pin.OUT, value=1), Pin(4, Pin.IN), 500000, osc=8000000)
"""



@pytest.fixture
def can_rig(world: W.World) -> Iterator[tuple[W.World, W.SimBoard, Mcp2515, SimBus, SimBusServer]]:
    bus = SimBus()
    server = SimBusServer(bus)
    server.start()
    board = world.add_board(W.SimBoard("b1", "esp32", bytes.fromhex("24a16012ab01")))
    # as boards/*.json describe it: {"can": {"controller": "mcp2515", "cs": .., "int": ..}}
    chip = Mcp2515.wire(board, bus, {"cs": CS, "int": INT, "osc_hz": 8_000_000},
                        lock=world.lock, spi=dict(zip(("sck", "mosi", "miso"), SPI_PINS)))
    assert board.spi["18/23/19"] == [(CS, chip)]
    try:
        yield world, board, chip, bus, server
    finally:
        chip.close()
        server.stop()
        bus.close()


def run_script(world: W.World, board: W.SimBoard, tmp_path: Path, runtime: str,
               body: str) -> BoardProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    proc = BoardProcess(world, board, runtime, script, tmp_path / "fs")
    proc.start()
    return proc


def peer_bus(server: SimBusServer):  # noqa: ANN201 - can.BusABC
    import can

    return can.Bus(interface="cabinlink", channel=server.channel)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_driver_frames_both_ways_filters_and_int_irq(can_rig: tuple, tmp_path: Path,
                                                     runtime: str) -> None:
    import can

    world, board, chip, bus, server = can_rig
    peer = peer_bus(server)
    try:
        p = run_script(world, board, tmp_path, runtime, PRELUDE + """
import asyncio
print("state", can.state(), "timings", can.get_timings())
for bad in ([(i, 0x7FF, 0) for i in range(7)], [(1, 0x7FF, 0), (2, 0x7F0, 0), (3, 0x700, 0)],
            [(1 << 11, 0x7FF, 0)]):
    try:
        can.set_filters(bad)
    except ValueError as e:
        print("valueerror", len(bad))
try:
    can.send(0x123, bytes(9))
except OverflowError:
    print("overflow")
can.set_filters([(0x120, 0x7F0, 0), (0x18DA0080, 0x1FFFFFFF, can.FLAG_EXT_ID)])
flag = asyncio.ThreadSafeFlag()
def on_irq(c):
    while True:
        f = c.irq().flags()
        if not f:
            break
        if f & c.IRQ_RX:
            flag.set()
can.irq(on_irq, can.IRQ_RX)
async def main():
    print("sent", can.send(0x18DA0180, b"\\x02\\x10\\x01", can.FLAG_EXT_ID))
    got = []
    rx = [0, memoryview(bytearray(8)), 0, 0]
    while len(got) < 3:
        await flag.wait()
        while True:
            r = can.recv(rx)
            if r is None:
                break
            got.append("%x:%s:%d" % (r[0], bytes(r[1]).hex(), r[2]))
    print("got", sorted(got))
    print("counters", can.get_counters())
asyncio.run(main())
""")
        p.wait_for("sent 0", 30)
        m = peer.recv(timeout=10)
        assert m is not None and m.arbitration_id == 0x18DA0180 and m.is_extended_id
        assert m.data == b"\x02\x10\x01"
        for arb, data, ext in ((0x12F, b"\x01", False), (0x130, b"\x02", False),
                               (0x18DA0081, b"\x03", True), (0x18DA0080, b"\x04\x05", True),
                               (0x120, b"", False)):
            # paced: the chip has two receive buffers, a burst would overflow them
            peer.send(can.Message(arbitration_id=arb, data=data, is_extended_id=ext))
            time.sleep(0.1)
        p.wait_for("counters", 20)
        text = "\n".join(p.log)
        assert "state 1 timings [500000, 1, 4, 3, None, None]" in text, text
        assert "valueerror 7" in text and text.count("valueerror 3") == 1 and "valueerror 1" in text
        assert "overflow" in text
        assert "got ['120::0', '12f:01:0', '18da0080:0405:2']" in text, text
        assert "counters [0, 0, 0, 0, 0, 0, 0, 0]" in text, text
        p.stop()
    finally:
        peer.shutdown()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_driver_sees_bus_off_and_holds_it_until_restart(can_rig: tuple, tmp_path: Path,
                                                        runtime: str) -> None:
    """The chip leaves bus-off by itself after 128 x 11 recessive bits; the driver does not
    (spec 7.7, M-7.7-4: a controller's automatic recovery overridden): it stays bus-off,
    refusing to send, until the firmware's restart(), as machine.CAN does."""
    world, board, chip, bus, server = can_rig
    peer = peer_bus(server)
    try:
        p = run_script(world, board, tmp_path, runtime, PRELUDE + """
import time
can.set_filters(None)
irq_states = []
def on_state(c):
    while True:
        f = c.irq().flags()
        if not f:
            break
        if f & c.IRQ_STATE:
            irq_states.append(c.state())
can.irq(on_state, can.IRQ_STATE)
print("ready", can.state())
while can.state() != can.STATE_BUS_OFF:
    time.sleep_ms(5)
print("busoff")
try:
    can.send(0x100, b"\\x01")
except OSError as e:
    print("send oserror", e.args[0])
time.sleep_ms(300)  # the chip has recovered meanwhile (the test released the bus)
print("still", can.state())
try:
    can.send(0x100, b"\\x01")
except OSError as e:
    print("still refused", e.args[0])
can.restart()
print("recovered", can.send(0x101, b"\\x02"), can.get_counters()[:5])
time.sleep_ms(50)
print("state irqs", irq_states)
""")
        p.wait_for("ready 1", 30)
        chip.force_bus_off(hold=True)
        p.wait_for("send oserror 5", 10)
        time.sleep(0.05)
        assert chip.bus_off()
        chip.release_bus_off()  # the chip recovers by itself; the driver holds bus-off
        p.wait_for("still 4", 10)
        p.wait_for("still refused 5", 10)
        assert chip.recoveries >= 1
        p.wait_for("recovered 0", 10)
        m = peer.recv(timeout=10)
        assert m is not None and m.arbitration_id == 0x101 and m.data == b"\x02"
        p.wait_for("state irqs", 10)
        text = "\n".join(p.log)
        assert "recovered 0 [0, 0, 1, 1, 1]" in text, text  # TEC, REC, n_warn/passive/busoff
        assert "state irqs [4" in text, text
        p.stop()
    finally:
        peer.shutdown()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_canlink_runs_unchanged_over_the_driver(can_rig: tuple, tmp_path: Path,
                                                runtime: str) -> None:
    import can

    from cabinlink import claim

    world, board, chip, bus, server = can_rig
    peer = peer_bus(server)
    try:
        p = run_script(world, board, tmp_path, runtime, PRELUDE + """
import time
from cabinlink import claim
from cabinlink.can_link import CanLink
from cabinlink.clock import Clock

class Endpoint:
    max_rx = 512
    def receive(self, link, peer, data):
        print("received", peer, bytes(data).hex())
    def peer_lost(self, link, peer):
        pass
    def poll(self):
        pass
    def heartbeat(self):
        return b"\\x81\\x00"

can.set_filters(None)
link = CanLink(can, Endpoint(), Clock(), claim.make_name(5, 0xC3), 0x85)
link.start()
announced = False
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 8000:
    link.poll()
    if link.claim.ready and not announced:
        announced = True
        print("claimed", hex(link.address))
    time.sleep_ms(2)
""")
        p.wait_for("claimed 0x85", 30)
        ids = set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not {claim.claim_id(0x85), 0x18DBFF85} <= ids:
            m = peer.recv(timeout=1)
            if m is not None:
                ids.add(m.arbitration_id)
        assert {claim.claim_id(0x85), 0x18DBFF85} <= ids, [hex(i) for i in ids]
        # a functional single frame to the accessory, from a tester at 0xF1
        peer.send(can.Message(arbitration_id=0x18DB85F1, data=b"\x02\x81\x01" + b"\xcc" * 5,
                              is_extended_id=True))
        p.wait_for("received 241 8101", 10)
        p.stop()
    finally:
        peer.shutdown()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_driver_without_a_chip_raises_enodev(world: W.World, tmp_path: Path, runtime: str) -> None:
    board = world.add_board(W.SimBoard("b1", "esp32", bytes(6)))
    p = run_script(world, board, tmp_path, runtime, """
from machine import SPI, Pin
import drivers.mcp2515 as m
print("imported")
spi = SPI(2, baudrate=8000000, sck=Pin(18), mosi=Pin(23), miso=Pin(19))
try:
    m.MCP2515(spi, Pin(5, Pin.OUT, value=1), None, 500000)
except OSError as e:
    print("oserror", e.args[0])
try:
    m.MCP2515(spi, Pin(5, Pin.OUT, value=1), None, 1000000)
except ValueError:
    print("valueerror 1M at 8MHz")
""")
    p.wait_for("valueerror 1M at 8MHz", 30)
    assert "oserror 19" in p.log
    p.stop()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_driver_tx_queue_priority_tx_irq_and_receive_overrun(can_rig: tuple, tmp_path: Path,
                                                             runtime: str) -> None:
    import can

    world, board, chip, bus, server = can_rig
    peer = peer_bus(server)
    go = board.pin(13)
    try:
        with bus.paused():  # nothing leaves until the firmware has queued everything
            p = run_script(world, board, tmp_path, runtime, PRELUDE + """
import time
can.set_filters(None)
done = []
def on_irq(c):
    while True:
        f = c.irq().flags()
        if not f:
            break
        if f & c.IRQ_TX:
            done.append((f >> c.IRQ_TX_IDX_SHIFT) & c.IRQ_TX_IDX_MASK)
can.irq(on_irq, can.IRQ_TX)
print("queued", can.send(0x300, b"\\x03"), can.send(0x300, b"\\x04"),
      can.send(0x300, b"\\x05", can.FLAG_UNORDERED), can.send(0x100, b"\\x01"),
      can.send(0x200, b"\\x02"))
go = Pin(13, Pin.IN)
while not go.value():
    time.sleep_ms(5)
print("tx done", sorted(done))
a = can.recv()
b = can.recv()
print("rx", hex(a[0]), a[3], hex(b[0]), b[3], can.recv(), can.get_counters()[5:])
""")
            p.wait_for("queued", 30)
        order = []
        for _ in range(3):
            m = peer.recv(timeout=10)
            assert m is not None
            order.append((m.arbitration_id, bytes(m.data)))
        # 0x300 was on its way; then the lower id first, the later 0x300 last
        assert order == [(0x300, b"\x03"), (0x100, b"\x01"), (0x300, b"\x05")], order
        for i in range(4):  # a burst while the firmware is not reading: two buffers, two lost
            peer.send(can.Message(arbitration_id=0x400 + i, data=b"", is_extended_id=False))
        time.sleep(0.3)
        with world.lock:
            go.drive = 1
        p.wait_for("rx", 20)
        text = "\n".join(p.log)
        assert "queued 0 None 1 2 None" in text, text
        assert "tx done [0, 1, 2]" in text, text
        # FULL|OVERRUN on the first; two frames were lost but RX1OVR is one flag: the
        # driver counts the overflow flags it sees (the chip counted both)
        assert "rx 0x400 3 0x401 0 None [0, 0, 1]" in text, text
        assert chip.overflows == 2
        p.stop()
    finally:
        peer.shutdown()


HEAP_SCRIPT = """
import gc, micropython
from drivers.mcp2515 import MCP2515

class Pin:
    IRQ_FALLING = 2
    def __call__(self, v=None):
        pass

class Spi:
    # Just enough of a chip: modes, an empty TX side, a frame in RXB0 every other poll.
    def __init__(self):
        self.mode = 4
        self.toggle = 0
    def write_readinto(self, w, r):
        for i in range(len(r)):
            r[i] = 0
        c = w[0]
        if c == 0xC0:
            self.mode = 4
        elif c == 0x05 and w[1] == 0x0F:
            self.mode = w[3] >> 5
        elif c == 0x03 and w[1] == 0x0E:
            r[2] = self.mode << 5
        elif c == 0x03 and w[1] == 0x2C:
            self.toggle ^= 1
            r[2] = self.toggle
        elif c == 0x90:
            r[1] = 0xC6; r[2] = 0xCA; r[4] = 0x80; r[5] = 3; r[6] = 1; r[7] = 2; r[8] = 3

can = MCP2515(Spi(), Pin(), None, 500000)
can.set_filters(None)
rx = [0, memoryview(bytearray(8)), 0, 0]
data = b"12345678"
can.send(0x18DA0080, data, can.FLAG_EXT_ID)
can.recv(rx)
ok = False
i = j = r = s = None
gc.collect()
micropython.heap_lock()
try:
    for k in range(20):
        i = can.send(0x18DA0080 + k, data, 2)
        j = can.send(0x7FF, data, 0)
        r = can.recv(rx)
        r = can.recv(rx)
        s = can.state()
    ok = True
except MemoryError:
    pass
micropython.heap_unlock()
print("noalloc" if ok else "ALLOCATES", hex(rx[0]), bytes(rx[1]))
"""


def test_driver_frames_cost_no_heap_on_micropython(tmp_path: Path) -> None:
    # send(), recv() into a caller's list and state() with the heap locked: any
    # allocation per frame would raise MemoryError (a fake SPI stands in for the chip).
    import subprocess

    from runtimes import micropython_binary

    from cabinlink_tools.sim.runner import FIRMWARE

    (tmp_path / "heap.py").write_text(HEAP_SCRIPT)
    out = subprocess.run([micropython_binary(), str(tmp_path / "heap.py")], capture_output=True,
                         text=True, timeout=60,
                         env={"MICROPYPATH": f"{FIRMWARE}:{FIRMWARE / 'lib'}"})
    assert out.stdout.strip() == "noalloc 0x18da0080 b'\\x01\\x02\\x03'", out.stdout + out.stderr
