# The BLE link (spec 8) on a fake bluetooth.BLE that records what the link
# does and lets a test raise the IRQs a stack would: advertising bytes, GATT
# layout, fragmentation both ways, pacing, priorities, stack errors, SIG values.
from mpcompat import tohex, unhex

from cabinlink import msg, sig
from cabinlink import registry as reg
from cabinlink.ble_frag import Reassembler, Sender
from cabinlink.ble_link import (ADV_ALSO_CAN, ADV_SAFE_MODE, BleLink, SERVICE, RX, TX,
                                adv_data, scan_response)
from cabinlink.clock import ManualClock
from cabinlink.model import Capability, device_info
from cabinlink.node import Node

CAB_LE = unhex("7be322f022c1be8c044c9011e388b4ca")


class FakeUUID:
    def __init__(self, v):
        self.v = v

    def __eq__(self, other):
        return isinstance(other, FakeUUID) and self.v == other.v

    def __repr__(self):
        return "UUID(%r)" % (self.v,)


class FakeBLE:
    # Handles as NimBLE hands them out: a declaration per service, declaration
    # + value per characteristic, a CCCD after each notifying one.
    def __init__(self, clock):
        self.clock = clock
        self.handler = None
        self.on = False
        self.cfg = {}
        self.services = None
        self.values = {}
        self.buffers = {}
        self.updates = []  # (handle, bytes) written with send_update=True
        self.notes = []  # (conn, handle, bytes, ticks)
        self.adverts = []  # (interval_us or None, adv, resp)
        self.disconnects = []
        self.fail = []  # OSErrors the next gatts_notify calls raise

    def active(self, *a):
        if a:
            self.on = bool(a[0])
        return self.on

    def config(self, *a, **kw):
        self.cfg.update(kw)

    def irq(self, handler):
        self.handler = handler

    def gap_advertise(self, interval_us, adv_data=None, *, resp_data=None, connectable=True):
        self.adverts.append((interval_us, adv_data, resp_data))

    def gap_disconnect(self, conn):
        self.disconnects.append(conn)
        return True

    def gatts_register_services(self, services):
        self.services = services
        h = 0
        out = []
        for svc in services:
            h += 1
            hs = []
            for ch in svc[1]:
                h += 2
                hs.append(h)
                self.values[h] = b""
                if ch[1] & 0x30:
                    h += 1
            out.append(tuple(hs))
        return tuple(out)

    def gatts_read(self, h):
        return self.values[h]

    def gatts_write(self, h, data, send_update=False):
        self.values[h] = bytes(data)
        if send_update:
            self.updates.append((h, bytes(data)))
        return len(data)

    def gatts_set_buffer(self, h, n, append=False):
        self.buffers[h] = (n, append)

    def gatts_notify(self, conn, h, data=None):
        if self.fail:
            raise self.fail.pop(0)
        self.notes.append((conn, h, bytes(data), self.clock.ticks_ms()))

    # the stack's side
    def connect(self, conn):
        return self.handler(1, (conn, 1, memoryview(bytes(6))))

    def disconnect(self, conn):
        return self.handler(2, (conn, 1, memoryview(bytes(6))))

    def mtu(self, conn, mtu):
        return self.handler(21, (conn, mtu))

    def write(self, conn, h, data):
        self.values[h] = bytes(data)
        return self.handler(3, (conn, h))

    def take(self):
        out = self.notes
        self.notes = []
        return out


class FakeNode:
    # Records whole messages; answers each with reply(message) when given.
    def __init__(self, reply=None):
        self.info = device_info("Acme", "AQ-1", "0042", "0.1.0", "B", lambda c, a, b: msg.OK)
        self.device_class = reg.CLASS_AMBIENT
        self.max_rx = 512
        self.got = []
        self.lost = []
        self.reply = reply

    def receive(self, link, peer, data):
        self.got.append((peer, bytes(data)))
        if self.reply is not None:
            assert link.send(peer, self.reply(bytes(data)), False)

    def peer_lost(self, link, peer):
        self.lost.append(peer)


def temperature_cap():
    return Capability(reg.CAP_TEMPERATURE, values={reg.ATTR_TEMPERATURE_VALUE: 2150,
                                                   reg.ATTR_TEMPERATURE_STATUS: 0})


def make(node=None, caps=(), **kw):
    clk = ManualClock()
    ble = FakeBLE(clk)
    node = node or FakeNode()
    ess = sig.environmental_sensing(caps)
    link = BleLink(ble, FakeUUID, node, clk, kw.pop("name", "AQ-1"), kw.pop("device_class", None),
                   kw.pop("short_id", 0x0A5A5), kw.pop("flags", ADV_ALSO_CAN),
                   sig_services=[ess], **kw)
    link.start()
    return clk, ble, node, link


def rx_handle(link):
    return link.handles[0][0]


def fragments(data, size, sender=None):
    s = sender or Sender(max(size, 20))
    assert s.start(data)
    out = []
    while True:
        f = s.next(size)
        if f is None:
            return out
        out.append(bytes(f))


def run(clk, link, ms, step=1):
    for _ in range(0, ms, step):
        clk.advance(step)
        link.poll()


def collect(notes):
    got = []
    r = Reassembler(lambda m: got.append(bytes(m)))
    for n in notes:
        r.feed(n[2])
    assert r.dropped == 0 and r.gaps == 0
    return got


def test_advertising_bytes_are_the_spec_examples():
    assert adv_data() == unhex("020106" "1107") + CAB_LE and len(adv_data()) == 21
    r = scan_response("AQ-1", 2, 0x0A5A5, ADV_ALSO_CAN)
    assert r == unhex("1721") + CAB_LE + unhex("000102a5a501" "0509" "41512d31")
    assert len(r) == 30
    r = scan_response("Acme-AQ1 Air", 2, 0xA5A5, ADV_ALSO_CAN | ADV_SAFE_MODE)
    assert r == unhex("1721") + CAB_LE + unhex("000102a5a505" "0608" "41636d652d")
    assert len(r) == 31
    # cut between characters, never inside one; an empty name adds nothing
    r = scan_response("\u00c4\u00c4\u00c4", 1, 0x1234, 0)
    assert r[24:] == unhex("0508") + "\u00c4\u00c4".encode() and len(r) == 30
    assert scan_response("", 3, 0xBEEF, 0)[24:] == b""
    assert scan_response("AQ-12", 3, 0xBEEF, 0)[18:] == unhex("000103beef00" "0609") + b"AQ-12"


def test_start_registers_the_services_and_advertises():
    clk, ble, node, link = make(caps=[temperature_cap()])
    assert ble.on and ble.cfg == {"gap_name": "AQ-1", "mtu": 247}
    assert ble.handler is not None
    svcs = ble.services
    assert [s[0] for s in svcs] == [FakeUUID(SERVICE), FakeUUID(0x180A), FakeUUID(0x181A)]
    assert svcs[0][1] == ((FakeUUID(RX), 0x08 | 0x04), (FakeUUID(TX), 0x10))
    assert [c[0].v for c in svcs[1][1]] == [0x2A29, 0x2A24, 0x2A25, 0x2A26, 0x2A27]
    assert [c[1] for c in svcs[1][1]] == [0x02] * 5
    assert svcs[2][1] == ((FakeUUID(0x2A6E), 0x02 | 0x10),)
    (rx, tx), dis, (temp,) = link.handles
    assert (rx, tx) == (3, 5) and dis == (9, 11, 13, 15, 17) and temp == 20
    assert ble.buffers[rx] == (512, False) and ble.buffers[tx] == (244, False)
    assert [ble.values[h] for h in dis] == [b"Acme", b"AQ-1", b"0042", b"0.1.0", b"B"]
    assert ble.values[temp] == b"\x66\x08"  # 21.50 degC, sint16 0.01 degC
    # stopped before registering, then ADV_IND with both payloads
    assert ble.adverts[0] == (None, None, None)
    assert ble.adverts[1] == (100000, adv_data(), scan_response("AQ-1", 2, 0xA5A5, 1))
    for a in ble.adverts[1][1:]:
        assert len(a) <= 31
    assert link.liveness_ms == 0


def test_fragmented_request_reaches_the_node_and_the_answer_is_cut_to_the_mtu():
    answer = bytes(range(200))
    clk, ble, node, link = make(FakeNode(lambda m: answer))
    ble.connect(1)
    link.poll()
    assert ble.adverts[-1] == (None, None, None)  # one connection: advertising stops
    car = Sender(244)
    request = bytes(range(50, 110))
    for f in fragments(request, 20, car):
        ble.write(1, rx_handle(link), f)
    run(clk, link, 200)
    assert node.got == [(1, request)] and link.rx_messages == 1
    notes = ble.take()
    assert [len(n[2]) for n in notes] == [20] * 10 + [13]  # 17 + 9 x 19 + 12 payload bytes
    assert all(n[0] == 1 and n[1] == link.handles[0][1] for n in notes)
    assert collect(notes) == [answer] and link.tx_notifications == 11
    # after the MTU exchange: fragments of ATT_MTU - 3, sequence numbers go on
    ble.mtu(1, 247)
    big = FakeNode(lambda m: bytes(300))
    link.node = big
    ble.write(1, rx_handle(link), fragments(b"\x82\x03\x02", 244, car)[0])
    run(clk, link, 100)
    notes = ble.take()
    assert [len(n[2]) for n in notes] == [244, 60]  # 241 + 59 payload bytes
    assert notes[0][2][0] == 0x80 | 11 and notes[1][2][0] == 0x40 | 12


def test_a_real_node_answers_hello_as_in_the_spec_example():
    clk = ManualClock()
    dev = device_info("Acme", "AQ-1", "0042", "0.1.0", "B", lambda c, a, b: msg.OK)
    node = Node(clk, reg.CLASS_AMBIENT, [dev])
    ble = FakeBLE(clk)
    link = BleLink(ble, FakeUUID, node, clk, "AQ-1", None, 0xA5A5)
    link.start()
    ble.connect(7)
    ble.write(7, rx_handle(link), unhex("c000058402010001"))  # spec 8.4: HELLO
    for _ in range(20):
        clk.advance(1)
        link.poll()
        node.poll()
    assert [tohex(n[2]) for n in ble.take()] == ["c000088409010083000102"]
    assert node.sessions[(link, 7)].hello
    ble.disconnect(7)
    link.poll()
    assert node.sessions == {}


def test_notifications_are_paced_per_connection():
    clk, ble, node, link = make(max_conns=2)
    ble.connect(1)
    ble.connect(2)
    link.poll()
    assert link.peers() == [1, 2]
    for _ in range(3):
        assert link.send(1, bytes(50), False) and link.send(2, bytes(30), False)
    run(clk, link, 300)
    notes = ble.take()
    for conn, count in ((1, 9), (2, 6)):
        t = [n[3] for n in notes if n[0] == conn]
        assert len(t) == count
        assert min([clk.ticks_diff(b, a) for a, b in zip(t, t[1:])]) >= 10
    # a slower connection interval (24 x 1.25 ms = 30 ms) slows that connection only
    ble.handler(27, (1, 24, 0, 300, 0))
    link.send(1, bytes(50), False)
    link.send(2, bytes(50), False)
    run(clk, link, 200)
    notes = ble.take()
    t1 = [n[3] for n in notes if n[0] == 1]
    t2 = [n[3] for n in notes if n[0] == 2]
    assert min([clk.ticks_diff(b, a) for a, b in zip(t1, t1[1:])]) >= 30
    assert max([clk.ticks_diff(b, a) for a, b in zip(t2, t2[1:])]) == 10


def test_events_go_ahead_of_waiting_messages_but_never_split_one():
    clk, ble, node, link = make()
    ble.connect(1)
    link.poll()
    a, b, e1, e2 = b"A" * 30, b"B" * 5, b"E1", b"E2"
    link.send(1, a, False)
    link.poll()  # A's first fragment is out: A is finished first
    link.send(1, b, False)
    link.send(1, e1, True)
    link.send(1, e2, True)
    run(clk, link, 100)
    assert collect(ble.take()) == [a, e1, e2, b]


def test_a_refused_notification_is_sent_again_and_nothing_is_lost():
    clk, ble, node, link = make()
    ble.connect(1)
    link.poll()
    ble.fail = [OSError(-128), OSError(12)]  # controller busy, ENOMEM
    data = bytes(range(45))
    link.send(1, data, False)
    run(clk, link, 100)
    notes = ble.take()
    assert collect(notes) == [data]
    assert link.tx_retries == 2 and link.tx_notifications == 3 and link.tx_dropped == 0
    t = [n[3] for n in notes]
    assert min([clk.ticks_diff(b, a) for a, b in zip(t, t[1:])]) >= 10


def test_a_message_the_stack_never_takes_is_given_up_and_counted():
    clk, ble, node, link = make()
    ble.connect(1)
    link.poll()
    link.send(1, bytes(45), False)
    link.send(1, b"next", False)
    link.poll()  # first fragment out
    ble.take()
    ble.fail = [OSError(12)] * 100
    run(clk, link, 1200)
    assert link.tx_dropped == 1 and link.tx_retries == 100
    notes = ble.take()
    got = []
    r = Reassembler(lambda m: got.append(bytes(m)))
    r.feed(b"\x80\x00\x2d" + bytes(17))  # what the car had of the first message
    for n in notes:
        r.feed(n[2])
    assert got == [b"next"] and r.gaps == 1  # the car sees the gap (spec 8.4)


def test_queue_is_bounded_and_unknown_peers_refused():
    clk, ble, node, link = make(queue_len=3)
    assert not link.send(1, b"x", False)
    ble.connect(1)
    link.poll()
    assert [link.send(1, b"x", False) for _ in range(4)] == [True, True, True, False]
    assert not link.send(9, b"x", True)


def test_disconnect_ends_the_session_and_advertising_resumes():
    clk, ble, node, link = make()
    ble.connect(1)
    link.poll()
    ble.connect(2)  # over max_conns (1): disconnected at once
    link.poll()
    assert ble.disconnects == [2] and link.refused == 1 and link.peers() == [1]
    link.send(1, bytes(100), False)
    link.poll()
    n = len(ble.adverts)
    ble.disconnect(2)
    ble.disconnect(1)
    link.poll()
    assert node.lost == [1] and link.peers() == [] and link.tx_dropped == 1
    assert ble.adverts[n:] == [(100000, adv_data(), scan_response("AQ-1", 2, 0xA5A5, 1))]
    assert not link.send(1, b"x", False)
    ble.connect(3)  # a new connection starts its sequence numbers at 0 (M-8.4-2)
    link.poll()
    link.send(3, b"hi", False)
    run(clk, link, 20)
    assert [n[2] for n in ble.take()][-1] == b"\xc0\x00\x02hi"


def test_several_connections_advertise_until_the_last_one():
    clk, ble, node, link = make(max_conns=2)
    ble.connect(1)
    link.poll()
    assert ble.adverts[-1][0] == 100000  # one free: advertising again
    ble.connect(2)
    link.poll()
    assert ble.adverts[-1] == (None, None, None)
    ble.disconnect(1)
    link.poll()
    assert ble.adverts[-1][0] == 100000 and node.lost == [1]


def test_bad_fragments_and_bad_irqs_are_counted_never_raised():
    clk, ble, node, link = make()
    ble.connect(1)
    link.poll()
    h = rx_handle(link)
    for f in (b"", b"\x80", b"\xc0\x00\x00", b"\x41abc", b"\xc0\x0f\xff" + bytes(17),
              b"\xc0\x00\x05ab", b"\x80\x02\x01" + bytes(17)):  # the last: over max_rx
        ble.write(1, h, f)
    ble.write(5, h, b"\xc0\x00\x01\x80")  # from a connection the link does not keep
    link.poll()
    assert node.got == [] and link.rx_dropped >= 7
    ble.handler(3, ())  # malformed IRQ data
    ble.handler(21, None)
    assert link.irq_errors == 2
    ble.write(1, link.handles[1][0], b"ignored")  # not RX: not ours
    ble.write(1, h, b"\xc8\x00\x02\x81\x01")  # a good one still arrives
    link.poll()
    assert node.got == [(1, b"\x81\x01")]
    dropped = link.rx_dropped
    ble.disconnect(1)
    link.poll()
    assert link.rx_dropped == dropped  # kept after the connection is gone


def test_inbox_overflow_is_counted():
    clk, ble, node, link = make()
    ble.connect(1)
    h = rx_handle(link)
    for i in range(40):
        ble.write(1, h, bytes([0xC0 | (i & 0x3F), 0, 1, 0x80]))
    link.poll()
    assert link.rx_overflow == 40 + 1 - 32 and len(node.got) == 31


def test_wake_flag_and_irq_chain():
    class Flag:
        n = 0

        def set(self):
            self.n += 1

    seen = []
    flag = Flag()

    def chain(event, data):
        seen.append(event)
        return b"secret" if event == 29 else None

    clk, ble, node, link = make(wake=flag, irq_chain=chain)
    ble.connect(1)
    assert flag.n == 1 and seen == [1]
    assert ble.handler(29, (1, 0, None)) == b"secret"


def test_sig_values_follow_the_attribute_and_its_status():
    temp = temperature_cap()
    clk, ble, node, link = make(caps=[temp])
    h = link.handles[2][0]
    ble.updates = []
    run(clk, link, 5)
    assert ble.updates == []  # unchanged: nothing written
    temp.set(reg.ATTR_TEMPERATURE_VALUE, -1234)
    link.poll()
    assert ble.updates == [(h, b"\x2e\xfb")]
    temp.set(reg.ATTR_TEMPERATURE_STATUS, reg.TEMPERATURE_STATUS_FAULT)
    link.poll()
    link.poll()
    assert ble.updates[1:] == [(h, b"\x00\x80")]  # unknown while not ok
    temp.set(reg.ATTR_TEMPERATURE_STATUS, 0)
    link.poll()
    assert ble.updates[2:] == [(h, b"\x2e\xfb")]


def test_sig_encoders():
    assert sig.temperature(2150) == b"\x66\x08" and sig.temperature(-40000) == b"\x4d\x95"
    assert sig.temperature(None) == b"\x00\x80" and sig.temperature(True) == b"\x00\x80"
    assert sig.humidity(4550) == b"\xc6\x11" and sig.humidity(20000) == b"\x10\x27"
    assert sig.humidity(None) == b"\xff\xff"
    assert sig.co2(800) == b"\x20\x03" and sig.co2(70000) == b"\xfd\xff"
    assert sig.co2(None) == b"\xff\xff"
    assert sig.illuminance(350) == b"\xb8\x88\x00" and sig.illuminance(200000) == b"\xfe\xff\xff"
    assert sig.illuminance(-1) == b"\x00\x00\x00" and sig.illuminance(None) == b"\xff\xff\xff"
    assert sig.utf8("\u00c4") == b"\xc3\x84"
    hum = Capability(reg.CAP_HUMIDITY, values={reg.ATTR_HUMIDITY_VALUE: 0})
    btn = Capability(reg.CAP_BUTTONS, values={reg.ATTR_BUTTONS_COUNT: 1})
    svc = sig.environmental_sensing([btn, temperature_cap(), hum])
    assert svc[0] == 0x181A and [(c[0], c[2], c[4]) for c in svc[1]] == [
        (0x2A6E, reg.ATTR_TEMPERATURE_VALUE, reg.ATTR_TEMPERATURE_STATUS),
        (0x2A6F, reg.ATTR_HUMIDITY_VALUE, None)]
    assert sig.environmental_sensing([btn]) is None


def test_close_stops_advertising_and_ends_connections():
    clk, ble, node, link = make(max_conns=2)
    ble.connect(1)
    link.poll()
    link.close()
    assert ble.adverts[-1] == (None, None, None) and ble.disconnects == [1]
    assert node.lost == [1] and link.peers() == []
    ble.disconnect(1)
    ble.connect(4)
    run(clk, link, 2000)
    assert ble.disconnects == [1, 4] and ble.adverts[-1] == (None, None, None)
