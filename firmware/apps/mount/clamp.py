# The clamp state machine (docs/accessories/mount.md "Clamp"), without
# hardware: a motor (drive(duty) / stop() / current_ma()), the limit switch
# (at_limit() -> True when the clamp is fully open), phone_present() and a
# clock. poll() runs one control step; call it every ~10 ms while moving.
#
#   open/clamped/fault --clamp--> closing --current >= force limit--> clamped
#   clamped/fault/closing --release--> releasing --limit switch--> open
#   closing/releasing --fault (stall, timeout, overcurrent, limit_switch)--> fault
#
# The motor only ever runs in closing and releasing; every other state is
# motor off (coast; the worm gear holds the grip). Nothing here starts a
# motion by itself: only clamp() and release() do.
try:
    from micropython import const
except ImportError:
    def const(x):
        return x

from cabinlink import msg

OPEN = const(0)
CLOSING = const(1)
CLAMPED = const(2)
RELEASING = const(3)
FAULT = const(4)

NONE = const(0)
STALL = const(1)
TIMEOUT = const(2)
OVERCURRENT = const(3)
LIMIT_SWITCH = const(4)

EV_STATE = const(0)  # registry clamp.state_changed
EV_FAULT = const(1)  # registry clamp.fault

_OVER_SAMPLES = const(1)  # samples over a current threshold (after inrush_ms)
_BOOT_READS = const(3)

# Tunables (app_config keys, docs/accessories/mount.md): name -> (default, lo, hi)
DEFAULTS = {
    "close_duty_pct": (100, 10, 100),
    "open_duty_pct": (100, 10, 100),
    "travel_ms": (2000, 200, 20000),  # a full stroke at close_duty_pct
    "min_contact_ms": (1000, 0, 20000),  # no phone can be touched sooner from open
    "close_timeout_ms": (4000, 500, 60000),
    "open_timeout_ms": (4000, 500, 60000),
    "inrush_ms": (100, 0, 1000),  # current ignored after a start
    "leave_ms": (300, 50, 5000),  # the limit switch opens within this when closing
    "dead_ms": (50, 0, 1000),  # motor off between a reversal's two directions
    "release_stall_ma": (1000, 100, 5000),
    "max_current_ma": (2500, 200, 5000),  # hard limit: overcurrent fault
}


def tunables(cfg):
    # The app_config values with defaults; ValueError names a bad key.
    out = {}
    for k, d in DEFAULTS.items():
        v = cfg.get(k, d[0])
        if not isinstance(v, int) or isinstance(v, bool) or not d[1] <= v <= d[2]:
            raise ValueError("app_config.%s: must be an integer %d..%d" % (k, d[1], d[2]))
        out[k] = v
    return out


class Clamp:
    def __init__(self, motor, at_limit, phone_present, clock, cfg, force_limit_ma=600):
        self.motor = motor
        self.at_limit = at_limit
        self.phone_present = phone_present
        self.clock = clock
        self.cfg = cfg
        self.force_limit_ma = force_limit_ma
        self.state = OPEN
        self.fault = NONE
        self.current_ma = 0
        self.events = []  # (event id, data), taken by the app: sent after the RESULT
        self._driving = False
        self._t0 = 0  # when the state began, then when the motor started
        self._dead = 0
        self._from_open = False
        self._left = False
        self._over = 0

    # --- boot -------------------------------------------------------------------------
    def start(self):
        # Power-on: motor off, state read back from the limit switch. Fully open
        # -> open; anywhere else -> clamped (the self-locking gear kept the grip).
        # Never moves: a clamp found closed stays closed until the car releases it.
        self.motor.stop()
        n = 0
        for _ in range(_BOOT_READS):
            if self.at_limit():
                n += 1
        self.state = OPEN if n * 2 > _BOOT_READS else CLAMPED
        self.fault = NONE
        return self.state

    # --- commands (from the car; answer at once) ---------------------------------------
    def clamp(self):
        st = self.state
        if st == CLOSING:
            return msg.OK
        self._begin(CLOSING, st == RELEASING)
        return msg.OK

    def release(self, confirm, vehicle_moving):
        if vehicle_moving and not confirm:
            return msg.CONFIRM_REQUIRED  # checked first: nothing moves
        st = self.state
        if st == OPEN or st == RELEASING:
            return msg.OK
        self._begin(RELEASING, st == CLOSING)
        return msg.OK

    def moving(self):
        return self.state == CLOSING or self.state == RELEASING

    # --- control step ------------------------------------------------------------------
    def poll(self):
        st = self.state
        if st != CLOSING and st != RELEASING:
            return
        c = self.clock
        now = c.ticks_ms()
        cfg = self.cfg
        if not self._driving:
            if c.ticks_diff(now, self._t0) < self._dead:
                return
            self._from_open = self.at_limit()
            self._driving = True
            pct = cfg["close_duty_pct"] if st == CLOSING else -cfg["open_duty_pct"]
            self.motor.drive(pct * 65535 // 100)
            self._t0 = c.ticks_ms()  # times count from the motor's start
            return
        ma = self.current_ma = self.motor.current_ma()
        el = c.ticks_diff(now, self._t0)
        if ma >= cfg["max_current_ma"]:
            return self._fail(OVERCURRENT)
        limit = self.at_limit()
        if st == CLOSING:
            if limit:
                # Still (or again) at fully open: the switch must open soon after
                # a start from open, and can never close again while closing.
                if self._left or not self._from_open or el >= cfg["leave_ms"]:
                    return self._fail(LIMIT_SWITCH)
            else:
                self._left = True
            if self._over_limit(ma, el, self.force_limit_ma):
                if self._from_open and not self._contact_plausible(el):
                    return self._fail(STALL)
                return self._done(CLAMPED)
            if el >= cfg["close_timeout_ms"]:
                return self._fail(TIMEOUT)
        else:
            if limit:
                # Fully open. First, before the current: the switch sits just short
                # of the end stop, where the motor would stall.
                return self._done(OPEN)
            if self._over_limit(ma, el, cfg["release_stall_ma"]):
                return self._fail(STALL)
            if el >= cfg["open_timeout_ms"]:
                return self._fail(TIMEOUT)

    def _over_limit(self, ma, el, limit):
        if el < self.cfg["inrush_ms"] or ma < limit:
            self._over = 0
            return False
        self._over += 1
        return self._over >= _OVER_SAMPLES

    def _contact_plausible(self, el):
        # From fully open the jaws meet a phone no sooner than min_contact_ms, and
        # an empty clamp runs (nearly) its whole stroke; a current at the limit
        # earlier than that is an obstruction: a stall.
        cfg = self.cfg
        if el < cfg["min_contact_ms"]:
            return False
        return self.phone_present() or el >= cfg["travel_ms"] * 9 // 10

    # --- transitions -------------------------------------------------------------------
    def _begin(self, st, reversing):
        was_driving = self._driving
        self.motor.stop()
        self._driving = False
        self._dead = self.cfg["dead_ms"] if (reversing and was_driving) else 0
        self._t0 = self.clock.ticks_ms()
        self._left = False
        self._over = 0
        self._set(st)

    def _done(self, st):
        self.motor.stop()
        self._driving = False
        self.current_ma = 0
        self.fault = NONE
        self._set(st)

    def _fail(self, code):
        self.motor.stop()
        self._driving = False
        self.current_ma = 0
        self.fault = code
        self._set(FAULT)
        self.events.append((EV_FAULT, code))

    def _set(self, st):
        if st != self.state:
            self.state = st
            self.events.append((EV_STATE, st))
