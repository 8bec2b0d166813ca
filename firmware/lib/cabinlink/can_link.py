# The CabinLink CAN transport (spec section 7): a machine.CAN-shaped controller
# + address claim + ISO-TP channels + heartbeat + bus-off recovery, carrying
# whole messages for an endpoint (the accessory Node, or a car client).
#
# The controller needs MicroPython's machine.CAN surface: send(id, data, flags)
# -> index or None when full (OSError when bus-off), recv(list) -> list or None,
# state(), restart(). The endpoint provides receive(link, peer, data),
# peer_lost(link, peer), poll() and heartbeat() -> encoded HEARTBEAT.
try:
    from micropython import const
except ImportError:  # CPython (host tools)
    def const(x):
        return x

from cabinlink import claim as _claim
from cabinlink import isotp

_FLAG_EXT_ID = const(2)
_IRQ_TX = const(1)
_IRQ_RX = const(2)
_STATE_BUS_OFF = const(4)
_RX_BURST = const(32)  # frames handled per poll, to stay fair to other tasks
_BACKOFF_MS = const(100)  # first bus-off back-off; doubles up to _BACKOFF_MAX_MS
_BACKOFF_MAX_MS = const(5000)
_STABLE_MS = const(10000)  # a recovery that holds this long resets the back-off
_STATE_EVERY_MS = const(20)  # how often the controller's state is read (SPI on an MCP2515)
_PAD = const(0xCC)
_PF_PS = const(0x00FFFF00)  # filter mask: PDU format + PDU specific (J1939 PF, PS)


class CanLink:
    liveness_ms = 3000  # a peer silent this long is gone (3 missed heartbeats)

    def __init__(self, can, endpoint, clock, name, preferred=None, pool=(0x80, 0xF7),
                 heartbeat_ms=1000, rx_max=None, bs=0, stmin=0, max_channels=8,
                 on_peer=None, wake=None):
        # preferred: first address to claim (default: spec 7.3's formula);
        # rx_max: ISO-TP receive limit, by default the endpoint's max_rx, so it
        # equals the D_MAX_RX the accessory announces (spec 7.4); wake: an
        # object with set() (asyncio.ThreadSafeFlag) the controller's RX and
        # TX-done interrupts set, so that the owner polls at once.
        self.can = can
        self.endpoint = endpoint
        self.clock = clock
        self.heartbeat_ms = heartbeat_ms
        self.rx_max = rx_max or getattr(endpoint, "max_rx", 512)
        if preferred is None:
            preferred = _claim.preferred_address(name, pool)
        self.bs = bs
        self.stmin = stmin
        self.max_channels = max_channels
        self.wake = wake
        self.claim = _claim.AddressClaim(clock, self._tx, name, preferred, pool,
                                         on_change=self._address_changed,
                                         on_peer=on_peer)
        self.channels = {}  # (prio << 8) | remote -> isotp.Channel
        self._rx = [0, memoryview(bytearray(8)), 0, 0]
        self._hb = bytearray(8)
        self._hb_at = None
        self._busoff_at = None
        self._state_at = clock.ticks_add(clock.ticks_ms(), -_STATE_EVERY_MS)
        self._backoff = _BACKOFF_MS
        self._recovered_at = None
        self.frames_rx = 0
        self.frames_tx = 0
        self.frames_dropped = 0
        self.bus_off_count = 0

    @property
    def address(self):
        return self.claim.address

    def start(self):
        self._set_filters(self.claim.preferred)
        if self.wake is not None:
            self._arm_irq(self.wake)
        self.claim.start()

    def _arm_irq(self, wake):
        # A poll as soon as a frame has come in or left: a request is answered
        # when it is whole, and the next CF goes out when the one before it has
        # (machine.CAN queues one frame per id), not one poll period later.
        irq = getattr(self.can, "irq", None)
        if irq is None:
            return

        def on_irq(can):
            while can.irq().flags():  # machine.CAN: mandatory with IRQ_TX
                pass
            wake.set()

        irq(on_irq, _IRQ_RX | _IRQ_TX)

    def _set_filters(self, me):
        # Hardware acceptance filters (spec 7.2): what this node must hear,
        # whatever the priority: ISO-TP to it, functional to it or to all,
        # address claims, requests to it or to all. Other traffic on a shared
        # bus never costs a receive. A controller with fewer filters (or
        # masks) than that, or none, receives everything; _frame() sorts it.
        sf = getattr(self.can, "set_filters", None)
        if sf is None:
            return
        filters = None
        if getattr(self.can, "FILTERS_MAX", 0) >= 6:
            filters = []
            for pf_ps in (0xDA00 | me, 0xDB00 | me, 0xDBFF, 0xEEFF, 0xEAFF, 0xEA00 | me):
                filters.append((pf_ps << 8, _PF_PS, _FLAG_EXT_ID))
        try:
            sf(filters)
        except ValueError:
            sf(None)

    # --- outbound ----------------------------------------------------------
    def _tx(self, can_id, data):
        try:
            ok = self.can.send(can_id, data, _FLAG_EXT_ID) is not None
        except OSError:
            return False  # bus-off or not initialised: poll() deals with it
        if ok:
            self.frames_tx += 1
        return ok

    def send(self, peer, data, urgent=False):
        # One whole message to the node at address `peer` (spec 7.4).
        if not self.claim.ready or not 0 <= peer < _claim.NULL:
            return False
        ch = self._channel(isotp.PRIO_EVENT if urgent else isotp.PRIO_NORMAL, peer)
        if ch is None or ch.tx_busy:
            return False
        if not ch.send(bytes(data)):
            return False
        ch.poll()  # a single frame leaves now, not on the next poll
        return True

    def _channel(self, prio, remote):
        key = (prio << 8) | remote
        ch = self.channels.get(key)
        if ch is None:
            if len(self.channels) >= self.max_channels and not self._evict():
                return None
            me = self.claim.address
            ch = isotp.Channel(self.clock, self._tx, isotp.phys_id(prio, remote, me),
                               rx_max=self.rx_max, bs=self.bs, stmin=self.stmin,
                               on_message=lambda p, r=remote: self.endpoint.receive(self, r, p))
            self.channels[key] = ch
        return ch

    def _evict(self):
        for k, ch in self.channels.items():
            if not ch.tx_busy and not ch.rx_busy:
                del self.channels[k]
                return True
        return False

    def _address_changed(self, old, new):
        # Every ISO-TP id carries our address: connections on the old one are void.
        for ch in self.channels.values():
            ch.abort()
        self.channels = {}
        self._hb_at = None
        self._set_filters(new)

    # --- inbound -----------------------------------------------------------
    def _frame(self, can_id, data):
        if self.claim.on_frame(can_id, data):
            return
        me = self.claim.address
        # isotp.parse_id() inlined: this runs for every frame, without a tuple.
        kind = (can_id >> 16) & 0xFF
        if me == _claim.NULL or (kind != 0xDA and kind != 0xDB) or (can_id >> 24) & 3:
            return  # other traffic on a shared bus is not ours to judge
        prio = can_id >> 26
        ta = (can_id >> 8) & 0xFF
        sa = can_id & 0xFF
        if not self.claim.ready:
            if ta == me or ta == _claim.GLOBAL:
                self.frames_dropped += 1  # no ISO-TP during the settle time (spec 7.3)
            return
        if sa >= _claim.NULL:
            self.frames_dropped += 1
        elif kind == 0xDA:
            if ta == me:
                ch = self._channel(prio, sa)
                if ch is None:
                    self.frames_dropped += 1
                else:
                    ch.on_frame(data)
        elif ta == me or ta == _claim.GLOBAL:
            # Functional addressing carries single frames only (ISO 15765-2).
            n = len(data)
            pci = data[0] if n else 0xFF
            if pci >> 4 == 0 and 0 < pci <= 7 and n > pci:
                self.endpoint.receive(self, sa, data[1 : 1 + pci])
            else:
                self.frames_dropped += 1

    def poll(self):
        # Call every few ms: frames in, timers, frames out. Never raises on
        # bad input from the bus.
        now = self.clock.ticks_ms()
        if self._bus_off(now):
            self.endpoint.poll()  # the app and other links keep running
            return
        rx = self._rx
        for _ in range(_RX_BURST):
            r = self.can.recv(rx)
            if r is None:
                break
            self.frames_rx += 1
            if r[2] & _FLAG_EXT_ID:
                self._frame(r[0], r[1])
            else:
                self.frames_dropped += 1
        self.claim.poll()
        for ch in self.channels.values():
            ch.poll()
        if self.claim.ready:
            self._heartbeat(now)
        self.endpoint.poll()

    def _heartbeat(self, now):
        if self._hb_at is not None and self.clock.ticks_diff(now, self._hb_at) < self.heartbeat_ms:
            return
        hb = self.endpoint.heartbeat()
        n = len(hb)
        b = self._hb
        b[0] = n
        b[1 : 1 + n] = hb
        for i in range(1 + n, 8):
            b[i] = _PAD
        if self._tx(isotp.func_id(isotp.PRIO_NORMAL, _claim.GLOBAL, self.claim.address), b):
            # the period runs from the hand-over, which may come well after the poll
            # began (spec 2.3: never earlier than one period after the previous one)
            self._hb_at = self.clock.ticks_ms()

    def _bus_off(self, now):
        # Bus-off recovery with exponential back-off (spec 7.7): never a tight
        # restart loop, and the back-off resets only after a stable period.
        d = self.clock.ticks_diff
        if self._busoff_at is None:
            if d(now, self._state_at) < _STATE_EVERY_MS:
                return False
            self._state_at = now
            if self.can.state() != _STATE_BUS_OFF:
                if self._recovered_at is not None and d(now, self._recovered_at) >= _STABLE_MS:
                    self._backoff = _BACKOFF_MS
                    self._recovered_at = None
                return False
            self.bus_off_count += 1
            self._busoff_at = now
            for ch in self.channels.values():
                ch.abort()
            return True
        if d(now, self._busoff_at) < self._backoff:
            return True
        self._busoff_at = None
        self._recovered_at = now
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX_MS)
        self.can.restart()
        self.claim.restart()
        return False
