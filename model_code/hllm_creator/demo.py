"""``hllm-creator demo --llm-only``: the quick foundation check (the full demo runs the pipeline).

Prepares the bundled Amazon Industrial & Scientific data, starts the embedded OpenAI-compatible
server (SmolLM2-135M-Instruct) on loopback, asks it through the official ``openai`` client for a
catchy ad title for a real item, stops the server; three console lines.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

console = Console(soft_wrap=True)  # one line per message, however wide: the terminal wraps


def llm_roundtrip(data_dir: Path) -> str:
    from openai import OpenAI

    from hllm_creator.data.prepare import prepare_bundled
    from hllm_creator.process import serve_process

    t0 = time.time()
    ds = prepare_bundled(data_dir)
    c = ds.manifest["counts"]
    console.print(f"[bold]data[/]: {data_dir}: {c['users']:,} users, {c['items']:,} items, "
                  f"{c['interactions']:,} interactions ({time.time() - t0:.1f}s)")
    item = ds.items.set_index("item_id").loc["1"]
    with serve_process("llm", ["--model", "smollm2-135m-instruct"]) as srv:
        t_ready = time.time() - t0
        client = OpenAI(base_url=srv.openai_base_url, api_key="not-needed-for-the-embedded-server")
        prompt = (f"Product: {item['title']}\nSelling points: {'; '.join(item['selling_points'])}\n\n"
                  "Write one catchy ad title for this product, using only its facts.")
        t1 = time.time()
        resp = client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=40, temperature=0,
                                              messages=[{"role": "system", "content": "You write short, catchy ad titles. "
                                                                             "Reply with the title only."},
                                                                  {"role": "user", "content": prompt}])
        answer = resp.choices[0].message.content
    console.print(f"[bold]llm[/]: `hllm-creator serve llm --model smollm2-135m-instruct` on {srv.openai_base_url} "
                  f"(ready at {t_ready:.1f}s), one chat completion through the openai client "
                  f"({resp.usage.completion_tokens} tokens, {time.time() - t1:.1f}s), server stopped:")
    console.print(f"  original {item['title']!r}; SmolLM2 says: [green]{' '.join(answer.split())}[/]")
    return answer
