# CabinLink CBOR subset (RFC 8949), spec section 4.
# Encodes: int (-2**64..2**64-1), bool, None, bytes, str, list/tuple, dict.
# Deterministic: shortest integer/length heads, definite lengths, map keys sorted
# by their encoded bytes. Decodes the same plus floats (16/32/64-bit) so that an
# unknown field holding one never breaks a message. Tags, indefinite lengths,
# undefined and simple values are rejected. Every decoding failure raises
# ProtocolError and nothing else; lengths are checked against the input before
# anything is allocated, so a hostile length cannot exhaust memory.
import struct

try:
    from micropython import const
except ImportError:  # CPython (host tools)
    def const(x):
        return x


_MAX_DEPTH = const(8)
# Type tuples built once: on MicroPython a literal (a, b) in isinstance() is
# built anew, i.e. allocated, on every call.
_BUFFERS = (bytes, bytearray, memoryview)
_SEQUENCES = (list, tuple)
_KEYS = (int, str)


class ProtocolError(ValueError):
    pass


class Encoder:
    # Encodes into one preallocated buffer; encode() returns a memoryview that is
    # valid until the next call. Overflow raises ProtocolError.
    def __init__(self, size=512):
        self.buf = bytearray(size)
        self._mv = memoryview(self.buf)
        self.n = 0

    def encode(self, obj):
        self.n = 0
        self._item(obj, 0)
        return self._mv[: self.n]

    def _put(self, b):
        n = self.n
        end = n + len(b)
        if end > len(self.buf):
            raise ProtocolError("message too long")
        self.buf[n:end] = b
        self.n = end

    def _byte(self, v):
        n = self.n
        if n >= len(self.buf):
            raise ProtocolError("message too long")
        self.buf[n] = v
        self.n = n + 1

    def _head(self, major, v):
        # Major type + argument, shortest form, written in place (no allocation).
        m = major << 5
        if v < 24:
            self._byte(m | v)
            return
        if v < 0x100:
            ai, n = 24, 1
        elif v < 0x10000:
            ai, n = 25, 2
        elif v < 0x100000000:
            ai, n = 26, 4
        elif v < 0x10000000000000000:
            ai, n = 27, 8
        else:
            raise ProtocolError("int out of range")
        i = self.n
        if i + 1 + n > len(self.buf):
            raise ProtocolError("message too long")
        b = self.buf
        b[i] = m | ai
        k = i + n
        while k > i:
            b[k] = v & 0xFF
            v >>= 8
            k -= 1
        self.n = i + 1 + n

    def _item(self, obj, depth):
        if obj is True:
            self._byte(0xF5)
        elif obj is False:
            self._byte(0xF4)
        elif obj is None:
            self._byte(0xF6)
        elif isinstance(obj, int):
            if obj >= 0:
                self._head(0, obj)
            else:
                self._head(1, -1 - obj)
        elif isinstance(obj, str):
            b = obj.encode()
            self._head(3, len(b))
            self._put(b)
        elif isinstance(obj, _BUFFERS):
            self._head(2, len(obj))
            self._put(obj)
        elif isinstance(obj, _SEQUENCES):
            if depth >= _MAX_DEPTH:
                raise ProtocolError("nesting too deep")
            self._head(4, len(obj))
            for x in obj:
                self._item(x, depth + 1)
        elif isinstance(obj, dict):
            if depth >= _MAX_DEPTH:
                raise ProtocolError("nesting too deep")
            for k in obj:
                if isinstance(k, bool) or not isinstance(k, _KEYS):
                    raise ProtocolError("map keys must be int or str")
            self._head(5, len(obj))
            if len(obj) > 1:
                # Deterministic order: sort by encoded key bytes (RFC 8949 4.2.1).
                ks = []
                for k in obj:
                    start = self.n
                    self._item(k, depth + 1)
                    ks.append((bytes(self._mv[start : self.n]), k))
                    self.n = start
                ks.sort()
                for kb, k in ks:
                    self._put(kb)
                    self._item(obj[k], depth + 1)
            else:
                for k in obj:
                    self._item(k, depth + 1)
                    self._item(obj[k], depth + 1)
        else:
            raise ProtocolError("cannot encode type")


def encode(obj):
    # Convenience form for code that is not on a hot path.
    e = Encoder(64)
    while True:
        try:
            return bytes(e.encode(obj))
        except ProtocolError as x:
            if str(x) != "message too long" or len(e.buf) >= 65536:
                raise
            e = Encoder(len(e.buf) * 4)


def _half(h):
    # IEEE 754 binary16 -> float (RFC 8949 Appendix D).
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        v = mant * 2.0**-24
    elif exp != 31:
        v = (mant + 1024) * 2.0 ** (exp - 25)
    elif mant == 0:
        v = float("inf")
    else:
        v = float("nan")
    return -v if h & 0x8000 else v


def _dec(b, p, end, depth):
    # Decode one item at p[0] (a one-element list: the read position, shared
    # so no (value, position) tuple is allocated per item) and advance p[0].
    i = p[0]
    if i >= end:
        raise ProtocolError("truncated")
    ib = b[i]
    i += 1
    major = ib >> 5
    ai = ib & 0x1F
    if major == 7:
        p[0] = i
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        n = (0, 2, 4, 8)[ai - 24] if 25 <= ai <= 27 else 0
        if n == 0:
            raise ProtocolError("unsupported simple value")
        if i + n > end:
            raise ProtocolError("truncated")
        p[0] = i + n
        if n == 2:
            return _half((b[i] << 8) | b[i + 1])
        return struct.unpack(">f" if n == 4 else ">d", bytes(b[i : i + n]))[0]
    if ai < 24:
        v = ai
    elif ai < 28:
        n = 1 << (ai - 24)
        if i + n > end:
            raise ProtocolError("truncated")
        v = 0
        for k in range(n):
            v = (v << 8) | b[i + k]
        i += n
    else:
        raise ProtocolError("indefinite or reserved length")
    p[0] = i
    if major == 0:
        return v
    if major == 1:
        return -1 - v
    if major == 2 or major == 3:
        if v > end - i:
            raise ProtocolError("truncated")
        s = bytes(b[i : i + v])
        p[0] = i + v
        if major == 3:
            try:
                s = s.decode()
            except Exception:
                raise ProtocolError("bad utf-8")
        return s
    if depth >= _MAX_DEPTH:
        raise ProtocolError("nesting too deep")
    if major == 4:
        # Each item takes at least one byte: bounds the count by the input.
        if v > end - i:
            raise ProtocolError("truncated")
        out = []
        for _ in range(v):
            out.append(_dec(b, p, end, depth + 1))
        return out
    if major == 5:
        if 2 * v > end - i:
            raise ProtocolError("truncated")
        out = {}
        for _ in range(v):
            k = _dec(b, p, end, depth + 1)
            if isinstance(k, bool) or not isinstance(k, _KEYS):
                raise ProtocolError("bad map key")
            if k in out:
                raise ProtocolError("duplicate map key")
            out[k] = _dec(b, p, end, depth + 1)
        return out
    raise ProtocolError("tags not supported")


def decode(b):
    # Decode exactly one item filling all of b (bytes, bytearray or memoryview).
    end = len(b)
    p = [0]
    try:
        v = _dec(b, p, end, 0)
    except ProtocolError:
        raise
    except Exception:
        # RecursionError, MemoryError on a tiny heap, ...: still only our error.
        raise ProtocolError("undecodable")
    if p[0] != end:
        raise ProtocolError("trailing bytes")
    return v
