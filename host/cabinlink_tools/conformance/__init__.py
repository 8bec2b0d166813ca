"""The CabinLink conformance suite: one pytest test per MUST of docs/spec.md, run against a
simulated or real accessory, or against a car implementation (see plugin.py, targets.py and
docs/conformance.md)."""
