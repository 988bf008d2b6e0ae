"""Batched vs sequential generation with the Creative LLM (tokens/s), side by side in one run.

The same B (ad, user-embedding) prompts are decoded greedily with ``HLLMCreator.generate``:
- sequential: B calls of batch 1;
- batched: one call of batch B (left padding, one forward per step for all B sequences).
Both pairs are measured in float32 and, where the CPU/GPU has bf16, under bf16 autocast.
Tokens = generated tokens counted by re-tokenizing each output (+1 for the stop token when it
stopped early), identical prompts and settings for both.

    .venv/bin/python -m benchmarks.speed.batched_generation [--model MODEL_DIR] [--batch 16] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import time

from benchmarks._common import dataset, model, save


def count_tokens(tok, outs: list[str], max_new: int) -> int:
    n = 0
    for o in outs:
        k = len(tok(o, add_special_tokens=False)["input_ids"])
        n += min(k + 1, max_new) if k < max_new else max_new
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model dir (default: untrained demo architecture, SmolLM2 creative)")
    ap.add_argument("--data", help="dataset dir (default: bundled)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--float32-only", action="store_true", help="skip the bf16 autocast pair")
    a = ap.parse_args()

    import numpy as np
    import torch

    from hllm_creator.infer.generate import ad_of
    from hllm_creator.infer.match import default_ads

    ds = dataset(a.data)
    m, what = model(a.model)
    by = {r["item_id"]: r for r in ds.items.to_dict("records")}
    ads = default_ads(ds.items, ds.interactions, a.batch)
    p = [m.build_prompts({k: v for k, v in ad_of(by[i]).items() if k != "brand"}) for i in ads]
    p1, p2 = [x[0] for x in p], [x[1] for x in p]
    u = torch.from_numpy(np.random.default_rng(0).normal(size=(len(ads), m.user_hidden_size)).astype(np.float32))
    tok = m.tokenizers["creative"]
    from hllm_creator.train.trainer import bf16_supported

    precisions = ["float32"] + (["bf16"] if bf16_supported() and not a.float32_only else [])
    runs = {}
    for prec in precisions:
        kw = dict(do_sample=False, max_new_tokens=a.max_new_tokens, autocast_bf16=prec == "bf16")
        m.generate(u[:1], p1[:1], p2[:1], **{**kw, "max_new_tokens": 2})  # warm-up
        t0 = time.perf_counter()
        seq = []
        for i in range(len(ads)):
            seq += m.generate(u[i:i + 1], p1[i:i + 1], p2[i:i + 1], batch_size=1, **kw)
        seq_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        bat = m.generate(u, p1, p2, batch_size=len(ads), **kw)
        bat_s = time.perf_counter() - t0
        seq_tok, bat_tok = count_tokens(tok, seq, a.max_new_tokens), count_tokens(tok, bat, a.max_new_tokens)
        same = sum(x == y for x, y in zip(seq, bat))
        runs[prec] = {
            "sequential": {"seconds": round(seq_s, 2), "tokens": seq_tok, "tokens_per_s": round(seq_tok / seq_s, 2)},
            "batched": {"batch": len(ads), "seconds": round(bat_s, 2), "tokens": bat_tok,
                        "tokens_per_s": round(bat_tok / bat_s, 2)},
            "speedup_tokens_per_s": round((bat_tok / bat_s) / (seq_tok / seq_s), 2),
            "identical_outputs": f"{same}/{len(ads)} (left padding can flip near-ties in greedy decoding)",
            "sample_output": bat[0][:200],
        }
        print(prec, runs[prec]["speedup_tokens_per_s"], flush=True)
    best = max(runs, key=lambda k: runs[k]["speedup_tokens_per_s"])
    save("batched_generation", {
        "model": what, "prompts": len(ads), "max_new_tokens": a.max_new_tokens, "decoding": "greedy",
        "prompt_tokens_mean": round(float(np.mean([len(tok(x + y)["input_ids"]) for x, y in zip(p1, p2)])), 1),
        **runs, "target": ">= 3x (batched vs sequential, same precision)",
        "met": {k: v["speedup_tokens_per_s"] >= 3 for k, v in runs.items()}, "best": best,
    })


if __name__ == "__main__":
    main()
