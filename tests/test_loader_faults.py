"""A results file the loader accepts, every command can use; one it refuses, it names in one line.

A real file (the tiny sweep, cut down to three records so that each command takes a moment)
is broken one field at a time, for every field of it that a command reads, in every way a
field can be: missing, null, of another type, NaN, infinite, 0, negative, 1e308, empty. Each
broken file goes through every command that reads results files, in this process
(``bench.cli.main``): ``summary``, ``report``, and ``compare`` with it as the new side and as
the base. Each must either refuse it (exit status 2 and one line on stderr that names the
file) or succeed (0; 1 where ``compare --fail-on`` finds a regression), with no figure of the
report failing. An exception escaping ``main`` is a failure of the loader: it let through a
value a command cannot handle.
"""

from __future__ import annotations

import copy
import json
import math

import pytest

from bench import cli

pytestmark = pytest.mark.xdist_group("loader-faults")  # one worker: its broken files are a module fixture

#: What a field is replaced with. ``DELETE`` removes it.
DELETE = object()
MUTATIONS = {
    "missing": DELETE, "null": None, "string": "x", "empty string": "", "list": [1], "empty list": [],
    "dict": {"a": 1}, "empty dict": {}, "true": True, "NaN": math.nan, "inf": math.inf, "-inf": -math.inf,
    "0": 0, "negative": -1, "1e308": 1e308, "huge int": 10**30, "fraction": 0.5,
}
#: Parts of a file no command reads (pytest-benchmark's own), left alone.
UNREAD = {("commit_info",), ("datetime",), ("group",), ("name",), ("fullname",), ("params",), ("param",),
          ("options",)}
UNREAD_UNDER = {"machine_info": {"jacbench"}, "stats": {"data", "iterations"}}
#: Objects whose contents no command reads one by one: mutated whole only.
OPAQUE = {"policy", "notes"}


def _small(doc: dict) -> dict:
    """The file with two timed records of one problem (a pick, a margin, a baseline) and one
    untimed record: every kind of row, and a few figures, in little time."""
    doc = copy.deepcopy(doc)
    timed = [r for r in doc["benchmarks"] if r["extra_info"]["problem"] == "seed-article"
             and r["extra_info"]["strategy"] in ("jacrev", "functional")]
    assert len(timed) == 2, [r["extra_info"]["strategy"] for r in doc["benchmarks"]]
    doc["benchmarks"] = timed
    doc["jacbench"]["untimed"] = doc["jacbench"]["untimed"][:1]
    doc["jacbench"]["pairs"] = 3
    doc["jacbench"]["load"] = doc["jacbench"]["load"][:4]
    assert len(doc["jacbench"]["load"]) >= 2, "the run sampled its load"
    return doc


def _paths(node, path=()):
    """Every field a command may read: each key of each object, the first item of each list."""
    if path and (path[-1:] in UNREAD or path[-1] in OPAQUE):
        if path[-1] in OPAQUE:
            yield path
        return
    if path:
        yield path
    if isinstance(node, dict):
        keep = UNREAD_UNDER.get(path[-1] if path else None)
        for k, v in node.items():
            if keep is None or k in keep:
                yield from _paths(v, (*path, k))
    elif isinstance(node, list) and node:
        yield from _paths(node[0], (*path, 0))


def _mutated(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = copy.deepcopy(value)
    return doc


def _name(path: tuple) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")


@pytest.fixture(scope="module")
def base(tiny_results, tmp_path_factory):
    doc = _small(json.loads(tiny_results.read_text()))
    path = tmp_path_factory.mktemp("faults") / "base.json"
    path.write_text(json.dumps(doc))
    return path, doc


@pytest.fixture(scope="module")
def broken(base, tmp_path_factory) -> dict:
    """Every field broken in every way, alone: ``{(path, mutation): (file, accepted)}``, where
    ``accepted`` says whether the loader takes the file."""
    from bench.analysis import results

    _, doc = base
    out = tmp_path_factory.mktemp("broken")
    cases = {}
    for mutation, value in MUTATIONS.items():
        for path in _paths(doc):
            if value is DELETE and isinstance(path[-1], int):
                continue  # an item of a list is removed by "empty list" on the list itself
            mutated = _mutated(doc, path, value)
            if mutated == doc:
                continue  # already null, say
            file = out / f"{_name(path)}={mutation.replace(' ', '-')}.json"
            file.write_text(json.dumps(mutated))
            try:
                results.read(file)
            except results.ResultsError:
                cases[path, mutation] = (file, False)
            else:
                cases[path, mutation] = (file, True)
    return cases


@pytest.fixture(autouse=True)
def one_parser(monkeypatch):
    """The CLI's parser built once: building it is most of what refusing a file costs."""
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)


def _run(argv, capsys) -> tuple[int, list[str], str | None]:
    """``jacbench ARGV`` in this process: its status, its stderr lines, and the exception that
    escaped it, if one did."""
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse: not expected here
        code = e.code
    except Exception as e:  # noqa: BLE001 - exactly what this test looks for
        capsys.readouterr()
        return -1, [], f"{type(e).__name__} escaped: {e}"
    return code, capsys.readouterr().err.splitlines(), None


def _check(argv, file, capsys) -> str | None:
    """What is wrong with ``jacbench ARGV`` on ``file``, or None: it must refuse the file in
    one line that names it, or succeed without a figure failing."""
    code, err, escaped = _run(argv, capsys)
    if escaped:
        return escaped
    if code == 2:
        if len(err) != 1 or not err[0].startswith(f"jacbench: error: {file}: "):
            return f"exit 2 with stderr {err}"
    elif code not in ((0, 1) if argv[0] == "compare" else (0,)):
        return f"exit {code} with stderr {err}"
    elif any("failed" in line or "Traceback" in line for line in err):
        return f"exit {code}, but stderr said {[line for line in err if 'failed' in line or 'Traceback' in line][:1]}"
    return None


def _commands(file, base, out):
    """Every command that reads results files, with ``file`` in each place it can take."""
    return (["summary", str(file)], ["report", str(file), "-o", str(out / "out.html")],
            ["compare", str(base), str(file), "--fail-on", "any"],
            ["compare", str(file), str(base), "--fail-on", "any"])


def _failures(file, base, out, capsys) -> list[str]:
    return [f"jacbench {argv[0]}{' (as base)' if argv[1] == str(file) and argv[0] == 'compare' else ''}: {wrong}"
            for argv in _commands(file, base, out) for wrong in [_check(argv, file, capsys)] if wrong]


def test_the_small_real_file_goes_through_every_command(base, tmp_path, capsys):
    path, _ = base
    assert _failures(path, path, tmp_path, capsys) == []


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_refused_file_is_one_line_naming_the_file_and_field_in_every_command(mutation, broken, base, tmp_path,
                                                                               capsys):
    base_path, _ = base
    refused = {path: file for (path, m), (file, accepted) in broken.items() if m == mutation and not accepted}
    bad = [f"{_name(path)} = {mutation}: {wrong}" for path, file in refused.items()
           for wrong in _failures(file, base_path, tmp_path, capsys)]
    assert not bad, f"{len(bad)} failures:\n" + "\n".join(bad)
    for path, file in refused.items():  # the message says where: the field, or one that holds it
        _, err, _ = _run(["summary", str(file)], capsys)
        err = "\n".join(err)
        shown = [_name(path[:k]) for k in range(len(path), 0, -1)]
        assert any(f": {where} " in err or f": {where}[" in err or f": {where}." in err for where in shown) \
            or "not a jacbench results file" in err or "schema" in err, (_name(path), err)


def test_every_file_the_loader_accepts_goes_through_every_command(broken, base, tmp_path, capsys):
    """The accepted files, all their broken fields at once in as few files as their nesting
    allows (a report takes seconds); where such a file fails, halves of it, down to the
    field that fails alone (or the fields that fail only together)."""
    base_path, doc = base
    runs = iter(range(10**6))

    def failures(cases) -> list[str]:
        together = doc
        for path, m in cases:
            together = _mutated(together, path, MUTATIONS[m])
        file = tmp_path / f"together-{next(runs)}.json"
        file.write_text(json.dumps(together))
        return _failures(file, base_path, tmp_path, capsys)

    def culprits(cases, failed) -> list[str]:
        if len(cases) == 1:
            return [f"{_name(cases[0][0])} = {cases[0][1]}: {wrong}" for wrong in failed]
        halves = cases[: len(cases) // 2], cases[len(cases) // 2:]
        found = [c for half in halves for again in [failures(half)] if again for c in culprits(half, again)]
        return found or [f"{len(cases)} fields broken together ({', '.join(_name(p) for p, _ in cases[:4])}, "
                         f"...): {failed[0]}"]

    left = sorted(((path, m) for (path, m), (_, accepted) in broken.items() if accepted), key=lambda c: -len(c[0]))
    bad = []
    while left:
        chosen, rest = [], []
        for path, m in left:  # deepest first; a field and one inside it never in one file
            inside = any(p[:len(path)] == path or path[:len(p)] == p for p, _ in chosen)
            (rest if inside else chosen).append((path, m))
        left = rest
        failed = failures(chosen)
        if failed:
            bad += culprits(chosen, failed)
    assert not bad, f"{len(bad)} failures:\n" + "\n".join(bad)


def test_a_real_shard_without_pairs_goes_through_every_command(base, tmp_path, capsys):
    """``--shard 1/3`` of these two pairs gets neither (shards go by a hash of the pair): a real
    file of 0 pairs, which summary and report show as empty and compare as all new or missing."""
    from tests.conftest import run_cli

    run_cli("run", "--profile", "quick", "--device", "cpu", "--cases", "seed-article", "--strategies",
            "jacrev,jacfwd", "--shard", "1/3", "--results-dir", tmp_path / "r", check=True)
    (empty,) = (tmp_path / "r").glob("*.json")
    assert json.loads(empty.read_text())["jacbench"]["pairs"] == 0
    base_path, _ = base
    assert _failures(empty, base_path, tmp_path, capsys) == []
    assert cli.main(["compare", str(base_path), str(empty)]) == 0
    out, err = capsys.readouterr()
    assert "holds no pairs" in err and "3 pairs: missing 3" in out
