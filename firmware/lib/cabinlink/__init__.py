# CabinLink protocol core: shared by the accessory firmware (MicroPython) and
# the host tools (CPython). Never imports hardware or host modules.
__version__ = "0.1.0"
