"""The TrainJob's image is compiled into the pipeline: the train step's own image as resolved at
compile time (a release's digest pin included), never looked up inside the running container."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import yaml


def test_digest_pin_reaches_the_trainjob(tmp_path):
    d = "sha256:" + "cd" * 32
    out = tmp_path / "gm.yaml"
    code = ("from hllm_creator_kfp.pipelines.kfp_backend import compile_pipeline;"
            "from hllm_creator_kfp.pipelines.presets import get_preset;"
            f"compile_pipeline(get_preset('gpu-multinode'), {str(out)!r})")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "HLLM_IMAGE_DIGEST_GPU": d},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    spec = next(yaml.safe_load_all(out.read_text()))
    params = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert params["trainjob_image"]["runtimeValue"]["constant"].endswith(f"hllm-creator-gpu@{d}")
    assert spec["deploymentSpec"]["executors"]["exec-train"]["container"]["image"].endswith(f"@{d}")


def test_train_component_reads_no_image_setting_at_run_time():
    from hllm_creator_kfp.components.train.component import train

    body = inspect.getsource(train.python_func).split('"""')[-1]  # after the docstring: what runs in the pod
    assert "_images" not in body and "GPU_IMAGE" not in body


def test_a_trainjob_without_an_image_is_a_clear_error(tmp_path):
    import pytest
    from kfp import dsl

    from hllm_creator_kfp.components.train.component import train

    with pytest.raises(ValueError, match="trainjob_image"):
        train.python_func(dataset=dsl.Dataset(uri=str(tmp_path / "d")), model=dsl.Model(uri=str(tmp_path / "m")),
                          metrics=dsl.Metrics(uri=str(tmp_path / "x")), train_preset="tiny", launcher="trainjob")
