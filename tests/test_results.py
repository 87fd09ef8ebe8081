"""Result files: the loader on a real file, pytest-benchmark's own reader, and every way a
file can be broken, each a one-line error naming the file."""

import json
import os
import stat
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import TIMED, run_cli

from bench.analysis import files, results
from bench.analysis.journal import Journal


def test_loader_gives_one_tidy_row_per_pair(tiny_results):
    frame = results.load([tiny_results])
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == 5 * 6 and not frame.duplicated(results.KEY).any()
    assert set(results.COLUMNS) <= set(frame.columns)
    ok = frame[frame.status == "ok"]
    assert (ok["median"] > 0).all() and (ok["rounds"] >= 3).all() and ok["iqr"].notna().all()
    assert ok["samples"].map(len).eq(ok["rounds"]).all()
    assert (ok["error"] <= ok["tolerance"]).all()
    assert (frame.torch != "unknown").all() and (frame.machine == "testbox").all()
    broken = frame[frame.problem == "graph-break-powers"].set_index("strategy")
    assert broken.loc["functional", "status"] == "wrong" and broken.loc["manual-backward", "status"] == "error"
    assert broken.loc["fd-forward-loop", "status"] in TIMED
    assert broken.loc["functional", "median"] != broken.loc["functional", "median"]  # NaN: not timed


def test_a_big_file_is_read_a_chunk_at_a_time_into_the_same_frame(tiny_results, monkeypatch):
    whole = results.load([tiny_results])
    monkeypatch.setattr(results, "CHUNK", 7)  # 30 rows: five chunks, the last of two rows
    chunked = results.load([tiny_results])
    pd.testing.assert_frame_equal(chunked, whole)  # values and dtypes alike


def test_a_problem_s_strategies_are_timed_together_and_the_file_alone_pairs_their_rounds(tiny_results):
    """NOTE: [Paired timing]: each round keeps its cycle, so a ratio between two rows of a
    problem is recomputed from the file alone, and it is the one the picks use."""
    from itertools import combinations

    from bench.analysis import picks, stats

    frame = results.load([tiny_results])
    ok = frame[frame.status == "ok"]
    together = ok[ok["cycles"].map(len) > 0]
    assert together["cycles"].map(len).eq(together["rounds"]).all()
    paired = 0
    for _, g in together.groupby(["device", "dtype", "problem"]):
        for a, b in combinations(g.to_dict("records"), 2):
            if stats.is_paired(a["samples"], b["samples"], a["cycles"], b["cycles"]):
                paired += 1
                alone = stats.paired(dict(zip(a["cycles"], a["samples"])), dict(zip(b["cycles"], b["samples"])))
                assert picks.row_ratio(a, b) == alone
    assert paired >= len(together) // 2  # most rows of a problem share their cycles
    best = picks.best_per_problem(frame)  # the picks' margins are those paired ratios
    checked = 0
    for _, b in best.dropna(subset=["exact_runner_up"]).iterrows():
        rows = ok[ok["problem"] == b["problem"]].set_index("strategy")
        a, z = rows.loc[b["exact_strategy"]], rows.loc[b["exact_runner_up"]]
        if stats.is_paired(a["samples"], z["samples"], a["cycles"], z["cycles"]):
            alone = stats.paired(dict(zip(a["cycles"], a["samples"])), dict(zip(z["cycles"], z["samples"])))
            assert (b["exact_margin"], b["exact_margin_low"], b["exact_margin_high"]) == (alone.value, alone.low,
                                                                                          alone.high)
            checked += 1
    assert checked


def test_a_pair_in_two_files_is_loaded_once_from_the_later_file_and_said(tiny_results, tmp_path):
    again = tmp_path / "again.json"
    again.write_text(tiny_results.read_text())
    with pytest.warns(results.ResultsWarning, match=r"^30 pairs are in more than one file .* later file's row"):
        frame = results.load([tiny_results, again])
    assert len(frame) == 30 and set(frame["file"]) == {str(again)}
    proc = run_cli("summary", tiny_results, again)
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warned) == 1 and warned[0].startswith("jacbench: warning: 30 pairs are in more than one file")


def test_file_is_self_describing(tiny_results):
    doc = json.loads(tiny_results.read_text())
    env = doc["machine_info"]["jacbench"]
    for key in ("torch", "cuda", "cudnn", "device_name", "cpu", "threads", "commit", "machine"):
        assert key in env
    assert doc["machine_info"]["cpu"]  # pytest-benchmark's own machine info is there too
    for rec in doc["benchmarks"] + doc["jacbench"]["untimed"]:
        for key in ("problem", "strategy", "device", "dtype", "status", "reason", "error"):
            assert key in rec["extra_info"]
    assert doc["jacbench"]["ceilings"]["float32"]["matmul_flops"] > 0
    assert tiny_results.name.startswith("testbox_cpu_torch-")


def test_pytest_benchmark_compare_reads_the_file(tiny_results):
    proc = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(tiny_results),
                           "--columns=min,median,iqr,rounds"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "test_pair[cpu-float32-seed-article-jacrev]" in proc.stdout


def _variants(good: str) -> dict:
    doc = json.loads(good)
    no_section = dict(doc)
    no_section.pop("jacbench")
    future = json.loads(good)
    future["jacbench"]["schema"] = 99
    no_status = json.loads(good)
    del no_status["benchmarks"][0]["extra_info"]["status"]
    nan_samples = json.loads(good)
    nan_samples["benchmarks"][0]["stats"]["data"] = []
    return {
        "truncated": (good[: len(good) // 2], "truncated or corrupt JSON"),
        "cut in a string": ('{"a": "x', "truncated or corrupt JSON (Unterminated string starting at line 1, column 7)"),
        "empty": ("", "empty file"),
        "garbage": ("\x00\x01not json at all", "truncated or corrupt JSON"),
        "foreign": (json.dumps({"hello": "world"}), "not a jacbench results file"),
        "list": (json.dumps([1, 2, 3]), "not a jacbench results file"),
        "pytest-benchmark only": (json.dumps(no_section), "not a jacbench results file"),
        "future schema": (json.dumps(future), "schema 99"),
        "record without status": (json.dumps(no_status), "benchmarks[0].extra_info.status is missing"),
        "record without samples": (json.dumps(nan_samples),
                                   "benchmarks[0].stats.data is an empty list; a timed pair needs its raw samples"),
    }


@pytest.mark.parametrize("case", ["truncated", "cut in a string", "empty", "garbage", "foreign", "list", "pytest-benchmark only",
                                  "future schema", "record without status", "record without samples"])
def test_broken_files_give_a_one_line_error_naming_the_file(case, tiny_results, tmp_path):
    text, fragment = _variants(tiny_results.read_text())[case]
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(results.ResultsError) as info:
        results.load([tiny_results, bad])  # a good file first: still no partial frame
    message = str(info.value)
    assert message.startswith(str(bad)) and fragment in message and "\n" not in message


def test_missing_file_is_a_one_line_error(tmp_path):
    with pytest.raises(results.ResultsError, match="cannot read"):
        results.load([tmp_path / "nope.json"])


def test_cli_reports_a_broken_file_in_one_line(tiny_results, tmp_path):
    bad = tmp_path / "cut.json"
    bad.write_text(tiny_results.read_text()[:1000])
    proc = run_cli("summary", bad)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and str(bad) in proc.stderr and "Traceback" not in proc.stderr


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    files.write_atomic(target, {"a": 1})

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", explode)
    with pytest.raises(OSError):
        files.write_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_atomic_write_makes_files_others_can_read(tmp_path):
    umask = os.umask(0o022)
    try:
        path = files.write_atomic(tmp_path / "r.html", "<p>report</p>")
    finally:
        os.umask(umask)
    assert path.read_text() == "<p>report</p>" and stat.S_IMODE(path.stat().st_mode) == 0o644


def _header(tmp_path, *pairs) -> dict:
    return {"run_id": "x", "created": "2026-11-30T00:00:00+00:00", "output": str(tmp_path / "r.json"),
            "device": "cpu", "settings": {},
            "pairs": [{"id": p, "device": "cpu", "dtype": "float32", "problem": p, "strategy": "jacrev"} for p in pairs]}


def test_journal_adds_up_the_wall_time_of_every_piece_of_a_run(tmp_path):
    path = tmp_path / "j.journal.jsonl"
    j = Journal.create(path, _header(tmp_path, "a"))
    j.append({"type": "wall", "seconds": 2.5})  # a slice of an interleaved matrix, or a run that was resumed
    j.append({"type": "wall", "seconds": 4.0})
    assert j.wall_s == 6.5 and Journal.read(path).wall_s == 6.5


def test_journal_ignores_and_trims_a_line_cut_short(tmp_path):
    path = tmp_path / "j.journal.jsonl"
    j = Journal.create(path, _header(tmp_path, "a", "b"))
    j.append({"type": "result", "pair": "a", "record": {"extra_info": {"status": "ok"}}})
    with open(path, "a") as f:
        f.write('{"type": "result", "pair": "b", "rec')  # killed mid-write
    j = Journal.read(path)
    assert list(j.results) == ["a"] and j.remaining() == ["b"]
    j.append({"type": "result", "pair": "b", "record": {"extra_info": {"status": "ok"}}})
    assert Journal.read(path).remaining() == []
    assert all(json.loads(line) for line in path.read_text().splitlines())
