"""The docs name what exists: every backticked dotted path of the library (``hllm_creator.x.y`` or the
short ``infer.match.default_ads``) imports and resolves, every ``Class.attribute`` of a library class is
there, and every repo path they cite (``benchmarks/...``, ``tests/...``) is there. Modules move; this is
what tells a move that it left a doc behind."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path

import hllm_creator

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([*REPO.glob("docs/*.md"), REPO / "README.md", *REPO.glob("components/*/README.md")])
SUBPACKAGES = {m.name for m in pkgutil.iter_modules(hllm_creator.__path__)}
# `model.generate`, `config.host`: in prose these are an object's attribute or a config field as often
# as the package; a short path under them is checked only when it names one of their modules
OBJECT_NAMES = {"model", "config"}
FILE_SUFFIXES = {"parquet", "json", "jsonl", "yaml", "yml", "py", "md", "npz", "npy", "csv", "tsv", "log", "txt",
                 "safetensors", "bin", "gz", "sh", "toml", "db", "pt", "png", "html", "cfg", "lock"}
DOTTED = re.compile(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)[`(]")
CLASS_ATTR = re.compile(r"`([A-Z]\w+)\.([a-z_]\w*)")
REPO_PATH = re.compile(r"(?<![\w/.])((?:benchmarks|tests|components|pipelines|model_code|Dockerfiles|manifests|"
                       r"configs|docs)/[\w/.-]*\w\.(?:py|md|sh|json|yaml|yml|toml|npz|png))")
# `train/head_fit.py`: a library file named from its package
LIBRARY_FILE = re.compile(r"(?<![\w/.-])((?:" + "|".join(sorted(SUBPACKAGES)) + r")/[\w/]+\.py)")
LIBRARY = REPO / "model_code" / "hllm_creator"


def _library_path(dotted: str) -> str | None:
    """The full ``hllm_creator...`` path a doc token means, or None when it is not a library path."""
    parts = dotted.split(".")
    if parts[-1] in FILE_SUFFIXES:
        return None
    if parts[0] in ("hllm_creator", "hllm_creator_kfp"):  # the library, the installed KFP glue
        return dotted
    if parts[0] not in SUBPACKAGES:
        return None
    if parts[0] in OBJECT_NAMES:
        pkg = importlib.import_module(f"hllm_creator.{parts[0]}")
        if not hasattr(pkg, "__path__") or parts[1] not in {m.name for m in pkgutil.iter_modules(pkg.__path__)}:
            return None
    return f"hllm_creator.{dotted}"


def _unresolved(path: str) -> str | None:
    """Why ``path`` does not resolve (the longest importable module, then attributes), or None."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            continue
        obj = importlib.import_module(name)
        for j, attr in enumerate(parts[i:], start=i):
            if not hasattr(obj, attr):
                return f"{'.'.join(parts[:j])} has no {attr!r}"
            obj = getattr(obj, attr)
        return None
    return "no such module"


def test_every_dotted_library_path_in_the_docs_resolves():
    seen: dict[str, list[str]] = {}
    for doc in DOCS:
        text = doc.read_text()
        for m in DOTTED.finditer(text):
            full = _library_path(m.group(1))
            if full:
                line = text.count("\n", 0, m.start()) + 1
                seen.setdefault(full, []).append(f"{doc.relative_to(REPO)}:{line}")
    assert len(seen) > 50, "the scan found too few library paths: has the docs' style changed?"
    bad = [f"{where[0]}: `{path}`: {why}" for path, where in sorted(seen.items())
           if (why := _unresolved(path))]
    assert not bad, "docs name library paths that do not exist:\n" + "\n".join(bad)


def test_every_repo_path_in_the_docs_exists():
    cited = {(m.group(1), f"{doc.relative_to(REPO)}:{doc.read_text().count(chr(10), 0, m.start()) + 1}")
             for doc in DOCS for m in REPO_PATH.finditer(doc.read_text())}
    assert len(cited) > 30
    missing = sorted(f"{where}: {path}" for path, where in cited if not (REPO / path).exists())
    in_library = {(m.group(1), f"{doc.relative_to(REPO)}:{doc.read_text().count(chr(10), 0, m.start()) + 1}")
                  for doc in DOCS for m in LIBRARY_FILE.finditer(doc.read_text())}
    assert len(in_library) > 10
    missing += sorted(f"{where}: {path} (under model_code/hllm_creator)" for path, where in in_library
                      if not (LIBRARY / path).exists())
    assert not missing, "docs cite files that are not in the repo:\n" + "\n".join(missing)


def _library_classes() -> dict[str, list[type]]:
    """Every class defined in the library, by name (a name two modules share lists both)."""
    classes: dict[str, list[type]] = {}
    for info in pkgutil.walk_packages(hllm_creator.__path__, "hllm_creator."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and obj.__module__ == module.__name__:
                classes.setdefault(name, []).append(obj)
    return classes


def test_every_class_attribute_in_the_docs_exists():
    classes = _library_classes()
    checked, bad = 0, []
    for doc in DOCS:
        text = doc.read_text()
        for m in CLASS_ATTR.finditer(text):
            name, attr = m.groups()
            if name not in classes:
                continue
            checked += 1
            if not any(hasattr(c, attr) or attr in getattr(c, "model_fields", {}) for c in classes[name]):
                bad.append(f"{doc.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: `{name}.{attr}`")
    assert checked > 10
    assert not bad, "docs name class attributes that do not exist:\n" + "\n".join(bad)
