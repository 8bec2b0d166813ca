"""``cabinlink demo --minimal``: a real CabinLink exchange on a virtual CAN bus, printed readably.

A car (head unit) and an ambient-sensor accessory run the protocol core's ``CanLink`` over
python-can's virtual bus in one process: address claim, HELLO, DESCRIBE, a subscription
with reports, a WRITE refused for range, an INVOKE, and an air-quality EVENT. The
accessory here is built from the core alone with a scripted cabin. The real firmware on
simulated boards, the reference car and its screen are in the full demo (:mod:`.demo`);
this one needs nothing but python-can and the core, and finishes in a few seconds.
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import can

from cabinlink import claim, msg
from cabinlink import registry as reg
from cabinlink.can_link import CanLink
from cabinlink.clock import Clock
from cabinlink.model import Capability, device_info
from cabinlink.node import Node

from . import catalog
from .canbus import PythonCanController
from .car.client import CarClient, Pending

CO2_HIGH = 1000


class DemoAmbient:
    """An ambient sensor made of core capabilities, fed by a scripted cabin."""

    def __init__(self, clock: Clock, serial: str = "DEMO-0001") -> None:
        self.clock = clock
        self.t0 = self.t_step = clock.ticks_ms()
        self.co2_ppm = 650.0
        self.identified: list[int] = []
        self.occupants = 1
        self.air_poor = False
        self.device = device_info("CabinLink", "Demo ambient sensor", serial, "0.1.0", "host",
                                  on_invoke=self._invoke)
        self.temp = Capability(reg.CAP_TEMPERATURE, values={
            reg.ATTR_TEMPERATURE_VALUE: 2150, reg.ATTR_TEMPERATURE_STATUS: 0,
            reg.ATTR_TEMPERATURE_OFFSET: 0})
        self.co2 = Capability(reg.CAP_CO2, values={reg.ATTR_CO2_VALUE: 650,
                                                   reg.ATTR_CO2_STATUS: 0},
                              events=(reg.EV_CO2_AIR_QUALITY,))
        self.node = Node(clock, reg.CLASS_AMBIENT, [self.device, self.temp, self.co2])

    def _invoke(self, cap: Capability, cmd: int, args: list[Any]) -> Any:
        if cmd == reg.CMD_DEVICE_INFO_IDENTIFY:
            self.identified.append(args[0])
            return msg.OK
        if cmd == reg.CMD_DEVICE_INFO_READ_LOG:
            return msg.OK, [0, []]
        return msg.BUSY  # reboot: not in the demo

    def step(self) -> None:
        """Advance the cabin: temperature drifts, CO2 follows the occupants."""
        now = self.clock.ticks_ms()
        t = self.clock.ticks_diff(now, self.t0) / 1000
        dt = self.clock.ticks_diff(now, self.t_step) / 1000
        self.t_step = now
        raw = 2150 + int(40 * math.sin(t / 1.5))
        self.temp.set(reg.ATTR_TEMPERATURE_VALUE, raw + self.temp.get(reg.ATTR_TEMPERATURE_OFFSET))
        # Each occupant adds CO2; ventilation pulls it back towards outside air.
        self.co2_ppm += dt * (self.occupants * 40 - (self.co2_ppm - 420) * 0.05)
        co2 = int(self.co2_ppm)
        self.co2.set(reg.ATTR_CO2_VALUE, min(co2, 5000))
        if not self.air_poor and co2 >= CO2_HIGH:
            self.air_poor = True
            self.co2.emit(reg.EV_CO2_AIR_QUALITY, 1)


class Timeline:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.monotonic()

    def __call__(self, who: str, text: str) -> None:
        self.out.write(f"[{time.monotonic() - self.t0:6.3f}] {who:<10} {text}\n")
        self.out.flush()


def run(out: TextIO = sys.stdout, speed: float = 1.0) -> int:
    """Run the scripted exchange; returns 0 when every step got its expected answer."""
    say = Timeline(out)
    channel = f"cabinlink-demo-{os.getpid()}-{time.monotonic_ns()}"
    clock = Clock()
    acc_ctl = PythonCanController(can.Bus(interface="virtual", channel=channel))
    car_ctl = PythonCanController(can.Bus(interface="virtual", channel=channel))
    ambient = DemoAmbient(clock)
    identity = 0x0A5A5
    acc_link = CanLink(acc_ctl, ambient.node, clock,
                       claim.make_name(identity, 0xC0 | reg.CLASS_AMBIENT))
    car = CarClient(clock)
    car_link = CanLink(car_ctl, car, clock, claim.make_name(1, 0xBF, arbitrary=False), 0x00,
                       pool=(0x00, 0x0F), rx_max=4095,
                       on_peer=lambda a, n: say("car", f"sees address claim: 0x{a:02X} NAME {n:016X}"))
    failures = 0

    def pump(ms: float, until: Callable[[], bool] | None = None) -> None:
        # Scripted pauses follow --speed; waits for an answer never do.
        end = time.monotonic() + ms / 1000 / (speed if until is None else 1.0)
        while time.monotonic() < end:
            ambient.step()
            acc_link.poll()
            car_link.poll()
            if until is not None and until():
                return
            time.sleep(0.001)

    def ask(label: str, build: Callable[..., list[Any]], *args: Any) -> Pending:
        nonlocal failures
        say("car", f"→ 0x{acc:02X} {label}")

        def answered(p: Pending) -> None:
            shown = "" if p.value is None or build is msg.describe else f" {p.value!r}"
            say(f"0x{acc:02X}", f"→ car RESULT {catalog.status_name(p.status)}{shown}")

        p = car.request(car_link, acc, build, *args, on_done=answered)
        pump(2000, lambda: p.done)
        return p

    def expect(cond: bool, what: str) -> None:
        nonlocal failures
        if not cond:
            failures += 1
            say("demo", f"UNEXPECTED: {what}")

    car.on_report = lambda a, slot, attr, v: say(
        f"0x{a.peer:02X}", f"→ car REPORT {names[slot]}.{catalog.attr_name(caps[slot], attr)}"
        f" = {catalog.format_value(caps[slot], attr, v)}")
    car.on_event = lambda a, slot, ev, data: say(
        f"0x{a.peer:02X}", f"→ car EVENT {names[slot]}.{catalog.event_name(caps[slot], ev)}"
        f" {data!r} (priority-3 channel)")
    caps: list[int] = []
    names: list[str] = []

    try:
        say("demo", f"virtual CAN bus {channel!r}, 500 kbit/s classic frames, 29-bit ids")
        car_link.start()
        acc_link.start()
        say("car", "claims address 0x00 (J1939-81 NAME, not arbitrary-capable)")
        say("accessory", f"claims preferred address 0x{acc_link.address:02X}")
        pump(600, lambda: car_link.claim.ready and acc_link.claim.ready)
        acc = acc_link.address
        expect(acc_link.claim.ready and car_link.claim.ready, "both addresses claimed")
        say("demo", f"both claims settled (250 ms); accessory at 0x{acc:02X}")

        p = ask(f"HELLO v{msg.VERSION_MAJOR}.{msg.VERSION_MINOR}", msg.hello)
        expect(p.ok, "HELLO accepted")
        p = ask("DESCRIBE", msg.describe)
        expect(p.ok and isinstance(p.value, dict), "DESCRIBE answered")
        if p.ok:
            d = p.value
            say("car", f"  {d.get(msg.D_VENDOR)} / {d.get(msg.D_PRODUCT)} / serial {d.get(msg.D_SERIAL)}"
                       f", class {catalog.class_name(d.get(msg.D_CLASS, 0))}, protocol {d.get(msg.D_VERSION)}")
            for slot, entry in enumerate(d.get(msg.D_CAPS, [])):
                cid = entry[msg.C_ID]
                caps.append(cid)
                names.append(catalog.cap_name(cid))
                attrs = ", ".join(catalog.attr_name(cid, a) for a in entry.get(msg.C_ATTRS, []))
                say("car", f"  slot {slot}: {catalog.cap_name(cid)} (0x{cid:04X}) instance "
                           f"{entry[msg.C_INSTANCE]}: {attrs}")
        if len(caps) < 3:
            return 1
        t_slot, c_slot, d_slot = caps.index(reg.CAP_TEMPERATURE), caps.index(reg.CAP_CO2), \
            caps.index(reg.CAP_DEVICE_INFO)

        p = ask("SUBSCRIBE temperature.value min 500 ms, max 10 s, threshold 0.10 °C",
                msg.subscribe, t_slot, reg.ATTR_TEMPERATURE_VALUE, 500, 10, 10)
        expect(p.ok and p.value == [500, 10], "subscription granted")
        pump(2500)
        p = ask("WRITE temperature.offset = +50.00 °C (out of range)", msg.write,
                t_slot, reg.ATTR_TEMPERATURE_OFFSET, 5000)
        expect(p.status == msg.INVALID_VALUE, "out-of-range write refused")
        p = ask("WRITE temperature.offset = -0.50 °C", msg.write, t_slot, reg.ATTR_TEMPERATURE_OFFSET, -50)
        expect(p.ok, "offset written")
        p = ask("INVOKE device_info.identify(3 s)", msg.invoke, d_slot,
                reg.CMD_DEVICE_INFO_IDENTIFY, [3])
        expect(p.ok and ambient.identified == [3], "identify ran on the accessory")
        say("accessory", "identify: blinking for 3 s")
        p = ask("SUBSCRIBE co2.value min 1 s, max 60 s, threshold 100 ppm",
                msg.subscribe, c_slot, reg.ATTR_CO2_VALUE, 1000, 60, 100)
        expect(p.ok, "CO2 subscription granted")
        say("cabin", "four passengers get in: CO2 climbs")
        ambient.occupants = 4
        got_event: list[Any] = []
        prev = car.on_event
        car.on_event = lambda a, s, e, d: (got_event.append(d), prev and prev(a, s, e, d))
        pump(8000, lambda: bool(got_event))
        expect(bool(got_event), "air-quality event received")
        pump(300)
        stats = (f"accessory sent {acc_link.frames_tx} frames, car sent {car_link.frames_tx}; "
                 f"malformed at accessory {ambient.node.rx_malformed}, at car {car.malformed}")
        say("demo", stats)
        say("demo", "done: every step answered as the spec says" if not failures
            else f"{failures} step(s) did not answer as expected")
        return 1 if failures else 0
    finally:
        acc_ctl.shutdown()
        car_ctl.shutdown()
