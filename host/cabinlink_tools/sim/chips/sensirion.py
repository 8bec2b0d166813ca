"""What the Sensirion chips share: CRC-8 words and a command/reply target with busy time.

Sensirion framing: every 16-bit word on the wire is followed by its CRC-8 (polynomial
0x31, init 0xFF, no reflection, no final XOR); CRC(BE EF) = 0x92, CRC(00 00) = 0x81.
"""
from __future__ import annotations

from .base import DEFAULT_CLOCK, Clock, I2CTarget


def crc8(data: bytes) -> int:
    """Sensirion CRC-8 of ``data`` (normally one 2-byte word)."""
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def pack_words(*words: int) -> bytes:
    """Words as sent on the wire: MSB, LSB, CRC for each."""
    out = bytearray()
    for w in words:
        if not 0 <= w <= 0xFFFF:
            raise ValueError(f"word {w} out of range")
        pair = w.to_bytes(2, "big")
        out += pair + bytes((crc8(pair),))
    return bytes(out)


def unpack_words(data: bytes) -> list[int] | None:
    """Words from MSB, LSB, CRC triples; None if the length is wrong or a CRC fails."""
    if len(data) % 3:
        return None
    words = []
    for i in range(0, len(data), 3):
        if crc8(data[i:i + 2]) != data[i + 2]:
            return None
        words.append(data[i] << 8 | data[i + 1])
    return words


class SensirionTarget(I2CTarget):
    """A command/reply chip: a command may make it busy (NACKs everything) for a while and
    may leave a reply, readable once the busy time is over and only once.

    Test hooks: :attr:`fail` (from :class:`I2CTarget`) and :meth:`corrupt_crc_next`.
    """

    def __init__(self, address: int, clock: Clock = DEFAULT_CLOCK) -> None:
        super().__init__(address)
        self.clock = clock
        self._busy_until = 0.0
        self._reply: bytes | None = None
        self._corrupt = 0

    def corrupt_crc_next(self, count: int = 1) -> None:
        """The next ``count`` replies go out with their first CRC byte inverted."""
        self._corrupt += count

    @property
    def busy(self) -> bool:
        return self.clock() < self._busy_until

    def _busy_for(self, seconds: float) -> None:
        self._busy_until = self.clock() + seconds

    def _set_reply(self, *words: int) -> None:
        self._reply = pack_words(*words)

    def on_read(self, n: int) -> bytes | None:
        if self.busy or self._reply is None:
            return None
        out, self._reply = bytearray(self._reply), None
        if self._corrupt > 0 and len(out) >= 3:
            self._corrupt -= 1
            out[2] ^= 0xFF
        return bytes(out)
