# Start a firmware script under the MicroPython unix port the way a board
# does: `micropython mp_boot.py MAIN_PY`. The unix port puts the running
# script's directory first on sys.path; a board has no such entry, so it is
# dropped here and the firmware sees exactly the path the runner chose.
import sys

sys.path.pop(0)
_main = sys.argv[1]
del sys.argv[0]  # sys attributes cannot be rebound on MicroPython
with open(_main) as _f:
    _code = compile(_f.read(), _main, "exec")
exec(_code, {"__name__": "__main__", "__file__": _main})
