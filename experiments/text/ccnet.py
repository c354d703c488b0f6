"""The CCNet-style baseline (Wenzek et al. 2020, as used for Llama 1): paragraph-level exact deduplication by a
hash of the normalised text, then a Wikipedia n-gram language model scores every document by perplexity and the
lowest-perplexity documents are kept (CCNet's head / middle buckets).

The n-gram model is an interpolated Kneser-Ney model over lower-cased word / punctuation tokens (KenLM's 5-gram
on SentencePiece tokens at paper scale; an order-3 model in pure Python here).
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections import Counter, defaultdict

import numpy as np

TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)
BOS, EOS, UNK = "<s>", "</s>", "<unk>"


def normalize(text: str) -> str:
    """CCNet's normalisation before hashing: lower case, accents and digits folded, punctuation removed."""
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    text = re.sub(r"\d", "0", text)
    text = re.sub(r"[^\w\s]", "", text)
    return re.sub(r"\s+", " ", text).strip()


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text.lower())


def dedup_first(texts: list[str]) -> np.ndarray:
    """(n,) bool: True for the first occurrence of every normalised text (exact paragraph dedup)."""
    seen: set[bytes] = set()
    keep = np.zeros(len(texts), dtype=bool)
    for i, t in enumerate(texts):
        h = hashlib.sha1(normalize(t).encode()).digest()
        if h not in seen:
            seen.add(h)
            keep[i] = True
    return keep


class KneserNeyLM:
    """Interpolated Kneser-Ney n-gram model (modified-free, one discount ``d`` per order).

    fit(texts) counts n-grams of the token streams (``<s>`` padded, ``</s>`` closed); words seen fewer than
    ``min_count`` times become ``<unk>``. ``perplexity(text)`` is exp of the mean negative log-probability per
    token of the text (``</s>`` included).
    """

    def __init__(self, order: int = 3, discount: float = 0.75, min_count: int = 2):
        if order < 1:
            raise ValueError("order must be >= 1")
        self.order, self.d, self.min_count = order, discount, min_count

    def _map(self, tokens: list[str]) -> list[str]:
        v = self.vocab
        return [t if t in v else UNK for t in tokens]

    def fit(self, texts: list[str]) -> "KneserNeyLM":
        n = self.order
        streams = [tokenize(t) for t in texts]
        freq = Counter(w for s in streams for w in s)
        self.vocab = {w for w, c in freq.items() if c >= self.min_count} | {EOS, UNK}
        counts = [Counter() for _ in range(n + 1)]  # counts[k][ngram of length k]
        for s in streams:
            seq = [BOS] * (n - 1) + self._map(s) + [EOS]
            for k in range(1, n + 1):
                for i in range(n - k, len(seq) - k + 1):  # the last token of every k-gram is a real one
                    counts[k][tuple(seq[i:i + k])] += 1
        # highest order uses raw counts; lower orders use continuation counts (distinct left contexts)
        self.counts = [None] * (n + 1)
        self.counts[n] = counts[n]
        for k in range(1, n):
            cont = Counter()
            for gram in counts[k + 1]:
                cont[gram[1:]] += 1
            self.counts[k] = cont
        # context totals and number of distinct followers per context, per order
        self.ctx_total = [None] * (n + 1)
        self.ctx_types = [None] * (n + 1)
        for k in range(1, n + 1):
            tot, types = defaultdict(int), defaultdict(int)
            for gram, c in self.counts[k].items():
                tot[gram[:-1]] += c
                types[gram[:-1]] += 1
            self.ctx_total[k], self.ctx_types[k] = tot, types
        self.n_vocab = len(self.vocab)
        return self

    def _prob(self, gram: tuple[str, ...]) -> float:
        k = len(gram)
        if k == 0:
            return 1.0 / self.n_vocab
        lower = self._prob(gram[1:])
        ctx = gram[:-1]
        total = self.ctx_total[k].get(ctx, 0)
        if total == 0:
            return lower
        c = self.counts[k].get(gram, 0)
        gamma = self.d * self.ctx_types[k][ctx] / total
        return max(c - self.d, 0.0) / total + gamma * lower

    def log_prob(self, text: str) -> tuple[float, int]:
        """(sum of natural-log probabilities, number of scored tokens) of ``text``."""
        n = self.order
        seq = [BOS] * (n - 1) + self._map(tokenize(text)) + [EOS]
        total = 0.0
        for i in range(n - 1, len(seq)):
            total += math.log(self._prob(tuple(seq[i - n + 1:i + 1])))
        return total, len(seq) - (n - 1)

    def perplexity(self, text: str) -> float:
        lp, m = self.log_prob(text)
        return math.exp(-lp / max(m, 1))


def ccnet_ranking(texts: list[str], scores: np.ndarray) -> np.ndarray:
    """Pool rows in CCNet order: exact duplicates (after normalisation) dropped, the rest by increasing
    perplexity (ties by row). ``scores``: (n,) perplexity per text."""
    keep = np.flatnonzero(dedup_first(texts))
    return keep[np.lexsort((keep, scores[keep]))]


def bucket_of(scores: np.ndarray, ranking: np.ndarray) -> dict[str, float]:
    """The perplexity thresholds of CCNet's head / middle / tail thirds of the deduplicated pool."""
    s = np.sort(scores[ranking])
    return {"head_max": float(np.quantile(s, 1 / 3)), "middle_max": float(np.quantile(s, 2 / 3))}
