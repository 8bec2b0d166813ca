# Address claim after SAE J1939-81 (spec 7.3), on a tiny in-memory bus.
from mpcompat import raises

from cabinlink.clock import ManualClock
from cabinlink import claim as C


class Bus:
    # Delivers every frame to every other member, in order.
    def __init__(self):
        self.members = []
        self.log = []
        self.full = False

    def join(self, clock, name, preferred, **kw):
        m = C.AddressClaim(clock, lambda i, d, me=len(self.members): self.send(me, i, d),
                           name, preferred, **kw)
        self.members.append(m)
        return m

    def send(self, src, can_id, data):
        if self.full:
            return False
        self.log.append((can_id, bytes(data)))
        for i, m in enumerate(self.members):
            if i != src:
                m.on_frame(can_id, data)
        return True


def _run(clock, members, ms):
    for _ in range(ms):
        clock.advance(1)
        for m in members:
            m.poll()


def test_name_layout():
    n = C.make_name(identity=0x12345, function=0xC2, manufacturer=0x7FF, ecu_instance=1,
                    function_instance=2)
    assert n & 0x1FFFFF == 0x12345
    assert (n >> 21) & 0x7FF == 0x7FF
    assert (n >> 32) & 7 == 1 and (n >> 35) & 0x1F == 2 and (n >> 40) & 0xFF == 0xC2
    assert n >> 63 == 1
    assert C.name_of(C.name_bytes(n)) == n
    assert C.name_bytes(n)[0] == 0x45  # little-endian on the wire


def test_claim_frame_and_settle_time():
    clk = ManualClock()
    bus = Bus()
    a = bus.join(clk, C.make_name(1, 0xC1), 0x80)
    a.start()
    assert bus.log == [(0x18EEFF80, C.name_bytes(a.name))]
    _run(clk, [a], 249)
    assert not a.ready
    _run(clk, [a], 1)
    assert a.ready and a.address == 0x80


def test_lower_name_wins_contested_address():
    clk = ManualClock()
    bus = Bus()
    hi = bus.join(clk, C.make_name(9, 0xC1), 0x80)
    lo = bus.join(clk, C.make_name(3, 0xC1), 0x80)
    hi.start()
    _run(clk, bus.members, 300)
    assert hi.ready and hi.address == 0x80
    lo.start()  # lo claims 0x80 too and has the lower NAME
    _run(clk, bus.members, 300)
    assert lo.address == 0x80 and lo.ready
    assert hi.address == 0x81 and hi.ready and hi.claims_lost == 1
    assert hi.peers[0x80] == lo.name and lo.peers[0x81] == hi.name


def test_defends_address_against_higher_name():
    clk = ManualClock()
    bus = Bus()
    lo = bus.join(clk, C.make_name(3, 0xC1), 0x90)
    hi = bus.join(clk, C.make_name(9, 0xC1), 0x90)
    lo.start()
    _run(clk, bus.members, 300)
    hi.start()
    _run(clk, bus.members, 300)
    assert lo.address == 0x90 and hi.address == 0x91
    assert bus.log.count((0x18EEFF90, C.name_bytes(lo.name))) == 2  # claim + defence


def test_not_arbitrary_capable_sends_cannot_claim_after_random_delay():
    clk = ManualClock()
    bus = Bus()
    car = bus.join(clk, C.make_name(1, 0x10, arbitrary=False), 0x00, pool=(0, 15),
                   rand=lambda n: 100)
    rival = bus.join(clk, C.make_name(0, 0x10, arbitrary=False), 0x00, pool=(0, 15))
    car.start()
    _run(clk, bus.members, 300)
    assert car.ready and car.address == 0x00
    rival.start()  # lower NAME, same address: the car must give way
    _run(clk, bus.members, 99)
    assert car.state == C.CANNOT_CLAIM and (0x18EEFFFE, C.name_bytes(car.name)) not in bus.log
    _run(clk, bus.members, 200)
    assert rival.address == 0x00 and car.address == C.NULL
    assert (0x18EEFFFE, C.name_bytes(car.name)) in bus.log


def test_pool_exhausted_means_cannot_claim():
    clk = ManualClock()
    bus = Bus()
    others = [bus.join(clk, C.make_name(i, 0xC1), 0x80 + i, pool=(0x80, 0x81)) for i in range(2)]
    for o in others:
        o.start()
    _run(clk, bus.members, 300)
    late = bus.join(clk, C.make_name(7, 0xC1), 0x80, pool=(0x80, 0x81), rand=lambda n: 5)
    late.start()
    _run(clk, bus.members, 300)
    assert late.address == C.NULL and late.state == C.CANNOT_CLAIM
    assert [o.address for o in others] == [0x80, 0x81]


def test_request_for_claims_is_answered():
    clk = ManualClock()
    bus = Bus()
    a = bus.join(clk, C.make_name(1, 0xC1), 0x80)
    a.start()
    _run(clk, [a], 300)
    del bus.log[:]
    a.on_frame(C.request_id(C.GLOBAL, 0x00), b"\x00\xee\x00")
    assert bus.log == [(0x18EEFF80, C.name_bytes(a.name))]
    a.on_frame(C.request_id(0x81, 0x00), b"\x00\xee\x00")  # to somebody else
    a.on_frame(C.request_id(C.GLOBAL, 0x00), b"\x00\xef\x00")  # another PGN
    assert len(bus.log) == 1


def test_full_tx_queue_is_retried_and_settle_counts_from_send():
    clk = ManualClock()
    bus = Bus()
    a = bus.join(clk, C.make_name(1, 0xC1), 0x80)
    bus.full = True
    a.start()
    _run(clk, [a], 400)
    assert not a.ready and bus.log == []
    bus.full = False
    _run(clk, [a], 1)
    assert len(bus.log) == 1
    _run(clk, [a], 249)
    assert not a.ready
    _run(clk, [a], 1)
    assert a.ready


def test_short_and_foreign_frames_are_ignored():
    clk = ManualClock()
    a = C.AddressClaim(clk, lambda i, d: True, C.make_name(1, 0xC1), 0x80)
    a.start()
    assert a.on_frame(0x18EEFF81, b"\x01\x02") is False
    assert a.on_frame(0x18FEF100, bytes(8)) is False
    assert a.on_frame(0x18EA8000, b"") is False


def test_late_joiner_learns_the_bus_by_requesting_claims():
    clk = ManualClock()
    bus = Bus()
    olds = [bus.join(clk, C.make_name(10 + i, 0xC1), 0x80 + i) for i in range(3)]
    for o in olds:
        o.start()
    _run(clk, bus.members, 300)
    car = bus.join(clk, C.make_name(1, 0xBF, arbitrary=False), 0x00, pool=(0, 15))
    car.start()
    _run(clk, bus.members, 300)
    assert car.peers == {}  # the others claimed before it listened
    assert car.request_claims()
    assert bus.log[-4] == (C.request_id(C.GLOBAL, 0x00), b"\x00\xee\x00")
    assert sorted(car.peers) == [0x80, 0x81, 0x82]
