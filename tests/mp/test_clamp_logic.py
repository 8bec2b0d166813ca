# The phone mount's logic without hardware: the clamp state machine (every
# transition, fault and timing on a ManualClock with a fake motor), the
# charger's cut-off with hysteresis, the NTC conversion, and the H-bridge and
# servo drivers on fake PWM/ADC objects.
# Dual runtime: pytest on CPython and tests/mp/run.py on the MicroPython unix port.
import sys

if "firmware" not in sys.path:
    sys.path.append("firmware")

from mpcompat import raises
from cabinlink import msg
from cabinlink.clock import ManualClock
from apps.mount import charger as ch
from apps.mount import clamp as cl
from drivers.hbridge import HBridge
from drivers.servo import Servo


class FakeMotor:
    # The clamp's motor: records every drive/stop; current_ma() is what the
    # test sets. `limit` is the limit switch (True = fully open).
    def __init__(self):
        self.duty = 0
        self.calls = []
        self.ma = 0
        self.limit = True
        self.phone = True

    def drive(self, duty):
        self.duty = duty
        self.calls.append(duty)

    def stop(self):
        self.duty = 0
        self.calls.append(0)

    def current_ma(self):
        return self.ma if self.duty else 0


def make(limit=True, phone=True, cfg=None, force=600):
    m = FakeMotor()
    m.limit = limit
    m.phone = phone
    clock = ManualClock()
    c = cl.Clamp(m, lambda: m.limit, lambda: m.phone, clock, cl.tunables(cfg or {}), force)
    c.start()
    c.events.clear()
    return c, m, clock


def run_for(c, clock, ms, step=10):
    # poll every `step` ms for `ms` ms (the first poll at once)
    t = 0
    while t <= ms:
        c.poll()
        clock.advance(step)
        t += step


def started(c, m, clock):
    # the first poll starts the motor; times count from there
    c.poll()
    assert m.duty != 0
    clock.advance(10)


def test_boot_reads_the_state_back_and_never_moves():
    c, m, _ = make(limit=True)
    assert c.state == cl.OPEN and m.calls == [0]
    c, m, clock = make(limit=False)
    assert c.state == cl.CLAMPED and c.fault == cl.NONE
    run_for(c, clock, 5000)  # nothing commanded: nothing moves, ever
    assert m.calls == [0] and not c.events


def test_clamp_closes_until_the_force_limit():
    c, m, clock = make()
    assert c.clamp() == msg.OK
    assert c.state == cl.CLOSING and c.events == [(cl.EV_STATE, cl.CLOSING)]
    assert m.duty == 0  # the motor starts on the next control step
    started(c, m, clock)
    assert m.duty == 65535
    m.limit = False
    m.ma = 120
    run_for(c, clock, 1300)
    assert c.state == cl.CLOSING
    m.ma = 620
    c.poll()
    assert c.state == cl.CLAMPED and c.fault == cl.NONE and m.duty == 0
    assert c.events == [(cl.EV_STATE, cl.CLOSING), (cl.EV_STATE, cl.CLAMPED)]
    # a clamp when clamped tightens again (position unknown: no stall window)
    c.events.clear()
    assert c.clamp() == msg.OK
    m.limit = False
    started(c, m, clock)
    run_for(c, clock, 200)
    assert c.state == cl.CLAMPED
    assert c.events == [(cl.EV_STATE, cl.CLOSING), (cl.EV_STATE, cl.CLAMPED)]


def test_inrush_is_ignored_and_force_limit_is_live():
    c, m, clock = make(force=800)
    c.clamp()
    started(c, m, clock)
    m.limit = False
    m.ma = 1500  # start-up current in the first inrush_ms
    run_for(c, clock, 80)
    assert c.state == cl.CLOSING
    m.ma = 700
    run_for(c, clock, 1200)
    assert c.state == cl.CLOSING  # under the 800 mA limit
    c.force_limit_ma = 650
    c.poll()
    assert c.state == cl.CLAMPED


def test_stall_before_contact_is_plausible():
    c, m, clock = make()
    c.clamp()
    started(c, m, clock)
    m.limit = False
    m.ma = 120
    run_for(c, clock, 500)
    m.ma = 1200  # obstruction long before any phone could be touched
    c.poll()
    assert c.state == cl.FAULT and c.fault == cl.STALL and m.duty == 0
    assert c.events[-2:] == [(cl.EV_STATE, cl.FAULT), (cl.EV_FAULT, cl.STALL)]


def test_without_a_phone_only_the_end_of_travel_counts():
    c, m, clock = make(phone=False)
    c.clamp()
    started(c, m, clock)
    m.limit = False
    m.ma = 120
    run_for(c, clock, 1400)  # past min_contact_ms, short of 90 % of travel_ms
    m.ma = 900
    c.poll()
    assert c.fault == cl.STALL
    c, m, clock = make(phone=False)
    c.clamp()
    started(c, m, clock)
    m.limit = False
    m.ma = 120
    run_for(c, clock, 1850)  # the empty clamp closed on itself
    m.ma = 900
    c.poll()
    assert c.state == cl.CLAMPED


def test_close_timeout():
    c, m, clock = make(cfg={"close_timeout_ms": 3000}, force=2000)
    c.clamp()
    started(c, m, clock)
    m.limit = False
    m.ma = 1200  # the motor cannot reach the 2000 mA limit
    run_for(c, clock, 2900)
    assert c.state == cl.CLOSING
    run_for(c, clock, 200)
    assert c.state == cl.FAULT and c.fault == cl.TIMEOUT and m.duty == 0
    # fault clears on the next success
    c.release(False, False)
    started(c, m, clock)
    m.limit = True
    run_for(c, clock, 30)
    assert c.state == cl.OPEN and c.fault == cl.NONE


def test_limit_switch_faults():
    c, m, clock = make()
    c.clamp()
    started(c, m, clock)
    run_for(c, clock, 250)  # still on the switch: not yet a fault
    assert c.state == cl.CLOSING
    run_for(c, clock, 100)  # leave_ms 300 passed: stuck switch or no motion
    assert c.fault == cl.LIMIT_SWITCH and m.duty == 0
    c, m, clock = make()
    c.clamp()
    started(c, m, clock)
    m.limit = False
    run_for(c, clock, 500)
    m.limit = True  # "fully open" while closing: impossible
    c.poll()
    assert c.fault == cl.LIMIT_SWITCH and m.duty == 0


def test_overcurrent_at_once():
    c, m, clock = make()
    c.clamp()
    started(c, m, clock)
    m.ma = 2600  # over max_current_ma even inside the inrush window
    c.poll()
    assert c.state == cl.FAULT and c.fault == cl.OVERCURRENT and m.duty == 0


def test_release_needs_confirm_while_moving():
    c, m, clock = make(limit=False)
    assert c.state == cl.CLAMPED
    assert c.release(False, True) == msg.CONFIRM_REQUIRED
    run_for(c, clock, 500)
    assert c.state == cl.CLAMPED and m.calls == [0] and not c.events
    assert c.release(True, True) == msg.OK
    assert c.state == cl.RELEASING
    started(c, m, clock)
    assert m.duty == -65535
    m.ma = 150
    run_for(c, clock, 1000)
    assert c.state == cl.RELEASING
    m.limit = True
    m.ma = 1200  # the switch closes just short of the end stop: it wins over the current
    c.poll()
    assert c.state == cl.OPEN and m.duty == 0 and c.fault == cl.NONE
    assert c.events == [(cl.EV_STATE, cl.RELEASING), (cl.EV_STATE, cl.OPEN)]
    # released already: OK, nothing moves
    n = len(m.calls)
    assert c.release(False, False) == msg.OK
    run_for(c, clock, 100)
    assert len(m.calls) == n and c.state == cl.OPEN


def test_release_jam_and_timeout():
    c, m, clock = make(limit=False)
    c.release(False, False)
    started(c, m, clock)
    m.ma = 150
    run_for(c, clock, 200)
    m.ma = 1100  # jammed while opening
    c.poll()
    assert c.fault == cl.STALL and m.duty == 0
    c, m, clock = make(limit=False, cfg={"open_timeout_ms": 2000})
    c.release(False, False)
    started(c, m, clock)
    m.ma = 150
    run_for(c, clock, 2100)
    assert c.fault == cl.TIMEOUT and m.duty == 0


def test_reversal_stops_first():
    c, m, clock = make()
    c.clamp()
    started(c, m, clock)
    m.limit = False
    m.ma = 120
    run_for(c, clock, 300)
    assert c.release(False, False) == msg.OK  # e.g. a finger in the jaws
    assert c.state == cl.RELEASING and m.duty == 0
    c.poll()
    assert m.duty == 0  # dead time
    clock.advance(60)
    c.poll()
    assert m.duty == -65535
    assert c.clamp() == msg.OK and m.duty == 0 and c.state == cl.CLOSING


def test_tunables_are_checked():
    assert cl.tunables({})["travel_ms"] == 2000
    try:
        cl.tunables({"close_duty_pct": 0})
    except ValueError as e:
        assert "app_config.close_duty_pct" in str(e)
    else:
        raise AssertionError("accepted duty 0")
    assert raises(ValueError, cl.tunables, {"travel_ms": "2000"})


def test_charger_cutoff_with_hysteresis():
    g = ch.Charger(cutoff=6000, hysteresis=500, power_mw=5000)
    assert g.update(2500, True) and g.state == ch.CHARGING and g.enable and g.power_mw == 5000
    assert not g.update(5999, True)
    assert g.update(6000, True) and g.state == ch.OVER_TEMPERATURE
    assert not g.enable and g.power_mw == 0
    assert not g.update(5600, True)  # inside the hysteresis band: still cut off
    g.enabled = False
    g.update(5600, False)
    g.enabled = True
    g.update(5600, False)
    assert g.state == ch.OVER_TEMPERATURE  # toggling enabled skips no cool-down
    assert g.update(5500, False) and g.state == ch.IDLE and g.enable
    g.enabled = False
    assert g.update(2500, True) and g.state == ch.OFF and not g.enable
    g.enabled = True
    assert g.update(None, True) and g.state == ch.FAULT and not g.enable


def test_ntc_conversion():
    # beta equation with the reference divider: 25 degC at half the supply
    assert abs(ch.ntc_centi_c(1650) - 2500) <= 1
    # 60 degC: R = 10k * exp(3950 * (1/333.15 - 1/298.15)) = 2488 ohm -> 657 mV
    assert abs(ch.ntc_centi_c(657) - 6000) <= 10
    assert ch.ntc_centi_c(10) is None  # shorted
    assert ch.ntc_centi_c(3200) is None  # open (or below the ADC's range)


class FakePWM:
    def __init__(self):
        self.d = None
        self.f = None
        self.log = []

    def duty_u16(self, d):
        self.d = d
        self.log.append(d)

    def freq(self, f):
        self.f = f


class FakeADC:
    def __init__(self, uv):
        self.uv = uv

    def read_uv(self):
        return self.uv


def test_hbridge_driver():
    a, b = FakePWM(), FakePWM()
    h = HBridge(a, b, FakeADC(300000), ma_per_v=2000)
    assert (a.d, b.d) == (0, 0)  # coast from the start
    h.drive(40000)
    assert (a.d, b.d) == (40000, 0)
    h.drive(-70000)
    assert (a.d, b.d) == (0, 65535) and h.duty == -65535
    assert a.log[-1] == 0 and b.log[-2] == 0  # the idle side first: never both on
    h.brake()
    assert (a.d, b.d) == (65535, 65535) and h.braking
    h.stop()
    assert (a.d, b.d) == (0, 0)
    assert h.current_ma() == 600  # 300 mV at 0.5 V/A
    h.offset_ma = 700
    assert h.current_ma() == 0
    assert HBridge(FakePWM(), FakePWM()).current_ma() == 0


def test_servo_driver():
    p = FakePWM()
    s = Servo(p)
    assert p.f == 50
    assert s.angle(0) == 0 and p.d == 1638  # 500 us of 20 ms
    assert s.angle(90) == 90 and p.d == 4915  # 1500 us
    assert s.angle(180) == 180 and p.d == 8192  # 2500 us
    assert s.angle(300) == 180 and s.angle(-5) == 0
    s.off()
    assert p.d == 0 and s.deg is None
    n = Servo(FakePWM(), min_us=1000, max_us=2000, range_deg=90)
    n.angle(45)
    assert n.pwm.d == 4915
    assert raises(ValueError, Servo, FakePWM(), 50, 2500, 500)
