"""scripts/ablation_table.py: per-seed means, spread, paired wins, and merging seeds run apart."""

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def abl(script_module):
    return script_module("ablation_table")


def write_eval(out: Path, folder: str, rows: list[tuple[str, str, dict]], seconds: dict[str, float] | None = None):
    """rows: (variant-sN, object, metrics)."""
    results = [{"object": o, "variant": v, "status": "ok", "metrics": m} for v, o, m in rows]
    results.append({"object": "broken", "variant": rows[0][0], "status": "failed", "metrics": {}})
    names = sorted({v for v, _, _ in rows})
    variants = [{"name": n, "gen_seconds_mean": (seconds or {}).get(n)} for n in names]
    (out / folder).mkdir(parents=True, exist_ok=True)
    (out / folder / "eval.json").write_text(json.dumps({"variants": variants, "results": results}))


def make_round(out: Path, seeds: list[int]) -> None:
    """decoupled scores F 0.4 + 0.1 seed; joint scores 0.5 on object a and 0.3 on b (+0.1 seed)."""
    rows, secs = [], {}
    for s in seeds:
        rows += [(f"decoupled-s{s}", "a", {"fscore@0.05": 0.4 + 0.1 * s, "chamfer": 0.1}),
                 (f"decoupled-s{s}", "b", {"fscore@0.05": 0.4 + 0.1 * s, "chamfer": 0.1}),
                 (f"joint-s{s}", "a", {"fscore@0.05": 0.5 + 0.1 * s, "chamfer": 0.05}),
                 (f"joint-s{s}", "b", {"fscore@0.05": 0.3 + 0.1 * s, "chamfer": 0.2})]
        secs.update({f"decoupled-s{s}": 10.0 + s, f"joint-s{s}": 20.0})
    write_eval(out, "eval-mesh", rows, secs)


def row(text: str, variant: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {variant} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_folder_table_means_spread_and_wins(abl, tmp_path):
    make_round(tmp_path, [0, 2])
    text = abl.table(abl.load_source(tmp_path))
    head = row(text, "variant")
    dec, joint = row(text, "decoupled"), row(text, "joint")
    f = head.index("F@0.05 ↑")
    # decoupled: seed 0 mean 0.4, seed 2 mean 0.6 -> 0.5 ± 0.1; joint: 0.4 and 0.6 as well
    assert dec[1] == "0,2" and dec[f] == "0.500 ± 0.100" and joint[f] == "0.500 ± 0.100"
    assert dec[head.index("CD ↓")] == "0.1000 ± 0.0000"
    assert dec[-1] == "11.0 ± 1.0" and joint[-1] == "20.0 ± 0.0"
    assert head[:3] == ["variant", "seeds", "views PSNR ↑"] and head[-1] == "s/object"
    wins = text.split("Paired with decoupled")[1]
    cells = row(wins, "joint")
    heads = row(wins, "variant")
    # joint beats decoupled on object a only, in both seeds: 2 of 4 pairs; Chamfer likewise
    assert cells[heads.index("F@0.05")] == "2/4" and cells[heads.index("CD")] == "2/4"
    assert cells[heads.index("views PSNR")] == "n/a"  # no eval-views folder
    assert text.startswith("2 held-out synthetic objects")


def test_saved_seeds_merge_into_the_same_table(abl, tmp_path):
    make_round(tmp_path / "both", [0, 2])
    make_round(tmp_path / "s0", [0])
    make_round(tmp_path / "s2", [2])
    abl.main([str(tmp_path / "s0"), "--save", str(tmp_path / "s0.json")])
    abl.main([str(tmp_path / "s2"), "--save", str(tmp_path / "s2.json")])
    merged = abl.merge({p: abl.load_source(tmp_path / p) for p in ("s0.json", "s2.json")})
    assert abl.table(merged) == abl.table(abl.load_source(tmp_path / "both"))


def test_the_same_run_from_two_sources_is_refused(abl, tmp_path):
    make_round(tmp_path / "x", [1])
    make_round(tmp_path / "y", [1])
    with pytest.raises(SystemExit, match="decoupled seed 1 is in both"):
        abl.merge({"x": abl.load_source(tmp_path / "x"), "y": abl.load_source(tmp_path / "y")})


def test_unknown_sources_are_refused(abl, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no eval"):
        abl.load_source(tmp_path / "empty")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(SystemExit, match="neither an ablation folder"):
        abl.load_source(tmp_path / "other.json")


def test_seed_by_seed_and_paired_differences_in_the_papers_metric(abl, tmp_path):
    # Gaussians PSNR: decoupled 10, joint +1 on object a and +0.5 on b, joint+rgb joint's
    # +0.2 on a and -0.2 on b; every score +0.1 on seed 1
    offsets = {"decoupled": {"a": 0.0, "b": 0.0}, "joint": {"a": 1.0, "b": 0.5}, "joint+rgb": {"a": 1.2, "b": 0.3}}
    rows = [(f"{v}-s{s}", o, {"psnr": 10.0 + d + 0.1 * s}) for v, per in offsets.items() for o, d in per.items()
            for s in (0, 1)]
    write_eval(tmp_path, "eval-gaussians", rows)
    text = abl.table(abl.load_source(tmp_path))
    seed_part = text.split("Seed by seed")[1].split("Paired differences")[0]
    assert row(seed_part, "variant") == ["variant", "Gaussians PSNR, seed 0 / 1"]
    assert row(seed_part, "decoupled")[1] == "10.00 / 10.10" and row(seed_part, "joint")[1] == "10.75 / 10.85"
    paired = text.split("Paired differences in Gaussians PSNR")[1]
    assert row(paired, "variant") == ["variant", "vs decoupled", "vs joint", "higher than decoupled", "higher than joint"]
    # joint - decoupled: 1, 0.5, 1, 0.5 -> mean 0.75, sd 0.289, standard error 0.144
    assert row(paired, "joint") == ["joint", "+0.75 ± 0.14 dB", "-", "4/4", "-"]
    # joint+rgb - joint: +0.2, -0.2 twice -> mean 0, standard error 0.115; higher on 2 of 4
    assert row(paired, "joint+rgb") == ["joint+rgb", "+0.75 ± 0.26 dB", "+0.00 ± 0.12 dB", "4/4", "2/4"]


def test_one_seed_gives_no_seed_table(abl, tmp_path):
    make_round(tmp_path, [0])
    text = abl.table(abl.load_source(tmp_path))
    assert "Seed by seed" not in text and "Paired differences" not in text  # no Gaussians PSNR scored
