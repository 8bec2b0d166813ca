# The board this unit runs on, from /board.json (a copy of boards/<board>.json):
# opens the buses an app asks for, once, with the pins the file names.
import json


class Board:
    def __init__(self, spec, app):
        self.spec = spec
        self.app = app
        # app None: the board's buses only (the links, safe mode).
        self.wiring = spec.get("apps", {}).get(app) if app is not None else {}
        if self.wiring is None:
            raise ValueError("board %s has no wiring for app %s" % (spec.get("id"), app))
        self._i2c = None
        self._spi = None

    @classmethod
    def load(cls, app, path="board.json"):
        with open(path) as f:
            return cls(json.load(f), app)

    def pin(self, n, mode=-1, pull=-1, **kw):
        from machine import Pin

        return Pin(n, mode, pull, **kw)

    def i2c(self):
        if self._i2c is None:
            from machine import I2C, Pin

            b = self.spec["i2c"]
            self._i2c = I2C(b.get("id", 0), scl=Pin(b["scl"]), sda=Pin(b["sda"]),
                            freq=b.get("freq", 400000))
        return self._i2c

    def spi(self):
        if self._spi is None:
            from machine import SPI, Pin

            b = self.spec["spi"]
            self._spi = SPI(b["id"], b.get("baudrate", 8000000), sck=Pin(b["sck"]),
                            mosi=Pin(b["mosi"]), miso=Pin(b["miso"]))
        return self._spi

    def can(self, bitrate):
        # The board's CAN controller with MicroPython's machine.CAN API: the
        # on-chip one where the firmware has it, else the MCP2515 over SPI.
        spec = self.spec.get("can")
        if not spec:
            raise ValueError("board has no CAN controller")
        if spec["controller"] == "mcp2515":
            from machine import Pin
            from drivers.mcp2515 import MCP2515

            return MCP2515(self.spi(), Pin(spec["cs"], Pin.OUT, value=1), Pin(spec["int"], Pin.IN),
                           bitrate, osc=spec.get("osc_hz", 8000000))
        from machine import CAN

        return CAN(0, bitrate)
