"""What the single-writer end of a distributed training run needs (rank 0 evaluates, fits the
predictor head, saves; the other ranks are done).

- ``rank0_view(trainer)``: under DeepSpeed ZeRO-3 every rank holds only a shard of each weight and
  every forward all-gathers the rest, so a forward on rank 0 alone waits for ranks that have left.
  Called on EVERY rank after training: gathers the full weights once (one collective) and removes
  ZeRO-3's fetch/release hooks, so the model is an ordinary module from then on. No-op otherwise.
- ``local_only()``: inside it, ``model.losses`` gathers nothing across ranks (world size 1), for
  the predictor fit rank 0 runs alone after training.
Both found by running the two-process tests (tests/integration/test_distributed_train.py).
"""

from __future__ import annotations

import contextlib

from hllm_creator.model import losses

_held: list = []  # the entered (never exited) gather contexts: the full weights stay in place


def zero_stage(trainer) -> int:
    if not getattr(trainer, "is_deepspeed_enabled", False):
        return 0
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return int(getattr(plugin, "zero_stage", 0) or 0)


def rank0_view(trainer) -> None:
    if zero_stage(trainer) != 3:
        return
    from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

    ctx = unwrap_model_for_generation(trainer.model_wrapped)
    ctx.__enter__()
    _held.append(ctx)


@contextlib.contextmanager
def local_only():
    prev = losses._LOCAL_ONLY
    losses._LOCAL_ONLY = True
    try:
        yield
    finally:
        losses._LOCAL_ONLY = prev
