"""The real-data loaders on small prepared layouts written here, and the preparation script's pure helpers on fake
extracted trees (no network, no registry)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from experiments import realdata
from sslcurate import CurationInputError

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_real_data.py"
spec = importlib.util.spec_from_file_location("prepare_real_data", SCRIPT)
prep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prep)  # puts scripts/ on sys.path for its real_pools package

from real_pools import images as pool_images, registries, satellite as pool_satellite, text as pool_text  # noqa: E402


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv(realdata.ROOT_ENV, str(tmp_path))
    return tmp_path


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------------------------------------------
# loaders

def test_real_data_root_follows_env(root):
    assert realdata.real_data_root() == root


def test_image_pool_reads_index(root):
    """Labels index the sorted class names; rows of one group share a group id."""
    pool = root / "images" / "tuxpaint"
    rows = [("animals/cat.png", "animals", "animals/cat"), ("animals/cat_mirror.png", "animals", "animals/cat"),
            ("food/apple.png", "food", "food/apple")]
    pool.mkdir(parents=True)
    with open(pool / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "group"), *rows])
    paths, labels, class_names, groups = realdata.image_pool("tuxpaint")
    assert paths == [pool / r[0] for r in rows]
    assert class_names == ["animals", "food"]
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 1]
    assert groups.dtype == np.int64 and groups[0] == groups[1] != groups[2]


def test_missing_pools_name_the_command(root):
    with pytest.raises(CurationInputError, match=r"prepare_real_data.py --only images"):
        realdata.image_pool("oxygen")
    with pytest.raises(CurationInputError, match=r"--only text"):
        realdata.text_pool()
    with pytest.raises(CurationInputError, match=r"--only satellite"):
        realdata.satellite_scenes()
    with pytest.raises(CurationInputError, match="unknown real image pool"):
        realdata.image_pool("cifar")


def test_text_pool_and_satellite_scenes(root):
    rows = [{"text": "a" * 400, "domain": "wiki", "group": "wiki:A"}, {"text": "b", "domain": "news", "group": "n"}]
    touch(root / "text" / "pool.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    assert realdata.text_pool() == rows
    scene = {"name": "s", "source": "x", "paths": ["x/b1.tif", "x/b2.tif"], "band_names": ["B1", "B2"],
             "dem": "x/dem.tif", "qa": None, "duplicates": []}
    touch(root / "satellite" / "index.json", json.dumps({"scenes": [scene], "skipped": []}).encode())
    (got,) = realdata.satellite_scenes()
    assert got["paths"] == [root / "satellite" / "x/b1.tif", root / "satellite" / "x/b2.tif"]
    assert got["dem"] == root / "satellite" / "x/dem.tif" and got["qa"] is None


# ----------------------------------------------------------------------------------------------------------------
# the script's helpers

def test_tuxpaint_index_groups_variants_and_skips_svg_only(tmp_path):
    stamps = tmp_path / "stamps"
    for rel in ("animals/birds/robin.png", "animals/birds/robin_mirror.png", "animals/amphibians/frog.png",
                "animals/amphibians/frog-1.png", "symbols/alphabets/english/filled/lowercase/a_filled.png",
                "symbols/alphabets/english/outlined/lowercase/a_outlined.png",
                "symbols/alphabets/english/filled/uppercase/A_filled.png", "food/banana.png",
                "food/banana.svg", "food/pear.svg"):
        touch(stamps / rel)
    rows, svg_only = pool_images.tuxpaint_index(stamps)
    assert svg_only == 1  # pear has no PNG; banana's SVG has one
    groups = {path: group for path, _, group in rows}
    assert groups["animals/birds/robin.png"] == groups["animals/birds/robin_mirror.png"] == "animals/robin"
    assert groups["animals/amphibians/frog.png"] == groups["animals/amphibians/frog-1.png"]
    assert groups["symbols/alphabets/english/filled/lowercase/a_filled.png"] == \
        groups["symbols/alphabets/english/outlined/lowercase/a_outlined.png"] != \
        groups["symbols/alphabets/english/filled/uppercase/A_filled.png"]
    assert {label for _, label, _ in rows} == {"animals", "symbols", "food"}
    assert pool_images.index_stats(rows)["items_in_shared_groups"] == 6


def test_icon_theme_index_groups_sizes_and_aliases(tmp_path):
    theme = tmp_path / "base"
    for size in ("16x16", "32x32"):
        touch(theme / size / "actions" / "edit-copy.png")
    touch(theme / "16x16" / "apps" / "kate.png")
    (theme / "16x16" / "places").mkdir()
    os.symlink("../actions/edit-copy.png", theme / "16x16" / "places" / "copy-alias.png")
    rows = pool_images.icon_theme_index(theme)
    assert [r[0] for r in rows] == ["16x16/actions/edit-copy.png", "16x16/apps/kate.png",
                                    "16x16/places/copy-alias.png", "32x32/actions/edit-copy.png"]
    assert [r[1] for r in rows] == ["actions", "apps", "places", "actions"]
    assert rows[0][2] == rows[2][2] == rows[3][2] == "actions/edit-copy" != rows[1][2]
    dest = tmp_path / "out"
    pool_images.copy_indexed(rows, theme, dest)
    assert not (dest / rows[2][0]).is_symlink() and (dest / "index.csv").read_text().startswith("path,label,group")


def test_strip_html_keeps_visible_text_in_blocks():
    page = ("<html><head><title>T</title><style>p {}</style></head><body><nav>menu</nav>"
            "<h1>Title &amp; more</h1><p>First <b>bold</b>\n line.</p><script>var x;</script><p>Second</p></body>")
    assert pool_text.strip_html(page) == "Title & more\n\nFirst bold line.\n\nSecond"


def test_chunk_paragraphs_sizes():
    """Short paragraphs merge up to min_chars, long ones are cut at sentence ends, a tiny document is dropped."""
    sentence = "This is a sentence of moderate length. "
    paragraphs = ["short one", "x" * 120, sentence * 80, "tail"]
    chunks = pool_text.chunk_paragraphs(paragraphs, min_chars=100, max_chars=500)
    assert chunks[0].startswith("short one\n\n") and len(chunks[0]) >= 100
    assert all(100 <= len(c) <= 500 + 100 for c in chunks)
    assert all(c.endswith(".") for c in chunks[1:-1])
    assert chunks[-1].endswith("tail")  # the short tail joins the last chunk
    assert "".join(chunks).replace("\n\n", "").replace(" ", "") == "".join(paragraphs).replace(" ", "")
    assert pool_text.chunk_paragraphs(["tiny"], min_chars=100) == []
    assert pool_text.chunk_paragraphs(["a" * 40], min_chars=100) == ["a" * 40]


def test_changelog_entries_and_licences():
    log = ("pkg (1.1-1) unstable; urgency=medium\n\n  * Fix.\n\n -- A <a@b>  Mon, 1 Jan 2024 00:00:00 +0000\n\n"
           "pkg (1.0-1) unstable; urgency=low\n\n  * Initial.\n\n -- A <a@b>  Sun, 1 Jan 2023 00:00:00 +0000\n")
    entries = pool_text.changelog_entries(log)
    assert len(entries) == 2 and entries[1].startswith("pkg (1.0-1)")
    dep5 = "Format: https://...\n\nFiles: *\nLicense: GPL-3+\n\nFiles: debian/*\nLicense: GPL-3+\n\nLicense: MIT\n"
    assert registries.licence_of(dep5) == "GPL-3+, MIT"
    assert registries.licence_of("Released under the GNU General Public License.").startswith("GPL (named")
    assert registries.licence_of("Format: x\n\nFiles: a.c\nLicense: Redistribution and use in source and binary forms,\n"
                           " are permitted provided that ... MIT").startswith("MIT (named")
    assert registries.pypi_licence("Name: g\nVersion: 1\nLicense: LGPL-2.1-only\n") == "LGPL-2.1-only"


def test_scenes_group_bands_dems_qa_duplicates_and_sites(tmp_path):
    """Band files of one acquisition and grid form a scene; the pan band is its own scene; a byte-identical copy is
    listed as a duplicate; the DEM on the same grid is attached; the QA band is kept apart; overlapping scenes share
    a site."""
    grid30 = {"crs": "EPSG:32632", "transform": [30.0, 0, 0, 0, -30.0, 300], "width": 10, "height": 10,
              "res": [30.0, 30.0], "bounds": [0.0, 0.0, 300.0, 300.0], "dtype": "int16", "band_count": 1,
              "crs_name": "UTM 32N", "nodata": None}
    grid15 = {**grid30, "transform": [15.0, 0, 0, 0, -15.0, 300], "width": 20, "height": 20, "res": [15.0, 15.0]}
    far = {**grid30, "band_count": 4, "dtype": "uint8", "bounds": [1000.0, 1000.0, 1300.0, 1300.0]}
    names = {"LC08_X_B1.TIF": grid30, "LC08_X_B2.TIF": grid30, "LC08_X_B8.TIF": grid15,
             "LC08_X_BQA.TIF": {**grid30, "dtype": "uint16"}, "DEM.TIF": grid30, "rgbn.tif": far,
             "rgbn_copy.tif": far}
    files = [touch(tmp_path / "src" / n, b"same" if n.startswith("rgbn") else n.encode()) for n in names]
    scenes, dems, skipped = pool_satellite.group_bands(files, tmp_path, meta=lambda p: names[p.name])
    pool_satellite.attach_dems(scenes, dems)
    for s in scenes:
        s["source"] = "src"
    pool_satellite.assign_sites(scenes)
    by_name = {s["name"]: s for s in scenes}
    assert set(by_name) == {"LC08_X_30m", "LC08_X_15m", "rgbn"} and skipped == []
    lc = by_name["LC08_X_30m"]
    assert lc["paths"] == ["src/LC08_X_B1.TIF", "src/LC08_X_B2.TIF"] and lc["band_names"] == ["B1", "B2"]
    assert lc["dtype"] == "int16" and lc["qa"] == "src/LC08_X_BQA.TIF"
    assert lc["dem"] == "src/DEM.TIF" and lc["dem_same_grid"]
    assert by_name["LC08_X_15m"]["dem"] == "src/DEM.TIF" and not by_name["LC08_X_15m"]["dem_same_grid"]
    assert by_name["rgbn"]["band_count"] == 4 and by_name["rgbn"]["duplicates"] == ["src/rgbn_copy.tif"]
    assert by_name["rgbn"]["dem"] is None
    assert lc["site"] == by_name["LC08_X_15m"]["site"] != by_name["rgbn"]["site"]


def test_script_fails_in_one_line_without_apt(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert prep.main(["--root", str(tmp_path / "r"), "--only", "images"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: `apt-get` not found") and err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == []  # nothing half-written is left


def test_script_skips_prepared_pools(tmp_path, capsys):
    (tmp_path / "text").mkdir()
    assert prep.main(["--root", str(tmp_path), "--only", "text"]) == 0
    assert "already prepared" in capsys.readouterr().out


@pytest.mark.skipif(not (realdata.real_data_root() / "sources.json").is_file(), reason="real data not prepared")
def test_prepared_pools_are_consistent():
    """On a machine where the script ran: every indexed file exists and every package has a version and sha256."""
    sources = json.loads((realdata.real_data_root() / "sources.json").read_text())
    assert all(p["version"] and len(p["sha256"]) == 64 for pool in sources.values() for p in pool["packages"])
    for name in realdata.IMAGE_POOLS if "images" in sources else ():
        paths, labels, _, groups = realdata.image_pool(name)
        assert len(paths) == len(labels) == len(groups) and all(p.is_file() for p in paths[::50])
    if "satellite" in sources:
        assert all(p.is_file() for s in realdata.satellite_scenes() for p in s["paths"])
