"""The creative contract: fact phrases copied from the ad, the prompt that survives every ad, the
hold-out, the contrastive training rows and the slot contrast loss."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from hllm_creator.creative.copy import is_copy
from hllm_creator.creative.facts import compose, content_words, core_title, fact_phrases
from hllm_creator.creative.holdout import is_heldout
from hllm_creator.creative.prompts import CHAT_CLOSE, MAX_PROMPT2_TOKENS, PROMPT1, creative_prompts
from hllm_creator.creative.titles import clean_title


def _ad_words(item) -> set[str]:
    text = " ".join([item["title"], item["description"] or "", *list(item["selling_points"]),
                     *list(item["categories"])])
    return {w.lower() for w in re.findall(r"[A-Za-z0-9]+", text)}


def test_facts_and_titles_use_only_the_ads_words(bundled_dataset):
    items = bundled_dataset.items.sample(400, random_state=0).to_dict("records")
    n_with = 0
    for it in items:
        core = core_title(it["title"])
        assert 1 <= len(core.split()) <= 10 and len(core) <= 70
        facts = fact_phrases(it)
        n_with += bool(facts)
        src = _ad_words(it)
        title_cw = set(content_words(it["title"]))
        for f in facts:
            assert 2 <= len(f.split()) <= 7, f
            assert {w.lower() for w in re.findall(r"[A-Za-z0-9]+", f)} <= src, (f, it["title"])
            assert set(content_words(f)) - title_cw, f"{f!r} adds nothing to {it['title']!r}"
            t = compose(core, f)
            assert t.startswith(core) and not is_copy(t, it["title"])
    assert n_with > 0.8 * len(items)


def test_a_negated_sentence_gives_no_fact():
    ad = {"title": "Arctic Silver 5 Thermal Paste 3.5g", "selling_points": [],
          "description": "Will not separate, migrate or bleed. Fills gaps on computer heatsinks."}
    facts = fact_phrases(ad)
    assert not any("migrate" in f.lower() for f in facts)
    assert any("heatsinks" in f.lower() for f in facts)


def test_long_clauses_give_their_pieces_after_the_whole_clauses():
    ad = {"title": "Plastic Transfer Pipettes 3ml, Graduated, Pack of 100", "selling_points": [],
          "description": "Made of polyethylene, which has good resistance to acetone. The compound enhances "
                         "the pipette's performance and long-term stability."}
    facts = fact_phrases(ad)
    assert facts[0] == "Made of polyethylene"  # whole clauses first
    assert "good resistance to acetone" in facts and "long-term stability" in facts
    assert not any(f.lower().startswith(("which", "has", "the compound")) for f in facts)
    # an ad whose whole clauses fill the inventory keeps them: pieces only fill room
    full = {"title": "Gorilla Tape Black", "selling_points": ["Double thick adhesive", "Rugged shell",
                                                             "Indoor and outdoor use", "Weather resistant backing"],
            "description": "Made of cloth, which has good resistance to water."}
    assert fact_phrases(full) == ["Double thick adhesive", "Rugged shell", "Indoor and outdoor use",
                                  "Weather resistant backing"]


@pytest.mark.parametrize("description, kept, left_out", [
    # the negation is its clause's own: the clauses before it are facts
    ("PLA, or Polylactic Acid, is a material that does not require a heated bed.", "Polylactic Acid", "heated"),
    # a negation that reaches back over a list voids the sentence
    ("Waterproof carry case, spare charger: not included.", None, "carry case"),
    ("Waterproof carry case, spare charger: sold separately.", None, "carry case"),
    ("Sturdy steel frame, which is not waterproof.", "Sturdy steel frame", "waterproof"),
    # a safety warning is no selling point
    ("Contains chemicals known to cause cancer and birth defects or other reproductive harm.", None, "birth"),
    # a verb before its object is no feature
    ("Extra grip handle, which repeats the process fast.", "Extra grip handle", "repeats"),
    # adjectives coordinated inside one noun phrase are no list
    ("Turns concepts into a real and rewarding reality.", None, "rewarding"),
])
def test_negations_warnings_and_verbs_give_no_fact(description, kept, left_out):
    facts = fact_phrases({"title": "Acme Widget Pro 2000", "selling_points": [], "description": description})
    assert not any(left_out in f.lower() for f in facts), facts
    if kept:
        assert kept in facts, facts


def test_prompt_tail_survives_every_bundled_ad(bundled_dataset):
    from hllm_creator.llm.backbone import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    lens = []
    for it in bundled_dataset.items.to_dict("records"):
        p1, p2 = creative_prompts(it)
        assert p1 == PROMPT1 and p2.endswith(CHAT_CLOSE)
        lens.append(len(tok(p2, add_special_tokens=False)["input_ids"]))
    assert max(lens) <= MAX_PROMPT2_TOKENS, max(lens)
    with pytest.raises(ValueError, match="no title"):
        creative_prompts({"title": " "})


def test_model_prompts_are_the_creative_contract(bundled_dataset):
    from hllm_creator.creative.prompts import creative_prompts as model_prompts

    it = bundled_dataset.items.iloc[3].to_dict()
    assert model_prompts(it) == creative_prompts(it)
    p1, p2 = model_prompts(it, version="v1")  # model dirs trained with the first template
    assert p2.endswith(CHAT_CLOSE) and "Original title" in p2


def test_clean_title_and_same_title():
    assert clean_title('\n  "Title: Fast Glue for Hobbyists"\nmore') == "Fast Glue for Hobbyists"
    assert clean_title("1. **Strong tape**") == "Strong tape"
    assert clean_title("  \n ") == ""
    assert is_copy("Gorilla Tape, Black.", "gorilla  tape black")
    assert not is_copy("Gorilla Tape - Duct", "Gorilla Tape")
    # an inflection is no other title (seen: "Plastics Transfer Pipettes" beside "Plastic Transfer Pipettes")
    assert is_copy("Plastics Transfer Pipettes 3ml - Good resistance to acetone",
                      "Plastic Transfer Pipettes 3ml - Good resistance to acetone")
    assert not is_copy("Plastic Transfer Pipettes - Made of polyethylene", "Plastic Transfer Pipettes - Acetone")


def test_holdout_is_stable_and_near_its_share():
    ids = [str(i) for i in range(20000)]
    share = np.mean([is_heldout(u) for u in ids])
    assert 0.09 < share < 0.11
    assert [is_heldout(u) for u in ids[:50]] == [is_heldout(u) for u in ids[:50]]


def test_contrast_pairs_and_swap():
    from hllm_creator.train.data import contrast_pairs, creative_stream, swap_index

    rows = pd.DataFrame({"target_item_id": ["a", "a", "a", "b", "b", "c"],
                         "response": ["A1", "A2", "A1", "B1", "B1", "C1"]})
    pairs = contrast_pairs(rows)
    assert pairs and all(rows.at[i, "target_item_id"] == rows.at[j, "target_item_id"]
                         and rows.at[i, "response"] != rows.at[j, "response"] for i, j in pairs)
    assert not any(rows.at[i, "target_item_id"] == "b" for p in pairs for i in p)  # same response: no pair
    order = creative_stream(rows, 12, np.random.default_rng(0))
    assert len(order) == 12 and set(order) <= set(range(6))
    bundle = rows.iloc[[0, 1, 3, 5]].reset_index(drop=True)
    assert swap_index(bundle) == [1, 0, 2, 3]


def test_slot_contrast_loss_trains_the_slot():
    """The contrast term flows into the projector and falls when the slot decides the response."""
    import torch
    from helpers import tiny_model

    torch.manual_seed(0)
    m = tiny_model()
    p1 = [PROMPT1] * 4
    p2 = ["\nProduct: Glue\nFacts:\n1. fast set\n2. clear dry\n" + CHAT_CLOSE] * 4
    resp = ["Glue - Fast set", "Glue - Clear dry", "Glue - Fast set", "Glue - Clear dry"]
    b = m.creative_batch(p1, p2, resp)
    u = torch.randn(4, m.user_hidden_size)
    swap = torch.tensor([1, 0, 3, 2])
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(25):
        cre, con = m.creative_contrast_losses(u, b, swap, margin=2.0)
        (cre + con).backward()
        assert m.projector[0].weight.grad is not None and m.projector[0].weight.grad.abs().sum() > 0
        opt.step()
        opt.zero_grad()
        first = float(con) if first is None else first
    assert float(con) < first
    nll, cnt = m.response_nll(m.slot_embedding(u), b)
    nll_sw, _ = m.response_nll(m.slot_embedding(u[swap]), b)
    assert (nll_sw - nll).mean() > 0  # the own slot makes the own response likelier
    # no partner: no contrast term
    cre, con = m.creative_contrast_losses(u, b, torch.arange(4), margin=2.0)
    assert con is None and torch.isfinite(cre)


def test_slot_fact_loss_points_the_slot_at_the_chosen_fact():
    import torch
    from helpers import tiny_model

    from hllm_creator.train.data import fact_tensors

    torch.manual_seed(0)
    m = tiny_model()
    rows = pd.DataFrame({"facts": [["fast set", "clear dry", "metal bond"]] * 3 + [[]],
                         "fact_index": [0, 1, 2, None]})
    t = fact_tensors(m.tokenizers["creative"], rows)
    assert t["fact_ids"].shape[:2] == (4, 3) and t["fact_chosen"].tolist() == [0, 1, 2, -1]
    u = torch.randn(4, m.user_hidden_size)
    opt = torch.optim.Adam(m.projector.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = m.slot_fact_loss(u, t["fact_ids"], t["fact_mask"], t["fact_chosen"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    assert float(loss.detach()) < 0.5 * first
    with torch.no_grad():  # each user's slot is now nearest (in the LLM's word space) to its fact
        e = m.creative.get_input_embeddings()(t["fact_ids"][:3]).float()
        fe = (e * t["fact_mask"][:3, ..., None]).sum(2) / t["fact_mask"][:3].sum(2, keepdim=True)
        cos = torch.nn.functional.cosine_similarity(m.slot_embedding(u[:3])[:, None], fe, dim=-1)
    assert cos.argmax(1).tolist() == [0, 1, 2]
    assert m.slot_fact_loss(u, t["fact_ids"], t["fact_mask"], torch.full((4,), -1)) is None


def test_slot_fit_learns_a_choice_the_history_decides():
    """Users whose history is item 0 want fact 0, item 1 -> fact 1: the pre-fit finds it on held-out
    users, from the projector alone."""
    import types

    import torch
    from helpers import tiny_model

    from hllm_creator.train.slot_fit import slot_fit

    torch.manual_seed(0)
    m = tiny_model()
    item_emb = torch.randn(2, m.item_hidden_size) * 3
    n = 80
    rows = pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "facts": [["fast set", "clear dry"]] * n,
                         "fact_index": [i % 2 for i in range(n)]})
    td = types.SimpleNamespace(rows=rows, row_hist=[[i % 2] for i in range(n)])
    out = slot_fit(m, td, item_emb, steps=60, lr=1e-2, batch_size=16, eval_every=5)
    assert out["val_rows"] >= 4 and out["val_acc"] == 1.0 and out["val_chance"] == 0.5
    assert slot_fit(m, types.SimpleNamespace(rows=rows.drop(columns="facts"), row_hist=td.row_hist),
                    item_emb, steps=5, lr=1e-2) is None


def test_prompt_facts_reads_back_the_facts_every_prompt_lists(bundled_dataset):
    """The fact-copy head points at the facts the Creative LLM reads: parsed back from the framed prompt,
    in order, for every bundled ad (cut facts included); none for a prompt without a Facts block."""
    from hllm_creator.creative.facts import compositions
    from hllm_creator.creative.prompts import cut, prompt_facts

    for it in bundled_dataset.items.to_dict("records"):
        _, p2 = creative_prompts(it)
        # the facts the compositions use (those that fit beside the kept original); an ad with none: its list
        base, facts, _ = compositions(it, 4)
        want = [cut(f, 16) for f in (facts if base is not None else fact_phrases(it, 4))]
        assert prompt_facts(p2) == [" ".join(w.split()) for w in want], it["item_id"]
    assert prompt_facts("Original title: X" + CHAT_CLOSE) == []
    assert prompt_facts("\nProduct: X\nFacts:\n1. -\n" + CHAT_CLOSE) == []


def _copy_model():
    from helpers import tiny_model

    return tiny_model(fact_copy=True, fact_copy_init=3.0)


def test_fact_copy_bias_follows_the_slots_pointer():
    """The bias raises the pointed fact's tokens and lowers the others', leaves tokens every fact shares
    at 0, and is 0 for a uniform pointer or a single fact; off by default."""
    import torch

    from hllm_creator.model.collate import fact_batch

    m = _copy_model()
    tok = m.tokenizers["creative"]
    facts = [["fast set glue", "clear dry glue"], ["metal bond"]]
    fb = fact_batch(tok, facts)
    fe = m.fact_embeddings(fb.ids, fb.mask)
    slot = fe[:, 0] * 5.0  # both rows point at their fact 0
    bias = m.fact_copy_bias(slot, fb)
    ids = lambda s: set(tok(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    only0, only1, shared = ids(" fast set") - ids(" clear dry glue"), ids(" clear dry") - ids(" fast set glue"), \
        ids(" glue") & ids(" fast set glue") & ids(" clear dry glue")
    assert all(bias[0, v] > 0 for v in only0) and all(bias[0, v] < 0 for v in only1)
    assert all(abs(float(bias[0, v])) < 1e-6 for v in shared)
    assert float(bias[1].abs().max()) == 0.0  # one fact: nothing to choose
    p = m.fact_pointer(slot, fb)
    assert torch.allclose(p.sum(-1), torch.ones(2)) and p[1, 1] == 0 and p[0, 0] > p[0, 1]
    # swap the pointer: the signs swap
    bias2 = m.fact_copy_bias(fe[:, 1] * 5.0, fb)
    assert all(bias2[0, v] < 0 for v in only0) and all(bias2[0, v] > 0 for v in only1)
    from helpers import tiny_model

    assert tiny_model().fact_copy_bias(slot, fb) is None  # the paper's single slot by default


def test_fact_copy_makes_the_own_users_response_likelier_and_moves_greedy_titles():
    """With the head on, the response that features fact j is likelier when the slot points at j than
    when it points elsewhere (the NLL own < shuffled of the personalization step), and greedy
    decoding follows the slot (the slot swap)."""
    import torch

    m = _copy_model().eval()
    ad = {"title": "Gorilla Original Glue", "description": "Sets fast. Dries clear. Bonds metal.",
          "selling_points": ["Sets fast in minutes", "Dries clear", "Bonds metal and wood"]}
    p1, p2 = m.build_prompts(ad)
    from hllm_creator.creative.prompts import prompt_facts

    facts = prompt_facts(p2)
    assert len(facts) >= 2
    b = m.creative_batch([p1, p1], [p2, p2], [f"Gorilla Glue - {facts[0]}", f"Gorilla Glue - {facts[1]}"])
    assert b.facts is not None
    fe = m.fact_embeddings(b.facts.ids, b.facts.mask)
    own = torch.stack([fe[0, 0], fe[1, 1]]) * 5.0
    other = torch.stack([fe[0, 1], fe[1, 0]]) * 5.0
    with torch.no_grad():
        n_own, _ = m.response_nll(own, b)
        n_other, _ = m.response_nll(other, b)
    assert bool((n_other > n_own).all())
    m.fact_copy_scale.data.fill_(200.0)  # the bias dominates the random decoder's logits

    def first_token(slot_values):
        from hllm_creator.model.fact_copy import _AddBias

        bb = m.creative_batch([p1], [p2], padding_side="left")
        with torch.no_grad():
            bias = m.fact_copy_bias(slot_values, bb.facts)
            logits = m._slot_forward(bb, slot_values, labels=False).logits[:, -1]
        assert torch.equal(_AddBias(torch.zeros_like(bias))(None, logits), logits)
        return int(logits.argmax(-1))

    t0, t1 = first_token(fe[0:1, 0] * 5.0), first_token(fe[0:1, 1] * 5.0)
    copy0 = set(b.facts.copy_ids[0, 0][b.facts.copy_mask[0, 0]].tolist())
    copy1 = set(b.facts.copy_ids[0, 1][b.facts.copy_mask[0, 1]].tolist())
    assert t0 in copy0 - copy1 and t1 in copy1 - copy0
    # generate() applies the same bias (a logits processor): greedy titles start inside the fact each
    # user's slot points at, so two users whose slots point at different facts get different titles
    torch.manual_seed(0)
    u = torch.randn(64, m.user_hidden_size)
    with torch.no_grad():
        bb = m.creative_batch([p1] * 64, [p2] * 64, padding_side="left")
        picks = m.fact_pointer(m.slot_embedding(u), bb.facts).argmax(-1)
    a = int(torch.nonzero(picks == 0)[0])
    c = int(torch.nonzero(picks == 1)[0])
    outs = m.generate(u[[a, c]], [p1, p1], [p2, p2], do_sample=False, max_new_tokens=1)
    assert outs[0] != outs[1]
    assert outs[0].strip() and outs[0].strip() in facts[0] and outs[1].strip() in facts[1]
