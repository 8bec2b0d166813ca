# The accessory node (spec 5-6) through a fake link, on a manual clock.
from cabinlink import msg
from cabinlink import registry as reg
from cabinlink.clock import ManualClock
from cabinlink.codec import decode, encode
from cabinlink.model import Capability
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

    dev = Capability(reg.CAP_DEVICE_INFO, values={reg.ATTR_DEVICE_INFO_VENDOR: "V",
                                                  reg.ATTR_DEVICE_INFO_UPTIME_S: 0},
                     commands=(reg.CMD_DEVICE_INFO_IDENTIFY,), on_invoke=on_invoke)
    temp = Capability(reg.CAP_TEMPERATURE, values={reg.ATTR_TEMPERATURE_VALUE: 2150,
                                                   reg.ATTR_TEMPERATURE_OFFSET: 0},
                      on_write=on_write, ranges={reg.ATTR_TEMPERATURE_VALUE: (-1000, 6000)})
    btn = Capability(reg.CAP_BUTTONS, values={reg.ATTR_BUTTONS_COUNT: 4},
                     events=(reg.EV_BUTTONS_PRESS,))
    node = Node(clk, reg.CLASS_AMBIENT, {msg.D_VENDOR: "V", msg.D_SERIAL: "S1"},
                [dev, temp, btn], max_subs=max_subs)
    link = FakeLink()
    node.attach(link)
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
    assert caps[0][msg.C_COMMANDS] == [reg.CMD_DEVICE_INFO_IDENTIFY]
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
    assert rq(node, link, msg.subscribe(6, 0, 0, 0, 60))[0][2] == 0
    assert rq(node, link, msg.subscribe(7, 2, 0, 0, 60)) == [[9, 7, msg.NO_RESOURCES]]
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
    assert node.rx_ignored == 4


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
