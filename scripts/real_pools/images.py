"""The image pools: Tux Paint stamps and Oxygen icons from the Debian archive, indexed as ``path,label,group``."""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections import Counter
from pathlib import Path

from real_pools.registries import fetch_debs, keep_copyrights


def tuxpaint_group(rel: str) -> str:
    """Identity of a stamp: its top category and file stem without variant markers (``_mirror``, ``_filled`` /
    ``_outlined``, ``_front`` / ``_back``, a trailing number as in ``frog-1`` or ``guitar2``). Case is kept (``A``
    and ``a`` are different letters)."""
    parts = rel.split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    stem = re.sub(r"_(mirror|filled|outlined|front|back)$", "", stem)
    stem = re.sub(r"[-_ ]?\d+$", "", stem) or stem
    return f"{parts[0]}/{stem}"


def tuxpaint_index(stamps: Path) -> tuple[list[tuple[str, str, str]], int]:
    """Index of the PNG stamps under ``stamps`` (``.../tuxpaint/stamps``): rows (path relative to stamps, label =
    top-level category, group), sorted by path; and the number of SVG-only stamps skipped."""
    pngs = sorted(p.relative_to(stamps).as_posix() for p in stamps.rglob("*.png"))
    png_stems = {p.rsplit(".", 1)[0] for p in pngs}
    svg_only = sum(1 for p in stamps.rglob("*.svg") if p.relative_to(stamps).as_posix()[:-4] not in png_stems)
    return [(p, p.split("/")[0], tuxpaint_group(p)) for p in pngs if "/" in p], svg_only


def icon_theme_index(theme: Path) -> list[tuple[str, str, str]]:
    """Index of a freedesktop icon theme laid out ``<size>/<context>/<name>.png`` under ``theme``: rows (path
    relative to theme, label = context, group = ``context/name`` of the file a symlinked alias points to), sorted."""
    rows = []
    for p in sorted(theme.glob("*/*/*.png")):
        target = Path(os.path.realpath(p))
        try:
            _, context, _ = target.relative_to(theme.resolve()).parts
        except ValueError:  # an alias pointing outside the size/context layout
            context = p.parent.name
        rows.append((p.relative_to(theme).as_posix(), p.parent.name, f"{context}/{target.stem}"))
    return rows


def copy_indexed(rows: list[tuple[str, str, str]], src: Path, dest: Path) -> None:
    """Copy the indexed files (symlinks followed, so aliases become plain files) and write ``dest/index.csv``."""
    for rel, _, _ in rows:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dest / rel)
    with open(dest / "index.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "group"])
        writer.writerows(rows)


def index_stats(rows: list[tuple[str, str, str]]) -> dict:
    """Items, classes, groups, largest / smallest class and how many items share their group with another."""
    classes, groups = Counter(r[1] for r in rows), Counter(r[2] for r in rows)
    return {"items": len(rows), "classes": len(classes), "groups": len(groups),
            "largest_class": classes.most_common()[0] if rows else None,
            "smallest_class": classes.most_common()[-1] if rows else None,
            "items_in_shared_groups": sum(c for c in groups.values() if c > 1)}


def prepare_images(work: Path, dest: Path) -> tuple[list[dict], list[str]]:
    debs = fetch_debs(["tuxpaint-stamps-default", "oxygen-icon-theme"], work)
    keep_copyrights(debs, dest)
    rows, svg_only = tuxpaint_index(debs["tuxpaint-stamps-default"]["tree"] / "usr/share/tuxpaint/stamps")
    copy_indexed(rows, debs["tuxpaint-stamps-default"]["tree"] / "usr/share/tuxpaint/stamps", dest / "tuxpaint")
    theme = debs["oxygen-icon-theme"]["tree"] / "usr/share/icons/oxygen/base"
    icon_rows = icon_theme_index(theme)
    copy_indexed(icon_rows, theme, dest / "oxygen")
    lines = []
    for name, r, note in (("tuxpaint", rows, f", {svg_only} SVG-only stamps skipped"), ("oxygen", icon_rows, "")):
        s = index_stats(r)
        lines.append(f"images/{name}: {s['items']} PNGs, {s['classes']} classes (largest {s['largest_class']}, "
                     f"smallest {s['smallest_class']}), {s['groups']} groups, {s['items_in_shared_groups']} items "
                     f"share a group{note}")
    return [d["record"] for d in debs.values()], lines
