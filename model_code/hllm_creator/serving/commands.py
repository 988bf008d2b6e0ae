"""``hllm-creator serve ...``: KServe ModelServer processes (llm, creative, predictor)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Serve models over HTTP with KServe (binds 127.0.0.1 unless --host is given).",
                  no_args_is_help=True)


# -- creative and predictor (issue 7) -------------------------------------------------------------
def _serve_batched(kind: str, model_dir, model_uri, artifacts, items, host, port, max_batch, batch_wait_ms,
                   threads, max_queue: int = 1024, deadline_s: float = 300.0, ab: dict | None = None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from hllm_creator.serving.runtime import serve
    from hllm_creator.serving.schemas import MAX_BODY_BYTES

    if kind == "creative":
        from hllm_creator.serving.creative import Creative as cls
    else:
        from hllm_creator.serving.predictor import Predictor as cls
    if bool(model_dir) == bool(model_uri):
        raise typer.BadParameter("give exactly one of --model-dir or --model-uri")
    _check_source(model_dir, model_uri, artifacts)
    model = cls(kind, model_dir=model_dir, model_uri=model_uri, artifacts=artifacts, items=items,
                max_batch=max_batch, max_wait_ms=batch_wait_ms, max_queue=max_queue, **(ab or {}))
    serve(model, host, port, model.load, max_body=MAX_BODY_BYTES, deadline_s=deadline_s,
          setup_app=getattr(model, "setup_app", None))


def _check_source(model_dir, model_uri, artifacts) -> None:
    """What can be checked before the server starts, as one-line errors: a missing directory, a
    registry URI whose alias or version does not exist (the error lists the aliases that do)."""
    from pathlib import Path

    for flag, d in (("--model-dir", model_dir), ("--artifacts", artifacts)):
        if d and not Path(d).is_dir():
            raise typer.BadParameter(f"{flag} {d}: no such directory"
                                     + (" (a trained model dir, or a bundle from `hllm-creator publish`)"
                                        if flag == "--model-dir" else ""))
    if model_uri and str(model_uri).startswith("models:/"):
        from mlflow.exceptions import MlflowException

        from hllm_creator.tracking import resolve_tracking_uri
        from hllm_creator.tracking.mlflow_utils import _version_for

        try:
            _version_for(str(model_uri))
        except MlflowException as e:
            raise typer.BadParameter(f"--model-uri {model_uri}: {e.message} "
                                     f"(registry: {resolve_tracking_uri()})") from None


def _ab(experiment: str | None, share: float, exposure_dir: str | None) -> dict:
    """Predictor kwargs of an A/B experiment (none without --experiment)."""
    if not experiment:
        if exposure_dir:
            raise typer.BadParameter("--exposure-dir needs --experiment (the experiment's salt)")
        return {}
    from pathlib import Path

    from hllm_creator.paths import work_dir
    from hllm_creator.serving.experiment import Experiment

    try:
        exp = Experiment(salt=experiment, share=share)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    return {"experiment": exp, "sink_dir": Path(exposure_dir) if exposure_dir else work_dir() / "ab" / experiment}


_MODEL_DIR = typer.Option(None, "--model-dir", help="A trained model dir (hllm-creator train), or a serving "
                                                    "bundle (hllm-creator publish): then nothing else is needed.")
_MODEL_URI = typer.Option(None, "--model-uri", help="Or a registry URI, e.g. models:/hllm-creator@champion (a "
                                                    "registered bundle needs no --artifacts/--items).")
_ARTIFACTS = typer.Option(None, "--artifacts", help="Inference outputs dir (centroids.npy, cluster_meta.json, "
                                                    "member_means.npy, matches.parquet, creatives.parquet).")
_ITEMS = typer.Option(None, "--items", help="Item catalog: a dataset dir or items.parquet (item ids in "
                                            "histories and candidate ads); default ARTIFACTS/items.parquet.")
_HOST = typer.Option("127.0.0.1", "--host", help="Bind address (0.0.0.0 in a container).")
_PORT = typer.Option(8080, "--port", help="HTTP port.")
_MAX_BATCH = typer.Option(32, "--max-batch", min=1, help="Most instances combined into one model pass.")
_THREADS = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's).")
_MAX_QUEUE = typer.Option(1024, "--max-queue", min=1, help="Most instances waiting; more get 429 + Retry-After.")
_DEADLINE = typer.Option(300.0, "--deadline-s", min=0.001,
                         help="Per-request deadline in seconds (a client may shorten it with the "
                              "x-request-timeout header); past it the request is dropped and gets 504.")


@app.command("creative")
def creative_cmd(model_dir: str = _MODEL_DIR, model_uri: str = _MODEL_URI, artifacts: str = _ARTIFACTS,
                 items: str = _ITEMS, host: str = _HOST, port: int = _PORT, max_batch: int = _MAX_BATCH,
                 batch_wait_ms: float = typer.Option(20.0, "--batch-wait-ms", min=0,
                                                     help="How long a batch waits for more requests."),
                 threads: int = _THREADS, max_queue: int = _MAX_QUEUE,
                 deadline_s: float = _DEADLINE) -> None:
    """Serve the Creative LLM (personalized titles) as the KServe model `creative`."""
    _serve_batched("creative", model_dir, model_uri, artifacts, items, host, port, max_batch, batch_wait_ms,
                   threads, max_queue, deadline_s)


@app.command("predictor")
def predictor_cmd(model_dir: str = _MODEL_DIR, model_uri: str = _MODEL_URI, artifacts: str = _ARTIFACTS,
                  items: str = _ITEMS, host: str = _HOST, port: int = _PORT, max_batch: int = _MAX_BATCH,
                  batch_wait_ms: float = typer.Option(3.0, "--batch-wait-ms", min=0,
                                                      help="How long a batch waits for more requests."),
                  threads: int = _THREADS, max_queue: int = _MAX_QUEUE,
                  deadline_s: float = _DEADLINE,
                  experiment: str = typer.Option(None, "--experiment",
                                                 help="Run an A/B test under this name (the assignment salt): "
                                                      "instances with user_id get a variant, control users the "
                                                      "original title; exposures and clicks are logged."),
                  ab_share: float = typer.Option(0.5, "--ab-share", min=0.0, max=1.0,
                                                 help="Share of users in the personalized variant."),
                  exposure_dir: str = typer.Option(None, "--exposure-dir",
                                                   help="Append-only JSONL sink of exposures and feedback "
                                                        "(default WORKDIR/ab/EXPERIMENT; a PVC on a cluster).")) -> None:
    """Serve the Item-User predictor (cluster, match scores, pre-generated titles) as the KServe model `predictor`."""
    ab = _ab(experiment, ab_share, exposure_dir)
    _serve_batched("predictor", model_dir, model_uri, artifacts, items, host, port, max_batch, batch_wait_ms,
                   threads, max_queue, deadline_s, ab=ab)


# -- serve split (issue 17: champion + canary behind one port, as KServe's canaryTrafficPercent) ----
@app.command("split")
def split_cmd(champion: str = typer.Option(..., "--champion", help="URL of the champion server (http://HOST:PORT)."),
              canary: str = typer.Option(..., "--canary", help="URL of the canary server."),
              percent: int = typer.Option(..., "--percent", min=0, max=100,
                                          help="Share of requests sent to the canary."),
              host: str = _HOST, port: int = _PORT) -> None:
    """Route requests between a champion and a canary server like KServe's canary split: each request
    goes to the canary with probability PERCENT/100, or where the `x-hllm-route: champion|canary`
    header says; answers carry `x-hllm-served-by`. Try a rollout locally without a cluster."""
    from hllm_creator.serving.router import serve_split

    serve_split(champion, canary, percent, host, port)


# -- serve llm (the embedded OpenAI-compatible LLM server) -----------------------------------------
@app.command("llm")
def llm_cmd(
    model: str = typer.Option("smollm2-135m-instruct", "--model",
                              help="Bundled name (smollm2-135m-instruct), 'tiny-llama' (random, tests) "
                                   "or a local HF causal-LM directory."),
    port: int = typer.Option(8080, "--port", help="HTTP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (0.0.0.0 to expose it)."),
    model_name: str = typer.Option(None, "--model-name",
                                   help="Served model name (the 'model' field clients send); default: "
                                        "--model, or a directory's basename."),
    max_batch_size: int = typer.Option(8, "--max-batch-size", help="Most requests in one generate call."),
    batch_window_ms: float = typer.Option(20.0, "--batch-window-ms",
                                          help="How long the first request waits for others to join."),
    max_prompt_tokens: int = typer.Option(2048, "--max-prompt-tokens",
                                          help="Longer prompts (after the chat template) get a 400."),
    max_tokens_limit: int = typer.Option(512, "--max-tokens-limit",
                                         help="Largest max_tokens accepted; larger gets a 400."),
    default_max_tokens: int = typer.Option(256, "--default-max-tokens",
                                           help="max_tokens when a request gives none."),
    max_messages: int = typer.Option(64, "--max-messages", help="Most chat messages per request."),
    dtype: str = typer.Option("auto", "--dtype",
                              help="auto (bfloat16 on CPUs with native bf16, AMX/AVX512-BF16; else "
                                   "float32), float32 or bfloat16 weights."),
    json_max_whitespace: int = typer.Option(8, "--json-max-whitespace",
                                            help="Most consecutive whitespace chars in constrained JSON "
                                                 "(small models loop on whitespace)."),
    threads: int = typer.Option(0, "--threads",
                                help="torch intra-op threads (0: torch's default, the core count)."),
    json_warmup: bool = typer.Option(True, "--json-warmup/--no-json-warmup",
                                     help="Build the JSON-constraint token table at start (background)."),
    max_queue: int = typer.Option(256, "--max-queue", help="Most requests waiting; more get 429 + Retry-After."),
    deadline_s: float = typer.Option(600.0, "--deadline-s",
                                     help="Per-request deadline in seconds (x-request-timeout shortens it); "
                                          "past it the row leaves its batch and the client gets 504."),
    scheduler: str = typer.Option("continuous", "--scheduler",
                                  help="continuous: rows join and leave between decoding steps; static: a "
                                       "batch runs to its longest row."),
) -> None:
    """Serve an HF causal LM over OpenAI-compatible routes on a KServe ModelServer.

    Routes: /openai/v1/models, /openai/v1/completions, /openai/v1/chat/completions
    (chat template applied; response_format json_object / json_schema by constrained decoding),
    KServe's /v1/models/NAME:predict and /v2/health/ready (ready once the model loaded).

    Concurrent requests are batched into one generate call. Bad requests get a 4xx with an
    OpenAI-style error. Point the openai client at http://HOST:PORT/openai/v1.
    """
    import os

    # OpenMP threads that spin while waiting make a shared CPU 7-10x slower for everyone (measured:
    # SmolLM2 2 threads under load 10: 0.3 tok/s spinning vs 2.2 tok/s passive). Must precede torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from hllm_creator.serving.llm_server import LLMServerConfig, serve

    try:
        cfg = LLMServerConfig(model=model, model_name=model_name, host=host, port=port,
                              max_batch_size=max_batch_size, batch_window_ms=batch_window_ms,
                              max_prompt_tokens=max_prompt_tokens, max_tokens_limit=max_tokens_limit,
                              default_max_tokens=default_max_tokens, max_messages=max_messages, dtype=dtype,
                              json_max_whitespace=json_max_whitespace, json_warmup=json_warmup,
                              threads=threads, max_queue=max_queue, deadline_s=deadline_s, scheduler=scheduler)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    serve(cfg)
