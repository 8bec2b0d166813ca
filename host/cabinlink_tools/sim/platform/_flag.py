# asyncio.ThreadSafeFlag for the simulated platform under the MicroPython unix
# port (mp_boot.py installs it; CPython has its own in cpython_boot.py).
#
# Why: the port's stock ThreadSafeFlag is polled through its ioctl, and while
# any such non-fd object waits in asyncio's IO queue the port's select.poll()
# stops sleeping in the kernel and checks every ~1 ms instead, so a socket
# event (a simulated CAN frame's TX_DONE, a pin IRQ from the world) reached a
# task 1-2 ms late instead of 50 us (measured). An ESP32 has no such lag: its
# IRQ wakes the scheduler at once. This flag is a loopback UDP socket that
# set() makes readable, so every object in the IO queue is a real fd.
#
# Same contract: set() from anywhere (here: simulated IRQ handlers, which run
# as tasks), one waiter, wait() returns at once when set and clears the flag.
import os
import socket

from asyncio import core


class ThreadSafeFlag:
    def __init__(self):
        self._sock = _self_socket()
        self.state = 0

    def set(self):
        if not self.state:
            self.state = 1
            self._sock.send(b"\x01")

    def clear(self):
        self.state = 0
        self._drain()

    def _drain(self):
        try:
            while True:
                self._sock.recv(16)
        except OSError:
            pass

    def wait(self):  # a generator: MicroPython awaits it like a coroutine
        while not self.state:
            yield core._io_queue.queue_read(self._sock)
            self._drain()
        self.state = 0
        self._drain()


def _self_socket():
    # A UDP socket connected to itself. The port has no getsockname() to
    # read it back, so the port is picked here: a free one among 16384.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r = os.urandom(2)
    start = (r[0] << 8) | r[1]
    for i in range(64):
        addr = socket.getaddrinfo("127.0.0.1", 49152 + (start + i * 257) % 16384)[0][-1]
        try:
            s.bind(addr)
        except OSError:
            continue
        s.connect(addr)
        s.setblocking(False)
        return s
    raise OSError("no free loopback port for a ThreadSafeFlag")
