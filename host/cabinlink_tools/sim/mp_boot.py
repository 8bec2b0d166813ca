# Start a firmware script under the MicroPython unix port the way a board
# does: `micropython mp_boot.py MAIN_PY`. The unix port puts the running
# script's directory first on sys.path; a board has no such entry, so it is
# dropped here and the firmware sees exactly the path the runner chose.
#
# With CABINLINK_ROMFS set, that ROMFS image is mounted at /rom first, as a board
# with a ROMFS partition does, and its .mpy files are imported in place. On a
# board the image is memory-mapped flash; here it is one bytes object on the
# heap, of exactly the image's size (benchmarks subtract it).
#
# asyncio.ThreadSafeFlag becomes the platform's fd-backed one (_flag.py): with
# the port's own, socket events reach tasks 1-2 ms late.
import os
import sys

sys.path.pop(0)
import asyncio  # noqa: E402

from _flag import ThreadSafeFlag  # noqa: E402  (the platform's; see _flag.py)

asyncio.ThreadSafeFlag = ThreadSafeFlag
_rom = os.getenv("CABINLINK_ROMFS")
if _rom:
    import vfs

    with open(_rom, "rb") as _f:
        vfs.mount(vfs.VfsRom(_f.read()), "/rom")
_main = sys.argv[1]
del sys.argv[0]  # sys attributes cannot be rebound on MicroPython
with open(_main) as _f:
    _code = compile(_f.read(), _main, "exec")
exec(_code, {"__name__": "__main__", "__file__": _main})
