"""Small item files the curation readers' tests write (images, tars, GeoTIFFs) and the checks they share."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.curate.readers import ItemError
from experiments.satellite.geo import write_geotiff


def save_image(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def solid(colour, size=(6, 5)) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, np.uint8), (*size, 3)).copy()


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def noisy_png(seed: int = 0) -> bytes:
    """A PNG that does not compress away, so cutting it hits its pixel data."""
    return png_bytes(np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8))


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def write_tif(path: Path, data: np.ndarray, nodata=None) -> Path:
    from affine import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_geotiff(path, data, "EPSG:32610", Affine(1, 0, 500000, 0, -1, 4000000), nodata=nodata)


def one_line_error(excinfo, *parts: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, (part, msg)
    return msg


def reason(reader, i: int) -> str:
    with pytest.raises(ItemError) as excinfo:
        reader.load(i)
    return str(excinfo.value)


def mean_colour(image: np.ndarray) -> torch.Tensor:  # module level: DataLoader workers may pickle it
    return torch.from_numpy(image.reshape(-1, 3).mean(axis=0))
