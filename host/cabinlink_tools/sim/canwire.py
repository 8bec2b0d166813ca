# Client of the simulated CAN bus's TCP wire protocol (the protocol is documented at the
# top of cabinlink_tools/sim/canbus.py). MicroPython subset: firmware processes running
# under the MicroPython unix port import it, and so does CPython (the python-can plugin).
# Only socket, struct and select; no allocation-free promises here (it is a sim tool).
#
#   w = CanWire("127.0.0.1", port, "mount")
#   w.send(0x18DA0080, b"\x02\x10\xC0", FLAG_EXT_ID)  # False while 16 frames are pending
#   w.poll()                                          # non-blocking: read what arrived
#   f = w.recv()                                      # (id, bytes, flags) or None
import socket
import struct
import select

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

FLAG_RTR = const(1)
FLAG_EXT_ID = const(2)
FLAG_ERROR = const(0x40)  # recv(): an error frame on the bus (only with errors=True)
FLAG_OWN = const(0x80)  # recv(): our own frame, looped back (only with receive_own=True)
STATE_STOPPED = const(0)
STATE_ACTIVE = const(1)
STATE_WARNING = const(2)
STATE_PASSIVE = const(3)
STATE_BUS_OFF = const(4)
TX_QUEUE_LEN = const(16)

_VERSION = const(1)
_HELLO = const(0x01)
_SEND = const(0x02)
_RESTART = const(0x03)
_QUERY = const(0x04)
_FILTERS = const(0x05)
_WELCOME = const(0x81)
_RX = const(0x82)
_TX_DONE = const(0x83)
_STATE = const(0x84)
_COUNTERS = const(0x85)
_ERROR = const(0x86)
_BUS_ERROR = const(0x87)
_CAUSE_RESTART = const(1)
_TX_OK = const(0)
_EAGAIN = const(11)
_EIO = const(5)


class CanWire:
    def __init__(self, host, port, name, receive_own=False, errors=False, rx_max=256,
                 timeout_ms=3000):
        # Connects, says HELLO and waits for WELCOME: once this returns, the node is on
        # the bus and hears every frame that starts from now on.
        self.name = name
        self.errors = errors
        self.rx_max = rx_max
        self.timeout_ms = timeout_ms
        self.node_id = None
        self.bitrate = 0
        self.tx_queue_len = TX_QUEUE_LEN
        self.pending = 0  # SENDs without TX_DONE
        self.tx_ok = 0
        self.tx_failed = 0
        self.rx_overruns = 0
        self.bus_errors = 0
        self.last_error = None
        self.closed = False
        self._state = STATE_ACTIVE
        self._tec = 0
        self._rec = 0
        self._counters = None
        self._restarted = False
        self._rxq = []
        self._in = bytearray()
        self._out = b""
        ai = socket.getaddrinfo(host, port)[0]
        s = socket.socket(ai[0], socket.SOCK_STREAM)
        try:
            s.connect(ai[-1])
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        self._sock = s
        self._poller = select.poll()
        self._poller.register(s, select.POLLIN)
        nm = name.encode() if isinstance(name, str) else bytes(name)
        self._msg(_HELLO, bytes([_VERSION, 1 if receive_own else 0]) + nm[:200])
        if not self._wait(self._welcomed):
            self.close()
            raise OSError(110, "no WELCOME from the simulated bus")

    # ---- public ---------------------------------------------------------------------

    def fileno(self):
        return self._sock.fileno()

    def send(self, can_id, data, flags=0):
        # Queue one frame. False while TX_QUEUE_LEN frames are pending; errors as
        # machine.CAN: OverflowError (> 8 bytes), ValueError (id), OSError (bus-off).
        n = len(data)
        if n > 8:
            raise OverflowError("data too long")
        if can_id < 0 or can_id >= ((1 << 29) if flags & FLAG_EXT_ID else (1 << 11)):
            raise ValueError("invalid id")
        if self.closed:
            raise OSError(_EIO, "connection closed")
        if self._state == STATE_BUS_OFF:
            raise OSError(_EIO, "bus off")
        if self.pending >= self.tx_queue_len:
            self.poll()
            if self.pending >= self.tx_queue_len:
                return False
        f = flags & (FLAG_RTR | FLAG_EXT_ID)
        body = struct.pack(">IBB", can_id, f, n)
        if not f & FLAG_RTR:
            body += bytes(data)
        self.pending += 1
        self._msg(_SEND, body)
        return True

    def set_filters(self, filters):
        # The controller's acceptance filters, applied by the bus: None hears every
        # frame, else (id, mask, flags) tuples as machine.CAN set_filters() takes them.
        if filters is None:
            self._msg(_FILTERS, b"\xff")
            return
        body = bytearray([len(filters)])
        for fid, mask, flags in filters:
            body += struct.pack(">IIB", fid, mask, flags & FLAG_EXT_ID)
        self._msg(_FILTERS, bytes(body))

    def poll(self):
        # Non-blocking: send what is buffered, read what arrived.
        if self.closed:
            return
        self._flush()
        while True:
            try:
                d = self._sock.recv(4096)
            except OSError as e:
                if e.args[0] == _EAGAIN:
                    break
                self._lost(str(e))
                return
            if not d:
                self._lost("connection closed by the bus")
                break
            self._in.extend(d)
            if len(d) < 4096:
                break
        self._parse()

    def wait(self, timeout_ms):
        # Block up to timeout_ms until something arrives, then poll().
        if not self.closed and not self._rxq:
            self._poller.poll(timeout_ms)
        self.poll()

    def recv(self):
        # -> (id, bytes, flags) or None. For RTR, bytes are zeros of length DLC.
        if not self._rxq:
            self.poll()
        if not self._rxq:
            return None
        f = self._rxq.pop(0)
        return (f[0], f[1], f[2])

    def recv_ts(self):
        # -> (id, bytes, flags, bus time in microseconds since the epoch) or None.
        if not self._rxq:
            self.poll()
        if not self._rxq:
            return None
        return self._rxq.pop(0)

    def any(self):
        return len(self._rxq)

    def state(self):
        self.poll()
        return self._state

    def tec_rec(self):
        return (self._tec, self._rec)

    def counters(self):
        # machine.CAN get_counters() order: [TEC, REC, n_warn, n_passive, n_busoff,
        # tx_pending, rx_pending, rx_overruns], then tx_frames, rx_frames; or None.
        self._counters = None
        self._msg(_QUERY, b"")
        if not self._wait(self._got_counters):
            return None
        return self._counters

    def restart(self):
        # Leave BUS_OFF: counters cleared, pending frames dropped (their TX_DONEs
        # arrive before the reply, so pending returns to 0).
        self._restarted = False
        self._msg(_RESTART, b"")
        return self._wait(self._got_restart)

    def close(self):
        if self._sock is not None:
            try:
                self._poller.unregister(self._sock)
            except Exception:
                pass
            self._sock.close()
            self._sock = None
        self.closed = True

    # ---- internals ------------------------------------------------------------------

    def _welcomed(self):
        return self.node_id is not None

    def _got_counters(self):
        return self._counters is not None

    def _got_restart(self):
        return self._restarted

    def _wait(self, cond):
        # Poll until cond() or timeout_ms (in 20 ms steps: no time module needed).
        n = self.timeout_ms // 20 + 1
        while not cond():
            if self.closed or n <= 0:
                return False
            n -= 1
            self._poller.poll(20)
            self.poll()
        return True

    def _lost(self, why):
        self.last_error = why
        self.close()

    def _msg(self, typ, body):
        self._out += struct.pack(">HB", len(body) + 1, typ) + body
        self._flush()

    def _flush(self):
        while self._out and not self.closed:
            try:
                n = self._sock.send(self._out)
            except OSError as e:
                if e.args[0] == _EAGAIN:
                    return
                self._lost(str(e))
                return
            if n is None or n <= 0:
                return
            self._out = self._out[n:]

    def _parse(self):
        b = self._in
        pos = 0
        end = len(b)
        while end - pos >= 3:
            ln = (b[pos] << 8) | b[pos + 1]
            if end - pos - 2 < ln:
                break
            self._handle(b[pos + 2], b, pos + 3, ln - 1)
            pos += 2 + ln
        if pos:
            self._in = b[pos:]

    def _handle(self, typ, b, p, n):
        if typ == _RX:
            ts, can_id, flags, dlc = struct.unpack_from(">QIBB", b, p)
            if flags & FLAG_RTR:
                data = bytes(dlc)
            else:
                data = bytes(b[p + 14 : p + 14 + dlc])
            self._queue((can_id, data, flags, ts))
        elif typ == _TX_DONE:
            st = b[p]
            if self.pending:
                self.pending -= 1
            if st == _TX_OK:
                self.tx_ok += 1
            else:
                self.tx_failed += 1
        elif typ == _STATE:
            self._state, self._tec, self._rec, cause = struct.unpack_from(">BHHB", b, p)
            if cause == _CAUSE_RESTART:
                self._restarted = True
        elif typ == _BUS_ERROR:
            self.bus_errors += 1
            if self.errors:
                ts = struct.unpack_from(">Q", b, p)[0]
                self._queue((0, b"", FLAG_ERROR, ts))
        elif typ == _WELCOME:
            _, self.bitrate, self.node_id, self.tx_queue_len, _ = struct.unpack_from(">BIHBQ", b, p)
        elif typ == _COUNTERS:
            self._counters = list(struct.unpack_from(">10I", b, p))
        elif typ == _ERROR:
            self.last_error = bytes(b[p + 1 : p + n]).decode()

    def _queue(self, item):
        if len(self._rxq) >= self.rx_max:
            self.rx_overruns += 1
        else:
            self._rxq.append(item)
