# Debounced push buttons on GPIO interrupts, classified into press, release,
# long press and double press (docs/accessories/controller.md "Buttons").
#
# The IRQ (both edges) stores the time of the edge, sets the button's flag and
# calls wake() (the app's ThreadSafeFlag) so poll() runs at once. Debouncing is
# leading-edge with a lock-out: a new level counts as soon as poll() reads it
# (well under a millisecond after the edge, so a spike that is gone by then
# is ignored), then the button ignores its contact for debounce_ms and reads
# it again at the end, so the bounce of that edge is never a second event and
# a change inside the lock-out is not lost. A press or release is dated at the
# first edge of its burst, so timings are measured from when the finger moved.
#
# Event order for one button (ids = the registry's buttons events):
#   short press            PRESS, RELEASE
#   held >= long_press_ms  PRESS, LONG_PRESS (once, while held), RELEASE
#   double press           PRESS, RELEASE, PRESS, DOUBLE_PRESS, RELEASE
#     (the second press starts <= double_press_ms after the first one did and
#      the first raised no LONG_PRESS; a third press starts a new pair)
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

PRESS = const(0)
RELEASE = const(1)
LONG_PRESS = const(2)
DOUBLE_PRESS = const(3)

_EDGES = const(3)  # Pin.IRQ_RISING | Pin.IRQ_FALLING
_RESYNC_MS = const(1000)  # re-read idle contacts this often (a lost IRQ heals)


class Buttons:
    # pins: input Pins with their pulls set by the caller; clock: ticks_ms
    # semantics; emit(event, index) is called from poll() only; wake(), if
    # given, is called from the IRQ (it must be IRQ-safe, e.g. a
    # ThreadSafeFlag's set) to have poll() run before the next tick.
    def __init__(self, pins, clock, emit, active_low=True, debounce_ms=20,
                 long_press_ms=800, double_press_ms=300, wake=None):
        n = len(pins)
        self.pins = pins
        self.clock = clock
        self.emit = emit
        self.debounce_ms = debounce_ms
        self.long_press_ms = long_press_ms
        self.double_press_ms = double_press_ms  # 0: no double-press detection
        self._idle = 1 if active_low else 0
        self.pressed = 0  # debounced state, bit n = button n down
        self._flag = bytearray(n)  # set by the IRQ: edges to look at
        self._first = [0] * n  # first edge of the burst being debounced
        self._last = [0] * n  # latest edge
        self._down_at = [0] * n  # when the current press began
        self._armed_at = [0] * n  # when the press that may start a double began
        self._changed_at = [clock.ticks_ms()] * n  # when the last change was accepted
        self._locked = 0  # bit n: in its lock-out after a change
        self.wake = wake
        self._long = 0  # bit n: LONG_PRESS raised (or not wanted) for this press
        self._armed = 0  # bit n: the last press may be the first of a double
        now = clock.ticks_ms()
        self._scan_at = now
        for i in range(n):
            if self._down(i):
                # Held at boot: that is the state; it raises no event.
                self.pressed |= 1 << i
                self._long |= 1 << i
            pins[i].irq(self._handler(i), _EDGES)

    def _handler(self, i):
        first = self._first
        last = self._last
        flag = self._flag
        ticks = self.clock.ticks_ms
        wake = self.wake

        def irq(pin):
            t = ticks()
            if not flag[i]:
                first[i] = t
            last[i] = t
            flag[i] = 1
            if wake is not None:
                wake()
        return irq

    def _down(self, i):
        return self.pins[i].value() != self._idle

    def poll(self, now):
        # Call every few ms from the app's task.
        diff = self.clock.ticks_diff
        flag = self._flag
        for i in range(len(flag)):
            bit = 1 << i
            if self._locked & bit and diff(now, self._changed_at[i]) >= self.debounce_ms:
                self._locked &= ~bit
            if flag[i] and not self._locked & bit:
                flag[i] = 0
                down = self._down(i)
                if down != bool(self.pressed & bit):
                    # Dated at the burst's first edge; a burst that began inside
                    # the lock-out ended in the level read now: its last edge.
                    t = self._first[i]
                    if diff(t, self._changed_at[i]) < self.debounce_ms:
                        t = self._last[i]
                    self._changed_at[i] = now
                    self._locked |= bit
                    self._change(i, bit, down, t)
            # While a burst waits (lock-out), the press or release it may
            # turn out to be happened at its first edge: measure up to there.
            end = self._first[i] if flag[i] else now
            if self._armed & bit and diff(end, self._armed_at[i]) > self.double_press_ms:
                self._armed &= ~bit  # the window is over (so wrapped ticks never reopen it)
            if self.pressed & bit and not self._long & bit:
                if diff(end, self._down_at[i]) >= self.long_press_ms:
                    self._long |= bit
                    self._armed &= ~bit  # a long press does not start a double
                    self.emit(LONG_PRESS, i)
        if diff(now, self._scan_at) >= _RESYNC_MS:
            self._scan_at = now
            for i in range(len(flag)):
                if not flag[i] and self._down(i) != bool(self.pressed & (1 << i)):
                    self._first[i] = self._last[i] = now
                    flag[i] = 1

    def _change(self, i, bit, down, t):
        diff = self.clock.ticks_diff
        if not down:
            if not self._long & bit and diff(t, self._down_at[i]) >= self.long_press_ms:
                self._long |= bit  # held long enough, seen late: still raised once
                self._armed &= ~bit
                self.emit(LONG_PRESS, i)
            self.pressed &= ~bit
            self.emit(RELEASE, i)
            return
        self.pressed |= bit
        self._down_at[i] = t
        self._long &= ~bit
        self.emit(PRESS, i)
        dp = self.double_press_ms
        if dp and self._armed & bit and diff(t, self._armed_at[i]) <= dp:
            self._armed &= ~bit
            self.emit(DOUBLE_PRESS, i)
        else:
            self._armed |= bit
            self._armed_at[i] = t
