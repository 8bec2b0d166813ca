# The ambient sensor (docs/accessories/ambient.md): temperature and humidity
# from an SHT4x, CO2 from an SCD4x, illuminance from a BH1750, one asyncio task
# per chip. Values get the car's calibration offsets; the CO2 level judged with
# hysteresis raises air_quality; a chip that stops answering shows as status
# fault (its value keeps the last good reading) and is retried with back-off.
import asyncio

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from cabinlink import msg, sig
from cabinlink import registry as reg
from cabinlink.model import Capability
from drivers import bh1750
from drivers.bh1750 import BH1750
from drivers.scd4x import SCD4x
from drivers.sensirion import SensorError
from drivers.sht4x import SHT4x
from runtime import option

from .logic import FAULT, NOT_PRESENT, OK, WARMING_UP, AirQuality, SensorState, clamp, health

# Attribute ids shared by the environment capabilities (registry conventions).
_VALUE = const(0)
_STATUS = const(1)
_OFFSET = const(2)
_PERIOD = const(3)
_ASC = const(4)  # co2 only, from here on
_HIGH = const(5)
_HYST = const(6)
_LEVEL = const(7)

_SLICE_MS = const(250)  # a pause wakes this often to see a changed setting
_EARLY_MS = const(20)  # capabilities of one chip due this close share a sample
_SCD_STOP_MS = const(500)  # SCD4x stop_periodic_measurement execution time
_SCD_POLL_MS = const(200)  # data-ready polling once a sample is due
_SCD_LATE_MS = const(3000)  # no sample this long after due: the chip hangs
_LOW_POWER_MS = const(30000)  # co2 periods from here on use the 30 s mode
_FRC_LIMIT = const(2000)  # force_recalibration result range
_IDLE_MS = const(60000)  # longest single pause of a sampling task
_WARN_MAX = const(3)  # fault warnings (flushed to flash) per chip and boot

_CAP_NAMES = {reg.CAP_TEMPERATURE: "temperature", reg.CAP_HUMIDITY: "humidity",
              reg.CAP_CO2: "co2", reg.CAP_ILLUMINANCE: "illuminance"}
_ATTR_NAMES = (None, None, "offset", "sample_period_ms", "auto_calibration", "high_ppm",
               "hysteresis_ppm")
_SENSORS = ("sht4x", "scd4x", "bh1750")
_STATUS_NAMES = ("ok", "warming up", "fault", "not present")


def _check(src, name, key, cap_id, attr, default):
    # A factory value from config.json, checked against the registry range.
    s = reg.attr_spec(reg.find(cap_id), attr)
    if s[0] == reg.T_BOOL:
        return option(src, name, key, default)
    return option(src, name, key, default, s[2], s[3])


class _Chan:
    # One capability fed by a chip: the raw reading behind its value, when the
    # next one is due, when it was last published.
    def __init__(self, cap):
        s = cap.attr_spec(_VALUE)
        self.cap = cap
        self.lo = s[2]
        self.hi = s[3]
        self.raw = None
        self.due = 0
        self.at = None

    def period(self):
        return self.cap.values[_PERIOD]

    def show(self, offset=None):
        # value = raw + offset, clamped to the attribute's range; -> the value
        if self.raw is None:
            return None
        if offset is None:
            offset = self.cap.values.get(_OFFSET, 0)
        v = clamp(self.raw + offset, self.lo, self.hi)
        self.cap.set(_VALUE, v)
        return v


class _Sensor:
    def __init__(self, name, drv, chans, clock):
        self.name = name
        self.drv = drv
        self.chans = chans
        self.state = SensorState(clock)
        self.reason = ""
        self.warned = 0  # faults logged as warnings (persisted) this boot
        self.kick = False  # a setting changed: end the current pause
        self.restart = True  # SCD4x: (re)start periodic measurement first
        self.busy = False  # SCD4x: between stop and start
        self.low_power = False  # SCD4x: 30 s mode
        self.interval = 5000  # SCD4x: ms between its samples
        self.expect = 0  # SCD4x: ticks of the next sample


# A measurement: start, await its conversion (+ 1 tick, as the driver counts:
# ticks_ms truncates), read; the read then never blocks.
async def _sht(drv):
    await asyncio.sleep_ms(drv.start() + 1)
    return drv.read()


async def _bh(drv):
    await asyncio.sleep_ms(drv.start(bh1750.ONCE_H) + 1)
    return (drv.read(),)


class App:
    DEVICE_CLASS = reg.CLASS_AMBIENT

    def __init__(self, ctx):
        self.ctx = ctx
        self.clock = ctx.clock
        self.log = ctx.log
        wiring = ctx.board.wiring
        cfg = ctx.config
        cal = ctx.calibration
        names = [n for n in _SENSORS if n in wiring]
        fitted = cfg.get("sensors")
        if fitted is not None:
            if not isinstance(fitted, list) or [n for n in fitted if n not in names]:
                raise ValueError("app_config.sensors: must be a list of some of: %s" % ", ".join(names))
            names = [n for n in names if n in fitted]
        self.caps = []
        self.sensors = []
        self._keys = {}  # (cap id, attr) -> settings key
        self._chan = {}  # cap id -> _Chan
        self._owner = {}  # cap id -> _Sensor
        self.aq = None
        self._scd = None
        i2c = ctx.board.i2c() if names else None
        now = self.clock.ticks_ms()
        if "sht4x" in names:
            chans = []
            for cap_id, key in ((reg.CAP_TEMPERATURE, "temperature_offset"),
                                (reg.CAP_HUMIDITY, "humidity_offset")):
                off = _check(cal, "calibration", key, cap_id, _OFFSET, 0)
                chans.append(self._add(cap_id, {_OFFSET: off, _PERIOD: 1000}))
            self._sensor("sht4x", SHT4x(i2c, wiring["sht4x"].get("addr", 0x44)), chans)
        if "scd4x" in names:
            c = reg.CAP_CO2
            ch = self._add(c, {
                _OFFSET: _check(cal, "calibration", "co2_offset", c, _OFFSET, 0),
                _PERIOD: 5000,
                _ASC: _check(cfg, "app_config", "auto_calibration", c, _ASC, True),
                _HIGH: _check(cfg, "app_config", "high_ppm", c, _HIGH, 1200),
                _HYST: _check(cfg, "app_config", "hysteresis_ppm", c, _HYST, 100),
            }, commands=(reg.CMD_CO2_FORCE_RECALIBRATION,), events=(reg.EV_CO2_AIR_QUALITY,))
            v = ch.cap.values
            v[_LEVEL] = reg.CO2_LEVEL_GOOD
            self.aq = AirQuality(v[_HIGH], v[_HYST])
            self._scd = self._sensor("scd4x", SCD4x(i2c, wiring["scd4x"].get("addr", 0x62)), [ch])
        if "bh1750" in names:
            ch = self._add(reg.CAP_ILLUMINANCE, {_PERIOD: 1000})
            self._sensor("bh1750", BH1750(i2c, wiring["bh1750"].get("addr", 0x23)), [ch])
        for ch in self._chan.values():
            ch.due = now
        self._health = health([s.state.status for s in self.sensors])
        # The Environmental Sensing service (0x181A) for the BLE link (spec 8.6).
        self.sig_services = [sig.environmental_sensing(self.caps)]

    def _add(self, cap_id, persisted, commands=(), events=()):
        # A capability with its persisted attributes: the car's value from the
        # settings, else the factory default given here.
        values = {_VALUE: 0, _STATUS: WARMING_UP}
        for attr, default in persisted.items():
            key = "%s.%s" % (_CAP_NAMES[cap_id], _ATTR_NAMES[attr])
            self._keys[(cap_id, attr)] = key
            v = self.ctx.saved(key, reg.attr_spec(reg.find(cap_id), attr), default)
            values[attr] = v
        cap = Capability(cap_id, values=values, commands=commands, events=events,
                         on_write=self._write,
                         on_invoke=self._invoke if commands else None)
        self.caps.append(cap)
        ch = self._chan[cap_id] = _Chan(cap)
        return ch

    def _sensor(self, name, drv, chans):
        s = _Sensor(name, drv, chans, self.clock)
        for ch in chans:
            self._owner[ch.cap.id] = s
        self.sensors.append(s)
        return s

    def health(self):
        return self._health

    # --- the car's writes and commands ------------------------------------------
    def _write(self, cap, attr, v):
        # Called after the node checked type and range; the value is committed
        # to flash before the RESULT (spec M-3.3-3), then applied.
        try:
            self.ctx.settings.set(self._keys[(cap.id, attr)], v)
        except OSError as e:
            self.log.error("settings: cannot save (%s)" % e)
            return msg.HW_FAULT
        ch = self._chan[cap.id]
        s = self._owner[cap.id]
        c = self.clock
        if attr == _OFFSET:
            shown = ch.show(v)
            if cap.id == reg.CAP_CO2 and shown is not None and s.state.status == OK:
                self._air(shown)
        elif attr == _PERIOD:
            ch.due = c.ticks_add(c.ticks_ms() if ch.at is None else ch.at, v)
            if cap.id == reg.CAP_CO2 and (v >= _LOW_POWER_MS) != s.low_power:
                s.restart = True
            s.kick = True
        elif attr == _ASC:
            s.restart = True
            s.kick = True
        elif attr == _HIGH or attr == _HYST:
            if attr == _HIGH:
                self.aq.high = v
            else:
                self.aq.hysteresis = v
            if ch.at is not None and s.state.status == OK:
                self._air(cap.values[_VALUE])
        return msg.OK

    def _invoke(self, cap, cmd, args):
        # co2.force_recalibration(reference_ppm): stop, FRC, start again. It
        # blocks for the chip's 500 + 400 ms, inside the 1000 ms RESULT limit.
        s = self._scd
        if s.state.status != OK:
            return msg.INVALID_STATE
        if s.busy or s.restart:
            return msg.BUSY
        drv = s.drv
        target = args[0] - cap.values[_OFFSET]  # so that value reads the reference
        try:
            drv.stop()
            corr = drv.forced_recalibration(target if target > 0 else 0)
            res = (msg.OK, clamp(corr, -_FRC_LIMIT, _FRC_LIMIT))
            self.log.info("co2: recalibrated to %d ppm, correction %d" % (args[0], corr))
        except SensorError as e:
            if not e.args or e.args[0] != "frc failed":
                self.log.warn("co2: recalibration: %s" % e)
                s.restart = True
                s.kick = True
                return msg.HW_FAULT
            self.log.warn("co2: recalibration refused (needs 3 min of measuring first)")
            res = msg.INVALID_STATE
        try:
            s.interval = drv.start_periodic(s.low_power)
            s.expect = self.clock.ticks_add(self.clock.ticks_ms(), s.interval)
        except SensorError:
            s.restart = True
        s.kick = True
        return res

    # --- status, air quality ----------------------------------------------------
    def _status(self, s, changed):
        if not changed:
            return
        st = s.state.status
        for ch in s.chans:
            ch.cap.set(_STATUS, st)
        self._health = health([x.state.status for x in self.sensors])
        text = "%s: %s" % (s.name, _STATUS_NAMES[st])
        if st == FAULT:
            text += " (%s)" % s.reason
        if (st == FAULT or st == NOT_PRESENT) and s.warned < _WARN_MAX:
            s.warned += 1
            self.log.warn(text)  # persisted: why the unit reported a fault
        else:
            self.log.info(text)  # a flapping chip does not wear the flash out

    def _failed(self, s, e):
        # -> ms to wait before trying again
        s.reason = e.args[0] if e.args else "error"
        changed, wait = s.state.failed()
        self._status(s, changed)
        return wait

    def _air(self, ppm):
        aq = self.aq
        if aq.update(ppm):
            cap = self._scd.chans[0].cap
            cap.set(_LEVEL, aq.level)
            cap.emit(reg.EV_CO2_AIR_QUALITY, aq.level)
            self.log.info("co2: air quality %s at %d ppm" % ("poor" if aq.level else "good", ppm))

    # --- the tasks --------------------------------------------------------------
    async def run(self):
        self.log.info("ambient: " + " ".join("%s@0x%02x" % (s.name, s.drv.addr) for s in self.sensors))
        tasks = []
        for s in self.sensors:
            tasks.append(asyncio.create_task(self._run_scd(s) if s is self._scd else
                                             self._run_sampled(s, _sht if s.name == "sht4x" else _bh)))
        if tasks:
            await asyncio.gather(*tasks)
        while True:
            await asyncio.sleep_ms(60000)

    async def _pause(self, s, ms):
        # Sleep ms, cut short when a setting of this sensor changed.
        c = self.clock
        end = c.ticks_add(c.ticks_ms(), ms)
        while not s.kick:
            left = c.ticks_diff(end, c.ticks_ms())
            if left <= 0:
                break
            await asyncio.sleep_ms(left if left < _SLICE_MS else _SLICE_MS)
        s.kick = False

    async def _run_sampled(self, s, measure):
        # SHT4x, BH1750: a measurement whenever one of the chip's capabilities
        # is due by its sample_period_ms.
        c = self.clock
        while True:
            now = c.ticks_ms()
            wait = _IDLE_MS
            for ch in s.chans:
                d = c.ticks_diff(ch.due, now)
                if d < wait:
                    wait = d
            if wait > 0:
                await self._pause(s, wait)
                continue
            try:
                raws = await measure(s.drv)
            except SensorError as e:
                await self._pause(s, self._failed(s, e))
                continue
            now = c.ticks_ms()
            for i in range(len(s.chans)):
                ch = s.chans[i]
                if c.ticks_diff(now, ch.due) >= -_EARLY_MS:
                    ch.raw = raws[i]
                    ch.show()
                    ch.at = now
                    p = ch.period()
                    due = c.ticks_add(ch.due, p)
                    ch.due = due if c.ticks_diff(due, now) > 0 else c.ticks_add(now, p)
            self._status(s, s.state.good())

    async def _run_scd(self, s):
        # SCD4x in periodic mode (a sample every 5 s, or 30 s in low-power mode
        # for periods >= 30 s), polled for data-ready when a sample is due;
        # published by co2.sample_period_ms, rounded to the chip's samples.
        c = self.clock
        drv = s.drv
        ch = s.chans[0]
        while True:
            if s.restart:
                s.busy = True
                try:
                    drv.stop()  # it may still measure after a reset of the board alone
                    self._status(s, s.state.answered())
                    await asyncio.sleep_ms(_SCD_STOP_MS + 1)  # + 1: ticks truncate
                    drv.asc(ch.cap.values[_ASC])
                    s.low_power = ch.period() >= _LOW_POWER_MS
                    s.interval = drv.start_periodic(s.low_power)
                    s.expect = c.ticks_add(c.ticks_ms(), s.interval)
                    s.restart = False
                except SensorError as e:
                    s.busy = False
                    await self._pause(s, self._failed(s, e))
                    continue
                s.busy = False
            now = c.ticks_ms()
            wait = c.ticks_diff(s.expect, now)
            if wait > 0:
                await self._pause(s, wait)
                continue
            try:
                if not drv.ready():
                    if -wait > _SCD_LATE_MS:
                        raise SensorError("timeout")
                    await self._pause(s, _SCD_POLL_MS)
                    continue
                co2 = drv.read()[0]
            except SensorError as e:
                s.restart = True  # its state is unknown: stop and start it again
                await self._pause(s, self._failed(s, e))
                continue
            now = c.ticks_ms()
            # the next sample, anchored on this one (the chip keeps its own time)
            s.expect = c.ticks_add(now, s.interval - _SCD_POLL_MS)
            v = None
            if ch.at is None or c.ticks_diff(now, ch.due) >= -(s.interval >> 1):
                ch.raw = co2
                v = ch.show()
                ch.at = now
                ch.due = c.ticks_add(now, ch.period())
            self._status(s, s.state.good())
            if v is not None:
                self._air(v)
