"""The evaluation report: eval.json (everything), eval.csv (one row per object and variant, plus
means), eval.md (readable tables with the protocol), and rich tables for the terminal.

Means are over the objects scored successfully, per metric, ignoring n/a values; every
table of means says how many objects it covers, and when variants scored different objects
the comparison says so and adds the means over the objects every variant scored. PSNR is
finite (capped per view at the protocol's psnr_max_db); an infinite value from elsewhere would
be written as the string "inf" in JSON, so the file stays standard JSON.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import time
from dataclasses import asdict
from pathlib import Path

from o3dcli.eval.protocol import higher_is_better
from o3dcli.eval.runner import EvalRun, Variant

REPORT_FORMAT = "o3d-eval"
REPORT_VERSION = 1
DOC = "docs/eval-protocol.md"


def versions() -> dict[str, str]:
    from o3dcli import __version__
    from o3dcli.sysinfo import library_version

    out = {"o3dcli": __version__, "python": platform.python_version()}
    for lib in ("torch", "numpy", "scipy", "open3d", "trimesh"):
        out[lib] = library_version(lib)
    return out


def metric_means(run: EvalRun, rows: list) -> dict:
    """The mean of every metric of the protocol over ``rows`` (None where no row has it)."""
    mean = {}
    for key in run.protocol.metric_keys():
        vals = [r.metrics[key] for r in rows if r.metrics.get(key) is not None]
        mean[key] = sum(vals) / len(vals) if vals else None
    return mean


def variant_summary(run: EvalRun, v: Variant) -> dict:
    """Mean of every metric over the variant's successful objects, counts and mean timings."""
    rows = [r for r in run.results if r.variant == v.name]
    ok = [r for r in rows if r.status == "ok"]
    mean = metric_means(run, ok)

    def avg(vals):
        vals = [x for x in vals if x is not None]
        return round(sum(vals) / len(vals), 3) if vals else None

    return {"mean": mean, "objects_ok": len(ok), "objects_failed": len(rows) - len(ok),
            "gen_seconds_mean": avg(r.gen_seconds for r in rows), "eval_seconds_mean": avg(r.eval_seconds for r in ok)}


def common_objects(run: EvalRun) -> list[str]:
    """The objects every variant scored successfully, in benchmark order."""
    ok = {(r.object, r.variant) for r in run.results if r.status == "ok"}
    return [o.name for o in run.objects if all((o.name, v.name) in ok for v in run.variants)]


def same_objects(run: EvalRun) -> bool:
    """Whether every variant's means are over the same objects (a fair side-by-side comparison)."""
    scored = [{r.object for r in run.results if r.variant == v.name and r.status == "ok"} for v in run.variants]
    return all(s == scored[0] for s in scored)


def common_means(run: EvalRun) -> dict[str, dict]:
    """Each variant's mean of every metric over common_objects (None where it has none)."""
    names = set(common_objects(run))
    return {v.name: metric_means(run, [r for r in run.results if r.variant == v.name and r.object in names])
            for v in run.variants}


def scored_text(s: dict) -> str:
    """"n scored / n objects" of a variant_summary."""
    return f"{s['objects_ok']}/{s['objects_ok'] + s['objects_failed']}"


def partial_mean_text(s: dict) -> str:
    """For a variant_summary with failed objects, what its means are over ("" when none failed):
    a tool that fails on the hard objects must not read as scoring better."""
    if not s["objects_failed"]:
        return ""
    return f"mean of the {scored_text(s)} objects scored; {s['objects_failed']} failed"


def different_objects_note(run: EvalRun) -> str:
    """One sentence for a comparison whose variants scored different objects ("" when they did not)."""
    if same_objects(run):
        return ""
    counts = ", ".join(f"{v.name} {scored_text(variant_summary(run, v))}" for v in run.variants)
    common = common_objects(run)
    tail = (f"only {len(common)} object(s) were scored by every variant" if common
            else "no object was scored by every variant, so they cannot be compared")
    return f"The variants' means are over different objects ({counts} scored): {tail}."


def _jsonable(x):
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def to_json(run: EvalRun) -> dict:
    return _jsonable({
        "format": REPORT_FORMAT, "version": REPORT_VERSION,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(run.started)), "seconds": run.seconds,
        "jobs": run.jobs,
        "benchmark": {"name": run.benchmark, "data": run.data,
                      "objects": [{"name": o.name, "source": o.source, "seed": o.seed, "appearance": o.appearance,
                                   "file_name": o.file_name}
                                  for o in run.objects]},
        "protocol": {**run.protocol.to_json(), "document": DOC},
        "lpips_weights": run.lpips,
        "versions": versions(),
        "variants": [{"name": v.name, "source": v.source, "assets": str(v.assets_dir or v.predictions or ""),
                      "meta": v.meta, "config": v.config.to_dict() if v.config is not None else None,
                      **variant_summary(run, v)} for v in run.variants],
        "results": [asdict(r) for r in run.results],
        **({"comparison": {"same_objects": same_objects(run), "common_objects": common_objects(run),
                           "common_means": common_means(run)}} if len(run.variants) > 1 else {}),
    })


HUGE = 1e6
"""From here a metric is shown in 3 significant digits (a prediction at another scale, --align none:
1.2e+29, not 30 digits across the table)."""


def fmt(key: str, value) -> str:
    """A metric for people: n/a, inf, or rounded to what its scale needs."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if abs(value) >= HUGE:
        return f"{value:.3g}"
    if key.startswith("psnr"):
        return f"{value:.2f}"
    if key.startswith("chamfer"):
        return f"{value:.5f}"
    if key.endswith("seconds"):
        return f"{value:.2f}"
    return f"{value:.4f}"


def header(key: str) -> str:
    return f"{key} {'↑' if higher_is_better(key) else '↓'}"


def _csv(key: str, value) -> str:
    """A metric for a CSV cell: empty when there is none (so the column stays numeric), else as fmt."""
    text = fmt(key, value)
    return "" if text == "n/a" else text


def to_csv(run: EvalRun) -> str:
    """One row per object and variant, then each variant's MEAN row (status "mean"; where objects
    failed, its error cell says over how many it is); an empty cell is a metric that does not apply
    or was not computed."""
    keys = run.protocol.metric_keys()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["variant", "object", "status", "kind", *keys, "gen_seconds", "gen_cached", "eval_seconds",
                "align_scale", "error"])
    for v in run.variants:
        for r in (r for r in run.results if r.variant == v.name):
            scale = r.alignment["scale"] if r.alignment else ""
            w.writerow([v.name, r.object, r.status, r.kind or "", *(_csv(k, r.metrics.get(k)) for k in keys),
                        _csv("seconds", r.gen_seconds), "" if r.gen_cached is None else r.gen_cached,
                        _csv("seconds", r.eval_seconds), scale, r.error or ""])
        s = variant_summary(run, v)
        w.writerow([v.name, "MEAN", "mean", "", *(_csv(k, s["mean"][k]) for k in keys),
                    _csv("seconds", s["gen_seconds_mean"]), "", _csv("seconds", s["eval_seconds_mean"]), "",
                    partial_mean_text(s)])
    return buf.getvalue()


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(run: EvalRun) -> str:
    p = run.protocol
    keys = p.metric_keys()
    out = [f"# o3d eval: {run.benchmark}", "",
           f"{len(run.objects)} object(s), {len(run.variants)} variant(s), {run.seconds:.1f} s"
           + (f" in {run.jobs} processes (each object's seconds below are its own: they overlap)" if run.jobs > 1 else "")
           + ". "
           f"Protocol {p.version} ({DOC}): {len(p.azimuths)} views at elevation(s) "
           f"{sorted(set(p.elevations))}, azimuths {list(p.azimuths)}, radius {p.radius}, fov {p.fov_deg} deg, "
           f"{p.size} px, GT {p.shading} shading, predicted meshes {p.mesh_shading}; {p.surface_points} surface "
           f"points (seed {p.sample_seed}); volume IoU at {p.iou_resolution}^3; alignment: {p.align}; "
           f"image metrics over {'the novel views only (view 0, the input view, left out)' if p.novel_views else 'every view'}; "
           f"LPIPS: {'VGG, ' + run.lpips if run.lpips else 'n/a (no --lpips-weights)'}.", ""]
    if len(run.variants) > 1:
        rows = []
        for v in run.variants:
            s = variant_summary(run, v)
            rows.append([v.name, scored_text(s), *(fmt(k, s["mean"][k]) for k in keys)])
        out += ["## Means by variant", "", _md_table(["variant", "scored", *map(header, keys)], rows), ""]
        note = different_objects_note(run)
        if note:
            common = common_objects(run)
            out += [f"**{note}**", ""]
            if common:
                means = common_means(run)
                rows = [[v.name, f"{len(common)}/{len(run.objects)}", *(fmt(k, means[v.name][k]) for k in keys)]
                        for v in run.variants]
                out += [f"Means over the {len(common)} object(s) every variant scored ({', '.join(common)}):", "",
                        _md_table(["variant", "scored", *map(header, keys)], rows), ""]
    for v in run.variants:
        s = variant_summary(run, v)
        meta = ", ".join(_meta_text(k, val) for k, val in v.meta.items())
        out += [f"## {v.name}", "", f"Source: `{v.source}`" + (f"; {meta}" if meta else "") +
                f". {s['objects_ok']} ok, {s['objects_failed']} failed; mean seconds per object: generation "
                f"{fmt('seconds', s['gen_seconds_mean'])} (what computing it took, also for assets taken from the cache), scoring {fmt('seconds', s['eval_seconds_mean'])}.", ""]
        rows = []
        for r in (r for r in run.results if r.variant == v.name):
            rows.append([r.object, r.status, r.kind or "", *(fmt(k, r.metrics.get(k)) for k in keys),
                         fmt("seconds", r.gen_seconds), " ".join((r.error or "").split())])
        rows.append(["**mean**", scored_text(s), "", *(fmt(k, s["mean"][k]) for k in keys),
                     fmt("seconds", s["gen_seconds_mean"]), partial_mean_text(s)])
        out += [_md_table(["object", "status", "kind", *map(header, keys), "gen s", "error"], rows), ""]
    out += ["## Columns", "", *column_key(run), ""]
    out += ["## Versions", "", ", ".join(f"{k} {val}" for k, val in versions().items()), ""]
    return "\n".join(out)


def _meta_text(key: str, value) -> str:
    if key == "trained":
        return "trained weights" if value else "UNTRAINED (seeded random init)"
    if key == "sha256" and isinstance(value, dict):
        return "sha256 " + ", ".join(f"{role} {digest[:12]}" for role, digest in value.items() if "/" not in role)
    return f"{key} {value}"


def column_key(run: EvalRun) -> list[str]:
    """What each column of the tables means, with its units (full text: docs/eval-protocol.md)."""
    p = run.protocol
    ts = ", ".join(k.split("@")[1] for k in p.metric_keys() if k.startswith("fscore@"))
    return [
        "↑ higher is better, ↓ lower is better; means are over the objects scored (**scored**: objects scored "
        "/ objects in the run), ignoring n/a. "
        f"Lengths are in units of the ground truth's longest side (normalised to 1). Definitions: {DOC}.",
        "",
        "- **kind**: what was scored: `mesh`, `gaussians` (their renders and centres) or `views` (the "
        "generated images).",
        f"- **psnr** (dB) and **ssim**: the {int(p.image_views().sum())} scored views against the ground truth's, "
        f"over every pixel on white (PSNR capped at {p.psnr_max_db:g} dB per view: identical views score "
        f"{p.psnr_max_db:g}, not infinity); **psnr_masked** and **ssim_masked**: over the pixels either silhouette "
        "covers; n/a for an object whose ground truth has no texture (its colour is unknown). **lpips**: "
        "VGG LPIPS, n/a without `--lpips-weights`. **mask_iou**: IoU of the silhouettes (alpha > 0.5).",
        f"- **chamfer**: the mean of **chamfer_pred_to_gt** (accuracy) and **chamfer_gt_to_pred** "
        f"(completeness), mean L2 distances between {p.surface_points:,} surface samples of each side.",
        f"- **fscore@t** (t = {ts}): harmonic mean of the share of predicted samples within t of the ground "
        "truth and the share of ground-truth samples within t of the prediction.",
        f"- **volume_iou**: IoU of the insides on a {p.iou_resolution}^3 grid (n/a for Gaussians). "
        "**normal_consistency**: mean |cos| between each sample's normal and its nearest neighbour's.",
        "- **gen s**: seconds to generate the asset (n/a when scoring existing predictions).",
    ]


REPORT_FILES = ("eval.json", "eval.csv", "eval.md")


def write_reports(run: EvalRun, out: Path) -> list[Path]:
    """eval.json, eval.csv and eval.md in ``out`` (written atomically)."""
    from o3dcli.atomic import atomic_write_text

    out = Path(out)
    paths = [out / name for name in REPORT_FILES]
    atomic_write_text(paths[0], json.dumps(to_json(run), indent=1, allow_nan=False))
    atomic_write_text(paths[1], to_csv(run))
    atomic_write_text(paths[2], to_markdown(run))
    return paths


TABLE_KEYS = ("psnr", "ssim", "lpips", "mask_iou", "chamfer", "volume_iou", "normal_consistency")
SHORT = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "mask_iou": "mIoU", "chamfer": "CD", "volume_iou": "vIoU",
         "normal_consistency": "NC"}


def _table_keys(run: EvalRun) -> list[str]:
    """The terminal's subset of the metrics (the files hold all): the middle F-score threshold
    only, and no column that is n/a everywhere (e.g. LPIPS without weights)."""
    f = [k for k in run.protocol.metric_keys() if k.startswith("fscore@")]
    keys = list(TABLE_KEYS)
    keys = keys[:5] + f[len(f) // 2:len(f) // 2 + 1] + keys[5:]
    return [k for k in keys if any(r.metrics.get(k) is not None for r in run.results)] or keys


def _new_table(run: EvalRun, title: str, first: str, names: list[str], show_gen: bool):
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column(first, overflow="fold", min_width=min(24, max(map(len, names + [first]))))
    for k in _table_keys(run):
        name = SHORT.get(k, k.replace("fscore", "F"))
        t.add_column(f"{name}{'↑' if higher_is_better(k) else '↓'}", justify="right", no_wrap=True)
    if show_gen:
        t.add_column("gen s", justify="right", no_wrap=True)
    return t


def _cells(run: EvalRun, values: dict) -> list[str]:
    return [fmt(k, values.get(k)) if k != "chamfer" or values.get(k) is None or abs(values[k]) >= HUGE
            else f"{values[k]:.4f}" for k in _table_keys(run)]


def object_table(run: EvalRun, v: Variant):
    """A rich table: one row per object and the mean (the terminal's subset of the metrics)."""
    from rich.markup import escape

    show_gen = v.config is not None
    rows = [r for r in run.results if r.variant == v.name]
    t = _new_table(run, f"o3d eval: {escape(run.benchmark)} / {escape(v.name)}", "object",
                   [r.object for r in rows], show_gen)
    n = len(_table_keys(run))
    for r in rows:
        gen = [fmt("seconds", r.gen_seconds)] if show_gen else []
        if r.status == "ok":
            t.add_row(escape(r.object), *_cells(run, r.metrics), *gen)
        else:  # the error itself was printed when it happened and is in the report files
            t.add_row(escape(r.object), "[red]failed[/red]", *[""] * (n - 1), *gen)
    s = variant_summary(run, v)
    gen = [fmt("seconds", s["gen_seconds_mean"])] if show_gen else []
    t.add_section()
    t.add_row(f"[bold]mean[/bold]{f' ({scored_text(s)} scored)' if s['objects_failed'] else ''}",
              *_cells(run, s["mean"]), *gen)
    return t


def comparison_table(run: EvalRun):
    """Variants side by side (means)."""
    from rich.markup import escape

    show_gen = any(v.config is not None for v in run.variants)
    t = _new_table(run, "o3d eval: variants (means)", "variant", [v.name for v in run.variants], show_gen)
    t.add_column("ok", justify="right", no_wrap=True)
    for v in run.variants:
        s = variant_summary(run, v)
        gen = [fmt("seconds", s["gen_seconds_mean"])] if show_gen else []
        t.add_row(escape(v.name), *_cells(run, s["mean"]), *gen, scored_text(s))
    note = different_objects_note(run)
    if note:
        common = common_objects(run)
        if common:  # the fair comparison: the same objects on every row
            t.add_section()
            means = common_means(run)
            for v in run.variants:
                gen = [""] if show_gen else []
                t.add_row(f"{escape(v.name)}*", *_cells(run, means[v.name]), *gen, f"{len(common)}/{len(run.objects)}")
        t.caption = escape(note) + (" Rows marked * are the means over those objects." if common else "")
        t.caption_justify = "left"
    return t
