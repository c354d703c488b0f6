"""Strict mode, input errors and the DataLoader path of the curation readers: the first bad item stops a strict run
with one line naming it (also from a worker), bad embeddings and settings are one-line errors naming the fix, and two
workers return every good item once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from experiments.curate.readers import ItemDataset, collate_items, iter_batches, make_reader
from sslcurate import CurationInputError

from item_files import mean_colour, noisy_png, one_line_error, png_bytes, save_image, solid, write_tar, write_tif


# ------------------------------------------------------------------------------------------------------ strict
def _bad_pool(tmp_path: Path, case: str) -> tuple[str, dict, str, str]:
    """(kind, options, id, reason) of a pool with one bad item of each kind."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if case == "image":
        save_image(tmp_path / "a.png", solid((1, 1, 1)))
        (tmp_path / "b.png").write_bytes(b"")
        return "image_folder", {}, "b.png", "empty file (0 bytes)"
    if case == "webdataset_member":
        write_tar(tmp_path / "s.tar", [("k0", {"png": png_bytes(solid((1, 1, 1)))}), ("k1", {"png": b"oops"})])
        return "webdataset", {}, "s.tar:k1", "PNG signature missing"
    if case == "webdataset_truncated":
        data = write_tar(tmp_path / "s.tar", [(f"k{i}", {"png": noisy_png(i)}) for i in range(3)]).read_bytes()
        (tmp_path / "s.tar").write_bytes(data[:len(data) // 2])
        return "webdataset", {}, "s.tar", "truncated or corrupt tar"
    if case == "jsonl":
        (tmp_path / "d.jsonl").write_text('{"text": "ok"}\n{"text": "ok"\n')
        return "text", {}, "d.jsonl:2", "line is not JSON"
    if case == "parquet":
        pq.write_table(pa.table({"text": ["fine"]}), tmp_path / "a.parquet")
        pq.write_table(pa.table({"body": ["a"]}), tmp_path / "p.parquet")
        return "text", {}, "p.parquet", "no 'text' column"
    if case == "geotiff_bands":
        write_tif(tmp_path / "a.tif", np.ones((3, 4, 4), np.float32))
        write_tif(tmp_path / "s.tif", np.ones((2, 4, 4), np.float32))
        return "geotiff", {"tile": 4, "bands": [1, 2, 3]}, "s.tif", "2 band(s)"
    assert case == "geotiff_nodata"
    write_tif(tmp_path / "s.tif", np.zeros((1, 4, 8), np.float32) + np.arange(8, dtype=np.float32) // 4, nodata=0)
    return "geotiff", {"tile": 4}, "s.tif:0,0", "all nodata"


@pytest.mark.parametrize("case", ["image", "webdataset_member", "webdataset_truncated", "jsonl", "parquet",
                                  "geotiff_bands", "geotiff_nodata"])
def test_strict_mode_stops_at_the_first_bad_item_with_one_line(tmp_path, case):
    """With strict=True the first unreadable item of every kind (found while listing or while loading) raises a
    one-line CurationInputError naming the item and the reason, from the dataset and from iter_batches."""
    kind, options, item_id, why = _bad_pool(tmp_path, case)
    reader = make_reader(kind, str(tmp_path), strict=True, **options)
    with pytest.raises(CurationInputError) as excinfo:
        dataset = ItemDataset(reader)
        for i in range(len(dataset)):
            dataset[i]
    one_line_error(excinfo, f"unreadable {kind} item {item_id}: ", why, "data.strict")
    if case in ("image", "webdataset_member", "jsonl", "geotiff_nodata"):  # found at load: via a DataLoader too
        with pytest.raises(CurationInputError) as excinfo:
            list(iter_batches(ItemDataset(reader), batch_size=4))
        one_line_error(excinfo, item_id, why)
    lenient = ItemDataset(make_reader(kind, str(tmp_path), **options))  # the same pool without strict: no error
    assert any(len(lenient[i]) == 2 for i in range(len(lenient)))


def test_strict_error_from_a_worker_is_one_line(tmp_path):
    """An unreadable item decoded in a DataLoader worker still surfaces as the one-line CurationInputError."""
    kind, _, item_id, why = _bad_pool(tmp_path, "image")
    with pytest.raises(CurationInputError) as excinfo:
        list(iter_batches(ItemDataset(make_reader(kind, str(tmp_path), strict=True)), batch_size=1, num_workers=2))
    one_line_error(excinfo, item_id, why)


def test_bad_npy_is_a_one_line_input_error(tmp_path):
    """Embeddings are validated by sslcurate.sources.as_source: a 1-D array is a one-line CurationInputError."""
    np.save(tmp_path / "x.npy", np.zeros(5, np.float32))
    with pytest.raises(CurationInputError) as excinfo:
        make_reader("embeddings", str(tmp_path / "x.npy"), strict=True)
    one_line_error(excinfo, "x.npy", "2-D")


@pytest.mark.parametrize("case, expected", [
    ("missing_folder", "data.path {p}/nowhere does not exist: pass data.path= a folder of images"),
    ("empty_folder", "no .jpg/.jpeg/.png"),
    ("missing_shards", "does not exist: pass data.path= WebDataset shards"),
    ("no_text_files", "no .jsonl/.ndjson/.json/.parquet/.txt files under"),
    ("missing_npy", "does not exist: pass data.path= an (n, d) .npy file"),
    ("unknown_kind", "unknown data kind 'csv': choose data= one of image_folder, webdataset, text, geotiff"),
    ("unknown_option", "data.text_feild is not a setting of data=text (its settings: text_field, label_field, strict)"),
    ("no_path", "data.path is not set: pass data.path="),
    ("nothing_readable", "geotiff {p}: no readable items (1 skipped; first skipped: s.tif: 1 band(s)"),
])
def test_input_problems_are_one_line_errors_naming_the_fix(tmp_path, case, expected):
    """A missing path, an empty folder, an unknown kind or setting, no path, or a pool without one readable item
    is a one-line CurationInputError that names the problem and what to set."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.csv").write_text("a,b\n")
    write_tif(tmp_path / "tifs" / "s.tif", np.ones((1, 4, 4), np.float32))
    calls = {"missing_folder": ("image_folder", str(tmp_path / "nowhere"), {}),
             "empty_folder": ("image_folder", str(tmp_path / "empty"), {}),
             "missing_shards": ("webdataset", str(tmp_path / "nowhere"), {}),
             "no_text_files": ("text", str(tmp_path), {}),
             "missing_npy": ("embeddings", str(tmp_path / "x.npy"), {}),
             "unknown_kind": ("csv", str(tmp_path), {}),
             "unknown_option": ("text", str(tmp_path), {"text_feild": "body"}),
             "no_path": ("text", None, {}),
             "nothing_readable": ("geotiff", str(tmp_path / "tifs"), {"tile": 4, "bands": [1, 2]})}
    kind, path, options = calls[case]
    with pytest.raises(CurationInputError) as excinfo:
        make_reader(kind, path, **options).list_items()
    one_line_error(excinfo, expected.format(p=tmp_path if case == "missing_folder" else tmp_path / "tifs"))


# ------------------------------------------------------------------------------------------------- DataLoader
def test_dataloader_with_two_workers_returns_every_good_item_once(tmp_path):
    """Over a folder with good and bad images, a DataLoader with 2 workers (collate_items) yields every good item
    exactly once with its value, in order, and lists every bad one with its reason; no worker dies."""
    colours = {}
    for i in range(14):
        rel = f"class_{i % 2}/{i:02d}.png"
        colours[rel] = (i, 2 * i, 3 * i)
        save_image(tmp_path / rel, solid(colours[rel], (4 + i, 5)))
    bad = {"class_0/bad_zero.png": b"", "class_1/bad_text.png": b"hello", "bad_cut.png": noisy_png()[:2000],
           "class_0/zz.jpg": b"\xff\xd8\xff\xe0 truncated jpeg"}
    for rel, data in bad.items():
        (tmp_path / rel).write_bytes(data)
    dataset = ItemDataset(make_reader("image_folder", str(tmp_path)), transform=mean_colour)
    ids = [it.id for it in dataset.items]
    seen, skipped = [], {}
    for indices, values, batch_skipped in iter_batches(dataset, batch_size=5, num_workers=2):
        assert len(indices) == 0 or values.shape == (len(indices), 3)
        for i, v in zip(indices.tolist(), values):
            assert np.allclose(v.numpy(), colours[ids[i]])
        seen += indices.tolist()
        skipped.update({ids[i]: why for i, why in batch_skipped})
    assert seen == sorted(ids.index(rel) for rel in colours)
    assert sorted(skipped) == sorted(bad)
    assert skipped["class_0/bad_zero.png"] == "empty file (0 bytes)"
    assert skipped["class_1/bad_text.png"].startswith("not an image (PNG signature missing")
    assert skipped["bad_cut.png"].startswith("corrupt image") and skipped["class_0/zz.jpg"].startswith("corrupt image")


def test_collate_keeps_unequal_values_as_a_list():
    """Values of unequal shapes (raw images, texts) stay a list; skipped entries are split off."""
    indices, values, skipped = collate_items([(0, "a"), (1, None, "empty document"), (2, "bb")])
    assert indices.tolist() == [0, 2] and values == ["a", "bb"] and skipped == [(1, "empty document")]
    _, stacked, _ = collate_items([(0, np.zeros((2, 3))), (1, np.ones((2, 3)))])
    assert isinstance(stacked, np.ndarray) and stacked.shape == (2, 2, 3)
