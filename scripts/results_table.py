#!/usr/bin/env python3
"""Collect gausstr-eval outputs (metrics.json) into the markdown results table of docs/results.md.

    python scripts/results_table.py NAME=DIR [NAME=DIR ...] [--times times.tsv] [--per-class]

Each DIR is a ``gausstr-eval --out`` directory; ``--times`` is a tab-separated file of
``NAME<TAB>seconds<TAB>steps`` written by scripts/run_results_cpu.sh (training wall time).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="NAME=DIR pairs, in table order")
    p.add_argument("--times", type=Path, help="NAME<TAB>seconds<TAB>steps training times")
    p.add_argument("--per-class", action="store_true", help="also print a per-class IoU table")
    args = p.parse_args(argv)
    times = {}
    if args.times and args.times.is_file():
        for line in args.times.read_text().splitlines():
            if line.strip():
                name, seconds, steps = line.split("\t")
                times[name] = (float(seconds), int(steps))
    rows, per_class = [], {}
    for item in args.runs:
        name, _, directory = item.partition("=")
        path = Path(directory) / "metrics.json"
        if not path.is_file():
            print(f"results_table: missing {path}", file=sys.stderr)
            return 1
        m = json.loads(path.read_text())
        s = m["summary"]
        t = times.get(name)
        train = f"{t[0] / 60:.1f} min / {t[1]} steps" if t else "-"
        rows.append(
            f"| {name} | {fmt(s['iou'])} | {fmt(s['miou'])} | {fmt(s['miou_zero_shot'])} | "
            f"{fmt(s['rayiou'])} | {s['scenes']} | {train} |"
        )
        per_class[name] = m["occupancy"]["per_class_iou"]
    print("| model | IoU | mIoU (all classes) | mIoU (w/o others, other_flat) | RayIoU | scenes | training |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(rows))
    if args.per_class:
        names = list(per_class)
        classes = list(next(iter(per_class.values())))
        print()
        print("| class | " + " | ".join(names) + " |")
        print("| --- | " + " | ".join("---:" for _ in names) + " |")
        for c in classes:
            print(f"| {c} | " + " | ".join(fmt(per_class[n][c]) for n in names) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
