"""The ablation table: every variant of scripts/ablation.sh, mean over its seeds and the spread.

    python scripts/ablation_table.py runs/ablation > runs/ablation/ablation-table.md
    python scripts/ablation_table.py runs/ablation --save docs/ablation/round2-s0.json
    python scripts/ablation_table.py docs/ablation/round2-s*.json      # seeds run in different sessions

Each SOURCE is an ablation output folder (its eval-views, eval-gaussians and eval-mesh
eval.json; a missing one gives n/a columns) or a results file written by --save, which keeps
only what the table needs (one record per object, variant, seed and metric, plus the seconds
per object), so seeds trained in different sessions, whose run folders are gone, still make
one table. Sources must not score the same variant and seed twice (an error names it).

Variants are named "<variant>-s<seed>"; each cell is the mean over seeds of the per-seed mean
over objects, followed by "± half the range over seeds" when there are several. Also prints, per
object, how often each variant beats the decoupled baseline (paired by object and seed), which
is what a small benchmark can resolve better than the means; with several seeds, the per-seed
means of the headline metrics; and the paired differences in the paper's metric (PSNR of the
Gaussian renders) against decoupled and against joint, with their standard errors.
"""

from __future__ import annotations

import argparse
import json
import re
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
SEED_COLUMNS = [("eval-gaussians", "psnr", "Gaussians PSNR", 2), ("eval-views", "psnr", "views PSNR", 2),
                ("eval-mesh", "fscore@0.05", "F@0.05", 3)]
PAIRED = ("eval-gaussians", "psnr", "Gaussians PSNR", "dB")  # the paper's Table 2 metric
RESULTS_FORMAT = "o3d-ablation-results"


def split_name(name: str) -> tuple[str, int | None]:
    m = re.fullmatch(r"(.+)-s(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, None)


def results_from_folder(out: Path) -> dict:
    """The table's inputs from OUT/eval-*/eval.json: records [folder, metric, variant, seed, object, value]
    and seconds [variant, seed, mean generation seconds per object]."""
    records, seconds = [], []
    found = False
    for folder in sorted({c[0] for c in COLUMNS}):
        p = out / folder / "eval.json"
        if not p.is_file():
            continue
        found = True
        rep = json.loads(p.read_text())
        wanted = {c[1] for c in COLUMNS if c[0] == folder}
        for r in rep["results"]:
            if r["status"] != "ok":
                continue
            base, seed = split_name(r["variant"])
            for key in sorted(wanted):
                val = r["metrics"].get(key)
                if val is not None:
                    records.append([folder, key, base, seed, r["object"], val])
        if folder == "eval-mesh":
            for v in rep["variants"]:
                if v.get("gen_seconds_mean") is not None:
                    seconds.append([*split_name(v["name"]), v["gen_seconds_mean"]])
    if not found:
        raise SystemExit(f"error: no eval-*/eval.json under {out}")
    return {"format": RESULTS_FORMAT, "version": 1, "records": records, "seconds": seconds}


def load_source(path: Path) -> dict:
    if path.is_dir():
        return results_from_folder(path)
    data = json.loads(path.read_text())
    if data.get("format") != RESULTS_FORMAT:
        raise SystemExit(f"error: {path} is neither an ablation folder nor a file written by --save")
    return data


def merge(sources: dict[str, dict]) -> dict:
    """One results dict from several; a (variant, seed) scored by two sources is an error."""
    owner: dict[tuple[str, int | None], str] = {}
    records, seconds = [], []
    for name, data in sources.items():
        runs = {(r[2], r[3]) for r in data["records"]}
        for run in sorted(runs, key=str):
            if run in owner:
                raise SystemExit(f"error: {run[0]} seed {run[1]} is in both {owner[run]} and {name}")
            owner[run] = name
        records += data["records"]
        seconds += data["seconds"]
    return {"format": RESULTS_FORMAT, "version": 1, "records": records, "seconds": seconds}


def cell(values: list[float], decimals: int) -> str:
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    text = f"{mean:.{decimals}f}"
    if len(values) > 1:
        text += f" ± {(max(values) - min(values)) / 2:.{decimals}f}"
    return text


def table(data: dict) -> str:
    # per_object[(folder, metric)][(variant, seed, object)] = value
    per_object: dict[tuple[str, str], dict[tuple[str, int | None, str], float]] = defaultdict(dict)
    for folder, key, base, seed, obj, val in data["records"]:
        per_object[folder, key][base, seed, obj] = val
    # per-seed means over objects: seed_means[variant][(folder, metric)] -> [mean of each seed]
    seed_means: dict[str, dict[tuple[str, str], list[float]]] = defaultdict(lambda: defaultdict(list))
    seeds: dict[str, set] = defaultdict(set)
    for fk, vals in per_object.items():
        groups: dict[tuple[str, int | None], list[float]] = defaultdict(list)
        for (base, seed, _), v in vals.items():
            groups[base, seed].append(v)
            seeds[base].add(seed)
        for (base, seed), vs in sorted(groups.items(), key=str):
            seed_means[base][fk].append(sum(vs) / len(vs))
    seconds: dict[str, list[float]] = defaultdict(list)
    for base, _, s in data["seconds"]:
        seconds[base].append(s)
    names = [n for n in ORDER if n in seeds] + sorted(n for n in seeds if n not in ORDER)
    n_obj = max((len({k[2] for k in d}) for d in per_object.values()), default=0)
    lines = [f"{n_obj} held-out synthetic objects; cells: mean over seeds ± half the range over seeds", ""]
    head = ["variant", "seeds"] + [c[2] + (" ↑" if c[4] else " ↓") for c in COLUMNS] + ["s/object"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in names:
        row = [n, ",".join(str(s) for s in sorted(s for s in seeds[n] if s is not None)) or "-"]
        row += [cell(seed_means[n].get((f, k), []), d) for f, k, _, d, _ in COLUMNS]
        row.append(cell(seconds[n], 1))
        lines.append("| " + " | ".join(row) + " |")
    if "decoupled" in names:
        lines += ["", "Paired with decoupled (same object, same seed): share of pairs where the variant is better", ""]
        head = ["variant"] + [c[2] for c in COLUMNS]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for n in names:
            if n == "decoupled":
                continue
            row = [n]
            for f, k, _, _, up in COLUMNS:
                vals = per_object.get((f, k), {})
                pairs = paired(vals, n, "decoupled")
                wins = sum((a > b) if up else (a < b) for a, b in pairs)
                row.append(f"{wins}/{len(pairs)}" if pairs else "n/a")
            lines.append("| " + " | ".join(row) + " |")
    lines += seed_table(per_object, names, seeds) + paired_table(per_object, names)
    return "\n".join(lines)


def seed_table(per_object: dict, names: list[str], seeds: dict[str, set]) -> list[str]:
    """Per variant, the mean over objects of each seed, side by side (only with several seeds)."""
    all_seeds = sorted({s for n in names for s in seeds[n] if s is not None})
    cols = [c for c in SEED_COLUMNS if (c[0], c[1]) in per_object]
    if len(all_seeds) < 2 or not cols:
        return []
    label = " / ".join(str(s) for s in all_seeds)
    lines = ["", "Seed by seed (mean over the objects)", ""]
    head = ["variant"] + [f"{c[2]}, seed {label}" for c in cols]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in names:
        row = [n]
        for f, k, _, d in cols:
            parts = []
            for s in all_seeds:
                vs = [v for (b, ss, _), v in per_object[f, k].items() if b == n and ss == s]
                parts.append(f"{sum(vs) / len(vs):.{d}f}" if vs else "-")
            row.append(" / ".join(parts))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def paired(vals: dict, variant: str, reference: str) -> list[tuple[float, float]]:
    """(variant's value, reference's value) for every (seed, object) both scored."""
    return [(v, vals[(reference, s, o)]) for (b, s, o), v in vals.items() if b == variant and (reference, s, o) in vals]


def paired_difference(vals: dict, variant: str, reference: str) -> tuple[float, float | None, int, int] | None:
    """(mean, standard error of the mean or None, wins, pairs) of variant - reference over the
    (seed, object) pairs both scored; None without pairs."""
    diffs = [a - b for a, b in paired(vals, variant, reference)]
    if not diffs:
        return None
    n = len(diffs)
    mean = sum(diffs) / n
    se = (sum((x - mean) ** 2 for x in diffs) / (n - 1) / n) ** 0.5 if n > 1 else None
    return mean, se, sum(x > 0 for x in diffs), n


def paired_table(per_object: dict, names: list[str]) -> list[str]:
    """Paired differences in the paper's metric against decoupled and against joint."""
    f, k, label, unit = PAIRED
    vals = per_object.get((f, k), {})
    refs = [r for r in ("decoupled", "joint") if r in names]
    if not vals or not refs:
        return []
    lines = ["", f"Paired differences in {label} (same object, same seed): mean ± standard error of the mean "
             "over the pairs, treating them as independent (pairs that share a seed are not, so this "
             "understates the uncertainty), and the pairs where the variant is higher", ""]
    head = ["variant"] + [f"vs {r}" for r in refs] + [f"higher than {r}" for r in refs]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in names:
        if n == "decoupled":
            continue
        diffs = [paired_difference(vals, n, r) if r != n else None for r in refs]
        cells = [("-" if d is None else f"{d[0]:+.2f}" + (f" ± {d[1]:.2f}" if d[1] is not None else "") + f" {unit}")
                 for d in diffs]
        cells += ["-" if d is None else f"{d[2]}/{d[3]}" for d in diffs]
        lines.append("| " + " | ".join([n] + cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+", type=Path, help="ablation output folders or --save files")
    ap.add_argument("--save", type=Path, help="also write the merged results here (JSON)")
    args = ap.parse_args(argv)
    data = merge({str(p): load_source(p) for p in args.sources})
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(data, indent=0) + "\n")
    print(table(data))


if __name__ == "__main__":
    main()
