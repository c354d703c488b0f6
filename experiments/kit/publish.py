"""A study's last steps: figures and metrics to the tracker, and with ``publish=true`` to ``results/<name>/``."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from omegaconf import DictConfig

from sslcurate import distributed

log = logging.getLogger(__name__)


def publish(cfg: DictConfig, files: list[Path]) -> Path | None:
    """Copy a run's metrics.json and figures to ``results/<name>/`` when ``publish=true``."""
    if not cfg.publish or not distributed.is_main_process():
        return None
    dest = Path(cfg.paths.results_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, dest / Path(f).name)
    log.info("published %d file(s) to %s", len(files), dest)
    return dest


def finish_study(cfg: DictConfig, tracker, doc: dict, metrics_path: Path, figures: list[Path], write_readme=None,
                 **readme_kwargs) -> None:
    """A study's last steps: log the figures and the metrics document, close the tracker, and with
    ``publish=true`` copy metrics and figures to ``results/<name>/`` and write its README there
    (``write_readme(dest, **readme_kwargs)``)."""
    for f in figures:
        tracker.log_image(f.stem, f)
    tracker.log_metrics_doc(doc)
    tracker.finish()
    if cfg.publish:
        dest = publish(cfg, [metrics_path, *figures])
        if write_readme is not None and dest is not None:
            write_readme(dest, **readme_kwargs)


def readme_cli(write_readme, description: str, argv: list[str] | None = None) -> Path:
    """``python -m <study>.report FOLDER [--command "python run.py ..."]``: rewrite a results folder's README from
    its metrics.json (``write_readme(folder, command)``), e.g. after the README text changed."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--command", default=None, help="the command shown as the run's (default: the one recorded)")
    args = ap.parse_args(argv)
    path = write_readme(args.folder, args.command)
    print(path)  # noqa: T201 (CLI)
    return path
