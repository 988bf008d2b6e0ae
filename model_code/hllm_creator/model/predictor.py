"""The Item-User predictor: ``user_tower``, ``item_tower`` and an MLP (or MLP-Mixer) head.

With ID embeddings on (``enable_ids``, ``ModelConfig.predictor_ids``) the predictor is a hybrid:
the user side adds a recency-weighted sum of the last ``recent`` clicked items' input ID vectors
(``id_in``) to ``user_tower(User LLM state)`` and the item side adds the item's output ID vector
(``id_out``) to ``item_tower(Item LLM embedding)``. Index ``n_ids`` is "no item" (padding, an item
outside the training catalog): its vectors are zero, so a cold item or a user without known clicks
falls back to the LLM towers alone. With the text bag (``enable_text_bag``) the user side also adds
the item tower's vectors of the same last clicks (their text, not their ids).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def recent_rows(hists, k: int, none: int) -> torch.Tensor:
    """Catalog-index histories (oldest first) -> [n, k] of each one's last k items, right-aligned
    (newest in the last column), ``none``-padded: what ``ItemUserHead.recent_part`` reads."""
    out = torch.full((len(hists), k), none, dtype=torch.long)
    for r, h in enumerate(hists):
        last = list(h)[-k:]
        if last:
            out[r, k - len(last):] = torch.as_tensor(last, dtype=torch.long)
    return out


def tower(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


class MixerHead(nn.Module):
    """One MLP-Mixer block over the two tokens [user, item] (token mixing, then channel mixing)."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.token_mlp = nn.Sequential(nn.Linear(2, 8), nn.GELU(), nn.Linear(8, 2))
        self.channel_mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.out = nn.Linear(2 * d, 1)

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:  # u, i: [..., d] broadcastable
        u, i = torch.broadcast_tensors(u, i)
        x = torch.stack([u, i], dim=-2)  # [..., 2, d]
        x = x + self.token_mlp(self.norm1(x).transpose(-1, -2)).transpose(-1, -2)
        x = x + self.channel_mlp(self.norm2(x))
        return self.out(x.flatten(-2)).squeeze(-1)


class ItemUserHead(nn.Module):
    """The Item-User predictor's scoring head (named apart from the KServe ``serving.predictor.Predictor``
    that serves it): match logit of (user, item): MLP over [u, i, u*i] of the tower outputs, plus a
    scaled dot."""

    def __init__(self, user_hidden: int, item_hidden: int, d: int = 128, hidden: int = 256, head: str = "mlp"):
        super().__init__()
        # per-feature standardization of the LLM hidden states (set from data before training):
        # LLM last hidden states are dominated by a few huge, nearly constant dims ("massive
        # activations"; SmolLM2: cosine ~0.99 between any two items) that would drown the signal
        self.register_buffer("u_mean", torch.zeros(user_hidden))
        self.register_buffer("u_std", torch.ones(user_hidden))
        self.register_buffer("i_mean", torch.zeros(item_hidden))
        self.register_buffer("i_std", torch.ones(item_hidden))
        self.user_tower = tower(user_hidden, d)
        self.item_tower = tower(item_hidden, d)
        self.head_kind = head
        self.d = d
        if head == "mlp":
            self.w_u = nn.Linear(d, hidden)
            self.w_i = nn.Linear(d, hidden, bias=False)
            self.w_p = nn.Linear(d, hidden, bias=False)
            self.out = nn.Sequential(nn.GELU(), nn.Linear(hidden, 1))
        elif head == "mixer":
            self.mixer = MixerHead(d, hidden)
        elif head == "dot":
            # cosine x learnable scale (init 1/0.05, clamped at 100), as in the align InfoNCE
            self.log_scale = nn.Parameter(torch.tensor(math.log(20.0)))
        else:
            raise ValueError(f"predictor_head must be 'mlp', 'mixer' or 'dot', got {head!r}")
        self.catalog: list[str] | None = None  # the item ids the ID embeddings' rows stand for (set_catalog)
        self._catalog_index: dict[str, int] = {}

    # ------------------------------------------------------------------ ID embeddings (hybrid)
    @property
    def n_ids(self) -> int:
        return self.id_out.num_embeddings - 1 if getattr(self, "id_out", None) is not None else 0

    def enable_ids(self, n_ids: int, recent: int = 8) -> None:
        """Add ID embeddings for a catalog of ``n_ids`` items (index ``n_ids`` = none; zero vectors):
        ``id_out`` on the item side, ``id_in`` for the user's last ``recent`` clicks with learnable
        recency weights (init 1, 1/2, 1/4, ... from the newest click back)."""
        if n_ids < 1 or recent < 1:
            raise ValueError(f"enable_ids: need n_ids >= 1 and recent >= 1, got {n_ids}, {recent}")
        g = torch.Generator().manual_seed(0)
        self.id_out = nn.Embedding(n_ids + 1, self.d, padding_idx=n_ids)
        self.id_in = nn.Embedding(n_ids + 1, self.d, padding_idx=n_ids)
        with torch.no_grad():
            for e in (self.id_out, self.id_in):
                e.weight.copy_(torch.randn(n_ids + 1, self.d, generator=g) * 0.01)
                e.weight[n_ids].zero_()
        self.id_recency = nn.Parameter(torch.tensor([0.5 ** k for k in range(recent)][::-1]))

    def enable_catalog(self, item_ids: Sequence[str], recent: int) -> None:
        """``enable_ids`` for the catalog ``item_ids`` (row order; ids as strings, each once)."""
        ids = [str(x) for x in item_ids]
        if len(set(ids)) != len(ids):
            raise ValueError("enable_item_ids: the catalog lists an item id twice")
        self.enable_ids(len(ids), recent)
        self.set_catalog(ids)

    def id_and_other_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(the ID vectors and the bags' recency weights, everything else: the towers and the head), in
        ``named_parameters`` order: the predictor fit decays the two groups at their own rates."""
        named = list(self.named_parameters())
        own = ("id_", "text_recency")
        return [p for n, p in named if n.startswith(own)], [p for n, p in named if not n.startswith(own)]

    def set_catalog(self, item_ids: Sequence[str] | None) -> None:
        """The item ids of the ID embeddings' rows, in row order (None: score with the LLM towers alone)."""
        self.catalog = None if item_ids is None else list(item_ids)
        self._catalog_index = {x: i for i, x in enumerate(self.catalog or [])}

    def catalog_index(self, item_ids: Sequence[str]) -> torch.Tensor | None:
        """Item ids -> [m] rows of the ID catalog (unknown -> ``n_ids``, "none"); None without a catalog."""
        if not self.catalog:
            return None
        none = len(self.catalog)
        return torch.tensor([self._catalog_index.get(str(x), none) for x in item_ids], dtype=torch.long)

    def catalog_recent(self, histories: Sequence[Sequence[str]]) -> torch.Tensor | None:
        """Click histories (item ids, oldest first) -> [n, k] rows of each one's last k clicks (``recent_rows``:
        right-aligned, "none"-padded; what ``recent_part`` reads); None without a catalog."""
        if not self.catalog:
            return None
        none, k = len(self.catalog), self.id_recency.numel()
        return recent_rows([[self._catalog_index.get(str(x), none) for x in list(h)[-k:]] for h in histories], k, none)

    def enable_text_bag(self, item_emb: torch.Tensor) -> None:
        """The user-side text bag (``ModelConfig.predictor_text_bag``): keep the catalog's frozen Item LLM
        vectors ``item_emb`` [n_ids, item_hidden] (a buffer, saved with the weights; row ``n_ids`` = none)
        so that :meth:`recent_part` adds ``sum_j v_j * item_tower(std_item(vector of the j-th last
        click))`` with learnable recency weights ``v`` (init as ``id_recency``): the history's content
        in the item tower's space, where an item outside the catalog (a new ad) is scored too."""
        if not self.n_ids:
            raise ValueError("enable_text_bag needs the ID catalog first (enable_ids)")
        if item_emb.dim() != 2 or item_emb.shape[0] != self.n_ids or item_emb.shape[1] != self.i_mean.numel():
            raise ValueError(f"enable_text_bag: item_emb must be [{self.n_ids}, {self.i_mean.numel()}], "
                             f"got {tuple(item_emb.shape)}")
        dev = self.id_in.weight.device
        self.register_buffer("id_text", torch.cat([item_emb.detach().float().to(dev),
                                                   torch.zeros(1, item_emb.shape[1], device=dev)]))
        self.text_recency = nn.Parameter(self.id_recency.detach().clone())

    def recent_part(self, recent: torch.Tensor) -> torch.Tensor:
        """``recent`` [n, k] catalog indices of each user's last clicks, oldest first, right-aligned
        (the newest in the last column; ``n_ids`` = none) -> [n, d]."""
        k = self.id_recency.numel()
        if recent.dim() != 2:
            raise ValueError(f"recent must be [n, k] catalog indices, got shape {tuple(recent.shape)}")
        r = recent[:, -k:].to(self.id_in.weight.device)
        if r.shape[1] < k:
            r = torch.cat([r.new_full((len(r), k - r.shape[1]), self.n_ids), r], 1)
        r = torch.where((r < 0) | (r > self.n_ids), torch.full_like(r, self.n_ids), r)
        out = (self.id_in(r) * self.id_recency[None, :, None]).sum(1)
        if getattr(self, "id_text", None) is not None:  # the text bag: no vector for "none" entries
            t = self.item_tower(self.std_item(self.id_text[r])) * (r != self.n_ids)[..., None]
            out = out + (t * self.text_recency[None, :, None]).sum(1).to(out.dtype)
        return out

    def std_user(self, u: torch.Tensor) -> torch.Tensor:
        return (u.float() - self.u_mean) / self.u_std

    def std_item(self, i: torch.Tensor) -> torch.Tensor:
        return (i.float() - self.i_mean) / self.i_std

    def tu(self, u: torch.Tensor, recent: torch.Tensor | None = None) -> torch.Tensor:
        """User tower output [n, d]; with ID embeddings and ``recent`` ([n, k] catalog indices), plus
        their recency-weighted input ID vectors."""
        out = self.user_tower(self.std_user(u))
        if recent is not None and self.n_ids:
            out = out + self.recent_part(recent).to(out.dtype)
        return out

    def ti(self, i: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Item tower output [m, d]; with ID embeddings and ``ids`` ([m] catalog indices, ``n_ids`` =
        not in the catalog), plus their output ID vectors."""
        out = self.item_tower(self.std_item(i))
        if ids is not None and self.n_ids:
            ids = ids.to(self.id_out.weight.device)
            ids = torch.where((ids < 0) | (ids > self.n_ids), torch.full_like(ids, self.n_ids), ids)
            out = out + self.id_out(ids).to(out.dtype)
        return out

    @torch.no_grad()
    def set_stats(self, user_emb: torch.Tensor | None = None, item_emb: torch.Tensor | None = None) -> None:
        for emb, mean, std in ((user_emb, self.u_mean, self.u_std), (item_emb, self.i_mean, self.i_std)):
            if emb is not None and len(emb) > 1:
                mean.copy_(emb.float().mean(0).to(mean.device))
                std.copy_(emb.float().std(0).clamp(min=1e-4).to(std.device))

    def pair_logits(self, ut: torch.Tensor, it: torch.Tensor) -> torch.Tensor:
        """Tower outputs ``ut`` [n, d] x ``it`` [m, d] -> logits [n, m] (all pairs)."""
        if self.head_kind == "dot":
            scale = self.log_scale.exp().clamp(max=100.0)
            return scale * nn.functional.normalize(ut, dim=-1) @ nn.functional.normalize(it, dim=-1).T
        dot = ut @ it.T / math.sqrt(self.d)
        if self.head_kind == "mlp":
            h = self.w_u(ut)[:, None, :] + self.w_i(it)[None, :, :] + self.w_p(ut[:, None, :] * it[None, :, :])
            return self.out(h).squeeze(-1) + dot
        return self.mixer(ut[:, None, :], it[None, :, :]) + dot

    def forward(self, user_emb: torch.Tensor, item_emb: torch.Tensor, chunk: int = 64,
                recent: torch.Tensor | None = None, item_ids: torch.Tensor | None = None,
                user_id_part: torch.Tensor | None = None) -> torch.Tensor:
        """All-pairs logits [n, m]; chunked over users to bound memory. ``recent`` / ``item_ids``: the
        ID parts (hybrid predictor; ignored without ID embeddings); ``user_id_part`` [n, d]: a user-side
        ID part already summed (a cluster's member mean of ``recent_part``), added to the user tower."""
        ut, it = self.tu(user_emb, recent), self.ti(item_emb, item_ids)
        if user_id_part is not None:
            if tuple(user_id_part.shape) != tuple(ut.shape):
                raise ValueError(f"user_id_part must be {list(ut.shape)}, got {list(user_id_part.shape)}")
            ut = ut + user_id_part.to(ut.device, ut.dtype)
        return torch.cat([self.pair_logits(ut[s:s + chunk], it) for s in range(0, len(ut), chunk)], dim=0)
