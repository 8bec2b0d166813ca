# Mechanical quadrature rotary encoder (EC11 type) on the IRQs of A and B
# (docs/accessories/controller.md "Rotary encoder").
#
# The IRQ of a contact reads that contact only and stores the new (A, B)
# state with a timestamp in a ring; poll() decodes. Reading just the pin that
# moved keeps the order of the edges even when the handler runs late (a soft
# IRQ waits for the VM): by then the other contact may have moved too, and
# its own IRQ reports that. A Gray step to a neighbouring state counts +1
# (clockwise: A changes before B) or -1; a jump over a state (both contacts
# changed) is rejected. Bounce on one contact is a +1/-1 pair and cancels.
# After 30 ms without edges both contacts are read once, so a lost IRQ heals.
# Detents are counted when the knob is back in a rest state (the one it sat
# in at start, every steps_per_detent Gray steps): the steps gathered since
# the last rest state, rounded to whole detents, so a rejected jump cannot
# shift the phase.
#
# Acceleration (when on): a detent that follows the previous one in the same
# direction by dt < accel_ms counts 1 + (accel_max - 1) * (accel_ms - dt) //
# accel_ms steps. Deltas are coalesced: the first after a pause goes out at
# once, then at most one per window_ms; a change of direction flushes.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from array import array

_RING = const(64)  # samples between two polls; a power of two
_MASK = const(63)
_WRAP = const(0xFFFF)
_EDGES = const(3)  # Pin.IRQ_RISING | Pin.IRQ_FALLING
_QUIET_MS = const(30)
_MAX_DELTA = const(1000)  # registry range of rotary_encoder.delta
# (A << 1 | B) -> position in the Gray cycle (1,1) (0,1) (0,0) (1,0)
_GRAY = b"\x02\x01\x03\x00"


class Encoder:
    # pin_a, pin_b: input Pins with pulls set by the caller; emit(steps) is
    # called from poll() only.
    def __init__(self, pin_a, pin_b, clock, emit, steps_per_detent=4, reverse=False,
                 window_ms=50, accel_ms=100, accel_max=5):
        if steps_per_detent not in (1, 2, 4):
            raise ValueError("steps_per_detent must be 1, 2 or 4")
        self.a = pin_a
        self.b = pin_b
        self.clock = clock
        self.emit = emit
        self.spd = steps_per_detent
        self.reverse = reverse
        self.window_ms = window_ms
        self.acceleration = False
        self.accel_ms = accel_ms
        self.accel_max = accel_max
        self.rejected = 0  # jumps over a state (both contacts changed)
        self.overruns = 0  # samples lost because poll() came too late
        self._s = bytearray(_RING)
        self._t = array("i", [0] * _RING)
        self._w = 0  # written by the IRQ
        self._r = 0
        self._m = self._sample()  # the contacts as the IRQs last saw them
        self._g = _GRAY[self._m]
        self._rest = self._g
        self._seen_at = 0
        self._check = False  # read both contacts once the knob is quiet
        self._acc = 0  # Gray steps since the last rest state
        self._det_at = 0
        self._det_dir = 0  # direction of the last detent, 0: none yet
        self._pending = 0
        self._sent_at = 0
        self._sent = False  # something went out within the window
        pin_a.irq(self._irq_a, _EDGES)
        pin_b.irq(self._irq_b, _EDGES)

    def _sample(self):
        return (self.a.value() << 1) | self.b.value()

    def _irq_a(self, pin):
        m = (self._m & 1) | (pin.value() << 1)
        self._m = m
        w = self._w
        self._s[w & _MASK] = m
        self._t[w & _MASK] = self.clock.ticks_ms()
        self._w = (w + 1) & _WRAP

    def _irq_b(self, pin):
        m = (self._m & 2) | pin.value()
        self._m = m
        w = self._w
        self._s[w & _MASK] = m
        self._t[w & _MASK] = self.clock.ticks_ms()
        self._w = (w + 1) & _WRAP

    def poll(self, now):
        # Call every few ms from the app's task.
        w = self._w
        n = (w - self._r) & _WRAP
        if n > _RING:
            self.overruns += 1
            self._r = (w - _RING) & _WRAP
            n = _RING
        diff = self.clock.ticks_diff
        if n:
            self._check = True
        while n:
            i = self._r & _MASK
            self._seen_at = self._t[i]
            self._step(self._s[i], self._seen_at)
            self._r = (self._r + 1) & _WRAP
            n -= 1
        if self._check and diff(now, self._seen_at) >= _QUIET_MS:
            self._check = False
            s = self._sample()
            if s != self._m:
                self._m = s  # an edge was lost: take the contacts as they are
                self._step(s, now)
        if self._sent and diff(now, self._sent_at) >= self.window_ms:
            self._sent = False
        if self._pending and not self._sent:
            self._flush(now)

    def _step(self, s, t):
        g = _GRAY[s]
        d = (g - self._g) & 3
        if d == 0:
            return
        self._g = g
        if d == 2:
            self.rejected += 1
            return
        self._acc += 1 if d == 1 else -1
        spd = self.spd
        if (g - self._rest) & (spd - 1):
            return
        acc = self._acc
        self._acc = 0
        half = spd >> 1
        n = (acc + half) // spd if acc >= 0 else -((half - acc) // spd)
        if self.reverse:
            n = -n
        while n:
            s = 1 if n > 0 else -1
            self._detent(s, t)
            n -= s

    def _detent(self, s, t):
        k = 1
        if self.acceleration and self._det_dir == s:
            dt = self.clock.ticks_diff(t, self._det_at)
            if 0 <= dt < self.accel_ms:  # (negative: ticks wrapped, days ago)
                k = 1 + (self.accel_max - 1) * (self.accel_ms - dt) // self.accel_ms
        self._det_at = t
        self._det_dir = s
        if self._pending and (self._pending > 0) != (s > 0):
            self._flush(t)  # the knob turned back: keep the two directions apart
        self._pending += s * k

    def _flush(self, now):
        p = self._pending
        v = _MAX_DELTA if p > _MAX_DELTA else (-_MAX_DELTA if p < -_MAX_DELTA else p)
        self._pending = p - v
        self._sent_at = now
        self._sent = True
        self.emit(v)
