"""Shards merge back into exactly the whole: no pair twice, none missing, across machines too."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TIMED, run_cli
from tests.test_compare import row, samples, write_results

from bench.analysis import compare, results
from bench.sweep import plan

CASES = "seed-article,seed-linear,seed-trig"
STRATEGIES = "jacrev,jacfwd,fd-forward"


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_shards_partition_the_standard_plan(n):
    whole = plan.make("standard", devices=["cpu", "cuda"], dtypes=["float32", "float64"])
    parts = [plan.take_shard(whole, (i, n)) for i in range(1, n + 1)]
    ids = [p.id for part in parts for p in part]
    assert len(ids) == len(set(ids)) == len(whole)
    assert sorted(ids) == sorted(p.id for p in whole)
    again = [plan.take_shard(list(reversed(whole)), (i, n)) for i in range(1, n + 1)]
    assert [sorted(p.id for p in a) for a in again] == [sorted(p.id for p in b) for b in parts]  # order-free


def _sharded(tmp_path, shards, n=3, machines=("box",)):
    files = []
    for k, i in enumerate(shards):
        rows = [row(p.problem, p.strategy, data=samples(1e-3, n=8, seed=k)) for p in
                plan.take_shard(plan.make("quick", devices=["cpu"], problems=[CASES], strategy_patterns=[STRATEGIES]),
                                (i, n))]
        files.append(write_results(tmp_path / f"shard{i}.json", rows, shard=f"{i}/{n}",
                                   machine=machines[k % len(machines)]))
    return files


def test_shard_files_are_one_side_even_from_several_machines(tmp_path):
    parts = _sharded(tmp_path, [1, 2, 3], machines=("box-a", "box-b"))
    (side,) = compare.group(parts)
    assert len(side.frame) == 9 and side.env["shards"] == ["1/3", "2/3", "3/3"]
    assert side.env["machine"] == "box-a+box-b"
    whole = write_results(tmp_path / "whole.json", [row(r["problem"], r["strategy"], data=samples(1e-3, n=8, seed=9))
                                                     for r in side.frame.to_dict("records")], torch="2.14.0")
    c = compare.compare([*parts, whole])
    assert len(c.sides) == 2 and len(c.table) == 9 and not c.warnings


def test_a_missing_shard_is_a_warning_and_its_rows_are_missing(tmp_path):
    parts = _sharded(tmp_path, [1, 3])
    whole = write_results(tmp_path / "whole.json", [row(p.problem, p.strategy, data=samples(1e-3, n=8)) for p in
                                                     plan.make("quick", devices=["cpu"], problems=[CASES],
                                                               strategy_patterns=[STRATEGIES])], torch="2.14.0")
    c = compare.compare([whole, *parts])
    assert any("shard 2/3 is missing" in w for w in c.warnings)
    assert (c.table["verdict"] == "missing").sum() == len(plan.take_shard(
        plan.make("quick", devices=["cpu"], problems=[CASES], strategy_patterns=[STRATEGIES]), (2, 3)))


@pytest.mark.slow
def test_real_sharded_runs_merge_into_exactly_the_whole(tmp_path):
    n = 3
    for i in range(1, n + 1):
        run_cli("run", "--profile", "quick", "--device", "cpu", "--cases", CASES, "--strategies", STRATEGIES,
                "--shard", f"{i}/{n}", "--threads", "1", "--results-dir", tmp_path / f"m{i}", check=True,
                env={"JACBENCH_MACHINE": f"testbox{i % 2}"})  # two machines
    files = sorted(tmp_path.glob("m*/*.json"))
    assert len(files) == n
    assert sorted(json.loads(f.read_text())["jacbench"]["shard"] for f in files) == [f"{i}/{n}" for i in range(1, n + 1)]
    merged = results.merge(files)
    whole = plan.make("quick", devices=["cpu"], problems=[CASES], strategy_patterns=[STRATEGIES])
    got = sorted(merged[["device", "dtype", "problem", "strategy"]].itertuples(index=False, name=None))
    assert got == sorted((p.device, p.dtype, p.problem, p.strategy) for p in whole)  # each pair exactly once
    assert set(merged["machine"]) == {"testbox0", "testbox1"} and set(merged["status"]) <= TIMED
    (side,) = compare.group(files)
    assert len(side.frame) == len(whole)
