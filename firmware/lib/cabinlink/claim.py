# Dynamic CAN addresses by address claim after SAE J1939-81 (spec 7.3).
# Pure state machine: frames in through on_frame(), frames out through
# send_frame(can_id, data) -> bool, time from the injected clock.
try:
    from micropython import const
except ImportError:  # CPython (host tools)
    def const(x):
        return x

_PF_CLAIM = const(0xEE)  # PGN 60928 Address Claimed / Cannot Claim
_PF_REQUEST = const(0xEA)  # PGN 59904 Request (data: requested PGN, LE)
GLOBAL = const(0xFF)
NULL = const(0xFE)  # "cannot claim" source address
_SETTLE_MS = const(250)  # silence after a claim before normal traffic
_PRIO = const(6)
_REQUEST_CLAIM = b"\x00\xee\x00"  # the requested PGN 0x00EE00, little-endian

IDLE = const(0)
CLAIMING = const(1)
CLAIMED = const(2)
CANNOT_CLAIM = const(3)


def claim_id(sa):
    return (_PRIO << 26) | (_PF_CLAIM << 16) | (GLOBAL << 8) | sa


def request_id(da, sa):
    return (_PRIO << 26) | (_PF_REQUEST << 16) | (da << 8) | sa


def make_name(identity, function, manufacturer=0, ecu_instance=0,
              function_instance=0, arbitrary=True, industry_group=0,
              vehicle_system=0x7F, system_instance=0):
    # The 64-bit J1939 NAME; lower NAME = higher claim priority.
    n = identity & 0x1FFFFF
    n |= (manufacturer & 0x7FF) << 21
    n |= (ecu_instance & 7) << 32
    n |= (function_instance & 0x1F) << 35
    n |= (function & 0xFF) << 40
    n |= (vehicle_system & 0x7F) << 49
    n |= (system_instance & 0xF) << 56
    n |= (industry_group & 7) << 60
    if arbitrary:
        n |= 1 << 63
    return n


def preferred_address(name, pool=(0x80, 0xF7)):
    # An accessory's first choice (spec 7.3): pool start + identity mod pool size.
    lo, hi = pool
    return lo + (name & 0x1FFFFF) % (hi - lo + 1)


def name_bytes(name):
    return bytes((name >> (8 * i)) & 0xFF for i in range(8))


def name_of(data):
    n = 0
    for i in range(7, -1, -1):
        n = (n << 8) | data[i]
    return n


class AddressClaim:
    # pool: (first, last) addresses tried after the preferred one is lost.
    # rand(n) -> int in 0..n-1, for the cannot-claim delay (J1939-81: 0..153 ms).
    def __init__(self, clock, send_frame, name, preferred, pool=(0x80, 0xF7),
                 rand=None, on_change=None, on_peer=None):
        self.clock = clock
        self.send_frame = send_frame
        self.name = name
        self.arbitrary = bool(name >> 63)
        self.preferred = preferred
        self.pool = pool
        self.rand = rand or (lambda n: (name ^ (name >> 21)) % n)
        self.on_change = on_change  # fn(old_addr, new_addr)
        self.on_peer = on_peer  # fn(addr, name) when another node claims
        self.state = IDLE
        self.address = NULL
        self.peers = {}  # addr -> NAME of other nodes
        self._t = 0
        self._pending = None  # (id, data) to send once the controller has room
        self._nb = name_bytes(name)
        self.claims_lost = 0

    @property
    def ready(self):
        # True once the address is ours and the settle time has passed.
        return self.state == CLAIMED and self._t is None

    def start(self):
        self._claim(self.preferred)

    def restart(self):
        # After bus-off recovery: announce the address again (or re-claim).
        self._claim(self.address if self.address != NULL else self.preferred)

    def _claim(self, addr):
        old = self.address
        self.address = addr
        self.state = CLAIMING
        self._out(claim_id(addr), self._nb)
        # The settle time runs from the frame's hand-over to the controller, which can
        # take a while on an SPI controller (spec 7.3: 250 ms after it was transmitted).
        self._t = self.clock.ticks_ms()
        if old != addr and self.on_change:
            self.on_change(old, addr)

    def _cannot_claim(self):
        old = self.address
        self.address = NULL
        self.state = CANNOT_CLAIM
        # J1939-81: the cannot-claim message waits a pseudo-random 0..153 ms.
        self._t = self.clock.ticks_add(self.clock.ticks_ms(), self.rand(154))
        self._pending = None
        if old != NULL and self.on_change:
            self.on_change(old, NULL)

    def _out(self, can_id, data):
        if not self.send_frame(can_id, data):
            self._pending = (can_id, data)
        else:
            self._pending = None

    def on_frame(self, can_id, data):
        # Feed every received 29-bit frame; returns True if it was a claim frame.
        pf = (can_id >> 16) & 0xFF
        sa = can_id & 0xFF
        if pf == _PF_REQUEST:
            da = (can_id >> 8) & 0xFF
            if len(data) >= 3 and data[0] == 0 and data[1] == _PF_CLAIM and data[2] == 0 \
                    and (da == GLOBAL or (da == self.address and self.address != NULL)):
                self._answer_request()
                return True
            return False
        if pf != _PF_CLAIM or len(data) < 8:
            return False
        other = name_of(data)
        if other == self.name:
            return True  # our own frame echoed back (loopback controllers)
        if sa == NULL:
            return True  # somebody else cannot claim
        for a in list(self.peers):
            if self.peers[a] == other and a != sa:
                del self.peers[a]  # the same node moved
        self.peers[sa] = other
        if self.on_peer:
            self.on_peer(sa, other)
        if sa != self.address or self.state not in (CLAIMING, CLAIMED):
            return True
        if self.name < other:
            self._out(claim_id(self.address), self._nb)  # defend: we win
        else:
            self.claims_lost += 1
            nxt = self._next_free()
            if nxt is None or not self.arbitrary:
                self._cannot_claim()
            else:
                self._claim(nxt)
        return True

    def request_claims(self, da=GLOBAL):
        # Ask every node (or one) to announce its address: how a node that joins
        # late learns who is on the bus (J1939-81 Request for Address Claimed).
        sa = self.address if self.state in (CLAIMING, CLAIMED) else NULL
        return self.send_frame(request_id(da, sa), _REQUEST_CLAIM)

    def _answer_request(self):
        if self.state in (CLAIMING, CLAIMED):
            self._out(claim_id(self.address), self._nb)
        elif self.state == CANNOT_CLAIM:
            self._t = self.clock.ticks_add(self.clock.ticks_ms(), self.rand(154))

    def _next_free(self):
        lo, hi = self.pool
        n = hi - lo + 1
        start = self.address if lo <= self.address <= hi else lo - 1
        for i in range(1, n + 1):
            a = lo + (start - lo + i) % n
            if a not in self.peers:
                return a
        return None

    def poll(self):
        if self._pending is not None:
            if not self.send_frame(self._pending[0], self._pending[1]):
                return
            self._pending = None
            if self.state == CLAIMING:
                self._t = self.clock.ticks_ms()  # settle time runs from the send
            return
        now = self.clock.ticks_ms()
        if self.state == CLAIMING and self.clock.ticks_diff(now, self._t) >= _SETTLE_MS:
            self.state = CLAIMED
            self._t = None
        elif self.state == CANNOT_CLAIM and self._t is not None \
                and self.clock.ticks_diff(now, self._t) >= 0:
            self._t = None
            self._out(claim_id(NULL), self._nb)
