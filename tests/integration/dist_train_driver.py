"""Run ``hllm-creator train`` under ``torchrun`` and record, per rank, what the tests check.

Usage: ``torchrun --nproc_per_node 2 dist_train_driver.py RECORD_DIR -- train --preset tiny ...``

Nothing is faked: the real CLI runs on real torch.distributed (gloo). The driver only wraps a few
real functions to write JSON lines to ``RECORD_DIR/rank{R}.jsonl``:
- ``loss``: every forward's losses on this rank;
- ``gather``: every cross-rank gather in model/losses.py (local rows, gathered rows, the sum of each
  rank's block as seen here) so a test can check that the other rank's rows arrived;
- ``grad_other``: the gradient norm that reached the OTHER rank's rows of a gathered tensor
  (non-zero = the loss uses them, and all_gather's backward sends that gradient to its owner);
- ``step_run`` / ``log_metrics`` / ``save`` / ``register``: who talked to MLflow and wrote the model.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> None:
    rec_dir = Path(sys.argv[1])
    assert sys.argv[2] == "--", "usage: dist_train_driver.py RECORD_DIR -- <hllm-creator args>"
    cli_args = sys.argv[3:]
    rank = int(os.environ.get("RANK", "0"))
    rec_dir.mkdir(parents=True, exist_ok=True)
    out = open(rec_dir / f"rank{rank}.jsonl", "a", buffering=1)

    def rec(kind: str, **kw) -> None:
        out.write(json.dumps({"kind": kind, "rank": rank, **kw}) + "\n")

    import torch

    import hllm_creator.tracking as tracking
    from hllm_creator.model import losses
    from hllm_creator.model.hllm import HLLMCreator

    orig_forward = HLLMCreator.forward

    def forward(self, *a, **kw):
        o = orig_forward(self, *a, **kw)
        if self.training:
            rec("loss", **{k: float(v) for k, v in o.items()
                           if k in ("loss", "creative", "recon", "align", "cls") and torch.is_tensor(v)})
        return o

    HLLMCreator.forward = forward

    orig_gather = losses.gather_with_grad

    def gather_with_grad(x):
        g = orig_gather(x)
        ws = losses.world_size()
        if ws > 1:
            B = x.shape[0]
            blocks = [float(g[i * B:(i + 1) * B].detach().double().sum()) for i in range(ws)]
            rec("gather", local_rows=B, gathered_rows=int(g.shape[0]), local_sum=float(x.detach().double().sum()),
                block_sums=blocks)
            if g.requires_grad:
                other = [i for i in range(ws) if i != rank]

                def hook(grad, other=other, B=B):
                    n = sum(float(grad[i * B:(i + 1) * B].norm()) for i in other)
                    rec("grad_other", norm=n)
                g.register_hook(hook)
        return g

    losses.gather_with_grad = gather_with_grad

    for name in ("step_run", "register_model"):
        orig = getattr(tracking, name)

        def wrapped(*a, _orig=orig, _name=name, **kw):
            rec(_name)
            return _orig(*a, **kw)
        setattr(tracking, name, wrapped)
    orig_log = tracking.log_metrics

    def log_metrics(*a, **kw):
        rec("log_metrics")
        return orig_log(*a, **kw)
    tracking.log_metrics = log_metrics
    orig_save = HLLMCreator.save

    def save(self, *a, **kw):
        rec("save")
        return orig_save(self, *a, **kw)
    HLLMCreator.save = save

    from hllm_creator.cli import main as cli_main

    sys.argv = ["hllm-creator", *cli_args]
    try:
        cli_main()
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    finally:
        rec("exit")
        out.close()


if __name__ == "__main__":
    main()
