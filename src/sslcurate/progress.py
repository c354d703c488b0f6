"""Progress bars that cost nothing when disabled and only show on rank 0."""

from __future__ import annotations

from tqdm.auto import tqdm

from . import distributed as dist


def progress_bar(total: int | None = None, desc: str = "", enabled: bool = True, unit: str = "it"):
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled or not dist.is_main_process(),
                leave=False, dynamic_ncols=True)
