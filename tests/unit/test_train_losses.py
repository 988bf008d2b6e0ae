"""Training objectives on tiny-llama with real data rows: each loss falls, gradients reach every part."""

from __future__ import annotations

import pytest
import torch

from hllm_creator.train import data as tdata


@pytest.fixture(scope="module")
def small(tmp_path_factory, bundled_dataset):
    from hllm_creator.data import leave_last_out
    from hllm_creator.model.testing import small_dataset

    ds = small_dataset(tmp_path_factory.mktemp("small") / "ds", n_users=40, source_dir=bundled_dataset.path)
    split = leave_last_out(ds.interactions)
    rows = tdata.build_standin(ds, split.users, 4, seed=0)
    td = tdata.prepare_train_data(ds, split.users, rows, standin=True, max_history=10)
    return ds, split, td


def _model(td, *, frozen_items: bool, seed=0, **kw):
    from hllm_creator.model.testing import tiny_model

    m = tiny_model(seed=seed, max_history=10, item_max_tokens=24, **kw)
    if frozen_items:
        for p in list(m.item_llm.parameters()) + [m.item_token]:
            p.requires_grad_(False)
        m.item_cache = m.encode_items(td.item_texts, batch_size=64)
    else:
        m.item_tokens = m.tokenize_items(td.item_texts)
    return m


def _batch(m, td, n_rows=2, n_cls=6, k=16, step=0, first_row=0):
    bundle = {"step": step, "rows": list(range(first_row, first_row + n_rows)), "cls": list(range(n_cls))}
    return tdata.BundleCollator(m, td, cls_negatives=k, weights={}, seed=0)([bundle])


def test_standin_rows_follow_the_reference_schema(small):
    ds, split, td = small
    for c in tdata.TRAIN_COLUMNS:
        assert c in td.rows.columns
    r = td.rows.iloc[0]
    assert r["response"] and r["user_profile"].startswith("Interested in")
    # the ad is the valid target: the held-out test target never enters training
    u = split.users.set_index("user_id").loc[r["user_id"]]
    assert r["target_item_id"] == u["valid_target"] != u["test_target"]
    assert list(r["item_id_list"]) == list(u["history"])
    again = tdata.build_standin(ds, split.users, 4, seed=0)
    assert again["response"].tolist() == td.rows["response"].tolist()  # deterministic


@pytest.mark.parametrize("loss", ["creative", "recon", "align", "cls"])
def test_each_loss_decreases_on_a_tiny_batch(small, loss):
    _, _, td = small
    torch.manual_seed(0)
    m = _model(td, frozen_items=True, align_queue=4)
    weights = {k: float(k == loss) for k in ("creative", "recon", "align", "cls")}
    batch = _batch(m, td, n_rows=3 if loss == "align" else 2)
    batch["weights"] = weights
    if loss == "align":  # fixed negatives: fill the queue once, then stop updating it
        with torch.no_grad():
            m.prefill_align_queue(torch.randn(4, m.user_hidden_size), m.profile_batch(
                ["likes gloves", "likes drills", "likes lab glassware", "likes tape"]))
        m.cfg.align_queue = 0
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    m.train()
    vals = []
    for _ in range(8):
        out = m(**batch)
        assert set(out) >= {"loss", loss}
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        vals.append(float(out[loss]))
    assert vals[-1] < vals[0] * 0.9, vals


def test_gradients_reach_every_trainable_part(small):
    _, _, td = small
    torch.manual_seed(0)
    m = _model(td, frozen_items=False)  # Item LLM trained online: every part must get a gradient
    m.train()
    out = m(**_batch(m, td))
    assert {"creative", "recon", "align", "cls"} <= set(out)
    out["loss"].backward()
    no_grad = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == []
    for part in ("item_token", "user_token", "logit_scale", "projector.0.weight", "profile_projector.0.weight",
                 "align_projector.0.weight", "predictor.user_tower.1.weight", "predictor.item_tower.1.weight",
                 "predictor.w_p.weight", "item_llm.layers.0.mlp.up_proj.weight",
                 "user_llm.layers.0.mlp.up_proj.weight", "creative.model.layers.1.mlp.up_proj.weight"):
        assert dict(m.named_parameters())[part].grad is not None, part


def test_lora_trains_adapters_only_and_merges(small, tmp_path):
    from peft import LoraConfig, get_peft_model

    from hllm_creator.model import HLLMCreator

    _, _, td = small
    m = _model(td, frozen_items=True)
    m.creative = get_peft_model(m.creative, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                       task_type="CAUSAL_LM"))
    out = m(**_batch(m, td))
    out["loss"].backward()
    grads = {n for n, p in m.named_parameters() if p.grad is not None and n.startswith("creative.")}
    assert grads and all("lora_" in n for n in grads)
    d = m.save(tmp_path / "lora_model")
    m2 = HLLMCreator.load(d)
    assert not any("lora_" in n for n, _ in m2.named_parameters())


def test_cls_and_align_with_batch_size_one(small):
    _, _, td = small
    m = _model(td, frozen_items=True, align_queue=8)
    m.train()
    for step in range(3):  # the queue fills as steps go; batch size 1 everywhere
        out = m(**_batch(m, td, n_rows=1, n_cls=1, k=8, step=step, first_row=step))
        assert torch.isfinite(out["loss"]) and float(out["cls"]) > 0
        out["loss"].backward()
    assert float(out["align"]) > 0  # negatives from the queue (other users' profiles)
    assert int(m.queue_n) == 3
