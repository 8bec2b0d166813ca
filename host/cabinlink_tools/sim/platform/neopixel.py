# Simulated `neopixel` module: micropython-lib's NeoPixel driver (what the ESP32
# firmware freezes in), behaving the same way: a GRB(W) byte buffer, RGB(W) tuples
# in and out, write() through machine.bitstream(pin, 0, timing, buf). Valid
# MicroPython; in the simulation machine.bitstream hands the bytes to the device
# the world wired to the pin (e.g. the Ws2812 model).
from machine import bitstream


class NeoPixel:
    # Where red, green, blue, white go in each pixel's bytes: GRB(W).
    ORDER = (1, 0, 2, 3)

    def __init__(self, pin, n, bpp=3, timing=1):
        self.pin = pin
        self.n = n
        self.bpp = bpp
        self.buf = bytearray(n * bpp)
        self.pin.init(pin.OUT)
        # timing: 1 = 800 kHz, 0 = 400 kHz, or (high_0, low_0, high_1, low_1) in ns
        if isinstance(timing, int):
            self.timing = (400, 850, 800, 450) if timing else (800, 1700, 1600, 900)
        else:
            self.timing = timing

    def __len__(self):
        return self.n

    def __setitem__(self, index, val):
        base = index * self.bpp
        order = self.ORDER
        for c in range(self.bpp):
            self.buf[base + order[c]] = val[c]

    def __getitem__(self, index):
        base = index * self.bpp
        order = self.ORDER
        return tuple(self.buf[base + order[c]] for c in range(self.bpp))

    def fill(self, val):
        buf = self.buf
        size = len(buf)
        step = self.bpp
        for c in range(step):
            v = val[c]
            i = self.ORDER[c]
            while i < size:
                buf[i] = v
                i += step

    def write(self):
        bitstream(self.pin, 0, self.timing, self.buf)
