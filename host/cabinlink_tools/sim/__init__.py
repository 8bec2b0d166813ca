"""The simulated world: the CAN bus model, the simulated MicroPython platform and its peers."""
