"""The registered model's pip_requirements: pinned packages from registries as they exist, the
project only as a wheel by path/URL, never a bare name anyone could publish (issue 16, finding 5)."""

from __future__ import annotations

import pytest

from hllm_creator.tracking.mlflow_utils import PACKAGE_REQUIREMENT_ENV, model_pip_requirements


def test_requirements_are_pinned_and_never_a_bare_project_name(monkeypatch):
    import mlflow

    monkeypatch.delenv(PACKAGE_REQUIREMENT_ENV, raising=False)
    reqs = model_pip_requirements()
    assert f"mlflow=={mlflow.__version__}" in reqs
    assert any(r.startswith("torch==") and "+" not in r for r in reqs)
    assert all("==" in r for r in reqs)
    assert not any(r.split("==")[0].split("@")[0].strip() == "hllm-creator" for r in reqs)

    wheel = "hllm-creator @ https://registry.example.com/wheels/hllm_creator-0.1.0-py3-none-any.whl"
    monkeypatch.setenv(PACKAGE_REQUIREMENT_ENV, wheel)
    assert model_pip_requirements()[-1] == wheel


@pytest.mark.parametrize("bad", ["hllm-creator", "peft>=0.17", "openai", "torch<3"])
def test_loose_requirements_are_refused(bad, monkeypatch):
    monkeypatch.delenv(PACKAGE_REQUIREMENT_ENV, raising=False)
    with pytest.raises(ValueError, match="pinned"):
        model_pip_requirements([bad])
    monkeypatch.setenv(PACKAGE_REQUIREMENT_ENV, bad)
    with pytest.raises(ValueError, match=bad.split("<")[0].split(">")[0]):
        model_pip_requirements()
