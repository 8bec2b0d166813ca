"""The BLE link (docs/spec.md section 8) end to end, under CPython AND the MicroPython unix
port: firmware builds a Node and a ``cabinlink.ble_link.BleLink`` over the simulated
``bluetooth.BLE``; a Bumble central (a BLE host stack we did not write) plays the car:
scans, connects, exchanges the MTU, talks CabinLink in fragments, reads the SIG services."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cabinlink import msg
from cabinlink import registry as reg
from cabinlink_tools.sim import world as W
from cabinlink_tools.sim.ble import BleWorld
from cabinlink_tools.sim.runner import RUNTIMES, BoardProcess

from carhelper import TX, BleSession

CAB_LE = bytes.fromhex("7be322f022c1be8c044c9011e388b4ca")
# docs/spec.md 8.2, written out byte by byte (identity 0x0A5A5, class 2, also on CAN, "AQ-1")
ADV = bytes.fromhex("02 01 06  11 07") + CAB_LE
RESP = bytes.fromhex("17 21") + CAB_LE + bytes.fromhex("00 01 02 a5 a5 01  05 09 41 51 2d 31")
UID = bytes.fromhex("24a16012ab01")

FIRMWARE = """
import asyncio
from bluetooth import BLE, UUID
from machine import Pin
from cabinlink import msg, sig
from cabinlink import registry as reg
from cabinlink.ble_link import ADV_ALSO_CAN, BleLink
from cabinlink.clock import Clock
from cabinlink.model import Capability, device_info
from cabinlink.node import Node

clock = Clock()
dev = device_info("Acme", "AQ-1", "0042", "0.1.0", "B", lambda c, a, b: msg.OK)
temp = Capability(reg.CAP_TEMPERATURE, values={0: 2150, 1: 0, 2: 0, 3: 1000},
                  label="cabin, front, driver side")
caps = [dev, temp,
        Capability(reg.CAP_TEMPERATURE, 1, values={0: 2200, 1: 0, 2: 0, 3: 1000},
                   label="cabin, rear, passenger side"),
        Capability(reg.CAP_HUMIDITY, values={0: 4500, 1: 0, 2: 0, 3: 1000},
                   label="cabin, front, driver side"),
        Capability(reg.CAP_CO2, values={0: 600, 1: 0}, label="cabin air, dashboard"),
        Capability(reg.CAP_ILLUMINANCE, values={0: 300, 1: 0}, label="roof, under the sunroof")]
node = Node(clock, reg.CLASS_AMBIENT, caps)
flag = asyncio.ThreadSafeFlag()  # set by the IRQ (here nobody waits on it)
link = BleLink(BLE(), UUID, node, clock, "AQ-1", reg.CLASS_AMBIENT, 0x0A5A5, ADV_ALSO_CAN,
               sig_services=[sig.environmental_sensing(caps)], wake=flag)
link.start()
warmer = Pin(4, Pin.IN)
print("advertising", link.handles)


async def main():
    sessions = 0
    while True:
        link.poll()
        node.poll()
        if warmer.value() and temp.get(0) != 2345:
            temp.set(0, 2345)
        if len(node.sessions) != sessions:
            sessions = len(node.sessions)
            print("sessions", sessions, "peers", link.peers(), "rx", link.rx_messages,
                  "tx", link.tx_notifications, "dropped", link.rx_dropped, link.tx_dropped)
        await asyncio.sleep_ms(2)


asyncio.run(main())
"""




def test_accessory_over_ble_link_with_a_bumble_car(world: W.World, ble: BleWorld,
                                                   tmp_path: Path, runtime: str) -> None:
    board = world.add_board(W.SimBoard("b1", "esp32", UID))
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(FIRMWARE))
    p = BoardProcess(world, board, runtime, script, tmp_path / "fs")
    p.start()
    try:
        p.wait_for("advertising", 30)
        car = ble.central("car")
        adv = car.scan(lambda a: CAB_LE in a.adv_data, timeout=30)
        assert (adv.adv_type, adv.adv_data, adv.scan_response) == (0, ADV, RESP)
        assert len(adv.adv_data) == 21 and len(adv.scan_response) == 30
        link = car.connect(adv)
        assert link.exchange_mtu(247) == 247
        notes = link.subscribe(TX)  # before the first request (M-8.3-2)
        c = BleSession(link, notes)

        assert c.send(msg.hello(1)) == 1
        assert c.next() == [msg.RESULT, 1, msg.OK, [0, 1, reg.CLASS_AMBIENT]]
        p.wait_for("sessions 1", 10)
        assert c.frags[0][:4] == bytes.fromhex("c0 00 08 84")  # seq 0, START+END

        c.send(msg.describe(2), response=False)  # Write Without Response
        start = len(c.frags)
        d = c.next()
        frags = c.frags[start:]
        assert len(frags) == 2 and len(frags[0]) == 244  # > one MTU: cut at ATT_MTU - 3
        assert [f[0] for f in frags] == [0x80 | 1, 0x40 | 2]
        assert d[:3] == [msg.RESULT, 2, msg.OK]
        desc = d[3]
        assert desc[msg.D_VENDOR] == "Acme" and desc[msg.D_CLASS] == reg.CLASS_AMBIENT
        assert [e[msg.C_ID] for e in desc[msg.D_CAPS]] == [
            reg.CAP_DEVICE_INFO, reg.CAP_TEMPERATURE, reg.CAP_TEMPERATURE, reg.CAP_HUMIDITY,
            reg.CAP_CO2, reg.CAP_ILLUMINANCE]

        # SUBSCRIBE to temperature (slot 1): RESULT, priming REPORT, then a REPORT per change
        ess = link.subscribe(0x2A6E)
        c.send(msg.subscribe(3, 1, reg.ATTR_TEMPERATURE_VALUE, 0, 60))
        assert c.next() == [msg.RESULT, 3, msg.OK, [0, 60]]
        assert c.next() == [msg.REPORT, 1, reg.ATTR_TEMPERATURE_VALUE, 2150]
        assert link.read(0x2A29) == b"Acme"  # Device Information: Manufacturer Name
        assert link.read(0x2A24) == b"AQ-1" and link.read(0x2A25) == b"0042"
        assert link.read(0x2A6E) == (2150).to_bytes(2, "little", signed=True)
        assert link.read(0x2A6F) == (4500).to_bytes(2, "little")
        assert link.read(0x2AFB) == (30000).to_bytes(3, "little")  # 300 lux in 0.01 lux
        with world.lock:
            board.pin(4).drive = 1  # the cabin warms up
        assert c.next() == [msg.REPORT, 1, reg.ATTR_TEMPERATURE_VALUE, 2345]
        assert ess.get(timeout=5) == (2345).to_bytes(2, "little", signed=True)  # SIG notify
        assert int.from_bytes(link.read(0x2A6E), "little", signed=True) == 2345
        assert c.rx.dropped == 0 and c.rx.gaps == 0

        mark = len(p.log)
        link.disconnect()
        p.wait_for("sessions 0 peers []", 10, mark)  # the node dropped the session
        again = car.scan(lambda a: CAB_LE in a.adv_data, timeout=30)  # advertising again
        assert (again.adv_data, again.scan_response) == (ADV, RESP)
        line = p.log[p.wait_for("sessions 0", 10, mark)]
        assert line.endswith("dropped 0 0")
    finally:
        p.stop()


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    return request.param
