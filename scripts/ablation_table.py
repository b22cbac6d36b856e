"""The ablation table: every variant of scripts/ablation.sh, mean over its seeds and the spread.

    python scripts/ablation_table.py runs/ablation > runs/ablation/ablation-table.md

Reads OUT/eval-views, OUT/eval-gaussians and OUT/eval-mesh (eval.json each; a missing one
gives n/a columns). Variants are named "<variant>-s<seed>"; each cell is the mean over seeds of
the per-seed mean over objects, followed by "± half the range over seeds" when there are several.
Also prints, per object, how often each variant beats the decoupled baseline (paired by object
and seed), which is what a small benchmark can resolve better than the means.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

ORDER = ["decoupled", "joint", "joint+ccm", "joint+rgb", "joint+ccm+rgb"]
COLUMNS = [  # (eval folder, metric, header, decimals, higher is better)
    ("eval-views", "psnr", "views PSNR", 2, True),
    ("eval-views", "ssim", "views SSIM", 3, True),
    ("eval-gaussians", "psnr", "Gaussians PSNR", 2, True),
    ("eval-gaussians", "mask_iou", "Gaussians mIoU", 3, True),
    ("eval-mesh", "psnr", "mesh PSNR", 2, True),
    ("eval-mesh", "chamfer", "CD", 4, False),
    ("eval-mesh", "fscore@0.05", "F@0.05", 3, True),
    ("eval-mesh", "fscore@0.1", "F@0.1", 3, True),
]


def split_name(name: str) -> tuple[str, int | None]:
    m = re.fullmatch(r"(.+)-s(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, None)


def load(out: Path, folder: str) -> dict | None:
    p = out / folder / "eval.json"
    return json.loads(p.read_text()) if p.is_file() else None


def cell(values: list[float], decimals: int) -> str:
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    text = f"{mean:.{decimals}f}"
    if len(values) > 1:
        text += f" ± {(max(values) - min(values)) / 2:.{decimals}f}"
    return text


def main(out: Path) -> None:
    reports = {f: load(out, f) for f in {c[0] for c in COLUMNS}}
    if not any(reports.values()):
        raise SystemExit(f"error: no eval-*/eval.json under {out}")
    # per-seed means: table[variant][(folder, metric)] -> [mean of seed 0, mean of seed 1, ...]
    table: dict[str, dict[tuple[str, str], list[float]]] = defaultdict(lambda: defaultdict(list))
    seeds: dict[str, set[int | None]] = defaultdict(set)
    seconds: dict[str, list[float]] = defaultdict(list)
    per_object: dict[tuple[str, str], dict[tuple[str, int | None, str], float]] = defaultdict(dict)
    for folder, rep in reports.items():
        if rep is None:
            continue
        for v in rep["variants"]:
            base, seed = split_name(v["name"])
            seeds[base].add(seed)
            for key, val in (v.get("mean") or {}).items():
                if val is not None:
                    table[base][folder, key].append(val)
            if folder == "eval-mesh" and v.get("gen_seconds_mean") is not None:
                seconds[base].append(v["gen_seconds_mean"])
        for r in rep["results"]:
            if r["status"] == "ok":
                base, seed = split_name(r["variant"])
                for key, val in r["metrics"].items():
                    if val is not None:
                        per_object[folder, key][base, seed, r["object"]] = val
    names = [n for n in ORDER if n in table] + sorted(n for n in table if n not in ORDER)
    n_obj = max((len({k[2] for k in d}) for d in per_object.values()), default=0)
    print(f"{n_obj} held-out synthetic objects; cells: mean over seeds ± half the range over seeds\n")
    head = ["variant", "seeds"] + [c[2] + (" ↑" if c[4] else " ↓") for c in COLUMNS] + ["s/object"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for n in names:
        row = [n, ",".join(str(s) for s in sorted(s for s in seeds[n] if s is not None)) or "-"]
        row += [cell(table[n].get((f, k), []), d) for f, k, _, d, _ in COLUMNS]
        row.append(cell(seconds[n], 1))
        print("| " + " | ".join(row) + " |")
    if "decoupled" in names:
        print("\nPaired with decoupled (same object, same seed): share of pairs where the variant is better\n")
        head = ["variant"] + [c[2] for c in COLUMNS]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for n in names:
            if n == "decoupled":
                continue
            row = [n]
            for f, k, _, _, up in COLUMNS:
                vals = per_object.get((f, k), {})
                pairs = [(v, vals[("decoupled", s, o)]) for (b, s, o), v in vals.items()
                         if b == n and ("decoupled", s, o) in vals]
                wins = sum((a > b) if up else (a < b) for a, b in pairs)
                row.append(f"{wins}/{len(pairs)}" if pairs else "n/a")
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
