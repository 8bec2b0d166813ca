# Microchip MCP2515 CAN controller on SPI, with MicroPython's machine.CAN API
# (send/recv/set_filters/irq/state/restart/get_counters/init, same constants), so
# code written for machine.CAN - cabinlink.can_link.CanLink included - runs on a
# board without an on-chip CAN controller (stock ESP32 MicroPython has none).
#
#     spi = SPI(2, baudrate=8_000_000, sck=Pin(18), mosi=Pin(23), miso=Pin(19))
#     can = MCP2515(spi, Pin(5, Pin.OUT, value=1), Pin(4, Pin.IN), 500_000, osc=8_000_000)
#
# The caller creates the SPI bus and the pins (CS an output, INT an input; the
# INT output is push-pull, no pull-up needed); nothing touches the chip before
# the constructor. SPI mode 0, up to 10 MHz.
#
# Differences from machine.CAN, all from the chip:
# - TX_QUEUE_LEN 3 (three TX buffers), FILTERS_MAX 6, and at most two distinct
#   masks: RXB0 has one mask and 2 filters, RXB1 one mask and 4 filters. Filters
#   that share a mask share a hardware mask; anything else raises ValueError.
# - The chip leaves bus-off by itself after 128 x 11 recessive bits; the driver
#   overrides that as machine.CAN behaves (spec 7.7): once it sees TXBO (the INT
#   pin's error flag, a send, state()) it aborts the pending frames and reports
#   STATE_BUS_OFF, refusing to send, until restart() (a full re-initialisation:
#   TEC/REC cleared, pending frames dropped).
# - MODE_LOOPBACK and MODE_SILENT_LOOPBACK are both the chip's loopback mode,
#   which never drives the bus; MODE_SILENT is listen-only.
# - Bit timings come from a table for 8 and 16 MHz crystals (see _TIMINGS) unless
#   tseg1/tseg2 are given; sample_point is not used.
# - rx_overruns counts RX0OVR/RX1OVR flags seen (one flag may stand for several
#   lost frames); n_warn/n_passive/n_busoff count the error-state changes the driver sees
#   (every state(), get_counters(), recv() with an error flag, INT service).
try:
    from micropython import const
except ImportError:
    def const(x):
        return x

import time

# instructions
_RESET = const(0xC0)
_READ = const(0x03)
_WRITE = const(0x02)
_BITMOD = const(0x05)
_READ_STATUS = const(0xA0)
_LOAD_TX = const(0x40)
_READ_RX = const(0x90)
# registers
_CANSTAT = const(0x0E)
_CANCTRL = const(0x0F)
_TEC = const(0x1C)
_CNF3 = const(0x28)
_CANINTE = const(0x2B)
_CANINTF = const(0x2C)
_EFLG = const(0x2D)
_TXB0CTRL = const(0x30)
_RXB0CTRL = const(0x60)
_RXB1CTRL = const(0x70)
_RXF0 = const(0x00)
_RXF3 = const(0x10)
_RXM0 = const(0x20)
# bits
_TXREQ = const(0x08)
_ABTF = const(0x40)
_ERRIF = const(0x20)
_MERRF = const(0x80)
_WAKIF = const(0x40)
_TXBO = const(0x20)
_ABAT = const(0x10)  # CANCTRL: abort all pending transmissions
_TXEP = const(0x10)
_RXEP = const(0x08)
_EWARN = const(0x01)
_OVR = const(0xC0)  # RX0OVR | RX1OVR
_BUKT = const(0x04)
_RXM_ANY = const(0x60)
_EXIDE = const(0x08)
_OPMOD_CONFIG = const(4)
_ENODEV = const(19)
_EIO = const(5)
_EINVAL = const(22)
_ETIMEDOUT = const(116)

# Bit timing: (crystal, bit rate) -> (BRP+1, PropSeg, PS1, PS2, SAM), times in TQ.
# TQ = 2 * (BRP+1) / f_osc; bit = 1 (sync) + PropSeg + PS1 + PS2 TQ; the sample
# point is at the end of PS1. Chip rules: PropSeg 1..8, PS1 1..8, PS2 2..8,
# PropSeg + PS1 >= PS2, SJW <= PS2, so a bit has 5..25 TQ.
#   8 MHz  500k: TQ 250 ns,  8 TQ = 1+1+3+3 = 2.000 us -> CNF 0x00/0x90/0x82, SP 62.5 %
#   8 MHz  250k: TQ 250 ns, 16 TQ = 1+1+7+7 = 4.000 us -> 0x00/0xF0/0x86, SP 56.25 %
#   8 MHz  125k: TQ 500 ns, 16 TQ              = 8.000 us -> 0x01/0xF0/0x86
#   8 MHz 1000k: 1 us is 4 TQ of 250 ns (the shortest TQ), below the 5 TQ minimum:
#                not possible -> ValueError
#  16 MHz 1000k: TQ 125 ns,  8 TQ = 1+1+3+3 = 1.000 us -> 0x00/0x90/0x82, SP 62.5 %
#  16 MHz  500k: TQ 125 ns, 16 TQ = 1+1+7+7 = 2.000 us -> 0x00/0xF0/0x86, SP 56.25 %
#  16 MHz  250k: TQ 250 ns, 16 TQ              = 4.000 us -> 0x01/0xF0/0x86
#  16 MHz  125k: TQ 500 ns, 16 TQ              = 8.000 us -> 0x03/0xF0/0x86
# (CNF2 = BTLMODE | SAM << 6 | (PS1-1) << 3 | (PropSeg-1); CNF3 = SOF | (PS2-1);
# CNF1 = (SJW-1) << 6 | BRP.) The 500k rows are the values in common use.
_TIMINGS = {
    (8000000, 500000): (1, 1, 3, 3, 0),
    (8000000, 250000): (1, 1, 7, 7, 1),
    (8000000, 125000): (2, 1, 7, 7, 1),
    (16000000, 1000000): (1, 1, 3, 3, 0),
    (16000000, 500000): (1, 1, 7, 7, 1),
    (16000000, 250000): (2, 1, 7, 7, 1),
    (16000000, 125000): (4, 1, 7, 7, 1),
}
# machine.CAN mode -> REQOP
_REQOP = (0, 1, 2, 3, 2)


def _popcount3(x):
    return (x & 1) + ((x >> 1) & 1) + ((x >> 2) & 1)


def _arb_tail(can_id, ext, rtr):
    # What follows the 11-bit base id in arbitration (lower wins): a standard data
    # frame, then a standard remote frame, then any extended frame by its 18 bits.
    # Kept apart from the base id so every value stays a small int (no heap).
    if ext:
        return 2 + (((can_id & 0x3FFFF) << 1) | rtr)
    return rtr


def _id_regs(buf, pos, hw_id, ext):
    # SIDH, SIDL, EID8, EID0 of a 29-bit hardware id (standard: id << 18).
    sid = hw_id >> 18
    eid = hw_id & 0x3FFFF
    buf[pos] = sid >> 3
    buf[pos + 1] = ((sid & 7) << 5) | (_EXIDE if ext else 0) | (eid >> 16)
    buf[pos + 2] = (eid >> 8) & 0xFF
    buf[pos + 3] = eid & 0xFF


class _Irq:
    def __init__(self, can):
        self._can = can

    def flags(self):
        return self._can._flags()


class MCP2515:
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
    RX_QUEUE_LEN = 2  # RXB0 + RXB1: frames that can wait for the next poll
    FILTERS_MAX = 6

    def __init__(self, spi, cs, int_pin=None, bitrate=None, *, osc=8000000, **kw):
        self._spi = spi
        self._cs = cs
        self._int = int_pin
        self._osc = osc
        self._t = bytearray(14)
        self._r = bytearray(14)
        tv = memoryview(self._t)
        rv = memoryview(self._r)
        self._tv = [tv[:n] for n in range(15)]
        self._rv = [rv[:n] for n in range(15)]
        self._ready = False
        self._params = None
        self._tseg = (0, 0)
        self._mode = 0
        self._filters = ()  # nothing is received until set_filters()
        self._plan = None
        self._txp = bytearray(3)
        # per TX buffer: base id and the rest of the arbitration field (see
        # _arb_tail), the id and its kind (for the duplicate check), a sequence number
        self._tx_base = [0, 0, 0]
        self._tx_tail = [0, 0, 0]
        self._tx_id = [-1, -1, -1]
        self._tx_ext = [0, 0, 0]
        self._tx_seq = [0, 0, 0]
        self._seq = 0
        self._handler = None
        self._trigger = 0
        self._irq = _Irq(self)
        self._events = 0  # IRQ_RX / IRQ_STATE seen, not yet returned by flags()
        self._tx_done = 0  # buffers sent (bit n), not yet returned by flags()
        self._tx_failed = 0
        self._rx_reported = False
        self._busy = 0
        self._in_handler = False
        self._int_pending = False
        self._state = 0
        self._irq_state = 0
        self._n_warn = 0
        self._n_passive = 0
        self._n_busoff = 0
        self._off = False  # bus-off seen, not yet restart()ed
        self._overruns = 0
        self._ovr = False
        self._rxb1_first = False
        self._vlist = None
        self._views = None
        cs(1)
        if bitrate is not None:
            self.init(bitrate, **kw)

    # --- SPI -----------------------------------------------------------------
    def _xfer(self, n):
        cs = self._cs
        cs(0)
        self._spi.write_readinto(self._tv[n], self._rv[n])
        cs(1)

    def _rd(self, addr):
        t = self._t
        t[0] = _READ
        t[1] = addr
        t[2] = 0
        self._xfer(3)
        return self._r[2]

    def _wr(self, addr, val):
        t = self._t
        t[0] = _WRITE
        t[1] = addr
        t[2] = val
        self._xfer(3)

    def _mod(self, addr, mask, val):
        t = self._t
        t[0] = _BITMOD
        t[1] = addr
        t[2] = mask
        t[3] = val
        self._xfer(4)

    def _read_status(self):
        t = self._t
        t[0] = _READ_STATUS
        t[1] = 0
        self._xfer(2)
        return self._r[1]

    # --- re-entrancy: an INT edge during an SPI sequence waits for its end ----
    def _enter(self):
        self._busy += 1

    def _leave(self):
        self._busy -= 1
        if not self._busy and self._int_pending and not self._in_handler:
            self._on_int(None)

    # --- set-up ----------------------------------------------------------------
    def _timing(self, bitrate, sjw, tseg1, tseg2):
        if (tseg1 is None) != (tseg2 is None):
            raise ValueError("tseg1 and tseg2 must be given together")
        if not 1 <= sjw <= 4:
            raise ValueError("invalid sjw")
        if tseg1 is None:
            t = _TIMINGS.get((self._osc, bitrate))
            if t is None:
                raise ValueError("bitrate not possible with this crystal")
            brp, prop, ps1, ps2, sam = t
        else:
            if not (2 <= tseg1 <= 16 and 2 <= tseg2 <= 8 and tseg1 >= tseg2):
                raise ValueError("invalid tseg")
            n = 1 + tseg1 + tseg2
            brp = self._osc // (2 * bitrate * n)
            if not 1 <= brp <= 64 or 2 * brp * n * bitrate != self._osc:
                raise ValueError("bitrate not possible with this crystal")
            ps1 = min(8, tseg1 - 1)
            prop = tseg1 - ps1
            ps2 = tseg2
            sam = 0
        if sjw > ps2:
            raise ValueError("invalid sjw")
        return (((sjw - 1) << 6) | (brp - 1),
                0x80 | (sam << 6) | ((ps1 - 1) << 3) | (prop - 1),
                0x80 | (ps2 - 1),
                prop + ps1, ps2)

    def init(self, bitrate=500000, mode=0, sample_point=75, sjw=1, tseg1=None, tseg2=None):
        if not 0 <= mode <= 4:
            raise ValueError("invalid mode")
        cnf1, cnf2, cnf3, ts1, ts2 = self._timing(bitrate, sjw, tseg1, tseg2)
        self._enter()
        try:
            self._ready = False
            self._t[0] = _RESET
            self._xfer(1)
            time.sleep_ms(2)  # oscillator start-up after reset
            if self._rd(_CANSTAT) >> 5 != _OPMOD_CONFIG:
                raise OSError(_ENODEV)  # no MCP2515 answers
            t = self._t
            t[0] = _WRITE
            t[1] = _CNF3
            t[2] = cnf3
            t[3] = cnf2  # CNF3, CNF2, CNF1 are consecutive registers
            t[4] = cnf1
            self._xfer(5)
            for b in range(3):
                self._wr(_TXB0CTRL + 16 * b, 0)
            self._txp[0] = self._txp[1] = self._txp[2] = 0
            self._params = (bitrate, mode, sample_point, sjw, tseg1, tseg2)
            self._tseg = (ts1, ts2)
            self._write_filters()
            self._wr(_CANINTF, 0)
            self._wr(_CANINTE, self._inte())
            self._set_mode(_REQOP[mode])
            self._mode = mode
            self._events = self._tx_done = self._tx_failed = 0
            self._state = self._irq_state = self.STATE_ACTIVE
            self._off = False
            self._ovr = False
            self._ready = True
            if self._int is not None:
                self._int.irq(handler=self._on_int, trigger=self._int.IRQ_FALLING)
        finally:
            self._leave()

    def deinit(self):
        if self._int is not None:
            self._int.irq(handler=None)
        if self._ready:
            self._enter()
            try:
                self._set_mode(_OPMOD_CONFIG)
            finally:
                self._leave()
        self._ready = False
        self._state = self.STATE_STOPPED

    def _set_mode(self, reqop):
        self._mod(_CANCTRL, 0xE0, reqop << 5)
        for _ in range(100):
            if self._rd(_CANSTAT) >> 5 == reqop:
                return
            time.sleep_ms(1)
        raise OSError(_ETIMEDOUT)

    def _inte(self):
        # RX flags only when asked for (an unread RX flag would hold INT low),
        # TX flags for IRQ_TX, error flag always (the driver clears it itself).
        v = _ERRIF if self._int is not None else 0
        if self._trigger & self.IRQ_RX:
            v |= 0x03
        if self._trigger & (self.IRQ_TX | self.IRQ_TX_FAILED):
            v |= 0x1C
        return v

    def _need(self):
        if not self._ready:
            raise OSError(_EINVAL)

    # --- filters -----------------------------------------------------------------
    def set_filters(self, filters):
        if filters is None:
            plan = None
            self._filters = None
        else:
            filters = tuple(filters)
            if len(filters) > self.FILTERS_MAX:
                raise ValueError("too many filters")
            plan = self._make_plan(filters) if filters else None
            self._filters = filters
        self._plan = plan
        if self._ready:
            self._enter()
            try:
                self._set_mode(_OPMOD_CONFIG)
                self._write_filters()
                self._set_mode(_REQOP[self._mode])
            finally:
                self._leave()

    def _make_plan(self, filters):
        # Group filters by their hardware mask (29 bits, a standard id in the top
        # 11); at most two groups: one for RXB0 (<= 2 filters), one for RXB1 (<= 4).
        groups = []
        for f in filters:
            fid, fmask, flags = f[0], f[1], f[2]
            ext = 1 if flags & self.FLAG_EXT_ID else 0
            lim = (1 << 29) if ext else (1 << 11)
            if not (0 <= fid < lim and 0 <= fmask < lim):
                raise ValueError("invalid id")
            if ext:
                hm, hid = fmask, fid & fmask
            else:
                hm, hid = fmask << 18, (fid & fmask) << 18
            for g in groups:
                if g[0] == hm:
                    g[1].append((hid, ext))
                    break
            else:
                groups.append((hm, [(hid, ext)]))
        if len(groups) == 1:
            m, fl = groups[0]
            if len(fl) > 6:
                raise ValueError("filters need more than the MCP2515's 2 masks")
            b0 = (m, fl[:2])
            b1 = (m, fl[2:] or fl[:1])
        elif len(groups) == 2:
            a, b = groups
            if len(a[1]) <= 2 and len(b[1]) <= 4:
                b0, b1 = a, b
            elif len(b[1]) <= 2 and len(a[1]) <= 4:
                b0, b1 = b, a
            else:
                raise ValueError("filters need more than the MCP2515's 2 masks")
        else:
            raise ValueError("filters need more than the MCP2515's 2 masks")
        f0 = b0[1] + [b0[1][-1]] * (2 - len(b0[1]))
        f1 = b1[1] + [b1[1][-1]] * (4 - len(b1[1]))
        return (b0[0], b1[0], f0 + f1)

    def _write_filters(self):
        # Configuration mode only. None: masks and filters off; () : a filter on
        # the highest extended id with every mask bit set (frames that still
        # match are dropped by recv()).
        t = self._t
        plan = self._plan
        if self._filters is None:
            self._wr(_RXB0CTRL, _RXM_ANY | _BUKT)
            self._wr(_RXB1CTRL, _RXM_ANY)
            return
        if plan is None:
            plan = (0x1FFFFFFF, 0x1FFFFFFF, [(0x1FFFFFFF, 1)] * 6)
        t[0] = _WRITE
        for i in range(2):
            t[1] = _RXM0 + 4 * i
            _id_regs(t, 2, plan[i], 0)
            self._xfer(6)
        for i in range(6):
            hid, ext = plan[2][i]
            t[0] = _WRITE
            t[1] = (_RXF0 if i < 3 else _RXF3) + 4 * (i % 3)
            _id_regs(t, 2, hid, ext)
            self._xfer(6)
        self._wr(_RXB0CTRL, _BUKT)
        self._wr(_RXB1CTRL, 0)

    # --- transmit ------------------------------------------------------------------
    def send(self, id, data, flags=0):
        n = len(data)
        if n > 8:
            raise OverflowError("data too long")
        ext = 1 if flags & self.FLAG_EXT_ID else 0
        if not 0 <= id < ((1 << 29) if ext else (1 << 11)):
            raise ValueError("invalid id")
        self._need()
        rtr = 1 if flags & self.FLAG_RTR else 0
        self._enter()
        try:
            eflg = self._rd(_EFLG)
            if eflg & _TXBO or self._off:
                self._note(eflg)
                raise OSError(_EIO)
            st = self._read_status()
            pending = ((st >> 2) & 1) | ((st >> 3) & 2) | ((st >> 4) & 4)
            free = -1
            for i in range(3):
                if pending & (1 << i):
                    if (not flags & self.FLAG_UNORDERED and self._tx_id[i] == id
                            and self._tx_ext[i] == ext):
                        return None
                elif free < 0:
                    free = i
            if free < 0:
                return None
            t = self._t
            t[0] = _LOAD_TX | (free << 1)
            _id_regs(t, 1, (id << 18) if not ext else id, ext)
            t[5] = (0x40 if rtr else 0) | n
            if rtr:
                self._xfer(6)
            else:
                for k in range(n):
                    t[6 + k] = data[k]
                self._xfer(6 + n)
            self._seq = (self._seq + 1) & 0xFFFFFF
            self._tx_base[free] = id >> 18 if ext else id
            self._tx_tail[free] = _arb_tail(id, ext, rtr)
            self._tx_seq[free] = self._seq
            self._tx_id[free] = id
            self._tx_ext[free] = ext
            # TX priority: the frame that would win arbitration (then the older) first.
            pending |= 1 << free
            for i in range(3):
                if pending & (1 << i):
                    rank = 0
                    for j in range(3):
                        if j != i and pending & (1 << j) and self._before(j, i):
                            rank += 1
                    p = 3 - rank
                    if i == free:
                        self._txp[i] = p
                    elif self._txp[i] != p:
                        self._txp[i] = p
                        self._mod(_TXB0CTRL + 16 * i, 0x03, p)
            self._wr(_TXB0CTRL + 16 * free, _TXREQ | self._txp[free])
            return free
        finally:
            self._leave()

    def _before(self, j, i):
        # Does buffer j's frame leave before buffer i's?
        if self._tx_base[j] != self._tx_base[i]:
            return self._tx_base[j] < self._tx_base[i]
        if self._tx_tail[j] != self._tx_tail[i]:
            return self._tx_tail[j] < self._tx_tail[i]
        return (self._tx_seq[i] - self._tx_seq[j]) & 0xFFFFFF < 0x800000

    def cancel_send(self, idx):
        if not 0 <= idx < self.TX_QUEUE_LEN:
            raise IndexError("index out of range")
        self._need()
        self._enter()
        try:
            a = _TXB0CTRL + 16 * idx
            if not self._rd(a) & _TXREQ:
                return False
            self._mod(a, _TXREQ, 0)
            if self._rd(a) & _ABTF:
                self._tx_failed |= 1 << idx
                self._tx_done |= 1 << idx
                return True
            return False  # already on the bus: it completes
        finally:
            self._leave()

    # --- receive -------------------------------------------------------------------
    def recv(self, arg=None):
        self._need()
        self._enter()
        try:
            while True:
                intf = self._service(False)
                # RXB0 fills first and rolls over into RXB1, so RXB0 is the older
                # one - unless RXB0 was emptied while RXB1 stayed full: then RXB1.
                if intf & 0x02 and (self._rxb1_first or not intf & 0x01):
                    n = 1
                    self._rxb1_first = False
                elif intf & 0x01:
                    n = 0
                    self._rxb1_first = intf & 0x02 != 0
                else:
                    self._rxb1_first = False
                    return None
                errs = self.RECV_ERR_FULL if intf & 0x03 == 0x03 else 0
                if self._ovr:
                    errs |= self.RECV_ERR_OVERRUN
                    self._ovr = False
                self._t[0] = _READ_RX | (n << 2)
                self._xfer(14)  # SIDH..D7; RXnIF clears when CS rises
                if self._filters == ():
                    continue
                return self._unpack(arg, errs)
        finally:
            self._leave()

    def _unpack(self, arg, errs):
        r = self._r
        sidl = r[2]
        if sidl & _EXIDE:
            can_id = (r[1] << 21) | ((sidl >> 5) << 18) | ((sidl & 3) << 16) | (r[3] << 8) | r[4]
            flags = self.FLAG_EXT_ID
            rtr = r[5] & 0x40
        else:
            can_id = (r[1] << 3) | (sidl >> 5)
            flags = 0
            rtr = sidl & 0x10
        dlc = r[5] & 0x0F
        if dlc > 8:
            dlc = 8
        if arg is None:
            arg = [0, None, 0, 0]
        views = self._views if arg is self._vlist else self._new_views(arg)
        full = views[8]
        if rtr:
            flags |= self.FLAG_RTR
            for k in range(dlc):
                full[k] = 0
        else:
            for k in range(dlc):
                full[k] = r[6 + k]
        arg[0] = can_id
        arg[1] = views[dlc]
        arg[2] = flags
        arg[3] = errs
        return arg

    def _new_views(self, arg):
        # The caller's list is reused from now on: its memoryview (>= 8 bytes, else
        # a new one) gets one slice per length, so recv() never allocates again.
        # (A separate method: a comprehension in _unpack would cost a cell per call.)
        mv = arg[1]
        if not isinstance(mv, memoryview) or len(mv) < 8:
            mv = memoryview(bytearray(8))
        views = [mv[:k] for k in range(9)]
        self._vlist = arg
        self._views = views
        return views

    # --- interrupts ------------------------------------------------------------------
    def irq(self, handler=None, trigger=0, hard=False):
        if handler is None and trigger == 0:
            return self._irq
        self._handler = handler
        self._trigger = trigger
        if self._ready:
            self._enter()
            try:
                self._wr(_CANINTE, self._inte())
            finally:
                self._leave()
        return self._irq

    def _service(self, report_rx=True):
        # Read CANINTF; take TX-done and error flags off the chip (so INT can go
        # high again); note what happened for flags(). Returns CANINTF.
        intf = self._rd(_CANINTF)
        clear = intf & (0x1C | _MERRF | _WAKIF)
        if intf & 0x1C:
            self._tx_done |= (intf >> 2) & 0x07
        if intf & _ERRIF:
            clear |= _ERRIF
            eflg = self._rd(_EFLG)
            st = self._note(eflg)
            if st != self._irq_state:  # a state change IRQ_STATE has not told yet
                self._irq_state = st
                self._events |= self.IRQ_STATE
            if eflg & _OVR:
                self._overruns += ((eflg >> 6) & 1) + (eflg >> 7)
                self._ovr = True
                self._mod(_EFLG, _OVR, 0)
        if clear:
            self._mod(_CANINTF, clear, 0)
        if report_rx and intf & 0x03 and not self._rx_reported:
            self._rx_reported = True
            self._events |= self.IRQ_RX
        return intf

    def _on_int(self, pin):
        if self._busy or self._in_handler:
            self._int_pending = True
            return
        self._in_handler = True
        try:
            while True:
                self._int_pending = False
                self._rx_reported = False
                if self._ready:
                    self._busy += 1
                    try:
                        self._service()
                    finally:
                        self._busy -= 1
                h = self._handler
                if h is not None and self._pending() & self._trigger:
                    h(self)
                if not self._int_pending:
                    break
        finally:
            self._in_handler = False

    def _pending(self):
        return self._events | ((self.IRQ_TX | (self.IRQ_TX_FAILED if self._tx_failed else 0))
                               if self._tx_done else 0)

    def _flags(self):
        # One call, one TX completion; RX and STATE once each per occurrence.
        if not self._ready:
            return 0
        self._enter()
        try:
            self._service()
            f = self._events
            self._events = 0
            done = self._tx_done
            if done:
                i = 0 if done & 1 else 1 if done & 2 else 2
                self._tx_done &= ~(1 << i)
                f |= self.IRQ_TX | (i << self.IRQ_TX_IDX_SHIFT)
                if self._tx_failed & (1 << i):
                    self._tx_failed &= ~(1 << i)
                    f |= self.IRQ_TX_FAILED
            trig = self._trigger
            if not trig & (self.IRQ_TX | self.IRQ_TX_FAILED):
                f &= ~(self.IRQ_TX | self.IRQ_TX_FAILED | (0xFF << self.IRQ_TX_IDX_SHIFT))
            return f & (trig | (0xFF << self.IRQ_TX_IDX_SHIFT))
        finally:
            self._leave()

    # --- state and counters ----------------------------------------------------------
    def _note(self, eflg):
        if eflg & _TXBO or self._off:
            st = self.STATE_BUS_OFF
            if not self._off:
                # Bus-off stays until restart(), whatever the chip does by itself:
                # what waits in its TX buffers must not go out when it recovers.
                self._off = True
                self._mod(_CANCTRL, _ABAT, _ABAT)
        elif eflg & (_TXEP | _RXEP):
            st = self.STATE_PASSIVE
        elif eflg & _EWARN:
            st = self.STATE_WARNING
        else:
            st = self.STATE_ACTIVE
        old = self._state
        if st > old:
            if st >= self.STATE_WARNING > old:
                self._n_warn += 1
            if st >= self.STATE_PASSIVE > old:
                self._n_passive += 1
            if st == self.STATE_BUS_OFF:
                self._n_busoff += 1
        self._state = st
        return st

    def state(self):
        if not self._ready:
            return self.STATE_STOPPED
        self._enter()
        try:
            return self._note(self._rd(_EFLG))
        finally:
            self._leave()

    def restart(self):
        # Bus-off or not: start again (TEC/REC cleared, pending frames dropped).
        if self._params is None:
            raise OSError(_EINVAL)
        self.init(*self._params)

    def get_counters(self, l=None):
        self._need()
        self._enter()
        try:
            t = self._t
            t[0] = _READ
            t[1] = _TEC
            t[2] = t[3] = 0
            self._xfer(4)
            tec = self._r[2]
            rec = self._r[3]
            self._note(self._rd(_EFLG))
            st = self._read_status()
        finally:
            self._leave()
        tx = ((st >> 2) & 1) | ((st >> 3) & 2) | ((st >> 4) & 4)
        out = l if l is not None else [0] * 8
        out[0] = tec
        out[1] = rec
        out[2] = self._n_warn
        out[3] = self._n_passive
        out[4] = self._n_busoff
        out[5] = _popcount3(tx)
        out[6] = (st & 1) + ((st >> 1) & 1)
        out[7] = self._overruns
        return out

    def get_timings(self, l=None):
        self._need()
        p = self._params
        out = l if l is not None else [0] * 6
        out[0] = p[0]
        out[1] = p[3]
        out[2] = self._tseg[0]
        out[3] = self._tseg[1]
        out[4] = None
        out[5] = None
        return out
