"""CabinLink host tools: flash, deploy, configure, simulate, the reference car, conformance.

Host code is CPython. It imports the protocol core (:mod:`cabinlink`) so both sides of a
link share one definition of the wire format.
"""
__version__ = "0.1.0"
