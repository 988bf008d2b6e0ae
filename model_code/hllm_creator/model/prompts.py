"""The Creative LLM's prompt as the model records it: a thin view of ``hllm_creator.creative.prompts``
(the one template shared by teacher, training, generation and serving).

``creative_prompts(ad)`` gives ``(prompt1, prompt2)`` already framed as a ChatML turn; ``frame``
wraps halves that come without the frame (reference-schema parquets, ``v1`` model dirs). The
frame is saved into ``hllm_config.json``.
"""

from __future__ import annotations

from typing import Any

from hllm_creator.creative.prompts import (CHAT_CLOSE, CHAT_OPEN, PROMPT1, RESPONSE_END, SYSTEM,  # noqa: F401
                                           VERSION)

PROMPT_VERSION = VERSION
PROMPT2 = "{ad: product core, numbered facts, original title}" + CHAT_CLOSE
DESC_CHARS = 300  # v1 only


def frame(prompt1: str, prompt2: str) -> tuple[str, str]:
    """Wrap the halves in the chat turn (idempotent: framed prompts are left alone)."""
    if not prompt1.startswith("<|im_start|>"):
        prompt1 = CHAT_OPEN.format(system=SYSTEM) + prompt1
    if not prompt2.endswith(CHAT_CLOSE):
        prompt2 = prompt2.rstrip() + CHAT_CLOSE
    return prompt1, prompt2


def creative_prompts(ad: Any, *, version: str = PROMPT_VERSION, desc_chars: int = DESC_CHARS) -> tuple[str, str]:
    """``(prompt1, prompt2)`` for an ad ``{title, description?, selling_points?}`` (dict, Ad or items row).
    ``version="v1"`` keeps the first template for model dirs trained with it."""
    if version == "v1":
        from hllm_creator.teacher.prompts import PromptError
        from hllm_creator.teacher.prompts import creative_prompts as ad_prompts

        try:
            return frame(*ad_prompts(ad, "v1", desc_chars))
        except PromptError as e:
            raise ValueError(f"{e}; got {ad!r:.120}") from None
    from hllm_creator.creative.prompts import creative_prompts as v2

    return v2(ad)
