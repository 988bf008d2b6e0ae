"""The GPU check: what to run in the few minutes a GPU is lent (< 8 min on one GPU).

Prints ONE JSON line on stdout (progress goes to stderr):
- ``train``: SmolLM2-135M causal-LM training steps under DeepSpeed ZeRO-3 + bf16 + flash-attention 2
  (when importable; sdpa otherwise): tokens/s, MFU (6 x params x tokens/s over the GPU's dense bf16
  peak), peak memory; then ``hllm_train``: the project's own ``run_train`` for a few steps under
  ZeRO-3 on this GPU (the path the gpu-multinode preset takes; steps/s, whether it finished);
- ``generate``: batched greedy generation tokens/s (one call of B prompts vs B calls of 1);
- ``kmeans``: faiss-gpu vs faiss-cpu k-means on 1M x 256 (K=256, 10 iterations);
- ``embed``: user embeddings/s of a tiny-scale HLLMCreator on the GPU (feeds embed_scaling.py).
Each part has a time budget and records ``skipped: <reason>`` instead of failing the whole check.

Without a CUDA GPU it says so on stderr, runs the CPU-side checks (the same functions at tiny
scale on CPU, so the script itself is tested here), prints the JSON line with ``"gpu": false`` and
exits 0 (``--require-gpu``: exit 3 instead).

    .venv/bin/python -m benchmarks.gpu.gpu_check [--require-gpu] [--budget-s 450] [--out benchmarks/results/gpu_check.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from benchmarks._common import ROOT
from tests.helpers import small_dataset, tiny_model

# dense bf16 peak FLOP/s by device name (vendor data sheets, no sparsity)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def say(*a) -> None:
    print("[gpu_check]", *a, file=sys.stderr, flush=True)


def peak_flops(name: str) -> float | None:
    for k, v in PEAK_BF16.items():
        if k in name:
            return v
    return None


def _timed(name: str, fn, budget_s: float, results: dict, **kw) -> None:
    """Run one part; record its result, or why it was skipped/failed; never raise."""
    t0 = time.time()
    try:
        if budget_s <= 5:
            results[name] = {"skipped": "time budget spent"}
            return
        out = fn(budget_s=budget_s, **kw)
        out["seconds"] = round(time.time() - t0, 1)
        results[name] = out
    except ImportError as e:
        results[name] = {"skipped": f"missing package: {e}"}
    except Exception as e:  # noqa: BLE001 - one part failing must not hide the others' figures
        results[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}", "seconds": round(time.time() - t0, 1)}
    say(name, json.dumps(results[name])[:300])


# ----------------------------------------------------------------------------- parts
def part_train(*, device: str, budget_s: float, backbone: str, seq: int, batch: int, steps: int) -> dict:
    """Causal-LM training steps of a backbone: ZeRO-3 + bf16 (+ flash-attn 2) on GPU; plain AdamW on CPU."""
    import torch

    from hllm_creator.llm.backbone import best_attn_implementation, load_causal_lm

    attn = best_attn_implementation() if device == "cuda" else "sdpa"
    lb = load_causal_lm(backbone, attn_implementation=attn)
    model = lb.model
    n_params = sum(p.numel() for p in model.parameters())
    engine, zero = model, None
    if device == "cuda":
        import deepspeed

        if not torch.distributed.is_initialized():
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29533")
            os.environ.setdefault("RANK", "0")
            os.environ.setdefault("LOCAL_RANK", "0")
            os.environ.setdefault("WORLD_SIZE", "1")
            deepspeed.init_distributed(dist_backend="nccl")
        cfg = json.loads((ROOT / "configs/deepspeed/zero3.json").read_text())
        cfg.update({"train_micro_batch_size_per_gpu": batch, "gradient_accumulation_steps": 1,
                    "train_batch_size": batch, "gradient_clipping": 1.0, "bf16": {"enabled": True},
                    "fp16": {"enabled": False}})
        cfg = json.loads(json.dumps(cfg).replace('"auto"', "null"))
        cfg = {k: v for k, v in cfg.items() if v is not None}
        cfg["zero_optimization"] = {k: v for k, v in cfg["zero_optimization"].items() if v is not None}
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=cfg)
        zero = engine.zero_optimization_stage()
        torch.cuda.reset_peak_memory_stats()
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq), generator=g).to(device)
    t_first, done, losses = None, 0, []
    t0 = time.time()
    for i in range(steps):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cpu"):
            out = engine(input_ids=ids, labels=ids)
        if device == "cuda":
            engine.backward(out.loss)
            engine.step()
            torch.cuda.synchronize()
        else:
            out.loss.backward()
            opt.step()
            opt.zero_grad()
        losses.append(float(out.loss))
        done += 1
        if i == 0:
            t_first = time.time()  # step 1 = warm-up (kernels, allocator); timed from step 2
        if time.time() - t0 > budget_s:
            break
    timed_steps = max(done - 1, 1)
    dt = max(time.time() - (t_first or t0), 1e-9)
    tok_s = timed_steps * batch * seq / dt
    res = {"backbone": lb.name, "params": n_params, "attn": attn, "zero_stage": zero, "bf16": True,
           "batch": batch, "seq": seq, "steps": done, "tokens_per_s": round(tok_s, 1),
           "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4)}
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        peak = peak_flops(name)
        res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        res["mfu"] = round(6 * n_params * tok_s / peak, 4) if peak else None
        res["mfu_note"] = "6 x params x tokens/s / dense bf16 peak; attention FLOPs not counted"
    return res


def part_hllm_train(*, device: str, budget_s: float, preset: str, steps: int) -> dict:
    """The project's run_train for a few steps (ZeRO-3 on GPU via torchrun, 1 process)."""
    import subprocess
    import tempfile

    from hllm_creator.data.prepare import prepare_bundled
    from hllm_creator.train.config import build_config

    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    full = prepare_bundled(tmp / "full")
    ds = small_dataset(tmp / "ds", n_users=400, source=full.path)
    over = dict(data=str(ds.path), out=str(tmp / "model"), max_steps=steps, eval_users=100, head_steps=0,
                register_model=False, save_steps=10_000)
    if device == "cuda":
        over.update(deepspeed=str(ROOT / "configs/deepspeed/zero3.json"), bf16="on")
    else:
        over.update(bf16="off", threads=2)
    cfg = build_config(preset, **over)
    (tmp / "cfg.json").write_text(cfg.model_dump_json())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "model_code"), str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")]),
           "HLLM_WORKDIR": str(tmp / ".hllm"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", "29534",
           "-m", "hllm_creator.train.launch", "--config", str(tmp / "cfg.json")]
    t0 = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=budget_s)
    wall = time.time() - t0
    if p.returncode != 0:
        return {"ok": False, "preset": preset, "exit": p.returncode, "tail": (p.stdout + p.stderr)[-800:]}
    summary = json.loads((tmp / "model" / "train_summary.json").read_text())
    ev = json.loads((tmp / "model" / "eval.json").read_text())
    return {"ok": True, "preset": preset, "zero3": device == "cuda", "steps": summary["steps"],
            "train_seconds": round(summary["train_seconds"], 1), "wall_s": round(wall, 1),
            "steps_per_s": round(summary["steps"] / max(summary["train_seconds"], 1e-9), 3),
            "eval_model_auc": ev["model"]["auc"]}


def part_generate(*, device: str, budget_s: float, backbone: str, batch: int, new_tokens: int) -> dict:
    import torch

    from hllm_creator.llm.backbone import load_causal_lm

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    lb = load_causal_lm(backbone, dtype=dtype)
    model, tok = lb.model.to(device).eval(), lb.tokenizer
    tok.padding_side = "left"
    prompts = [f"Write a short ad title for product number {i}, a {w} for the lab:"
               for i, w in zip(range(batch), ["thermometer", "pipette", "scale", "microscope"] * batch)]

    def gen(ps):
        enc = tok(ps, return_tensors="pt", padding=True).to(device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
        if device == "cuda":
            torch.cuda.synchronize()
        return out.shape[1] - enc["input_ids"].shape[1]

    gen(prompts[:2])  # warm-up
    t0 = time.time()
    n = gen(prompts)
    batched = batch * n / (time.time() - t0)
    seq_n = min(4, batch)
    t0 = time.time()
    for p in prompts[:seq_n]:
        gen([p])
    one = seq_n * new_tokens / (time.time() - t0)
    return {"backbone": lb.name, "dtype": str(dtype), "batch": batch, "new_tokens": new_tokens,
            "batched_tokens_per_s": round(batched, 1), "one_at_a_time_tokens_per_s": round(one, 1),
            "speedup": round(batched / one, 2)}


def part_kmeans(*, device: str, budget_s: float, n: int, d: int, k: int, niter: int) -> dict:
    import faiss
    import numpy as np

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(k, d)).astype(np.float32) * 3
    x = (centres[rng.integers(0, k, n)] + rng.normal(size=(n, d)).astype(np.float32))
    res = {"n": n, "d": d, "k": k, "niter": niter}
    for name, gpu in (("cpu", False), ("gpu", True)):
        if gpu and (device != "cuda" or not hasattr(faiss, "StandardGpuResources")):
            res["gpu"] = {"skipped": "faiss-gpu not available" if device == "cuda" else "no GPU"}
            continue
        t0 = time.time()
        km = faiss.Kmeans(d, k, niter=niter, seed=1, gpu=gpu, verbose=False)
        km.train(x)
        _, assign = km.index.search(x, 1)
        res[name] = {"seconds": round(time.time() - t0, 2), "objective": float(km.obj[-1]),
                     "clusters_used": int(len(np.unique(assign)))}
    if "seconds" in res.get("gpu", {}):
        res["gpu_speedup"] = round(res["cpu"]["seconds"] / res["gpu"]["seconds"], 2)
    return res


def part_embed(*, device: str, budget_s: float, users: int) -> dict:
    import torch


    m = tiny_model().to(device).eval()
    g = torch.Generator().manual_seed(0)
    hist = [torch.randn(int(torch.randint(5, 50, (1,), generator=g)), m.item_hidden_size, generator=g).to(device)
            for _ in range(users)]
    m.encode_users(hist[:8])
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    e = m.encode_users(hist, batch_size=256)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.time() - t0
    return {"model": "tiny-llama (hidden 64, 2 layers): throughput of the embed path, not of a real backbone",
            "users": users, "users_per_s": round(users / dt, 1), "finite": bool(torch.isfinite(e).all())}


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="GPU check: training, generation, k-means, embed (< 8 min).")
    ap.add_argument("--require-gpu", action="store_true", help="exit 3 without a CUDA GPU")
    ap.add_argument("--budget-s", type=float, default=450.0, help="total time budget (default 7.5 min)")
    ap.add_argument("--backbone", default="smollm2-135m-instruct")
    ap.add_argument("--out", default=None, help="also write the JSON here (e.g. benchmarks/results/gpu_check.json)")
    a = ap.parse_args(argv)
    t_start = time.time()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    res: dict = {"benchmark": "gpu_check", "gpu": gpu, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "host": platform.node(), "torch": torch.__version__}
    if gpu:
        res["device"] = torch.cuda.get_device_name(0)
        res["gpu_mem_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        try:
            import flash_attn  # noqa: F401

            res["flash_attn"] = True
        except ImportError:
            res["flash_attn"] = False
    else:
        say("no CUDA GPU on this machine: running the CPU-side checks only (tiny scale); "
            "the GPU figures need a machine with a GPU")
        if a.require_gpu:
            print(json.dumps({**res, "error": "no CUDA GPU"}), flush=True)
            return 3
    left = lambda: a.budget_s - (time.time() - t_start)  # noqa: E731
    parts = res.setdefault("parts", {})
    if gpu:  # budgets: train 120 s, hllm_train 150 s, generate 60 s, kmeans 60 s, embed 20 s
        _timed("train", part_train, min(120, left()), parts, device=device, backbone=a.backbone, seq=1024, batch=16,
               steps=30)
        _timed("hllm_train", part_hllm_train, min(150, left() - 140), parts, device=device, preset="gpu", steps=20)
        _timed("generate", part_generate, min(60, left()), parts, device=device, backbone=a.backbone, batch=64,
               new_tokens=64)
        _timed("kmeans", part_kmeans, min(90, left()), parts, device=device, n=1_000_000, d=256, k=256, niter=10)
        _timed("embed", part_embed, min(20, left()), parts, device=device, users=4096)
    else:
        _timed("train", part_train, min(60, left()), parts, device=device, backbone="tiny-llama", seq=64, batch=2,
               steps=3)
        _timed("hllm_train", part_hllm_train, min(150, left()), parts, device=device, preset="tiny", steps=2)
        _timed("generate", part_generate, min(30, left()), parts, device=device, backbone="tiny-llama", batch=4,
               new_tokens=4)
        _timed("kmeans", part_kmeans, min(30, left()), parts, device=device, n=20_000, d=256, k=16, niter=5)
        _timed("embed", part_embed, min(20, left()), parts, device=device, users=64)
    res["seconds"] = round(time.time() - t_start, 1)
    res["ok"] = all("error" not in p for p in parts.values())
    line = json.dumps(res, separators=(",", ":"))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
