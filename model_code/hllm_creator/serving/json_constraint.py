"""The JSON constraint of the LLM server: lm-format-enforcer's token-level state machine for a row
whose request asks for JSON (``response_format``), a cap on whitespace runs, and the check of the
finished reply against the schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hllm_creator.serving._openai_protocol import OpenAIError


def build_enforcer_tokenizer_data(tokenizer):
    """lm-format-enforcer's token table for an HF tokenizer, plus the ids of whitespace-only tokens.

    Same logic as ``lmformatenforcer.integrations.transformers.build_token_enforcer_tokenizer_data``;
    that module cannot be imported with transformers 5 (it imports ``transformers.tokenization_utils``,
    which no longer exists), so the 10 lines are here. About 9 s for a 49k vocabulary.
    """
    from lmformatenforcer import TokenEnforcerTokenizerData

    vocab_size = len(tokenizer)
    token_0 = tokenizer.encode("0", add_special_tokens=False)[-1]
    special = set(tokenizer.all_special_ids)
    regular, ws_only = [], []
    for i in range(vocab_size):
        if i in special:
            continue
        after_0 = tokenizer.decode([token_0, i])[1:]
        alone = tokenizer.decode([i])
        regular.append((i, after_0, len(after_0) > len(alone)))
        if alone and not alone.strip():
            ws_only.append((i, len(alone)))

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens).rstrip("\ufffd")

    return TokenEnforcerTokenizerData(regular, decode, tokenizer.eos_token_id, False, vocab_size), ws_only


@dataclass
class JsonConstraint:
    """One row's JSON constraint: the lm-format-enforcer state machine + a whitespace cap.

    lm-format-enforcer's own ``max_consecutive_whitespaces`` is not applied in every parser state (a
    random or small model still emits endless tab/CR runs between tokens), so once the generated text
    would end in more than ``max_ws`` whitespace characters, whitespace-only tokens that would
    extend the run are masked as well.
    """

    enforcer: Any
    ws_only: list[tuple[int, int]]  # (token id, length of its whitespace text)
    max_ws: int

    def whitespace_ban(self, tail_ws: int):
        """Token ids that would make the whitespace run longer than ``max_ws``."""
        import torch

        return torch.as_tensor([i for i, n in self.ws_only if tail_ws + n > self.max_ws], dtype=torch.long)

    def mask(self, scores, gen: list[int], tokenizer):
        """Additive mask over ``scores`` (0 allowed, -inf not) after the tokens ``gen``: the parser's
        allowed tokens, less whitespace that would run past ``max_ws`` (unless nothing else is left)."""
        import torch

        allowed = self.enforcer.get_allowed_tokens(gen)
        allowed = getattr(allowed, "allowed_tokens", allowed)
        mask = torch.full_like(scores, float("-inf"))
        mask[torch.as_tensor(list(allowed), dtype=torch.long)] = 0.0
        tail = tokenizer.decode(gen[-16:]) if gen else ""
        ban = self.whitespace_ban(len(tail) - len(tail.rstrip()))
        if len(ban):
            capped = mask.clone()
            capped[ban] = float("-inf")
            if torch.isfinite(capped).any():
                mask = capped
        return mask


def json_constraint(schema: dict | None, tokdata, ws_only: list[tuple[int, int]], max_ws: int) -> JsonConstraint:
    """A row's constraint for ``schema`` (None: any JSON object) over the token table ``tokdata``."""
    from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser, TokenEnforcer

    # small models tend to loop on whitespace inside JSON: cap consecutive whitespace
    conf = CharacterLevelParserConfig(max_consecutive_whitespaces=max_ws)
    try:
        parser = JsonSchemaParser(schema, config=conf)  # None -> any JSON object
    except Exception as e:  # noqa: BLE001 - whatever the parser rejects is a 400 for this request
        raise OpenAIError(f"this JSON schema is not supported by the constrained decoder: {e}",
                          param="response_format", code="unsupported_schema") from None
    return JsonConstraint(TokenEnforcer(tokdata, parser), ws_only, max_ws)


def json_problem(text: str, schema: dict | None) -> str | None:
    """Why ``text`` is not a JSON document matching ``schema`` (None when it is)."""
    import jsonschema

    try:
        obj = json.loads(text)
    except ValueError as e:
        return f"not JSON: {e}"
    if schema is not None:
        try:
            jsonschema.validate(obj, schema)
        except jsonschema.ValidationError as e:
            return f"schema violation: {e.message}"
    return None
