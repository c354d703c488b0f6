"""Real image pools, as users bring them: an ImageFolder tree, WebDataset tar shards, or CIFAR-100.

Each loader returns ``(images (n, S, S, 3) uint8, labels (n,) int64 with -1 where unknown, class names)``; images
are centre-cropped to a square and resized to ``S``. Unreadable or missing inputs raise
:class:`sslcurate.CurationInputError` naming the file.
"""

from __future__ import annotations

import glob
import io
import logging
import os
import re
from pathlib import Path

import numpy as np

from sslcurate import CurationInputError

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def to_square_uint8(img, size: int) -> np.ndarray:
    """PIL image -> (size, size, 3) uint8: RGB as the curation product decodes it (transparency composited on
    white, high bit depths scaled), centre crop to a square, bicubic resize."""
    from PIL import Image

    from experiments.curate.readers import _to_rgb  # one decoding rule for the studies and the product

    img = Image.fromarray(_to_rgb(img))
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(img.resize((size, size), Image.BICUBIC), dtype=np.uint8)


def list_image_folder(root: str | os.PathLike) -> tuple[list[Path], np.ndarray, list[str]]:
    """Files of an ImageFolder tree ``root/<class>/<image>`` (sorted), their class index, the class names.
    Images directly under ``root`` (no class folder) get label -1."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CurationInputError(f"image folder {root} does not exist or is not a directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, labels = [], []
    for f in sorted(root.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(f)
            labels.append(-1)
    for ci, c in enumerate(classes):
        for f in sorted((root / c).rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(f)
                labels.append(ci)
    if not files:
        raise CurationInputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return files, np.asarray(labels, dtype=np.int64), classes


# Variant markers ``group_by=stem`` strips from a file stem: a trailing size or copy number (``_16``, ``-32x32``,
# ``@2x``, `` (1)``), repeatedly, and a leading ``<digits>_`` index (``000123_frog.png``, the layout of
# experiments/curate/evidence.py). Camera names (``IMG_1234``) all share one stem: use a groups CSV there.
_VARIANT_SUFFIX = re.compile(r"(?:@\d+x|[ _-]\d+x\d+|[ _-]\d+| \(\d+\))$")
_INDEX_PREFIX = re.compile(r"^\d+_")


def item_stem(path: str | os.PathLike) -> str:
    """The item a file is a variant of: its stem without an index prefix and trailing size / copy markers.
    ``frog_16.png``, ``frog-32x32.png``, ``frog@2x.png``, ``frog (1).png`` and ``000123_frog.png`` -> ``frog``."""
    stem = Path(path).stem
    stem = _INDEX_PREFIX.sub("", stem) or stem
    while True:
        shorter = _VARIANT_SUFFIX.sub("", stem)
        if shorter == stem or not shorter:
            return stem
        stem = shorter


def image_groups(root: str | os.PathLike, files: list[Path], group_by: str) -> np.ndarray:
    """(n,) int64 group of each file of an image folder; files of one group are variants of one item.

    group_by: ``none`` (each file its own group), ``stem`` (same :func:`item_stem`), or a CSV file (``*.csv``,
    relative to ``root`` unless absolute) with columns ``path`` (relative to ``root``) and ``group``; files it
    does not list are groups of their own."""
    root = Path(root).expanduser()
    if group_by == "none":
        return np.arange(len(files), dtype=np.int64)
    if group_by == "stem":
        keys = [item_stem(f) for f in files]
    elif str(group_by).endswith(".csv"):
        keys = _csv_groups(root, files, Path(str(group_by)).expanduser())
    else:
        raise CurationInputError(f"data.group_by must be none, stem or a .csv file (path,group), got {group_by!r}")
    return np.unique(keys, return_inverse=True)[1].astype(np.int64)


def _csv_groups(root: Path, files: list[Path], table: Path) -> list[str]:
    import csv

    table = table if table.is_absolute() else root / table
    if not table.is_file():
        raise CurationInputError(f"data.group_by: {table} does not exist (a CSV with columns path,group)")
    with open(table, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"path", "group"} <= set(reader.fieldnames or ()):
            raise CurationInputError(f"{table} needs the columns path,group (has {reader.fieldnames})")
        group_of = {Path(r["path"]).as_posix(): "g:" + r["group"] for r in reader}
    rel = [f.relative_to(root).as_posix() for f in files]
    unlisted = sum(r not in group_of for r in rel)
    if unlisted:
        log.info("data.group_by: %d of %d files are not in %s (each its own group)", unlisted, len(files), table)
    return [group_of.get(r, "f:" + r) for r in rel]


def load_image_folder(root: str | os.PathLike, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read an ImageFolder tree into memory: (images (n, S, S, 3) uint8, labels (n,), class names)."""
    files, labels, classes = list_image_folder(root)
    return load_images(files, size), labels, classes


def load_images(files: list[Path], size: int) -> np.ndarray:
    """Decode image files into (n, S, S, 3) uint8; an unreadable file stops with a one-line error naming it."""
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(files), size, size, 3), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as img:
                out[i] = to_square_uint8(img, size)
        except (OSError, UnidentifiedImageError) as err:
            raise CurationInputError(f"cannot read image {f}: {err}") from None
    return out


def expand_shards(spec: str | os.PathLike | list) -> list[str]:
    """Shard list from a folder (its *.tar), a glob, a brace pattern ``shard-{000..009}.tar``, or a list."""
    if isinstance(spec, (list, tuple)):
        return [str(s) for s in spec]
    spec = str(Path(str(spec)).expanduser())
    if os.path.isdir(spec):
        shards = sorted(glob.glob(os.path.join(spec, "*.tar")))
    elif "{" in spec:
        import braceexpand

        shards = list(braceexpand.braceexpand(spec))
    else:
        shards = sorted(glob.glob(spec))
    if not shards:
        raise CurationInputError(f"no WebDataset shards (.tar) match {spec}")
    missing = [s for s in shards if not os.path.exists(s)]
    if missing:
        raise CurationInputError(f"WebDataset shard {missing[0]} does not exist")
    return shards


def iter_webdataset(shards, size: int):
    """Yield (key, image (S, S, 3) uint8, label int or -1) from WebDataset shards (image in jpg/jpeg/png/webp,
    optional class in ``cls``), in shard order."""
    import webdataset as wds
    from PIL import Image, UnidentifiedImageError

    for shard in expand_shards(shards):
        try:
            ds = wds.WebDataset(shard, shardshuffle=False, empty_check=False)
            for sample in ds:
                key = sample.get("__key__", "?")
                blob = next((sample[k] for k in ("jpg", "jpeg", "png", "webp", "ppm") if k in sample), None)
                if blob is None:
                    raise CurationInputError(f"sample {key} in {shard} has no image (jpg/jpeg/png/webp)")
                try:
                    with Image.open(io.BytesIO(blob)) as img:
                        image = to_square_uint8(img, size)
                except (OSError, UnidentifiedImageError) as err:
                    raise CurationInputError(f"cannot decode image of sample {key} in {shard}: {err}") from None
                cls = sample.get("cls")
                label = int(cls.decode().strip()) if cls is not None else -1
                yield key, image, label
        except CurationInputError:
            raise
        except Exception as err:  # tarfile / webdataset errors on a corrupt shard
            raise CurationInputError(f"cannot read WebDataset shard {shard}: {err}") from None


def load_webdataset(shards, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    images, labels = [], []
    for _, img, label in iter_webdataset(shards, size):
        images.append(img)
        labels.append(label)
    if not images:
        raise CurationInputError(f"WebDataset shards {shards} hold no samples")
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = int(labels.max()) + 1
    return np.stack(images), labels, [str(i) for i in range(n_classes)]


def load_cifar100(root: str | os.PathLike, size: int, train: bool = True, download: bool = True):
    """CIFAR-100 through torchvision (needs a network the first time)."""
    from torchvision.datasets import CIFAR100

    try:
        ds = CIFAR100(str(root), train=train, download=download)
    except Exception as err:  # no network, no local copy
        raise CurationInputError(f"CIFAR-100 is not available under {root} and cannot be downloaded: {err}") from None
    images = ds.data
    if size != images.shape[1]:
        from PIL import Image

        images = np.stack([to_square_uint8(Image.fromarray(im), size) for im in images])
    return images.astype(np.uint8), np.asarray(ds.targets, dtype=np.int64), list(ds.classes)


def write_image_folder(root: str | os.PathLike, images: np.ndarray, labels: np.ndarray, fmt: str = "png") -> None:
    """Write (n, S, S, 3) uint8 images as ``root/class_<label>/<i>.<fmt>`` (tests and examples)."""
    from PIL import Image

    root = Path(root)
    for i, (img, y) in enumerate(zip(images, labels)):
        d = root / f"class_{int(y):03d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:06d}.{fmt}")


def write_webdataset(folder: str | os.PathLike, images: np.ndarray, labels: np.ndarray | None,
                     per_shard: int = 1000) -> list[str]:
    """Write images (+ optional labels) as WebDataset shards ``folder/shard-000000.tar`` (PNG + cls)."""
    import webdataset as wds
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(folder / "shard-%06d.tar"), maxcount=per_shard, verbose=0) as sink:
        for i, img in enumerate(images):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            sample = {"__key__": f"{i:08d}", "png": buf.getvalue()}
            if labels is not None:
                sample["cls"] = str(int(labels[i])).encode()
            sink.write(sample)
    return sorted(str(p) for p in folder.glob("shard-*.tar"))
