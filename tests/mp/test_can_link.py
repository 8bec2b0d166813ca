# The CAN link (spec 7) on an in-memory machine.CAN-shaped bus: claim, heartbeat,
# physical and functional frames, the event channel, bus-off recovery.
from fakecan import FLAG_EXT_ID, IRQ_RX, IRQ_TX, STATE_BUS_OFF, FakeBus

from cabinlink import claim, msg
from cabinlink import registry as reg
from cabinlink.can_link import CanLink
from cabinlink.clock import ManualClock
from cabinlink.codec import decode, encode
from cabinlink.model import Capability, device_info
from cabinlink.node import Node


class Sink:
    # A minimal endpoint (the car's role): records what arrives.
    def __init__(self):
        self.got = []
        self.lost = []

    def receive(self, link, peer, data):
        self.got.append((peer, decode(bytes(data))))

    def peer_lost(self, link, peer):
        self.lost.append(peer)

    def poll(self):
        pass

    def heartbeat(self):
        return encode(msg.heartbeat(0))


def setup():
    clk = ManualClock()
    bus = FakeBus()
    btn = Capability(reg.CAP_BUTTONS, values={reg.ATTR_BUTTONS_COUNT: 2, reg.ATTR_BUTTONS_PRESSED: 0},
                     events=(reg.EV_BUTTONS_PRESS,))
    node = Node(clk, reg.CLASS_CONTROLLER,
                [device_info("T", "P", "S", "1", "A", lambda c, a, b: msg.OK), btn])
    acc = CanLink(bus.controller(), node, clk, claim.make_name(5, 0xC3), 0x85)
    car_ep = Sink()
    car = CanLink(bus.controller(), car_ep, clk, claim.make_name(1, 0xC0, arbitrary=False),
                  0x00, pool=(0, 15), rx_max=4095)
    return clk, bus, node, btn, acc, car_ep, car


def run(clk, links, ms, step=1):
    for _ in range(0, ms, step):
        clk.advance(step)
        for l in links:
            l.poll()


def started():
    s = setup()
    clk, bus, node, btn, acc, car_ep, car = s
    acc.start()
    car.start()
    run(clk, [acc, car], 300)
    return s


def test_claim_then_heartbeat_once_a_second():
    clk, bus, node, btn, acc, car_ep, car = started()
    assert acc.claim.ready and acc.address == 0x85
    hb = [f for f in bus.log if f[1] == 0x18DBFF85]
    assert len(hb) == 1 and len(hb[0][2]) == 8 and hb[0][2][0] <= 7
    assert decode(hb[0][2][1 : 1 + hb[0][2][0]])[0] == msg.HEARTBEAT
    assert hb[0][2][1 + hb[0][2][0]:] == b"\xcc" * (7 - hb[0][2][0])  # padding
    run(clk, [acc, car], 2000)
    assert len([f for f in bus.log if f[1] == 0x18DBFF85]) == 3
    assert (0x85, [1, 0, 0, 0]) in car_ep.got or any(
        p == 0x85 and m[0] == msg.HEARTBEAT for p, m in car_ep.got)


def test_no_traffic_before_claim_settles():
    clk, bus, node, btn, acc, car_ep, car = setup()
    acc.start()
    assert not acc.send(0x00, b"\x81\x01")
    run(clk, [acc], 249)
    assert [f[1] for f in bus.log] == [0x18EEFF85]


def test_request_response_over_isotp_multi_frame():
    clk, bus, node, btn, acc, car_ep, car = started()
    assert car.send(0x85, encode(msg.describe(9)))
    run(clk, [acc, car], 50)
    res = [m for p, m in car_ep.got if m[0] == msg.RESULT]
    assert len(res) == 1 and res[0][:3] == [9, 9, 0]
    assert res[0][3][msg.D_CAPS][1][msg.C_ID] == reg.CAP_BUTTONS
    ids = set(f[1] for f in bus.log if f[0] == 0)
    assert 0x18DA0085 in ids  # accessory -> car on the normal channel


def test_events_use_the_priority_3_channel():
    clk, bus, node, btn, acc, car_ep, car = started()
    car.send(0x85, encode(msg.hello(1)))
    run(clk, [acc, car], 10)
    del bus.log[:]
    btn.emit(reg.EV_BUTTONS_PRESS, 1)
    run(clk, [acc, car], 5)
    assert [f[1] for f in bus.log if f[0] == 0] == [0x0CDA0085]
    assert (0x85, [msg.EVENT, 1, reg.EV_BUTTONS_PRESS, 1]) in car_ep.got


def test_event_arrives_during_multiframe_describe():
    # The event channel is a separate ISO-TP connection: neither message is lost.
    clk, bus, node, btn, acc, car_ep, car = started()
    car.send(0x85, encode(msg.hello(1)))
    run(clk, [acc, car], 10)
    car.send(0x85, encode(msg.describe(2)))
    acc.poll()  # the accessory starts the multi-frame answer
    btn.emit(reg.EV_BUTTONS_PRESS, 0)
    run(clk, [acc, car], 50)
    kinds = [m[0] for p, m in car_ep.got if m[0] in (msg.RESULT, msg.EVENT)]
    assert msg.EVENT in kinds and kinds.count(msg.RESULT) == 2


def test_functional_single_frames_and_bad_frames():
    clk, bus, node, btn, acc, car_ep, car = started()
    ctl = acc.can
    hello = encode(msg.hello(3))
    ctl.inject(0x18DBFF00, bytes([len(hello)]) + hello)  # to all
    before = acc.frames_dropped
    ctl.inject(0x18DBFF00, b"\x10\x20" + bytes(6))  # FF on functional: invalid
    ctl.inject(0x18DB8500, b"")
    ctl.inject(0x0DA8500, b"\x01\x01", flags=0)  # 11-bit frame
    ctl.inject(0x18DA85FE, b"\x02\x81\x01")  # from the null address
    run(clk, [acc, car], 5)
    assert acc.frames_dropped == before + 4
    assert (0x85, [9, 3, 0, [0, 1, reg.CLASS_CONTROLLER]]) in car_ep.got


def test_bus_off_recovers_with_growing_backoff_never_a_tight_loop():
    clk, bus, node, btn, acc, car_ep, car = started()
    ctl = acc.can
    restarts_at = []
    for _ in range(4):
        ctl.st = STATE_BUS_OFF
        t0 = clk.now
        while ctl.st == STATE_BUS_OFF:
            clk.advance(1)
            acc.poll()
        restarts_at.append(clk.ticks_diff(clk.now, t0))
    assert acc.bus_off_count == 4 and ctl.restarts == 4
    assert restarts_at[0] >= 100 and restarts_at[1] >= 200 and restarts_at[2] >= 400
    assert restarts_at[3] >= 800
    # after recovery the address is announced again and traffic resumes
    assert bus.log[-1][1] == 0x18EEFF85 or any(f[1] == 0x18EEFF85 for f in bus.log[-3:])
    run(clk, [acc, car], 300)
    assert acc.claim.ready
    # a long stable period resets the back-off
    run(clk, [acc, car], 10001, step=7)
    ctl.st = STATE_BUS_OFF
    t0 = clk.now
    while ctl.st == STATE_BUS_OFF:
        clk.advance(1)
        acc.poll()
    assert 100 <= clk.ticks_diff(clk.now, t0) < 200


def test_full_tx_queue_is_retried():
    clk, bus, node, btn, acc, car_ep, car = started()
    car.can.tx_full = True
    assert car.send(0x85, encode(msg.read(1, 1, 0)))
    run(clk, [acc, car], 20)
    assert not [m for p, m in car_ep.got if m[0] == msg.RESULT]
    car.can.tx_full = False
    run(clk, [acc, car], 20)
    assert (0x85, [9, 1, 0, 2]) in car_ep.got


def test_address_loss_moves_the_accessory_and_resets_channels():
    clk, bus, node, btn, acc, car_ep, car = started()
    rival = claim.make_name(0, 0xC3)  # lower NAME than ours
    acc.can.inject(claim.claim_id(0x85), claim.name_bytes(rival))
    run(clk, [acc, car], 300)
    assert acc.address == 0x86 and acc.claim.ready and acc.channels == {}
    car.send(0x86, encode(msg.read(4, 1, 0)))
    run(clk, [acc, car], 20)
    assert (0x86, [9, 4, 0, 2]) in car_ep.got


def test_car_silence_drops_subscriptions_at_accessory():
    clk, bus, node, btn, acc, car_ep, car = started()
    car.send(0x85, encode(msg.subscribe(1, 1, reg.ATTR_BUTTONS_PRESSED, 0, 60)))
    run(clk, [acc, car], 20)
    assert len(node.subs) == 1
    run(clk, [acc, car], 5000, step=5)  # the car heartbeats: kept
    assert len(node.subs) == 1
    run(clk, [acc], 3100, step=5)  # car gone quiet
    assert node.subs == []


def test_no_isotp_during_the_settle_time():
    clk, bus, node, btn, acc, car_ep, car = setup()
    acc.start()
    run(clk, [acc], 100)
    acc.can.inject(0x18DA8500, b"\x10\x0a\x83\x04\x01\x01\x00\x00")  # a first frame
    run(clk, [acc], 5)
    assert [f[1] for f in bus.log] == [0x18EEFF85]  # no flow control answered
    assert acc.frames_dropped == 1


def test_hardware_filters_follow_the_address_and_keep_other_traffic_out():
    clk, bus, node, btn, acc, car_ep, car = started()
    ctl = acc.can
    ids = sorted(f[0] >> 8 for f in ctl.filters)
    assert ids == sorted([0xDA85, 0xDB85, 0xDBFF, 0xEEFF, 0xEAFF, 0xEA85])
    assert all(f[1] == 0x00FFFF00 and f[2] == 2 for f in ctl.filters)
    # traffic between two other nodes, at any priority: never received
    other = bus.controller()
    before = ctl.filtered
    for can_id in (0x18DA8790, 0x0CDA0087, 0x18FF0030, 0x18DA0087):
        other.send(can_id, b"\x01\x02")
    assert ctl.filtered - before == 4 and not ctl.rxq
    # ... while the car's requests still work (the filters passed them)
    assert car.send(0x85, encode(msg.read(7, 0, 0)))
    run(clk, [acc, car], 50)
    assert any(p == 0x85 and m[0] == msg.RESULT for p, m in car_ep.got)
    # the address moves: the filters move with it
    acc._address_changed(0x85, 0x86)
    assert sorted(f[0] >> 8 for f in ctl.filters) == sorted(
        [0xDA86, 0xDB86, 0xDBFF, 0xEEFF, 0xEAFF, 0xEA86])


def test_a_controller_with_too_few_filters_receives_everything():
    clk = ManualClock()
    bus = FakeBus()
    ctl = bus.controller()
    ctl.FILTERS_MAX = 2
    ctl.filters = []  # as machine.CAN before set_filters: nothing
    node = Node(clk, reg.CLASS_OTHER, [device_info("T", "P", "S", "1", "A", lambda c, a, b: msg.OK)])
    CanLink(ctl, node, clk, claim.make_name(5, 0xC3), 0x85).start()
    assert ctl.filters is None


class Flag:
    # asyncio.ThreadSafeFlag's set(), counted
    def __init__(self):
        self.n = 0

    def set(self):
        self.n += 1


def test_rx_and_tx_done_interrupts_wake_the_owner():
    clk = ManualClock()
    bus = FakeBus()
    wake = Flag()
    ctl = bus.controller()
    acc = CanLink(ctl, Sink(), clk, claim.make_name(5, 0xC3), 0x85, wake=wake)
    acc.start()  # the Address Claimed frame leaves: TX done
    assert ctl.trigger == IRQ_RX | IRQ_TX
    assert wake.n == 1 and ctl.flags_due == 0  # the handler read the flags (mandatory)
    other = bus.controller()
    other.send(0x18DA8500, b"\x01\x02", FLAG_EXT_ID)  # a frame for it: RX
    assert wake.n == 2 and ctl.flags_due == 0
    # without wake= nothing is armed: the owner polls on its timer alone
    quiet = bus.controller()
    CanLink(quiet, Sink(), clk, claim.make_name(6, 0xC3), 0x86).start()
    assert quiet.handler is None and quiet.trigger == 0


def test_a_controller_without_irq_is_polled_only():
    clk = ManualClock()
    bus = FakeBus()
    ctl = bus.controller()
    ctl.irq = None  # as a controller driver without interrupts
    wake = Flag()
    link = CanLink(ctl, Sink(), clk, claim.make_name(5, 0xC3), 0x85, wake=wake)
    link.start()
    run(clk, [link], 300)
    assert link.claim.ready and wake.n == 0
