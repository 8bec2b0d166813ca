"""Byte-level checks of what a node sends (spec 4.2), and raw CBOR builders for what the
suite sends on purpose (non-shortest heads, floats, tags, ... for 4.3 and 4.4).

The core codec (:mod:`cabinlink.codec`) is lenient on input by design (4.3) and always
canonical on output, so it can neither tell whether *another* node's bytes were canonical
nor produce the odd encodings the suite needs. Both are done here, on the bytes.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_DEPTH = 8  # spec 4.2: no nesting of arrays and maps more than 8 deep

SHORTEST = "M-4.2-1"
DEFINITE = "M-4.2-2"
SORTED = "M-4.2-3"
KEYS = "M-4.2-4"
ITEMS = "M-4.2-5"
DEPTH = "M-4.2-6"
UNDECODABLE = "undecodable"


@dataclass(frozen=True)
class Violation:
    """One departure from the deterministic encoding: ``rule`` is the MUST id (or
    ``undecodable`` when the bytes are not one well-formed CBOR item at all), ``at`` the
    byte offset, ``what`` a readable description."""

    rule: str
    at: int
    what: str


class _Stop(Exception):
    pass


def check_encoding(data: bytes) -> list[Violation]:
    """Every violation of spec 4.2 in ``data`` (one encoded message). An empty list means
    the bytes are exactly the core deterministic encoding of the allowed items."""
    out: list[Violation] = []
    b = bytes(data)

    def head(i: int) -> tuple[int, int, int | None, int]:
        # -> (major, additional info, argument or None for indefinite, next offset)
        if i >= len(b):
            out.append(Violation(UNDECODABLE, i, "input ends inside an item"))
            raise _Stop
        ib = b[i]
        major, ai = ib >> 5, ib & 0x1F
        if ai < 24:
            return major, ai, ai, i + 1
        if ai <= 27:
            n = 1 << (ai - 24)
            if i + 1 + n > len(b):
                out.append(Violation(UNDECODABLE, i, "input ends inside a head"))
                raise _Stop
            v = int.from_bytes(b[i + 1:i + 1 + n], "big")
            if major != 7:
                limit = (24, 256, 65536, 1 << 32)[ai - 24]
                if v < limit:
                    out.append(Violation(SHORTEST, i, f"{v} encoded in {n} byte(s) after the head "
                                                      f"byte {ib:02X}: not the shortest form"))
            return major, ai, v, i + 1 + n
        if ai == 31:
            return major, ai, None, i + 1
        out.append(Violation(UNDECODABLE, i, f"reserved additional information {ai} in {ib:02X}"))
        raise _Stop

    def item(i: int, depth: int) -> int:
        major, ai, v, j = head(i)
        if major in (0, 1):
            if v is None:
                out.append(Violation(UNDECODABLE, i, "indefinite length on an integer"))
                raise _Stop
            return j
        if major in (2, 3):
            if v is None:
                out.append(Violation(DEFINITE, i, "indefinite-length string"))
                while j < len(b) and b[j] != 0xFF:  # skip its chunks
                    j = item(j, depth)
                return j + 1
            if j + v > len(b):
                out.append(Violation(UNDECODABLE, i, f"string of {v} bytes, {len(b) - j} left"))
                raise _Stop
            if major == 3:
                try:
                    b[j:j + v].decode("utf-8")
                except UnicodeDecodeError:
                    out.append(Violation(UNDECODABLE, i, "text string that is not valid UTF-8"))
            return j + v
        if major in (4, 5):
            if depth >= MAX_DEPTH:
                out.append(Violation(DEPTH, i, f"array or map nested {depth + 1} deep"))
            pairs = 2 if major == 5 else 1
            keys: list[bytes] = []
            if v is None:
                out.append(Violation(DEFINITE, i, "indefinite-length " + ("map" if major == 5 else "array")))
            n = 0
            while True:
                if v is None:
                    if j < len(b) and b[j] == 0xFF:
                        return j + 1
                elif n >= v:
                    break
                for k in range(pairs):
                    start = j
                    j = item(j, depth + 1)
                    if major == 5 and k == 0:
                        kb = b[start:j]
                        if kb[0] >> 5 not in (0, 1, 3):
                            out.append(Violation(KEYS, start, f"map key {kb.hex(' ').upper()} is not "
                                                              "an integer or a text string"))
                        if keys and kb <= keys[-1]:
                            what = "repeated" if kb in keys else "out of order"
                            out.append(Violation(SORTED, start, f"map key {kb.hex(' ').upper()} {what}"))
                        keys.append(kb)
                n += 1
            return j
        if major == 6:
            out.append(Violation(ITEMS, i, f"tag {v}"))
            return item(j, depth)
        # major 7
        if ai in (20, 21, 22):
            return j
        if ai in (25, 26, 27):
            out.append(Violation(ITEMS, i, "floating-point number"))
            return j
        if ai == 31:
            out.append(Violation(UNDECODABLE, i, "break outside an indefinite item"))
            raise _Stop
        out.append(Violation(ITEMS, i, "undefined" if ai == 23 else f"simple value {v}"))
        return j

    try:
        end = item(0, 0)
        if end != len(b):
            out.append(Violation(UNDECODABLE, end, f"{len(b) - end} byte(s) after the first item"))
    except _Stop:
        pass
    except RecursionError:
        out.append(Violation(DEPTH, 0, "nesting beyond any limit"))
    return out


# --- raw builders for the suite's own odd inputs ---------------------------------------------
def head(major: int, value: int, size: int | None = None) -> bytes:
    """A CBOR head; ``size`` forces 0/1/2/4/8 argument bytes (0: value in the initial
    byte) so that non-shortest forms can be built on purpose."""
    if size is None:
        size = 0 if value < 24 else 1 if value < 256 else 2 if value < 65536 else 4 if value < 1 << 32 else 8
    if size == 0:
        return bytes([(major << 5) | value])
    ai = {1: 24, 2: 25, 4: 26, 8: 27}[size]
    return bytes([(major << 5) | ai]) + value.to_bytes(size, "big")


def uint(v: int, size: int | None = None) -> bytes:
    return head(0, v, size)


def nint(v: int, size: int | None = None) -> bytes:
    """A negative integer ``v`` (< 0)."""
    return head(1, -1 - v, size)


def array(*items: bytes, size: int | None = None) -> bytes:
    return head(4, len(items), size) + b"".join(items)


def text(s: str) -> bytes:
    raw = s.encode()
    return head(3, len(raw)) + raw


def bstr(raw: bytes) -> bytes:
    return head(2, len(raw)) + raw


def cmap(*pairs: tuple[bytes, bytes]) -> bytes:
    """A map with the pairs in the order given (so unsorted maps can be built)."""
    return head(5, len(pairs)) + b"".join(k + v for k, v in pairs)


def half(v: float) -> bytes:
    return b"\xf9" + struct.pack(">e", v)


def single(v: float) -> bytes:
    return b"\xfa" + struct.pack(">f", v)


def double(v: float) -> bytes:
    return b"\xfb" + struct.pack(">d", v)


class Raw(bytes):
    """Bytes that :func:`encode_any` inserts as they are (an item encoded by hand)."""


def encode_any(obj: object) -> bytes:
    """Deterministic encoding (4.2) of the suite's own messages, plus what the core codec
    refuses to produce: floats (as doubles, or use :class:`Raw` with :func:`half` etc.) and
    pre-encoded items (:class:`Raw`)."""
    if isinstance(obj, Raw):
        return bytes(obj)
    if obj is False:
        return b"\xf4"
    if obj is True:
        return b"\xf5"
    if obj is None:
        return b"\xf6"
    if isinstance(obj, int):
        return uint(obj) if obj >= 0 else nint(obj)
    if isinstance(obj, float):
        return double(obj)
    if isinstance(obj, str):
        return text(obj)
    if isinstance(obj, (bytes, bytearray)):
        return bstr(bytes(obj))
    if isinstance(obj, (list, tuple)):
        return head(4, len(obj)) + b"".join(encode_any(x) for x in obj)
    if isinstance(obj, dict):
        pairs = sorted((encode_any(k), encode_any(v)) for k, v in obj.items())
        return head(5, len(pairs)) + b"".join(k + v for k, v in pairs)
    raise TypeError(f"cannot encode {type(obj).__name__}")
