"""Pairs timed in visits (NOTE: [Visits] in bench.visits): each visit's share of the timing
rules, joining a later visit to the record so far, the run's drift between visits and the
intervals it widens. Fake clocks and scripted records: deterministic."""

import math
from types import SimpleNamespace

import pytest

from tests.test_timing import FakeClock

from bench.analysis import visits
from bench.measure.timing import Policy, measure


def test_each_visit_takes_its_share_of_the_rounds_the_cap_and_the_precision():
    clock = FakeClock([1e-3])
    t = measure(clock.call, Policy(warmup=0, visits=2, min_rounds=6, precision=0.01), timer=clock)
    assert len(t.samples) == 3 and t.precise  # half of the 6 rounds, then precise
    noisy = FakeClock([1e-3, 3e-3])  # never precise: stops at the visit's cap, half the policy's
    t = measure(noisy.call, Policy(warmup=0, visits=2, min_rounds=3, max_time=0.02, precision=0.0), timer=noisy)
    assert not t.precise and 0.01 <= sum(t.samples) < 0.01 + 3e-3
    again = measure(clock.call, Policy(warmup=0, visits=2, min_rounds=6), timer=clock, iterations=7)
    assert again.iterations == 7  # a later visit keeps the first one's calls per round


def _record(samples, visit_list, status="ok", retimed=(), **info):
    return {"stats": {"data": list(samples), "iterations": 1, "median": sorted(samples)[len(samples) // 2]},
            "extra_info": {"status": status, "visits": list(visit_list), "retimed": list(retimed),
                           "cpu": [0.0] * len(samples), "switches": [0] * len(samples), "delay": [0.0] * len(samples),
                           "disturbed": max((v["disturbed"] for v in visit_list), default=0.0), "peak_bytes": 123,
                           "work": {"vjps": 4}, "f_s": 2e-4, **info}}


def _visit(median, rounds, disturbed=0.0, started=0.0):
    return {"median": median, "rounds": rounds, "disturbed": disturbed, "started": started, "seconds": 0.1}


def _row(samples, disturbed=0.0, status="ok", cycles=(), wall=()):
    return SimpleNamespace(status=status, samples=list(samples), cycles=list(cycles), wall=list(wall),
                           cpu=[0.0] * len(samples), switches=[0] * len(samples),
                           delay=[0.0] * len(samples), disturbed=disturbed, started=9.0, seconds=0.2, visits=[],
                           retimed=[], notes={}, first_call_s=None, peak_bytes=None, jac_bytes=None, work=None,
                           fallback=False, fallback_ops=[], f_s=None, f_iqr=None)


def test_a_later_visit_joins_the_earlier_rounds_and_keeps_what_only_the_first_measured():
    before = _record([1.0, 1.1, 0.9], [_visit(1.0, 3)])
    row = _row([2.0, 2.1])
    visits.merge(row, before)
    assert row.samples == [1.0, 1.1, 0.9, 2.0, 2.1]
    assert [v["rounds"] for v in row.visits] == [3, 2] and row.peak_bytes == 123 and row.work == {"vjps": 4}
    assert row.f_s == 2e-4  # t(f) too (NOTE: [Cost in units of f]): a later visit does not time f again


def test_visits_timed_together_keep_each_round_s_cycle_and_wall_time_where_every_visit_has_them():
    before = _record([1.0, 1.1, 0.9], [_visit(1.0, 3)], cycles=[0, 1, 2], wall=[1.5, 1.6, 1.4])
    row = _row([2.0, 2.1], cycles=[1_000_000, 1_000_001], wall=[2.5, 2.6])
    visits.merge(row, before)
    assert row.cycles == [0, 1, 2, 1_000_000, 1_000_001] and row.wall == [1.5, 1.6, 1.4, 2.5, 2.6]
    alone = _record([1.0, 1.1, 0.9], [_visit(1.0, 3)])  # its first visit was timed apart: no cycles to pair
    row = _row([2.0, 2.1], cycles=[1_000_000, 1_000_001], wall=[2.5, 2.6])
    visits.merge(row, alone)
    assert row.samples == [1.0, 1.1, 0.9, 2.0, 2.1] and row.cycles == [] and row.wall == []


def test_a_disturbed_visit_is_dropped_for_the_new_one_and_kept_as_evidence():
    before = _record([1.0, 1.1, 5.0, 6.0], [_visit(1.05, 2), _visit(5.5, 2, disturbed=0.9, started=3.0)])
    row = _row([1.2, 1.0])
    visits.merge(row, before)
    assert row.samples == [1.0, 1.1, 1.2, 1.0]
    assert [v["median"] for v in row.retimed] == [5.5] and len(row.visits) == 2


def test_which_pairs_a_later_pass_times_again():
    policy = {"visits": 2, "max_time": 0.4, "retimes": 2}
    assert visits.wanted(_record([1e-3] * 5, [_visit(1e-3, 5)]), policy)  # one visit of two
    assert not visits.wanted(_record([1e-3] * 5, [_visit(1e-3, 5)]), {**policy, "visits": 1})
    assert not visits.wanted(_record([0.5] * 3, [_visit(0.5, 3)]), policy)  # slower than a visit's cap
    assert not visits.wanted(_record([1e-3] * 5, [_visit(1e-3, 5)], status="wrong"), policy)
    disturbed = [_visit(1e-3, 5), _visit(2e-3, 5, disturbed=0.8)]
    assert visits.wanted(_record([1e-3] * 10, disturbed), policy)  # two visits, one disturbed
    assert not visits.wanted(_record([1e-3] * 10, disturbed), {**policy, "retimes": 0})  # a setting: none again
    tried = [_visit(3e-3, 5, disturbed=0.9)] * 2
    assert not visits.wanted(_record([1e-3] * 10, disturbed, retimed=tried), policy)  # retimed enough
    final = visits.settled(_record([1e-3] * 10, disturbed, retimed=tried))
    reason = final["extra_info"]["reason"]
    assert final["extra_info"]["status"] == "disturbed" and "in 4 tries" in reason
    assert "90% of rounds waiting, 90% of rounds waiting, 80% of rounds waiting" in reason
    assert visits.settled(_record([1e-3] * 5, [_visit(1e-3, 5)])) is None
    noted = _record([1e-3] * 10, disturbed, retimed=tried)
    noted["extra_info"]["reason"] = "its Jacobian is zero almost everywhere"
    assert visits.settled(noted)["extra_info"]["reason"].endswith("; its Jacobian is zero almost everywhere")


def test_the_drift_between_visits_widens_every_interval():
    # two pairs whose visits differ by a factor e^0.2 and e^-0.2: a drift of 0.2/sqrt(2) in log
    records = [{"visits": [_visit(1.0, 5), _visit(math.exp(0.2), 5)]},
               {"visits": [_visit(2.0, 5), _visit(2.0 * math.exp(-0.2), 5)]}, {"visits": [_visit(3.0, 5)]}]
    drift = visits.drift(records)
    assert drift == pytest.approx(0.2 / math.sqrt(2))
    assert visits.interval(1.0, 0.01, records[0]["visits"], drift) == pytest.approx(math.exp(1.96 * 0.1) - 1)
    assert visits.interval(1.0, 0.5, records[0]["visits"], drift) == 0.5  # the rounds' own is wider
    assert visits.interval(1.0, 0.01, [], None) == 0.01  # no pair had two visits: nothing to widen by
    assert visits.drift([{"visits": [_visit(1.0, 5)]}]) is None


def test_a_visit_during_which_the_machine_was_busy_is_disturbed_though_no_round_waited():
    # samples: [time, CPUs other work used, pressure]; busy from t=10 to t=13
    samples = [[float(t), 1.2 if 10 <= t <= 13 else 0.05, None] for t in range(1, 20)]
    assert visits.during(samples, 10.2, 12.5) == pytest.approx(1.2) and visits.during(samples, 30, 31) is None
    quiet = _visit(1e-3, 5, started=3.0)
    burned = _visit(2e-3, 5, started=10.5)
    record = _record([1e-3] * 10, [quiet, burned])
    marked = visits.annotated(record, samples)
    # busy beyond the run's usual load (0.05 here, its 25th percentile)
    assert [v["busy"] for v in marked["extra_info"]["visits"]] == [pytest.approx(0.0), pytest.approx(1.15)]
    assert visits.disturbed(marked) and not visits.disturbed(record)
    assert visits.annotated(marked, samples) is None  # nothing new to mark
    assert visits.annotated(_record([1e-3] * 5, [quiet]), samples) is None  # a quiet visit stays as it was
    assert visits.wanted(marked, {"visits": 2, "max_time": 0.4, "retimes": 1})  # timed again
    steady = [[t, 1.2, None] for t, _, _ in samples]  # a load there all along is no reason to time again
    assert visits.annotated(record, steady) is None
