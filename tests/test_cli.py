"""The command line as a user meets it: listing, one-line errors, a real tiny sweep."""

import re

import pytest
import torch

from tests.conftest import TIMED, run_cli, run_main

from bench.analysis import results


def test_list_shows_problems_and_strategies_with_cost_models():
    proc = run_cli("list", check=True)
    out = proc.stdout
    assert "seed-article" in out and "mlp-in32-out512-w256-d3" in out
    assert "analytic" in out and "graph-break" in out
    for name in ("manual-backward", "grad-loop", "grad-batched", "functional", "functional-vectorized",
                 "functional-forward", "jacrev", "jacfwd", "fd-forward", "fd-central"):
        assert re.search(rf"^{name}\s", out, re.M), name
    assert "Cost:" in out


def test_list_filters():
    out = run_cli("list", "--cases", "seed-arm*", "--problems-only", check=True).stdout
    assert "seed-arm2" in out and "seed-arm3" in out and "mlp-" not in out and "strategies" not in out


@pytest.mark.parametrize("argv, fragment", [
    (["run", "--profile", "huge"], "unknown profile 'huge'; choose from quick, standard, full"),
    (["run", "--device", "tpu"], "invalid choice: 'tpu' (choose from 'cpu', 'cuda', 'all')"),
    (["run", "--strategies", "nope*", "--device", "cpu"], "no strategy matches 'nope*'; choose from manual-backward"),
    (["run", "--cases", "nope*", "--device", "cpu"], "no problem matches 'nope*'; families:"),
    (["run", "--dtype", "float8", "--device", "cpu"], "unknown dtype 'float8'; choose from float32"),
    (["run", "--shard", "3/2", "--device", "cpu"], "--shard 3/2: i must be between 1 and n"),
    (["run", "--tags", "nosuch", "--device", "cpu"], "unknown tag 'nosuch'; choose from"),
    (["run", "--plugin", "no.such.module", "--device", "cpu"], "cannot import plugin 'no.such.module'"),
    (["list", "--kinds", "matrix"], "unknown kind 'matrix'; choose from"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["run", "--pair-timeout", "nan", "--device", "cpu"],
     "--pair-timeout: must be a positive number of seconds, not nan"),
    (["run", "--pair-timeout", "0", "--device", "cpu"], "--pair-timeout: must be a positive number of seconds, not 0"),
    (["run", "--pair-timeout", "-1", "--device", "cpu"], "--pair-timeout: must be a positive number of seconds"),
    (["run", "--cases", "", "--device", "cpu"], "--cases: takes name globs such as 'mlp-*', not an empty string"),
    (["run", "--timing", "speed=fast", "--device", "cpu"], "--timing takes KEY=VALUE with KEY one of warmup, visits"),
    (["run", "--timing", "retimes=-1", "--device", "cpu"], "--timing retimes must be at least 0, not -1"),
    (["run", "--timing", "max_time=inf", "--device", "cpu"], "--timing max_time must be positive and finite, not inf"),
    (["run", "--timing", "visits=1.5", "--device", "cpu"], "--timing visits takes a whole number, not '1.5'"),
    (["advise", "tests.test_advise:SmallNet", "--input-shape", "6", "--timing", "visits=2"],
     "--timing visits applies to sweeps; advise times its strategies together, in one pass"),
    (["advise", "tests.test_advise:SmallNet", "--input-shape", "6", "--dtype", "float8"],
     "argument --dtype: invalid choice: 'float8' (choose from 'float32', 'float64', 'float16', 'bfloat16')"),
])
def test_bad_input_is_a_one_line_error_naming_the_choices(argv, fragment, tmp_path):
    proc = run_main(*argv, "--results-dir", tmp_path) if argv[0] == "run" else run_main(*argv)
    assert proc.returncode == 2
    assert fragment in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not list(tmp_path.iterdir())  # nothing started


def test_a_path_that_cannot_be_written_is_one_line_naming_it_and_debug_shows_the_traceback():
    # /proc takes no new entries, even from root: a real unwritable place on any Linux machine
    argv = ("run", "--device", "cpu", "--profile", "quick", "--cases", "seed-trig", "--strategies", "jacrev",
            "--results-dir", "/proc/jacbench-cannot-be-here")
    proc = run_cli(*argv)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("jacbench: error: /proc/jacbench-cannot-be-here: cannot create directory: "
                                   "No such file or directory")
    debug = run_cli("--debug", *argv)
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "OutputError: /proc/jacbench-cannot-be-here" in run_cli(*argv, env={"JACBENCH_DEBUG": "1"}).stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_report_and_summary_do_not_import_torch(tiny_results, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import sys; from bench.cli import main; main(['summary', sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_results)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_asking_for_cuda_without_a_gpu_is_a_one_line_error(tmp_path):
    proc = run_cli("run", "--device", "cuda", "--results-dir", tmp_path)
    assert proc.returncode == 2 and "CUDA is not available here" in proc.stderr


@pytest.mark.slow
def test_end_to_end_sweep_through_the_cli(tmp_path):
    proc = run_cli("run", "--profile", "quick", "--device", "all", "--cases", "seed-newton,seed-trig",
                   "--strategies", "jacrev,fd-central-loop", "--dtype", "float32,float64", "--threads", "1",
                   "--results-dir", tmp_path, check=True)
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == 1 + torch.cuda.is_available()  # one file per device
    assert re.fullmatch(r"testbox_cpu_torch-[\w.]+_\d{8}-\d{6}\.json", files[0].name)
    assert f"wrote {files[0]}" in proc.stdout
    assert not (tmp_path / ".partial").exists() or not list((tmp_path / ".partial").iterdir())
    frame = results.load(files)
    cpu = frame[frame.device == "cpu"]
    assert len(cpu) == 2 * 2 * 2 and set(cpu.status) <= TIMED
    if (cpu.status == "ok").any():  # the summary follows the run
        assert "best (exact)" in proc.stdout
    else:  # a machine busy all through: every pair disturbed, and the run's account says so
        assert re.search(r"^disturbed\s+8$", proc.stdout, re.M), proc.stdout[-2000:]
    assert set(cpu.dtype) == {"float32", "float64"} and (cpu.threads == 1).all()
    summary = run_cli("summary", *files, check=True).stdout
    assert "seed-newton" in summary and "functional" in summary
