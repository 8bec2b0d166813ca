# The controller's input/output drivers (firmware/drivers/buttons.py, encoder.py,
# haptic.py) with fake pins and a ManualClock: the exact event sequences and
# timings of docs/accessories/controller.md. Dual runtime: pytest on CPython and
# tests/mp/run.py on the MicroPython unix port.
import sys

if "firmware" not in sys.path:
    sys.path.append("firmware")

from cabinlink import registry as reg
from cabinlink.clock import ManualClock
from drivers import buttons as bt
from drivers.buttons import Buttons
from drivers.encoder import Encoder
from drivers.haptic import Haptic
from mpcompat import raises

P, R, L, D = bt.PRESS, bt.RELEASE, bt.LONG_PRESS, bt.DOUBLE_PRESS


class FakePin:
    # An input with a pull-up: set() moves the level and runs the IRQ handler
    # (quiet=True: the edge is lost, as when an IRQ is dropped).
    def __init__(self, level=1):
        self.level = level
        self.handler = None
        self.trigger = 0

    def value(self):
        return self.level

    def irq(self, handler=None, trigger=3):
        self.handler = handler
        self.trigger = trigger

    def set(self, level, quiet=False):
        if level != self.level:
            self.level = level
            if not quiet and self.handler is not None:
                self.handler(self)


class FakePWM:
    def __init__(self):
        self.duty = None
        self.history = []

    def duty_u16(self, d):
        self.duty = d
        self.history.append(d)


class Rig:
    # n buttons (active low) polled every `tick` ms; events as (t, event, index)
    # with t relative to the start.
    def __init__(self, n=1, tick=5, **kw):
        self.clock = ManualClock()
        self.t0 = self.clock.ticks_ms()
        self.pins = [FakePin() for _ in range(n)]
        self.events = []
        self.tick = tick
        self.b = Buttons(self.pins, self.clock, self._emit, **kw)

    def now(self):
        return self.clock.ticks_diff(self.clock.ticks_ms(), self.t0)

    def _emit(self, ev, i):
        self.events.append((self.now(), ev, i))

    def run(self, ms):
        # advance ms, polling every tick
        end = self.now() + ms
        while self.now() < end:
            self.clock.advance(min(self.tick, end - self.now()))
            self.b.poll(self.clock.ticks_ms())

    def at(self, t):
        self.run(t - self.now())

    def press(self, i=0):
        self.pins[i].set(0)

    def release(self, i=0):
        self.pins[i].set(1)

    def kinds(self):
        return [(e, i) for _, e, i in self.events]


def test_event_ids_are_the_registry_ones():
    assert (P, R, L, D) == (reg.EV_BUTTONS_PRESS, reg.EV_BUTTONS_RELEASE,
                            reg.EV_BUTTONS_LONG_PRESS, reg.EV_BUTTONS_DOUBLE_PRESS)


def test_press_and_release_count_at_the_first_poll_after_the_edge():
    r = Rig()
    assert r.pins[0].trigger == 3  # both edges
    r.press()
    assert r.events == []  # the IRQ only records; poll() decides
    r.run(5)
    assert r.events == [(5, P, 0)] and r.b.pressed == 1
    r.at(100)
    r.release()
    r.at(105)
    assert r.kinds() == [(P, 0), (R, 0)] and r.b.pressed == 0
    assert r.events[1][0] == 105


def test_the_irq_wakes_the_task():
    woken = []
    r = Rig(wake=lambda: woken.append(1))
    r.press()
    assert woken == [1]
    r.b.poll(r.clock.ticks_ms())  # the woken task polls at once, no tick needed
    assert r.kinds() == [(P, 0)]


def test_bouncing_contact_gives_one_press_and_one_release():
    r = Rig(tick=1)
    for t, level in ((0, 0), (1, 1), (3, 0), (4, 1), (9, 0)):  # bounce for 9 ms
        r.at(t)
        r.pins[0].set(level)
    r.at(200)
    for t, level in ((200, 1), (202, 0), (203, 1), (210, 0), (214, 1)):
        r.at(t)
        r.pins[0].set(level)
    r.at(400)
    assert r.kinds() == [(P, 0), (R, 0)]
    assert r.events[0][0] == 1 and r.events[1][0] == 201  # at once, not after the bounce


def test_a_spike_gone_before_the_poll_is_ignored():
    r = Rig()
    r.press()
    r.release()  # both edges before the task ran: EMI, not a finger
    r.at(300)
    assert r.events == [] and r.b.pressed == 0


def test_a_tap_inside_the_lock_out_is_not_lost_and_keeps_its_time():
    r = Rig(tick=1, debounce_ms=20)
    r.press()
    r.at(8)
    r.release()  # a short tap: released inside the press's lock-out
    r.at(19)
    assert r.kinds() == [(P, 0)]
    r.at(22)  # the lock-out ended at 21: the contact is read again
    assert r.kinds() == [(P, 0), (R, 0)] and r.b.pressed == 0
    assert r.b._down_at[0] == r.t0  # the press dated at its edge


def test_the_lock_out_ignores_the_contact_then_reads_it():
    r = Rig(tick=1, debounce_ms=20)
    r.press()
    r.at(1)
    r.release()
    r.at(2)
    r.press()  # bounce inside the lock-out ends pressed
    r.at(100)
    assert r.kinds() == [(P, 0)] and r.b.pressed == 1


def test_long_press_fires_once_while_held():
    r = Rig(long_press_ms=800)
    r.press()
    r.at(795)
    assert r.kinds() == [(P, 0)]
    r.at(805)  # 800 ms from the first edge, not from the settled contact
    assert r.kinds() == [(P, 0), (L, 0)]
    r.at(3000)
    r.release()
    r.at(3100)
    assert r.kinds() == [(P, 0), (L, 0), (R, 0)]


def test_release_just_before_long_press_ms_is_not_long():
    # Released 10 ms before long_press_ms: a short press.
    r = Rig(long_press_ms=800)
    r.press()
    r.at(790)
    r.release()
    r.at(1000)
    assert r.kinds() == [(P, 0), (R, 0)]


def test_long_press_seen_late_is_still_raised_before_the_release():
    # The task was held up: the contact opened at 850, the first poll since is at 900.
    r = Rig(long_press_ms=800, tick=100)
    r.press()
    r.at(700)
    r.clock.advance(150)
    r.release()
    r.run(250)
    assert r.kinds() == [(P, 0), (L, 0), (R, 0)]


def test_double_press_sequence():
    r = Rig(double_press_ms=300)
    r.press()
    r.at(80)
    r.release()
    r.at(200)
    r.press()
    r.at(280)
    r.release()
    r.at(600)
    assert r.kinds() == [(P, 0), (R, 0), (P, 0), (D, 0), (R, 0)]


def test_two_presses_further_apart_are_two_presses():
    r = Rig(double_press_ms=300)
    r.press()
    r.at(80)
    r.release()
    r.at(301)  # press to press 301 ms > 300
    r.press()
    r.at(400)
    r.release()
    r.at(700)
    assert r.kinds() == [(P, 0), (R, 0), (P, 0), (R, 0)]


def test_double_press_window_is_inclusive_and_measured_press_to_press():
    r = Rig(double_press_ms=300)
    r.press()
    r.at(250)  # a slow first press: 250 ms held, 50 ms gap
    r.release()
    r.at(300)
    r.press()
    r.at(400)
    r.release()
    r.at(700)
    assert r.kinds() == [(P, 0), (R, 0), (P, 0), (D, 0), (R, 0)]


def test_triple_press_is_one_double_then_a_new_first_press():
    r = Rig(double_press_ms=300)
    for t in (0, 150, 300):
        r.at(t)
        r.press()
        r.at(t + 60)
        r.release()
    r.at(800)
    assert r.kinds() == [(P, 0), (R, 0), (P, 0), (D, 0), (R, 0), (P, 0), (R, 0)]


def test_a_press_one_tick_period_later_is_no_double_press():
    # ticks_ms wraps every 2**30 ms: the old press must not look 0 ms old then.
    r = Rig(double_press_ms=300)
    r.press()
    r.at(80)
    r.release()
    for _ in range(1 << 10):  # 2**30 ms in steps of 2**20 ms, polled after each
        r.clock.advance(1 << 20)
        r.b.poll(r.clock.ticks_ms())
    assert r.now() == 80  # the clock reads as 80 ms after the first press again
    r.press()
    r.run(100)
    assert r.kinds() == [(P, 0), (R, 0), (P, 0)]


def test_double_press_disabled_with_zero():
    r = Rig(double_press_ms=0)
    for t in (0, 150):
        r.at(t)
        r.press()
        r.at(t + 60)
        r.release()
    r.at(500)
    assert D not in [e for e, _ in r.kinds()]


def test_long_press_does_not_start_a_double_press():
    r = Rig(long_press_ms=200, double_press_ms=1000)
    r.press()
    r.at(300)
    r.release()
    r.at(400)
    r.press()
    r.at(450)
    r.release()
    r.at(700)
    assert r.kinds() == [(P, 0), (L, 0), (R, 0), (P, 0), (R, 0)]


def test_buttons_are_independent_and_the_bitmap_follows():
    r = Rig(n=3)
    r.press(0)
    r.at(10)
    r.press(2)
    r.at(50)
    assert r.b.pressed == 0b101
    r.release(0)
    r.at(100)
    assert r.b.pressed == 0b100
    assert r.kinds() == [(P, 0), (P, 2), (R, 0)]
    r.press(1)  # another button's press is no double for button 0
    r.at(150)
    assert (D, 0) not in r.kinds()


def test_held_at_boot_raises_nothing_and_a_lost_edge_heals():
    clock = ManualClock()
    pins = [FakePin(0), FakePin(1)]
    ev = []
    b = Buttons(pins, clock, lambda e, i: ev.append((e, i)))
    assert b.pressed == 0b01
    for _ in range(400):  # well past long_press_ms: no long press for it either
        clock.advance(5)
        b.poll(clock.ticks_ms())
    assert ev == []
    pins[0].set(1, quiet=True)  # released, but the IRQ was lost
    pins[1].set(0, quiet=True)
    for _ in range(250):
        clock.advance(5)
        b.poll(clock.ticks_ms())
    assert ev == [(R, 0), (P, 1)] and b.pressed == 0b10


def test_active_high_contacts():
    clock = ManualClock()
    pins = [FakePin(0)]
    ev = []
    b = Buttons(pins, clock, lambda e, i: ev.append((e, i)), active_low=False)
    pins[0].set(1)
    for _ in range(10):
        clock.advance(5)
        b.poll(clock.ticks_ms())
    assert ev == [(P, 0)] and b.pressed == 1


# --- encoder -------------------------------------------------------------------
GRAY = ((1, 1), (0, 1), (0, 0), (1, 0))  # clockwise: A changes before B


class Knob:
    def __init__(self, steps_per_detent=4, **kw):
        self.clock = ManualClock()
        self.a = FakePin()
        self.b = FakePin()
        self.phase = 0
        self.out = []
        self.e = Encoder(self.a, self.b, self.clock, self.out.append, steps_per_detent, **kw)
        self.spd = steps_per_detent

    def poll(self, ms=0):
        for _ in range(ms // 5 if ms else 1):
            if ms:
                self.clock.advance(5)
            self.e.poll(self.clock.ticks_ms())

    def step(self, d, quiet=False):
        self.phase = (self.phase + d) % 4
        a, b = GRAY[self.phase]
        self.a.set(a, quiet)
        self.b.set(b, quiet)

    def turn(self, detents, step_ms=2, poll=True):
        d = 1 if detents > 0 else -1
        for _ in range(abs(detents) * self.spd):
            self.step(d)
            self.clock.advance(step_ms)
            if poll:
                self.e.poll(self.clock.ticks_ms())


def test_one_detent_each_way():
    k = Knob()
    k.turn(1)
    k.poll(100)
    assert k.out == [1]
    k.turn(-1)
    k.poll(100)
    assert k.out == [1, -1]


def test_half_a_detent_and_back_is_nothing():
    k = Knob()
    k.step(1)
    k.step(1)
    k.poll(50)
    k.step(-1)
    k.step(-1)
    k.poll(100)
    assert k.out == []


def test_deltas_are_coalesced_per_window():
    k = Knob(window_ms=50)
    k.turn(10, step_ms=2)  # 8 ms per detent
    k.poll(200)
    assert sum(k.out) == 10
    assert k.out[0] == 1  # the first detent goes out at once
    assert len(k.out) <= 3  # 80 ms of turning: at most one more per 50 ms


def test_change_of_direction_flushes():
    k = Knob(window_ms=1000)
    k.turn(3)
    k.turn(-2)
    k.poll(1100)
    assert k.out == [1, 2, -2]


def test_bounce_on_one_contact_cancels():
    k = Knob()
    # A falls with bounce, then the rest of the detent
    k.a.set(0)
    k.a.set(1)
    k.a.set(0)
    k.a.set(1)
    k.a.set(0)
    k.phase = 1
    for _ in range(3):
        k.step(1)
    k.poll(100)
    assert k.out == [1] and k.e.rejected == 0


def test_late_irq_handlers_keep_the_order():
    # Both contacts moved before either handler ran: each handler reads its own pin.
    k = Knob()
    k.a.level = 0
    k.b.level = 0  # state (0, 0), two steps on
    k.a.handler(k.a)
    k.b.handler(k.b)
    k.phase = 2
    k.step(1)
    k.step(1)
    k.poll(100)
    assert k.out == [1] and k.e.rejected == 0


def test_a_jump_over_a_state_is_rejected_and_the_phase_recovers():
    k = Knob()
    k.step(1)  # (0, 1)
    k.a.set(1, quiet=True)  # both edges lost: (1, 0)
    k.b.set(0, quiet=True)
    k.phase = 3
    k.poll(50)  # the quiet check reads a jump over a state
    assert k.e.rejected == 1 and k.out == []
    k.step(1)  # back at rest: 2 steps counted, rounds to one detent
    k.poll(100)
    assert k.out == [1]
    k.turn(2)
    k.poll(100)
    assert sum(k.out) == 3


def test_a_lost_edge_heals_when_the_knob_is_quiet():
    k = Knob()
    for _ in range(3):
        k.step(1)
    k.step(1, quiet=True)  # the last IRQ was lost
    k.poll(20)
    assert k.out == []
    k.poll(100)
    assert k.out == [1]


def test_acceleration():
    k = Knob()
    k.turn(10, step_ms=2)
    k.poll(200)
    assert sum(k.out) == 10  # off: steps equal detents
    k = Knob()
    k.e.acceleration = True
    k.turn(10, step_ms=2)  # 8 ms per detent: 1 + 4 * 92 // 100 = 4 each after the first
    k.poll(200)
    assert sum(k.out) == 1 + 9 * 4
    k = Knob()
    k.e.acceleration = True
    k.turn(3, step_ms=40)  # 160 ms per detent: slow, no acceleration
    k.poll(200)
    assert sum(k.out) == 3


def test_steps_per_detent_and_reverse():
    for spd in (1, 2):
        k = Knob(steps_per_detent=spd)
        k.turn(5)
        k.poll(200)
        assert sum(k.out) == 5, (spd, k.out)
    k = Knob(reverse=True)
    k.turn(2)
    k.poll(200)
    assert sum(k.out) == -2
    assert raises(ValueError, Knob, 3)


def test_overrun_and_delta_limit():
    k = Knob(steps_per_detent=1)
    k.turn(100, poll=False)  # 100 samples before the first poll
    k.poll(200)
    assert k.e.overruns == 1 and 0 < sum(k.out) <= 100
    k = Knob(steps_per_detent=1, accel_ms=1000, accel_max=100, window_ms=50)
    k.e.acceleration = True
    k.turn(30, step_ms=1)
    k.poll(300)
    assert max(k.out) == 1000 and sum(k.out) > 1000
    assert all(-1000 <= v <= 1000 for v in k.out)


# --- haptic --------------------------------------------------------------------
def test_haptic_pulse_is_non_blocking_and_ends_on_time():
    clock = ManualClock()
    pwm = FakePWM()
    h = Haptic(pwm, clock)
    assert pwm.duty == 0
    h.pulse(100, 50)
    assert pwm.duty == 32767 and h.active
    clock.advance(99)
    h.poll(clock.ticks_ms())
    assert pwm.duty == 32767
    clock.advance(1)
    h.poll(clock.ticks_ms())
    assert pwm.duty == 0 and not h.active
    h.pulse(100, 100)
    clock.advance(50)
    h.pulse(100, 10)  # replaces the running pulse
    clock.advance(60)
    h.poll(clock.ticks_ms())
    assert pwm.duty == 6553
    clock.advance(40)
    h.poll(clock.ticks_ms())
    assert pwm.duty == 0
    h.pulse(100, 0)
    assert pwm.duty == 0 and not h.active


def test_haptic_minimum_duty():
    h = Haptic(FakePWM(), ManualClock(), min_percent=40)
    assert h.duty(0) == 0
    assert h.duty(1) == 26214 + (65535 - 26214) // 100
    assert h.duty(100) == 65535
