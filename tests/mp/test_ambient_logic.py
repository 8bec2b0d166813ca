# The ambient sensor's decisions (firmware/apps/ambient/logic.py) alone, on a
# manual clock: the air-quality hysteresis, a sensor's status and back-off,
# the health it gives. Dual runtime: pytest on CPython, tests/mp/run.py on
# the MicroPython unix port.
import sys

if "firmware" not in sys.path:
    sys.path.append("firmware")

from cabinlink import msg
from cabinlink.clock import ManualClock
from apps.ambient import logic
from apps.ambient.logic import FAULT, GOOD, NOT_PRESENT, OK, POOR, WARMING_UP, AirQuality, SensorState


def _events(aq, values):
    # The level changes (air_quality events) a sequence of samples raises.
    return [(v, aq.level) for v in values if aq.update(v)]


def test_air_quality_edges():
    aq = AirQuality(1200, 100)
    assert aq.level == GOOD
    assert _events(aq, [450, 1100, 1199]) == []
    assert _events(aq, [1200]) == [(1200, POOR)]  # at the threshold: poor
    assert _events(aq, [1300, 1199, 1100]) == []  # not below high - hysteresis
    assert _events(aq, [1099]) == [(1099, GOOD)]
    assert _events(aq, [1199, 1100, 900]) == []


def test_air_quality_noise_around_the_threshold_is_one_event_each_way():
    aq = AirQuality(1200, 100)
    # rising through the threshold with +-40 ppm of noise: one event
    rising = [1150, 1190, 1230, 1185, 1215, 1170, 1240, 1195, 1225, 1180, 1260]
    assert _events(aq, rising) == [(1230, POOR)]
    # hovering and falling, noise never below 1100 until the real fall: one event
    falling = [1160, 1120, 1180, 1105, 1140, 1101, 1099, 1130, 1080, 1150, 1170]
    assert _events(aq, falling) == [(1099, GOOD)]


def test_air_quality_random_noise_counts_only_true_crossings():
    # A slow ramp up and down with noise smaller than half the hysteresis: one
    # event up, one down, for any noise sequence (LCG: same on both runtimes).
    seed = 12345
    for run in range(20):
        aq = AirQuality(1000, 100)
        values = []
        for i in range(400):
            base = 800 + 4 * i if i < 200 else 1600 - 4 * (i - 200)
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            values.append(base + seed % 97 - 48)  # noise -48..48
        ev = _events(aq, values)
        assert [lv for _, lv in ev] == [POOR, GOOD], (run, ev)
        assert ev[0][0] >= 1000 and ev[1][0] < 900


def test_air_quality_threshold_changes_apply_to_the_next_sample():
    aq = AirQuality(1200, 100)
    assert _events(aq, [1000]) == []
    aq.high = 900  # the car lowered the threshold: the same air is now poor
    assert _events(aq, [1000]) == [(1000, POOR)]
    aq.hysteresis = 0
    assert _events(aq, [899]) == [(899, GOOD)]
    aq.high, aq.hysteresis = 400, 1000  # never good again: the car's choice
    assert _events(aq, [400, 0]) == [(400, POOR)]


def test_sensor_status_one_glitch_is_retried_two_are_a_fault_with_back_off():
    clk = ManualClock()
    s = SensorState(clk)
    assert s.status == WARMING_UP
    assert s.good() and s.status == OK
    assert not s.good()
    assert s.failed() == (False, 100)  # one failure: retried at once, still ok
    assert s.status == OK
    assert s.good() is False and s.fails == 0
    waits = []
    for i in range(12):
        changed, wait = s.failed()
        assert changed == (i == 1)
        waits.append(wait)
    assert s.status == FAULT
    assert waits == [100, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000]
    assert s.good() and s.status == OK and s.fails == 0


def test_sensor_status_never_answering_is_not_present_after_the_grace():
    clk = ManualClock()
    s = SensorState(clk)
    for ms in (0, 100, 500, 1000):  # the chip may still be powering up
        clk.advance(ms)
        assert s.failed()[0] is False and s.status == WARMING_UP
    clk.advance(400)  # 2000 ms after boot
    assert s.failed()[0] is True and s.status == NOT_PRESENT
    assert s.failed()[0] is False
    assert s.answered() and s.status == WARMING_UP  # fitted later, or slow to wake
    assert not s.answered()
    assert s.good() and s.status == OK
    # once it has answered, silence is a fault, never not_present
    s.failed()
    s.failed()
    assert s.status == FAULT


def test_health_from_the_statuses():
    h = logic.health
    assert h([]) == msg.HEALTH_NOMINAL
    assert h([OK, WARMING_UP, OK]) == msg.HEALTH_NOMINAL
    assert h([OK, NOT_PRESENT, OK]) == msg.HEALTH_ADVISORY
    assert h([OK, FAULT, NOT_PRESENT]) == msg.HEALTH_CAUTION
    assert h([FAULT, NOT_PRESENT, FAULT]) == msg.HEALTH_WARNING
    assert h([NOT_PRESENT]) == msg.HEALTH_WARNING


def test_clamp():
    assert logic.clamp(-5, 0, 10) == 0
    assert logic.clamp(15, 0, 10) == 10
    assert logic.clamp(7, 0, 10) == 7
