"""The item readers of ``experiment=curate`` (experiments/curate/readers/) on small files written here: every
kind lists its items in a stable order with the ids the manifest prints, decodes them to the promised type, and
skips each kind of bad input with a one-line reason (or, in strict mode, stops with a one-line
CurationInputError naming the item)."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from experiments.curate.readers import ItemDataset, make_reader
from sslcurate import CurationInputError

from item_files import noisy_png, one_line_error, png_bytes, reason, save_image, solid, write_tar, write_tif


# ------------------------------------------------------------------------------------------------ image folder
def test_image_folder_lists_nested_images_with_first_level_labels(tmp_path):
    """Any nesting is listed, extensions in any case, hidden files/folders and non-images left out; ids are paths
    relative to data.path in sorted order; the label is the first-level sub-folder (None at the root)."""
    for rel in ["zebra/deep/er/x.PNG", "cat/b.jpg", "cat/a.JPEG", "top.png", ".hidden/h.png", "cat/.secret.png"]:
        save_image(tmp_path / rel, solid((10, 20, 30)))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    reader = make_reader("image_folder", str(tmp_path))
    items = reader.list_items()
    assert [it.id for it in items] == ["cat/a.JPEG", "cat/b.jpg", "top.png", "zebra/deep/er/x.PNG"]
    assert [it.label for it in items] == ["cat", "cat", None, "zebra"]
    image = reader.load(3)
    assert image.dtype == np.uint8 and image.shape == (6, 5, 3) and (image == (10, 20, 30)).all()


def test_listing_is_deterministic_whatever_the_creation_order(tmp_path):
    """Two trees with the same files written in opposite orders list the same ids, for images, text and tiles."""
    names = [f"c{c}/{i:02d}.png" for c in range(3) for i in range(4)]
    listings = []
    for tree, order in (("one", names), ("two", names[::-1])):
        root = tmp_path / tree
        for n in order:
            save_image(root / "img" / n, solid((1, 2, 3)))
            (root / "txt" / n.replace(".png", ".txt")).parent.mkdir(parents=True, exist_ok=True)
            (root / "txt" / n.replace(".png", ".txt")).write_text(n)
        for s in (n for n in order if n.endswith("00.png")):
            write_tif(root / "tif" / s.replace(".png", ".tif"), np.ones((1, 8, 8), np.float32))
        listings.append([[it.id for it in make_reader(kind, str(root / sub), **opts).list_items()]
                         for kind, sub, opts in (("image_folder", "img", {}), ("text", "txt", {}),
                                                 ("geotiff", "tif", {"tile": 4}))])
    assert listings[0] == listings[1]
    assert listings[0][0] == sorted(names) and listings[0][2][0] == "c0/00.tif:0,0"


@pytest.mark.parametrize("case", ["gray", "gray16", "rgba", "gray_alpha", "palette", "palette_transparent",
                                  "exif_rotated"])
def test_images_of_any_mode_become_8bit_rgb(tmp_path, case):
    """Gray, 16-bit gray (scaled by 255/65535, not clipped), alpha (composited on white), palette (with and
    without a transparent index) and EXIF-rotated images decode to the right (H, W, 3) uint8 RGB pixels."""
    path = tmp_path / "im.png"
    if case == "gray":
        save_image(path, np.array([[0, 100, 255]], np.uint8))
        expected = [[0, 100, 255]]
    elif case == "gray16":
        save_image(path, np.array([[0, 257, 32768, 65535]], np.uint16))
        expected = [[0, 1, 128, 255]]
    elif case == "rgba":
        save_image(path, np.array([[[255, 0, 0, 0], [255, 0, 0, 255], [0, 0, 255, 128]]], np.uint8))
        expected = [[[255, 255, 255], [255, 0, 0], [127, 127, 255]]]
    elif case == "gray_alpha":
        Image.fromarray(np.array([[[0, 0], [0, 255]]], np.uint8)).save(path)  # (H, W, 2) uint8: mode LA
        expected = [[255, 0]]
    elif case in ("palette", "palette_transparent"):
        img = Image.new("P", (3, 1))
        img.putdata([0, 1, 2])
        img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
        img.save(path, **({"transparency": 1} if case == "palette_transparent" else {}))
        expected = [[[255, 0, 0], [0, 255, 0] if case == "palette" else [255, 255, 255], [0, 0, 255]]]
    else:  # orientation 6: the stored 1 x 2 (red, blue) image is shown rotated 90 degrees clockwise
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)).save(path, exif=exif)
        expected = [[[255, 0, 0]], [[0, 0, 255]]]
    expected = np.asarray(expected, np.uint8)
    if expected.ndim == 2:  # gray: the same value in R, G and B
        expected = np.repeat(expected[..., None], 3, axis=2)
    image = make_reader("image_folder", str(tmp_path)).load(0)
    assert image.dtype == np.uint8 and image.shape == expected.shape
    assert np.array_equal(image, expected), image


@pytest.mark.parametrize("case, expected", [
    ("corrupt", "corrupt image"),
    ("zero_bytes", "empty file (0 bytes)"),
    ("text_named_png", "not an image (PNG signature missing; file starts with b'just some text"),
    ("garbage_named_jpg", "not an image (JPEG signature missing"),
])
def test_bad_images_are_skipped_with_a_reason(tmp_path, case, expected):
    """A truncated PNG, a zero-byte file, a text file named .png and garbage named .jpg raise ItemError with a
    one-line reason from load, and come back from the dataset as (i, None, reason), the good image as (i, value)."""
    save_image(tmp_path / "a_good.png", solid((9, 9, 9)))
    bad = tmp_path / ("b_bad.jpg" if case == "garbage_named_jpg" else "b_bad.png")
    bad.write_bytes({"corrupt": noisy_png()[:3000], "zero_bytes": b"", "text_named_png": b"just some text\n",
                     "garbage_named_jpg": bytes(range(7, 200))}[case])
    reader = make_reader("image_folder", str(tmp_path))
    got = reason(reader, 1)
    assert got.startswith(expected) and "\n" not in got, got
    dataset = ItemDataset(reader)
    assert dataset[0][0] == 0 and dataset[0][1].shape == (6, 5, 3)
    assert dataset[1] == (1, None, got)


def test_decompression_bomb_is_skipped(tmp_path, monkeypatch):
    """Past Image.MAX_IMAGE_PIXELS PIL only warns (up to 2x) and then errs: both are skipped as "image too large";
    an image within the limit still reads."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for name, side in (("a_small", 8), ("b_warn", 12), ("c_error", 16)):  # 64, 144 (> 100), 256 (> 200) pixels
        save_image(tmp_path / f"{name}.png", solid((5, 5, 5), (side, side)))
    reader = make_reader("image_folder", str(tmp_path))
    assert reader.load(0).shape == (8, 8, 3)
    for i in (1, 2):
        assert reason(reader, i).startswith("image too large (Image size (")


# ------------------------------------------------------------------------------------------------- WebDataset
def test_webdataset_lists_image_samples_from_a_folder_glob_or_brace_pattern(tmp_path):
    """Image members grouped by key become items ``shard.tar:key`` with the label of a .cls (else .txt) member;
    a sample without an image is listed as skipped; a folder, a glob and a brace pattern give the same items;
    a corrupt member is skipped at load."""
    write_tar(tmp_path / "shards" / "000.tar", [("s0", {"png": png_bytes(solid((1, 2, 3))), "cls": b"7\n"}),
                                                ("s1", {"txt": b"a dog", "jpg": png_bytes(solid((4, 5, 6)))}),
                                                ("s2", {"json": b"{}"})])
    write_tar(tmp_path / "shards" / "001.tar", [("s3", {"webp": b"not an image at all"}),
                                                ("dir/s4", {"png": png_bytes(solid((7, 8, 9)))})])
    ids = None
    for spec in ("shards", "shards/*.tar", "shards/{000..001}.tar"):
        reader = make_reader("webdataset", str(tmp_path / spec))
        items = reader.list_items()
        assert ids is None or [it.id for it in items] == ids
        ids = [it.id for it in items]
    assert ids == ["000.tar:s0", "000.tar:s1", "001.tar:s3", "001.tar:dir/s4"]
    assert [it.label for it in items] == ["7", "a dog", None, None]
    assert reader.skipped == [("000.tar:s2", "no image member (jpg/jpeg/png/webp/ppm/bmp/tif/tiff/gif); members: json")]
    assert (reader.load(1) == (4, 5, 6)).all() and (reader.load(3) == (7, 8, 9)).all()  # a PNG stored as .jpg
    assert reason(reader, 2).startswith("not an image (WebP signature missing")


@pytest.mark.parametrize("damage, kept", [("cut_in_data", 2), ("cut_at_header", 3), ("garbage_header", 3)])
def test_truncated_tar_keeps_the_samples_before_the_damage(tmp_path, damage, kept):
    """A shard cut inside a member, cut between members, or with a garbled header: the samples before the damage
    are listed and load, the shard is listed as skipped with a "truncated or corrupt tar" reason, and the next
    shard is read in full."""
    samples = [(f"k{i}", {"png": noisy_png(i), "cls": str(i).encode()}) for i in range(5)]
    shard = write_tar(tmp_path / "a.tar", samples)
    write_tar(tmp_path / "b.tar", [("z", {"png": png_bytes(solid((1, 1, 1)))})])
    with tarfile.open(shard) as tf:
        members = {m.name: m for m in tf.getmembers()}
    data = shard.read_bytes()
    if damage == "cut_in_data":  # sample k2 loses half its image
        m = members["k2.png"]
        shard.write_bytes(data[:m.offset_data + m.size // 2])
    elif damage == "cut_at_header":  # the file ends where k3's header starts
        shard.write_bytes(data[:members["k3.png"].offset])
    else:
        at = members["k3.png"].offset
        shard.write_bytes(data[:at] + b"\x7fgarbage" * 64 + data[at + 512:])
    reader = make_reader("webdataset", str(tmp_path))
    items = reader.list_items()
    assert [it.id for it in items] == [f"a.tar:k{i}" for i in range(kept)] + ["b.tar:z"]
    assert [it.label for it in items[:kept]] == [str(i) for i in range(kept)]
    assert all(reader.load(i).shape == (48, 48, 3) for i in range(kept)) and reader.load(kept).shape == (6, 5, 3)
    assert len(reader.skipped) == 1 and reader.skipped[0][0] == "a.tar"
    assert reader.skipped[0][1].startswith("truncated or corrupt tar: ")
    assert f"only the {kept} sample(s) before it are read" in reader.skipped[0][1]


# ------------------------------------------------------------------------------------------------------- text
def test_jsonl_bad_lines_are_skipped_with_reasons(tmp_path):
    """JSONL ids are 1-based line numbers (blank lines are not items); invalid UTF-8, an empty or whitespace-only
    document, a line that is not JSON, a record without the text field, a non-string value and a non-object
    record each raise ItemError with its reason; labels come from data.label_field."""
    lines = [b'{"text": "hello", "lang": "en"}', b'{"text": "caf\xe9"}', b'{"text": ""}', b'{"text": " \\n\\t "}',
             b'{"text": "broken', b'{"body": "x"}', b'{"text": 5}', b"", b'{"text": "world", "lang": "fr"}',
             b"[1, 2]"]
    (tmp_path / "docs.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    reader = make_reader("text", str(tmp_path / "docs.jsonl"), text_field="text", label_field="lang")
    items = reader.list_items()
    assert [it.id for it in items] == [f"docs.jsonl:{n}" for n in (1, 2, 3, 4, 5, 6, 7, 9, 10)]
    assert [it.label for it in items] == ["en"] + [None] * 6 + ["fr", None]
    assert reader.load(0) == "hello" and reader.load(7) == "world"
    assert reason(reader, 1) == "invalid UTF-8 at byte 13"
    assert reason(reader, 2) == reason(reader, 3) == "empty document"
    assert reason(reader, 4).startswith("line is not JSON (Unterminated string starting at: column 10")
    assert reason(reader, 5) == "no 'text' field (keys: body; set data.text_field)"
    assert reason(reader, 6) == "'text' is not a string (int)"
    assert reason(reader, 8) == "record is a JSON list, not an object"


def test_json_arrays_txt_files_and_globs(tmp_path):
    """A .json list of records (ids are 0-based indexes), a .json of JSON lines, and .txt files of one document
    each are read from a folder or a glob; invalid UTF-8 and empty .txt files are skipped; a .json that is not
    valid JSON is listed as skipped as a whole."""
    (tmp_path / "a.json").write_text(json.dumps([{"text": "one", "y": 1}, {"text": "  "}, {"t": "x"}]))
    (tmp_path / "b.json").write_text('{"text": "lines"}\n{"text": "too"}\n')
    (tmp_path / "c.json").write_text('[{"text": "unfinished"')
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "d.txt").write_text("a whole document\n")
    (sub / "e.txt").write_bytes(b"\xff\xfe bad")
    (sub / "f.txt").write_text(" \n")
    reader = make_reader("text", str(tmp_path), label_field="y")
    items = reader.list_items()
    assert [it.id for it in items] == ["a.json:0", "a.json:1", "a.json:2", "b.json:1", "b.json:2", "sub/d.txt",
                                       "sub/e.txt", "sub/f.txt"]
    assert items[0].label == "1" and items[1].label is None
    assert [reader.load(i) for i in (0, 3, 4, 5)] == ["one", "lines", "too", "a whole document\n"]
    assert reason(reader, 1) == "empty document" and reason(reader, 2).startswith("no 'text' field")
    assert reason(reader, 6) == "invalid UTF-8 at byte 0" and reason(reader, 7) == "empty document"
    assert reader.skipped == [("c.json", "not valid JSON (Expecting ',' delimiter: line 1 column 23)")]
    globbed = make_reader("text", str(tmp_path / "sub" / "*.txt")).list_items()
    assert [it.id for it in globbed] == ["d.txt", "e.txt", "f.txt"]


def test_parquet_is_read_by_row_group_and_only_the_needed_column(tmp_path, monkeypatch):
    """Loading every row of a Parquet file reads each row group once, with the text column only; labels come
    from data.label_field; a null, a non-string and an empty value are skipped with their reason."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"doc {i}" for i in range(10)]
    texts[4], texts[7] = None, " "
    pq.write_table(pa.table({"content": texts, "src": [f"s{i % 2}" for i in range(10)], "big": [b"x" * 100] * 10}),
                   tmp_path / "p.parquet", row_group_size=3)
    calls = []
    original = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kwargs):
        calls.append((i, tuple(columns)))
        return original(self, i, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    reader = make_reader("text", str(tmp_path), text_field="content", label_field="src")
    items = reader.list_items()
    assert [it.id for it in items] == [f"p.parquet:{i}" for i in range(10)]
    assert [it.label for it in items] == [f"s{i % 2}" for i in range(10)]
    got = [reason(reader, i) if i in (4, 7) else reader.load(i) for i in range(10)]
    assert got[:4] == texts[:4] and got[4] == "'content' is null" and got[7] == "empty document"
    assert calls == [(g, ("content",)) for g in range(4)]


def test_parquet_without_the_text_field_is_skipped_with_one_reason(tmp_path):
    """A Parquet file without the text column: all its rows are skipped with one reason naming the columns (other
    files are still read); in strict mode that is a one-line CurationInputError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["a", "b", "c"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"text": ["fine"]}), tmp_path / "b.parquet")
    reader = make_reader("text", str(tmp_path))
    assert [it.id for it in reader.list_items()] == ["b.parquet:0"]
    assert reader.skipped == [("a.parquet", "no 'text' column for its 3 row(s) (columns: body; set data.text_field)")]
    with pytest.raises(CurationInputError) as excinfo:
        make_reader("text", str(tmp_path), strict=True).list_items()
    one_line_error(excinfo, "a.parquet", "no 'text' column")


# ---------------------------------------------------------------------------------------------------- GeoTIFF
def test_geotiff_tiles_are_windowed_reads_of_the_asked_bands(tmp_path):
    """Tiles of ``tile`` px every ``stride`` px (none crossing the edge) have ids ``scene.tif:row,col`` and hold
    exactly the asked bands of that window as (bands, t, t) float32."""
    data = np.arange(3 * 8 * 11, dtype=np.float32).reshape(3, 8, 11)
    write_tif(tmp_path / "nested" / "scene.tif", data)
    reader = make_reader("geotiff", str(tmp_path), tile=4, stride=2, bands=[3, 1])
    items = reader.list_items()
    assert [it.id for it in items] == [f"nested/scene.tif:{r},{c}" for r in (0, 2, 4) for c in (0, 2, 4, 6)]
    tile = reader.load(6)  # row 2, col 4
    assert tile.dtype == np.float32 and np.array_equal(tile, data[[2, 0], 2:6, 4:8])
    assert len(make_reader("geotiff", str(tmp_path / "nested" / "*.tif"), tile=4).list_items()) == 4


def test_geotiff_with_too_few_bands_or_unreadable_is_skipped(tmp_path):
    """A scene with fewer bands than data.bands asks for, a .tif that is not a GeoTIFF and a scene smaller than a
    tile are listed as skipped with their reason; the good scene is tiled."""
    write_tif(tmp_path / "a_good.tif", np.ones((3, 8, 8), np.uint16))
    write_tif(tmp_path / "b_two_bands.tif", np.ones((2, 8, 8), np.uint16))
    (tmp_path / "c_broken.tif").write_text("not a tiff")
    write_tif(tmp_path / "d_small.tif", np.ones((3, 3, 3), np.uint16))
    reader = make_reader("geotiff", str(tmp_path), tile=4, bands=[1, 3])
    assert [it.id for it in reader.list_items()] == [f"a_good.tif:{r},{c}" for r in (0, 4) for c in (0, 4)]
    skipped = dict(reader.skipped)
    assert skipped["b_two_bands.tif"] == "2 band(s), band 3 is asked for (data.bands=[1, 3])"
    assert skipped["c_broken.tif"].startswith("not a readable GeoTIFF (")
    assert skipped["d_small.tif"] == "3 x 3 px is smaller than one tile (4 px)"


def test_all_nodata_tiles_are_skipped(tmp_path):
    """A tile that is all nodata (declared nodata value, or NaN) is skipped as "all nodata"; a partly empty tile
    loads with its nodata pixels set to 0."""
    data = np.full((2, 8, 8), 5.0, np.float32)
    data[:, :4, :4] = -1  # tile 0,0: all nodata
    data[:, :2, 4:] = -1  # tile 0,4: half nodata
    data[:, 4:, :4] = np.nan  # tile 4,0: all NaN
    write_tif(tmp_path / "s.tif", data, nodata=-1)
    reader = make_reader("geotiff", str(tmp_path), tile=4)
    assert [it.id for it in reader.list_items()] == ["s.tif:0,0", "s.tif:0,4", "s.tif:4,0", "s.tif:4,4"]
    assert reason(reader, 0) == reason(reader, 2) == "all nodata"
    half = reader.load(1)
    assert (half[:, :2] == 0).all() and (half[:, 2:] == 5).all()
    assert (reader.load(3) == 5).all()


# ------------------------------------------------------------------------------------------------- embeddings
def test_embeddings_list_one_item_per_row(tmp_path):
    """An (n, d) .npy file or a folder of shards lists n items "row N" without building them all; load(i) is
    row i."""
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "shards").mkdir()
    np.save(tmp_path / "shards" / "0.npy", x[:4])
    np.save(tmp_path / "shards" / "1.npy", x[4:])
    for path in (tmp_path / "x.npy", tmp_path / "shards"):
        reader = make_reader("embeddings", str(path))
        items = reader.list_items()
        assert len(items) == 6 and [it.id for it in items] == [f"row {i}" for i in range(6)]
        assert items[-1].id == "row 5" and np.array_equal(reader.load(5), x[5])
