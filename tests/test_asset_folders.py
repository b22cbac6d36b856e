"""Folders of assets given to `o3d mesh` / `o3d render`: expanded to the assets inside."""

from __future__ import annotations

from pathlib import Path

from o3dcli.io.assets import expand_asset_folders, folder_assets, is_one_asset

TRIANGLE = "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"


def _obj(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TRIANGLE)
    return path


def test_an_output_folder_expands_to_its_assets_and_an_asset_stays_one(tmp_path):
    out = tmp_path / "assets"
    _obj(out / "chair" / "model.obj")
    _obj(out / "apple" / "model.obj")
    _obj(out / ".o3d" / "items" / "x" / "model.obj")  # o3d's cache: hidden, left out
    (out / "notes").mkdir()  # a folder with no asset: not an input
    (out / "o3d-report.json").write_text("{}")
    notes: list[str] = []
    got = expand_asset_folders([out, out / "chair"], notes)
    assert got == [out / "apple", out / "chair", out / "chair"]  # duplicates are the commands' to drop
    assert notes == [f"{out}: 2 assets inside"]
    assert is_one_asset(out / "chair") and not is_one_asset(out)


def test_a_folder_of_mesh_files_expands_one_level_and_an_empty_one_is_kept(tmp_path):
    meshes = tmp_path / "meshes"
    _obj(meshes / "b.obj")
    _obj(meshes / "a.obj")
    (meshes / "readme.txt").write_text("not a mesh")
    _obj(meshes / "deeper" / "sub" / "c.obj")  # two levels down: not looked for
    assert folder_assets(meshes) == [meshes / "a.obj", meshes / "b.obj"]
    empty = tmp_path / "empty"
    empty.mkdir()
    notes: list[str] = []
    assert expand_asset_folders([meshes, empty], notes) == [meshes / "a.obj", meshes / "b.obj", empty]
    assert notes == [f"{meshes}: 2 assets inside"]
    # a folder holding a single mesh file is that asset, not a folder to expand
    _obj(tmp_path / "one" / "thing.obj")
    assert expand_asset_folders([tmp_path / "one"], notes) == [tmp_path / "one"]
    # ...unless asset folders sit beside it: then it is one of the folder's assets
    _obj(tmp_path / "one" / "chair" / "model.obj")
    assert expand_asset_folders([tmp_path / "one"], notes) == [tmp_path / "one" / "chair", tmp_path / "one" / "thing.obj"]
