"""o3dcli.naming: the names o3d gives its outputs fit the file system, with every name derived from them."""

import json

from o3dcli.naming import NAME_MAX_BYTES, clean_name, fit_name, next_free_name, safe_name

DERIVED = (".{}.o3d-new-4194304", ".{}.o3d-old-4194304", ".{}_turntable.mp4.tmp-4194304", ".{}.png.tmp-4194304")
"""Names o3d makes from an output's name: publish's staging folders, render's and eval's temporaries."""


def test_names_that_fit_are_kept_and_long_ones_are_cut_with_a_hash():
    for short in ("apple", "a" * NAME_MAX_BYTES, "椅" * (NAME_MAX_BYTES // 3), "my chair+1.final"):
        assert safe_name(short) == short  # existing outputs and caches go by these names
    assert safe_name("a/b:c?") == "a_b_c_" and safe_name(" ..") == "item"
    stems = ["a" * 250, "a" * 245 + "b" * 5, "椅" * 84, "椅子" * 41 + "x", "é" * 127]
    names = [safe_name(s) for s in stems]
    assert len(set(names)) == len(stems)  # long names alike in their start stay apart
    for stem, name in zip(stems, names):
        assert len(name.encode()) <= NAME_MAX_BYTES and name == safe_name(stem) == safe_name(name)
        start, tag = name[:-9], name[-9:]
        assert stem.startswith(start) and len(start.encode()) > NAME_MAX_BYTES - 12  # cut at a character's edge
        assert tag[0] == "-" and int(tag[1:], 16) >= 0
        for derived in DERIVED:
            assert len(derived.format(name).encode()) <= 255
    # -2, -3, ... fit too, and are told apart from the first name
    base = clean_name("椅" * 84)
    taken = {fit_name(base), fit_name(base, "-2")}
    name = next_free_name(base, taken.__contains__, make=lambda suffix: fit_name(base, suffix))
    assert name.endswith("-3") and name not in taken and len(name.encode()) <= NAME_MAX_BYTES
    assert name[:-2] == fit_name(base)[:len(name) - 2 - 9] + fit_name(base)[-9:]  # the same hash, cut 2 bytes sooner



def test_decomposed_accents_are_kept(tmp_path, good_images):
    import unicodedata

    from typer.testing import CliRunner

    from o3dcli.cli import app
    from o3dcli.naming import assign_names

    decomposed = unicodedata.normalize("NFD", "café crème")  # how older macOS file systems spell it
    assert decomposed != "café crème" and safe_name(decomposed) == "café crème"  # was "cafe_ cre_me"
    # an asset made before keeps its folder (and cache): it is not made again under the new name
    src = tmp_path / f"{decomposed}.png"
    src.write_bytes((good_images / "apple.png").read_bytes())
    out = tmp_path / "out"
    (out / "cafe_ cre_me").mkdir(parents=True)
    (out / "cafe_ cre_me" / "o3d-asset.json").write_text(json.dumps({"source": str(src)}))
    assert [i.name for i in assign_names([src], out)] == ["cafe_ cre_me"]
    res = CliRunner().invoke(app, ["generate", str(src), "-o", str(out), "--stop-after", "preprocess", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.is_dir()) == ["cafe_ cre_me"]
    # another photo's folder of that old name is not taken
    other = tmp_path / "other"
    other.mkdir()
    (other / f"{decomposed}.png").write_bytes((good_images / "pear.png").read_bytes())
    assert [i.name for i in assign_names([other / f"{decomposed}.png"], out)] == ["café crème"]


def test_names_differing_only_in_case_collide_where_the_disk_ignores_case(tmp_path):
    from o3dcli.naming import assign_names, ignores_case

    photos = tmp_path / "photos"
    photos.mkdir()
    sources = [photos / "Fox.png", photos / "fox.jpg"]
    out = tmp_path / "out"
    out.mkdir()
    if ignores_case(tmp_path):  # macOS, Windows: the real thing
        assert ignores_case(out) and [i.name for i in assign_names(sources, out)] == ["Fox", "fox-2"]
        return
    assert not ignores_case(out) and list(out.iterdir()) == []  # told by a file written there, and removed
    (out / ".o3d").mkdir()
    assert not ignores_case(out) and not ignores_case(out / "new" / "deeper")  # this disk tells case apart
    assert [i.name for i in assign_names(sources, out)] == ["Fox", "fox"]
    (out / "fox.txt").write_text("mine")
    (out / "Fox.txt").write_text("also mine")
    assert not ignores_case(out)  # two files, not one file found under both cases
    # A disk that ignores case, as seen from this one: an entry found again under its name in the
    # other case (here a hard link: the same file under both names)
    ci = tmp_path / "ci"
    ci.mkdir()
    (ci / "Notes.txt").write_text("")
    (ci / "nOTES.TXT").hardlink_to(ci / "Notes.txt")
    assert ignores_case(ci) and ignores_case(ci / "out")  # an output folder not made yet: its parent tells
    assert [i.name for i in assign_names(sources, ci / "out")] == ["Fox", "fox-2"]
    assert [i.name for i in assign_names(sources[::-1], ci / "out")] == ["fox", "Fox-2"]  # in the order given
    # such disks compare letters one by one: ß is not ss there
    sources = [photos / "Straße.png", photos / "Strasse.png"]
    assert [i.name for i in assign_names(sources, ci / "out")] == ["Straße", "Strasse"]


def test_a_file_given_beside_a_photo_of_the_same_stem_never_takes_its_name(tmp_path, good_images):
    """`o3d generate photos/*` on an iPhone folder also gets each photo's .AAE edit file: it fails,
    and the photo's asset was IMG_0001-2, moving to IMG_0001 (a second asset) once the .AAE went."""
    from typer.testing import CliRunner

    from o3dcli.cli import app
    from o3dcli.naming import assign_names, unique_names

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "IMG_0001.AAE").write_text("<?xml version='1.0'?><plist/>")
    (photos / "IMG_0001.png").write_bytes((good_images / "apple.png").read_bytes())
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["generate", *map(str, sorted(photos.iterdir())), "-o", str(out),
                                   "--stop-after", "preprocess", "--no-progress"])
    assert res.exit_code == 1, res.output  # the .AAE fails, as asked
    assert (out / "IMG_0001" / "input.png").is_file() and not (out / "IMG_0001-2").exists()
    report = json.loads((out / "o3d-report.json").read_text())
    assert {i["name"]: i["status"] for i in report["items"]} == {"IMG_0001": "ok", "IMG_0001-2": "failed"}
    # the given order is kept otherwise: between files of one kind, the first claims the name
    other = [tmp_path / "x.txt", tmp_path / "x.jpg", tmp_path / "x.png", tmp_path / "x.dat"]
    assert [i.name for i in assign_names(other, tmp_path / "new", preferred=lambda p: p.suffix in (".jpg", ".png"))] \
        == ["x-3", "x", "x-2", "x-4"]
    assert unique_names(other, preferred=lambda p: p.suffix == ".png") == ["x-2", "x-3", "x", "x-4"]
