# A load-generating accessory for the simulation benchmark (runs as firmware
# under either runtime): the protocol core over machine.CAN with a 1 Hz
# heartbeat and a temperature that changes every second, so a subscribed car
# gets one REPORT per second. Prints "ready" once its address is claimed.
import asyncio
import time

import json

from machine import SPI, Pin, unique_id

from cabinlink import claim, msg
from cabinlink import registry as reg
from cabinlink.can_link import CanLink
from cabinlink.clock import Clock
from cabinlink.model import Capability, device_info
from cabinlink.node import Node


def open_can(board):
    # The board's CAN controller, as boards/<board>.json describes it.
    spec = board["can"]
    if spec["controller"] == "mcp2515":
        from drivers.mcp2515 import MCP2515

        b = board["spi"]
        spi = SPI(b["id"], b.get("baudrate", 8000000), sck=Pin(b["sck"]), mosi=Pin(b["mosi"]),
                  miso=Pin(b["miso"]))
        return MCP2515(spi, Pin(spec["cs"], Pin.OUT, value=1), Pin(spec["int"], Pin.IN),
                       spec.get("bitrate", 500000), osc=spec.get("osc_hz", 8000000))
    from machine import CAN

    return CAN(0, spec.get("bitrate", 500000))


def main():
    clock = Clock()
    uid = unique_id()
    ident = (uid[3] << 16) | (uid[4] << 8) | uid[5]
    temp = Capability(reg.CAP_TEMPERATURE, values={0: 2000, 1: 0})
    info = device_info("bench", "sim node", uid.hex(), "0", "sim", lambda c, a, b: msg.OK)
    node = Node(clock, reg.CLASS_AMBIENT, [info, temp])
    can = open_can(json.load(open("board.json")))
    can.set_filters(None)
    link = CanLink(can, node, clock, claim.make_name(ident, 0xC0 | reg.CLASS_AMBIENT))

    async def run():
        link.start()
        said = False
        last = time.ticks_ms()
        v = 2000
        while True:
            link.poll()
            if not said and link.claim.ready:
                print("ready", hex(link.address))
                said = True
            if time.ticks_diff(time.ticks_ms(), last) >= 1000:
                last = time.ticks_add(last, 1000)
                v = 2000 + (v - 1999) % 50
                temp.set(0, v)
            await asyncio.sleep_ms(5)

    asyncio.run(run())


main()
