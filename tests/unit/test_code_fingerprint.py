"""The local runner's cache lives under a fingerprint of the code (a run after a code change must not
reuse the outputs of the old code: KFP's local cache keys a task by its spec and inputs only)."""

from __future__ import annotations

import hllm_creator
from hllm_creator_kfp.pipelines import local_runner


def test_the_fingerprint_follows_the_code(tmp_path, monkeypatch):
    pkg = tmp_path / "hllm_creator"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "step.py").write_text("X = 1\n")
    monkeypatch.setattr(hllm_creator, "__file__", str(pkg / "__init__.py"))
    a = local_runner.code_fingerprint()
    assert a == local_runner.code_fingerprint() and len(a) == 12
    (pkg / "step.py").write_text("X = 2\n")
    b = local_runner.code_fingerprint()
    assert b != a
    (pkg / "step.py").write_text("X = 1\n")
    assert local_runner.code_fingerprint() == a
