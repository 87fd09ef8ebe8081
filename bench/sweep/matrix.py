"""The same sweep in several torch environments, interleaved, then compared.

``jacbench matrix --torch-versions "2.12.1 2.13.0"`` makes one virtual environment per torch
version under ``--venvs-dir`` (kept and reused: an environment whose torch, pytest and
pytest-benchmark already import is not touched), or takes existing interpreters with
``--python NAME=PYTHON``. It plans one sweep, prepares one journal per environment (each in
its own results directory, so two environments with the same torch never share a journal
or a file), and runs them round by round: the plan is cut into ``--rounds`` slices, and in
round r every environment runs its next slice, the order of the environments reversed every
other round. Whatever the machine does over time (other jobs, thermal state) then falls on
all environments alike, instead of on whichever ran last. Each environment writes one
results file; the comparison (``bench.analysis.compare``) of those files is printed and written as
HTML. Strategies an older torch lacks are recorded ``unsupported`` with the version reason
by the sweep itself, so the report doubles as an API-availability matrix.

Interrupted, the same command resumes: each environment's unfinished journal is found by
its plan's fingerprint and only its pending pairs run.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
VERSION = re.compile(r"^\d+(\.\d+)+([a-z0-9.+-]*)$")
# What a sweep child needs besides the repository (the runner puts it on PYTHONPATH).
PACKAGES = ("pytest", "pytest-benchmark", "numpy")
PROBE = ("import json, numpy, torch, pytest, pytest_benchmark, cpuinfo; "
         "print(json.dumps({'torch': torch.__version__, 'cuda': torch.cuda.is_available()}))")


@dataclass(frozen=True)
class Venv:
    """One column of the matrix.

    Attributes:
        name: its label in files, directories and reports (``torch-2.12.1``, or the NAME of
            ``--python NAME=PYTHON``).
        python: the interpreter that runs its sweep child.
        torch: the torch version asked for (None: whatever ``python`` has).
    """

    name: str
    python: str
    torch: str | None = None


def venvs(torch_versions: str | None, pythons: list[str] | None, venvs_dir: Path) -> list[Venv]:
    """The environments the options ask for, checked; a one-line ValueError otherwise."""
    out = []
    for version in (torch_versions or "").replace(",", " ").split():
        if not VERSION.match(version):
            raise ValueError(f"--torch-versions: {version!r} is not a torch version, e.g. 2.12.1")
        out.append(Venv(f"torch-{version}", str(Path(venvs_dir) / f"torch-{version}" / "bin" / "python"),
                               version))
    for item in pythons or []:
        name, sep, python = item.partition("=")
        if not sep or not name or not python:
            raise ValueError(f"--python takes NAME=PYTHON, e.g. old=/opt/torch20/bin/python, not {item!r}")
        if not NAME.match(name):
            raise ValueError(f"--python {item}: the name must be letters, digits, '.', '_', '+' or '-'")
        out.append(Venv(name, python))
    if len(out) < 2:
        raise ValueError("a matrix compares at least two environments: give --torch-versions \"A B\" "
                         "and/or --python NAME=PYTHON (repeatable)")
    names = [e.name for e in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"environment {dupes[0]!r} is given twice; names must be distinct")
    return out


def probe(env: Venv, timeout: float = 300) -> dict | None:
    """What ``env``'s interpreter has (``{'torch': ..., 'cuda': ...}``), or None if it cannot
    import numpy, torch, pytest, pytest-benchmark and py-cpuinfo."""
    if not Path(env.python).exists():
        return None
    try:
        proc = subprocess.run([env.python, "-c", PROBE], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _probe_error(env: Venv) -> str:
    try:
        proc = subprocess.run([env.python, "-c", PROBE], capture_output=True, text=True, timeout=300)
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    except (OSError, subprocess.SubprocessError) as e:
        tail = str(e)
    return f"environment {env.name} ({env.python}) cannot run a sweep: {tail}"


def ensure(env: Venv, *, stream=sys.stderr, installer=None) -> dict:
    """Make ``env`` ready and return its probe.

    A venv we own (``--torch-versions``) is created and installed when missing or when its
    torch is not the version asked for; one that already has it is reused untouched. An
    interpreter given with ``--python`` is never modified: if it cannot run a sweep, that
    is a one-line error.
    """
    found = probe(env)
    if env.torch is None:
        if found is None:
            raise ValueError(_probe_error(env))
        return found
    if found is not None and found["torch"].split("+")[0] == env.torch:
        print(f"environment {env.name}: reusing {Path(env.python).parent.parent} (torch {found['torch']})", file=stream)
        return found
    venv = Path(env.python).parent.parent
    print(f"environment {env.name}: installing torch=={env.torch} into {venv} (a CUDA build is several GB)",
          file=stream, flush=True)
    (installer or install)(venv, env.torch, stream)
    found = probe(env)
    if found is None or found["torch"].split("+")[0] != env.torch:
        raise ValueError(f"environment {env.name}: installing torch=={env.torch} into {venv} did not give a "
                         f"working torch {env.torch} ({_probe_error(env)})")
    return found


def install(venv: Path, version: str, stream=sys.stderr) -> None:
    """Create ``venv`` if needed and pip-install ``torch==version`` with the sweep's packages."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    cmd = [str(python), "-m", "pip", "install", f"torch=={version}", *PACKAGES]
    proc = subprocess.run(cmd, stdout=stream, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise ValueError(f"pip could not install torch=={version} into {venv} (exit {proc.returncode}); "
                         f"see its output above")


def rounds_plan(n_pairs: int, rounds: int) -> int:
    """Pairs per slice: the plan cut into ``rounds`` slices (the last may be shorter)."""
    return max(1, math.ceil(n_pairs / max(1, rounds)))


def order(envs: list, round_index: int) -> list:
    """The environments' order in a round: as given in even rounds, reversed in odd ones, so
    that no environment always runs first or last."""
    return list(envs) if round_index % 2 == 0 else list(reversed(envs))


def _interleave(envs, journals, rounds, chunk: int, runner) -> dict[str, Path]:
    """Run ``chunk`` pairs of each environment's journal per round (``rounds``: round
    indices, which set the order), then finish whatever is left."""
    written: dict[str, Path] = {}
    for i, r in enumerate(rounds):
        for e in order(envs, r):
            if e.name in written:
                continue
            print(f"round {i + 1}/{len(rounds)}: {e.name}", file=sys.stderr, flush=True)
            out = runner.execute(journals[e.name], python=e.python, max_pairs=chunk)
            if out is not None:
                written[e.name] = out
    for e in envs:  # nothing should be left; a slice cut short by a crash is finished here
        if e.name not in written:
            print(f"finishing {e.name}", file=sys.stderr)
            written[e.name] = runner.execute(journals[e.name], python=e.python)
    return written


class _hash_seed:
    """Every sweep child of a matrix runs with the same ``PYTHONHASHSEED`` (0, unless one is set).

    Python-heavy pairs (``torch.func`` transforms of small functions) have process-level
    modes: with random hash seeds, about one process in ten ran ``jacrev`` of a 3-input
    function 40-60% slower for its whole life, and which environment drew that process was
    a lottery that a per-pair test then called significant. With one seed for all children,
    two environments with the same torch measure the same; between torch versions, a seed
    can still be unlucky for one of them, which only replicated processes would average out.
    """

    def __enter__(self):
        self.before = os.environ.get("PYTHONHASHSEED")
        os.environ["PYTHONHASHSEED"] = self.before if self.before not in (None, "random") else "0"
        return self

    def __exit__(self, *exc):
        if self.before is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = self.before
        return False


def _renamed(path: Path, parent_torch: str) -> Path:
    """The runner names a file after the torch of the process that planned it (this one);
    name it after the torch that measured it."""
    from bench.analysis import results

    measured = results.origin(results.read(path))["torch"]
    if measured == parent_torch:
        return path
    target = path.with_name(path.name.replace(f"_torch-{parent_torch}_", f"_torch-{measured}_", 1))
    if target == path or target.exists():
        return path
    path.replace(target)
    return target


def command(args) -> int:
    """``jacbench matrix``: prepare the environments, run the interleaved sweep, compare."""
    from bench.analysis import compare, files
    from bench.render import compare as shown
    from bench.sweep import machine, plan as planning, runner

    if args.output:
        files.writable(args.output)  # before hours of measuring, not after
    if args.rounds < 1:
        raise ValueError(f"--rounds must be at least 1, not {args.rounds}")
    if args.confirm < 0:
        raise ValueError(f"--confirm must be 0 or more, not {args.confirm}")
    envs = venvs(args.torch_versions, args.python, Path(args.venvs_dir))
    settings = planning.settings(args.profile, timing_text=args.timing, threads=args.threads)
    pairs = planning.make(args.profile, devices=[args.device], dtypes=args.dtype, problems=args.cases,
                          tags=args.tags, strategy_patterns=args.strategies)
    found = {e.name: ensure(e) for e in envs}
    if args.device == "cuda":
        for e in envs:
            if not found[e.name].get("cuda"):
                raise ValueError(f"environment {e.name} (torch {found[e.name]['torch']}) sees no CUDA device; "
                                 f"use --device cpu")
    results_dir = Path(args.results_dir)
    selection = {k: getattr(args, k) for k in ("cases", "tags", "strategies", "dtype")}
    journals = _prepare(envs, pairs, settings, args.device, results_dir, selection, found, runner)
    chunk = rounds_plan(len(pairs), args.rounds)
    print(f"running {len(pairs)} pairs on {args.device} in {len(envs)} environments, {args.rounds} rounds of up "
          f"to {chunk} pairs each ({args.profile} profile, {settings.threads} threads)", file=sys.stderr)
    parent_torch = machine.describe("cpu")["torch"]
    with _hash_seed():
        written = _interleave(envs, journals, range(args.rounds), chunk, runner)
    files = [_renamed(written[e.name], parent_torch) for e in envs]
    for f in files:
        print(f"wrote {f}")
    comparison = compare.compare(files)
    repeats = []
    flagged = comparison.table[comparison.table["verdict"].isin(compare.CHANGED)] if len(comparison.table) else []
    if args.confirm and len(flagged):
        keys = set(zip(flagged["problem"], flagged["strategy"], flagged["dtype"]))
        again = [p for p in pairs if (p.problem, p.strategy, p.dtype) in keys]
        for k in range(1, args.confirm + 1):
            print(f"confirming {len(again)} significant change{'s' if len(again) != 1 else ''}: "
                  f"re-measurement {k}/{args.confirm}", file=sys.stderr, flush=True)
            journals = _prepare(envs, again, settings, args.device, results_dir, selection, found, runner,
                                sub=f"confirm-{k}")
            with _hash_seed():
                done = _interleave(envs, journals, [args.rounds + k - 1], len(again), runner)
            repeats.append(compare.compare([_renamed(done[e.name], parent_torch) for e in envs]))
        comparison = compare.confirm(comparison, repeats)
    for w in comparison.warnings:
        print(f"jacbench: warning: {w}", file=sys.stderr)
    print(shown.render_text(comparison, warnings=False))
    if args.output:
        print(f"wrote {shown.write_html(comparison, Path(args.output))}")
    return 0


def _prepare(envs, pairs, settings, device, results_dir: Path, selection, found, runner, sub: str = "") -> dict:
    """One journal per environment, each in its own directory (``results_dir/NAME[/sub]``),
    resuming an unfinished one of the same plan."""
    from bench.analysis.journal import Journal

    journals = {}
    for e in envs:
        path, resumed = runner.prepare(pairs, settings, device, results_dir / e.name / sub,
                                       {**selection, "environment": e.name})  # reports name sides by it
        if not sub:
            done = len(Journal.read(path).results)
            print(f"environment {e.name}: torch {found[e.name]['torch']}, {e.python}"
                  + (f"; resuming, {done} of {len(pairs)} pairs already done" if resumed else ""), file=sys.stderr)
        journals[e.name] = path
    return journals
