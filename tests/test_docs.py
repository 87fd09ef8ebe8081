"""The manual builds, strictly: every page in the nav, every link and every API reference
resolves (``mkdocs build --strict``), and the README stays a front page."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

MKDOCS = Path(sys.executable).with_name("mkdocs")


@pytest.mark.skipif(not MKDOCS.exists(), reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_the_manual_builds_strictly_with_every_page_and_the_api(tmp_path):
    proc = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert sorted(nav) == sorted(p.name for p in (ROOT / "docs").glob("*.md"))  # no page left out of the nav
    for page in nav:
        assert (tmp_path / ("" if page == "index.md" else page.removesuffix(".md")) / "index.html").exists(), page
    api = (tmp_path / "api" / "index.html").read_text()
    for name in ("advise", "jacobian", "choice", "best_per_problem"):  # the docstrings, rendered
        assert re.search(rf'id="bench\.[a-z.]*\b{name}"', api), name
    contributing = (tmp_path / "contributing" / "index.html").read_text()
    assert "Add a problem" in contributing  # CONTRIBUTING.md itself, included


def test_the_readme_is_a_front_page_whose_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert links and all((ROOT / link).exists() for link in links if not link.startswith("http")), links
