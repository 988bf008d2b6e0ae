"""The ``creative`` KServe model: user history + ad -> personalized title (the Creative LLM).

Per instance: history -> item embeddings (cache; unknown titles encoded) -> User LLM -> nearest
cluster (metric of ``cluster_meta.json``) -> the cluster's slot vector (``condition_on="cluster"``,
default) or the user's own embedding (``"user"``) in the Creative LLM's user slot ->
``HLLMCreator.generate`` -> ``creative.gate.check_grounding``. A title that fails the check is
replaced by the ad's original title, with the reasons. Concurrent requests with the same generation
settings are combined into one ``generate`` call (micro-batching, window ``--batch-wait-ms``).
"""

from __future__ import annotations

import logging

import numpy as np

from hllm_creator.creative.copy import is_copy
from hllm_creator.infer.generate import clean_title, ground
from hllm_creator.infer.harm import title_content_gain, title_gain
from hllm_creator.serving import metrics as M
from hllm_creator.serving.base import BatchedModel, history_reasons
from hllm_creator.serving.schemas import CreativeInstance

log = logging.getLogger(__name__)


class Creative(BatchedModel):
    instance_cls = CreativeInstance
    default_wait_ms = 20.0
    required_artifacts = ("clusters",)

    def group_key(self, inst: CreativeInstance):
        # one generate call shares its sampling settings
        return (inst.do_sample, float(inst.temperature) if inst.do_sample else None,
                float(inst.top_p) if inst.do_sample else None, inst.max_new_tokens,
                inst.seed if inst.do_sample else None)

    def warmup(self) -> None:
        self.run_batch([CreativeInstance(user_history=["warm up item"], ad={"title": "warm up"},
                                         max_new_tokens=2)])

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens of the decoded outputs, by the Creative LLM's tokenizer (special tokens excluded)."""
        tok = (getattr(self.assets.model, "tokenizers", None) or {}).get("creative")
        if tok is None:
            return sum(len(t.split()) for t in texts)
        return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts if t)

    def run_batch(self, insts: list[CreativeInstance]) -> list[dict]:
        import torch

        a = self.assets
        user_emb, infos, audience = a.user_embeddings([i.user_history for i in insts], content=True)
        cids = a.assign(user_emb)
        cond = a.conditioning(user_emb, cids, [i.condition_on for i in insts])
        ok = [r for r in range(len(insts)) if np.isfinite(cond[r]).all()]
        ads = [{"title": i.ad.title, "description": i.ad.description, "selling_points": list(i.ad.selling_points),
                "brand": i.ad.brand} for i in insts]
        raw: dict[int, str] = {}
        if ok:
            first = insts[ok[0]]
            prompts = [a.model.build_prompts({k: ads[r][k] for k in ("title", "description", "selling_points")})
                       for r in ok]
            with torch.inference_mode():
                outs = a.model.generate(torch.from_numpy(np.ascontiguousarray(cond[ok])),
                                        [p[0] for p in prompts], [p[1] for p in prompts],
                                        do_sample=first.do_sample, temperature=float(first.temperature),
                                        top_p=float(first.top_p), max_new_tokens=first.max_new_tokens,
                                        seed=first.seed, batch_size=max(1, len(ok)))
            raw = dict(zip(ok, outs))
            M.GENERATED_TOKENS.labels(model=self.name).inc(self.count_tokens(list(outs)))
        results = []
        for r, (inst, info) in enumerate(zip(insts, infos)):
            cid = int(cids[r])
            original = inst.ad.title
            reasons = history_reasons(info, cid, a.centroids is not None)
            res = {"title": original, "original_title": original, "cluster_id": cid if cid >= 0 else None,
                   "grounded": False, "personalized": False, "reasons": reasons, "history_used": info.used}
            if r not in raw:
                self.fallback("cold_start")
                res["reasons"] = reasons + ["original title"]
                results.append(res)
                continue
            cand = clean_title(raw[r])
            good, why = ground(cand, ads[r])
            res["candidate"] = cand
            check = good and inst.do_no_harm and not is_copy(cand, original) and user_emb is not None
            gain = title_gain(a.model, user_emb[r], ads[r], cand) if check else None
            cgain = title_content_gain(a.model, audience[r], ads[r], cand) \
                if check and np.isfinite(audience[r]).all() else None
            if gain is not None:
                res["harm_gain"] = gain
            if cgain is not None:
                res["content_gain"] = cgain
            harm = ([f"do no harm: the predictor rates the personalized title {gain:+.3f} log-odds against the "
                     "original for this user"] if gain is not None and gain < 0 else []) + \
                ([f"do no harm: the personalized title is {cgain:+.4f} cosine from this user's clicked items "
                  "against the original"] if cgain is not None and cgain < 0 else [])
            if harm:
                self.fallback("do_no_harm")
                res["reasons"] = reasons + harm + ["original title"]
            elif good and not is_copy(cand, original):
                res.update(title=cand, grounded=True, personalized=True)
            elif good:  # passed the gate but is the original title: not a personalized title
                self.fallback("not_grounded")
                res["reasons"] = reasons + ["the generation is the original title"]
            else:
                self.fallback("not_grounded")
                res["reasons"] = reasons + ["generated title failed the grounding check: original title",
                                            *why]
            results.append(res)
        return results
