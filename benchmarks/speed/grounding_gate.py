"""The grounding gate on the bundled catalog: do ORIGINAL titles pass (they must: an original title is
grounded in its own ad by definition), and how long does one ``gate`` call take?

    .venv/bin/python -m benchmarks.speed.grounding_gate [--n 300] [--reps 3]

Times: "cold" = the first call for an ad (its facts are computed and cached), "warm" = later calls
for the same ad with a new title (what generate and serving do: k titles per ad). Each warm call is
repeated ``--reps`` times and the minimum is kept, so a busy shared machine's scheduler pauses do not
count as the gate's time (the plain p99 is reported too).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from benchmarks._common import dataset, save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset dir (default: bundled, prepared once)")
    ap.add_argument("--n", type=int, default=300, help="ads (the first N by item id)")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()

    from hllm_creator.creative.ad import Ad
    from hllm_creator.creative.gate import catalog_names, gate
    from hllm_creator.creative.gate.adfacts import source_facts as _source_facts

    ds = dataset(a.data)
    names = catalog_names(ds.items)
    rows = sorted(ds.items.to_dict("records"), key=lambda r: int(r["item_id"]) if str(r["item_id"]).isdigit()
                  else str(r["item_id"]))[:a.n]
    ads = [Ad.from_item(r) for r in rows]
    gate("warm up the name index", ads[0], known_names=names)
    _source_facts.cache_clear()
    cold, failing, kinds = [], [], Counter()
    for ad in ads:
        t0 = time.perf_counter()
        res = gate(ad.title, ad, known_names=names)
        cold.append(time.perf_counter() - t0)
        if not res.ok:
            failing.append({"title": ad.title, "reasons": res.reasons})
            kinds.update(r.split(":")[0] for r in res.reasons)
    warm = np.full((a.reps, len(ads)), np.nan)
    for rep in range(a.reps):
        for j, ad in enumerate(ads):
            title = " ".join(ad.title.split()[:6]) + " for Your Lab"
            t0 = time.perf_counter()
            gate(title, ad, known_names=names)
            warm[rep, j] = time.perf_counter() - t0
    ms = lambda x, q: round(float(np.percentile(x, q)) * 1e3, 3)  # noqa: E731
    best = warm.min(axis=0)
    save("grounding_gate", {
        "ads": len(ads), "originals_pass": len(ads) - len(failing),
        "originals_pass_share": round((len(ads) - len(failing)) / len(ads), 4),
        "originals_failing": failing[:10], "failing_reason_kinds": dict(kinds),
        "cold_ms": {"p50": ms(cold, 50), "p99": ms(cold, 99)},
        "warm_ms": {"p50": ms(best, 50), "p99": ms(best, 99), "p99_single_run": ms(warm[0], 99)},
    })


if __name__ == "__main__":
    main()
