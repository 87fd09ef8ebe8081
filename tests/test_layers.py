"""The layering of bench/ by stage holds, and the contract that says so can fail.

The contract is import-linter's, in pyproject.toml: cases never imports bench; each stage of
the measuring side imports only the stages below it; rendering reads the analysis, never the
other way; reading and rendering never import torch; the strategy registry imports no
strategy; and there are no import cycles. And every NOTE a comment refers to is written.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_import_contract_holds():
    proc = lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("bench/render/html.py", "import torch", "reading and rendering never import torch"),
    ("bench/analysis/stats.py", "from bench.sweep import plan", "reading and rendering never import torch"),
    ("bench/analysis/stats.py", "from bench.render import html", "rendering reads the analysis"),
    ("bench/gate/state.py", "from bench.measure import pair", "each stage imports only the stages below it"),
    ("bench/strategies/registry.py", "from bench.strategies import textbook",
     "the strategy registry imports no strategy"),
    ("cases/problem.py", "import bench", "cases never imports bench"),
    ("bench/analysis/stats.py", "from bench.analysis import picks", "no import cycles"),
])
def test_an_import_against_the_layering_breaks_the_contract(tmp_path, module, line, contract):
    for part in ("bench", "cases"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    proc = lint(tmp_path)
    assert proc.returncode != 0
    broken = proc.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, proc.stdout[-3000:]


def test_every_note_referred_to_is_written_once():
    """A NOTE named in brackets in code, tests or docs refers to the one block that opens with
    that NOTE on a line of its own (in a docstring or a ``#:`` comment)."""
    written, refs = {}, []
    for path in [*ROOT.glob("bench/**/*.py"), *ROOT.glob("cases/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("*.md")]:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if m := re.match(r"^\s*(?:#:?\s*)?NOTE: \[([^\]]+)\]\s*$", line):
                written.setdefault(m.group(1), []).append(f"{path.relative_to(ROOT)}:{i}")
            refs += [(name, f"{path.relative_to(ROOT)}:{i}") for name in re.findall(r"NOTE: \[([^\]]+)\]", line)]
    assert not {name: at for name, at in written.items() if len(at) > 1}
    assert not [(name, at) for name, at in refs if name not in written]
