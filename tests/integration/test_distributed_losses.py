"""model/losses.py across 2 real gloo ranks (torchrun) == one process on the concatenated batch.

The cls negatives and the align InfoNCE gather rows from every rank; this checks that each rank's
loss uses the other rank's rows, that gradients flow back through them to their owner, and that
the DDP average of the gradients is exactly the one-process gradient. About 8 s.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BIN = Path(sys.executable).parent
SCRIPT = HERE / "dist_loss_check.py"


def torchrun_env() -> dict:
    """The subprocesses import this checkout (PYTHONPATH), sleep instead of spin, use 1 thread each."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "model_code"), str(REPO), env.get("PYTHONPATH", "")])
    env.update(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    return env


def _load_script():
    spec = importlib.util.spec_from_file_location("dist_loss_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    from hllm_creator.process import free_port

    out = tmp_path_factory.mktemp("dist_losses")
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(SCRIPT), str(out)]
    p = subprocess.run(cmd, env=torchrun_env(), capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def test_two_rank_losses_equal_the_one_process_losses_on_the_concatenated_batch(ranks):
    ref = _load_script().reference()
    for k in ("align", "cls"):
        mean = (ranks[0][k] + ranks[1][k]) / 2
        assert mean == pytest.approx(ref[k], rel=1e-6, abs=1e-6), k
        assert all(torch.isfinite(torch.tensor(r[k])) for r in ranks)
    # each rank's loss is not the loss of its own rows alone: the other rank's rows are negatives
    mod = _load_script()
    x = mod.make_inputs()
    import hllm_creator.model.losses as L

    local_align = L.info_nce(x["a"][:mod.B], x["p"][:mod.B], x["scale"], queue_a=x["queue_a"], queue_p=x["queue_p"])
    assert abs(float(local_align) - ranks[0]["align"]) > 1e-3


def test_ddp_gradients_equal_the_one_process_gradients(ranks):
    ref = _load_script().reference()["grads"]
    W = 2
    # inputs: rank r's leaf gets the gradient of the SUM of both ranks' losses w.r.t. its rows
    # (all_gather's backward); the one-process loss is their mean, hence the factor W
    for k in ("a", "p", "user", "pos"):
        got = torch.cat([ranks[0]["grads"][k], ranks[1]["grads"][k]]) / W
        assert torch.allclose(got, ref[k], atol=1e-7, rtol=1e-5), (k, (got - ref[k]).abs().max())
        assert ref[k].abs().max() > 1e-4, k  # the check is not vacuous
    # replicated parameters (predictor, temperature): the DDP mean of the ranks' gradients
    names = [k for k in ref if k.startswith("pred.")]
    assert len(names) >= 10
    for k in names:
        assert torch.allclose(ranks[0]["grads"][k], ref[k], atol=1e-7, rtol=1e-5), k
        assert torch.equal(ranks[0]["grads"][k], ranks[1]["grads"][k]), k
    assert torch.allclose(ranks[0]["scale_grad_mean"], ref["scale"], rtol=1e-5)


def test_gradient_of_one_ranks_loss_reaches_the_other_ranks_rows(ranks):
    """Only rank 0 backpropagates: rank 1's rows still get a gradient, equal to the one-process one."""
    c = _load_script().reference()["cross"]
    assert ranks[0]["cross"]["align"] == pytest.approx(c["align0"], rel=1e-6)
    assert ranks[0]["cross"]["cls"] == pytest.approx(c["cls0"], rel=1e-6)
    for k in ("a", "p", "pos"):
        other = ranks[1]["cross"][k]
        assert other.abs().max() > 1e-4, k  # rank 1's rows were used by rank 0's loss, and the gradient came back
        got = torch.cat([ranks[0]["cross"][k], other])
        assert torch.allclose(got, c[k], atol=1e-7, rtol=1e-5), (k, (got - c[k]).abs().max())
