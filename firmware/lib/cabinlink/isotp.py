# ISO 15765-2 (ISO-TP) on classic CAN with normal fixed addressing (29-bit ids
# 0x18DA<TA><SA> physical, 0x18DB<TA><SA> functional; spec section 7.4).
# A Channel is one ISO-TP connection: it segments one outgoing message and
# reassembles one incoming message at a time. It is transport-agnostic: the
# owner demultiplexes CAN frames by their whole 29-bit id, hands this channel's
# frames to on_frame(), calls poll() often, and gives it a send_frame(can_id,
# data) -> bool that returns False while the controller's TX queue is full.
# send_frame gets a view of our 8-byte frame buffer, valid during the call
# only; it must queue the frame, never call back into this channel.
# on_message(payload) gets a memoryview of the rx buffer, valid during the call.
# FC frames go out on tx_id and come in through on_frame() like any frame.
# Malformed or unexpected frames never raise: they are dropped and counted.
# Memory: one rx buffer of rx_max bytes and one 8-byte frame buffer, allocated
# here; receiving and sending frames allocates nothing.
# Timers (ms, via clock.ticks_ms/ticks_diff only): N_As bounds how long a frame
# (ours or our FC) may wait for the controller, N_Bs how long we wait for an
# FC, N_Cr how long we wait for the next CF.
try:
    from micropython import const
except ImportError:  # CPython (host tools)
    def const(x):
        return x


PRIO_EVENT = const(3)
PRIO_NORMAL = const(6)
KIND_PHYS = const(0xDA)  # PF of a physically addressed (one to one) ISO-TP id
KIND_FUNC = const(0xDB)  # PF of a functionally addressed (one to all) ISO-TP id
MAX_LEN = const(4095)  # 12-bit FF_DL: the classic CAN limit

# Protocol control information: high nibble of byte 0
_PCI_SF = const(0)
_PCI_FF = const(1)
_PCI_CF = const(2)
_PCI_FC = const(3)
# Flow status of an FC
_FS_CTS = const(0)
_FS_WAIT = const(1)
_FS_OVFLW = const(2)

_TX_IDLE = const(0)
_TX_SF = const(1)  # single frame waiting for the controller
_TX_FF = const(2)  # first frame waiting for the controller
_TX_WAIT_FC = const(3)  # N_Bs running
_TX_CF = const(4)  # sending consecutive frames

_RX_IDLE = const(0)
_RX_CF = const(1)  # N_Cr running (unless an FC is still to be sent)


def phys_id(prio, ta, sa):
    return (prio << 26) | 0xDA0000 | (ta << 8) | sa


def func_id(prio, ta, sa):
    return (prio << 26) | 0xDB0000 | (ta << 8) | sa


def parse_id(can_id):
    # -> (prio, KIND_PHYS or KIND_FUNC, ta, sa), or None when can_id is not a
    # normal fixed ISO-TP id (J1939 layout: prio 28..26, EDP 25, DP 24, PF, PS, SA).
    if can_id < 0 or can_id >> 29 or (can_id >> 24) & 3:
        return None
    kind = (can_id >> 16) & 0xFF
    if kind != KIND_PHYS and kind != KIND_FUNC:
        return None
    return (can_id >> 26, kind, (can_id >> 8) & 0xFF, can_id & 0xFF)


def stmin_ms(v):
    # STmin byte -> whole milliseconds a sender waits. 0x00-0x7F are ms;
    # 0xF1-0xF9 are 100-900 us, rounded up to 1 ms on a ms clock; every other
    # value is reserved and the standard has the sender use the longest, 127 ms.
    if v <= 0x7F:
        return v
    if 0xF1 <= v <= 0xF9:
        return 1
    return 127


class Channel:
    def __init__(self, clock, send_frame, tx_id, rx_max=4095, bs=0, stmin=0, pad=0xCC,
                 n_bs=1000, n_cr=1000, n_as=1000, wft_max=10, on_message=None):
        if not 7 <= rx_max <= MAX_LEN:
            raise ValueError("rx_max")
        if not 0 <= bs <= 255:
            raise ValueError("bs")
        if not (0 <= stmin <= 0x7F or 0xF1 <= stmin <= 0xF9):
            raise ValueError("stmin")
        if pad is not None and not 0 <= pad <= 255:
            raise ValueError("pad")
        self.clock = clock
        self.send_frame = send_frame
        self.tx_id = tx_id
        self.rx_max = rx_max
        self.bs = bs  # what we ask of a sender in our FCs
        self.stmin = stmin  # raw STmin byte for our FCs
        self.pad = pad
        self.n_bs = n_bs
        self.n_cr = n_cr
        self.n_as = n_as  # also bounds our own FC sends (N_Ar)
        self.wft_max = wft_max
        self.on_message = on_message
        # Functional addressing carries single frames only: no FC can answer.
        p = parse_id(tx_id)
        self._sf_only = p is not None and p[1] == KIND_FUNC
        self._fb = bytearray(8)
        mv = memoryview(self._fb)
        self._fv = [mv[:n] for n in range(9)]
        self._rxbuf = bytearray(rx_max)
        mv = memoryview(self._rxbuf)
        self._rxv = [mv[:n] for n in range(8)]  # single-frame messages: no slicing
        self._rxmv = mv
        self.rx_frames = 0  # every frame given to on_frame
        self.rx_ok = 0  # messages delivered
        self.rx_dropped = 0  # frames ignored: malformed, unexpected, SN mismatch, too long
        self.rx_aborted = 0  # receptions given up for a new SF/FF, an SN mismatch, abort()
        self.rx_timeouts = 0  # receptions given up on N_Cr, or our FC not sent within N_Ar
        self.tx_ok = 0
        self.tx_failed = 0
        self.last_error = None
        self._tx_reset()
        self._rx_reset()

    # ---- public -------------------------------------------------------

    @property
    def tx_busy(self):
        return self._tx_state != _TX_IDLE

    @property
    def rx_busy(self):
        return self._rx_state != _RX_IDLE or self._fc_fs >= 0

    def send(self, payload):
        # Queue one message; False if one is in progress, it is empty or too long.
        # bytes are kept by reference; any other buffer is copied once, so the
        # caller may reuse its buffer at once.
        n = len(payload)
        if self._tx_state != _TX_IDLE or n == 0 or n > MAX_LEN or (self._sf_only and n > 7):
            return False
        self._tx = payload if isinstance(payload, bytes) else bytes(payload)
        self._tx_len = n
        self._tx_state = _TX_SF if n <= 7 else _TX_FF
        self._tx_retry = False
        self._tx_pump(self.clock.ticks_ms())
        return True

    def on_frame(self, data):
        self.rx_frames += 1
        n = len(data)
        if n == 0 or n > 8:
            return self._drop("length")
        t = data[0] >> 4
        if t == _PCI_CF:
            return self._rx_cf(data, n)
        if t == _PCI_FC:
            return self._rx_fc(data, n)
        if t == _PCI_SF:
            ln = data[0] & 0xF
            # SF_DL 0 is the CAN FD escape and 8..15 do not fit: not classic CAN.
            if ln == 0 or ln > 7 or n < ln + 1:
                return self._drop("bad SF")
            self._rx_preempt()
            b = self._rxbuf
            for i in range(ln):
                b[i] = data[i + 1]
            return self._deliver(self._rxv[ln])
        if t == _PCI_FF:
            # An FF always fills the frame (8 bytes on classic CAN).
            if n < 8:
                return self._drop("bad FF")
            ln = ((data[0] & 0xF) << 8) | data[1]
            # FF_DL below 8 would have been an SF; 0 is the CAN FD escape.
            if ln < 8:
                return self._drop("bad FF")
            self._rx_preempt()
            now = self.clock.ticks_ms()
            if ln > self.rx_max:
                self._drop("overflow")
                self._fc_fs = _FS_OVFLW
                self._fc_t = now
                self._send_fc(now)
                return
            b = self._rxbuf
            for i in range(6):
                b[i] = data[i + 2]
            self._rx_len = ln
            self._rx_pos = 6
            self._rx_sn = 1
            self._rx_blk = 0
            self._rx_state = _RX_CF
            self._fc_fs = _FS_CTS
            self._fc_t = now
            self._send_fc(now)
            return
        return self._drop("bad PCI")

    def poll(self):
        now = self.clock.ticks_ms()
        if self._fc_fs >= 0:
            self._send_fc(now)
        elif self._rx_state == _RX_CF and self.clock.ticks_diff(now, self._rx_t) > self.n_cr:
            self._rx_reset()
            self.rx_timeouts += 1
            self.last_error = "N_Cr"
        if self._tx_state != _TX_IDLE:
            self._tx_pump(now)

    def abort(self):
        if self._tx_state != _TX_IDLE:
            self.tx_failed += 1
            self.last_error = "abort"
        if self._rx_state != _RX_IDLE:
            self.rx_aborted += 1
            self.last_error = "abort"
        self._tx_reset()
        self._rx_reset()

    # ---- receiving ----------------------------------------------------

    def _rx_reset(self):
        self._rx_state = _RX_IDLE
        self._rx_len = 0
        self._rx_pos = 0
        self._rx_sn = 0
        self._rx_blk = 0
        self._rx_t = 0
        self._fc_fs = -1  # FC still to send (the controller was full), or -1
        self._fc_t = 0

    def _drop(self, why):
        self.rx_dropped += 1
        self.last_error = why

    def _rx_preempt(self):
        # ISO 15765-2: an SF or FF during a reception ends that reception and
        # starts a new one. A pending OVFLW FC is simply superseded.
        if self._rx_state != _RX_IDLE:
            self.rx_aborted += 1
            self.last_error = "preempted"
        self._rx_reset()

    def _deliver(self, mv):
        self.rx_ok += 1
        cb = self.on_message
        if cb is not None:
            cb(mv)

    def _rx_cf(self, data, n):
        # A CF is expected only in a reception whose FC has gone out.
        if self._rx_state != _RX_CF or self._fc_fs >= 0:
            return self._drop("unexpected CF")
        if data[0] & 0xF != self._rx_sn:
            self._rx_reset()
            self.rx_aborted += 1
            return self._drop("SN")
        pos = self._rx_pos
        k = self._rx_len - pos
        if k > 7:
            k = 7
        # Unpadded frames may be short, but never shorter than their data.
        if n < k + 1:
            return self._drop("short CF")
        b = self._rxbuf
        for i in range(k):
            b[pos + i] = data[i + 1]
        pos += k
        self._rx_pos = pos
        self._rx_sn = (self._rx_sn + 1) & 0xF  # 15 wraps to 0
        now = self.clock.ticks_ms()
        self._rx_t = now
        if pos >= self._rx_len:
            self._rx_state = _RX_IDLE
            return self._deliver(self._rxmv[:pos])
        if self.bs:
            self._rx_blk += 1
            if self._rx_blk >= self.bs:
                # End of a block: the sender waits for our next FC.
                self._rx_blk = 0
                self._fc_fs = _FS_CTS
                self._fc_t = now
                self._send_fc(now)

    def _send_fc(self, now):
        fs = self._fc_fs
        f = self._fb
        f[0] = 0x30 | fs
        f[1] = self.bs
        f[2] = self.stmin
        if self._put(3):
            self._fc_fs = -1
            self._rx_t = now  # N_Cr runs from the FC on
        elif self.clock.ticks_diff(now, self._fc_t) > self.n_as:
            if self._rx_state != _RX_IDLE:
                self.rx_timeouts += 1
            self._rx_reset()
            self.last_error = "N_Ar"

    def _put(self, n):
        # Pad the frame in _fb to 8 bytes (unless padding is off) and offer it.
        p = self.pad
        if p is not None:
            f = self._fb
            while n < 8:
                f[n] = p
                n += 1
        return self.send_frame(self.tx_id, self._fv[n])

    # ---- sending ------------------------------------------------------

    def _tx_reset(self):
        self._tx_state = _TX_IDLE
        self._tx = None
        self._tx_len = 0
        self._tx_pos = 0
        self._tx_sn = 0
        self._tx_bs = 0  # block size the receiver asked for
        self._tx_blk = 0  # CFs sent in the current block
        self._tx_gap = 0  # ticks between CFs
        self._tx_wft = 0  # WAITs in a row
        self._tx_t = 0  # N_Bs start, or N_As start while retrying
        self._tx_last = 0  # when the last CF went out
        self._tx_retry = False

    def _tx_fail(self, why):
        self._tx_reset()
        self.tx_failed += 1
        self.last_error = why

    def _tx_refused(self, now):
        # The controller refused the frame: retry on a later poll within N_As.
        if not self._tx_retry:
            self._tx_retry = True
            self._tx_t = now
        elif self.clock.ticks_diff(now, self._tx_t) > self.n_as:
            self._tx_fail("N_As")

    def _rx_fc(self, data, n):
        if self._tx_state != _TX_WAIT_FC:
            return self._drop("unexpected FC")
        if n < 3:
            return self._drop("bad FC")
        fs = data[0] & 0xF
        now = self.clock.ticks_ms()
        if fs == _FS_CTS:
            self._tx_bs = data[1]
            ms = stmin_ms(data[2])
            # A tick difference of d only proves more than d - 1 ms went by,
            # so wait one tick more than STmin to be sure of the minimum.
            self._tx_gap = ms + 1 if ms else 0
            self._tx_blk = 0
            self._tx_wft = 0
            self._tx_state = _TX_CF
            self._tx_retry = False
            self._tx_pump(now)
        elif fs == _FS_WAIT:
            self._tx_wft += 1
            if self._tx_wft > self.wft_max:
                self._tx_fail("WFTmax")
            else:
                self._tx_t = now  # N_Bs again
        elif fs == _FS_OVFLW:
            self._tx_fail("overflow")
        else:
            self._tx_fail("bad FS")

    def _tx_pump(self, now):
        st = self._tx_state
        f = self._fb
        tx = self._tx
        if st == _TX_SF:
            n = self._tx_len
            f[0] = n
            for i in range(n):
                f[i + 1] = tx[i]
            if self._put(n + 1):
                self._tx_reset()
                self.tx_ok += 1
            else:
                self._tx_refused(now)
        elif st == _TX_FF:
            n = self._tx_len
            f[0] = 0x10 | (n >> 8)
            f[1] = n & 0xFF
            for i in range(6):
                f[i + 2] = tx[i]
            if self._put(8):
                self._tx_pos = 6
                self._tx_sn = 1
                self._tx_wft = 0
                self._tx_retry = False
                self._tx_state = _TX_WAIT_FC
                self._tx_t = now
            else:
                self._tx_refused(now)
        elif st == _TX_WAIT_FC:
            if self.clock.ticks_diff(now, self._tx_t) > self.n_bs:
                self._tx_fail("N_Bs")
        elif st == _TX_CF:
            # STmin also separates the last CF of a block from the first of the next.
            while True:
                pos = self._tx_pos
                if pos > 6 and self._tx_gap and self.clock.ticks_diff(now, self._tx_last) < self._tx_gap:
                    return
                k = self._tx_len - pos
                if k > 7:
                    k = 7
                f[0] = 0x20 | self._tx_sn
                for i in range(k):
                    f[i + 1] = tx[pos + i]
                if not self._put(k + 1):
                    return self._tx_refused(now)
                self._tx_retry = False
                self._tx_last = now
                pos += k
                self._tx_pos = pos
                self._tx_sn = (self._tx_sn + 1) & 0xF
                if pos >= self._tx_len:
                    self._tx_reset()
                    self.tx_ok += 1
                    return
                if self._tx_bs:
                    self._tx_blk += 1
                    if self._tx_blk >= self._tx_bs:
                        self._tx_state = _TX_WAIT_FC
                        self._tx_t = now
                        return
                if self._tx_gap:
                    return
