"""jacbench matrix: environments as options, venv reuse, interleaving, and a real two-environment
run of the same torch twice, where every pair must come out unchanged."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli

from bench import cli
from bench.analysis import compare, results
from bench.sweep import matrix, plan

CASES = "seed-article,seed-linear,seed-trig"
STRATEGIES = "manual-backward,jacrev,functional"


@pytest.mark.parametrize("argv, fragment", [
    (["--torch-versions", "2.13.0"], "at least two environments"),
    (["--torch-versions", "2.13.0 latest"], "'latest' is not a torch version"),
    (["--python", "a"], "--python takes NAME=PYTHON"),
    (["--python", "../x=/usr/bin/python3", "--python", "b=/usr/bin/python3"], "the name must be letters"),
    (["--python", "a=/usr/bin/python3", "--python", "a=/usr/bin/python3"], "'a' is given twice"),
    (["--python", "a=/no/such/python", "--python", "b=/no/such/python", "--cases", "seed-article"],
     "environment a (/no/such/python) cannot run a sweep"),
    (["--python", "a=x", "--python", "b=y", "--rounds", "0"], "--rounds must be at least 1"),
    (["--python", "a=x", "--python", "b=y", "--confirm", "-1"], "--confirm must be 0 or more"),
    (["--python", "a=x", "--python", "b=y", "--cases", "nope*"], "no problem matches 'nope*'"),
])
def test_bad_options_are_one_line_errors_and_start_nothing(argv, fragment, tmp_path, capsys):
    code = cli.main(["matrix", *argv, "--venvs-dir", str(tmp_path / "venvs"), "--results-dir", str(tmp_path / "r"),
                     "-o", str(tmp_path / "m.html")])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


def test_environments_from_versions_and_interpreters(tmp_path):
    envs = matrix.venvs("2.12.1, 2.13.0", ["mine=/opt/py/bin/python"], tmp_path)
    assert [e.name for e in envs] == ["torch-2.12.1", "torch-2.13.0", "mine"]
    assert envs[0].python == str(tmp_path / "torch-2.12.1" / "bin" / "python") and envs[0].torch == "2.12.1"
    assert envs[2].python == "/opt/py/bin/python" and envs[2].torch is None


def test_rounds_alternate_the_order_of_the_environments():
    assert [matrix.order("ab", r) for r in range(4)] == [list("ab"), list("ba"), list("ab"), list("ba")]
    assert matrix.rounds_plan(10, 4) == 3 and matrix.rounds_plan(3, 8) == 1 and matrix.rounds_plan(8, 1) == 8


def test_a_slice_of_the_plan_takes_its_last_problem_whole(tmp_path):
    """A problem's strategies are timed together, in one process (NOTE: [Paired timing]):
    a slice cut in the middle of a problem takes the rest of it."""
    from bench.analysis.journal import Journal
    from bench.analysis.schema import Pair
    from bench.sweep import runner

    pairs = [Pair("cpu", "float32", p, s) for p in ("a", "b") for s in ("x", "y", "z")]
    header = {"run_id": "r", "created": "now", "output": "o.json", "device": "cpu", "settings": {},
              "pairs": [{"id": p.id, "device": p.device, "dtype": p.dtype, "problem": p.problem,
                         "strategy": p.strategy} for p in pairs]}
    journal = Journal.create(tmp_path / "j.jsonl", header)
    ids = [p.id for p in pairs]
    assert runner._whole_problems(journal, 1) == runner._whole_problems(journal, 3) == ids[:3]
    assert runner._whole_problems(journal, 4) == runner._whole_problems(journal, None) == ids
    journal.append({"type": "result", "pair": ids[0], "record": {}})
    assert runner._whole_problems(journal, 1) == ids[1:3]


def _fake_venv(venvs: Path, version: str) -> Path:
    """A 'venv' whose python answers the probe as a venv with torch ``version`` would."""
    python = venvs / f"torch-{version}" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f"#!/bin/sh\necho '{{\"torch\": \"{version}+cpu\", \"cuda\": false}}'\n")
    python.chmod(0o755)
    return python


def test_a_ready_venv_is_reused_and_a_wrong_one_reinstalled(tmp_path):
    _fake_venv(tmp_path, "2.13.0")
    stale = _fake_venv(tmp_path, "0.0.1")
    calls = []

    def installer(venv, version, stream):
        calls.append((venv, version))

    ready, wanted = matrix.venvs("2.13.0 0.0.2", None, tmp_path)
    assert matrix.ensure(ready, installer=installer)["torch"] == "2.13.0+cpu" and calls == []
    stale.parent.parent.rename(tmp_path / "torch-0.0.2")  # a venv of another torch under the wanted name
    with pytest.raises(ValueError, match="did not give a working torch 0.0.2"):
        matrix.ensure(wanted, installer=installer)
    assert calls == [(tmp_path / "torch-0.0.2", "0.0.2")]


def test_a_real_interpreter_passes_the_probe():
    found = matrix.probe(matrix.Venv("here", sys.executable))
    assert found["torch"] == torch.__version__ and found["cuda"] == torch.cuda.is_available()


@pytest.mark.slow
def test_real_matrix_of_the_same_torch_twice_compares_every_pair(tmp_path):
    out = tmp_path / "matrix.html"
    proc = run_cli("matrix", "--python", f"a={sys.executable}", "--python", f"b={sys.executable}",
                   "--profile", "quick", "--device", "cpu", "--cases", CASES, "--strategies", STRATEGIES,
                   "--rounds", "2", "--results-dir", tmp_path / "results", "-o", out, check=True)
    # interleaved: a then b in round 1, b then a in round 2
    assert re.findall(r"^round (\d)/2: (\w)$", proc.stderr, re.M) == [("1", "a"), ("1", "b"), ("2", "b"), ("2", "a")]
    files = [next((tmp_path / "results" / name).glob("*.json")) for name in ("a", "b")]  # one directory each
    for name, f in zip("ab", files):
        assert results.origin(results.read(f))["environment"] == name
    pairs = plan.make("quick", devices=["cpu"], problems=[CASES], strategy_patterns=[STRATEGIES])
    c = compare.compare(files)
    if "confirming" in proc.stderr:  # what the sweep flagged was re-measured, and the report says how it went
        again = [next((tmp_path / "results" / n / "confirm-1").glob("*.json")) for n in "ab"]
        c = compare.confirm(c, [compare.compare(again)])
        assert "re-measured" in proc.stdout
    assert [s.label for s in c.sides] == ["a", "b"] and len(c.table) == len(pairs)
    assert (c.table["verdict"] != "missing").all()
    # the same torch twice changes no status, but for a pair that other work kept disturbed
    # on one side (the other tests' load, on a busy machine): the machine's doing, said as such
    changed = c.table[c.table["status_kind"] != ""]
    assert (changed["status_kind"] == "changed").all() and changed["status_change"].str.contains("disturbed").all()
    timed = c.table[c.table["verdict"] != "untimed"]
    assert len(timed) >= len(pairs) - 3 - len(changed)
    # Which rows come out "slower" or "faster" is a verdict drawn from timings: on a loaded
    # machine the same torch twice can differ, so it is printed, not asserted.
    changed = timed[timed["verdict"].str.startswith(("slower", "faster"))]
    print(f"the same torch twice: {len(changed)} of {len(timed)} timed rows came out changed")
    assert "b vs a" in proc.stdout and out.exists() and "API availability" in out.read_text()
    assert not list((tmp_path / "results").glob("*/.partial/*.journal.jsonl"))  # both finished
    doc = json.loads(files[0].read_text())
    assert doc["jacbench"]["pairs"] == len(pairs)
