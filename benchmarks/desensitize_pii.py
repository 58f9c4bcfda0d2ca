"""Personal data in captions: recall and precision per entity type of ``sdguard desensitize``'s
regex-only Presidio registry on the planted caption benchmark (``tests/pii_captions.py``), side by
side with the same recognizers' raw findings (no overlap resolution, no span fixes), over several
generated sets; and the cost per caption.

    python benchmarks/desensitize_pii.py            # 5 sets of 1500 captions, ~30 s

Writes ``benchmarks/results/desensitize_pii.json`` (medians and minima over the sets).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", type=int, default=5)
    ap.add_argument("--captions", type=int, default=1500)
    ap.add_argument("--results", default=str(HERE / "results" / "desensitize_pii.json"))
    args = ap.parse_args(argv)
    from finetune_new_artwork import machine, write_results
    from pii_captions import make_captions, score

    from sdguard.harden.desensitize.pii import (
        REGEX_ENTITIES,
        PiiScrubber,
        check_entities,
        parse_policy,
    )

    t0 = time.perf_counter()
    entities = check_entities([], None)
    scrubber = PiiScrubber(entities, parse_policy(["replace"], entities))
    load_seconds = time.perf_counter() - t0
    per: dict[str, dict[str, list]] = {e: {"recall": [], "precision": [], "raw_recall": [], "raw_precision": []}
                                       for e in REGEX_ENTITIES}
    ms = []
    planted = {e: 0 for e in REGEX_ENTITIES}
    for seed in range(args.sets):
        captions = make_captions(args.captions, seed=seed)
        t0 = time.perf_counter()
        found = [[f.to_dict() for f in scrubber.analyze(c["text"])] for c in captions]
        ms.append(1000 * (time.perf_counter() - t0) / len(captions))
        raw = [[{"entity": r.entity_type, "start": r.start, "end": r.end}
                for r in scrubber.analyzer.analyze(c["text"], language="en")] for c in captions]
        ours, theirs = score(captions, found), score(captions, raw)
        for e in REGEX_ENTITIES:
            planted[e] += ours[e]["planted"]
            per[e]["recall"].append(ours[e]["recall"])
            per[e]["precision"].append(ours[e]["precision"])
            per[e]["raw_recall"].append(theirs[e]["recall"])
            per[e]["raw_precision"].append(theirs[e]["precision"])
    table = {}
    print(f"{'entity':<14} {'planted':>7} {'recall':>14} {'precision':>14} {'raw recall':>11} {'raw precision':>14}")
    for e, v in per.items():
        row = {k: {"median": statistics.median(x), "min": min(x)} for k, x in v.items()}
        row["planted"] = planted[e]
        table[e] = row
        print(f"{e:<14} {planted[e]:>7} {row['recall']['median']:>7.3f} ({row['recall']['min']:.3f}) "
              f"{row['precision']['median']:>7.3f} ({row['precision']['min']:.3f}) {row['raw_recall']['median']:>11.3f} "
              f"{row['raw_precision']['median']:>14.3f}")
    print(f"analyzer load {load_seconds:.1f} s; {statistics.median(ms):.2f} ms per caption (median of {args.sets} sets)")
    result = {"benchmark": "desensitize_pii", "sets": args.sets, "captions_per_set": args.captions,
              "per_entity": table, "analyzer_load_seconds": round(load_seconds, 2),
              "ms_per_caption_median": round(statistics.median(ms), 3),
              "goal": {"recall_min": 0.99, "precision_min": 0.95,
                       "met": all(r["recall"]["min"] >= 0.99 and r["precision"]["min"] >= 0.95 for r in table.values())},
              "machine": machine()}
    write_results(args.results, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
