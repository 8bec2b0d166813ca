"""Microchip MCP2515 stand-alone CAN controller at the register level: an SPI device that
is a node on a simulated CAN bus (:class:`~..canbus.SimBus`).

Modelled (datasheet DS20001801)
===============================
* **SPI instructions**, byte by byte within one chip-select: RESET 0xC0; READ 0x03 and
  WRITE 0x02 with an auto-incrementing address (wrapping at 0x7F); BIT MODIFY 0x05 (mask,
  data) - on a register that is not bit-modifiable the mask is forced to 0xFF, a plain
  byte write, as the datasheet says; READ STATUS 0xA0 and RX STATUS 0xB0 (repeated while
  clocked); RTS 0x80..0x87; LOAD TX BUFFER 0x40..0x45; READ RX BUFFER 0x90/0x92/0x94/0x96,
  whose RXnIF is cleared when CS rises. MISO reads 0xFF while instruction and address go in.
  Bit-modifiable registers: BFPCTRL, TXRTSCTRL, CANCTRL (all mirrors), CNF1-3, CANINTE,
  CANINTF, EFLG, TXBnCTRL, RXBnCTRL.
* **Registers**: CANSTAT (every xEh: OPMOD, ICOD of the highest-priority enabled flag) and
  CANCTRL (every xFh: REQOP, ABAT, OSM, CLKEN/CLKPRE; 0x87 after reset); read-only bits and
  unimplemented bits read as the datasheet gives them (TEC, REC, CANSTAT, RX buffers,
  ABTF/MLOA/TXERR, BUKT1, RXRTR, FILHIT are read-only; only RX0OVR/RX1OVR of EFLG are
  writable). Filters, masks and CNF1-3 are writable in configuration mode only; a TX
  buffer's registers are ignored while its TXREQ is set.
* **Modes**: configuration (after reset), normal, loopback (frames go from TX to RX inside
  the chip, nothing reaches the bus, bus frames are ignored), listen-only (receives, never
  transmits, never counts errors), sleep (bus activity sets WAKIF and wakes the chip into
  listen-only mode; the waking frame is lost).
* **Bit timing**: on leaving configuration mode the bit rate is computed from CNF1-3 and the
  oscillator: ``f_osc / (2 (BRP+1) (1 + PRSEG+1 + PHSEG1+1 + PS2))`` with PS2 = PHSEG2+1
  (BTLMODE=1) or max(PHSEG1+1, 2). Frames go on the bus only when it matches the bus bit
  rate within 0.5 %. Otherwise every transmission attempt fails (no ACK / bit errors): TEC
  += 8 per attempt, one attempt per frame time, up to bus-off; every frame on the bus is a
  receive error (REC += 1). The mismatched node does not disturb the others (simplified).
* **Transmission**: three TX buffers, TXREQ set by WRITE, BIT MODIFY or RTS; the pending
  buffer with the highest TXP goes first, equal TXP the higher buffer number. One frame is
  on the bus at a time; success clears TXREQ and sets TXnIF; errors set TXERR and MERRF and
  the bus retransmits automatically. Clearing TXREQ aborts a buffer that is waiting (ABTF);
  ABAT aborts all waiting buffers and holds transmission until cleared. A frame already
  handed to the bus is not withdrawn (the bus cannot cancel it); OSM is stored, not
  modelled (the bus always retransmits). DLC 9..15 is sent as 8 bytes.
* **Reception**: masks RXM0/RXM1 and filters RXF0-5 with standard and extended ids (filter
  EXIDE selects the frame type; for standard frames in RXM=00 the EID15:0 mask/filter bits
  are applied to data bytes 0 and 1 - bytes a frame does not carry are not compared, a
  choice of this model); RXB0 takes RXF0/1, RXB1 RXF2-5; RXM=11 receives everything. A
  frame for a full RXB0 rolls over into RXB1 when BUKT is set; a frame for a full buffer
  sets RXnOVR in EFLG and ERRIF. RX STATUS reports RXB0's message when both are full.
* **Interrupts**: CANINTF flags are set whatever CANINTE says; the INT pin (a
  :class:`SimPin` given to the constructor) is driven low while ``CANINTE & CANINTF`` is
  non-zero, high otherwise. ERRIF is set whenever an EFLG error-state bit changes (either
  way) and on a receive overflow; MERRF on every bus error this node takes part in.
* **Error confinement**: TEC and REC are the bus node's (the bus counts them by ISO
  11898-1, :mod:`..canbus`); EFLG's EWARN/RXWAR/TXWAR (>= 96), RXEP/TXEP (>= 128) and TXBO
  (TEC > 255) follow them. Bus-off is left **automatically** after 128 x 11 recessive bit
  times (modelled as that much time at the bus bit rate, whatever the traffic), TEC and
  REC back to 0 - unlike machine.CAN, which needs ``restart()``. RESET also zeroes TEC/REC.
  Test hooks: :meth:`Mcp2515.force_bus_off` (``hold=True``: the bus never shows 11
  recessive bits, as with a line stuck dominant, until :meth:`Mcp2515.release_bus_off`),
  ``bus.force_bus_off(chip.node)`` and ``bus.corrupt_next(...)`` work as well.

Not modelled: the TXnRTS and RXnBF pins (BFPCTRL/TXRTSCTRL are plain registers), CLKOUT,
one-shot mode, a mode change waiting for the transmission in progress (modes change at
once; a frame already on the bus still completes), the wake-up filter, oscillator
start-up time.

Threading: the world calls the SPI methods under its lock, the bus thread calls the bus
callbacks; every entry point takes ``lock`` - pass the world's lock (``world.lock``) so the
INT pin changes under it. Time-driven actions (bus-off recovery, failed attempts) run on
the model's timer thread, or, with ``timers=False``, when :meth:`Mcp2515.poll` is called
(tests with a manual ``clock``).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from ..canbus import STATE_BUS_OFF, TX_OK, Frame, Received, SimBus, SimNode
from ..world import SimBoard, SpiTarget
from .base import Clock
from .pins import SimPin

# SPI instructions
RESET, READ, WRITE, BIT_MODIFY = 0xC0, 0x03, 0x02, 0x05
READ_STATUS, RX_STATUS = 0xA0, 0xB0
RTS, LOAD_TX, READ_RX = 0x80, 0x40, 0x90

# registers
BFPCTRL, TXRTSCTRL, CANSTAT, CANCTRL = 0x0C, 0x0D, 0x0E, 0x0F
TEC, REC = 0x1C, 0x1D
CNF3, CNF2, CNF1, CANINTE, CANINTF, EFLG = 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x2D
TXB = (0x30, 0x40, 0x50)  # TXBnCTRL; +1 SIDH, +2 SIDL, +3 EID8, +4 EID0, +5 DLC, +6.. D0-D7
RXB = (0x60, 0x70)        # RXBnCTRL; same layout
RXF = (0x00, 0x04, 0x08, 0x10, 0x14, 0x18)
RXM = (0x20, 0x24)
BIT_MODIFIABLE = frozenset({BFPCTRL, TXRTSCTRL, CNF3, CNF2, CNF1, CANINTE, CANINTF, EFLG,
                            *TXB, *RXB} | {r | 0x0F for r in range(0, 0x80, 0x10)})

# modes (REQOP / OPMOD)
MODE_NORMAL, MODE_SLEEP, MODE_LOOPBACK, MODE_LISTEN, MODE_CONFIG = 0, 1, 2, 3, 4

# CANINTE / CANINTF
RX0IF, RX1IF, TX0IF, TX1IF, TX2IF, ERRIF, WAKIF, MERRF = 1, 2, 4, 8, 16, 32, 64, 128
# EFLG
EWARN, RXWAR, TXWAR, RXEP, TXEP, TXBO, RX0OVR, RX1OVR = 1, 2, 4, 8, 16, 32, 64, 128
# TXBnCTRL
ABTF, MLOA, TXERR, TXREQ = 0x40, 0x20, 0x10, 0x08
# CANCTRL
ABAT, OSM = 0x10, 0x08
# RXBnCTRL
RXRTR, BUKT, BUKT1 = 0x08, 0x04, 0x02

RECOVERY_BITS = 128 * 11
RATE_TOLERANCE = 0.005
Lock = AbstractContextManager[object]


def bitrate_from_cnf(osc_hz: int, cnf1: int, cnf2: int, cnf3: int) -> float:
    """The nominal bit rate CNF1..3 give with an ``osc_hz`` oscillator (datasheet 5.x)."""
    brp = cnf1 & 0x3F
    prseg = (cnf2 & 0x07) + 1
    ps1 = ((cnf2 >> 3) & 0x07) + 1
    ps2 = (cnf3 & 0x07) + 1 if cnf2 & 0x80 else max(ps1, 2)
    return osc_hz / (2 * (brp + 1) * (1 + prseg + ps1 + ps2))


def _id_regs(can_id: int, extended: bool) -> tuple[int, int, int, int]:
    """(SIDH, SIDL, EID8, EID0) for an identifier (SIDL without the EXIDE/IDE/SRR bits)."""
    if extended:
        sid, eid = can_id >> 18, can_id & 0x3FFFF
    else:
        sid, eid = can_id, 0
    return sid >> 3, ((sid & 7) << 5) | (eid >> 16), (eid >> 8) & 0xFF, eid & 0xFF


class Mcp2515(SpiTarget):
    """An MCP2515 with an ``osc_hz`` crystal, on ``bus``, its INT output on ``int_pin``."""

    def __init__(self, bus: SimBus, osc_hz: int = 8_000_000, int_pin: SimPin | None = None, *,
                 name: str = "mcp2515", lock: Lock | None = None,
                 clock: Clock = time.monotonic, timers: bool = True) -> None:
        self.bus = bus
        self.osc_hz = osc_hz
        self.int_pin = int_pin
        self.name = name
        self.clock = clock
        self._lock: Lock = lock if lock is not None else threading.RLock()
        self._use_timers = timers
        self._timer_cv = threading.Condition(threading.Lock())  # never held with _lock taken after
        self._timer: threading.Thread | None = None
        self._wake_at: float | None = None
        self._due: dict[str, tuple[float, Callable[[], None]]] = {}
        self.regs = bytearray(128)
        self.frames_tx = 0
        self.frames_rx = 0
        self.overflows = 0
        self.recoveries = 0
        # SPI transaction
        self._cmd: int | None = None
        self._stage = 0
        self._addr = 0
        self._mask = 0
        self._rx_read: int | None = None
        self._closed = False
        self._name = name
        with self._lock:
            self.node: SimNode = self._attach()
            self._reset()

    def _attach(self) -> SimNode:
        return self.bus.attach(self._name, on_frame=self._on_frame, on_tx_done=self._on_tx_done,
                               on_state=self._on_state, on_bus_error=self._on_bus_error)

    def set_connected(self, on: bool) -> None:
        """The connector: unplugged, the chip is off the bus (and unpowered, so it comes
        back in its power-on state); plugged in again, it joins the bus anew."""
        with self._lock:
            if not on and self.node.attached:
                self.bus.detach(self.node)
            elif on and not self.node.attached:
                self.node = self._attach()
                self._reset()

    @classmethod
    def wire(cls, board: SimBoard, bus: SimBus, spec: Mapping[str, Any],
             clock: Clock = time.monotonic, *, lock: Lock | None = None,
             spi: Mapping[str, Any] | None = None) -> Mcp2515:
        """An MCP2515 on ``board`` as a board description wires it: ``spec`` is its
        ``"can"`` entry (``cs``, ``int``, ``osc_hz``); the SPI pins come from ``spi`` (the
        board's ``"spi"`` entry), else ``spec``'s own ``sck``/``mosi``/``miso``, else VSPI
        (18, 23, 19). Pass the world's lock as ``lock``."""
        pins = spi if spi is not None else spec
        sck, mosi, miso = (pins.get("sck", 18), pins.get("mosi", 23), pins.get("miso", 19))
        chip = cls(bus, int(spec.get("osc_hz", 8_000_000)),
                   board.pin(spec["int"]) if spec.get("int") is not None else None,
                   name=f"{board.name}/mcp2515", lock=lock, clock=clock)
        board.attach_spi(sck, mosi, miso, spec["cs"], chip)
        return chip

    # ------------------------------------------------------------------------------------
    # state
    # ------------------------------------------------------------------------------------
    def _reset(self) -> None:
        r = self.regs
        r[:] = bytes(128)
        r[CANCTRL] = 0x87
        self._mode = MODE_CONFIG
        self._rate: float | None = None
        self._rate_ok = False
        self._use_own = False  # counters of our own while the bit rate is wrong
        self._own_tec = self._own_rec = 0
        self._own_busoff = False
        self._hold = False
        self._inflight: int | None = None
        self._rx_meta = [(0, 0), (0, 0)]  # RX STATUS (type, filter) per buffer
        self._last_err = 0
        self._due.clear()
        if self.node.attached:
            self.bus.restart(self.node)  # TEC = REC = 0, nothing pending
        self._update_int()

    @property
    def mode(self) -> int:
        """OPMOD: 0 normal, 1 sleep, 2 loopback, 3 listen-only, 4 configuration."""
        return self._mode

    @property
    def bitrate(self) -> float | None:
        """The bit rate CNF gave when configuration mode was last left."""
        return self._rate

    def counters(self) -> tuple[int, int]:
        """(TEC, REC) as the chip counts them (not capped at 255)."""
        if self._use_own:
            return self._own_tec, self._own_rec
        return self.node.tec, self.node.rec

    def bus_off(self) -> bool:
        return self._own_busoff if self._use_own else self.node.state == STATE_BUS_OFF

    def _eflg(self) -> int:
        tec, rec = self.counters()
        f = self.regs[EFLG] & (RX0OVR | RX1OVR)
        if tec >= 96 or rec >= 96:
            f |= EWARN
        if rec >= 96:
            f |= RXWAR
        if tec >= 96:
            f |= TXWAR
        if rec >= 128:
            f |= RXEP
        if tec >= 128:
            f |= TXEP
        if self.bus_off():
            f |= TXBO
        return f

    def _icod(self) -> int:
        p = self.regs[CANINTE] & self.regs[CANINTF]
        for bit, code in ((ERRIF, 1), (WAKIF, 2), (TX0IF, 3), (TX1IF, 4), (TX2IF, 5),
                          (RX0IF, 6), (RX1IF, 7)):
            if p & bit:
                return code
        return 0

    def _update_int(self) -> None:
        if self.int_pin is None:
            return
        level = 0 if self.regs[CANINTE] & self.regs[CANINTF] else 1
        if self.int_pin.drive != level:
            self.int_pin.drive = level

    def _flag(self, bits: int) -> None:
        self.regs[CANINTF] |= bits
        self._update_int()

    def _check_errors(self) -> None:
        """Raise ERRIF on a change of the error state; schedule bus-off recovery."""
        st = self._eflg() & 0x3F
        if st != self._last_err:
            self._last_err = st
            self._flag(ERRIF)
        if st & TXBO:
            if "recover" not in self._due and not self._hold:
                rate = self.bus.bitrate if not self._use_own else (self._rate or self.bus.bitrate)
                self._schedule("recover", RECOVERY_BITS / rate, self._recover)
        else:
            self._due.pop("recover", None)

    # ------------------------------------------------------------------------------------
    # timers
    # ------------------------------------------------------------------------------------
    def _schedule(self, key: str, delay: float, fn: Callable[[], None]) -> None:
        self._due[key] = (self.clock() + delay, fn)
        self._arm()

    def _arm(self) -> None:
        # Tell the timer thread (started on first use) when the next action is due.
        if not self._use_timers or self._closed:
            return
        with self._timer_cv:
            self._wake_at = min((t for t, _ in self._due.values()), default=None)
            if self._timer is None and self._wake_at is not None:
                self._timer = threading.Thread(target=self._timer_loop, daemon=True,
                                               name=f"{self.name} timer")
                self._timer.start()
            self._timer_cv.notify()

    def _timer_loop(self) -> None:
        while True:
            with self._timer_cv:
                while not self._closed:
                    t = self._wake_at
                    if t is None:
                        self._timer_cv.wait()
                        continue
                    left = t - self.clock()
                    if left <= 0:
                        break
                    self._timer_cv.wait(left)
                if self._closed:
                    return
                self._wake_at = None
            self.poll()  # takes the model's lock, runs what is due, re-arms

    def poll(self) -> None:
        """Run whatever time-driven action is due (bus-off recovery, a failed attempt)."""
        with self._lock:
            if self._closed:
                return
            now = self.clock()
            for key, (t, fn) in sorted(self._due.items(), key=lambda kv: kv[1][0]):
                if t <= now and self._due.get(key) == (t, fn):
                    del self._due[key]
                    fn()
            self._arm()

    def _recover(self) -> None:
        if not self.bus_off():
            return
        self.recoveries += 1
        if self._use_own:
            self._own_tec = self._own_rec = 0
            self._own_busoff = False
        else:
            self.bus.restart(self.node)
        self._check_errors()
        self._kick()

    # ------------------------------------------------------------------------------------
    # test hooks
    # ------------------------------------------------------------------------------------
    def force_bus_off(self, hold: bool = False) -> None:
        """TEC -> 256: bus-off now. ``hold``: no recovery until :meth:`release_bus_off`."""
        with self._lock:
            self._hold = hold
            if self._use_own:
                self._own_tec = 256
                self._own_busoff = True
                self._check_errors()
        if not self._use_own:
            self.bus.force_bus_off(self.node)  # its callback runs _check_errors

    def release_bus_off(self) -> None:
        """The bus shows recessive bits again: recovery starts counting."""
        with self._lock:
            self._hold = False
            self._check_errors()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        with self._timer_cv:
            self._timer_cv.notify()
        self.bus.detach(self.node)

    # ------------------------------------------------------------------------------------
    # registers
    # ------------------------------------------------------------------------------------
    def read_reg(self, addr: int) -> int:
        """A register as READ returns it."""
        a = addr & 0x7F
        low = a & 0x0F
        if low == 0x0E:
            return (self._mode << 5) | (self._icod() << 1)
        if low == 0x0F:
            return self.regs[CANCTRL]
        if a == TEC:
            return min(self.counters()[0], 255)
        if a == REC:
            return min(self.counters()[1], 255)
        if a == EFLG:
            return self._eflg()
        if a == RXB[0]:
            r = self.regs[a] & ~BUKT1
            return r | (BUKT1 if r & BUKT else 0)
        return self.regs[a]

    def write_reg(self, addr: int, value: int, mask: int = 0xFF) -> None:
        """WRITE (mask 0xFF) or BIT MODIFY of one register, with the chip's access rules."""
        a = addr & 0x7F
        low = a & 0x0F
        r = self.regs
        if low == 0x0F:  # CANCTRL and its mirrors
            self._set_canctrl((r[CANCTRL] & ~mask) | (value & mask))
            return
        if low == 0x0E or a in (TEC, REC) or (a > RXB[0] and a != RXB[1]):
            return  # CANSTAT, TEC, REC and the RX buffers are read-only
        old = r[a]
        new = (old & ~mask) | (value & mask)
        config = self._mode == MODE_CONFIG
        if a < BFPCTRL or 0x10 <= a < TEC or 0x20 <= a < CNF3:  # filters and masks
            if config:
                if a % 4 == 1:  # SIDL: filters keep EXIDE, masks have none
                    new &= 0xEB if a < 0x20 else 0xE3
                r[a] = new
            return
        if a == BFPCTRL:
            r[a] = new & 0x3F
        elif a == TXRTSCTRL:
            if config:
                r[a] = (old & 0x38) | (new & 0x07)
        elif a in (CNF1, CNF2, CNF3):
            if config:
                r[a] = new & 0xC7 if a == CNF3 else new
        elif a == CANINTE:
            r[a] = new
            self._update_int()
        elif a == CANINTF:
            r[a] = new
            self._update_int()
        elif a == EFLG:
            r[a] = new & (RX0OVR | RX1OVR)
        elif a in TXB:
            self._set_txctrl(TXB.index(a), new)
        elif TXB[0] < a < RXB[0]:  # TX buffer registers (xEh/xFh handled above)
            n = (a >> 4) - 3
            if not r[TXB[n]] & TXREQ:
                off = a & 0x0F
                r[a] = new & 0xEB if off == 2 else new & 0x4F if off == 5 else new
        elif a == RXB[0]:
            r[a] = (old & ~0x64) | (new & 0x64)
        elif a == RXB[1]:
            r[a] = (old & ~0x60) | (new & 0x60)

    def _set_canctrl(self, new: int) -> None:
        r = self.regs
        old = r[CANCTRL]
        r[CANCTRL] = new
        if new & ABAT and not old & ABAT:
            for n in range(3):
                c = r[TXB[n]]
                if c & TXREQ and n != self._inflight:
                    r[TXB[n]] = (c & ~TXREQ) | ABTF
        reqop = new >> 5
        if reqop <= MODE_CONFIG and reqop != self._mode:
            self._change_mode(reqop)
        if old & ABAT and not new & ABAT:
            self._kick()

    def _change_mode(self, mode: int) -> None:
        old = self._mode
        self._mode = mode
        if old == MODE_CONFIG:
            r = self.regs
            self._rate = bitrate_from_cnf(self.osc_hz, r[CNF1], r[CNF2], r[CNF3])
            self._rate_ok = abs(self._rate - self.bus.bitrate) <= RATE_TOLERANCE * self.bus.bitrate
            if not self._rate_ok and not self._use_own:
                self._own_tec, self._own_rec = self.node.tec, self.node.rec
                self._own_busoff = False
                self._use_own = True
            elif self._rate_ok:
                self._use_own = False
        self._check_errors()
        self._kick()

    def _set_txctrl(self, n: int, new: int) -> None:
        r = self.regs
        a = TXB[n]
        old = r[a]
        val = (old & ~0x0B) | (new & 0x0B)
        if val & TXREQ and not old & TXREQ:
            val &= ~(ABTF | MLOA | TXERR)
        elif old & TXREQ and not val & TXREQ and n != self._inflight:
            val |= ABTF  # aborted while waiting
        r[a] = val
        if val & TXREQ:
            self._kick()

    # ------------------------------------------------------------------------------------
    # transmission
    # ------------------------------------------------------------------------------------
    def _tx_frame(self, n: int) -> Frame:
        r = self.regs
        b = TXB[n]
        sidh, sidl, eid8, eid0, dlc = r[b + 1], r[b + 2], r[b + 3], r[b + 4], r[b + 5]
        sid = (sidh << 3) | (sidl >> 5)
        ext = bool(sidl & 0x08)
        can_id = (sid << 18) | ((sidl & 3) << 16) | (eid8 << 8) | eid0 if ext else sid
        rtr = bool(dlc & 0x40)
        length = min(dlc & 0x0F, 8)
        if rtr:
            return Frame(can_id, b"", ext, True, length)
        return Frame(can_id, bytes(r[b + 6: b + 6 + length]), ext)

    def _next_tx(self) -> int | None:
        r = self.regs
        best = None
        for n in range(3):
            c = r[TXB[n]]
            if c & TXREQ and (best is None or (c & 3) >= (r[TXB[best]] & 3)):
                best = n
        return best

    def _kick(self) -> None:
        """Start the next transmission if the chip may transmit now."""
        while self._inflight is None and self._mode in (MODE_NORMAL, MODE_LOOPBACK) \
                and not self.regs[CANCTRL] & ABAT:
            n = self._next_tx()
            if n is None:
                return
            frame = self._tx_frame(n)
            if self._mode == MODE_LOOPBACK:
                self._receive(frame)
                self._tx_success(n)
                continue
            if self.bus_off():
                return
            self._inflight = n
            if not self._rate_ok:  # nobody understands us: this attempt will fail
                rate = self._rate or self.bus.bitrate
                self._schedule("attempt", frame.bits / rate, self._attempt_failed)
                return
            try:
                queued = self.bus.submit(self.node, frame)
            except (OSError, ValueError):
                queued = False
            if not queued:
                self._inflight = None
                self._check_errors()
            return

    def _tx_success(self, n: int) -> None:
        self.regs[TXB[n]] &= ~TXREQ
        self.frames_tx += 1
        self._flag(TX0IF << n)

    def _attempt_failed(self) -> None:
        n = self._inflight
        self._inflight = None
        if n is None or self._mode != MODE_NORMAL or self._rate_ok:
            self._kick()
            return
        self.regs[TXB[n]] |= TXERR
        self._own_tec += 8
        if self._own_tec > 255:
            self._own_busoff = True
        self._flag(MERRF)
        self._check_errors()
        self._kick()

    # ------------------------------------------------------------------------------------
    # bus callbacks (bus thread)
    # ------------------------------------------------------------------------------------
    def _on_tx_done(self, frame: Frame, status: int, ts: float) -> None:
        with self._lock:
            n = self._inflight
            if n is None:
                return
            self._inflight = None
            if status == TX_OK:
                self._tx_success(n)
            elif not self.regs[TXB[n]] & TXREQ:
                self.regs[TXB[n]] |= ABTF
            self._check_errors()
            self._kick()

    def _on_state(self, node: SimNode) -> None:
        with self._lock:
            if not self._use_own:
                self._check_errors()
                self._kick()

    def _on_bus_error(self, ts: float, kind: int, role: int) -> None:
        with self._lock:
            if self._use_own or self._mode not in (MODE_NORMAL, MODE_LISTEN):
                return
            if role == 1 and self._inflight is not None:
                self.regs[TXB[self._inflight]] |= TXERR
            self._flag(MERRF)
            self._check_errors()

    def _on_frame(self, rec: Received) -> None:
        with self._lock:
            if rec.own or self._closed:
                return
            mode = self._mode
            if mode == MODE_SLEEP:
                self.regs[CANCTRL] = (self.regs[CANCTRL] & 0x1F) | (MODE_LISTEN << 5)
                self._mode = MODE_LISTEN
                self._flag(WAKIF)
                return
            if mode not in (MODE_NORMAL, MODE_LISTEN):
                return
            if not self._rate_ok:
                if mode == MODE_NORMAL and self._use_own:
                    self._own_rec = min(self._own_rec + 1, 255)
                    self._flag(MERRF)
                    self._check_errors()
                return
            if self.bus_off():
                return
            self._receive(rec.frame)
            self._check_errors()

    # ------------------------------------------------------------------------------------
    # reception
    # ------------------------------------------------------------------------------------
    def _fields(self, base: int) -> tuple[int, int, bool]:
        r = self.regs
        sid = (r[base] << 3) | (r[base + 1] >> 5)
        eid = ((r[base + 1] & 3) << 16) | (r[base + 2] << 8) | r[base + 3]
        return sid, eid, bool(r[base + 1] & 0x08)

    def _match(self, fi: int, mi: int, frame: Frame, rxm: int) -> bool:
        f_sid, f_eid, f_ext = self._fields(RXF[fi])
        m_sid, m_eid, _ = self._fields(RXM[mi])
        if frame.extended:
            if rxm == 1 or not f_ext:
                return False
            sid, eid = frame.can_id >> 18, frame.can_id & 0x3FFFF
            return ((sid ^ f_sid) & m_sid) == 0 and ((eid ^ f_eid) & m_eid) == 0
        if rxm == 2 or f_ext:
            return False
        if (frame.can_id ^ f_sid) & m_sid:
            return False
        if rxm == 0:  # EID15:0 on data bytes 0 and 1
            for k, shift in ((0, 8), (1, 0)):
                if k < len(frame.data):
                    m = (m_eid >> shift) & 0xFF
                    if (frame.data[k] ^ (f_eid >> shift)) & m:
                        return False
        return True

    def _hit(self, buf: int, frame: Frame) -> int | None:
        rxm = (self.regs[RXB[buf]] >> 5) & 3
        if rxm == 3:
            return 0 if buf == 0 else 2
        for fi in ((0, 1) if buf == 0 else (2, 3, 4, 5)):
            if self._match(fi, buf, frame, rxm):
                return fi
        return None

    def _receive(self, frame: Frame) -> None:
        intf = self.regs[CANINTF]
        hit = self._hit(0, frame)
        if hit is not None:
            if not intf & RX0IF:
                self._load(0, frame, hit, False)
            elif self.regs[RXB[0]] & BUKT:
                if not intf & RX1IF:
                    self._load(1, frame, hit, True)
                else:
                    self._overflow(1)
            else:
                self._overflow(0)
            return
        hit = self._hit(1, frame)
        if hit is not None:
            if not intf & RX1IF:
                self._load(1, frame, hit, False)
            else:
                self._overflow(1)

    def _overflow(self, n: int) -> None:
        self.regs[EFLG] |= RX0OVR << n
        self.overflows += 1
        self._flag(ERRIF)

    def _load(self, n: int, frame: Frame, filhit: int, rollover: bool) -> None:
        r = self.regs
        b = RXB[n]
        sidh, sidl, eid8, eid0 = _id_regs(frame.can_id, frame.extended)
        if frame.extended:
            sidl |= 0x08
        elif frame.rtr:
            sidl |= 0x10  # SRR
        r[b + 1], r[b + 2], r[b + 3], r[b + 4] = sidh, sidl, eid8, eid0
        r[b + 5] = (0x40 if frame.extended and frame.rtr else 0) | frame.dlc
        if not frame.rtr:
            r[b + 6: b + 6 + len(frame.data)] = frame.data
        ctrl = r[b] & (0x64 if n == 0 else 0x60)
        if frame.rtr:
            ctrl |= RXRTR
        r[b] = ctrl | (filhit & (1 if n == 0 else 7))
        kind = (2 if frame.extended else 0) | (1 if frame.rtr else 0)
        self._rx_meta[n] = (kind, (6 | filhit) if rollover else filhit)
        self.frames_rx += 1
        self._flag(RX0IF << n)

    def _read_status(self) -> int:
        intf = self.regs[CANINTF]
        s = intf & (RX0IF | RX1IF)
        for n in range(3):
            if self.regs[TXB[n]] & TXREQ:
                s |= 0x04 << (2 * n)
            if intf & (TX0IF << n):
                s |= 0x08 << (2 * n)
        return s

    def _rx_status(self) -> int:
        intf = self.regs[CANINTF]
        s = (0x40 if intf & RX0IF else 0) | (0x80 if intf & RX1IF else 0)
        n = 0 if intf & RX0IF else 1 if intf & RX1IF else None
        if n is not None:
            kind, filt = self._rx_meta[n]
            s |= (kind << 3) | filt
        return s

    # ------------------------------------------------------------------------------------
    # SPI
    # ------------------------------------------------------------------------------------
    def spi_select(self) -> None:
        with self._lock:
            self._cmd = None
            self._stage = 0
            self._rx_read = None

    def spi_deselect(self) -> None:
        with self._lock:
            if self._rx_read is not None:
                self.regs[CANINTF] &= ~(RX0IF << self._rx_read)
                self._update_int()
                self._rx_read = None
            self._cmd = None

    def spi_transfer(self, data: bytes) -> bytes:
        with self._lock:
            return bytes(self._byte(b) for b in data)

    def _byte(self, b: int) -> int:
        cmd = self._cmd
        if cmd is None:
            self._cmd = b
            self._stage = 0
            if b == RESET:
                self._reset()
            elif b & 0xF8 == RTS:
                for n in range(3):
                    if b & (1 << n):
                        self._set_txctrl(n, self.regs[TXB[n]] | TXREQ)
            elif b & 0xF8 == LOAD_TX and b & 7 <= 5:
                self._addr = TXB[(b & 7) >> 1] + (6 if b & 1 else 1)
            elif b & 0xF9 == READ_RX:
                n = (b >> 2) & 1
                self._addr = RXB[n] + (6 if b & 2 else 1)
                self._rx_read = n
            elif b not in (READ, WRITE, BIT_MODIFY, READ_STATUS, RX_STATUS):
                self._cmd = -1  # not an instruction: the rest is ignored
            return 0xFF
        if cmd == READ_STATUS:
            return self._read_status()
        if cmd == RX_STATUS:
            return self._rx_status()
        if cmd in (READ, WRITE, BIT_MODIFY) and self._stage == 0:
            self._addr = b & 0x7F
            self._stage = 1
            return 0xFF
        if cmd == READ or cmd & 0xF9 == READ_RX:
            v = self.read_reg(self._addr)
            self._addr = (self._addr + 1) & 0x7F
            return v
        if cmd == WRITE or cmd & 0xF8 == LOAD_TX:
            self.write_reg(self._addr, b)
            self._addr = (self._addr + 1) & 0x7F
            return 0xFF
        if cmd == BIT_MODIFY:
            if self._stage == 1:
                self._mask = b if self._addr in BIT_MODIFIABLE else 0xFF
                self._stage = 2
            elif self._stage == 2:
                self.write_reg(self._addr, b, self._mask)
                self._stage = 3
            return 0xFF
        return 0xFF
