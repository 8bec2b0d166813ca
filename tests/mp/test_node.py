# The accessory node (spec 5-6) through a fake link, on a manual clock.
from cabinlink import msg
from cabinlink import registry as reg
from cabinlink.clock import ManualClock
from cabinlink.codec import decode, encode
from cabinlink.model import Capability, device_info
from cabinlink.node import Node


class FakeLink:
    def __init__(self, liveness_ms=3000):
        self.liveness_ms = liveness_ms
        self.sent = []  # (peer, message list, urgent)
        self.accept = True

    def send(self, peer, data, urgent=False):
        if not self.accept:
            return False
        self.sent.append((peer, decode(bytes(data)), urgent))
        return True

    def take(self):
        out = self.sent
        self.sent = []
        return out


def make(max_subs=16):
    clk = ManualClock()
    calls = []

    def on_write(cap, attr, v):
        calls.append(("write", attr, v))
        return msg.BUSY if v == 999 else msg.OK

    def on_invoke(cap, cmd, args):
        calls.append(("invoke", cmd, args))
        return msg.OK, args[0] * 2

    dev = device_info("V", "P", "S1", "1.0", "A", on_invoke)
    temp = Capability(reg.CAP_TEMPERATURE, values={reg.ATTR_TEMPERATURE_VALUE: 2150,
                                                   reg.ATTR_TEMPERATURE_OFFSET: 0},
                      on_write=on_write, ranges={reg.ATTR_TEMPERATURE_VALUE: (-1000, 6000)})
    btn = Capability(reg.CAP_BUTTONS, values={reg.ATTR_BUTTONS_COUNT: 4, reg.ATTR_BUTTONS_PRESSED: 0},
                     events=(reg.EV_BUTTONS_PRESS,))
    node = Node(clk, reg.CLASS_AMBIENT, [dev, temp, btn], max_subs=max_subs)
    link = FakeLink()
    return clk, node, link, temp, btn, calls


def rq(node, link, m, peer=0x00):
    node.receive(link, peer, encode(m))
    node.poll()
    return [s[1] for s in link.take()]


def test_hello_and_version_mismatch():
    clk, node, link, *_ = make()
    assert rq(node, link, msg.hello(1)) == [[9, 1, 0, [0, 1, reg.CLASS_AMBIENT]]]
    assert rq(node, link, msg.hello(2, 1, 0)) == [[9, 2, msg.VERSION_MISMATCH, [0, 1]]]
    assert rq(node, link, [2, 3, 0, 9, "future"]) == [[9, 3, 0, [0, 1, reg.CLASS_AMBIENT]]]


def test_describe_lists_slots_in_order():
    clk, node, link, *_ = make()
    [r] = rq(node, link, msg.describe(7))
    assert r[:3] == [9, 7, 0]
    d = r[3]
    assert d[msg.D_VERSION] == [0, 1] and d[msg.D_CLASS] == reg.CLASS_AMBIENT
    assert d[msg.D_VENDOR] == "V" and d[msg.D_SERIAL] == "S1" and d[msg.D_MAX_RX] == 512
    caps = d[msg.D_CAPS]
    assert [c[msg.C_ID] for c in caps] == [reg.CAP_DEVICE_INFO, reg.CAP_TEMPERATURE, reg.CAP_BUTTONS]
    assert caps[1][msg.C_ATTRS] == sorted([reg.ATTR_TEMPERATURE_VALUE, reg.ATTR_TEMPERATURE_OFFSET])
    assert caps[1][msg.C_RANGES] == {reg.ATTR_TEMPERATURE_VALUE: [-1000, 6000]}
    assert caps[0][msg.C_COMMANDS] == [reg.CMD_DEVICE_INFO_IDENTIFY, reg.CMD_DEVICE_INFO_REBOOT,
                                      reg.CMD_DEVICE_INFO_READ_LOG]
    assert caps[2][msg.C_EVENTS] == [reg.EV_BUTTONS_PRESS]


def test_read_paths_and_errors():
    clk, node, link, *_ = make()
    assert rq(node, link, msg.read(1, 1, reg.ATTR_TEMPERATURE_VALUE)) == [[9, 1, 0, 2150]]
    assert rq(node, link, msg.read(2, 9, 0)) == [[9, 2, msg.NOT_FOUND]]
    assert rq(node, link, msg.read(3, 1, 23)) == [[9, 3, msg.NOT_FOUND]]
    assert rq(node, link, [4, 4, 1]) == [[9, 4, msg.MALFORMED]]
    assert rq(node, link, [4, 5, "x", 0]) == [[9, 5, msg.MALFORMED]]


def test_write_validation_order_and_app_refusal():
    clk, node, link, temp, btn, calls = make()
    off = reg.ATTR_TEMPERATURE_OFFSET
    assert rq(node, link, msg.write(1, 1, reg.ATTR_TEMPERATURE_VALUE, 1)) == [[9, 1, msg.ACCESS_DENIED]]
    assert rq(node, link, msg.write(2, 1, off, 5000)) == [[9, 2, msg.INVALID_VALUE]]
    assert rq(node, link, msg.write(3, 1, off, "warm")) == [[9, 3, msg.INVALID_VALUE]]
    assert rq(node, link, msg.write(4, 1, off, True)) == [[9, 4, msg.INVALID_VALUE]]
    assert calls == []  # nothing reached the app: no actuation on a refused write
    assert rq(node, link, msg.write(5, 1, off, 999)) == [[9, 5, msg.BUSY]]
    assert temp.get(off) == 0
    assert rq(node, link, msg.write(6, 1, off, -50)) == [[9, 6, msg.OK]]
    assert temp.get(off) == -50 and calls[-1] == ("write", off, -50)
    assert rq(node, link, [5, 7, 1, off]) == [[9, 7, msg.MALFORMED]]


def test_range_override_narrows_registry_range():
    clk, node, link, temp, *_ = make()
    spec = temp.attr_spec(reg.ATTR_TEMPERATURE_VALUE)
    assert spec[2:] == (-1000, 6000)


def test_invoke_arguments_validated():
    clk, node, link, temp, btn, calls = make()
    ident = reg.CMD_DEVICE_INFO_IDENTIFY
    assert rq(node, link, msg.invoke(1, 0, ident, [3])) == [[9, 1, 0, 6]]
    assert rq(node, link, msg.invoke(2, 0, ident, [601])) == [[9, 2, msg.INVALID_VALUE]]
    assert rq(node, link, msg.invoke(3, 0, ident)) == [[9, 3, msg.INVALID_VALUE]]  # required arg
    assert rq(node, link, msg.invoke(4, 0, ident, [5, "extra"])) == [[9, 4, 0, 10]]
    assert calls[-1] == ("invoke", ident, [5])  # unknown trailing args are not passed on
    assert rq(node, link, msg.invoke(5, 0, 23, [])) == [[9, 5, msg.NOT_FOUND]]
    assert rq(node, link, msg.invoke(6, 1, 0, [])) == [[9, 6, msg.NOT_FOUND]]
    assert rq(node, link, [8, 7, 0, ident, 5]) == [[9, 7, msg.MALFORMED]]


def test_subscription_timing_threshold_and_priming():
    clk, node, link, temp, *_ = make()
    link.liveness_ms = 0  # no car heartbeats in this test
    v = reg.ATTR_TEMPERATURE_VALUE
    out = rq(node, link, msg.subscribe(1, 1, v, 500, 5, 10))
    assert out == [[9, 1, 0, [500, 5]], [10, 1, v, 2150]]  # RESULT, then the priming report
    temp.set(v, 2155)  # below threshold
    clk.advance(600)
    node.poll()
    assert link.take() == []
    temp.set(v, 2170)  # 20 >= 10, but only after min interval since last report
    node.poll()
    assert [s[1] for s in link.take()] == [[10, 1, v, 2170]]
    temp.set(v, 2300)
    clk.advance(100)
    node.poll()
    assert link.take() == []  # min interval floor
    clk.advance(400)
    node.poll()
    assert [s[1] for s in link.take()] == [[10, 1, v, 2300]]
    clk.advance(4999)
    node.poll()
    assert link.take() == []
    clk.advance(1)
    node.poll()
    assert [s[1] for s in link.take()] == [[10, 1, v, 2300]]  # max interval: unchanged value


def test_subscribe_limits():
    clk, node, link, *_ = make(max_subs=2)
    v = reg.ATTR_TEMPERATURE_VALUE
    assert rq(node, link, msg.subscribe(1, 1, v, 0, 7200))[0] == [9, 1, 0, [0, 3600]]
    assert rq(node, link, msg.subscribe(2, 1, v, 0, 0)) == [[9, 2, msg.INVALID_VALUE]]
    assert rq(node, link, msg.subscribe(3, 1, v, 3000, 2)) == [[9, 3, msg.INVALID_VALUE]]
    assert rq(node, link, msg.subscribe(4, 1, v, 0, 60, -1)) == [[9, 4, msg.INVALID_VALUE]]
    assert rq(node, link, msg.subscribe(5, 1, v, 100, 60))[0] == [9, 5, 0, [100, 60]]  # replaces
    assert len(node.subs) == 1
    assert rq(node, link, msg.subscribe(6, 0, reg.ATTR_DEVICE_INFO_HEALTH, 0, 60))[0][2] == 0
    assert rq(node, link, msg.subscribe(7, 2, reg.ATTR_BUTTONS_PRESSED, 0, 60)) == [[9, 7, msg.NO_RESOURCES]]
    assert rq(node, link, msg.unsubscribe(8, 1, v)) == [[9, 8, 0]]
    assert rq(node, link, msg.unsubscribe(9, 1, v)) == [[9, 9, msg.NOT_FOUND]]


def test_report_not_sendable_is_coalesced():
    clk, node, link, temp, *_ = make()
    v = reg.ATTR_TEMPERATURE_VALUE
    rq(node, link, msg.subscribe(1, 1, v, 0, 60))
    link.accept = False
    for x in (1, 2, 3):
        temp.set(v, x)
        clk.advance(10)
        node.poll()
    link.accept = True
    node.poll()
    assert [s[1] for s in link.take()] == [[10, 1, v, 3]]  # latest value wins


def test_events_go_to_hello_sessions_at_priority():
    clk, node, link, temp, btn, _ = make()
    assert btn.emit(reg.EV_BUTTONS_PRESS, 1) is False  # nobody to tell
    rq(node, link, msg.read(1, 0, 0), peer=5)  # a session without HELLO
    rq(node, link, msg.hello(2), peer=7)
    assert btn.emit(reg.EV_BUTTONS_PRESS, 2)
    assert link.take() == [(7, [11, 2, reg.EV_BUTTONS_PRESS, 2], True)]


def test_event_overflow_is_counted_not_fatal():
    clk, node, link, temp, btn, _ = make()
    rq(node, link, msg.hello(1))
    link.accept = False
    for i in range(20):
        btn.emit(reg.EV_BUTTONS_PRESS, i % 4)
    assert node.events_dropped == 12  # 8 queued
    link.accept = True
    node.poll()
    assert [s[1][3] for s in link.take()] == [i % 4 for i in range(8)]


def test_bad_input_is_counted_and_never_answered_without_tid():
    clk, node, link, *_ = make()
    for raw in (b"", b"\xff", b"\x83\x01", encode([0]), encode([64, 1]), encode("x"),
                encode([4]), encode([4, -1, 0, 0]), b"\x9f\x01\xff"):
        node.receive(link, 1, raw)
    node.poll()
    assert link.take() == [] and node.rx_malformed == 9


def test_future_types_and_secured():
    clk, node, link, *_ = make()
    assert rq(node, link, [20, 5, "x"]) == [[9, 5, msg.UNSUPPORTED]]
    assert rq(node, link, [40, 1, 2]) == []
    assert rq(node, link, [15, 1, 42, b"\x82\x01", bytes(4)]) == []
    assert rq(node, link, [9, 1, 0]) == [] and rq(node, link, [10, 0, 0, 1]) == []
    assert node.rx_dropped == 4


def test_silent_car_loses_session_and_subscriptions():
    clk, node, link, *_ = make()
    rq(node, link, msg.hello(1))
    rq(node, link, msg.subscribe(2, 1, 0, 0, 60))
    clk.advance(2000)
    node.receive(link, 0, encode(msg.heartbeat(5)))  # heartbeat keeps it alive
    clk.advance(2500)
    node.poll()
    assert len(node.subs) == 1
    clk.advance(600)
    node.poll()
    assert node.subs == [] and node.sessions == {}
    link.take()


def test_link_without_liveness_keeps_sessions_until_peer_lost():
    clk, node, link, *_ = make()
    link.liveness_ms = 0
    rq(node, link, msg.subscribe(1, 1, 0, 0, 60))
    clk.advance(100000)
    node.poll()
    assert len(node.subs) == 1
    node.peer_lost(link, 0)
    assert node.subs == []


def test_heartbeat_uptime_wraps_at_16_bits_and_ticks_wrap():
    clk, node, link, *_ = make()
    for _ in range(70):
        clk.advance(1000)
        node.poll()
    assert decode(bytes(node.heartbeat())) == [1, 70, 0, 0]
    node._uptime_ms = 65536 * 1000 + 5000
    node.mode = msg.MODE_SAFE
    assert decode(bytes(node.heartbeat())) == [1, 5, 0, 2]
    assert len(node.heartbeat()) <= 7


def test_session_table_is_bounded():
    clk, node, link, *_ = make()
    for peer in range(20):
        clk.advance(1)
        rq(node, link, msg.hello(1), peer=peer)
    assert len(node.sessions) == 8
    assert (link, 19) in node.sessions and (link, 0) not in node.sessions


def test_big_results_are_sent_and_oversized_ones_refused():
    clk, node, link, temp, btn, calls = make()
    info = node.info
    lines = ["x" * 120] * 16
    info.on_invoke = lambda c, cmd, a: (msg.OK, [7, lines])
    [r] = rq(node, link, msg.invoke(1, 0, reg.CMD_DEVICE_INFO_READ_LOG, [0]))
    assert r == [9, 1, 0, [7, lines]]  # > 256 bytes: bigger than the scratch encoder
    info.on_invoke = lambda c, cmd, a: (msg.OK, "y" * 5000)
    assert rq(node, link, msg.invoke(2, 0, reg.CMD_DEVICE_INFO_READ_LOG, [0])) == \
        [[9, 2, msg.NO_RESOURCES]]


def test_app_handler_that_raises_answers_hw_fault():
    clk, node, link, temp, btn, calls = make()

    def broken(cap, a, b):
        raise RuntimeError("sensor bus stuck")

    temp.on_write = broken
    assert rq(node, link, msg.write(1, 1, reg.ATTR_TEMPERATURE_OFFSET, 5)) == [[9, 1, msg.HW_FAULT]]
    assert temp.get(reg.ATTR_TEMPERATURE_OFFSET) == 0


def test_subscribe_needs_report_right_and_numeric_threshold():
    clk, node, link, *_ = make()
    assert rq(node, link, msg.subscribe(1, 0, reg.ATTR_DEVICE_INFO_VENDOR, 0, 60)) == \
        [[9, 1, msg.ACCESS_DENIED]]
    assert rq(node, link, msg.subscribe(2, 0, reg.ATTR_DEVICE_INFO_HEALTH, 0, 60, 1)) == \
        [[9, 2, msg.INVALID_VALUE]]
    assert rq(node, link, msg.subscribe(3, 0, reg.ATTR_DEVICE_INFO_HEALTH, 0, 60, 0))[0] == \
        [9, 3, 0, [0, 60]]
    assert rq(node, link, [6, 4, 1, 0, 0]) == [[9, 4, msg.MALFORMED]]
    assert rq(node, link, [6, 5, 1, 0, 70000, 60]) == [[9, 5, msg.MALFORMED]]


def test_describe_identity_is_device_info_and_counters_are_mirrored():
    clk, node, link, *_ = make()
    [r] = rq(node, link, msg.describe(1))
    d = r[3]
    assert [d[k] for k in (msg.D_VENDOR, msg.D_PRODUCT, msg.D_SERIAL, msg.D_FIRMWARE,
                           msg.D_HARDWARE)] == ["V", "P", "S1", "1.0", "A"]
    node.receive(link, 0, b"\xff")
    node.receive(link, 0, encode([40, 1]))
    clk.advance(2500)
    node.poll()
    got = [rq(node, link, msg.read(i, 0, a))[0][3] for i, a in enumerate((
        reg.ATTR_DEVICE_INFO_RX_MALFORMED, reg.ATTR_DEVICE_INFO_RX_DROPPED,
        reg.ATTR_DEVICE_INFO_UPTIME_S, reg.ATTR_DEVICE_INFO_EVENTS_DROPPED))]
    assert got == [1, 1, 2, 0]


def test_stalled_peer_does_not_hold_up_another():
    clk, node, link, *_ = make()

    class Picky(FakeLink):
        def send(self, peer, data, urgent=False):
            return peer != 9 and FakeLink.send(self, peer, data, urgent)

    p = Picky()
    p.liveness_ms = 0
    node.receive(p, 9, encode(msg.read(1, 1, 0)))  # peer 9 never drains
    node.receive(p, 4, encode(msg.read(2, 1, 0)))
    node.poll()
    assert p.take() == [(4, [9, 2, 0, 2150], False)]
    assert len(node._outbox) == 1


def test_node_refuses_capabilities_that_contradict_the_registry():
    clk = ManualClock()
    ok = lambda c, a, b: msg.OK  # noqa: E731
    dev = device_info("V", "P", "S", "1", "A", ok)
    bad = [
        [],  # no device_info
        [dev, Capability(reg.CAP_TEMPERATURE, values={23: 1})],  # unknown attribute
        [dev, Capability(reg.CAP_TEMPERATURE, values={0: 99999})],  # out of range
        [dev, Capability(reg.CAP_TEMPERATURE, values={0: 1}, ranges={0: (-9000, 0)})],
        [dev, Capability(reg.CAP_CO2, values={0: 400}, commands=(0,))],  # no handler
        [dev, Capability(reg.CAP_CO2, values={0: 400}, commands=(9,), on_invoke=ok)],
        [dev, Capability(0xF001, values={0: 1})],  # vendor capability without specs
        [dev, Capability(reg.CAP_TEMPERATURE, values={0: 1}),
         Capability(reg.CAP_TEMPERATURE, values={0: 2})],  # same id + instance
    ]
    for caps in bad:
        try:
            Node(clk, 0, caps)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % [(c.id, c.values) for c in caps])
    Node(clk, 0, [dev, Capability(reg.CAP_TEMPERATURE, values={0: 1}),
                  Capability(reg.CAP_TEMPERATURE, 1, values={0: 2})])


def test_capability_set_rejects_bad_values():
    clk, node, link, temp, *_ = make()
    for v in (99999, "21.5", None, True):
        try:
            temp.set(reg.ATTR_TEMPERATURE_VALUE, v)
        except ValueError:
            continue
        raise AssertionError("set accepted %r" % (v,))
    assert temp.get(reg.ATTR_TEMPERATURE_VALUE) == 2150


def test_vendor_capability_is_checked_like_registry_ones():
    clk = ManualClock()
    ok = lambda c, a, b: msg.OK  # noqa: E731
    vend = Capability(0xF042, values={0: 5, 1: "a"}, commands=(0,), on_invoke=ok,
                      specs={0: (reg.T_UINT, reg.A_READ | reg.A_WRITE, 0, 10),
                             1: (reg.T_STR, reg.A_READ, None, 4)},
                      cmd_specs={0: ((reg.T_BOOL, None, None, False),)})
    node = Node(clk, 0, [device_info("V", "P", "S", "1", "A", ok), vend])
    link = FakeLink()
    assert rq(node, link, msg.write(1, 1, 0, 11)) == [[9, 1, msg.INVALID_VALUE]]
    assert rq(node, link, msg.write(2, 1, 0, 10)) == [[9, 2, 0]]
    assert rq(node, link, msg.write(3, 1, 1, "b")) == [[9, 3, msg.ACCESS_DENIED]]
    assert rq(node, link, msg.invoke(4, 1, 0, [1])) == [[9, 4, msg.INVALID_VALUE]]
    assert rq(node, link, msg.invoke(5, 1, 0, [True])) == [[9, 5, 0]]
