"""Creative prompt templates: ``prompt1`` + [user slot] + ``prompt2`` (+ response in training).

The teacher (``hllm_creator.teacher.prompts.creative_prompts``) is the owner of the training
prompts once it exists; this module is the fallback and the default template of a model dir
(the template is saved into ``hllm_config.json`` so serving uses exactly what training used).
"""

from __future__ import annotations

PROMPT_VERSION = "creative-v1"
SYSTEM = ("You write short, catchy ad titles for one user. Use only facts stated in the ad; "
          "add few words.")
PROMPT1 = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nThis user's interests: "
PROMPT2 = ("\nAd title: {title}\nDescription: {description}\nSelling points: {selling_points}\n"
           "Rewrite the ad title for this user.<|im_end|>\n<|im_start|>assistant\n")
RESPONSE_END = "<|im_end|>"
DESC_CHARS = 300


def creative_prompts(ad: dict, *, desc_chars: int = DESC_CHARS) -> tuple[str, str]:
    """``(prompt1, prompt2)`` for an ad ``{title, description?, selling_points?}``."""
    if not isinstance(ad, dict) or not str(ad.get("title") or "").strip():
        raise ValueError(f"ad needs a non-empty 'title'; got {ad!r:.120}")
    sp = ad.get("selling_points") or []
    if isinstance(sp, str):
        sp = [sp]
    sp = [str(s) for s in list(sp)][:5]
    p1 = PROMPT1.format(system=SYSTEM)
    p2 = PROMPT2.format(title=str(ad["title"]).strip(),
                        description=str(ad.get("description") or "").strip()[:desc_chars],
                        selling_points="; ".join(sp))
    return p1, p2
