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
    from o3dcli.inputs import image_rank

    other = [tmp_path / "x.txt", tmp_path / "x.jpg", tmp_path / "x.png", tmp_path / "x.dat"]
    assert [i.name for i in assign_names(other, tmp_path / "new", rank=image_rank)] == ["x-3", "x", "x-2", "x-4"]
    assert unique_names(other, rank=lambda p: 0 if p.suffix == ".png" else 1) == ["x-2", "x-3", "x", "x-4"]
    # a camera's RAW (read by no o3d) beside its JPEG, an unread HEIC beside a PNG of it: the one o3d
    # reads, or may read, claims the name; an image o3d does not read comes before other files
    raw = [tmp_path / n for n in ("IMG_0001.CR2", "IMG_0001.JPG", "DSC_0002.ARW", "DSC_0002.jpg", "a.AAE",
                                  "a.psd", "b.heic", "b.txt")]
    assert [i.name for i in assign_names(raw, tmp_path / "new", rank=image_rank)] \
        == ["IMG_0001-2", "IMG_0001", "DSC_0002-2", "DSC_0002", "a-2", "a", "b", "b-2"]


def test_an_input_keeps_its_folder_when_the_name_before_it_comes_free(tmp_path, good_images):
    """x.jpg (damaged) and x.png: x.jpg claims `x` and fails, x.png is made as `x-2`; with x.jpg
    gone, x.png was made a second time, as `x`."""
    from typer.testing import CliRunner

    from o3dcli.cli import app

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "x.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (photos / "x.png").write_bytes((good_images / "apple.png").read_bytes())
    out = tmp_path / "out"

    def run():
        return CliRunner().invoke(app, ["generate", str(photos), "-o", str(out), "--stop-after", "preprocess",
                                        "--no-progress"])

    assert run().exit_code == 1
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["x-2"]
    (photos / "x.jpg").unlink()
    res = run()
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["x-2"]
    [item] = json.loads((out / "o3d-report.json").read_text())["items"]
    assert (item["name"], item["status"], item["cached"]) == ("x-2", "ok", ["preprocess"])  # nothing made again


def test_a_kept_folder_is_found_past_any_number_of_free_names(tmp_path):
    from o3dcli.naming import OutputFolders, assign_names, fit_name, write_asset_meta

    src = tmp_path / "x.png"
    src.write_bytes(b"photo")
    out = tmp_path / "out"
    (out / "x-10").mkdir(parents=True)  # x, x-2 ... x-9 deleted by the user
    write_asset_meta(out / "x-10", src)
    (out / "x-11").mkdir()
    (tmp_path / "x.jpg").write_bytes(b"another photo")
    write_asset_meta(out / "x-11", tmp_path / "x.jpg")
    assert [i.name for i in assign_names([tmp_path / "x.jpg", src], out)] == ["x-11", "x-10"]
    # a long name is cut to fit with its hash, and the suffix after it
    long = tmp_path / ("y" * 250 + ".png")
    long.write_bytes(b"long")
    name = fit_name("y" * 250, "-12")
    assert name != "y" * 250 + "-12"
    (out / name).mkdir()
    write_asset_meta(out / name, long)
    assert [i.name for i in assign_names([long], out)] == [name]
    assert OutputFolders(out, str.lower).kept("X", src, set()) == "x-10"  # a disk that ignores case
    assert OutputFolders(out, lambda n: n).kept("x", src, {"x-10"}) is None  # given out already
