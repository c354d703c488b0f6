"""Errors the curation core raises for bad input.

Every check in the core raises :class:`CurationInputError` (a ``ValueError``) with a message that names the
problem, so command-line front ends can print it and exit non-zero instead of showing a traceback.
"""

from __future__ import annotations


class CurationInputError(ValueError):
    """Input the core cannot work with: bad embeddings, impossible settings, a target larger than the pool."""
