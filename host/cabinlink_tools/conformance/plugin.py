"""The CabinLink conformance suite as a pytest plugin.

Load it with ``-p cabinlink_tools.conformance.plugin`` and point pytest at the suite's
tests (``cabinlink conformance`` does both)::

    pytest -p cabinlink_tools.conformance.plugin --pyargs cabinlink_tools.conformance.tests \\
        --cl-target sim:ambient:micropython --cl-report out/ --junitxml out/junit.xml

Options: ``--cl-target`` (what is tested, see :mod:`.targets`), ``--cl-fixture-app DIR``
(a simulated accessory runs the app package found in ``DIR/apps`` instead of the reference
one), ``--cl-report DIR`` (the readable summary, ``summary.md``).

Every test carries ``@must("M-s-n", role=...)``; the plugin orders the tests so that the
long waits overlap (see ``ORDER``), keeps the target running for the whole session, adds
the MUST id, spec section and role to each test case of the JUnit XML (``<properties>``) and
writes the summary at the end.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .check import Req, prefix
from .spec import requirements, section_of
from .targets import TargetSpec, make_accessory_target, parse_target

TESTS = Path(__file__).resolve().parent / "tests"

# Module order: while the liveness scenario runs (the first ~7 s, with three car addresses
# besides the main one: the four sessions the spec guarantees), the tests use the main
# session only, those whose input the counters count first; then encodings, CAN frame kinds,
# BLE and the verdicts of the background scenarios (by then they are done or nearly) while
# the counter checks run in the background; then the tests that open more sessions; what
# disturbs the accessory (address contest, power cycle, bus-off) last, and the checks over
# the whole log at the end.
ORDER = [
    "test_coverage", "test_model", "test_messages", "test_versioning", "test_malformed", "test_encoding",
    "test_can", "test_ble", "test_isotp", "test_timing", "test_counters", "test_subscriptions", "test_sessions",
    "test_events", "test_power", "test_claim", "test_busoff", "test_aggregate", "test_car",
]
# From test_encoding on, the counter checks run in the background (test_counters gives their
# verdicts): the modules from there up to test_counters send nothing the counters count.
COUNTING_FROM, COUNTING_UNTIL = ORDER.index("test_encoding"), ORDER.index("test_counters")
CAR_MODULES = {"test_car"}
ANY_TARGET = {"test_coverage"}

STATE = pytest.StashKey["ConformanceState"]()


class ConformanceState:
    """What the plugin keeps for one pytest session: the target, the results per test."""

    def __init__(self, config: pytest.Config) -> None:
        text = config.getoption("cl_target")
        self.spec: TargetSpec | None = parse_target(text) if text else None
        fixture = config.getoption("cl_fixture_app")
        self.fixture_app = Path(fixture).resolve() if fixture else None
        report = config.getoption("cl_report")
        self.report_dir = Path(report) if report else None
        self.results: list[dict[str, Any]] = []
        self.dut: Any = None
        self.car: Any = None
        self.started = time.time()
        self.setup_error: str | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("cabinlink", "CabinLink conformance")
    g.addoption("--cl-target", dest="cl_target", default=None, metavar="TARGET",
                help="what to test: sim:<app>[:<runtime>[:<board>]], can:<interface>:<channel>, "
                     "ble:<address>, car:sim or car:minimal")
    g.addoption("--cl-fixture-app", dest="cl_fixture_app", default=None, metavar="DIR",
                help="simulated targets: run the app package in DIR/apps instead of the reference one")
    g.addoption("--cl-report", dest="cl_report", default=None, metavar="DIR",
                help="write the readable summary (summary.md) into DIR")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "must(id, role): the CabinLink MUST requirement a test checks")
    try:
        config.stash[STATE] = ConformanceState(config)
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


def _module(path: Path) -> str:
    return path.stem


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    st = config.stash.get(STATE, None)
    if st is None or collection_path.parent != TESTS or not collection_path.name.startswith("test_"):
        return None
    mod = _module(collection_path)
    if mod in ANY_TARGET or st.spec is None:
        return None
    if st.spec.is_car:
        return mod not in CAR_MODULES
    return mod in CAR_MODULES


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    reqs = requirements()

    def rank(item: pytest.Item) -> int:
        mod = _module(Path(str(item.fspath)))
        return ORDER.index(mod) if mod in ORDER else len(ORDER)

    items.sort(key=rank)  # stable: file order within a module
    for item in items:
        m = item.get_closest_marker("must")
        if m is None:
            continue
        rid = m.args[0]
        item.user_properties.append(("must", rid))
        item.user_properties.append(("section", section_of(rid)))
        item.user_properties.append(("role", m.kwargs.get("role", "accessory")))
        r = reqs.get(rid)
        if r is not None:
            item.user_properties.append(("requirement", r.text))


# --- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def cl_state(request: pytest.FixtureRequest) -> ConformanceState:
    return request.config.stash[STATE]


@pytest.fixture(scope="session")
def dut(cl_state: ConformanceState) -> Iterator[Any]:
    """The accessory under test (:class:`~cabinlink_tools.conformance.dut.Dut`), started once
    per session; background scenarios start with it."""
    from .dut import Dut

    if cl_state.spec is None:
        pytest.skip("no --cl-target given")
    if cl_state.spec.is_car:
        pytest.skip("the target is a car")
    if cl_state.setup_error:
        pytest.fail(cl_state.setup_error, pytrace=False)
    target = make_accessory_target(cl_state.spec, cl_state.fixture_app)
    d = Dut(target)
    cl_state.dut = d
    try:
        d.start()
    except ImportError as e:
        d.close()
        cl_state.setup_error = f"target {cl_state.spec.text}: {e} (install it to test this target)"
        pytest.skip(cl_state.setup_error)
    except Exception as e:
        d.close()
        cl_state.setup_error = f"target {cl_state.spec.text} could not be set up: {type(e).__name__}: {e}"
        pytest.fail(cl_state.setup_error, pytrace=False)
    from .scenarios import start_background

    start_background(d)
    yield d
    d.close()


@pytest.fixture(scope="session")
def car(cl_state: ConformanceState) -> Iterator[Any]:
    """The car under test with the suite's accessories around it (``car:`` targets)."""
    from .car_target import CarBench

    if cl_state.spec is None or not cl_state.spec.is_car:
        pytest.skip("the target is not a car")
    bench = CarBench(cl_state.spec)
    cl_state.car = bench
    try:
        bench.start()
    except Exception as e:
        bench.close()
        pytest.fail(f"car target {cl_state.spec.text} could not be set up: {type(e).__name__}: {e}", pytrace=False)
    yield bench
    bench.close()


@pytest.fixture
def req(request: pytest.FixtureRequest) -> Req:
    """The test's requirement: ``req(ok, "text")`` fails with ``spec s [M-s-n]: text``."""
    m = request.node.get_closest_marker("must")
    if m is None:
        raise RuntimeError(f"{request.node.nodeid} has no @must marker")
    return Req(m.args[0])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    st = item.config.stash.get(STATE, None)
    if st is None or st.dut is None:
        return
    st.dut.touched = set()  # what the test's fixtures and the test ask for (see Dut.forget)
    mod = _module(Path(str(item.fspath)))
    if mod in ORDER and COUNTING_FROM <= ORDER.index(mod) <= COUNTING_UNTIL:
        from .tests.test_counters import start_counting

        start_counting(st.dut)


# --- a second attempt where frames get lost ---------------------------------------------------------
def _refresh_fixtures(item: pytest.Function, args: dict[str, Any]) -> None:
    """Evaluate again the test's plain function-scoped fixtures (those that hand it an
    observation, e.g. ``obs``, ``stalled``, ``seen``), after :meth:`Dut.forget`."""
    import inspect

    for name in list(args):
        defs = item._fixtureinfo.name2fixturedefs.get(name)
        if not defs or name == "req":
            continue
        fd = defs[-1]
        if fd.scope != "function" or inspect.isgeneratorfunction(fd.func) \
                or any(p not in args and p not in item.funcargs for p in fd.argnames):
            continue
        args[name] = fd.func(**{p: args.get(p, item.funcargs.get(p)) for p in fd.argnames})



@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """On the CAN link a frame can be lost without anybody being at fault in the protocol's
    eyes (a controller with two receive buffers drops what its firmware reads too late), and
    a lost frame looks like a missing answer. So an accessory test that failed on a CAN
    target runs once more and the second attempt decides; the report lists every
    requirement that needed it. A unit that gets a requirement wrong gets it wrong twice."""
    st = pyfuncitem.config.stash.get(STATE, None)
    m = pyfuncitem.get_closest_marker("must")
    d = st.dut if st is not None else None
    if m is None or d is None or d.probe is None or "dut" not in pyfuncitem.fixturenames \
            and "can_dut" not in pyfuncitem.fixturenames:
        return None
    from .check import RequirementFailed
    from .session import NoResult

    args = {a: pyfuncitem.funcargs[a] for a in pyfuncitem._fixtureinfo.argnames}
    t0 = time.time()
    try:
        pyfuncitem.obj(**args)
    except (RequirementFailed, NoResult) as e:
        d.lossy.append((t0, time.time()))
        if "req" in args:
            args["req"] = Req(m.args[0])
        anew = d.forget(d.touched)  # an observation it judged is made once more
        if anew:
            _refresh_fixtures(pyfuncitem, args)
        pyfuncitem.obj(**args)
        d.notes.append(f"{m.args[0]} ({pyfuncitem.name}) passed on its second attempt"
                       f"{' (observation ' + ', '.join(anew) + ' made again)' if anew else ''}; "
                       f"the first failed with: {e}")
    return True


# --- results and the summary ---------------------------------------------------------------------
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    st = item.config.stash.get(STATE, None)
    m = item.get_closest_marker("must")
    if st is None or m is None:
        return
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        text = ""
        if rep.failed:
            exc = call.excinfo
            text = str(exc.value) if exc is not None else str(rep.longrepr)
            rid = m.args[0]
            if not text.startswith("spec "):
                text = f"{prefix(rid)}: {type(exc.value).__name__ if exc else 'error'}: {text}"
        elif rep.skipped:
            lr = rep.longrepr
            text = lr[2] if isinstance(lr, tuple) else str(lr)
            text = text.removeprefix("Skipped: ")
        st.results.append({"id": m.args[0], "role": m.kwargs.get("role", "accessory"), "test": item.name,
                           "outcome": rep.outcome, "message": text, "duration": rep.duration})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    st = session.config.stash.get(STATE, None)
    if st is None or st.report_dir is None or st.spec is None:
        return
    from .report import write_summary

    write_summary(st, st.report_dir)
