"""One service round of the master end of a pty that stands for a board's USB serial port
(shared by :mod:`.virtual_board` and :mod:`.rom_bootloader`)."""
from __future__ import annotations

import errno
import os
import select
from collections.abc import Callable


def service_pty(fd: int, ev: int, outbox: bytearray, on_data: Callable[[bytes], None]) -> bool:
    """Handle ``poll()`` events ``ev`` on the non-blocking master ``fd``: hand everything the
    host wrote to ``on_data`` (also what it wrote just before closing), then write as much
    of ``outbox`` as the pty takes, removing it from ``outbox``.

    Returns False when the host side has closed the port; ``outbox`` is then cleared, as a
    UART nobody listens to drops its output. EIO is the pty's "no one on the other end"."""
    if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                break
            if not data:
                break
            on_data(data)
        if ev & select.POLLHUP:
            outbox.clear()
            return False
    if ev & select.POLLOUT and outbox:
        try:
            n = os.write(fd, outbox)
        except BlockingIOError:
            n = 0
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            outbox.clear()
            return False
        del outbox[:n]
    return True
