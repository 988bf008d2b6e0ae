"""`hllm-creator train --preset tiny` under `torchrun --nproc_per_node 2` (gloo, CPU): plain DDP
through the HF Trainer, resume with 2 ranks, and DeepSpeed ZeRO-2, against a 1-process run.

Real parts only: real torchrun + gloo, the real CLI, the real MLflow sqlite store and registry.
``dist_train_driver.py`` wraps a few real functions to record, per rank, the losses, the
cross-rank gathers and who talked to MLflow / wrote the model (see its docstring).

Time on the 2-core box (quiet): about 25 s per 2-rank run, 4 runs + 1 one-process run, about
2 minutes for the module. The DeepSpeed test needs the ``dist`` extra (deepspeed, installed by
`make test`'s set-up, which also pre-builds its CPU communication op so the ~80 s compile is not
paid inside the test); without deepspeed it is skipped with the reason.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BIN = Path(sys.executable).parent
DRIVER = HERE / "dist_train_driver.py"
STEPS = 4
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _env(root: Path) -> dict:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "model_code"), str(REPO), env.get("PYTHONPATH", "")])
    env.update(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", HLLM_WORKDIR=str(root / ".hllm"),
               MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}")
    env.pop("HLLM_PARENT_RUN_ID", None)
    return env


def _train(root: Path, name: str, ds, *extra: str, nproc: int = 2, ckpt: Path | None = None,
           out: Path | None = None) -> dict:
    """Run the CLI (under torchrun when nproc > 1); return per-rank records, the dirs and the log."""
    from hllm_creator.process import free_port

    rec, out = root / f"{name}.rec", out or root / name
    ckpt = ckpt or root / f"{name}.ckpt"
    args = ["train", "--preset", "tiny", "--data", str(ds.path), "--out", str(out), "--checkpoint-dir", str(ckpt),
            "--max-steps", str(STEPS), "--save-steps", "2", "--eval-users", "10", "--bf16", "off",
            "--threads", "1", "--standin-rows", "6", *extra]
    launch = ([str(BIN / "torchrun"), "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
               "--master_port", str(free_port())] if nproc > 1 else [sys.executable])
    p = subprocess.run([*launch, str(DRIVER), str(rec), "--", *args], env=_env(root), capture_output=True,
                       text=True, timeout=480)
    log = p.stdout[-4000:] + p.stderr[-6000:]
    assert p.returncode == 0, log
    ranks = []
    for r in range(nproc):
        lines = [json.loads(x) for x in (rec / f"rank{r}.jsonl").read_text().splitlines()]
        ranks.append(lines)
    return {"ranks": ranks, "out": out, "ckpt": ckpt, "log": log}


def _kind(lines: list[dict], kind: str) -> list[dict]:
    return [x for x in lines if x["kind"] == kind]


def _scores(model_dir: Path, ds, n_users: int = 12) -> np.ndarray:
    """The saved model's Item-User predictor scores: first n users x every item."""
    import pandas as pd
    import torch

    from hllm_creator.data import leave_last_out
    from hllm_creator.model import HLLMCreator

    m = HLLMCreator.load(model_dir)
    ie = pd.read_parquet(model_dir / "item_embeddings.parquet")
    emb = torch.tensor(np.stack(ie["embedding"].to_numpy()))
    pos = {str(i): k for k, i in enumerate(ie["item_id"].astype(str))}
    users = leave_last_out(ds.interactions).users.head(n_users)
    hists = [emb[[pos[str(i)] for i in h]] for h in users["history"]]
    with torch.no_grad():
        return m.score(m.encode_users(hists), emb).numpy()


@pytest.fixture(scope="module")
def ds(tmp_path_factory, bundled_dataset):
    from helpers import small_dataset

    return small_dataset(tmp_path_factory.mktemp("dist_ds") / "ds", n_users=40, source=bundled_dataset.path)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("dist_train")


@pytest.fixture(scope="module")
def ddp(root, ds):
    return _train(root, "ddp", ds)


@pytest.fixture(scope="module")
def single(root, ds):
    """One process, the same global batch per step (2 x 16 cls users, 2 x 2 creative rows)."""
    return _train(root, "single", ds, "--cls-per-step", "32", "--creative-per-step", "4", nproc=1)


def test_ddp_every_rank_trains_on_its_own_bundles_with_finite_losses(ddp):
    losses = [_kind(r, "loss") for r in ddp["ranks"]]
    for r, ls in enumerate(losses):
        assert len(ls) == STEPS, (r, len(ls))
        for x in ls:
            assert set(x) >= {"loss", "creative", "recon", "align", "cls"}
            assert all(math.isfinite(x[k]) for k in ("loss", "creative", "recon", "align", "cls")), x
    # the ranks saw different data (the sampler shards the step bundles): different losses at step 1
    assert losses[0][0]["loss"] != losses[1][0]["loss"]


def test_ddp_negatives_include_the_other_ranks_rows_and_gradient_flows_through_them(ddp):
    g0, g1 = (_kind(r, "gather") for r in ddp["ranks"])
    # per step: the align InfoNCE gathers (a, p) and cls gathers the positive items' tower outputs
    assert len(g0) == len(g1) >= 3 * STEPS
    for a, b in zip(g0, g1):  # collectives run in lockstep: call i on rank 0 pairs with call i on rank 1
        assert a["gathered_rows"] == 2 * a["local_rows"] == 2 * b["local_rows"]
        assert a["block_sums"][0] == pytest.approx(a["local_sum"], rel=1e-6, abs=1e-6)
        assert a["block_sums"][1] == pytest.approx(b["local_sum"], rel=1e-6, abs=1e-6)  # rank 1's rows on rank 0
        assert b["block_sums"][0] == pytest.approx(a["local_sum"], rel=1e-6, abs=1e-6)  # and the other way round
    for r, recs in enumerate(ddp["ranks"]):
        norms = [x["norm"] for x in _kind(recs, "grad_other")]
        assert len(norms) >= 3 * STEPS and sum(n > 0 for n in norms) >= 3 * STEPS, (r, norms)


def test_ddp_only_rank0_logs_saves_and_registers(ddp, root):
    import mlflow

    r0, r1 = ddp["ranks"]
    for kind in ("step_run", "log_metrics", "save", "register_model"):
        assert _kind(r0, kind), kind
        assert not _kind(r1, kind), kind
    assert len(_kind(r0, "step_run")) == 1 and len(_kind(r0, "register_model")) == 1
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("hllm-creator")
    runs = client.search_runs([exp.experiment_id], "tags.step = 'train'")
    # the resume test (any order: pytest-randomly) trains into the same out dir again: its run has resume on
    # and no register; the ddp fixture's is the one that registered
    ddp_runs = [r for r in runs if r.data.params.get("out") == str(ddp["out"])
                and r.info.run_id in {v.run_id for v in client.search_model_versions("name = 'hllm-creator'")}]
    assert len(ddp_runs) == 1
    assert ddp_runs[0].data.metrics["loss_total"] > 0
    mv = client.get_model_version_by_alias("hllm-creator", "candidate")
    assert mv.run_id in {r.info.run_id for r in runs}
    assert (ddp["ckpt"] / "checkpoint-2").is_dir() and (ddp["ckpt"] / "checkpoint-4").is_dir()
    assert (ddp["out"] / "model.safetensors").exists()


def test_ddp_resume_from_a_checkpoint_with_two_ranks_reaches_the_same_losses(ddp, root, ds):
    ckpt = root / "resume.ckpt"
    shutil.copytree(ddp["ckpt"], ckpt)
    shutil.rmtree(ckpt / "checkpoint-4")  # as if the job had been stopped after step 2
    # a checkpoint is resumed only by the same train config (its `out` included): re-run into the
    # same model dir, keeping the uninterrupted run's model aside to compare and put back
    before = root / "ddp.before_resume"
    shutil.copytree(ddp["out"], before)
    try:
        res = _train(root, "resume", ds, "--resume", "--no-register", ckpt=ckpt, out=ddp["out"])
        assert "resume: " + str(ckpt / "checkpoint-2") in res["log"]
        for r in range(2):
            full = [x["loss"] for x in _kind(ddp["ranks"][r], "loss")]
            resumed = [x["loss"] for x in _kind(res["ranks"][r], "loss")]
            assert len(resumed) == STEPS - 2, (r, resumed)  # only steps 3 and 4 ran
            assert resumed == pytest.approx(full[2:], rel=1e-5, abs=1e-6), (r, full, resumed)
        # and it ends with the same model as the uninterrupted run
        np.testing.assert_allclose(_scores(ddp["out"], ds), _scores(before, ds), atol=1e-5)
    finally:
        shutil.rmtree(ddp["out"], ignore_errors=True)
        before.rename(ddp["out"])


def test_ddp_model_loads_and_scores_like_a_one_process_run(ddp, single, root, ds):
    """Same seed and init, same global batch per step (2 ranks x 16 vs 32 cls users), same steps.
    The two runs do not see the very same users in each step (bundles are cut per rank, and each
    rank samples its own catalog negatives), so the models are close, not equal; the exact
    equivalence of the distributed losses and gradients is test_distributed_losses.py's job.
    Stated tolerance (measured: 0.65 and 0.79): the mean |score difference| between the 2-rank and
    the 1-process model is under 0.8 x how far training moved the 1-process model from its start,
    and the two score changes correlate above 0.6 (a model that trained on something else, not at
    all, or on one rank's data only would not)."""
    start = _train(root, "start", ds, "--max-steps", "1", "--lr", "1e-12", "--head-lr", "1e-12", "--no-register",
                   nproc=1)
    s2, s1, s0 = _scores(ddp["out"], ds), _scores(single["out"], ds), _scores(start["out"], ds)
    assert s2.shape == s1.shape and np.isfinite(s2).all()
    d21, d10 = float(np.abs(s2 - s1).mean()), float(np.abs(s1 - s0).mean())
    corr = float(np.corrcoef((s2 - s0).ravel(), (s1 - s0).ravel())[0, 1])
    print(f"mean |score diff| 2-rank vs 1-process {d21:.4f}, 1-process vs start {d10:.4f}; change corr {corr:.3f}")
    assert d10 > 1e-3  # training moved the scores at all
    assert d21 < 0.8 * d10 and corr > 0.6, (d21, d10, corr)


def test_deepspeed_zero2_on_cpu_matches_ddp(ddp, root, ds):
    """ZeRO-2 shards optimizer state and gradients but computes the same update as DDP: the same
    per-rank losses at every step (rel 1e-5) and the same saved model (scores within 1e-6;
    measured 1e-7 and 9e-8). Found by this test: DDP overwrote rank 1's align queue with rank 0's
    (buffer broadcast) and DeepSpeed did not, so the two diverged from step 2 until the queue
    became the same on every rank (model/hllm.py enqueues the gathered rows)."""
    pytest.importorskip("deepspeed")
    ds_res = _train(root, "zero2", ds, "--deepspeed", str(REPO / "configs/deepspeed/zero2.json"), "--no-register")
    for r in range(2):
        got = [x["loss"] for x in _kind(ds_res["ranks"][r], "loss")]
        want = [x["loss"] for x in _kind(ddp["ranks"][r], "loss")]
        assert len(got) == STEPS and all(math.isfinite(v) for v in got)
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), (r, got, want)
    assert not _kind(ds_res["ranks"][1], "save") and _kind(ds_res["ranks"][0], "save")
    # DeepSpeed's own checkpoint: the optimizer state is partitioned, one shard per rank (ZeRO)
    gs = ds_res["ckpt"] / "checkpoint-4" / "global_step4"
    assert sorted(p.name for p in gs.glob("zero_pp_rank_*_optim_states.pt")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    np.testing.assert_allclose(_scores(ds_res["out"], ds), _scores(ddp["out"], ds), atol=1e-6)


def test_deepspeed_zero3_on_cpu_trains_like_ddp_then_rank0_fits_evaluates_and_saves(ddp, root, ds):
    """The gpu-multinode path (ZeRO-3: every weight sharded over the ranks). Same per-rank losses
    as DDP (1e-5), then rank 0 alone runs the predictor fit (--head-steps 3), the evaluation and
    the save. Found by this test: under ZeRO-3 rank 0's evaluation all-gathered weights from ranks
    that had already left (crash), and the predictor fit's cls loss gathered across ranks too
    (train/distributed.py: rank0_view, local_only)."""
    z3 = _train(root, "zero3", ds, "--deepspeed", str(REPO / "configs/deepspeed/zero3.json"), "--head-steps", "3",
                "--no-register")
    for r in range(2):
        got = [x["loss"] for x in _kind(z3["ranks"][r], "loss")]
        want = [x["loss"] for x in _kind(ddp["ranks"][r], "loss")]
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), (r, got, want)
    assert _kind(z3["ranks"][0], "save") and not _kind(z3["ranks"][1], "save")
    ev = json.loads((z3["out"] / "eval.json").read_text())
    assert ev["head_fit"]["steps"] == 3 and 0 <= ev["model"]["auc"] <= 1
    s = _scores(z3["out"], ds)  # a complete model (not rank 0's shards) that loads and scores
    assert np.isfinite(s).all() and s.std() > 0
