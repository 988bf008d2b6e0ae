"""The project's code installs under its own names: the library as ``hllm_creator``, the KFP glue as
``hllm_creator_kfp.components`` / ``hllm_creator_kfp.pipelines`` (the repo's components/ and pipelines/
folders, mapped by pyproject's package-dir); no generic top-level ``components``/``pipelines``, no tests."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _tool() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folder(pkg: str, package_dir: dict) -> Path:
    for prefix in sorted(package_dir, key=len, reverse=True):
        if pkg == prefix or pkg.startswith(prefix + "."):
            return REPO / package_dir[prefix] / Path(*pkg[len(prefix):].split(".")[1:])
    raise AssertionError(f"{pkg}: no package-dir entry maps it")


def test_every_package_folder_is_listed_and_no_tests_are():
    tool = _tool()
    listed, package_dir = set(tool["packages"]), tool["package-dir"]
    assert not [p for p in listed if ".tests" in p or p.endswith("tests")]
    on_disk = set()
    for root in package_dir:
        base = _folder(root, package_dir)
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            if "tests" in rel or "__pycache__" in rel:
                continue
            on_disk.add(".".join((root, *rel)))
    missing = sorted(on_disk - listed)
    assert not missing, f"package folders pyproject's [tool.setuptools] packages does not list: {missing}"
    assert all(_folder(p, package_dir).is_dir() for p in listed)


def test_glue_imports_under_the_project_name_only(tmp_path):
    code = ("import importlib.util as u; "
            "import hllm_creator_kfp.pipelines.presets, hllm_creator_kfp.components._images; "
            "print(u.find_spec('components') is None and u.find_spec('pipelines') is None)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
