# The controller accessory (docs/accessories/controller.md): push buttons, a
# rotary encoder with its push switch, a WS2812 LED chain and a vibration
# motor. Inputs become events (priority 3 on CAN); outputs are commands.
import asyncio

from machine import PWM, Pin
from micropython import const

from cabinlink import msg
from cabinlink import registry as reg
from cabinlink.model import Capability
from drivers.buttons import Buttons
from drivers.encoder import Encoder
from drivers.haptic import Haptic
from runtime import option

_TICK_MS = const(5)  # input polling period
_INT32 = 1 << 31  # rotary_encoder.position wraps at int32


class App:
    DEVICE_CLASS = reg.CLASS_CONTROLLER

    def __init__(self, ctx):
        self.ctx = ctx
        self.clock = ctx.clock
        self.settings = ctx.settings
        w = ctx.board.wiring
        cfg = ctx.config
        cal = ctx.calibration
        self.caps = []
        self.buttons = self.encoder = self.haptic = self.np = None

        pull = Pin.PULL_UP if option(cfg, "app_config", "pull_up", True) else None
        active_low = option(cfg, "app_config", "active_low", True)
        enc = w.get("encoder")
        pins = [ctx.board.pin(n, Pin.IN, pull) for n in w.get("buttons", ())]
        if enc and "switch" in enc and option(cfg, "app_config", "encoder_switch", True):
            pins.append(ctx.board.pin(enc["switch"], Pin.IN, pull))  # the last button
        if pins:
            B = reg.CAP_BUTTONS
            lp = self._saved("long_press_ms", B, reg.ATTR_BUTTONS_LONG_PRESS_MS,
                             option(cfg, "app_config", "long_press_ms", 800, 200, 5000))
            dp = self._saved("double_press_ms", B, reg.ATTR_BUTTONS_DOUBLE_PRESS_MS,
                             option(cfg, "app_config", "double_press_ms", 300, 0, 1000))
            self._edge = asyncio.ThreadSafeFlag()  # set by the buttons' IRQ
            self.buttons = Buttons(pins, self.clock, self._on_button, active_low,
                                   option(cfg, "app_config", "debounce_ms", 20, 1, 200), lp, dp,
                                   self._edge.set)
            self.bcap = Capability(B, values={
                reg.ATTR_BUTTONS_COUNT: len(pins),
                reg.ATTR_BUTTONS_PRESSED: self.buttons.pressed,
                reg.ATTR_BUTTONS_LONG_PRESS_MS: lp,
                reg.ATTR_BUTTONS_DOUBLE_PRESS_MS: dp,
            }, events=reg.events(B), on_write=self._write_buttons)
            self.caps.append(self.bcap)

        if enc:
            E = reg.CAP_ROTARY_ENCODER
            self.encoder = Encoder(
                ctx.board.pin(enc["a"], Pin.IN, pull), ctx.board.pin(enc["b"], Pin.IN, pull),
                self.clock, self._on_delta, enc.get("steps_per_detent", 4),
                option(cal, "calibration", "encoder_reverse", False),
                option(cfg, "app_config", "delta_window_ms", 50, 0, 1000),
                option(cfg, "app_config", "accel_ms", 100, 10, 1000),
                option(cfg, "app_config", "accel_max", 5, 1, 100))
            self.encoder.acceleration = self._saved(
                "acceleration", E, reg.ATTR_ROTARY_ENCODER_ACCELERATION,
                option(cfg, "app_config", "acceleration", False))
            self.ecap = Capability(E, values={
                reg.ATTR_ROTARY_ENCODER_POSITION: 0,
                reg.ATTR_ROTARY_ENCODER_DETENTS_PER_REV: enc.get("detents_per_rev", 20),
                reg.ATTR_ROTARY_ENCODER_ACCELERATION: self.encoder.acceleration,
            }, events=reg.events(E), on_write=self._write_encoder)
            self.caps.append(self.ecap)

        leds = w.get("leds")
        if leds:
            from neopixel import NeoPixel

            L = reg.CAP_LEDS
            self.np = NeoPixel(ctx.board.pin(leds["pin"], Pin.OUT), leds["count"])
            self.rgb = [0] * leds["count"]  # the colours as set, before brightness
            self.brightness = self._saved("brightness", L, reg.ATTR_LEDS_BRIGHTNESS,
                                          option(cfg, "app_config", "brightness", 50, 0, 100))
            self.lcap = Capability(L, values={
                reg.ATTR_LEDS_COUNT: leds["count"],
                reg.ATTR_LEDS_BRIGHTNESS: self.brightness,
            }, commands=sorted(reg.cmd_specs(L)), on_write=self._write_leds, on_invoke=self._invoke_leds)
            self.caps.append(self.lcap)

        if "haptic" in w:
            H = reg.CAP_HAPTIC
            pwm = PWM(ctx.board.pin(w["haptic"], Pin.OUT, value=0),
                      freq=option(cfg, "app_config", "haptic_freq_hz", 20000, 50, 40000), duty_u16=0)
            self.haptic = Haptic(pwm, self.clock,
                                 option(cal, "calibration", "haptic_min_percent", 0, 0, 100))
            self.strength = option(cfg, "app_config", "haptic_strength", 100, 0, 100)
            self.hcap = Capability(H, values={
                reg.ATTR_HAPTIC_ENABLED: self._saved("haptic_enabled", H, reg.ATTR_HAPTIC_ENABLED, True),
            }, commands=sorted(reg.cmd_specs(H)), on_write=self._write_haptic, on_invoke=self._invoke_haptic)
            self.caps.append(self.hcap)

    def _saved(self, key, cap_id, attr, default):
        return self.ctx.saved(key, reg.attr_spec(reg.find(cap_id), attr), default)

    # --- inputs -> events ---------------------------------------------------
    def _on_button(self, ev, i):
        # The driver's event numbers are the registry's buttons event ids.
        if ev == reg.EV_BUTTONS_PRESS or ev == reg.EV_BUTTONS_RELEASE:
            self.bcap.set(reg.ATTR_BUTTONS_PRESSED, self.buttons.pressed)
        self.bcap.emit(ev, i)

    def _on_delta(self, steps):
        v = self.ecap.values
        p = v[reg.ATTR_ROTARY_ENCODER_POSITION] + steps
        v[reg.ATTR_ROTARY_ENCODER_POSITION] = ((p + _INT32) & 0xFFFFFFFF) - _INT32  # wraps
        self.ecap.emit(reg.EV_ROTARY_ENCODER_DELTA, steps)

    # --- writes (the node checked type and range before) ---------------------
    # Each persists first: the value survives a power cut once the car has
    # its OK (spec 3.3); a failing write raises, the node answers HW_FAULT.
    def _write_buttons(self, cap, attr, v):
        if attr == reg.ATTR_BUTTONS_LONG_PRESS_MS:
            self.settings.set("long_press_ms", v)
            self.buttons.long_press_ms = v
        elif attr == reg.ATTR_BUTTONS_DOUBLE_PRESS_MS:
            self.settings.set("double_press_ms", v)
            self.buttons.double_press_ms = v
        return msg.OK

    def _write_encoder(self, cap, attr, v):
        self.settings.set("acceleration", v)
        self.encoder.acceleration = v
        return msg.OK

    def _write_leds(self, cap, attr, v):
        self.settings.set("brightness", v)
        self.brightness = v
        self._show()
        return msg.OK

    def _write_haptic(self, cap, attr, v):
        self.settings.set("haptic_enabled", v)
        if not v:
            self.haptic.stop()
        return msg.OK

    # --- commands -----------------------------------------------------------
    def _invoke_leds(self, cap, cmd, args):
        rgb = self.rgb
        if cmd == reg.CMD_LEDS_SET:
            if args[0] >= len(rgb):
                return msg.INVALID_VALUE  # index not below count (registry)
            rgb[args[0]] = args[1]
        else:
            c = args[0] if cmd == reg.CMD_LEDS_FILL else 0
            for i in range(len(rgb)):
                rgb[i] = c
        self._show()
        return msg.OK

    def _show(self):
        # Every channel scaled by brightness, rounded: c * b / 100.
        b = self.brightness
        np = self.np
        for i, c in enumerate(self.rgb):
            np[i] = (((c >> 16) * b + 50) // 100, (((c >> 8) & 0xFF) * b + 50) // 100,
                     ((c & 0xFF) * b + 50) // 100)
        np.write()

    def _invoke_haptic(self, cap, cmd, args):
        if not cap.values[reg.ATTR_HAPTIC_ENABLED]:
            return msg.INVALID_STATE
        self.haptic.pulse(args[0], args[1] if len(args) > 1 else self.strength)
        return msg.OK

    # --- the task -------------------------------------------------------------
    async def run(self):
        if self.np is not None:
            self._show()  # a defined state after power-up: off
        self.ctx.log.info("controller: %d buttons, encoder %s, %d LEDs, haptic %s" % (
            len(self.buttons.pins) if self.buttons else 0, "yes" if self.encoder else "no",
            len(self.rgb) if self.np is not None else 0, "yes" if self.haptic else "no"))
        b = self.buttons
        e = self.encoder
        h = self.haptic
        ticks = self.clock.ticks_ms
        if b is not None:
            asyncio.create_task(self._edges())
        while True:
            now = ticks()
            if b is not None:
                b.poll(now)
            if e is not None:
                e.poll(now)
            if h is not None:
                h.poll(now)
            await asyncio.sleep_ms(_TICK_MS)

    async def _edges(self):
        # A button edge is handled when it happens, not at the next tick: the
        # event is on the bus well under a millisecond later (controller.md).
        b = self.buttons
        ticks = self.clock.ticks_ms
        while True:
            await self._edge.wait()
            b.poll(ticks())
