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



def test_package_metadata_states_the_license_without_deprecated_fields(
        tmp_path):
    """setuptools >= 77 deprecated the `license = {text = ...}` table and
    the license classifiers, and announces that builds using them fail from
    2027-02-18: the metadata built by the setuptools installed here names the
    license (as an SPDX expression where setuptools knows one) with no
    deprecation warning, and the wheel ships the LICENSE file."""
    import shutil
    import sys

    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE",
                 "torchdevice_autoload.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "TorchDevice", tmp_path / "TorchDevice",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copytree(ROOT / "csrc", tmp_path / "csrc")
    script = (
        "import warnings, setuptools.build_meta as b\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    name = b.prepare_metadata_for_build_wheel('meta')\n"
        "for w in seen:\n"
        "    if 'Deprecat' in type(w.category).__name__ + w.category.__name__:\n"
        "        print('DEPRECATED:', w.message)\n"
        "print('DIR:', name)\n")
    (tmp_path / "meta").mkdir()
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "DEPRECATED" not in out.stdout + out.stderr, out.stdout
    meta_dir = out.stdout.split("DIR:")[1].strip()
    meta = (tmp_path / "meta" / meta_dir / "METADATA").read_text("utf-8")
    lines = meta.splitlines()
    assert ("License-Expression: Apache-2.0" in lines
            or "License: Apache-2.0" in lines), meta[:2000]
    assert not [line for line in lines
                if line.startswith("Classifier: License ::")]
