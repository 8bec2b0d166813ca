# The accessory runtime (spec sections 5-6): dispatches requests to the
# capabilities, keeps subscriptions and sessions, queues events. It owns no
# hardware and knows no transport: links hand it whole messages and take
# encoded messages back.
#
# A link provides:
#   send(peer, data, urgent) -> bool   False: cannot take it now (retried later);
#                                      data is valid only during the call: copy it
#                                      if it is kept; urgent = event priority
#   liveness_ms                        0, or the silence after which a peer is gone
# and calls node.receive(link, peer, data) / node.peer_lost(link, peer).
try:
    from micropython import const
except ImportError:  # CPython (host tools)
    def const(x):
        return x

from cabinlink import msg
from cabinlink import registry as reg
from cabinlink.codec import Encoder, ProtocolError, encode
from cabinlink.model import check_value

_OUTBOX = const(8)  # results/events waiting for a busy link
_MAX_SUBS = const(16)
_MAX_SESSIONS = const(8)
_MAX_MESSAGE = const(4095)
_UINT16 = const(0xFFFF)


def _call(handler, cap, a, b):
    # An app handler that raises is a fault of the accessory, not of the
    # request: the car gets HW_FAULT and the node keeps running.
    try:
        return handler(cap, a, b)
    except Exception:
        return msg.HW_FAULT


class _Sub:
    def __init__(self, key, slot, attr, min_ms, max_ms, threshold):
        self.key = key
        self.slot = slot
        self.attr = attr
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.threshold = threshold
        self.value = None
        self.at = 0
        self.due = True  # priming report right after the RESULT (spec 6.2)


class _Session:
    def __init__(self, now):
        self.hello = False
        self.seen = now


class Node:
    def __init__(self, clock, device_class, caps, max_rx=512, max_subs=_MAX_SUBS):
        # caps: the capabilities in slot order; exactly one is device_info (its
        # identity strings are the ones DESCRIBE carries, spec 3.1). Raises
        # ValueError at start when a capability contradicts the registry.
        self.clock = clock
        self.device_class = device_class
        self.caps = caps
        self.info = None
        seen = []
        for i, c in enumerate(caps):
            c.check()
            if (c.id, c.instance) in seen:
                raise ValueError("duplicate capability 0x%04x/%d" % (c.id, c.instance))
            seen.append((c.id, c.instance))
            if c.id == reg.CAP_DEVICE_INFO:
                self.info = c
            c.slot = i
            c.node = self
        if self.info is None:
            raise ValueError("no device_info capability")
        self.max_rx = max_rx
        self.max_subs = max_subs
        self.health = msg.HEALTH_NOMINAL
        self.mode = msg.MODE_OPERATIONAL
        self.sessions = {}  # (link, peer) -> _Session
        self.subs = []
        self._outbox = []  # [(key, bytes, urgent)], in order
        self._enc = Encoder(256)
        self._desc = None
        self._t_last = clock.ticks_ms()
        self._uptime_ms = 0
        self._mirrored = -1  # ticks of the last device_info refresh
        # counters, mirrored into device_info (spec 5.1)
        self.rx_ok = 0
        self.rx_malformed = 0
        self.rx_dropped = 0
        self.events_dropped = 0
        self.tx_dropped = 0

    # --- inbound -----------------------------------------------------------
    def receive(self, link, peer, data):
        # One complete message from a peer. Never raises on bad input.
        now = self.clock.ticks_ms()
        if msg.is_heartbeat(data):
            # The commonest message on a bus, and all it does here is keep a
            # session alive: checked byte by byte, not decoded.
            s = self.sessions.get((link, peer))
            if s is not None:
                s.seen = now
            return
        try:
            m = msg.parse(data)
        except ProtocolError:
            self.rx_malformed += 1
            return
        t = m[0]
        key = (link, peer)
        s = self.sessions.get(key)
        if s is not None:
            s.seen = now
        if not msg.is_request(t):
            # Heartbeats keep a session alive (above); anything else the
            # accessory does not expect is ignored (spec 5.1).
            if t != msg.HEARTBEAT:
                self.rx_dropped += 1
            return
        if s is None:
            if len(self.sessions) >= _MAX_SESSIONS:
                self._evict(now)
            s = self.sessions[key] = _Session(now)
        tid = m[1]
        try:
            r = self._dispatch(t, m, key, s)
            self.rx_ok += 1
        except ProtocolError:
            self.rx_malformed += 1
            r = (msg.MALFORMED, None)
        if r is not None:
            self._send(key, msg.result(tid, r[0], r[1]), False)

    def _dispatch(self, t, m, key, s):
        # -> (status, value) for the RESULT, or None when already answered.
        if t == msg.HELLO:
            major = msg.field_uint(m, 2, _UINT16)
            msg.field_uint(m, 3, _UINT16)
            if major != msg.VERSION_MAJOR:
                return msg.VERSION_MISMATCH, [msg.VERSION_MAJOR, msg.VERSION_MINOR]
            s.hello = True
            return msg.OK, [msg.VERSION_MAJOR, msg.VERSION_MINOR, self.device_class]
        if t == msg.DESCRIBE:
            self._send_describe(key, m[1])
            return None
        if t > msg.INVOKE:
            return msg.UNSUPPORTED, None
        cap = self._cap(m)
        if cap is None:
            return msg.NOT_FOUND, None
        if t == msg.INVOKE:
            return self._invoke(cap, m)
        attr = msg.field_uint(m, 3, _UINT16)
        if attr not in cap.values:
            return msg.NOT_FOUND, None
        spec = cap.attr_spec(attr)
        access = spec[1]
        if t == msg.READ:
            if not access & reg.A_READ:
                return msg.ACCESS_DENIED, None
            return msg.OK, cap.values[attr]
        if t == msg.WRITE:
            if len(m) < 5:
                raise ProtocolError("missing value")
            return self._write(cap, attr, m[4], spec, access)
        if t == msg.SUBSCRIBE:
            if not access & reg.A_REPORT:
                return msg.ACCESS_DENIED, None
            return self._subscribe(key, cap, attr, m, spec[0])
        # UNSUBSCRIBE
        for sub in self.subs:
            if sub.key == key and sub.slot == cap.slot and sub.attr == attr:
                self.subs.remove(sub)
                return msg.OK, None
        return msg.NOT_FOUND, None

    def _cap(self, m):
        slot = msg.field_uint(m, 2, _UINT16)
        return self.caps[slot] if slot < len(self.caps) else None

    def _write(self, cap, attr, v, spec, access):
        if not access & reg.A_WRITE:
            return msg.ACCESS_DENIED, None
        if not check_value(spec[0], spec[2], spec[3], v):
            return msg.INVALID_VALUE, None
        st = _call(cap.on_write, cap, attr, v) if cap.on_write else msg.OK
        if st == msg.OK:
            cap.values[attr] = v
        return st, None

    def _invoke(self, cap, m):
        cmd = msg.field_uint(m, 3, _UINT16)
        if cmd not in cap.commands:
            return msg.NOT_FOUND, None
        args = m[4] if len(m) > 4 else []
        if not isinstance(args, list):
            raise ProtocolError("args not an array")
        specs = cap.arg_specs(cmd)
        for i, a in enumerate(specs):
            if i >= len(args):
                if not a[3]:
                    return msg.INVALID_VALUE, None
            elif not check_value(a[0], a[1], a[2], args[i]):
                return msg.INVALID_VALUE, None
        args = args[: len(specs)]  # unknown trailing args are ignored
        r = _call(cap.on_invoke, cap, cmd, args)
        return r if isinstance(r, tuple) else (r, None)

    def _subscribe(self, key, cap, attr, m, typ):
        # Checks in the order of spec 6.1.
        min_ms = msg.field_uint(m, 4, _UINT16)
        max_s = msg.field_uint(m, 5, 0xFFFFFFFF)
        th = m[6] if len(m) > 6 else None
        if th is not None:
            if not isinstance(th, int) or isinstance(th, bool) or th < 0:
                return msg.INVALID_VALUE, None
            if th and typ != reg.T_INT and typ != reg.T_UINT:
                return msg.INVALID_VALUE, None
        if max_s == 0:
            return msg.INVALID_VALUE, None
        if max_s > msg.MAX_SUBSCRIBE_S:
            max_s = msg.MAX_SUBSCRIBE_S
        if min_ms > max_s * 1000:
            return msg.INVALID_VALUE, None
        sub = _Sub(key, cap.slot, attr, min_ms, max_s * 1000, th)
        for i, old in enumerate(self.subs):
            if old.key == key and old.slot == cap.slot and old.attr == attr:
                self.subs[i] = sub
                break
        else:
            if len(self.subs) >= self.max_subs:
                return msg.NO_RESOURCES, None
            self.subs.append(sub)
        return msg.OK, [min_ms, max_s]

    def description(self):
        # The DESCRIBE map (spec 5.4), encoded once per boot.
        if self._desc is None:
            v = self.info.values
            d = {msg.D_VERSION: [msg.VERSION_MAJOR, msg.VERSION_MINOR],
                 msg.D_CLASS: self.device_class,
                 msg.D_VENDOR: v[reg.ATTR_DEVICE_INFO_VENDOR],
                 msg.D_PRODUCT: v[reg.ATTR_DEVICE_INFO_PRODUCT],
                 msg.D_SERIAL: v[reg.ATTR_DEVICE_INFO_SERIAL],
                 msg.D_FIRMWARE: v[reg.ATTR_DEVICE_INFO_FIRMWARE_VERSION],
                 msg.D_HARDWARE: v[reg.ATTR_DEVICE_INFO_HARDWARE_VERSION],
                 msg.D_CAPS: [c.entry() for c in self.caps],
                 msg.D_MAX_RX: self.max_rx}
            self._desc = encode(d)
        return self._desc

    def _send_describe(self, key, tid):
        # RESULT [9, tid, 0, <description>] built around the cached encoding.
        head = bytearray(encode([msg.RESULT, tid, msg.OK]))
        head[0] = 0x84  # array of 4: the description follows as element 3
        self._queue(key, bytes(head) + self.description(), False)

    def _evict(self, now):
        # Session table full: forget the peer heard from least recently.
        d = self.clock.ticks_diff
        old = None
        for key, s in self.sessions.items():
            if old is None or d(now, s.seen) > d(now, self.sessions[old].seen):
                old = key
        self.peer_lost(old[0], old[1])

    def peer_lost(self, link, peer):
        # The link saw the peer disconnect or go silent: forget its state.
        key = (link, peer)
        self.sessions.pop(key, None)
        self.subs = [s for s in self.subs if s.key != key]
        self._outbox = [o for o in self._outbox if o[0] != key]

    # --- outbound ----------------------------------------------------------
    def emit(self, slot, ev, data=None):
        # An event goes to every session that said HELLO, at event priority.
        m = msg.event(slot, ev, data)
        sent = False
        for key, s in self.sessions.items():
            if s.hello:
                sent = self._send(key, m, True) or sent
        return sent

    def _send(self, key, m, urgent):
        try:
            data = bytes(self._enc.encode(m))
        except ProtocolError:
            data = self._encode_big(m)
            if data is None:
                return False
        return self._queue(key, data, urgent)

    def _encode_big(self, m):
        # A message over the scratch buffer: encode it on its own; one that
        # exceeds the 4095-byte message limit becomes RESULT NO_RESOURCES.
        try:
            data = encode(m)
            if len(data) <= _MAX_MESSAGE:
                return data
        except ProtocolError:
            pass
        if m[0] == msg.RESULT:
            return encode(msg.result(m[1], msg.NO_RESOURCES))
        self.tx_dropped += 1
        return None

    def _waiting(self, key):
        for o in self._outbox:
            if o[0] == key:
                return True
        return False

    def _queue(self, key, data, urgent):
        # Per peer, messages leave in order; a stalled peer does not hold up others.
        if not self._waiting(key) and key[0].send(key[1], data, urgent):
            return True
        if len(self._outbox) >= _OUTBOX:
            if urgent:
                self.events_dropped += 1
            else:
                self.tx_dropped += 1
            return False
        self._outbox.append((key, data, urgent))
        return True

    def uptime_s(self):
        return self._uptime_ms // 1000

    def heartbeat(self):
        # Encoded HEARTBEAT for the links that send one (spec 7.6).
        return self._enc.encode(msg.heartbeat(self.uptime_s(), self.health, self.mode))

    def poll(self):
        # Call often (every few ms): flushes the outbox, sends due reports,
        # expires silent peers. Cheap when there is nothing to do.
        c = self.clock
        now = c.ticks_ms()
        self._uptime_ms += c.ticks_diff(now, self._t_last)
        self._t_last = now
        if self._outbox:
            self._flush()
        gone = None
        for key, s in self.sessions.items():
            live = key[0].liveness_ms
            if live and c.ticks_diff(now, s.seen) > live:
                gone = key  # at most one per poll: no list to allocate
        if gone is not None:
            self.peer_lost(gone[0], gone[1])
        if c.ticks_diff(now, self._mirrored) >= 1000 or self._mirrored == -1:
            self._mirrored = now
            self._mirror()
        for sub in self.subs:
            # A REPORT never overtakes a RESULT or EVENT queued before it (spec 6.4).
            if not self._waiting(sub.key):
                self._report(sub, now)

    def _flush(self):
        blocked = []
        keep = []
        for o in self._outbox:
            if o[0] in blocked or not o[0][0].send(o[0][1], o[1], o[2]):
                blocked.append(o[0])
                keep.append(o)
        self._outbox = keep

    def _mirror(self):
        # Keep device_info's live attributes current (spec 5.1, registry).
        v = self.info.values
        v[reg.ATTR_DEVICE_INFO_UPTIME_S] = self._uptime_ms // 1000
        v[reg.ATTR_DEVICE_INFO_HEALTH] = self.health
        v[reg.ATTR_DEVICE_INFO_MODE] = self.mode
        v[reg.ATTR_DEVICE_INFO_RX_MALFORMED] = self.rx_malformed
        v[reg.ATTR_DEVICE_INFO_RX_DROPPED] = self.rx_dropped
        v[reg.ATTR_DEVICE_INFO_EVENTS_DROPPED] = self.events_dropped

    def _report(self, sub, now):
        v = self.caps[sub.slot].values.get(sub.attr)
        since = self.clock.ticks_diff(now, sub.at)
        if not sub.due:
            if since < sub.min_ms:
                return
            if since < sub.max_ms and not self._changed(sub, v):
                return
        data = self._enc.encode(msg.report(sub.slot, sub.attr, v))
        if sub.key[0].send(sub.key[1], data, False):
            sub.value = v
            sub.at = self.clock.ticks_ms()  # from the hand-over, not the poll's start (2.3)
            sub.due = False

    @staticmethod
    def _changed(sub, v):
        old = sub.value
        if v == old:
            return False
        th = sub.threshold
        if th and isinstance(v, int) and isinstance(old, int):
            return abs(v - old) >= th
        return True
