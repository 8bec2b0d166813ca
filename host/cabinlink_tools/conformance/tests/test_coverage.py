"""The suite itself: every MUST of the spec is checked by a test or listed as not observable
from outside with the reason (spec 11); car duties have car tests."""
from __future__ import annotations

from cabinlink_tools.conformance.check import ROLES
from cabinlink_tools.conformance.coverage import CAR_DUTIES, NOT_OBSERVABLE, suite_tests
from cabinlink_tools.conformance.spec import requirements


def test_every_must_is_tested_or_listed() -> None:
    reqs = requirements()
    assert len(reqs) >= 100, "docs/spec.md not found or without [M-x] ids"
    tests = suite_tests()
    tested = {t.id for t in tests}
    missing = [r for r in reqs if r not in tested and r not in NOT_OBSERVABLE]
    assert not missing, f"MUSTs with no test and no not-observable reason: {missing}"
    both = sorted(tested & set(NOT_OBSERVABLE))
    assert not both, f"listed as not observable but tested: {both}"
    unknown = sorted((tested | set(NOT_OBSERVABLE)) - set(reqs))
    assert not unknown, f"ids that are not in the spec: {unknown}"


def test_car_duties_have_car_tests() -> None:
    car_tested = {t.id for t in suite_tests() if t.module == "test_car"}
    missing = sorted(CAR_DUTIES - car_tested - set(NOT_OBSERVABLE))
    assert not missing, f"car duties without a car test: {missing}"


def test_markers_are_well_formed() -> None:
    for t in suite_tests():
        assert t.role in ROLES, t
        assert t.test.startswith("test_"), t
