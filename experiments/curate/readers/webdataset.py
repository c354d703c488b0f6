"""WebDataset shards: samples listed from the tar headers alone (damage found and reported), images read by
offset."""

from __future__ import annotations

import glob
import os
import re
import tarfile
from pathlib import Path

import numpy as np

from experiments.web_images.loaders import expand_shards
from sslcurate import CurationInputError

from .base import Item, ItemError, Reader
from .images import decode_image

# WebDataset member extensions, in the order of preference when a sample holds several images
WDS_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp", "tif", "tiff", "gif")
WDS_LABEL_EXTS = ("cls", "txt")
_WDS_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's split: key up to the basename's first dot


def _scan_tar(fh, size: int) -> tuple[list[tuple[str, dict]], str | None]:
    """Samples of an uncompressed tar from its headers alone, as WebDataset groups them (consecutive members
    sharing a key): ``[(key, {ext: (data offset, size)})]``, and the damage found (None for a sound tar).

    Python's tarfile ends its member list quietly at a cut or invalid header, so the end is checked here: a sound
    tar ends with a zero block, and every member's data lies inside the file. The sample cut by the damage is
    dropped; the ones before it are kept."""
    samples: list[tuple[str, dict]] = []
    key, members = None, {}
    tf, damage = None, None
    try:
        with tarfile.open(fileobj=fh, mode="r:") as tf:
            while (m := tf.next()) is not None:
                match = _WDS_KEY.match(m.name) if m.isfile() else None
                if match is None:
                    continue
                if match[1] != key:
                    if members:
                        samples.append((key, members))
                    key, members = match[1], {}
                if m.offset_data + m.size > size:
                    damage = f"member {m.name} is cut off at byte {size}"
                    members = {}  # this sample is incomplete
                    break
                members[match[2].lower()] = (m.offset_data, m.size)
    except tarfile.TarError as err:
        if tf is None:  # the first header already
            return [], f"not an uncompressed tar file ({err})"
        damage = f"{err} at byte {tf.offset}"
    if damage is None:
        fh.seek(tf.offset)
        if fh.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
            damage = f"no valid header or end-of-archive marker at byte {tf.offset}"
    if members:
        samples.append((key, members))
    return samples, damage


class WebDatasetReader(Reader):
    """Image samples of WebDataset shards: ``data.path`` a folder of ``.tar``, a glob or a brace pattern
    ``shards/{000..099}.tar``. Label: a ``.cls`` (else ``.txt``) member."""

    kind = "webdataset"
    what = "WebDataset shards: a folder of .tar, a glob or shards/{000..099}.tar"

    def _list(self):
        p = os.path.expanduser(self.path)
        if not (glob.has_magic(p) or "{" in p or os.path.exists(p)):
            raise CurationInputError(f"data.path {self.path} does not exist: pass data.path= {self.what}")
        self.shards = [Path(s) for s in expand_shards(p)]
        root = os.path.commonpath([str(s.parent) for s in self.shards])
        items, self.where = [], []  # where[i]: (shard index, data offset, size, extension)
        for si, shard in enumerate(self.shards):
            name = os.path.relpath(shard, root)
            try:
                with open(shard, "rb") as fh:
                    samples, damage = _scan_tar(fh, shard.stat().st_size)
                    for key, members in samples:
                        ext = next((e for e in WDS_IMAGE_EXTS if e in members), None)
                        if ext is None:
                            self._skip(f"{name}:{key}", f"no image member ({'/'.join(WDS_IMAGE_EXTS)}); "
                                                        f"members: {', '.join(sorted(members))}")
                            continue
                        label_ext = next((e for e in WDS_LABEL_EXTS if e in members), None)
                        label = None
                        if label_ext is not None:
                            fh.seek(members[label_ext][0])
                            label = fh.read(members[label_ext][1]).decode("utf-8", "replace").strip()
                        items.append(Item(f"{name}:{key}", label))
                        self.where.append((si, *members[ext], ext))
            except OSError as err:
                self._skip(name, f"cannot read shard ({err.strerror or err})")
                continue
            if damage is not None:
                self._skip(name, f"truncated or corrupt tar: {damage}; only the {len(samples)} sample(s) before "
                                 "it are read")
        return items

    def _load(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        si, offset, size, ext = self.where[i]
        try:
            fh = self._cached(("shard", si), lambda: open(self.shards[si], "rb"))  # noqa: SIM115  _cached closes it
            fh.seek(offset)
            data = fh.read(size)
        except OSError as err:
            raise ItemError(f"cannot read shard ({err.strerror or err})") from None
        if len(data) != size:
            raise ItemError(f"member cut off ({len(data)} of {size} bytes)")
        return decode_image(data, ext)
