"""The repository stands alone: code, tests and docs cite no working material
outside it and no issue numbers; where a rule comes from is a page in docs/."""
from __future__ import annotations

import re
import subprocess

import pytest

from conftest import ROOT

# Citations a newcomer could not follow from a checkout.
_CITATION = re.compile(
    r"shared/(design|reference)|\bdesign\.md\b|\b[Ii]ssues? #?\d+"
    r"|\([Ii]ssue \d")


def _tracked_text_files():
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for rel in out.splitlines():
        path = ROOT / rel
        if path.suffix in {".png", ".so", ".pkl", ".pt"} or not path.is_file():
            continue
        try:
            yield rel, path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue


def test_no_citation_outside_the_repository():
    found = [f"{rel}:{n}: {line.strip()}"
             for rel, text in _tracked_text_files()
             for n, line in enumerate(text.splitlines(), 1)
             if _CITATION.search(line) and rel != "tests/test_repository.py"]
    assert not found, "\n".join(found)


def test_docs_links_resolve():
    """Every relative link in README.md and docs/ points to a file here."""
    link = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target, _anchor in link.findall(page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_architecture_page_names_every_source_file():
    """docs/architecture.md is drawn from the tree: each C source and each
    module of the package is named there."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    files = [p.name for p in (ROOT / "csrc").glob("*/*.[ch]")]
    files += [p.name for p in (ROOT / "TorchDevice").glob("*.py*")]
    missing = sorted(f"`{name}`" for name in files if f"`{name}`" not in page)
    assert not missing, missing


def test_package_metadata_uses_the_license_expression():
    """setuptools deprecated the `license = {text = ...}` table and the
    license classifiers, and announces that builds using them fail from
    2027-02-18: the project states its license as an SPDX expression (which
    needs setuptools >= 77 to build) and ships the LICENSE file."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    project = meta["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text("utf-8")[:200]
    assert not [c for c in project.get("classifiers", [])
                if c.startswith("License ::")]
    assert "setuptools>=77" in meta["build-system"]["requires"]
