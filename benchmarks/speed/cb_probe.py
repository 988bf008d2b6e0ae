"""Is transformers' continuous batching (``model.generate_batch`` / ContinuousBatchingManager) faster on
this CPU than the LLM server's own engine? Same model (SmolLM2-135M-Instruct, bf16 where the CPU has
it), same 16 chat prompts, greedy, at most ``--max-new`` tokens; each path warmed up once first.

  (a) transformers ``model.generate_batch`` (paged attention, its own scheduler)
  (b) our engine, static: one batch run to its longest row (``LLMEngine.generate_batch``)
  (c) our engine, token-level: the same rows through ``LLMEngine.step`` (rows leave when done)
  (d) one left-padded ``model.generate`` (how today's server ran a batch, without its per-row processor)

Writes ``benchmarks/results/cb_probe.json``. Run under ``nice`` on a shared machine; compare the
figures of one run side by side only.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks._common import RESULTS

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROMPTS = [f"Write a catchy ad title for {p}." for p in (
    "green tea with zero sugar", "a waterproof hiking boot", "a cordless drill", "noise-cancelling headphones",
    "a cast iron skillet", "organic dog food", "a standing desk", "a travel backpack", "a smart watch",
    "running shoes", "a coffee grinder", "a yoga mat", "an electric toothbrush", "a desk lamp",
    "a kids' bicycle", "a camping tent")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-new", type=int, default=32)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "cb_probe.json"))
    args = ap.parse_args()
    import torch
    from transformers import GenerationConfig

    from hllm_creator.llm.backbone import load_causal_lm
    from hllm_creator.serving._openai_protocol import GenParams, Limits
    from hllm_creator.serving.llm_engine import GenRow, LLMEngine, resolve_dtype

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[resolve_dtype("auto")]
    bb = load_causal_lm("smollm2-135m-instruct", dtype=dtype)
    tok = bb.tokenizer
    prompts = PROMPTS[: args.n]
    ids = [tok(tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                       tokenize=False), add_special_tokens=False)["input_ids"] for p in prompts]
    eng = LLMEngine(bb, Limits())
    res: dict = {"load_avg_before": os.getloadavg(), "dtype": str(dtype), "prompts": len(ids),
                 "max_new_tokens": args.max_new, "torch_threads": torch.get_num_threads()}

    def ours(static: bool):
        rows = [GenRow(list(i), GenParams(max_tokens=args.max_new, temperature=0.0)) for i in ids]
        t0 = time.perf_counter()
        with torch.inference_mode():
            return _ours(static, rows, t0)

    def _ours(static, rows, t0):
        if static:
            outs = eng.generate_batch(rows)
        else:
            done, pending = {}, rows
            while pending or eng.active():
                for r, o in eng.step(pending):
                    done[id(r)] = o
                pending = []
            outs = [done[id(r)] for r in rows]
        dt = time.perf_counter() - t0
        return dt, sum(o.completion_tokens for o in outs), [o.text for o in outs]

    def theirs():
        gc = GenerationConfig(max_new_tokens=args.max_new, do_sample=False, eos_token_id=eng.eos_ids,
                              pad_token_id=eng.pad_id)
        t0 = time.perf_counter()
        out = bb.model.generate_batch(inputs=[list(i) for i in ids], generation_config=gc, progress_bar=False)
        dt = time.perf_counter() - t0
        toks = sum(len(o.generated_tokens) for o in out.values())
        return dt, toks

    def hf_generate():  # today's server: one left-padded model.generate (without its per-row processor)
        w = max(len(i) for i in ids)
        inp = torch.full((len(ids), w), eng.pad_id, dtype=torch.long)
        att = torch.zeros((len(ids), w), dtype=torch.long)
        for k, i in enumerate(ids):
            inp[k, w - len(i):] = torch.tensor(i)
            att[k, w - len(i):] = 1
        gc = GenerationConfig(max_new_tokens=args.max_new, do_sample=False, eos_token_id=eng.eos_ids,
                              pad_token_id=eng.pad_id)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = bb.model.generate(input_ids=inp, attention_mask=att, generation_config=gc)
        dt = time.perf_counter() - t0
        gen = out[:, w:]
        n = 0
        for row in gen.tolist():  # tokens up to and including the first eos
            k = next((j for j, t in enumerate(row) if t in eng.eos_ids), len(row) - 1)
            n += k + 1
        return dt, n, []

    ours(True)  # warm-up
    for rnd in range(args.rounds):  # alternating, so a change of machine load hits both paths
        for name, fn in (("ours_static", lambda: ours(True)), ("ours_token_level", lambda: ours(False)),
                         ("hf_generate_left_padded", hf_generate)):
            dt, n, texts = fn()
            res.setdefault(name, []).append({"seconds": round(dt, 2), "tokens": n, "tokens_per_s": round(n / dt, 1),
                                             "load_avg": os.getloadavg()[0]})
            if texts:
                res[name + "_first_text"] = texts[0]
        try:  # its own threads run outside inference_mode: call it under no_grad only
            with torch.no_grad():
                if rnd == 0:
                    theirs()  # warm-up
                dt, n = theirs()
            res.setdefault("transformers_generate_batch", []).append(
                {"seconds": round(dt, 2), "tokens": n, "tokens_per_s": round(n / dt, 1),
                 "load_avg": os.getloadavg()[0]})
        except Exception as e:  # noqa: BLE001  (record why, do not hide it)
            res["transformers_generate_batch_error"] = f"{type(e).__name__}: {e}"[:500]
    res["load_avg_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
