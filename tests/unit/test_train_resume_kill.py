"""Training resumes after a SIGKILL (issue 16): a tiny-preset `run_train` in a subprocess is killed
once it has written a few checkpoints; the same command again (resume is on by default) continues
from the last COMPLETE checkpoint: it trains only the steps after it and finishes the model dir.
Checkpoints of another config are not resumed; the default checkpoint dir follows HLLM_STATE_DIR.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 6

TRAIN = textwrap.dedent("""
    import json, sys
    from hllm_creator.train.config import build_config
    from hllm_creator.train.trainer import run_train
    data, out, ckpt, max_steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    cfg = build_config("tiny", data=data, out=out, checkpoint_dir=ckpt, standin_rows=6, cls_per_step=8,
                       cls_negatives=16, max_steps=max_steps, eval_users=5, save_steps=1, logging_steps=1,
                       model={"max_history": 10, "item_max_tokens": 24}, bf16="off", register_model=False)
    res = run_train(cfg)
    print("STEPS", json.dumps(sorted(h["step"] for h in res["history"] if "loss_total" in h)), flush=True)
""")


def _env():
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "model_code"), str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _complete(ckpt: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in ckpt.glob("checkpoint-*")
                  if (p / "trainer_state.json").exists())


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory, bundled_dataset):
    from helpers import small_dataset

    return small_dataset(tmp_path_factory.mktemp("small") / "ds", n_users=30, source=bundled_dataset.path)


def test_sigkill_mid_training_then_rerun_continues_from_the_last_checkpoint(tiny_ds, tmp_path):
    out, ckpt = tmp_path / "model", tmp_path / "ckpt"
    argv = [sys.executable, "-c", TRAIN, str(tiny_ds.path), str(out), str(ckpt), str(MAX_STEPS)]
    p = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        t0 = time.time()
        while (_complete(ckpt) or [0])[-1] < 2:
            assert p.poll() is None, "training ended before it could be killed"
            assert time.time() - t0 < 300, "no checkpoint after 300 s"
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        p.stdout.close()
    last = _complete(ckpt)[-1]
    assert 2 <= last < MAX_STEPS and not out.exists()

    # the same command again (in this process: one interpreter start less)
    from hllm_creator.train.config import build_config
    from hllm_creator.train.trainer import run_train

    cfg = build_config("tiny", data=str(tiny_ds.path), out=str(out), checkpoint_dir=str(ckpt), standin_rows=6,
                       cls_per_step=8, cls_negatives=16, max_steps=MAX_STEPS, eval_users=5, save_steps=1,
                       logging_steps=1, model={"max_history": 10, "item_max_tokens": 24}, bf16="off",
                       register_model=False)
    res = run_train(cfg)
    steps = sorted(h["step"] for h in res["history"] if "loss_total" in h)
    # only the steps after the last complete checkpoint were trained, up to the end
    assert steps == list(range(last + 1, MAX_STEPS + 1)), (last, steps)
    assert (out / "model.safetensors").exists() and (out / "eval.json").exists()
    assert json.loads((ckpt / "resume_key.json").read_text())["key"]


def test_checkpoints_of_another_config_are_not_resumed_and_state_dir_default(tmp_path, monkeypatch):
    from hllm_creator.train.config import build_config, checkpoint_key, default_checkpoint_dir, prepare_checkpoints

    cfg = build_config("tiny", data="d", out=str(tmp_path / "m"))
    assert cfg.resume is True
    ckpt = tmp_path / "ck"
    assert prepare_checkpoints(cfg, ckpt) is None  # nothing yet; the key is written
    for n in (2, 4):
        (ckpt / f"checkpoint-{n}").mkdir()
        (ckpt / f"checkpoint-{n}" / "trainer_state.json").write_text("{}")
    (ckpt / "checkpoint-5").mkdir()  # killed while saving: incomplete
    # same config (save/logging steps do not count): the last complete one, the incomplete one removed
    same = cfg.model_copy(update={"save_steps": 7, "logging_steps": 3})
    assert checkpoint_key(same) == checkpoint_key(cfg)
    assert prepare_checkpoints(same, ckpt) == str(ckpt / "checkpoint-4")
    assert not (ckpt / "checkpoint-5").exists()
    # another config: never resumed, its checkpoints removed
    other = cfg.model_copy(update={"lr": cfg.lr * 2})
    assert checkpoint_key(other) != checkpoint_key(cfg)
    assert prepare_checkpoints(other, ckpt) is None and not list(ckpt.glob("checkpoint-*"))
    # resume off: start fresh
    (ckpt / "checkpoint-9").mkdir()
    (ckpt / "checkpoint-9" / "trainer_state.json").write_text("{}")
    assert prepare_checkpoints(other.model_copy(update={"resume": False}), ckpt) is None
    assert not (ckpt / "checkpoint-9").exists()
    # where checkpoints go by default: the durable state dir (cluster), keyed by config; else beside out
    monkeypatch.delenv("HLLM_STATE_DIR", raising=False)
    assert default_checkpoint_dir(cfg) == f"{cfg.out}.checkpoints"
    monkeypatch.setenv("HLLM_STATE_DIR", "/work/state")
    assert default_checkpoint_dir(cfg) == f"/work/state/checkpoints/{checkpoint_key(cfg)}"
