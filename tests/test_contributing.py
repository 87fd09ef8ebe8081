"""CONTRIBUTING.md's worked examples are run, not just shown.

Each example's files (its fenced blocks titled with their path) are written into a copy of the
project; there `jacbench list` must show what they add, a quick sweep must pass it through the
gate, the examples' own tests must pass and the layering contract must still hold.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TIMED, run_cli

from bench.analysis import results

pytestmark = pytest.mark.xdist_group("contributing")  # one worker: its copy of the project is a module fixture

DOC = ROOT / "CONTRIBUTING.md"
BLOCK = re.compile(r'^```python title="([^"]+)"\n(.*?)^```$', re.M | re.S)
LINT = Path(sys.executable).with_name("lint-imports")

#: What the examples add, by name, and where each example's one file outside tests/ goes.
WHERE = {"Add a problem": "cases/", "Add a strategy": "bench/strategies/", "Add a kind": "bench/kinds/"}
PROBLEMS = ("softmax-n4", "softmax-n64")
STRATEGY = "linearize"
KIND = "outputs"
KIND_PROBLEMS = ("outputs-tanh-sums", "outputs-affine-norm")
PLUGIN = "tests.plugins.outputs"


def examples() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """Each "## Add a ..." section: its prose before the first block, and its (path, code) blocks."""
    out = {}
    for section in re.split(r"^## ", DOC.read_text(), flags=re.M)[1:]:
        title, _, body = section.partition("\n")
        if title.startswith("Add a"):
            out[title.strip()] = (body.split("```", 1)[0], BLOCK.findall(body))
    return out


def is_test(path: str) -> bool:
    return path.startswith("tests/")


# --- what the document promises ----------------------------------------------------------------


def test_each_example_touches_one_file_outside_tests_and_names_it():
    found = examples()
    assert list(found) == list(WHERE)
    every = [path for _, blocks in found.values() for path, _ in blocks]
    assert len(every) == len(set(every)), "two blocks write the same file"
    for title, (intro, blocks) in found.items():
        paths = [path for path, _ in blocks]
        outside = [p for p in paths if not is_test(p)]
        assert len(outside) == 1, (title, outside)
        assert outside[0].startswith(WHERE[title]) and outside[0].endswith(".py"), (title, outside)
        assert any(Path(p).name.startswith("test_") for p in paths), f"{title}: no test file"
        for p in paths:  # the prose names every file before the code shows it
            assert f"`{p}`" in intro, (title, p)


def test_the_examples_add_new_files_and_new_names():
    import cases

    from bench import kinds, strategies

    for _, blocks in examples().values():
        for path, _ in blocks:
            assert not (ROOT / path).exists(), f"{path} exists already: the example must add something new"
    assert STRATEGY not in strategies.STRATEGIES and KIND not in kinds.KINDS
    assert not {p.name for p in cases.problems()} & set(PROBLEMS + KIND_PROBLEMS)
    code = {path: text for _, blocks in examples().values() for path, text in blocks}
    assert f'@register("{STRATEGY}"' in code[f"bench/strategies/{STRATEGY}.py"]
    assert f'name = "{KIND}"' in code[f"bench/kinds/{KIND}.py"]
    assert all(f'"{p}"' in code["tests/test_softmax.py"] for p in PROBLEMS)
    assert all(f'"{p}"' in code[f"tests/plugins/{KIND}.py"] for p in KIND_PROBLEMS)


def test_the_layout_names_every_stage():
    text = DOC.read_text()
    stages = [d.name for d in (ROOT / "bench").iterdir() if d.is_dir() and any(d.glob("*.py"))]
    assert len(stages) >= 7
    for name in ["cases"] + [f"bench/{d}" for d in stages]:
        assert f"`{name}/`" in text, f"the layout does not mention {name}/"


# --- the examples, run in a copy of the project -------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """bench/, cases/, pyproject.toml and the tests' shared files, with every example's files added."""
    root = tmp_path_factory.mktemp("project")
    for part in ("bench", "cases"):
        shutil.copytree(ROOT / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root)
    (root / "tests" / "plugins").mkdir(parents=True)
    for shared in ("tests/__init__.py", "tests/conftest.py", "tests/plugins/__init__.py"):
        shutil.copy(ROOT / shared, root / shared)
    for _, blocks in examples().values():
        for path, code in blocks:
            target = root / path
            assert not target.exists(), path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(code)
    return root


def in_copy(root: Path, *args, **kw) -> subprocess.CompletedProcess:
    """``jacbench ARGS`` run on the copy."""
    return run_cli(*args, cwd=root, env={"PYTHONPATH": str(root)}, **kw)


def test_the_examples_keep_the_layering(project):
    if not LINT.exists():
        pytest.skip("import-linter is not installed (make install)")
    proc = subprocess.run([str(LINT), "--no-cache"], cwd=project, capture_output=True, text=True,
                          env={"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and "0 broken" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.mark.slow
def test_list_shows_the_new_problems_strategy_and_kind(project):
    out = in_copy(project, "list", "--plugin", PLUGIN, check=True).stdout
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line[0].isspace()}
    for name in PROBLEMS:
        assert rows[name].split()[1] == "vector" and "analytic" in rows[name], rows.get(name)
    for name in KIND_PROBLEMS:
        assert rows[name].split()[1] == KIND, rows.get(name)
    assert rows[STRATEGY].split()[1] == "forward"
    for name in (STRATEGY, "jacrev"):  # strategies for several inputs handle the new kind
        assert KIND in rows[name].split("kinds:")[1].replace(",", " ").split(), rows[name]
    assert KIND not in rows["vmap-jacrev"].split("kinds:")[1], rows["vmap-jacrev"]


@pytest.mark.slow
def test_a_quick_sweep_passes_the_new_pieces_through_the_gate(project, tmp_path):
    names = PROBLEMS + KIND_PROBLEMS
    in_copy(project, "run", "--profile", "quick", "--device", "cpu", "--plugin", PLUGIN, "--cases", ",".join(names),
            "--strategies", f"{STRATEGY},jacrev", "--results-dir", tmp_path, check=True)
    (path,) = tmp_path.glob("*.json")
    frame = results.load([path])
    assert sorted(zip(frame.problem, frame.strategy)) == sorted((p, s) for p in names for s in (STRATEGY, "jacrev"))
    for row in frame.itertuples():
        assert row.status in TIMED, (row.problem, row.strategy, row.status, row.reason)
        assert row.error <= row.tolerance and row.samples, (row.problem, row.strategy)
    assert set(frame.loc[frame.problem.isin(KIND_PROBLEMS), "kind"]) == {KIND}


@pytest.mark.slow
def test_the_examples_own_tests_pass_in_the_copy(project):
    tests = [path for _, blocks in examples().values() for path, _ in blocks if Path(path).name.startswith("test_")]
    assert len(tests) == 3
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=project,
                          env={**os.environ, "PYTHONPATH": str(project)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.search(r"\b\d+ passed\b", summary) and not re.search(r"failed|skipped|error", summary), summary
