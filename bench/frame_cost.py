# CPU cost of one received CAN frame in the firmware's CAN path (CanLink +
# ISO-TP + node), measured on whatever runtime runs this file. Traffic: other
# nodes' heartbeats (functional single frames) and multi-frame requests to us.
# Prints one JSON line: {"runtime", "frames", "us_per_frame"}.
import json
import sys
import time

from cabinlink import claim, isotp, msg
from cabinlink import registry as reg
from cabinlink.can_link import CanLink
from cabinlink.clock import Clock
from cabinlink.codec import encode
from cabinlink.model import Capability, device_info
from cabinlink.node import Node


class FakeCan:
    def __init__(self):
        self.q = []
        self.i = 0
        self.sent = 0

    def send(self, can_id, data, flags=0):
        self.sent += 1
        return 0

    def recv(self, lst):
        if self.i >= len(self.q):
            return None
        can_id, data = self.q[self.i]
        self.i += 1
        lst[0] = can_id
        lst[1] = data
        lst[2] = 2
        lst[3] = 0
        return lst

    def state(self):
        return 1

    def restart(self):
        pass


def now_us():
    try:
        return time.ticks_us()
    except AttributeError:
        return time.perf_counter_ns() // 1000


def traffic(me, n):
    hb = encode(msg.heartbeat(100))
    hb_frame = memoryview(bytes([len(hb)]) + hb + b"\xcc" * (7 - len(hb)))
    req = encode(msg.write(7, 1, 2, -50) + ["x" * 20])  # > 7 bytes: multi-frame
    ff = memoryview(bytes([0x10, len(req)]) + req[:6])
    cfs = []
    rest = req[6:]
    sn = 1
    while rest:
        cfs.append(memoryview(bytes([0x20 | sn]) + rest[:7] + b"\xcc" * (7 - len(rest[:7]))))
        rest = rest[7:]
        sn = (sn + 1) & 15
    out = []
    while len(out) < n:
        for sa in range(0x81, 0x89):
            out.append((isotp.func_id(6, 0xFF, sa), hb_frame))
        out.append((isotp.phys_id(6, me, 0x00), ff))
        for cf in cfs:
            out.append((isotp.phys_id(6, me, 0x00), cf))
    return out[:n]


def main():
    clock = Clock()
    temp = Capability(reg.CAP_TEMPERATURE, values={0: 2150, 1: 0, 2: 0})
    node = Node(clock, reg.CLASS_AMBIENT, [device_info("b", "b", "b", "0", "b", lambda c, a, b: msg.OK), temp])
    can = FakeCan()
    link = CanLink(can, node, clock, claim.make_name(5, 0xC2), 0x80, bs=0)
    link.start()
    while not link.claim.ready:
        link.poll()
    n = 3000
    can.q = traffic(link.address, n)
    can.i = 0
    t0 = now_us()
    while can.i < len(can.q):
        link.poll()
    dt = now_us() - t0
    print(json.dumps({"runtime": sys.implementation.name, "frames": n, "us_per_frame": dt / n}))


main()
