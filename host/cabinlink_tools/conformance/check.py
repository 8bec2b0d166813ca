"""How a conformance test names its requirement and fails.

Each test carries ``@must("M-5.3-2")`` (a ``pytest.mark.must`` with the MUST id and the role
it binds: ``accessory``, ``car`` or ``node``) and reports a violation with :func:`fail` or
:class:`Req`, whose message starts with the spec section and the id:
``spec 5.3 [M-5.3-2]: HELLO with major 2 must get VERSION_MISMATCH, got OK``.
"""
from __future__ import annotations

from typing import Any

import pytest

from cabinlink_tools.catalog import status_name

from .spec import section_of

ROLES = ("accessory", "car", "node")


def must(req_id: str, role: str = "accessory") -> pytest.MarkDecorator:
    """The marker a conformance test carries: the MUST id it checks and whose duty it is."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    # built directly, not through pytest.mark: the suite's modules are also imported outside
    # the plugin (coverage.py), where --strict-markers would refuse an unregistered name
    return pytest.MarkDecorator(pytest.Mark("must", (req_id,), {"role": role}, _ispytest=True), _ispytest=True)


def prefix(req_id: str) -> str:
    return f"spec {section_of(req_id)} [{req_id}]"


class RequirementFailed(AssertionError):
    """A violated MUST. ``req_id`` is the requirement, the message names its section."""

    def __init__(self, req_id: str, text: str) -> None:
        super().__init__(f"{prefix(req_id)}: {text}")
        self.req_id = req_id


def fail(req_id: str, text: str) -> None:
    raise RequirementFailed(req_id, text)


class Req:
    """Bound to one test's MUST id (the ``req`` fixture): ``req(ok, "what went wrong")``."""

    def __init__(self, req_id: str) -> None:
        self.id = req_id

    def __call__(self, ok: Any, text: str) -> None:
        if not ok:
            raise RequirementFailed(self.id, text)

    def fail(self, text: str) -> None:
        raise RequirementFailed(self.id, text)

    def status(self, result: list[Any] | None, want: int | tuple[int, ...], what: str) -> None:
        """``result`` (a decoded RESULT, or None for no answer) must carry status ``want``."""
        wants = want if isinstance(want, tuple) else (want,)
        got = None if result is None else result[2]
        if got not in wants:
            names = " or ".join(status_name(w) for w in wants)
            raise RequirementFailed(self.id, f"{what} must get {names}, got {status_name(got)}")


def show(v: Any, limit: int = 80) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[:limit - 3] + "..."


def first(xs: Any) -> Any:
    """xs[0], or None for an empty sequence (for failure texts built before the check)."""
    return xs[0] if xs else None


def early(times: list[float], floor: float, tol: float) -> list[tuple[int, float]]:
    """Gaps between consecutive ``times`` shorter than ``floor`` (by more than ``tol``) that
    are not explained by a late previous one: what crossed the bus late (it waited for the
    bus; in the simulation, for a busy host) makes the next gap look short, but then the
    two gaps together still span two floors. (index of the later time, gap) for the others.
    A sender that lets one period run short after a late one cannot be told apart from
    outside: the suite gives it the benefit of that doubt."""
    out = []
    for i in range(1, len(times)):
        gap = times[i] - times[i - 1]
        if gap >= floor - tol:
            continue
        if i >= 2 and times[i] - times[i - 2] >= 2 * floor - tol:
            continue
        out.append((i, gap))
    return out
