"""``hllm-creator serve ...``: KServe ModelServer processes (llm, creative, predictor)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Serve models over HTTP with KServe (binds 127.0.0.1 unless --host is given).",
                  no_args_is_help=True)


# -- creative and predictor (issue 7) -------------------------------------------------------------
def _serve_batched(kind: str, model_dir, model_uri, artifacts, items, host, port, max_batch, batch_wait_ms,
                   threads) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from hllm_creator.serving.loading import serve

    if kind == "creative":
        from hllm_creator.serving.creative import Creative as cls
    else:
        from hllm_creator.serving.predictor import Predictor as cls
    if bool(model_dir) == bool(model_uri):
        raise typer.BadParameter("give exactly one of --model-dir or --model-uri")
    model = cls(kind, model_dir=model_dir, model_uri=model_uri, artifacts=artifacts, items=items,
                max_batch=max_batch, max_wait_ms=batch_wait_ms)
    serve(model, host, port, model.load)


_MODEL_DIR = typer.Option(None, "--model-dir", help="A trained model dir (hllm-creator train).")
_MODEL_URI = typer.Option(None, "--model-uri", help="Or a registry URI, e.g. models:/hllm-creator@champion.")
_ARTIFACTS = typer.Option(None, "--artifacts", help="Inference outputs dir (centroids.npy, cluster_meta.json, "
                                                    "member_means.npy, matches.parquet, creatives.parquet).")
_ITEMS = typer.Option(None, "--items", help="Item catalog: a dataset dir or items.parquet (item ids in "
                                            "histories and candidate ads); default ARTIFACTS/items.parquet.")
_HOST = typer.Option("127.0.0.1", "--host", help="Bind address (0.0.0.0 in a container).")
_PORT = typer.Option(8080, "--port", help="HTTP port.")
_MAX_BATCH = typer.Option(32, "--max-batch", min=1, help="Most instances combined into one model pass.")
_THREADS = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's).")


@app.command("creative")
def creative_cmd(model_dir: str = _MODEL_DIR, model_uri: str = _MODEL_URI, artifacts: str = _ARTIFACTS,
                 items: str = _ITEMS, host: str = _HOST, port: int = _PORT, max_batch: int = _MAX_BATCH,
                 batch_wait_ms: float = typer.Option(20.0, "--batch-wait-ms", min=0,
                                                     help="How long a batch waits for more requests."),
                 threads: int = _THREADS) -> None:
    """Serve the Creative LLM (personalized titles) as the KServe model `creative`."""
    _serve_batched("creative", model_dir, model_uri, artifacts, items, host, port, max_batch, batch_wait_ms,
                   threads)


@app.command("predictor")
def predictor_cmd(model_dir: str = _MODEL_DIR, model_uri: str = _MODEL_URI, artifacts: str = _ARTIFACTS,
                  items: str = _ITEMS, host: str = _HOST, port: int = _PORT, max_batch: int = _MAX_BATCH,
                  batch_wait_ms: float = typer.Option(3.0, "--batch-wait-ms", min=0,
                                                      help="How long a batch waits for more requests."),
                  threads: int = _THREADS) -> None:
    """Serve the Item-User predictor (cluster, match scores, pre-generated titles) as the KServe model `predictor`."""
    _serve_batched("predictor", model_dir, model_uri, artifacts, items, host, port, max_batch, batch_wait_ms,
                   threads)


# -- serve llm (the embedded OpenAI-compatible LLM server) -----------------------------------------
