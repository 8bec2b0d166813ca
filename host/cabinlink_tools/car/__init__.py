"""The reference car (head unit): the car side of CabinLink over CAN and BLE.

``from cabinlink_tools.car import Car`` - see :mod:`.car` for the async API and
docs/tools/car.md for the whole story. :mod:`.client` is the small synchronous endpoint the
firmware tests use. Names are imported lazily, so importing the package stays cheap.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Car": "car", "Replay": "car", "Accessory": "accessory", "RequestFailed": "accessory",
    "SubSpec": "accessory", "CarEvent": "events", "Bindings": "bindings",
    "BindingsError": "bindings", "load_bindings": "bindings", "Description": "model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{mod}"), name)
