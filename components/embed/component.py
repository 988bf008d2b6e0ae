"""embed + embed_merge: user embeddings for one shard of the users, and the merge of all shards.

The pipeline fans ``embed`` out with ``dsl.ParallelFor`` over ``shard`` = "0/n" .. "n-1/n" and
collects the shard outputs into ``embed_merge``. Glue only: the work is
``hllm_creator.infer.embed.run`` / ``merge_shards``.
"""

from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from hllm_creator_kfp.components._images import CPU_IMAGE, GPU_IMAGE
from hllm_creator_kfp.components._params import describe


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def embed(
    model: Input[Model],
    dataset: Input[Dataset],
    embeddings: Output[Dataset],
    shard: str = "0/1",
    batch_size: int = 64,
    item_batch_size: int = 32,
    history: str = "no-test",
    max_users: int = 0,
    bf16: bool = False,
    item_cache: Optional[str] = None,
):
    """User embeddings of one shard of the users (item embeddings cached by text + model hash).

    Args:
        model: Model dir written by the train step (HLLMCreator).
        dataset: Dataset dir (items.parquet, interactions.parquet, manifest.json) from data prepare.
        embeddings: Output dir: user_embeddings.parquet (user_id, embedding) + embed_meta.json.
        shard: "i/n": users with sha256(user_id) mod n == i; "0/1" = all users.
        max_users: Only the first N users of the shard (0 = all).
    """
    from hllm_creator.infer.embed import EmbedConfig, parse_shard, run

    i, n = parse_shard(shard)
    cfg = EmbedConfig(model_dir=model.path, data_dir=dataset.path, shard_index=i, shard_count=n,
                      batch_size=batch_size, item_batch_size=item_batch_size, history=history,
                      max_users=max_users or None, bf16=bf16, item_cache=item_cache)
    meta = run(cfg, embeddings.path, progress=True)  # the run console says each quarter (issue 28)
    embeddings.metadata.update({k: meta[k] for k in ("users", "shard_index", "shard_count", "model_hash",
                                                     "items_encoded", "users_per_second")})


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def embed_merge(shards: Input[list[Dataset]], embeddings: Output[Dataset]):
    """Merge the shard outputs of ``embed`` into one user_embeddings.parquet (all shards, no user twice).

    Args:
        shards: The ``embeddings`` outputs of every embed shard (dsl.Collected).
        embeddings: Output dir: the merged user_embeddings.parquet + embed_meta.json.
    """
    from hllm_creator.infer.embed import merge_shards

    meta = merge_shards([s.path for s in shards], embeddings.path)
    embeddings.metadata.update({k: meta[k] for k in ("users", "merged_from", "model_hash", "dim")})


describe(embed)  # input descriptions from the config's fields, written once
