# The CabinLink BLE transport (spec section 8): the GATT service, Device
# Information and other SIG services, advertising, fragmentation and
# notification pacing, carrying whole messages for the accessory Node.
#
# The radio is injected: an object with MicroPython's bluetooth.BLE surface
# (active, config, irq, gap_advertise, gap_disconnect, gatts_register_services,
# gatts_read, gatts_write, gatts_notify, gatts_set_buffer), and `uuid`, the
# UUID class of its module (bluetooth.UUID). The characteristic flags are
# MicroPython's fixed values. The node provides receive(link, peer, data) and
# peer_lost(link, peer); a peer is a connection handle. The runtime polls the
# node; this link never sends HEARTBEAT (spec 8.7).
#
# IRQs follow aioble's rule: the handler stores what it is given and sets a
# flag, poll() does the work. An RX write is read inside the IRQ, because on
# esp32 the IRQ runs synchronously and the next write replaces the value.
#
# TX notifications go only to peers that sent a request (the node answers,
# reports and emits to sessions only), and a car enables notifications before
# its first request (M-8.3-2): so nothing is notified before that (M-8.3-3).
try:
    from micropython import const
except ImportError:  # CPython (host tools)
    def const(x):
        return x

from cabinlink import msg
from cabinlink import registry as reg
from cabinlink import sig
from cabinlink.ble_frag import MAX_MESSAGE, MIN_FRAGMENT, Reassembler, Sender

SERVICE = "cab488e3-1190-4c04-8cbe-c122f022e37b"
RX = "cab488e4-1190-4c04-8cbe-c122f022e37b"
TX = "cab488e5-1190-4c04-8cbe-c122f022e37b"
SERVICE_LE = b"\x7b\xe3\x22\xf0\x22\xc1\xbe\x8c\x04\x4c\x90\x11\xe3\x88\xb4\xca"

# Advertised flags (spec 8.2, byte 5)
ADV_ALSO_CAN = const(0x01)
ADV_BONDING = const(0x02)
ADV_SAFE_MODE = const(0x04)

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)
_IRQ_CONNECTION_UPDATE = const(27)

_F_READ = const(0x02)
_F_WRITE_NO_RESPONSE = const(0x04)
_F_WRITE = const(0x08)
_F_NOTIFY = const(0x10)

_ADV_MAX = const(31)
_RX_BUFFER = const(512)  # the largest ATT value: no write is ever cut short
_INBOX = const(32)  # RX fragments waiting for poll(); more are dropped and counted
_MAX_RETRIES = const(100)  # failed notifications in a row before a message is given up
_ADV_RETRY_MS = const(1000)

_DIS = (
    (sig.MANUFACTURER_NAME, reg.ATTR_DEVICE_INFO_VENDOR),
    (sig.MODEL_NUMBER, reg.ATTR_DEVICE_INFO_PRODUCT),
    (sig.SERIAL_NUMBER, reg.ATTR_DEVICE_INFO_SERIAL),
    (sig.FIRMWARE_REVISION, reg.ATTR_DEVICE_INFO_FIRMWARE_VERSION),
    (sig.HARDWARE_REVISION, reg.ATTR_DEVICE_INFO_HARDWARE_VERSION),
)


def adv_data():
    # Flags 0x06 + Complete List of 128-bit Service UUIDs (spec 8.2), 21 bytes.
    return b"\x02\x01\x06\x11\x07" + SERVICE_LE


def scan_response(name, device_class, short_id, flags=0):
    # Service Data 128 [major, minor, class, short id hi, lo, flags], then the
    # Complete Local Name, or the Shortened one cut to fit 31 bytes (never
    # inside a UTF-8 character).
    r = bytearray(b"\x17\x21")
    r.extend(SERVICE_LE)
    r.extend(bytes((msg.VERSION_MAJOR, msg.VERSION_MINOR, device_class & 0xFF,
                    (short_id >> 8) & 0xFF, short_id & 0xFF, flags & 0xFF)))
    n = name.encode() if isinstance(name, str) else bytes(name)
    room = _ADV_MAX - len(r) - 2
    kind = 0x09
    if len(n) > room:
        kind = 0x08
        cut = room
        while cut > 0 and n[cut] & 0xC0 == 0x80:
            cut -= 1
        n = n[:cut]
    if n:
        r.extend(bytes((len(n) + 1, kind)))
        r.extend(n)
    return bytes(r)


class _Conn:
    # One connection: its own sequence numbers both ways (M-8.4-2).
    def __init__(self, link, handle, rx_max, max_fragment):
        self.handle = handle
        self.rx = Reassembler(lambda m, h=handle: link._deliver(h, m), rx_max)
        self.tx = Sender(max_fragment)
        self.size = MIN_FRAGMENT  # ATT_MTU 23 until the exchange
        self.pace = link.pace_ms
        self.queue = []  # whole messages; the first `urgent` of them are events
        self.urgent = 0
        self.frag = None  # a fragment the stack refused: sent again, unchanged
        self.at = None  # ticks of the last notification attempt
        self.fails = 0


class BleLink:
    liveness_ms = 0  # the BLE supervision timeout replaces heartbeats (spec 8.7)

    def __init__(self, ble, uuid, node, clock, name, device_class=None, short_id=0,
                 flags=0, sig_services=(), max_conns=1, pace_ms=10, max_fragment=244,
                 queue_len=8, adv_interval_us=100000, rx_max=None, wake=None,
                 irq_chain=None):
        # name: the advertised and GAP name; short_id: identity number mod 65536;
        # flags: ADV_* bits; sig_services: [(service uuid16, [(char uuid16, cap,
        # attr, encode_fn[, status_attr]), ...]), ...] (None entries are skipped),
        # see cabinlink.sig; pace_ms: least gap between notifications on one
        # connection; max_fragment: ATT_MTU - 3 at most (244: ATT_MTU 247);
        # queue_len: messages waiting per connection; rx_max: largest message
        # accepted, by default the node's D_MAX_RX; wake: an object with set()
        # (asyncio.ThreadSafeFlag) the IRQ sets; irq_chain(event, data): gets
        # every IRQ after this link, its return value is the IRQ's (bonding).
        self.ble = ble
        self.uuid = uuid
        self.node = node
        self.clock = clock
        self.name = name
        if device_class is None:
            device_class = node.device_class
        self._adv_data = adv_data()
        self._resp = scan_response(name, device_class, short_id & 0xFFFF, flags)
        self.sig_services = sig_services
        self.max_conns = max_conns
        self.pace_ms = pace_ms
        self.max_fragment = max(MIN_FRAGMENT, max_fragment)
        self.queue_len = queue_len
        self.adv_interval_us = adv_interval_us
        self.rx_max = rx_max or getattr(node, "max_rx", 512)
        self.wake = wake
        self.irq_chain = irq_chain
        self.handles = None  # as gatts_register_services returned them
        self._h_rx = self._h_tx = -1
        self._sig = []  # [handle, cap, attr, encode, status attr, value, ok]
        self._conns = []
        self._inbox = []  # (event, conn, data) from the IRQ, in order
        self._adv = False
        self._adv_at = None
        self._closed = True
        # counters
        self.rx_messages = 0
        self.rx_overflow = 0  # fragments dropped because poll() fell behind
        self.tx_notifications = 0
        self.tx_retries = 0  # notifications the stack refused (tried again)
        self.tx_dropped = 0  # messages not delivered (given up, or connection gone)
        self.refused = 0  # connections over max_conns, disconnected at once
        self.adv_errors = 0
        self.sig_errors = 0
        self.irq_errors = 0
        self._rx_dropped = 0
        self._rx_gaps = 0

    @property
    def rx_dropped(self):
        # Fragments dropped and messages abandoned by the reassemblers (spec 8.4).
        n = self._rx_dropped
        for c in self._conns:
            n += c.rx.dropped
        return n

    @property
    def rx_gaps(self):
        n = self._rx_gaps
        for c in self._conns:
            n += c.rx.gaps
        return n

    def peers(self):
        return [c.handle for c in self._conns]

    # --- set-up ------------------------------------------------------------
    def start(self):
        # Activate the radio, register the services, fill them and advertise.
        ble = self.ble
        U = self.uuid
        ble.irq(self._irq)
        ble.active(True)
        ble.config(gap_name=self.name, mtu=self.max_fragment + 3)
        ble.gap_advertise(None)  # services can only be registered while idle
        services = [
            (U(SERVICE), ((U(RX), _F_WRITE | _F_WRITE_NO_RESPONSE), (U(TX), _F_NOTIFY))),
            (U(sig.DEVICE_INFORMATION), tuple([(U(d[0]), _F_READ) for d in _DIS])),
        ]
        extra = [s for s in self.sig_services if s]
        for s in extra:
            services.append((U(s[0]), tuple([(U(e[0]), _F_READ | _F_NOTIFY) for e in s[1]])))
        self.handles = ble.gatts_register_services(services)
        self._h_rx, self._h_tx = self.handles[0][0], self.handles[0][1]
        ble.gatts_set_buffer(self._h_rx, max(_RX_BUFFER, self.max_fragment), False)
        ble.gatts_set_buffer(self._h_tx, self.max_fragment, False)
        info = self.node.info.values
        for i, d in enumerate(_DIS):
            ble.gatts_write(self.handles[1][i], sig.utf8(info.get(d[1])))
        self._sig = []
        for k, s in enumerate(extra):
            for i, e in enumerate(s[1]):
                st = e[4] if len(e) > 4 else None
                self._sig.append([self.handles[2 + k][i], e[1], e[2], e[3], st, None, None])
        self._refresh(True)
        self._closed = False
        self._advertise(self.clock.ticks_ms())

    def close(self):
        # Stop advertising and end every connection (their sessions end too).
        self._closed = True
        self._stop_adv()
        conns = self._conns
        self._conns = []
        for c in conns:
            try:
                self.ble.gap_disconnect(c.handle)
            except OSError:
                pass
            self._forget(c)

    # --- IRQ (stores and flags only) ----------------------------------------
    def _irq(self, event, data):
        try:
            box = self._inbox
            if event == _IRQ_GATTS_WRITE:
                if data[1] == self._h_rx:
                    if len(box) >= _INBOX:
                        self.rx_overflow += 1
                    else:
                        box.append((event, data[0], self.ble.gatts_read(data[1])))
            elif event == _IRQ_CENTRAL_CONNECT or event == _IRQ_CENTRAL_DISCONNECT:
                box.append((event, data[0], 0))
            elif event == _IRQ_MTU_EXCHANGED:
                box.append((event, data[0], data[1]))
            elif event == _IRQ_CONNECTION_UPDATE:
                if data[4] == 0:
                    box.append((event, data[0], data[1]))
            if box and self.wake is not None:
                self.wake.set()
            if self.irq_chain is not None:
                return self.irq_chain(event, data)
        except Exception:
            self.irq_errors += 1
        return None

    # --- poll (does the work) -------------------------------------------------
    def poll(self):
        # Call every few ms: fragments in, notifications out (paced), SIG
        # values kept current, advertising while a connection is free.
        # Never raises on bad input from the air.
        now = self.clock.ticks_ms()
        box = self._inbox
        while box:
            ev = box.pop(0)
            self._event(ev[0], ev[1], ev[2])
        for c in self._conns:
            self._send_next(c, now)
        if self._sig:
            self._refresh(False)
        if not self._adv and not self._closed and len(self._conns) < self.max_conns:
            self._advertise(now)

    def _conn(self, handle):
        for c in self._conns:
            if c.handle == handle:
                return c
        return None

    def _event(self, event, handle, data):
        c = self._conn(handle)
        if event == _IRQ_GATTS_WRITE:
            if c is None:
                self._rx_dropped += 1  # a write from a connection we do not keep
            else:
                c.rx.feed(data)
        elif event == _IRQ_CENTRAL_CONNECT:
            self._adv = False  # the stack stops advertising when a central connects
            if c is not None:
                return
            if self._closed or len(self._conns) >= self.max_conns:
                self.refused += 1
                try:
                    self.ble.gap_disconnect(handle)
                except OSError:
                    pass
                return
            self._conns.append(_Conn(self, handle, self.rx_max, self.max_fragment))
            if len(self._conns) >= self.max_conns:
                self._stop_adv()
        elif c is None:
            return
        elif event == _IRQ_CENTRAL_DISCONNECT:
            self._conns.remove(c)
            self._forget(c)
        elif event == _IRQ_MTU_EXCHANGED:
            c.size = max(MIN_FRAGMENT, min(data - 3, self.max_fragment))
        elif event == _IRQ_CONNECTION_UPDATE:
            # One notification per connection event at most (M-8.5-1).
            c.pace = max(self.pace_ms, (data * 5 + 3) // 4)  # interval unit 1.25 ms

    def _forget(self, c):
        self._rx_dropped += c.rx.dropped
        self._rx_gaps += c.rx.gaps
        self.tx_dropped += len(c.queue) + (1 if c.tx.busy or c.frag is not None else 0)
        self.node.peer_lost(self, c.handle)

    def _deliver(self, handle, m):
        self.rx_messages += 1
        self.node.receive(self, handle, m)

    # --- outbound ---------------------------------------------------------------
    def send(self, peer, data, urgent=False):
        # Queue one whole message for connection `peer`; events (urgent) go
        # ahead of the messages that wait, never into one being sent (8.5).
        c = self._conn(peer)
        if c is None or len(c.queue) >= self.queue_len:
            return False
        if not 0 < len(data) <= MAX_MESSAGE:
            self.tx_dropped += 1  # can never be sent: taken, and counted
            return True
        if urgent:
            c.queue.insert(c.urgent, bytes(data))
            c.urgent += 1
        else:
            c.queue.append(bytes(data))
        return True

    def _send_next(self, c, now):
        if c.at is not None and self.clock.ticks_diff(now, c.at) < c.pace:
            return
        f = c.frag
        if f is None:
            if not c.tx.busy:
                if not c.queue:
                    return
                if c.urgent:
                    c.urgent -= 1
                c.tx.start(c.queue.pop(0))
            f = c.frag = c.tx.next(c.size)
        c.at = now
        try:
            self.ble.gatts_notify(c.handle, self._h_tx, f)
        except OSError:
            # e.g. ENOMEM / -128 when the controller's buffers are full: the
            # same fragment again after the pace interval.
            self.tx_retries += 1
            c.fails += 1
            if c.fails >= _MAX_RETRIES:
                # Give the message up; the car sees the sequence gap (8.4).
                c.frag = None
                c.tx.cancel()
                c.fails = 0
                self.tx_dropped += 1
            return
        c.frag = None
        c.fails = 0
        self.tx_notifications += 1

    # --- SIG values, advertising ------------------------------------------------
    def _refresh(self, force):
        # Rewrite (and notify) a SIG characteristic only when its value or
        # validity changed; nothing is allocated otherwise.
        for e in self._sig:
            vals = e[1].values
            v = vals.get(e[2])
            ok = e[4] is None or vals.get(e[4]) == sig.STATUS_OK
            if not force and ok == e[6] and v == e[5]:
                continue
            try:
                data = e[3](v if ok else None)
            except Exception:
                self.sig_errors += 1  # an encoder bug: not retried for this value
                e[5], e[6] = v, ok
                continue
            try:
                self.ble.gatts_write(e[0], data, True)
            except OSError:
                self.sig_errors += 1  # tried again on the next poll
                continue
            e[5], e[6] = v, ok

    def _advertise(self, now):
        if self._adv_at is not None and self.clock.ticks_diff(now, self._adv_at) < _ADV_RETRY_MS:
            return
        try:
            self.ble.gap_advertise(self.adv_interval_us, self._adv_data, resp_data=self._resp)
        except OSError:
            self.adv_errors += 1
            self._adv_at = now
            return
        self._adv = True
        self._adv_at = None

    def _stop_adv(self):
        try:
            self.ble.gap_advertise(None)
        except OSError:
            pass
        self._adv = False
