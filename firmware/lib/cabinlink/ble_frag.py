# Message fragmentation over GATT writes and notifications (spec 8.4).
# Each fragment: [header][len_hi len_lo if START][payload...]
#   header bit 7 START, bit 6 END, bits 5..0 sequence number; the sequence runs
#   on across messages, per direction and per connection, so a lost fragment
#   is always noticed.
try:
    from micropython import const
except ImportError:  # CPython (host tools)
    def const(x):
        return x

START = const(0x80)
END = const(0x40)
_SEQ = const(0x3F)
MAX_MESSAGE = const(4095)
MIN_FRAGMENT = const(20)  # ATT_MTU 23 - 3: the payload of the smallest MTU


class Sender:
    # Cuts one message at a time into fragments of at most `size` bytes
    # (ATT_MTU - 3), into a buffer of its own: next() returns a memoryview
    # valid until the following call, or None when the message is done.
    def __init__(self, max_fragment=244):
        self.buf = bytearray(max_fragment)
        self._mv = memoryview(self.buf)
        self.seq = 0
        self._data = None
        self._pos = 0

    @property
    def busy(self):
        return self._data is not None

    def start(self, data):
        # False if a message is in flight or the size is outside 1..4095.
        if self._data is not None or not 0 < len(data) <= MAX_MESSAGE:
            return False
        self._data = bytes(data)
        self._pos = 0
        return True

    def next(self, size):
        d = self._data
        if d is None:
            return None
        size = max(MIN_FRAGMENT, min(size, len(self.buf)))
        b = self.buf
        if self._pos == 0:
            n = len(d)
            b[1] = n >> 8
            b[2] = n & 0xFF
            hdr, o = START, 3
        else:
            hdr, o = 0, 1
        take = min(size - o, len(d) - self._pos)
        b[o : o + take] = d[self._pos : self._pos + take]
        self._pos += take
        if self._pos >= len(d):
            hdr |= END
            self._data = None
        b[0] = hdr | self.seq
        self.seq = (self.seq + 1) & _SEQ
        return self._mv[: o + take]

    def cancel(self):
        self._data = None


class Reassembler:
    # feed() takes fragments in arrival order and calls on_message(memoryview)
    # for each complete message. Bad fragments are dropped and counted; it
    # never raises and never holds more than max_len bytes.
    def __init__(self, on_message, max_len=MAX_MESSAGE):
        self.on_message = on_message
        self.buf = bytearray(max_len)
        self._mv = memoryview(self.buf)
        self.expect = -1  # next sequence number; -1 until the first fragment
        self._len = -1  # length of the message in progress, -1 when idle
        self._pos = 0
        self.ok = 0
        self.dropped = 0  # fragments thrown away, and messages abandoned
        self.gaps = 0  # sequence gaps seen, with or without a message in progress

    def reset(self):
        # New connection: sequence numbers start over.
        self.expect = -1
        self._len = -1

    def feed(self, frag):
        n = len(frag)
        if n == 0:
            self.dropped += 1
            return
        h = frag[0]
        seq = h & _SEQ
        if self.expect >= 0 and seq != self.expect:
            # A fragment, maybe a whole message, went missing (spec 8.4).
            self.gaps += 1
            if self._len >= 0:
                self._abandon()
        self.expect = (seq + 1) & _SEQ
        if h & START:
            if self._len >= 0:
                self._abandon()
            if n < 3:
                self.dropped += 1
                return
            total = (frag[1] << 8) | frag[2]
            if not 0 < total <= len(self.buf):
                self.dropped += 1
                return
            self._len = total
            self._pos = 0
            o = 3
        elif self._len < 0:
            self.dropped += 1  # continuation without a start
            return
        else:
            o = 1
        take = n - o
        if self._pos + take > self._len or (h & END) and self._pos + take != self._len:
            self._abandon()
            return
        self.buf[self._pos : self._pos + take] = frag[o:]
        self._pos += take
        if self._pos == self._len:
            if not h & END:
                self._abandon()
                return
            self._len = -1
            self.ok += 1
            self.on_message(self._mv[: self._pos])

    def _abandon(self):
        self._len = -1
        self.dropped += 1
