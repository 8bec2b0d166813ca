# Simulated `machine` module: MicroPython's ESP32 API, with every hardware
# operation carried out by the simulated world. Valid MicroPython: firmware
# processes import it under the unix port and under CPython alike. Where the
# real module raises, this one raises the same way (ValueError on a bad pin or
# argument, OSError(19) on an I2C NACK, OverflowError on CAN data > 8 bytes).
import sys

from _world import world

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
PIN_WAKE = 2
EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4

_ENODEV = 19
_ETIMEDOUT = 116  # ESP32 uses newlib errno values


def _board():
    # The board facts the world sent on connect: chip, pins, unique id, ...
    w = world()
    if not hasattr(w, "board"):
        w.board = w.call("board")
    return w.board


def unique_id():
    return bytes.fromhex(_board()["unique_id"])


def reset_cause():
    return _board()["reset_cause"]


def wake_reason():
    return _board().get("wake_reason", 0)


_freq = [160000000]


def freq(hz=None):
    if hz is None:
        return _freq[0]
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq[0] = hz


_HARD_EXIT = 113  # the exit status a board's supervisor reads as a hard reset


def _reset(cause, code, **extra):
    # Whoever supervises this process (board runner, virtual board) restarts
    # it; the world, if there is one, learns why. Never returns.
    try:
        world().notify("reset", cause=cause, **extra)
    except OSError:
        pass  # no world (e.g. a virtual board for tooling): the exit code tells
    sys.exit(code)


def reset():
    _reset(HARD_RESET, _HARD_EXIT)


def soft_reset():
    _reset(SOFT_RESET, 0)


def deepsleep(ms=0):
    _reset(DEEPSLEEP_RESET, _HARD_EXIT, sleep_ms=ms)


def lightsleep(ms=0):
    import time

    time.sleep_ms(ms)


def idle():
    world().pump()


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def bitstream(pin, encoding, timing, buf):
    if encoding != 0:
        raise ValueError("invalid encoding")
    world().call("bitstream", pin=pin.id, data=bytes(buf).hex())


def _valid_gpio(n, output):
    b = _board()
    if not isinstance(n, int) or n not in b["gpios"]:
        raise ValueError("invalid pin")
    if output and n in b["input_only"]:
        raise ValueError("pin can only be input")


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_DOWN = 1
    PULL_UP = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if not isinstance(id, int):
            raise ValueError("invalid pin")
        _valid_gpio(id, False)
        self.id = id
        self._mode = None
        self._pull = None
        self._handler = None
        self._trigger = 0
        self.init(mode, pull, value=value, drive=drive, hold=hold)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if mode != -1:
            if mode not in (None, Pin.IN, Pin.OUT, Pin.OPEN_DRAIN):
                raise ValueError("invalid pin mode")
            _valid_gpio(self.id, mode in (Pin.OUT, Pin.OPEN_DRAIN))
            self._mode = mode
        if pull != -1:
            if pull not in (None, Pin.PULL_UP, Pin.PULL_DOWN):
                raise ValueError("invalid pull")
            if pull is not None and self.id in _board()["no_pull"]:
                raise ValueError("pin has no pull")
            self._pull = pull
        world().call("pin_init", pin=self.id, mode=self._mode, pull=self._pull, value=value)

    def value(self, x=None):
        if x is None:
            return world().call("pin_read", pin=self.id)
        world().call("pin_write", pin=self.id, value=1 if x else 0)

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def mode(self, m=-1):
        if m == -1:
            return self._mode
        self.init(m)

    def pull(self, p=-1):
        if p == -1:
            return self._pull
        self.init(pull=p)

    def irq(self, handler=None, trigger=3, *, wake=None, hard=False):
        # handler(pin) runs on the chosen edges (IRQ_RISING | IRQ_FALLING).
        self._handler = handler
        self._trigger = trigger if handler is not None else 0
        w = world()
        _pins[self.id] = self
        w.on("pin", _pin_event)
        w.call("pin_irq", pin=self.id, trigger=self._trigger)
        return self

    def __repr__(self):
        return "Pin(%d)" % self.id


_pins = {}


def _pin_event(ev):
    p = _pins.get(ev["pin"])
    if p is not None and p._handler is not None:
        edge = Pin.IRQ_RISING if ev["level"] else Pin.IRQ_FALLING
        if p._trigger & edge:
            p._handler(p)


def _pin_id(p):
    return p.id if isinstance(p, Pin) else p


class SoftI2C:
    def __init__(self, scl, sda, *, freq=400000, timeout=50000):
        self.scl = _pin_id(scl)
        self.sda = _pin_id(sda)
        _valid_gpio(self.scl, True)
        _valid_gpio(self.sda, True)
        self.freq = freq
        world().call("i2c_init", scl=self.scl, sda=self.sda, freq=freq)

    def _bus(self):
        return "%d/%d" % (self.scl, self.sda)

    def scan(self):
        return world().call("i2c_scan", bus=self._bus())

    def writeto(self, addr, buf, stop=True):
        # Returns the number of ACKs, as the real method does.
        return world().call("i2c_write", bus=self._bus(), addr=addr, data=bytes(buf).hex(), stop=stop)

    def writevto(self, addr, vector, stop=True):
        data = b"".join(bytes(b) for b in vector)
        return self.writeto(addr, data, stop)

    def readfrom(self, addr, nbytes, stop=True):
        return bytes.fromhex(world().call("i2c_read", bus=self._bus(), addr=addr, n=nbytes, stop=stop))

    def readfrom_into(self, addr, buf, stop=True):
        data = self.readfrom(addr, len(buf), stop)
        buf[: len(data)] = data

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        self.writeto(addr, _memaddr(memaddr, addrsize) + bytes(buf))

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        self.writeto(addr, _memaddr(memaddr, addrsize), False)
        return self.readfrom(addr, nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        self.writeto(addr, _memaddr(memaddr, addrsize), False)
        self.readfrom_into(addr, buf)


def _memaddr(memaddr, addrsize):
    if addrsize not in (8, 16, 24, 32):
        raise ValueError("addrsize must be 8, 16, 24 or 32")
    n = addrsize // 8
    return bytes((memaddr >> (8 * (n - 1 - i))) & 0xFF for i in range(n))


class I2C(SoftI2C):
    # Hardware I2C: ids 0 and 1 (ESP32 defaults I2C0 scl 18/sda 19, I2C1 25/26).
    def __init__(self, id=-1, *, scl=None, sda=None, freq=400000, timeout=50000):
        if id not in (0, 1):
            raise ValueError("I2C(%s) doesn't exist" % id)
        if scl is None:
            scl = (18, 25)[id]
        if sda is None:
            sda = (19, 26)[id]
        SoftI2C.__init__(self, scl, sda, freq=freq, timeout=timeout)
        self.id = id


class SPI:
    MSB = 0
    LSB = 1

    def __init__(self, id, baudrate=1000000, *, polarity=0, phase=0, bits=8, firstbit=0,
                 sck=None, mosi=None, miso=None):
        if id not in (1, 2):
            raise ValueError("SPI(%s) doesn't exist" % id)
        dflt = ((14, 13, 12), (18, 23, 19))[id - 1]
        self.pins = (_pin_id(sck) if sck is not None else dflt[0],
                     _pin_id(mosi) if mosi is not None else dflt[1],
                     _pin_id(miso) if miso is not None else dflt[2])
        self.baudrate = baudrate
        world().call("spi_init", bus="%d/%d/%d" % self.pins, baudrate=baudrate)

    def write_readinto(self, write_buf, read_buf):
        r = bytes.fromhex(world().call("spi_xfer", bus="%d/%d/%d" % self.pins,
                                       data=bytes(write_buf).hex()))
        read_buf[: len(r)] = r

    def write(self, buf):
        self.write_readinto(buf, bytearray(len(buf)))

    def read(self, n, write=0):
        out = bytearray(n)
        self.write_readinto(bytes([write]) * n, out)
        return bytes(out)

    def readinto(self, buf, write=0):
        self.write_readinto(bytes([write]) * len(buf), buf)

    def deinit(self):
        pass


class PWM:
    def __init__(self, pin, *, freq=5000, duty_u16=None, duty_ns=None, invert=False):
        self.pin = _pin_id(pin)
        _valid_gpio(self.pin, True)
        self._freq = 5000
        self._duty = 0
        self.freq(freq)
        if duty_ns is not None:
            self.duty_ns(duty_ns)
        else:
            self.duty_u16(duty_u16 or 0)

    def _push(self):
        world().call("pwm", pin=self.pin, freq=self._freq, duty_u16=self._duty)

    def freq(self, hz=None):
        if hz is None:
            return self._freq
        if not 1 <= hz <= 40000000:
            raise ValueError("frequency must be from 1Hz to 40MHz")
        self._freq = hz
        self._push()

    def duty_u16(self, d=None):
        if d is None:
            return self._duty
        if not 0 <= d <= 65535:
            raise ValueError("duty_u16 must be from 0 to 65535")
        self._duty = d
        self._push()

    def duty(self, d=None):
        if d is None:
            return self._duty >> 6
        self.duty_u16(min(d, 1023) * 65535 // 1023)

    def duty_ns(self, ns=None):
        period = 1000000000 // self._freq
        if ns is None:
            return self._duty * period // 65535
        self.duty_u16(min(65535, ns * 65535 // period))

    def deinit(self):
        world().call("pwm", pin=self.pin, freq=0, duty_u16=None)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12
    _FULL_MV = (950, 1250, 1750, 3100)  # measurable range per attenuation

    def __init__(self, pin, *, atten=3):
        self.pin = _pin_id(pin)
        if self.pin not in _board()["adc"]:
            raise ValueError("invalid pin")
        self._atten = atten
        self._width = 12

    def atten(self, a):
        if a not in (0, 1, 2, 3):
            raise ValueError("invalid atten")
        self._atten = a

    def width(self, w):
        if w not in (9, 10, 11, 12):
            raise ValueError("invalid width")
        self._width = w

    def _raw12(self):
        mv = world().call("adc_read", pin=self.pin) * 1000
        full = ADC._FULL_MV[self._atten]
        return max(0, min(4095, int(mv * 4095 / full)))

    def read(self):
        return self._raw12() >> (12 - self._width)

    def read_u16(self):
        raw = self._raw12()
        return (raw << 4) | (raw >> 8)

    def read_uv(self):
        return self._raw12() * ADC._FULL_MV[self._atten] // 4095 * 1000  # 1 mV steps


class UART:
    def __init__(self, id, baudrate=115200, *, tx=None, rx=None, **kw):
        if id not in (0, 1, 2):
            raise ValueError("UART(%s) doesn't exist" % id)
        self.id = id
        self.baudrate = baudrate

    def write(self, buf):
        world().notify("uart", id=self.id, data=bytes(buf).hex())
        return len(buf)

    def read(self, n=-1):
        data = bytes.fromhex(world().call("uart_read", id=self.id, n=n))
        return data or None

    def any(self):
        return world().call("uart_any", id=self.id)

    def deinit(self):
        pass


class WDT:
    # Cannot be stopped; the world resets the board when it is not fed in time.
    def __init__(self, id=0, timeout=5000):
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        world().call("wdt_init", timeout=timeout)

    def feed(self):
        world().notify("wdt_feed")


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id, **kw):
        if id not in _board()["timers"]:
            raise ValueError("Timer(%s) doesn't exist" % id)
        self.id = id
        self._cb = None
        if kw:
            self.init(**kw)

    def init(self, *, mode=1, period=-1, freq=-1, callback=None, hard=False):
        if hard:
            raise ValueError("hard Timer callbacks are not supported")
        if freq > 0:
            period = max(1, 1000 // freq)
        if period <= 0:
            raise ValueError("period must be >= 1 ms")
        self._cb = callback
        _timers[self.id] = self
        w = world()
        w.on("timer", _timer_event)
        w.call("timer_init", timer=self.id, period=period, periodic=mode == Timer.PERIODIC)

    def deinit(self):
        _timers.pop(self.id, None)
        world().call("timer_init", timer=self.id, period=0, periodic=False)


_timers = {}


def _timer_event(ev):
    t = _timers.get(ev["timer"])
    if t is not None and t._cb is not None:
        t._cb(t)


class CAN:
    # machine.CAN (MicroPython >= 1.28 API) on the simulated bus. Exists only
    # on boards whose chip has an on-chip controller wired up in the world;
    # elsewhere the constructor raises as an absent peripheral does.
    MODE_NORMAL = 0
    MODE_SLEEP = 1
    MODE_LOOPBACK = 2
    MODE_SILENT = 3
    MODE_SILENT_LOOPBACK = 4
    STATE_STOPPED = 0
    STATE_ACTIVE = 1
    STATE_WARNING = 2
    STATE_PASSIVE = 3
    STATE_BUS_OFF = 4
    FLAG_RTR = 1
    FLAG_EXT_ID = 2
    FLAG_UNORDERED = 16
    RECV_ERR_FULL = 1
    RECV_ERR_OVERRUN = 2
    IRQ_TX = 1
    IRQ_RX = 2
    IRQ_TX_FAILED = 4
    IRQ_STATE = 8
    IRQ_TX_IDX_SHIFT = 16
    IRQ_TX_IDX_MASK = 0xFF
    TX_QUEUE_LEN = 3
    FILTERS_MAX = 14

    def __init__(self, id, *args, **kw):
        addr = _board().get("can")
        if id != 0 or not addr:
            raise ValueError("CAN(%s) doesn't exist" % id)
        self._addr = addr
        self._wire = None
        self._filters = ()  # nothing is received until set_filters()
        self._queued = []  # ids of frames in the TX queue, oldest first
        self._handler = None
        self._trigger = 0
        self._flags = 0
        self._watch = None
        self.init(*args, **kw)

    def init(self, bitrate=500000, mode=0, sample_point=75, sjw=1, tseg1=None, tseg2=None):
        if (tseg1 is None) != (tseg2 is None):
            raise ValueError("tseg1 and tseg2 must be given together")
        if tseg1 is not None and not (1 <= tseg1 <= 16 and 1 <= tseg2 <= 8):
            raise ValueError("invalid tseg")
        if not 1 <= sjw <= 4 or mode not in (0, 1, 2, 3, 4):
            raise ValueError("invalid timing")
        host, port = self._addr.rsplit(":", 1)
        bus_rate = _board().get("can_bitrate", 500000)
        if bitrate != bus_rate:
            # A node at the wrong bit rate only sees errors; say so plainly.
            raise ValueError("bitrate %d does not match the bus (%d)" % (bitrate, bus_rate))
        from canwire import CanWire

        if self._wire is not None:
            self._wire.close()
        self._wire = CanWire(host, int(port), _board()["name"])
        self._wire.set_filters(self._filters)
        self._bitrate = bitrate
        self._sjw = sjw
        self._queued = []

    def deinit(self):
        if self._wire is not None:
            self._wire.close()
            self._wire = None

    def _need(self):
        if self._wire is None:
            raise OSError(22)  # EINVAL: not initialised
        return self._wire

    def set_filters(self, filters):
        # The bus applies them (as a controller does, sparing the CPU every other frame);
        # _accepts() still checks what was already on its way.
        if filters is not None:
            filters = tuple(filters)
            self._check_filters(filters)
        self._filters = filters
        if self._wire is not None:
            self._wire.set_filters(filters)

    def _check_filters(self, filters):
        if len(filters) > CAN.FILTERS_MAX:
            raise ValueError("too many filters")
        for f in filters:
            lim = (1 << 29) if f[2] & CAN.FLAG_EXT_ID else (1 << 11)
            if not 0 <= f[0] < lim or not 0 <= f[1] < lim:
                raise ValueError("invalid id")

    def _accepts(self, can_id, flags):
        if self._filters is None:
            return True
        ext = flags & CAN.FLAG_EXT_ID
        for fid, mask, fflags in self._filters:
            if (fflags & CAN.FLAG_EXT_ID) == ext and (can_id & mask) == (fid & mask):
                return True
        return False

    def _sync_tx(self):
        # Frames confirmed sent leave the queue, oldest first.
        w = self._wire
        while len(self._queued) > w.pending:
            self._queued.pop(0)
            self._flags |= CAN.IRQ_TX

    def send(self, id, data, flags=0):
        if len(data) > 8:
            raise OverflowError("data too long")
        if not 0 <= id < ((1 << 29) if flags & CAN.FLAG_EXT_ID else (1 << 11)):
            raise ValueError("invalid id")
        w = self._need()
        if w.state() == CAN.STATE_BUS_OFF:
            raise OSError(5)  # EIO
        self._sync_tx()
        if len(self._queued) >= CAN.TX_QUEUE_LEN:
            return None
        if not flags & CAN.FLAG_UNORDERED and id in self._queued:
            return None
        if not w.send(id, data, flags & (CAN.FLAG_RTR | CAN.FLAG_EXT_ID)):
            return None
        self._queued.append(id)
        return len(self._queued) - 1

    def recv(self, arg=None):
        w = self._need()
        while True:
            f = w.recv()
            if f is None:
                return None
            if self._accepts(f[0], f[2]):
                break
        can_id, data, flags = f
        # The caller's list is reused as on the board; its memoryview is
        # replaced by one over this frame's bytes (the simulation's only copy).
        if arg is None:
            arg = [0, None, 0, 0]
        arg[0] = can_id
        arg[1] = memoryview(data)
        arg[2] = flags & (CAN.FLAG_RTR | CAN.FLAG_EXT_ID)
        arg[3] = 0
        return arg

    def irq(self, handler=None, trigger=0, hard=False):
        if handler is None and trigger == 0:
            return _CanIrq(self)
        self._handler = handler
        self._trigger = trigger
        if self._watch is None and self._wire is not None:
            self._watch = _world_watch(self._wire._sock, self._fire)
        return _CanIrq(self)

    def _fire(self):
        w = self._wire
        if w is None:
            return
        w.poll()
        self._sync_tx()
        if w.any():
            self._flags |= CAN.IRQ_RX
        if self._handler is not None and self._flags & self._trigger:
            self._handler(self)

    def state(self):
        if self._wire is None:
            return CAN.STATE_STOPPED
        return self._wire.state()

    def restart(self):
        self._need().restart()
        self._queued = []

    def cancel_send(self, idx):
        if not 0 <= idx < CAN.TX_QUEUE_LEN:
            raise IndexError("index out of range")
        return False  # frames reach the simulated bus at once: nothing left to cancel

    def get_counters(self, l=None):
        c = self._need().counters() or [None] * 8
        out = list(c[:8])
        if l is not None:
            l[: len(out)] = out
            return l
        return out

    def get_timings(self, l=None):
        out = [self._bitrate, self._sjw, None, None, None, None]
        if l is not None:
            l[:6] = out
            return l
        return out


class _CanIrq:
    def __init__(self, can):
        self.can = can

    def flags(self):
        f = self.can._flags
        self.can._flags = 0
        return f


def _world_watch(sock, fn):
    from _world import watch

    return watch(sock, fn)
