"""HELLO and versions (5.3), sessions that did not say HELLO, SECURED (9) and unknown items
(10)."""
from __future__ import annotations

from typing import Any

from cabinlink import msg
from cabinlink import registry as reg

from cabinlink_tools.conformance.cbor_check import Raw, array, cmap, text, uint
from cabinlink_tools.conformance.check import Req, must, show



@must("M-5.3-1")
def test_M_5_3_1_hello_same_major_ok(dut: Any, req: Req) -> None:
    s = dut.session()
    r = s.ask(msg.hello, msg.VERSION_MAJOR, msg.VERSION_MINOR)
    req.status(r, msg.OK, f"HELLO v{msg.VERSION_MAJOR}.{msg.VERSION_MINOR}")
    want = list(dut.declaration.raw[msg.D_VERSION]) + [dut.declaration.device_class]
    req(len(r) > 3 and r[3] == want, f"HELLO OK must carry [major, minor, device_class] = {want}, got {show(r)}")
    req(r[3][0] == msg.VERSION_MAJOR, f"the accessory's major version {r[3][0]} is not v0.1's {msg.VERSION_MAJOR}")


@must("M-5.3-2")
def test_M_5_3_2_hello_other_major_version_mismatch(dut: Any, req: Req) -> None:
    s = dut.session()
    mine = list(dut.declaration.raw[msg.D_VERSION])
    for major in (1, 2, 255, 65535):
        r = s.ask(msg.hello, major, 0)
        req.status(r, msg.VERSION_MISMATCH, f"HELLO with major {major}")
        req(len(r) > 3 and r[3] == mine, f"VERSION_MISMATCH must carry the accessory's [major, minor] {mine}, got {show(r)}")
    req.status(s.ask(msg.hello), msg.OK, "HELLO v0.1 again after the mismatches")


@must("M-5.3-3")
def test_M_5_3_3_any_minor_accepted(dut: Any, req: Req) -> None:
    s = dut.session()
    for minor in (0, 1, 2, 9, 255, 65535):
        req.status(s.ask(msg.hello, msg.VERSION_MAJOR, minor), msg.OK, f"HELLO v{msg.VERSION_MAJOR}.{minor}")


@must("M-10-1")
def test_M_10_1_unknown_items_end_nothing(dut: Any, req: Req) -> None:
    s = dut.session()
    info = dut.info_slot()
    boots = s.value(msg.read, info, reg.ATTR_DEVICE_INFO_BOOT_COUNT)
    up0 = s.value(msg.read, info, reg.ATTR_DEVICE_INFO_UPTIME_S)
    r = s.ask(msg.subscribe, info, reg.ATTR_DEVICE_INFO_HEALTH, 0, 1)
    req.status(r, msg.OK, "SUBSCRIBE device_info.health (to see it survive)")
    # every row of the table of section 10 that a car can send
    for t in (16, 20, 31):
        s.request([t, s.next_tid(), "future"])
    for t in (12, 13, 14, 32, 40, 63):
        s.send([t, 1, 2])
    s.request([msg.READ, s.next_tid(), info, reg.ATTR_DEVICE_INFO_VENDOR, "trailing", {"x": 1}, [1, 2]])
    s.request(Raw(array(uint(msg.HELLO), uint(s.next_tid()), uint(0), uint(1),
                        cmap((text("zz"), uint(1)), (uint(99), uint(2))))))
    s.ask(msg.invoke, info, 0, [0, "extra", 3])  # identify(0) + unknown arguments
    # the unit did not reset (boot_count, uptime_s), the session still answers, and the
    # subscription still exists: its UNSUBSCRIBE answers OK
    req(s.value(msg.read, info, reg.ATTR_DEVICE_INFO_BOOT_COUNT) == boots, "the accessory reset (boot_count changed)")
    up1 = s.value(msg.read, info, reg.ATTR_DEVICE_INFO_UPTIME_S)
    req(up1 >= up0, f"the accessory reset (uptime went {up0} -> {up1})")
    req.status(s.ask(msg.unsubscribe, info, reg.ATTR_DEVICE_INFO_HEALTH), msg.OK,
               "UNSUBSCRIBE (the subscription must still exist)")
