"""The study's data: the pool (generated or real), the labelled evaluation sets, and the ``manual`` set.

Everything is cached under ``paths.cache_dir/web_images_data/<hash of the data config>/`` as ``.npy`` files
(images memory-mapped), so a rerun or another seed reuses it. Training seeds never change the data.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from experiments.kit.cache import cache_path
from sslcurate import CurationInputError
from sslcurate.io import atomic_save_json, atomic_save_npy
from sslcurate.sampling import water_fill

from . import loaders, pool as gen

log = logging.getLogger(__name__)


@dataclass
class LabeledSet:
    images: np.ndarray  # (n, S, S, 3) uint8
    labels: np.ndarray  # (n,) int64


@dataclass
class StudyData:
    """Pool + evaluation sets + manual set. Pool labels are for measurement only."""

    images: np.ndarray  # (N, S, S, 3) uint8, memory-mapped
    labels: np.ndarray  # (N,) int64 concept, -1 junk / unknown
    kinds: np.ndarray  # (N,) uint8: 0 clean, 1 near-duplicate, 2 junk
    dup_group: np.ndarray  # (N,) int64 near-duplicate cluster, -1 if none
    n_concepts: int
    concept_names: list
    tail_concepts: np.ndarray  # concept ids counted as "tail"
    bank: LabeledSet  # labelled training set of the frozen-feature evaluation (balanced)
    test: LabeledSet  # balanced test set over all concepts
    shifted: LabeledSet | None  # same concepts, different rendering (None for real data without one)
    manual: LabeledSet  # hand-curated-style set: class-balanced, clean
    key: str  # hash of the data config: the data's identity in cache keys
    meta: dict = field(default_factory=dict)
    source_files: list[str] | None = None  # the file each pool row was decoded from (None: generated / shards)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])


# Pools read from image files keep the list of those files, so the curation embedder can read each item again at
# its own input size instead of the study's training size (data.image_size).
FILE_KINDS = ("image_folder", "real")
SOURCE_FILES = "pool_files.json"


def data_folder(cfg: DictConfig, cache_dir: Path) -> Path:
    """The data's cache folder; its name, the hash of the data config, is the data's identity in other keys."""
    return cache_path(cache_dir, "web_images_data", {"data": OmegaConf.to_container(cfg.data, resolve=True),
                                                     "subset_size": int(cfg.subset_size)}, suffix="")


def build_data(cfg: DictConfig, cache_dir: Path, progress: bool = False) -> StudyData:
    folder = data_folder(cfg, cache_dir)
    key = folder.name
    if (folder / "meta.json").exists() and cfg.data.kind in FILE_KINDS and not (folder / SOURCE_FILES).exists():
        log.info("data: %s predates the pool's source file list; importing again", folder)
        (folder / "meta.json").unlink()
    if not (folder / "meta.json").exists():
        if cfg.data.kind == "generated":
            if str(cfg.data.get("group_by") or "none") != "none":
                raise CurationInputError("data.group_by is for real data: a generated pool's evaluation sets are "
                                         "rendered apart from it")
            _generate(cfg, folder, progress)
        elif cfg.data.kind in ("image_folder", "webdataset", "cifar100", "real"):
            _import_real(cfg, folder)
        else:
            raise CurationInputError(f"unknown data.kind {cfg.data.kind!r}: generated, image_folder, webdataset, "
                                     "cifar100 or real")
    else:
        log.info("data: reusing %s", folder)
    return _load(folder, key)


def _generate(cfg: DictConfig, folder: Path, progress: bool) -> None:
    d = cfg.data
    rng = np.random.default_rng([int(d.world_seed), 0])
    world = gen.make_world(d.n_groups, d.fine_per_group, d.zipf_exponent, rng,
                           group_zipf_exponent=d.get("group_zipf_exponent"))
    plan = gen.plan_pool(world, int(d.pool_size), d.duplicate_fraction, d.junk_fraction, d.head_concepts,
                         d.min_per_concept, rng)
    folder.mkdir(parents=True, exist_ok=True)
    s = int(d.image_size)
    tmp = folder / ".images.npy.tmp"
    images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(plan.size, s, s, 3))
    labels, kinds, dup = gen.generate_pool(world, plan, s, rng, images, progress=progress)
    images.flush()
    del images
    tmp.replace(folder / "images.npy")
    for name, arr in (("labels", labels), ("kinds", kinds), ("dup_group", dup)):
        atomic_save_npy(folder / f"{name}.npy", arr)
    c = world.n_concepts
    e = d.eval
    sets = {"bank": (e.bank_per_concept, "photo"), "test": (e.test_per_concept, "photo"),
            "shifted": (e.shifted_per_concept, "shifted")}
    for name, (per, style) in sets.items():
        y = np.repeat(np.arange(c), int(per))
        atomic_save_npy(folder / f"{name}_images.npy", gen.render(world, y, s, rng, style=style))
        atomic_save_npy(folder / f"{name}_labels.npy", y)
    # manual: an independent clean render, class-balanced over a fixed random set of concepts
    m = d.manual
    n_manual_concepts = c if m.n_concepts is None else int(m.n_concepts)
    chosen = np.sort(rng.choice(c, size=n_manual_concepts, replace=False))
    size = int(cfg.subset_size)
    y = chosen[np.repeat(np.arange(n_manual_concepts), gen.allocate(np.ones(n_manual_concepts), size))]
    atomic_save_npy(folder / "manual_images.npy", gen.render(world, y, s, rng))
    atomic_save_npy(folder / "manual_labels.npy", y)
    meta = {"kind": "generated", "n_concepts": c, "concept_names": world.names(),
            "tail_concepts": world.tail_concepts(e.tail_fraction).tolist(), "concept_freq": world.freq.tolist(),
            "concept_group": world.group.tolist(), "manual_concepts": chosen.tolist(), "pool_size": plan.size,
            "pool_concept_counts": np.bincount(labels[labels >= 0], minlength=c).tolist(),
            "n_duplicates": int(plan.duplicate_copies.sum()), "n_duplicate_clusters": plan.n_duplicate_sources,
            "n_junk": plan.n_junk}
    atomic_save_json(folder / "meta.json", meta)
    log.info("data: generated %d images (%d concepts, %d near-duplicates, %d junk) in %s", plan.size, c,
             meta["n_duplicates"], plan.n_junk, folder)


def eval_split(labels: np.ndarray, groups: np.ndarray, n_classes: int, bank_per: int, test_per: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced evaluation split of a labelled pool that keeps groups whole.

    labels: (n,) int64 class, -1 unlabelled (never evaluated); groups: (n,) int64, images of one group (variants
    of one item) land on one side only: bank, test or pool. Per class, its groups in random order fill the bank
    to ``bank_per`` images, then the test set to ``test_per``, the rest stays in the pool; a group is never cut,
    so a share can exceed its quota by less than one group (never with one image per group). A class that cannot
    fill both and keep a group for the pool is left out of evaluation, all its images in the pool.
    Returns (bank rows, test rows, evaluated: (n_classes,) bool)."""
    bank, test = [], []
    evaluated = np.zeros(n_classes, bool)
    for k in range(n_classes):
        rows = np.flatnonzero(labels == k)
        ids, member = np.unique(groups[rows], return_inverse=True)
        order = rng.permutation(ids.size)  # one image per group: the same draw as permuting the images
        filled = np.concatenate([[0], np.cumsum(np.bincount(member, minlength=ids.size)[order])])
        end_bank = int(np.searchsorted(filled, bank_per))  # groups drawn until the bank holds bank_per images
        end_test = int(np.searchsorted(filled, filled[min(end_bank, ids.size)] + test_per))
        if end_test >= ids.size:  # a quota unfilled, or no group left for the pool: too small to evaluate
            continue
        evaluated[k] = True
        rank = np.empty(ids.size, np.int64)
        rank[order] = np.arange(ids.size)  # position of each group in the draw
        pos = rank[member]
        for out, side in ((bank, pos < end_bank), (test, (pos >= end_bank) & (pos < end_test))):
            out.append(rows[side][np.argsort(pos[side], kind="stable")])
    empty = np.zeros(0, np.int64)
    return (np.concatenate(bank) if bank else empty), (np.concatenate(test) if test else empty), evaluated


def _import_real(cfg: DictConfig, folder: Path) -> None:
    """A labelled real pool: hold out a balanced evaluation split per class (groups kept whole, classes too small
    for it left out of evaluation), build ``manual`` from the rest."""
    d = cfg.data
    s = int(d.image_size)
    group_by = str(d.get("group_by") or "none")
    files = None  # the source file of each image, for file-backed pools
    if d.kind == "image_folder":
        if not d.root:
            raise CurationInputError("data=image_folder needs data.root=PATH (an ImageFolder tree root/<class>/*)")
        files, labels, names = loaders.list_image_folder(d.root)
        images = loaders.load_images(files, s)
        groups = loaders.image_groups(d.root, files, group_by)
    elif d.kind == "real":  # a pool prepared by scripts/prepare_real_data.py: labels and variant groups known
        from experiments.realdata import image_pool
        if group_by != "none":
            raise CurationInputError(f"data.group_by={group_by}: a prepared real pool keeps its own groups (the "
                                     "variants of one item); remove the override")
        files, labels, names, groups = image_pool(str(d.pool))
        images = loaders.load_images(files, s)
        group_by = "item"
    else:
        if group_by != "none":
            raise CurationInputError(f"data.group_by={group_by} needs an image folder (data=web_images_folder)")
        if d.kind == "webdataset":
            if not d.shards:
                raise CurationInputError("data=webdataset needs data.shards=PATH (folder, glob or brace pattern)")
            images, labels, names = loaders.load_webdataset(d.shards, s)
        else:
            images, labels, names = loaders.load_cifar100(d.root or Path(cfg.paths.cache_dir) / "cifar100", s)
        groups = np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng([int(d.world_seed), 1])
    c = len(names)
    e = d.eval
    bank, test, evaluated = eval_split(labels, groups, c, int(e.bank_per_concept), int(e.test_per_concept), rng)
    if not evaluated.any():
        raise CurationInputError(
            f"no class of {d.root or d.shards or 'the real pool ' + str(d.get('pool'))} has enough images for the evaluation split (more than "
            f"data.eval.bank_per_concept + test_per_concept = {int(e.bank_per_concept) + int(e.test_per_concept)}"
            f"{', groups kept whole' if group_by != 'none' else ''}): lower them or add images")
    if not evaluated.all():
        small = [names[k] for k in np.flatnonzero(~evaluated)]
        log.warning("data: %d of %d classes are too small for the evaluation split (bank %d + test %d per class%s): "
                    "they stay in the pool and are left out of evaluation (%s%s)", len(small), c,
                    int(e.bank_per_concept), int(e.test_per_concept), ", groups kept whole" if group_by != "none"
                    else "", ", ".join(small[:10]), ", ..." if len(small) > 10 else "")
    pool_mask = np.ones(len(labels), bool)
    pool_mask[bank] = False
    pool_mask[test] = False
    pool_idx = np.flatnonzero(pool_mask)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(folder / "images.npy", images[pool_idx])
    atomic_save_npy(folder / "labels.npy", labels[pool_idx])
    atomic_save_npy(folder / "kinds.npy", np.where(labels[pool_idx] >= 0, 0, 2).astype(np.uint8))
    atomic_save_npy(folder / "dup_group.npy", np.full(pool_idx.size, -1, np.int64))
    if files is not None:
        atomic_save_json(folder / SOURCE_FILES, [str(files[i]) for i in pool_idx])
    for name, idx in (("bank", bank), ("test", test)):
        atomic_save_npy(folder / f"{name}_images.npy", images[idx])
        atomic_save_npy(folder / f"{name}_labels.npy", labels[idx])
    pool_labels = labels[pool_idx]
    counts = np.bincount(pool_labels[pool_labels >= 0], minlength=c)
    m = d.manual
    n_manual = c if m.n_concepts is None else min(int(m.n_concepts), c)
    chosen = np.sort(rng.choice(c, size=n_manual, replace=False))
    # as class-balanced as the chosen classes allow: small classes give all they have, the others fill the rest
    size = int(cfg.subset_size)
    quota = water_fill(counts[chosen], min(size, int(counts[chosen].sum())), rng)
    manual = np.concatenate([rng.choice(np.flatnonzero(pool_labels == k), size=q, replace=False)
                             for k, q in zip(chosen, quota)])
    if manual.size < size:
        log.warning("data: the manual set has %d images, fewer than subset_size = %d (its %d classes hold no "
                    "more): it trains on a smaller set than the other variants", manual.size, size, n_manual)
    atomic_save_npy(folder / "manual_images.npy", images[pool_idx][manual])
    atomic_save_npy(folder / "manual_labels.npy", pool_labels[manual])
    freq = counts / max(counts.sum(), 1)
    eval_ids = np.flatnonzero(evaluated)
    n_tail = max(1, int(round(e.tail_fraction * eval_ids.size)))  # the rarest evaluated classes: tail accuracy
    meta = {"kind": d.kind, "n_concepts": c, "concept_names": list(names),
            "tail_concepts": eval_ids[np.argsort(freq[eval_ids], kind="stable")[:n_tail]].tolist(),
            "concept_freq": freq.tolist(), "manual_concepts": chosen.tolist(), "pool_size": int(pool_idx.size),
            "pool_concept_counts": counts.tolist(), "n_duplicates": 0, "n_junk": int((pool_labels < 0).sum()),
            "eval_concepts": eval_ids.tolist(), "group_by": group_by, "n_groups": int(np.unique(groups).size)}
    atomic_save_json(folder / "meta.json", meta)


def _load(folder: Path, key: str) -> StudyData:
    meta = json.loads((folder / "meta.json").read_text())
    ld = lambda name, mmap=None: np.load(folder / f"{name}.npy", mmap_mode=mmap)  # noqa: E731
    shifted = LabeledSet(ld("shifted_images"), ld("shifted_labels")) if (folder / "shifted_images.npy").exists() \
        else None
    files = json.loads((folder / SOURCE_FILES).read_text()) if (folder / SOURCE_FILES).exists() else None
    return StudyData(images=ld("images", "r"), labels=ld("labels"), kinds=ld("kinds"), dup_group=ld("dup_group"),
                     n_concepts=int(meta["n_concepts"]), concept_names=meta["concept_names"],
                     tail_concepts=np.asarray(meta["tail_concepts"], np.int64),
                     bank=LabeledSet(ld("bank_images"), ld("bank_labels")),
                     test=LabeledSet(ld("test_images"), ld("test_labels")), shifted=shifted,
                     manual=LabeledSet(ld("manual_images"), ld("manual_labels")), key=key, meta=meta,
                     source_files=files)
