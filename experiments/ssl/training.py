"""A Lightning fit that a stop signal stops: the process ends with a non-zero status, as a stopped run must.

Lightning catches SIGTERM during ``trainer.fit``: it finishes the step, then raises ``SIGTERMException``, a
``SystemExit`` without a code (the process exits 0, as if it had finished), or, when the signal comes during the
last step, returns as if training had completed. :func:`fit` turns both into ``SystemExit(143)``, the status a
shell reports for a process ended by SIGTERM; ``run.py`` does the same for a ``SIGTERMException`` from any fit.
"""

from __future__ import annotations

import logging
import signal
from typing import NoReturn

log = logging.getLogger(__name__)
SIGTERM_EXIT = 128 + signal.SIGTERM  # 143


def stopped(what: str = "the run") -> NoReturn:
    """End the process: SIGTERM stopped ``what``."""
    log.error("%s was stopped by SIGTERM: exiting with status %d", what, SIGTERM_EXIT)
    raise SystemExit(SIGTERM_EXIT)


def is_lightning_sigterm(err: BaseException) -> bool:
    """Whether ``err`` is Lightning's SIGTERMException (no import of Lightning when it was never loaded)."""
    import sys

    exceptions = sys.modules.get("pytorch_lightning.utilities.exceptions")
    return exceptions is not None and isinstance(err, exceptions.SIGTERMException)


def fit(trainer, module, *args, name: str = "training", **kwargs) -> None:
    """``trainer.fit(module, *args, **kwargs)``; SIGTERM during it ends the process with status 143."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    try:
        trainer.fit(module, *args, **kwargs)
    except SIGTERMException:
        stopped(name)
    if trainer.received_sigterm:  # at the last step Lightning lets the fit return
        stopped(name)
