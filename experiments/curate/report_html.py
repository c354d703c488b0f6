"""``report.html``: one static page, readable offline (images inline as data URIs), that lets a person judge a
curation run: what was read, skipped and deduplicated, the hierarchy, cluster sizes before and after, a grid of
items from each top-level cluster, and near-duplicate examples."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from sslcurate.io import atomic_write_bytes

THUMB = 96  # thumbnail side, pixels
ITEMS_PER_CLUSTER = 8
MAX_CLUSTERS = 60  # top-level clusters shown (largest selections first)
SNIPPET_CHARS = 220

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:6px} .cluster{margin:10px 0 16px}
.item{width:%dpx;font-size:11px;overflow:hidden} .item img{width:%dpx;height:%dpx;image-rendering:pixelated}
.text{width:260px;font-size:12px;background:#f6f6f6;padding:6px;border-radius:4px}
.pair{display:flex;gap:10px;align-items:center;margin:6px 0} .muted{color:#777}
""" % (THUMB, THUMB, THUMB)


def png_data_uri(rgb: np.ndarray) -> str:
    """(H, W, 3) uint8 or float in [0, 1] -> a ``data:image/png;base64,...`` thumbnail of side THUMB."""
    from PIL import Image

    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).astype(np.uint8)
    img = Image.fromarray(a)
    img.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def file_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def item_html(value, item_id: str, caption: str = "") -> str:
    """One item's cell: a thumbnail (image or tile as RGB) or a text snippet, with its id as the tooltip."""
    tip = html.escape(item_id, quote=True)
    cap = html.escape(caption)
    if isinstance(value, str):
        snippet = html.escape(value[:SNIPPET_CHARS] + ("…" if len(value) > SNIPPET_CHARS else ""))
        return f'<div class="text" title="{tip}">{snippet}<div class="muted">{cap}</div></div>'
    if value is None:
        return f'<div class="item muted" title="{tip}">unreadable<br>{cap}</div>'
    return f'<div class="item" title="{tip}"><img alt="{tip}" src="{png_data_uri(value)}"><br>{cap}</div>'


# The rows of the report's optional sections, as format strings over that section of report.json.
UPDATE_ROWS = (
    ("update of", "{from}: {previous_pool:,} pool items ({removed:,} removed), {new_items_embedded:,} new, "
                  "{new_near_duplicates:,} near-duplicates, {new_added:,} added without re-clustering"),
    ("drift", "{drift[since_clustering][share]:.1%} of the items added since the clustering lie beyond the pool's "
              "p99 distance to its nearest level-1 centroid (threshold {drift[threshold]:.0%}): {verdict}"))
RETRIEVAL_ROWS = (
    ("retrieval mix", "{mix[retrieval]:,} retrieved near {seed_items:,} seed items ({seeds_contributing:,} "
                      "contributing), {mix[clustering]:,} by balanced sampling"),
    ("retrieval overlap", "{overlap[share_of_retrieved]:.0%} of the retrieved items are in the clustering-alone "
                          "selection; {overlap[subset_share_in_clustering_alone]:.0%} of the subset is"))
BALANCE_ROWS = (("label balance, pool", "pool"), ("label balance, subset", "subset"),
                ("label balance, clustering alone (without retrieval)", "clustering_alone"),
                ("label balance, random subset of the same size", "random"))
BALANCE = "normalised entropy {normalized_entropy:.3f}, {coverage:.0%} of labels present"


def _section_rows(section: dict | None, rows: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """``(name, template filled from section)`` for each row; none where the run has no such section."""
    return [(name, template.format_map(section)) for name, template in rows] if section else []


def _summary_rows(report: dict) -> list[tuple[str, str]]:
    rows = [("input", f"{report['data']['kind']}: {report['data']['path']}"),
            ("items listed", f"{report['items']['listed']:,}"),
            ("skipped (unreadable)", f"{len(report['skipped']):,}"),
            ("embedded", f"{report['items']['embedded']:,} with {report['embedder']['name']} "
                         + (f"({report['embedding']['items_per_second']:.1f} items/s)"
                            if report['embedding']['items_per_second'] else "(from the cache)"))]
    d = report["dedup"]
    if d["threshold"] is not None:
        rows.append(("near-duplicates dropped", f"{d['dropped_rows']:,} at cosine ≥ {d['threshold']} "
                                                f"({d['kept_rows']:,} kept)"))
    else:
        rows.append(("near-duplicates", "not removed (curation.dedup.threshold=null)"))
    rows.append(("hierarchy", ", ".join(f"k={lv['n_clusters']} r={lv['sample_size']}" for lv in report["levels_used"])
                 + (" (sized from the pool)" if report["levels_sized_from_pool"] else " (given)")))
    u = report.get("update")
    if u:
        u = {**u, "verdict": ("RE-CLUSTERING RECOMMENDED" if u["drift"]["recommend_reclustering"]
                              else "the hierarchy still fits")}
    rows += _section_rows(u, UPDATE_ROWS)
    rows.append(("curated subset", f"{report['subset_size']:,} items"))
    rows += _section_rows(report.get("retrieval"), RETRIEVAL_ROWS)
    for name, key in BALANCE_ROWS:
        rows += _section_rows(report.get("concepts", {}).get(key), ((name, BALANCE),))
    return rows


def write_report_html(path: Path, report: dict, cluster_sizes_png: Path | None, clusters: list[dict],
                      dedup_pairs: list[dict]) -> None:
    """Write the page. clusters: ``[{"id", "pool_size", "selected", "items": [(value, item_id), ...]}]`` (largest
    first); dedup_pairs: ``[{"dropped": (value, id), "kept": (value, id), "cosine"}]``."""
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>sslcurate report</title>",
             f"<style>{CSS}</style></head><body>", "<h1>Curation report</h1>", "<h2>Summary</h2><table>"]
    parts += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _summary_rows(report)]
    parts.append("</table>")
    if cluster_sizes_png is not None and Path(cluster_sizes_png).exists():
        parts.append("<h2>Cluster sizes before and after</h2>")
        parts.append(f'<img id="cluster-sizes" style="max-width:100%" alt="cluster sizes" '
                     f'src="{file_data_uri(cluster_sizes_png)}">')
    parts.append(f"<h2>Top-level clusters ({len(clusters)} shown)</h2>")
    for c in clusters:
        parts.append(f'<div class="cluster" id="cluster-{c["id"]}"><b>cluster {c["id"]}</b> '
                     f'<span class="muted">{c["pool_size"]:,} in the pool, {c["selected"]:,} selected</span>'
                     '<div class="grid">')
        parts += [item_html(v, i) for v, i in c["items"]]
        parts.append("</div></div>")
    parts.append("<h2>Near-duplicate examples (dropped ← kept)</h2>")
    if not dedup_pairs:
        parts.append("<p class='muted'>none</p>")
    for p in dedup_pairs:
        parts.append('<div class="pair">' + item_html(*p["dropped"], caption="dropped") + "←"
                     + item_html(*p["kept"], caption="kept") + f"<span>cosine {p['cosine']:.3f}</span></div>")
    if report["skipped"]:
        parts.append(f"<h2>Skipped items ({len(report['skipped']):,})</h2><table>")
        parts += [f"<tr><td>{html.escape(s['item'])}</td><td>{html.escape(s['reason'])}</td></tr>"
                  for s in report["skipped"][:200]]
        parts.append("</table>")
        if len(report["skipped"]) > 200:
            parts.append("<p class='muted'>(first 200; all of them in report.json)</p>")
    parts.append("</body></html>")
    atomic_write_bytes(path, "\n".join(parts).encode("utf-8"))
