"""The Creative LLM's prompt: ``prompt1`` + [user slot] + ``prompt2`` (+ response in training).

One template for training and inference. The ad part is the teacher's versioned template
(``hllm_creator.teacher.prompts.creative_prompts``: files under ``teacher/prompts/``, untrusted text
sanitized); this module only frames it as a ChatML turn (SmolLM2 / Qwen instruct format), so an
instruct backbone reads it as an instruction even before fine-tuning. ``frame`` is applied to the
teacher's parquet prompts at training time and to ``build_prompts`` at inference, so the two never
differ. The frame is saved into ``hllm_config.json``.
"""

from __future__ import annotations

from typing import Any

PROMPT_VERSION = "v1"  # teacher template version (teacher/prompts/creative_v1.txt)
SYSTEM = ("You write short, catchy ad titles for one user. Use only facts stated in the ad; "
          "add few words.")
CHAT_OPEN = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
CHAT_CLOSE = "<|im_end|>\n<|im_start|>assistant\n"
RESPONSE_END = "<|im_end|>"
DESC_CHARS = 300
# recorded in hllm_config.json
PROMPT1 = CHAT_OPEN + "{teacher prompt1}"
PROMPT2 = "{teacher prompt2}" + CHAT_CLOSE


def frame(prompt1: str, prompt2: str) -> tuple[str, str]:
    """Wrap the teacher's halves in the chat turn (idempotent: framed prompts are left alone)."""
    if not prompt1.startswith("<|im_start|>"):
        prompt1 = CHAT_OPEN.format(system=SYSTEM) + prompt1
    if not prompt2.endswith(CHAT_CLOSE):
        prompt2 = prompt2.rstrip() + CHAT_CLOSE
    return prompt1, prompt2


def creative_prompts(ad: Any, *, version: str = PROMPT_VERSION, desc_chars: int = DESC_CHARS) -> tuple[str, str]:
    """``(prompt1, prompt2)`` for an ad ``{title, description?, selling_points?}`` (dict, Ad or items row)."""
    from hllm_creator.teacher.prompts import PromptError
    from hllm_creator.teacher.prompts import creative_prompts as ad_prompts

    try:
        return frame(*ad_prompts(ad, version, desc_chars))
    except PromptError as e:
        raise ValueError(f"{e}; got {ad!r:.120}") from None
