"""A text corpus as three parallel lists, and the pool / evaluation / reference split that every pool source
(the built-in one, users' shards) returns."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

CONTENT_DOMAINS = ("wiki", "news", "code", "docs", "pkgdocs")
JUNK_DOMAINS = ("boilerplate", "spam", "seo", "duplicate")


@dataclass
class TextCorpus:
    texts: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str, domain: str, group: str) -> None:
        self.texts.append(text)
        self.domains.append(domain)
        self.groups.append(group)

    def extend(self, other: "TextCorpus") -> None:
        self.texts += other.texts
        self.domains += other.domains
        self.groups += other.groups

    def subset(self, idx: Iterable[int]) -> "TextCorpus":
        idx = list(idx)
        return TextCorpus([self.texts[i] for i in idx], [self.domains[i] for i in idx],
                          [self.groups[i] for i in idx])

    def fingerprint(self) -> str:
        """Content hash (texts and labels): the key of every cached artifact derived from this corpus."""
        h = hashlib.sha256()
        for t, d, g in zip(self.texts, self.domains, self.groups):
            h.update(d.encode())
            h.update(b"\0")
            h.update(t.encode("utf-8", "replace"))
            h.update(b"\1")
        return h.hexdigest()[:16]

    def domain_counts(self) -> dict[str, int]:
        names, counts = np.unique(np.array(self.domains, dtype=object), return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}

    # -- storage (Parquet): one row per document
    def save(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        pq.write_table(pa.table({"text": self.texts, "domain": self.domains, "group": self.groups}), tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "TextCorpus":
        import pyarrow.parquet as pq
        t = pq.read_table(path)
        return cls(t.column("text").to_pylist(), t.column("domain").to_pylist(), t.column("group").to_pylist())


@dataclass
class PoolSplit:
    """``pool``: what every variant selects from; ``eval``: held-out documents (whole groups) of the content
    domains; ``reference``: the Wikipedia slice the CCNet-style filter's n-gram model is trained on."""

    pool: TextCorpus
    eval: TextCorpus
    reference: TextCorpus

    def fingerprint(self) -> str:
        return hashlib.sha256("".join(c.fingerprint() for c in (self.pool, self.eval, self.reference))
                              .encode()).hexdigest()[:16]


def group_fraction(group: str, salt: int) -> float:
    """A stable pseudo-random number in [0, 1) per group (split decisions do not depend on list order)."""
    digest = hashlib.sha256(f"{salt}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2 ** 64


def held_out_groups(corpus: TextCorpus, fraction: float, salt: int) -> set[str]:
    """Whole source documents to hold out, about ``fraction`` of each domain's documents.

    Per domain (a group's domain is that of most of its pieces), the groups are walked in the order of
    :func:`group_fraction` and held out while that keeps the domain's held-out documents within 1.5 x its share,
    until the share is reached; one group always stays in the pool. Drawing per domain rather than per group keeps
    a small domain of a few large documents in the evaluation set: drawing each group with probability
    ``fraction`` left 4 of the real text pool's 1,299 changelog pieces (one small changelog of 30) held out."""
    sizes = Counter(corpus.groups)
    group_domains: dict[str, Counter] = {}
    for g, d in zip(corpus.groups, corpus.domains):
        group_domains.setdefault(g, Counter())[d] += 1
    by_domain: dict[str, list[str]] = {}
    for g, counts in group_domains.items():
        by_domain.setdefault(counts.most_common(1)[0][0], []).append(g)
    held: set[str] = set()
    for domain in sorted(by_domain):
        groups = sorted(by_domain[domain], key=lambda g: (group_fraction(g, salt), g))
        target = fraction * sum(sizes[g] for g in groups)
        taken = 0
        for g in groups[:-1]:  # the last group stays in the pool
            if taken >= target:
                break
            if taken + sizes[g] <= 1.5 * target:
                held.add(g)
                taken += sizes[g]
    return held
