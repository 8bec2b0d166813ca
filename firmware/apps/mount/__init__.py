# The phone mount (docs/accessories/mount.md): motorised clamp, rotation by a
# servo, phone presence, wireless charger with an over-temperature cut-off.
# Safety: the clamp moves only on a clamp/release command; a release while
# the car says the vehicle moves needs confirm; power-up and link loss never
# move it (the state is read back from the limit switch at boot).
try:
    from micropython import const
except ImportError:
    def const(x):
        return x

import asyncio

from cabinlink import msg
from cabinlink import registry as reg
from cabinlink.model import Capability
from runtime import option

from apps.mount import charger as chg_
from apps.mount.charger import Charger, ntc_centi_c
from apps.mount.clamp import (CLAMPED, CLOSING, EV_FAULT, FAULT, OPEN, RELEASING, Clamp,
                              tunables)

_FAST_MS = const(10)  # control step while the clamp moves
_IDLE_MS = const(20)  # otherwise (presence, rotation)
_MAX_MA = const(5000)  # registry range of motor_current_ma

# app_config keys beyond the clamp's (apps/mount/clamp.py DEFAULTS)
_OPTS = {
    "debounce_ms": (50, 0, 1000),
    "servo_portrait_deg": (0, 0, 180),
    "servo_landscape_deg": (90, 0, 180),
    "servo_min_us": (500, 100, 3000),
    "servo_max_us": (2500, 100, 3000),
    "rotate_ms": (600, 0, 5000),
    "charger_period_ms": (500, 50, 60000),
    "charger_hysteresis": (500, 0, 3000),  # centi-degC below cutoff to resume
    "charger_power_mw": (5000, 0, 50000),  # reported while charging (estimate)
}
_CAL = {
    "motor_ma_per_v": (2000, 1, 100000),
    "motor_offset_ma": (0, -1000, 1000),
    "ntc_beta": (3950, 1000, 10000),
    "ntc_r25": (10000, 100, 1000000),
    "ntc_series": (10000, 100, 1000000),
    "ntc_vref_mv": (3300, 1000, 5000),
}


def _opts(src, table, where):
    out = {}
    for k, d in table.items():
        out[k] = option(src, where, k, d[0], d[1], d[2])
    return out


def _input(board, n):
    # A contact to ground: internal pull-up where the pin has one (ESP32 GPIO
    # 34-39 have none: the board must fit an external pull-up there).
    from machine import Pin

    try:
        return board.pin(n, Pin.IN, Pin.PULL_UP)
    except ValueError:
        return board.pin(n, Pin.IN)


class App:
    DEVICE_CLASS = reg.CLASS_PHONE_MOUNT

    def __init__(self, ctx):
        from machine import ADC, PWM, Pin

        from drivers.hbridge import HBridge
        from drivers.servo import Servo

        self.ctx = ctx
        self.clock = c = ctx.clock
        w = ctx.board.wiring
        cfg = ctx.config
        st = ctx.settings
        self.opt = o = _opts(cfg, _OPTS, "app_config")
        cal = _opts(ctx.calibration, _CAL, "calibration")
        self.cal = cal

        # Clamp: PWM at 0 first thing, so the bridge never sees a stale duty.
        m = w["motor"]
        self.motor = HBridge(PWM(ctx.board.pin(m["in_a"]), freq=20000, duty_u16=0),
                             PWM(ctx.board.pin(m["in_b"]), freq=20000, duty_u16=0),
                             ADC(ctx.board.pin(m["current_adc"]), atten=ADC.ATTN_11DB),
                             cal["motor_ma_per_v"], cal["motor_offset_ma"])
        self._limit = _input(ctx.board, m["limit"])
        self._sense = _input(ctx.board, w["phone_sense"]) if "phone_sense" in w else None
        self.present = self._read_present()
        self._present_raw = self.present
        self._present_at = c.ticks_ms()
        force = st.get("force_limit_ma", 600)
        self.clamp = Clamp(self.motor, self._at_limit, self._phone, c, tunables(cfg), force)
        self.clamp.start()
        self.cap_clamp = Capability(reg.CAP_CLAMP, values={
            reg.ATTR_CLAMP_STATE: self.clamp.state,
            reg.ATTR_CLAMP_FAULT: self.clamp.fault,
            reg.ATTR_CLAMP_FORCE_LIMIT_MA: force,
            reg.ATTR_CLAMP_VEHICLE_MOVING: False,
            reg.ATTR_CLAMP_MOTOR_CURRENT_MA: 0,
        }, commands=(reg.CMD_CLAMP_CLAMP, reg.CMD_CLAMP_RELEASE),
            events=(reg.EV_CLAMP_STATE_CHANGED, reg.EV_CLAMP_FAULT),
            on_write=self._write_clamp, on_invoke=self._invoke_clamp)
        self.caps = [self.cap_clamp]

        # Rotation: back to the orientation last reached (where the servo should be).
        self.servo = None
        self.cap_rot = None
        if "servo" in w:
            self.servo = Servo(PWM(ctx.board.pin(w["servo"]), freq=50, duty_u16=0),
                               min_us=o["servo_min_us"], max_us=o["servo_max_us"])
            orient = st.get("orientation", reg.ROTATION_ORIENTATION_PORTRAIT)
            if orient not in (0, 1):
                orient = 0
            self.servo.angle(self._servo_deg(orient))
            self.cap_rot = Capability(reg.CAP_ROTATION, values={
                reg.ATTR_ROTATION_ORIENTATION: orient,
                reg.ATTR_ROTATION_ANGLE_DEG: self._cradle_deg(orient),
            }, commands=(reg.CMD_ROTATION_ROTATE,), events=(reg.EV_ROTATION_ROTATED,),
                on_invoke=self._invoke_rotate)
            self.caps.append(self.cap_rot)
        self._rot_target = None
        self._rot_at = 0

        self.cap_presence = None
        if self._sense is not None:
            self.cap_presence = Capability(reg.CAP_PHONE_PRESENCE, values={
                reg.ATTR_PHONE_PRESENCE_PRESENT: self.present,
            }, events=(reg.EV_PHONE_PRESENCE_CHANGED,))
            self.caps.append(self.cap_presence)

        # Wireless charger: enable line low until the first temperature check.
        self.charger = None
        self.cap_chg = None
        ch = w.get("charger")
        if ch:
            self._chg_status = _input(ctx.board, ch["status"])
            self._ntc = ADC(ctx.board.pin(ch["ntc_adc"]), atten=ADC.ATTN_11DB)
            self._chg_en = None
            if "enable" in ch:
                self._chg_en = ctx.board.pin(ch["enable"], Pin.OUT, value=0)
            self.charger = Charger(st.get("cutoff_temperature", 6000), o["charger_hysteresis"],
                                   o["charger_power_mw"], st.get("charger_enabled", True))
            self._update_charger()
            chg = self.charger
            self.cap_chg = Capability(reg.CAP_WIRELESS_CHARGER, values={
                reg.ATTR_WIRELESS_CHARGER_STATE: chg.state,
                reg.ATTR_WIRELESS_CHARGER_POWER_MW: chg.power_mw,
                reg.ATTR_WIRELESS_CHARGER_TEMPERATURE: chg.temperature or 0,
                reg.ATTR_WIRELESS_CHARGER_CUTOFF_TEMPERATURE: chg.cutoff,
                reg.ATTR_WIRELESS_CHARGER_ENABLED: chg.enabled,
            }, events=(reg.EV_WIRELESS_CHARGER_STATE_CHANGED,), on_write=self._write_charger)
            self.caps.append(self.cap_chg)
        self._slow_next = c.ticks_ms()  # charger and idle current, every charger_period_ms
        ctx.log.info("mount: clamp %s at boot, phone %s" % (
            "open" if self.clamp.state == OPEN else "clamped", "present" if self.present else "absent"))

    # --- inputs -----------------------------------------------------------------------
    def _at_limit(self):
        return self._limit.value() == 0  # active low: closed at fully open

    def _read_present(self):
        return self._sense is not None and self._sense.value() == 0

    def _phone(self):
        return self.present

    # --- clamp ------------------------------------------------------------------------
    def _write_clamp(self, cap, attr, value):
        if attr == reg.ATTR_CLAMP_FORCE_LIMIT_MA:
            self.ctx.settings.set("force_limit_ma", value)  # committed before the RESULT
            self.clamp.force_limit_ma = value
        return msg.OK  # vehicle_moving: the node stores it; read at release

    def _invoke_clamp(self, cap, cmd, args):
        if cmd == reg.CMD_CLAMP_CLAMP:
            st = self.clamp.clamp()
        else:
            confirm = len(args) > 0 and args[0] is True
            st = self.clamp.release(confirm, cap.values[reg.ATTR_CLAMP_VEHICLE_MOVING])
        self._sync_clamp()
        return st

    def _sync_clamp(self):
        cl = self.clamp
        v = self.cap_clamp.values
        v[reg.ATTR_CLAMP_STATE] = cl.state
        v[reg.ATTR_CLAMP_FAULT] = cl.fault
        ma = cl.current_ma
        v[reg.ATTR_CLAMP_MOTOR_CURRENT_MA] = ma if ma < _MAX_MA else _MAX_MA

    def _flush_clamp(self):
        ev = self.clamp.events
        while ev:
            e, data = ev.pop(0)
            if e == EV_FAULT:
                self.ctx.log.warn("clamp fault %d" % data)
            self.cap_clamp.emit(e, data)

    # --- rotation ---------------------------------------------------------------------
    def _servo_deg(self, orient):
        return self.opt["servo_landscape_deg" if orient else "servo_portrait_deg"]

    def _cradle_deg(self, orient):
        return self._servo_deg(orient) - self.opt["servo_portrait_deg"]

    def _invoke_rotate(self, cap, cmd, args):
        # Turning is safe with the phone held, or with no phone in the cradle;
        # never while the clamp moves or a loose phone sits in it.
        st = self.clamp.state
        held = st == CLAMPED
        if not held and (self.present or st == CLOSING or st == RELEASING):
            return msg.INVALID_STATE
        self.servo.angle(self._servo_deg(args[0]))
        self._rot_target = args[0]
        self._rot_at = self.clock.ticks_ms()
        return msg.OK

    def _poll_rotation(self, now):
        t = self._rot_target
        if t is None or self.clock.ticks_diff(now, self._rot_at) < self.opt["rotate_ms"]:
            return
        self._rot_target = None
        self.ctx.settings.set("orientation", t)
        self.cap_rot.set(reg.ATTR_ROTATION_ORIENTATION, t)
        self.cap_rot.set(reg.ATTR_ROTATION_ANGLE_DEG, self._cradle_deg(t))
        self.cap_rot.emit(reg.EV_ROTATION_ROTATED, t)

    # --- phone presence ---------------------------------------------------------------
    def _poll_presence(self, now):
        raw = self._read_present()
        c = self.clock
        if raw != self._present_raw:
            self._present_raw = raw
            self._present_at = now
        elif raw != self.present and c.ticks_diff(now, self._present_at) >= self.opt["debounce_ms"]:
            self.present = raw
            self.cap_presence.set(reg.ATTR_PHONE_PRESENCE_PRESENT, raw)
            self.cap_presence.emit(reg.EV_PHONE_PRESENCE_CHANGED, raw)
            self.ctx.log.info("phone %s" % ("inserted" if raw else "removed"))

    # --- wireless charger -------------------------------------------------------------
    def _read_ntc(self):
        cal = self.cal
        mv = 0
        for _ in range(4):
            mv += self._ntc.read_uv() // 1000
        return ntc_centi_c(mv // 4, cal["ntc_vref_mv"], cal["ntc_series"], cal["ntc_r25"],
                           cal["ntc_beta"])

    def _update_charger(self):
        chg = self.charger
        was = chg.state
        changed = chg.update(self._read_ntc(), self._chg_status.value() == 0)
        if self._chg_en is not None:
            self._chg_en.value(1 if chg.enable else 0)
        if changed and chg.state == chg_.OVER_TEMPERATURE:
            self.ctx.log.warn("charger over temperature: %d cC, cut off" % chg.temperature)
        elif changed and was == chg_.OVER_TEMPERATURE and chg.enable:
            self.ctx.log.info("charger cooled down: %d cC, resumed" % chg.temperature)
        return changed

    def _poll_charger(self):
        changed = self._update_charger()
        chg = self.charger
        cap = self.cap_chg
        cap.set(reg.ATTR_WIRELESS_CHARGER_POWER_MW, chg.power_mw)
        if chg.temperature is not None:
            cap.set(reg.ATTR_WIRELESS_CHARGER_TEMPERATURE, chg.temperature)
        if changed:
            cap.set(reg.ATTR_WIRELESS_CHARGER_STATE, chg.state)
            cap.emit(reg.EV_WIRELESS_CHARGER_STATE_CHANGED, chg.state)

    def _write_charger(self, cap, attr, value):
        chg = self.charger
        if attr == reg.ATTR_WIRELESS_CHARGER_CUTOFF_TEMPERATURE:
            self.ctx.settings.set("cutoff_temperature", value)
            chg.cutoff = value
        elif attr == reg.ATTR_WIRELESS_CHARGER_ENABLED:
            self.ctx.settings.set("charger_enabled", value)
            chg.enabled = value
        self._slow_next = self.clock.ticks_ms()  # apply on the next step
        return msg.OK

    # --- the task ---------------------------------------------------------------------
    async def run(self):
        c = self.clock
        while True:
            now = c.ticks_ms()
            self.clamp.poll()
            self._sync_clamp()
            self._flush_clamp()
            if self.cap_presence is not None:
                self._poll_presence(now)
            if self.cap_rot is not None:
                self._poll_rotation(now)
            if c.ticks_diff(now, self._slow_next) >= 0:
                self._slow_next = c.ticks_add(now, self.opt["charger_period_ms"])
                if self.charger is not None:
                    self._poll_charger()
                if not self.clamp.moving():  # a current with the motor off: a bridge fault
                    self.clamp.current_ma = self.motor.current_ma()
            await asyncio.sleep_ms(_FAST_MS if self.clamp.moving() else _IDLE_MS)

    def health(self):
        if self.clamp.state == FAULT:
            return msg.HEALTH_CAUTION
        if self.charger is not None and self.charger.state in (chg_.FAULT, chg_.OVER_TEMPERATURE):
            return msg.HEALTH_ADVISORY
        return msg.HEALTH_NOMINAL

