"""``hllm-creator demo --llm-only``: the quick foundation check (the full demo runs the pipeline).

1. Prepare the bundled Amazon Industrial & Scientific data.
2. Start the embedded OpenAI-compatible server (SmolLM2-135M-Instruct) on loopback.
3. Ask it, through the official ``openai`` client, for a catchy ad title for a real item.
4. Stop the server.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

console = Console()


def llm_roundtrip(data_dir: Path) -> str:
    from openai import OpenAI

    from hllm_creator.data.prepare import prepare_bundled
    from hllm_creator.serving.process import serve_process

    t0 = time.time()
    ds = prepare_bundled(data_dir)
    c = ds.manifest["counts"]
    console.print(f"[bold]1. data[/]: {data_dir}: {c['users']:,} users, {c['items']:,} items, "
                  f"{c['interactions']:,} interactions ({time.time() - t0:.1f}s)")
    item = ds.items.set_index("item_id").loc["1"]
    console.print("[bold]2. starting[/] `hllm-creator serve llm --model smollm2-135m-instruct` on 127.0.0.1 ...")
    with serve_process("llm", ["--model", "smollm2-135m-instruct"]) as srv:
        console.print(f"   ready at {srv.openai_base_url} ({time.time() - t0:.1f}s)")
        client = OpenAI(base_url=srv.openai_base_url, api_key="not-needed-for-the-embedded-server")
        prompt = (f"Product: {item['title']}\nSelling points: {'; '.join(item['selling_points'])}\n\n"
                  "Write one catchy ad title for this product, using only its facts.")
        t1 = time.time()
        resp = client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=40, temperature=0,
                                              messages=[{"role": "system", "content": "You write short, catchy ad titles. "
                                                                             "Reply with the title only."},
                                                                  {"role": "user", "content": prompt}])
        answer = resp.choices[0].message.content
        console.print(f"[bold]3. openai client[/] -> chat.completions ({resp.usage.completion_tokens} tokens, "
                      f"{time.time() - t1:.1f}s)")
        console.print(f"   original title: {item['title']}")
        console.print(f"   SmolLM2 says:   [green]{answer}[/]")
    console.print("[bold]4. server stopped[/]")
    return answer
