"""jacbench compare on synthetic result files with known shifts: the statistics, the verdicts,
status and memory changes, the CI gate, the HTML report, the pivot, machines and devices.

Synthetic files are built to the results format (``bench.results.read`` validates them), with
raw samples drawn from known distributions, so each verdict is known in advance.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

from bench import cli
from bench.analysis import compare, results
from bench.render import compare as shown

POLICY = {"warmup": 1, "min_rounds": 5, "max_rounds": 1000, "max_time": 0.4, "precision": 0.03,
          "min_round_time": 0.0002}


def samples(median: float, n: int = 40, spread: float = 0.03, seed: int = 0) -> list[float]:
    """``n`` log-normal timings around ``median`` with relative spread ``spread``."""
    rng = np.random.default_rng(seed)
    return list(median * np.exp(rng.normal(0.0, spread, n)))


def row(problem, strategy, status="ok", data=None, *, dtype="float32", device="cpu", peak=4096, reason="", f_s=None):
    return {"problem": problem, "strategy": strategy, "status": status, "data": data, "dtype": dtype,
            "device": device, "peak": peak, "reason": reason, "f_s": f_s}


def write_results(path: Path, rows, *, torch="2.13.0", machine="box", device="cpu", profile="standard",
                  environment=None, shard=None, started="2026-01-01T00:00:00+00:00", threads=2,
                  device_name="Test CPU", commit="c0ffee" * 6) -> Path:
    """A results file as ``bench.results.assemble`` writes it, from ``row(...)`` dicts."""
    benchmarks, untimed = [], []
    for r in rows:
        pair = f"{r['device']}-{r['dtype']}-{r['problem']}-{r['strategy']}"
        info = {"problem": r["problem"], "strategy": r["strategy"], "device": r["device"], "dtype": r["dtype"],
                "family": r["problem"].split("-")[0], "kind": "vector", "n": 8, "m": 8, "status": r["status"],
                "reason": r["reason"], "error": 0.0 if r["status"] == "ok" else None, "tolerance": 1e-4,
                "first_call_s": 0.01, "peak_bytes": r["peak"], "jac_bytes": 256, "fallback": False,
                "fallback_ops": [], "work": {"fevals": 1, "vjps": 8, "jvps": 0, "flops": 0}, "schema": 1,
                "f_s": r.get("f_s")}
        rec = {"group": f"{r['device']} {r['dtype']} {r['problem']}", "name": f"test_pair[{pair}]",
               "fullname": f"bench/sweep/suite.py::test_pair[{pair}]", "params": {"pair": pair}, "param": pair,
               "extra_info": info, "options": {}}
        if r["data"] is not None:
            data = [float(x) for x in r["data"]]
            rec["stats"] = {"data": data, "iterations": 1, "rounds": len(data), "median": float(np.median(data)),
                            "min": min(data), "max": max(data), "mean": float(np.mean(data))}
            benchmarks.append(rec)
        else:
            untimed.append(rec)
    selection = {"cases": None, "tags": None, "strategies": None, "dtype": None}
    if environment:
        selection["environment"] = environment
    doc = {
        "machine_info": {"node": machine, "jacbench": {
            "machine": machine, "torch": torch, "torch_build": f"{torch}+cpu", "cuda": None, "cudnn": None,
            "device": device, "device_kind": device, "device_name": device_name, "cpu": "Test CPU",
            "cpu_count": 2, "threads": threads, "python": "3.11.7", "commit": {"id": commit, "dirty": False}}},
        "commit_info": {},
        "benchmarks": benchmarks,
        "datetime": started,
        "version": "5.3.1",
        "jacbench": {"schema": 1, "run_id": path.stem[-12:], "profile": profile,
                     "settings": {"profile": profile, "policy": POLICY, "pair_timeout": 120.0, "threads": threads,
                                  "seed": 0},
                     "selection": selection, "shard": shard, "pairs": len(rows), "started": started,
                     "wall_s": 10.0, "ceilings": {}, "untimed": untimed},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    results.read(path)  # the synthetic file must be a valid results file
    return path


def known_shifts(tmp_path):
    """Base and new files where every row's fate is known."""
    base = [
        row("p-slow", "jacrev", data=samples(1e-3, seed=1)),
        row("p-wiggle", "jacrev", data=samples(1e-3, spread=0.05, seed=2)),
        row("p-fast", "jacrev", data=samples(2e-3, seed=3)),
        row("p-same", "jacrev", data=samples(5e-4, seed=4)),
        row("p-oom", "jacrev", data=samples(1e-3, seed=5), peak=2**20),
        row("p-mem", "jacrev", data=samples(1e-3, seed=6), peak=2**20),
        row("p-tiny-mem", "jacrev", data=samples(1e-3, seed=7), peak=84),
        row("p-few", "jacrev", data=samples(1e-3, n=3, seed=8)),
        row("p-fixed", "grad-batched", "unsupported", reason="torch 1.13.0 lacks is_grads_batched"),
        row("p-gone", "jacrev", data=samples(1e-3, seed=9)),
    ]
    new = [
        row("p-slow", "jacrev", data=samples(1.2e-3, seed=11)),  # a 20% regression
        row("p-wiggle", "jacrev", data=samples(1.02e-3, spread=0.05, seed=12)),  # 2%, inside the noise
        row("p-fast", "jacrev", data=samples(1.5e-3, seed=13)),  # 25% faster
        row("p-same", "jacrev", data=samples(5e-4, seed=14)),
        row("p-oom", "jacrev", "oom", reason="CUDA out of memory <tried to allocate & fail>"),
        row("p-mem", "jacrev", data=samples(1e-3, seed=16), peak=2**21),  # twice the memory
        row("p-tiny-mem", "jacrev", data=samples(1e-3, seed=17), peak=168),  # twice, but 84 bytes
        row("p-few", "jacrev", data=samples(2e-3, n=3, seed=18)),  # 2x, but 3 rounds against 3
        row("p-fixed", "grad-batched", data=samples(1e-3, seed=19)),
        row("p-new", "jacrev", data=samples(1e-3, seed=20)),
    ]
    return (write_results(tmp_path / "base.json", base, torch="2.12.1"),
            write_results(tmp_path / "new.json", new, torch="2.13.0"))


def by_problem(comparison):
    return comparison.table.set_index("problem")


def test_known_shifts_get_the_right_verdicts(tmp_path):
    c = compare.compare(known_shifts(tmp_path))
    t = by_problem(c)
    assert [s.label for s in c.sides] == ["torch 2.12.1", "torch 2.13.0"]
    assert t.loc["p-slow", "verdict"] == "slower" and t.loc["p-slow", "p"] < 1e-6
    assert 1.15 < t.loc["p-slow", "ratio"] < 1.25
    assert t.loc["p-slow", "ci_lo"] < t.loc["p-slow", "ratio"] < t.loc["p-slow", "ci_hi"]
    assert t.loc["p-wiggle", "verdict"] == "no significant change"
    assert t.loc["p-fast", "verdict"] == "faster"
    assert t.loc["p-same", "verdict"] == "no significant change"
    assert t.loc["p-few", "verdict"] == "inconclusive"  # 3 vs 3 rounds cannot reach p < 0.05
    assert t.loc["p-gone", "verdict"] == "missing" and t.loc["p-new", "verdict"] == "new"
    assert t.loc["p-slow", "regression"] and not t.loc["p-wiggle", "regression"]


def test_status_and_memory_changes_are_reported(tmp_path):
    t = by_problem(compare.compare(known_shifts(tmp_path)))
    assert t.loc["p-oom", "status_change"] == "ok→oom" and t.loc["p-oom", "status_kind"] == "regression"
    assert t.loc["p-oom", "verdict"] == "untimed"
    assert t.loc["p-fixed", "status_change"] == "unsupported→ok" and t.loc["p-fixed", "status_kind"] == "fixed"
    assert t.loc["p-mem", "memory"] == "more" and t.loc["p-mem", "mem_ratio"] == pytest.approx(2.0)
    assert t.loc["p-tiny-mem", "memory"] == ""  # below the absolute floor
    assert t.loc["p-slow", "status_change"] == ""


def test_stalled_samples_get_a_warning(tmp_path):
    """A benchmark stalled by a busy machine: most calls fast, some a hundred times slower."""
    stalled = samples(1e-3, n=30, seed=1) + samples(1e-1, n=10, seed=2)
    a = write_results(tmp_path / "a.json", [row("p", "jacrev", data=samples(1e-3, seed=3))], torch="2.12.1")
    b = write_results(tmp_path / "b.json", [row("p", "jacrev", data=stalled)], torch="2.13.0")
    c = compare.compare([a, b])
    assert c.table.iloc[0]["stalled"] and any("stalled, not just noisy" in w for w in c.warnings)
    assert "(stalled)" in shown.render_text(c)
    assert not compare.compare(known_shifts(tmp_path)).table["stalled"].any()


def test_a_burst_of_interference_is_not_a_regression(tmp_path):
    """Other processes only add time: during a burst, most calls of one side ran 30% slower but
    its fastest calls did not move. The median test alone would call that a regression."""
    base = samples(1e-3, n=40, spread=0.02, seed=1)
    burst = samples(1e-3, n=15, spread=0.02, seed=2) + samples(1.3e-3, n=25, spread=0.02, seed=3)
    a = write_results(tmp_path / "a.json", [row("p", "jacrev", data=base)], environment="a")
    b = write_results(tmp_path / "b.json", [row("p", "jacrev", data=burst)], environment="b")
    r = compare.compare([a, b]).table.iloc[0]
    assert r["ratio"] > 1.2 and r["p"] < 1e-3 and r["low_ratio"] < 1.05
    assert r["verdict"] == "no significant change"


def test_verdict_rules():
    assert compare.judge(1.2, 0.001, 40, 40, 0.10, 0.05) == "slower"
    assert compare.judge(1.05, 1e-9, 40, 40, 0.10, 0.05) == "no significant change"  # significant, too small
    assert compare.judge(1 / 1.2, 0.001, 40, 40, 0.10, 0.05) == "faster"
    assert compare.judge(0.95, 1e-9, 40, 40, 0.10, 0.05) == "no significant change"
    assert compare.judge(1.5, 0.2, 40, 40, 0.10, 0.05) == "no significant change"  # large but not significant
    assert compare.judge(1.5, 0.1, 3, 3, 0.10, 0.05) == "inconclusive"
    assert compare.judge(1.2, 0.001, 40, 40, 0.10, 0.05, low_ratio=1.18) == "slower"
    assert compare.judge(1.2, 0.001, 40, 40, 0.10, 0.05, low_ratio=1.02) == "no significant change"
    assert compare.judge(0.8, 0.001, 40, 40, 0.10, 0.05, low_ratio=0.99) == "no significant change"
    assert compare.judge(1.5, 0.1, 3, 3, 0.10, 0.05, low_ratio=1.0) == "no significant change"
    # a row whose own spread is 15% needs more than 15% to count, whatever the threshold
    assert compare.judge(1.12, 1e-6, 40, 40, 0.10, 0.05, low_ratio=1.12, noise=0.15) == "no significant change"
    assert compare.judge(1.25, 1e-6, 40, 40, 0.10, 0.05, low_ratio=1.2, noise=0.15) == "slower"
    assert compare.judge(1.25, 1e-6, 40, 40, 0.10, 0.05, low_ratio=1.05, noise=0.15) == "no significant change"
    assert compare.min_p(3, 3) == pytest.approx(0.1) and compare.min_p(5, 5) < 0.01
    # past the bar by less than what a rerun moves a ratio: two quiet runs of the same code did this
    assert compare.judge(1.103, 1e-9, 40, 40, 0.10, 0.05, low_ratio=1.1, interval=(1.02, 1.19)) == "inconclusive"
    assert compare.judge(1 / 1.103, 1e-9, 40, 40, 0.10, 0.05, low_ratio=0.9, interval=(0.84, 0.98)) == "inconclusive"
    assert compare.judge(1.3, 1e-9, 40, 40, 0.10, 0.05, low_ratio=1.3, interval=(1.2, 1.4)) == "slower"
    assert compare.judge(0.7, 1e-9, 40, 40, 0.10, 0.05, low_ratio=0.7, interval=(0.65, 0.76)) == "faster"


def test_terminal_table_and_fail_on_slower_gate(tmp_path, capsys):
    base, new = known_shifts(tmp_path)
    assert cli.main(["compare", str(base), str(new)]) == 0
    out = capsys.readouterr().out
    assert "torch 2.13.0 vs torch 2.12.1" in out and "slower 1" in out and "faster 1" in out
    assert "p-slow" in out and "ok→oom" in out and "inconclusive" in out
    assert max(map(len, out.splitlines())) <= 100
    assert cli.main(["compare", str(base), str(new), "--fail-on", "slower"]) == 1
    err = capsys.readouterr().err
    assert "1 regression (--fail-on slower)" in err and "p-slow" in err
    assert cli.main(["compare", str(base), str(new), "--fail-on", "status"]) == 1
    assert cli.main(["compare", str(base), str(new), "--fail-on", "any"]) == 1
    # a larger threshold lets the 20% regression through the gate
    assert cli.main(["compare", str(base), str(new), "--fail-on", "slower", "--threshold", "0.3"]) == 0


@pytest.mark.parametrize("columns", [60, 80, 100])
def test_a_narrow_terminal_leaves_columns_out_rather_than_shredding_cells(tmp_path, columns):
    from bench.render import compare as shown

    base, new = known_shifts(tmp_path)
    text = shown.render_text(compare.compare([base, new]), columns=columns)
    table = text[text.index("problem      strategy"):]  # the header above it names files, one path a line
    assert max(map(len, table.splitlines())) <= columns
    words = {w for line in table.splitlines() for w in line.split()}
    assert {"p-slow", "slower", "faster", "inconclusive"} <= words  # names and verdicts whole
    assert not [w for w in words if len(w) <= 2 and w.isalpha() and w not in ("p", "ok", "us", "ms", "no", "at")]
    for line in table.splitlines() if columns >= 80 else ():  # an interval whole, a time with its unit
        assert line.count("[") == line.count("]") and line.count("(") == line.count(")"), line
        assert not re.search(r"(^|\s{2})(ns|us|ms|s)\b", line), line
    if columns < 100:
        assert f"(left out at {columns} columns: p10 ratio" in text


def test_no_change_passes_the_gate(tmp_path, capsys):
    rows = lambda seed: [row(f"p{i}", s, data=samples(1e-3 * (i + 1), spread=0.04, seed=seed + i))  # noqa: E731
                         for i in range(6) for s in ("jacrev", "jacfwd")]
    a = write_results(tmp_path / "a.json", rows(0), torch="2.12.1")
    b = write_results(tmp_path / "b.json", rows(100), torch="2.13.0")
    assert cli.main(["compare", str(a), str(b), "--fail-on", "any"]) == 0
    c = compare.compare([a, b])
    assert set(c.table["verdict"]) == {"no significant change"}


def test_html_report_has_heatmap_regressions_environment_diff_and_escapes(tmp_path, capsys):
    base, new = known_shifts(tmp_path)
    out = tmp_path / "reports" / "compare.html"
    assert cli.main(["compare", str(base), str(new), "-o", str(out)]) == 0
    html = out.read_text()
    assert html.count("data:image/svg+xml;base64,") >= 2  # heatmap and pivot figure
    assert 'id="regressions"' in html and "p-slow" in html and "ok→oom" in html
    assert "Environment" in html and 'class="differs"' in html and "2.12.1+cpu" in html
    assert "API availability" in html and "torch 1.13.0 lacks is_grads_batched" in html
    assert "&lt;tried to allocate &amp; fail&gt;" in html and "<tried to allocate" not in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # no fetches


def test_different_dtypes_or_profiles_get_a_warning(tmp_path, capsys):
    a = write_results(tmp_path / "a.json", [row("p", "jacrev", data=samples(1e-3))], profile="quick")
    b = write_results(tmp_path / "b.json", [row("p", "jacrev", data=samples(1e-3, seed=3)),
                                            row("p", "jacrev", data=samples(1e-3, seed=4), dtype="float64")],
                      profile="standard", torch="2.14.0")
    assert cli.main(["compare", str(a), str(b)]) == 0
    err = capsys.readouterr().err
    assert "warning: profiles differ" in err and "warning: dtypes differ" in err
    c = write_results(tmp_path / "c.json", [row("p", "jacrev", data=samples(1e-3), dtype="float64")], torch="2.14.0")
    assert cli.main(["compare", str(a), str(c)]) == 0
    assert "no row matches" in capsys.readouterr().err


def test_a_bad_file_is_a_one_line_error_naming_it(tmp_path, capsys):
    good = write_results(tmp_path / "good.json", [row("p", "jacrev", data=samples(1e-3))])
    bad = tmp_path / "bad.json"
    bad.write_text(good.read_text()[:200])
    assert cli.main(["compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "truncated or corrupt JSON" in err
    assert cli.main(["compare", str(good)]) == 2
    assert "at least two results files" in capsys.readouterr().err
    assert cli.main(["compare", str(good), str(good), "--alpha", "2"]) == 2


def test_pivot_across_three_torch_versions(tmp_path, capsys):
    files = []
    for k, (version, factor) in enumerate((("2.12.1", 1.0), ("2.13.0", 1.3), ("2.14.0", 0.7))):
        rows = [row(f"p{i}", s, data=samples(1e-3 * factor, seed=10 * k + i)) for i in range(3)
                for s in ("jacrev", "jacfwd")]
        if version == "2.12.1":  # an older torch: one strategy it lacks
            rows = [r if r["strategy"] != "jacfwd" else row(r["problem"], "jacfwd", "unsupported",
                                                             reason="torch 2.12.1 lacks torch.func")
                    for r in rows]
        files.append(write_results(tmp_path / f"r{k}.json", rows, torch=version))
    c = compare.compare(files)
    wide = compare.pivot(c)
    assert list(wide.columns[:2]) == ["torch 2.12.1", "torch 2.12.1 status"]
    assert "torch 2.14.0 / torch 2.12.1" in wide.columns and len(wide) == 6
    sp = compare.strategy_pivot(c)
    assert sp.loc["jacrev", "torch 2.13.0"] == pytest.approx(1.3, rel=0.05)
    assert sp.loc["jacrev", "torch 2.14.0"] == pytest.approx(0.7, rel=0.05)
    api = compare.api_matrix(c)
    assert api.loc["jacfwd", "torch 2.12.1"] == "torch 2.12.1 lacks torch.func" and api.loc["jacfwd", "torch 2.13.0"] == "ok 3/3"
    out = tmp_path / "pivot.html"
    assert cli.main(["compare", *map(str, files), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "geometric mean of the ratio to torch 2.12.1" in text
    html = out.read_text()
    assert "Medians, every environment" in html and "Across 3 environments" in html


def test_machines_merge_into_one_frame_and_compare_side_by_side(tmp_path):
    rows = lambda seed: [row("p", s, data=samples(1e-3, seed=seed)) for s in ("jacrev", "jacfwd")]  # noqa: E731
    a = write_results(tmp_path / "a.json", rows(1), machine="h100-box", device_name="H100")
    b = write_results(tmp_path / "b.json", rows(2), machine="a100-box", device_name="A100")
    merged = results.merge([a, b])
    assert len(merged) == 4 and set(merged["machine"]) == {"h100-box", "a100-box"}
    assert not merged.duplicated(results.KEY).any()
    c = compare.compare([a, b])
    assert [s.label for s in c.sides] == ["h100-box", "a100-box"] and len(c.table) == 2
    assert any("different hardware" in n for n in c.notes)
    again = write_results(tmp_path / "again.json", rows(3), machine="h100-box")
    with pytest.raises(results.ResultsError) as info:
        results.merge([a, again])
    assert str(again) in str(info.value) and str(a) in str(info.value) and "\n" not in str(info.value)


def test_devices_of_one_run_compare_across_devices(tmp_path):
    cpu = write_results(tmp_path / "cpu.json", [row("p", "jacrev", data=samples(1e-3))], device="cpu")
    gpu = write_results(tmp_path / "gpu.json", [row("p", "jacrev", data=samples(1e-4, seed=2), device="cuda")],
                        device="cuda", device_name="H100")
    c = compare.compare([cpu, gpu])
    assert [s.label for s in c.sides] == ["cpu", "cuda"] and "device" not in c.key
    assert c.table.iloc[0]["verdict"] == "faster" and c.table.iloc[0]["ratio"] == pytest.approx(0.1, rel=0.05)


def test_two_runs_of_one_environment_are_two_sides(tmp_path):
    rows = [row("p", "jacrev", data=samples(1e-3))]
    a = write_results(tmp_path / "a.json", rows, started="2026-01-01T10:00:00+00:00")
    b = write_results(tmp_path / "b.json", rows, started="2026-01-02T10:00:00+00:00")
    c = compare.compare([a, b])
    assert len(c.sides) == 2 and c.sides[0].label != c.sides[1].label
    assert c.table.iloc[0]["verdict"] == "no significant change" and c.table.iloc[0]["p"] == pytest.approx(1.0)
    assert not any("same file" in w for w in c.warnings)  # two runs, however alike


def test_a_file_compared_with_itself_or_its_copy_says_so(tmp_path, capsys):
    a = write_results(tmp_path / "a.json", [row("p", "jacrev", data=samples(1e-3))])
    copy = tmp_path / "copy.json"
    copy.write_bytes(a.read_bytes())
    for other in (a, copy):
        assert cli.main(["compare", str(a), str(other)]) == 0
        err = " ".join(capsys.readouterr().err.split())
        assert f"are the same file ({other}): every row is compared with itself" in err


def test_compare_never_imports_torch(tmp_path):
    base, new = known_shifts(tmp_path)
    code = ("import sys; from bench.analysis import compare; from bench.render import compare as shown; "
            "c = compare.compare(sys.argv[1:3]); "
            "shown.write_html(c, sys.argv[3]); print(shown.render_text(c)); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code, str(base), str(new), str(tmp_path / "o.html")], cwd=ROOT,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_change_that_does_not_come_back_in_a_re_measurement_is_not_reproduced(tmp_path):
    first = compare.compare(known_shifts(tmp_path))
    assert set(first.table.loc[first.table["verdict"].isin(compare.CHANGED), "problem"]) == {"p-slow", "p-fast"}
    # the re-measurement: p-slow is 20% slower again, p-fast is back at the base's time
    again = compare.compare([
        write_results(tmp_path / "again/base.json", [row("p-slow", "jacrev", data=samples(1e-3, seed=31)),
                                                     row("p-fast", "jacrev", data=samples(2e-3, seed=32))],
                      torch="2.12.1"),
        write_results(tmp_path / "again/new.json", [row("p-slow", "jacrev", data=samples(1.2e-3, seed=33)),
                                                    row("p-fast", "jacrev", data=samples(2e-3, seed=34))],
                      torch="2.13.0")])
    t = by_problem(compare.confirm(first, [again]))
    assert t.loc["p-slow", "verdict"] == "slower" and t.loc["p-slow", "confirmed"] == "1/1"
    assert t.loc["p-fast", "verdict"] == "not reproduced" and t.loc["p-fast", "confirmed"] == "0/1"
    assert t.loc["p-slow", "regression"] and t.loc["p-same", "confirmed"] == ""
    confirmed = compare.confirm(first, [again])
    assert "2 significant changes were re-measured in 1 fresh interleaved run of both sides: 1 reproduced" \
        in confirmed.notes[-1]
    assert len(compare.failures(confirmed, "slower")) == 1
    page = shown.html(confirmed)
    assert "Not reproduced" in page and "(0/1)" in page


def test_a_machine_twice_as_fast_is_said_first_and_only_a_row_that_moved_against_the_rest_changes(tmp_path):
    """NOTE: [Machine moved]: the same code on a machine about twice as fast."""
    problems = [f"p{k}" for k in range(8)]
    base = [row(p, "jacrev", data=samples(1e-3 * (k + 1), seed=k), f_s=1e-4 * (k + 1)) for k, p in enumerate(problems)]
    speed = {p: 0.5 for p in problems} | {"p3": 0.5 * 1.3}  # p3: 30% slower than the rest moved
    new = [row(p, "jacrev", data=samples(1e-3 * (k + 1) * speed[p], seed=50 + k), f_s=0.5e-4 * (k + 1))
           for k, p in enumerate(problems)]  # f itself moved with the machine
    c = compare.compare([write_results(tmp_path / "base.json", base, machine="old"),
                         write_results(tmp_path / "new.json", new, machine="new")])
    t = by_problem(c)
    said = [w for w in c.warnings if "moved by about" in w]
    assert len(said) == 1 and "0.5" in said[0] and "the machine or its load, not the code?" in said[0], c.warnings
    assert "in units of each run's own t(f), by 1.0" in said[0]  # in units of f, the machine cancels
    assert 1.2 < t.loc["p3", "ratio_f"] < 1.4 and (t.drop(index="p3")["ratio_f"].sub(1).abs() < 0.05).all()
    assert t.loc["p3", "verdict"] == "slower" and 0.6 < t.loc["p3", "ratio"] < 0.7  # the raw ratio is kept
    assert set(t.drop(index="p3")["verdict"]) == {"no significant change"}
    assert (t["ci_lo"] < t["ratio"]).all() and (t["ratio"] < t["ci_hi"]).all()
    # a shift most rows do not share is no machine's: the same rows, half of them twice as fast
    half = [row(p, "jacrev", data=samples(1e-3 * (k + 1) * (0.5 if k % 2 else 1), seed=70 + k))
            for k, p in enumerate(problems)]
    c = compare.compare([tmp_path / "base.json", write_results(tmp_path / "half.json", half, machine="new")])
    assert not [w for w in c.warnings if "moved by about" in w]
    assert set(by_problem(c).loc[problems[1::2], "verdict"]) == {"faster"} and (by_problem(c)["shift"] == 1).all()


def test_a_machine_that_moved_unevenly_raises_the_bar_by_how_unevenly(tmp_path):
    """NOTE: [Machine moved]: the second run 1.4x slower, its rows by 1.1x to 1.8x around that
    (as the vectorized strategies and the loops were, beside other tenants): none is slower
    for moving within that spread, and a row 3x beyond it still is."""
    problems = [f"p{k}" for k in range(16)]
    spread = np.exp(np.linspace(-0.25, 0.25, len(problems)))  # the machine's own unevenness
    base = [row(p, "jacrev", data=samples(1e-3 * (k + 1), seed=k)) for k, p in enumerate(problems)]
    speed = dict(zip(problems, 1.4 * spread)) | {"p7": 1.4 * 3.0}
    new = [row(p, "jacrev", data=samples(1e-3 * (k + 1) * speed[p], seed=50 + k)) for k, p in enumerate(problems)]
    c = compare.compare([write_results(tmp_path / "base.json", base), write_results(tmp_path / "new.json", new)])
    said = next(w for w in c.warnings if "moved by about" in w)
    assert "by which the rows moved unevenly" in said, said
    t = by_problem(c)
    assert 0.2 < t["uneven"].iloc[0] < 0.6
    assert t.loc["p7", "verdict"] == "slower" and set(t.drop(index="p7")["verdict"]) <= {"no significant change",
                                                                                            "inconclusive"}
