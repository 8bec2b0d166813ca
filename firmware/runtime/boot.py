# The composition root (docs/firmware.md "Boot sequence"): config, crash-loop
# guard, board, app, links, watchdog, asyncio. Nothing here raises out of
# run(): whatever goes wrong ends in a logged safe mode that still answers.
import asyncio
import gc
import json
import time

import machine

from cabinlink import claim, msg
from cabinlink import registry as reg
from cabinlink.can_link import CanLink
from cabinlink.clock import Clock
from cabinlink.model import device_info
from cabinlink.node import Node
from runtime import Context
from runtime.board import Board
from runtime.config import ConfigError
from runtime.config import load as load_config
from runtime.guard import STABLE_MS, BootGuard
from runtime.logring import LogRing
from runtime.store import Settings, write_json

FIRMWARE_VERSION = "0.1.0"
_WDT_MS = 8000  # watchdog timeout; fed every second while the loop runs
_POLL_MS = 2  # link and node polling period (sooner when a link's IRQ wakes it)


def identity_number():
    # 21 bits of the chip's unique id: the NAME's identity number (spec 7.3).
    u = machine.unique_id()
    return ((u[-3] << 16) | (u[-2] << 8) | u[-1]) & 0x1FFFFF


class Runtime:
    def __init__(self):
        self.clock = Clock()
        self.log = LogRing(self.clock)
        self.guard = BootGuard()
        self.safe = None  # the reason, once in safe mode
        self.cfg = None
        self.board_spec = None
        self.app = None
        self.node = None
        self.links = []
        self.wake = asyncio.ThreadSafeFlag()  # the links' IRQs: poll now
        self.identify_until = None
        self.reboot_at = None

    # --- start-up ------------------------------------------------------------
    def start(self):
        log = self.log
        log.info("boot: firmware %s, reset cause %d" % (FIRMWARE_VERSION, machine.reset_cause()))
        if self.guard.start():
            self.safe = "crash loop: %d boots in a row failed" % self.guard.failed
        try:
            with open("board.json") as f:
                self.board_spec = json.load(f)
        except (OSError, ValueError) as e:
            self.safe = self.safe or "board.json: %s" % e
        try:
            self.cfg = load_config(board_name=(self.board_spec or {}).get("id"))
        except ConfigError as e:
            self.safe = self.safe or "config: %s" % e
        if self.safe is None:
            try:
                self._build_app()
            except Exception as e:  # an app that cannot start is a crash: safe mode
                self.safe = "app %s: %s %s" % (self.cfg.get("app"), type(e).__name__, e)
        if self.safe is not None:
            log.error("SAFE MODE: " + self.safe)
            self._build_safe()
        self._open_links()
        log.flush()

    def _info(self, cls_name):
        ident = (self.cfg or {}).get("identity") or {}
        return device_info(ident.get("vendor", "CabinLink"), ident.get("product", cls_name),
                           ident.get("serial", "%06x" % identity_number()), FIRMWARE_VERSION,
                           ident.get("hardware", (self.board_spec or {}).get("id", "?")),
                           on_invoke=self._device_command, boot_count=self.guard.boots,
                           reset_cause=machine.reset_cause())

    def _build_app(self):
        cfg = self.cfg
        name = cfg["app"]
        board = Board(self.board_spec, name)
        ctx = Context(board, Settings(), cfg.get("app_config", {}), cfg.get("calibration", {}),
                      self.log, self.clock)
        mod = __import__("apps." + name, None, None, ["App"])
        self.app = mod.App(ctx)
        self.node = Node(self.clock, self.app.DEVICE_CLASS, [self._info(name)] + self.app.caps)
        self._track_memory()
        ctx.node = self.node
        self.log.info("app %s: %d capabilities" % (name, len(self.app.caps)))

    def _track_memory(self):
        # device_info.mem_free (optional attribute) where the VM can tell.
        if hasattr(gc, "mem_free"):
            self.node.info.values[reg.ATTR_DEVICE_INFO_MEM_FREE] = gc.mem_free()

    def _build_safe(self):
        self.app = None
        self.node = Node(self.clock, reg.CLASS_OTHER, [self._info("safe mode")])
        self._track_memory()
        self.node.mode = msg.MODE_SAFE
        self.node.health = msg.HEALTH_WARNING

    def _open_links(self):
        links = (self.cfg or {}).get("links") or {}
        can_cfg = links.get("can") or {}
        want_can = can_cfg.get("enabled", False)
        if self.cfg is None and (self.board_spec or {}).get("can"):
            want_can = True  # safe mode without a usable config: the board's bus
        if want_can:
            try:
                self._open_can(can_cfg)
            except Exception as e:
                self.log.error("can link: %s %s" % (type(e).__name__, e))
        ble_cfg = links.get("ble") or {}
        if ble_cfg.get("enabled", False) or not self.links:
            try:
                self._open_ble(ble_cfg)
            except Exception as e:
                self.log.error("ble link: %s %s" % (type(e).__name__, e))
        if not self.links:
            self.log.error("no link could be opened")

    def _open_can(self, can_cfg):
        spec = self.board_spec or {}
        bitrate = can_cfg.get("bitrate", (spec.get("can") or {}).get("bitrate", 500000))
        ctl = Board(spec, None).can(bitrate)
        name = claim.make_name(identity_number(), 0xC0 | self.node.device_class)
        # A controller that holds only a frame or two until the next poll (the MCP2515)
        # lets an ISO-TP sender have one CF in flight at a time (block size 1, spec 7.4):
        # a pause of the firmware (a GC) then never overflows its receive buffers.
        bs = 1 if getattr(ctl, "RX_QUEUE_LEN", 32) < 8 else 0
        link = CanLink(ctl, self.node, self.clock, name, can_cfg.get("preferred_address"), bs=bs,
                       wake=self.wake)
        link.start()
        self.links.append(link)
        self.log.info("can link: %d bit/s, NAME %08x%08x" % (bitrate, name >> 32, name & 0xFFFFFFFF))

    def _open_ble(self, ble_cfg):
        import bluetooth

        from cabinlink import ble_link

        flags = 0
        if self.links:
            flags |= ble_link.ADV_ALSO_CAN
        if self.safe is not None:
            flags |= ble_link.ADV_SAFE_MODE
        if ble_cfg.get("bond"):
            flags |= ble_link.ADV_BONDING
        name = ble_cfg.get("name") or "CabinLink %04x" % (identity_number() & 0xFFFF)
        sig = getattr(self.app, "sig_services", ()) if self.app is not None else ()
        link = ble_link.BleLink(bluetooth.BLE(), bluetooth.UUID, self.node, self.clock, name,
                                short_id=identity_number() & 0xFFFF, flags=flags, sig_services=sig,
                                wake=self.wake)
        link.start()
        self.links.append(link)
        self.log.info("ble link: advertising as %r" % name)

    # --- device_info commands --------------------------------------------------
    def _device_command(self, cap, cmd, args):
        if cmd == reg.CMD_DEVICE_INFO_IDENTIFY:
            self.identify_until = time.ticks_add(time.ticks_ms(), args[0] * 1000) if args[0] else None
            return msg.OK
        if cmd == reg.CMD_DEVICE_INFO_REBOOT:
            self.log.warn("reboot requested by the car")
            if self.safe is not None:
                write_json(self.guard.path, {"failed_boots": 0, "boots": self.guard.boots})
            self.reboot_at = time.ticks_add(time.ticks_ms(), 200)  # let the RESULT go out
            return msg.OK
        if cmd == reg.CMD_DEVICE_INFO_READ_LOG:
            return msg.OK, self.log.read(args[0])
        return msg.UNSUPPORTED

    # --- tasks ------------------------------------------------------------------
    async def _links(self):
        node = self.node
        wake = self.wake
        while True:
            for link in self.links:
                link.poll()
            node.poll()  # the CAN link polls it too; a BLE-only unit needs this
            if self.app is not None and hasattr(self.app, "health"):
                node.health = self.app.health()
            await wake.wait()

    async def _tick(self):
        # The links' timers run on polls: one at least every _POLL_MS.
        wake = self.wake
        while True:
            await asyncio.sleep_ms(_POLL_MS)
            wake.set()

    async def _supervise(self):
        wdt = machine.WDT(timeout=_WDT_MS)
        started = time.ticks_ms()
        stable = False
        led = None
        led_pin = (self.board_spec or {}).get("status_led")
        if led_pin is not None:
            led = machine.Pin(led_pin, machine.Pin.OUT, value=0)
        info = self.node.info.values
        bus_offs = 0
        while True:
            wdt.feed()
            now = time.ticks_ms()
            n = sum(getattr(link, "bus_off_count", 0) for link in self.links)
            if n != bus_offs:
                self.log.warn("can: bus-off (%d so far), restarting with back-off" % n)
                bus_offs = n
            if reg.ATTR_DEVICE_INFO_MEM_FREE in info:
                gc.collect()  # once a second: short pauses, and mem_free = live data
                info[reg.ATTR_DEVICE_INFO_MEM_FREE] = gc.mem_free()
            if not stable and self.safe is None and time.ticks_diff(now, started) >= STABLE_MS:
                self.guard.stable()
                self.log.info("boot stable")
                self.log.flush()
                stable = True
            if self.reboot_at is not None and time.ticks_diff(now, self.reboot_at) >= 0:
                self.log.flush()
                machine.reset()
            if led is not None:
                blink = self.identify_until is not None and time.ticks_diff(self.identify_until, now) > 0
                led.value((now // 250) & 1 if blink else 0)
            await asyncio.sleep_ms(250 if self.identify_until is not None else 1000)

    async def _app(self):
        try:
            await self.app.run()
        except Exception as e:
            self.log.error("app crashed: %s %s" % (type(e).__name__, e))
            machine.reset()  # counted by the boot guard

    async def main(self):
        tasks = [asyncio.create_task(self._links()), asyncio.create_task(self._tick()),
                 asyncio.create_task(self._supervise())]
        if self.app is not None:
            tasks.append(asyncio.create_task(self._app()))
        print("ready")
        await asyncio.gather(*tasks)


def run():
    rt = Runtime()
    rt.start()
    asyncio.run(rt.main())
