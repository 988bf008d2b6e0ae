"""HLLMCreator on tiny-llama: shapes, masks, the slot, padding, save/load, losses, gradients."""

from __future__ import annotations

import pytest
import torch

from hllm_creator.model.collate import IGNORE
from hllm_creator.model.losses import cls_loss, info_nce

AD = {"title": "Cordless Drill 18V", "description": "Compact drill with two batteries.",
      "selling_points": ["18V", "2 batteries"]}


@pytest.fixture(scope="module")
def model():
    from helpers import tiny_model

    torch.manual_seed(0)
    return tiny_model(seed=0)


@pytest.fixture(scope="module")
def items(model):
    texts = ["Title: Hammer Brand: Acme", "Title: Safety goggles with anti-fog coating Category: Eyewear",
             "Title: Nitrile gloves, box of 100", "Title: Digital caliper 150 mm stainless"]
    return model.encode_items(texts)


def test_shapes_and_score_range(model, items):
    assert items.shape == (4, model.item_hidden_size) and items.dtype == torch.float32
    users = model.encode_users([items[:3], items[1:2], items])
    assert users.shape == (3, model.user_hidden_size)
    s = model.score(users, items)
    assert s.shape == (3, 4) and float(s.min()) >= 0 and float(s.max()) <= 1
    # padding in a batch changes nothing: each user alone gives the same embedding
    alone = torch.cat([model.encode_users([items[1:2]]), model.encode_users([items])])
    torch.testing.assert_close(users[1:], alone, atol=1e-5, rtol=1e-4)
    # an item encoded alone equals the batched one (right padding + causal attention)
    torch.testing.assert_close(model.encode_items(["Title: Nitrile gloves, box of 100"])[0], items[2],
                               atol=1e-5, rtol=1e-4)


def test_bad_inputs_name_the_problem(model, items):
    with pytest.raises(ValueError, match="history 1 is empty"):
        model.encode_users([items[:1], items[:0]])
    with pytest.raises(ValueError, match=r"history 0: expected a tensor \[L, 64\]"):
        model.encode_users([torch.zeros(3, 7)])
    with pytest.raises(ValueError, match="user_emb must be"):
        model.score(torch.zeros(2, 5), items)
    with pytest.raises(ValueError, match="title"):
        model.build_prompts({"description": "no title"})
    with pytest.raises(ValueError, match="2 user embeddings but 1 prompt1"):
        model.generate(torch.zeros(2, 64), ["a"], ["b"])


@pytest.mark.parametrize("side", ["left", "right"])
def test_collator_labels_only_on_response_and_one_slot(model, side):
    tok = model.tokenizers["creative"]
    p1, p2 = model.build_prompts(AD)
    resp = ["Drill for you", "A much longer personalized drill title for the workshop"]
    b = model.creative_batch([p1, p1 + "x"], [p2, p2], resp, padding_side=side)
    assert b.slot_mask.sum(1).tolist() == [1, 1]
    assert (b.labels[b.attention_mask == 0] == IGNORE).all()
    for i in range(2):
        lab = b.labels[i][b.labels[i] != IGNORE].tolist()
        assert tok.decode(lab) == resp[i] + "<|im_end|>"
        # the labelled span is the sequence's tail (after prompt1 + slot + prompt2)
        real = b.attention_mask[i].nonzero().flatten()
        first_lab = int((b.labels[i] != IGNORE).nonzero()[0])
        assert first_lab > int(b.slot_mask[i].nonzero()[0]) and int(real[-1]) == first_lab + len(lab) - 1
    if side == "left":
        assert (b.attention_mask[:, -1] == 1).all()
    else:
        assert (b.attention_mask[:, 0] == 1).all()


def test_left_and_right_padding_give_the_same_logits(model, items):
    u = model.encode_users([items[:2], items])
    p1, p2 = model.build_prompts(AD)
    resp = ["Short", "A longer response for padding"]
    outs = {}
    with torch.no_grad():
        for side in ("left", "right"):
            b = model.creative_batch([p1, p1], [p2 + " extra words here", p2], resp, padding_side=side)
            logits = model._slot_forward(b, model.slot_embedding(u), labels=False).logits
            outs[side] = [logits[i][b.labels[i] != IGNORE] for i in range(2)]
    for i in range(2):
        torch.testing.assert_close(outs["left"][i], outs["right"][i], atol=2e-4, rtol=1e-3)


def test_user_embedding_lands_at_the_slot(model, items):
    u = model.encode_users([items[:2], items[2:]])
    p1, p2 = model.build_prompts(AD)
    b = model.creative_batch([p1, p1], [p2, p2 + " more"], ["a", "b"], padding_side="left")
    seen = {}

    def hook(mod, args, kwargs):
        seen["emb"] = kwargs["inputs_embeds"].detach().clone()

    h = model.creative.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model._slot_forward(b, model.slot_embedding(u), labels=False)
    finally:
        h.remove()
    emb = seen["emb"]
    with torch.no_grad():
        want = model.slot_embedding(u)
        tok_emb = model.creative.get_input_embeddings()(b.input_ids)
    torch.testing.assert_close(emb[b.slot_mask], want)
    torch.testing.assert_close(emb[~b.slot_mask], tok_emb[~b.slot_mask])


def test_generate_batched_left_padding_matches_single(model, items):
    u = model.encode_users([items[:2], items])
    p1, p2 = model.build_prompts(AD)
    p2b = p2 + " Make it short and friendly, please, for a workshop owner."
    both = model.generate(u, [p1, p1], [p2, p2b], do_sample=False, max_new_tokens=6)
    single = [model.generate(u[i:i + 1], [p1], [q], do_sample=False, max_new_tokens=6)[0]
              for i, q in enumerate([p2, p2b])]
    assert both == single and len(both) == 2
    sampled = model.generate(u, [p1, p1], [p2, p2], max_new_tokens=5, seed=3)
    assert sampled == model.generate(u, [p1, p1], [p2, p2], max_new_tokens=5, seed=3)


def test_save_load_roundtrip(model, items, tmp_path):
    from hllm_creator.model import HLLMCreator, ModelDirError

    d = model.save(tmp_path / "m")
    m2 = HLLMCreator.load(d)
    assert m2.model_hash == model.model_hash and len(m2.model_hash) == 16
    texts = ["Title: Hammer Brand: Acme", "Title: Nitrile gloves, box of 100"]
    torch.testing.assert_close(m2.encode_items(texts), model.encode_items(texts))
    u = model.encode_users([items])
    torch.testing.assert_close(m2.encode_users([items]), u)
    torch.testing.assert_close(m2.score(u, items), model.score(u, items))
    assert not list(tmp_path.glob(".m.*"))  # atomic: no temp dirs left
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelDirError, match="missing model.safetensors"):
        HLLMCreator.load(d)
    with pytest.raises(ModelDirError, match="does not exist"):
        HLLMCreator.load(tmp_path / "nope")


def test_info_nce_batch_one_queue_and_false_negative_mask():
    torch.manual_seed(0)
    scale = torch.tensor(20.0)
    a, p = torch.randn(1, 8, requires_grad=True), torch.randn(1, 8)
    # batch 1, no queue: the only candidate is the positive -> loss exactly 0
    assert float(info_nce(a, p, scale).detach()) == pytest.approx(0.0, abs=1e-6)
    qa, qp = torch.randn(6, 8), torch.randn(6, 8)
    loss = info_nce(a, p, scale, queue_a=qa, queue_p=qp)
    assert float(loss) > 0
    loss.backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    # a queued copy of the positive is a false negative: masked, so it changes nothing
    a2 = p + 0.05 * torch.randn(1, 8)  # a well-aligned pair: the positive dominates
    base = info_nce(a2, p, scale, queue_a=qa, queue_p=qp)
    dup_a, dup_p = torch.cat([qa, a2]), torch.cat([qp, p * 3])
    torch.testing.assert_close(base, info_nce(a2, p, scale, queue_a=dup_a, queue_p=dup_p))
    nomask = info_nce(a2, p, scale, fn_cos=2.0, queue_a=dup_a, queue_p=dup_p)
    assert float(nomask) > float(base) + 0.5  # unmasked, the copy competes with the positive (~log 2)


def test_cls_loss_batch_one_and_positive_never_a_negative(model):
    from hllm_creator.model.predictor import ItemUserHead

    torch.manual_seed(0)
    pr = ItemUserHead(16, 12, d=8, hidden=16)
    u, pos = torch.randn(1, 16), torch.randn(1, 12)
    neg = torch.randn(5, 12)
    loss = cls_loss(pr, u, pos, torch.tensor([3]), neg, torch.tensor([0, 1, 2, 4, 5]))
    assert torch.isfinite(loss) and float(loss) > 0
    # a sampled "negative" that is the positive item is masked out: same loss as without it
    with_dup = cls_loss(pr, u, pos, torch.tensor([3]), torch.cat([neg, pos]), torch.tensor([0, 1, 2, 4, 5, 3]))
    torch.testing.assert_close(loss, with_dup)
    # no sampled negatives and batch 1: still defined (only the positive term)
    alone = cls_loss(pr, u, pos, torch.tensor([3]))
    assert torch.isfinite(alone)
    # mixer head works too
    mx = ItemUserHead(16, 12, d=8, hidden=16, head="mixer")
    assert mx(torch.randn(3, 16), torch.randn(7, 12)).shape == (3, 7)


def test_cls_and_align_under_torch_distributed_world_size_one(tmp_path):
    import torch.distributed as dist

    from hllm_creator.model.predictor import ItemUserHead

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        pr = ItemUserHead(16, 12, d=8, hidden=16)
        u, pos = torch.randn(1, 16, requires_grad=True), torch.randn(1, 12)
        loss = cls_loss(pr, u, pos, torch.tensor([1]), torch.randn(4, 12), torch.tensor([2, 3, 4, 5]))
        loss.backward()
        assert u.grad.abs().sum() > 0
        a = torch.randn(1, 8, requires_grad=True)
        al = info_nce(a, torch.randn(1, 8), torch.tensor(20.0), queue_a=torch.randn(3, 8), queue_p=torch.randn(3, 8))
        al.backward()
        assert a.grad.abs().sum() > 0
    finally:
        dist.destroy_process_group()


def test_user_layout_prompt_first_and_old_dirs_keep_their_layout(model, items, tmp_path):
    import json

    from hllm_creator.model import HLLMCreator

    assert model.cfg.user_layout == "prompt_items_user"
    u_new = model.encode_users([items[:3]])
    model.cfg.user_layout = "items_prompt_user"
    try:
        u_old = model.encode_users([items[:3]])
        out = model.save(tmp_path / "m")
    finally:
        model.cfg.user_layout = "prompt_items_user"
    assert not torch.allclose(u_new, u_old)  # the layout is really used
    # a dir written before the field existed has no user_layout: it loads with the old order
    f = out / "hllm_config.json"
    meta = json.loads(f.read_text())
    meta["model"].pop("user_layout")
    f.write_text(json.dumps(meta))
    m = HLLMCreator.load(out)
    assert m.cfg.user_layout == "items_prompt_user"
    torch.testing.assert_close(m.encode_users([items[:3]]), u_old, atol=1e-5, rtol=1e-4)


def test_encode_users_sorts_by_length_but_keeps_order_and_error_index(model, items):
    seqs = [items, items[:1], items[1:3], items[2:3], items]
    together = model.encode_users(seqs, batch_size=2)
    alone = torch.cat([model.encode_users([s]) for s in seqs])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="history 3 is empty"):
        model.encode_users([items, items[:1], items[:2], items[:0]], batch_size=2)


def test_generate_under_bf16_autocast_returns_one_title_per_prompt(model, items):
    u = model.encode_users([items[:2], items[1:]])
    p1, p2 = zip(*[model.build_prompts(AD)] * 2)
    out = model.generate(u, list(p1), list(p2), do_sample=False, max_new_tokens=4, autocast_bf16=True)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
