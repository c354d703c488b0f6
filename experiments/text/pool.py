"""The text pool: an offline, web-like mix of documents, and streamed loaders for users' JSONL / Parquet shards.

A :class:`TextCorpus` is three parallel lists: ``texts``, ``domains`` (evaluation-only labels) and ``groups``
(the article / module / package a document comes from; splits are made by group so a held-out document never has
a sibling paragraph in the pool).

The built-in pool (:func:`build_builtin`) mixes, from what every installation carries:

* ``wiki``: paragraphs of the 106 Wikipedia articles in gensim's test data (a slice is kept apart as the CCNet
  reference corpus, another for evaluation);
* ``news``: the Lee news corpus of gensim's test data, articles cut into paragraph-sized chunks;
* ``code``: top-level functions and classes of the Python standard library (docstrings removed);
* ``docs``: standard-library docstrings;
* ``pkgdocs``: long descriptions of the installed packages (``importlib.metadata``), cut into paragraphs;
* generated junk that dominates by count, as on the web: ``boilerplate`` (cookie banners, menus, footers from
  a handful of templates, so mostly exact repeats), ``spam`` (templated keyword-stuffed ads), ``seo``
  (machine-spun articles of a content farm: varied wording, so near-duplicate removal keeps them, on one money
  topic) and ``duplicate`` (exact and near copies of a few popular pool documents).
"""

from __future__ import annotations

import ast
import bz2
import gzip
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import re
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from sslcurate import CurationInputError

log = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------------------------------------------
# splitting text into documents

def chunk_paragraphs(paragraphs: Iterable[str], min_chars: int, max_chars: int) -> list[str]:
    """Merge consecutive short paragraphs up to ``min_chars``; cut long ones at sentence ends near ``max_chars``."""
    out, buf = [], ""
    for p in paragraphs:
        p = re.sub(r"[ \t]+", " ", p).strip()
        if not p:
            continue
        buf = f"{buf}\n{p}" if buf else p
        while len(buf) > max_chars:
            cut = buf.rfind(". ", min_chars, max_chars)
            cut = cut + 1 if cut > 0 else max_chars
            out.append(buf[:cut].strip())
            buf = buf[cut:].strip()
        if len(buf) >= min_chars:
            out.append(buf)
            buf = ""
    if len(buf) >= min_chars:
        out.append(buf)
    return out


def gensim_test_data() -> Path:
    try:
        import gensim
    except ImportError as err:  # pragma: no cover - gensim is a dependency
        raise CurationInputError("the built-in text pool needs gensim (pip install gensim)") from err
    path = Path(gensim.__file__).parent / "test" / "test_data"
    if not path.is_dir():
        raise CurationInputError(f"gensim's test corpora are missing: {path} is not a folder")
    return path


WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS_FILES = ("lee_background.cor", "lee.cor")


def wikipedia_paragraphs(min_chars: int, max_chars: int) -> TextCorpus:
    """Paragraphs of the Wikipedia articles bundled with gensim; group = article title."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki
    path = gensim_test_data() / WIKI_FILE
    corpus = TextCorpus()
    with bz2.open(path) as f:
        for title, text, _ in extract_pages(f, filter_namespaces=("0",)):
            if text.lstrip().lower().startswith("#redirect"):
                continue
            clean = re.sub(r"'{2,}", "", filter_wiki(text))
            paras = [p for p in clean.split("\n") if len(p.strip()) > 40]
            for chunk in chunk_paragraphs(paras, min_chars, max_chars):
                corpus.add(chunk, "wiki", f"wiki:{title}")
    return corpus


def news_paragraphs(min_chars: int, max_chars: int) -> TextCorpus:
    """Lee news articles (one per line) cut into paragraph-sized chunks of whole sentences."""
    corpus = TextCorpus()
    for name in NEWS_FILES:
        lines = (gensim_test_data() / name).read_text(encoding="utf-8", errors="replace").splitlines()
        for i, line in enumerate(lines):
            sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", line.strip())
            for chunk in chunk_paragraphs(_sentence_groups(sentences, min_chars), min_chars, max_chars):
                corpus.add(chunk, "news", f"news:{name}:{i}")
    return corpus


def _sentence_groups(sentences: list[str], size: int) -> list[str]:
    out, buf = [], ""
    for s in sentences:
        buf = f"{buf} {s}".strip()
        if len(buf) >= size:
            out.append(buf)
            buf = ""
    if buf:
        out.append(buf)
    return out


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo", "encodings",
            "__pycache__", "pydoc_data", "ensurepip", "tkinter"}
    files = [p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts)]
    return sorted(files)


def stdlib_code_and_docs(min_chars: int, max_chars: int, min_doc_chars: int,
                         max_files: int | None = None) -> tuple[TextCorpus, TextCorpus]:
    """Top-level functions / classes of the standard library without docstrings (``code``) and the docstrings
    (``docs``); group = module path. max_files: parse only this many modules, evenly spaced in path order (parsing
    all of them dominates a small pool's build time); None: all."""
    root = Path(sysconfig.get_paths()["stdlib"])
    code, docs = TextCorpus(), TextCorpus()
    files = stdlib_files()
    if max_files is not None and max_files < len(files):
        files = [files[i] for i in np.linspace(0, len(files) - 1, max(1, max_files)).round().astype(int)]
    for path in files:
        module = "stdlib:" + str(path.relative_to(root))
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines()
        doc_lines: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                          ast.Constant) \
                        and isinstance(body[0].value.value, str):
                    doc = ast.get_docstring(node, clean=True) or ""
                    doc_lines.update(range(body[0].lineno, body[0].end_lineno + 1))
                    for chunk in chunk_paragraphs(doc.split("\n\n"), min_doc_chars, max_chars):
                        docs.add(chunk, "docs", module)
        for node in tree.body:
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            body = [lines[i - 1] for i in range(start, node.end_lineno + 1) if i not in doc_lines]
            for chunk in _code_chunks(body, min_chars, max_chars):
                code.add(chunk, "code", module)
    return code, docs


def _code_chunks(lines: list[str], min_chars: int, max_chars: int) -> list[str]:
    """Cut a definition at line boundaries into pieces of at most ``max_chars``."""
    out, buf = [], []
    size = 0
    for line in lines:
        if size + len(line) + 1 > max_chars and size >= min_chars:
            out.append("\n".join(buf))
            buf, size = [], 0
        buf.append(line.rstrip())
        size += len(line) + 1
    if size >= min_chars:
        out.append("\n".join(buf))
    return [c for c in out if c.strip()]


def package_descriptions(min_chars: int, max_chars: int) -> TextCorpus:
    """Long descriptions of the installed distributions, cut into paragraphs; group = distribution name."""
    corpus, seen = TextCorpus(), set()
    dists = sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata.get("Name") or "").lower())
    for dist in dists:
        name = (dist.metadata.get("Name") or "").lower()
        if not name or name in seen:
            continue
        seen.add(name)
        desc = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if not isinstance(desc, str) or len(desc) < min_chars:
            continue
        paras = re.split(r"\n\s*\n", desc)
        for chunk in chunk_paragraphs(paras, min_chars, max_chars):
            corpus.add(chunk, "pkgdocs", f"pkg:{name}")
    return corpus


# ----------------------------------------------------------------------------------------------------------------
# generated web junk

_SITE = ["Home", "About", "Contact", "Blog", "Shop", "Login", "Sign up", "FAQ", "Careers", "Press", "Help",
         "Privacy Policy", "Terms of Service", "Sitemap", "Newsletter", "Cart", "Support", "Accessibility"]
_BOILER = [
    "We use cookies to improve your experience on our website. By continuing to browse, you agree to our use of "
    "cookies. Read our {p} to learn more. Accept all cookies. Manage preferences.",
    "Copyright (c) {y} {c}. All rights reserved. Reproduction in whole or in part without permission is "
    "prohibited. {p} | {t} | Sitemap",
    "Subscribe to our newsletter! Get the latest news, offers and updates delivered straight to your inbox. "
    "Enter your email address. Subscribe. No spam, unsubscribe at any time.",
    "Skip to main content. Menu: {m}. Search this site. You are here: Home > {m1} > {m2}.",
    "Please enable JavaScript in your browser to view this page. This site works best with the latest version of "
    "Chrome, Firefox, Safari or Edge. Loading... Please wait.",
    "Share this: Facebook Twitter LinkedIn Email Print. Like this: Like Loading... Related posts. Leave a reply. "
    "Your email address will not be published. Required fields are marked *",
    "404 Not Found. The page you are looking for might have been removed, had its name changed, or is "
    "temporarily unavailable. Go back to the homepage.",
    "Log in to your account. Username. Password. Remember me. Forgot your password? Don't have an account? "
    "Register now. Continue with Google. Continue with Facebook.",
]
_COMPANIES = ["Acme Corp", "Globex", "Initech", "Umbrella Ltd", "Hooli", "Vandelay Industries", "Stark Media"]
_PRODUCTS = ["cheap watches", "replica handbags", "weight loss pills", "car insurance", "payday loans",
             "online casino", "bitcoin investment", "diet supplements", "cheap flights", "designer sunglasses",
             "viagra online", "forex signals", "seo services", "essay writing", "vpn deals", "crypto trading bot"]
_CITIES = ["New York", "London", "Sydney", "Toronto", "Berlin", "Mumbai", "Dubai", "Paris", "Singapore", "Lagos"]
_ADJ = ["best", "cheapest", "top rated", "number one", "affordable", "discount", "premium", "official", "genuine",
        "trusted", "exclusive", "amazing", "guaranteed"]
_SPAM = [
    "Buy {a} {p} online in {c}! {A} {p} at the lowest prices. {p} {p} {p}. Free shipping on {p}. Order {p} now "
    "and save {n}%! Click here for {a} {p} deals.",
    "{A} {p} in {c} - {n}% OFF today only!!! Looking for {p}? We have the {a} {p}. Call now {ph}. "
    "Limited offer on {p}, {a} {p}, {p} near me.",
    "Make ${n},000 per month with {p}! {A} {p} secrets they don't want you to know. Visit our site for {a} {p} "
    "in {c}. Act fast, {p} offer ends soon!",
    "Top {n} {a} {p} reviews {y}. Compare {p} prices in {c}. {A} {p} guaranteed. Keywords: {p}, {a} {p}, "
    "buy {p}, {p} {c}, {p} sale.",
]


def generate_boilerplate(n: int, rng: np.random.Generator) -> list[str]:
    """Site chrome from a handful of templates with few slot values: mostly exact repeats, as crawls see them."""
    out = []
    for _ in range(n):
        t = _BOILER[rng.integers(len(_BOILER))]
        site = int(rng.integers(len(_COMPANIES)))
        menu = [_SITE[(site * 5 + 3 * j) % len(_SITE)] for j in range(6)]  # one fixed menu per site
        out.append(t.format(p=_SITE[11], t=_SITE[12], y=int(rng.integers(2018, 2025)), c=_COMPANIES[site],
                            m=" | ".join(menu), m1=menu[0], m2=menu[1]))
    return out


def generate_spam(n: int, rng: np.random.Generator, campaigns: int | None = None) -> list[str]:
    """Templated, keyword-stuffed advertising.

    campaigns: None fills every slot of every page at random. Otherwise the pages come from this many campaigns,
    as SEO spam is mass-produced: a campaign fixes the template, product, adjective and phone number and posts
    pages that differ only in the city and the numbers (doorway pages), so its pages are near-duplicates of
    each other. Campaign sizes are Zipf-like (a few spammers post most pages)."""
    def fill(t, a, p, ph):
        return t.format(a=a, A=a.capitalize(), p=p, c=_CITIES[rng.integers(len(_CITIES))],
                        n=int(rng.integers(2, 90)), y=int(rng.integers(2015, 2025)), ph=ph)

    def phone():
        return f"+1-{rng.integers(200, 999)}-{rng.integers(100, 999)}-{rng.integers(1000, 9999)}"

    if campaigns is None:
        return [fill(_SPAM[rng.integers(len(_SPAM))], _ADJ[rng.integers(len(_ADJ))],
                     _PRODUCTS[rng.integers(len(_PRODUCTS))], phone()) for _ in range(n)]
    if campaigns < 1:
        raise CurationInputError(f"spam campaigns must be >= 1 (or null), got {campaigns}")
    spec = [(_SPAM[rng.integers(len(_SPAM))], _ADJ[rng.integers(len(_ADJ))],
             _PRODUCTS[rng.integers(len(_PRODUCTS))], phone()) for _ in range(campaigns)]
    weights = 1.0 / np.arange(1, campaigns + 1)
    picks = rng.choice(campaigns, size=n, p=weights / weights.sum())
    return [fill(*spec[c]) for c in picks]


# Machine-written SEO articles: much of what survives near-duplicate removal in a crawl. Each page is spun from
# the same few dozen sentence templates ({a|b|c} picks one alternative per page), so pages share their topic and
# style but rarely their wording: they are not near-duplicates of one another (98% of them survive the pool's
# near-duplicate removal), yet stay in the region of embedding space of their money topic.
SEO_TOPICS = {
    "casino": ["online casino", "casino bonus", "free spins", "slot machines", "live roulette", "no deposit bonus",
               "real money blackjack", "sports betting odds"],
    "loans": ["payday loans", "bad credit loans", "instant cash advance", "personal loans", "same day loans",
              "debt consolidation", "car title loans", "quick cash online"],
    "pharmacy": ["online pharmacy", "cheap pills", "weight loss pills", "generic viagra", "diet supplements",
                 "keto gummies", "testosterone booster", "cbd oil"],
    "crypto": ["bitcoin trading", "crypto signals", "forex robot", "crypto trading bot", "passive income",
               "binary options", "nft investing", "altcoin presale"],
}
_SEO_TITLES = [
    "{The ultimate|A complete|Your essential|The definitive} guide to {k} in {y}",
    "{Top|Best|Leading} {5|7|10|12} {k} {sites|offers|deals|options} {for|in} {c} ({y} {update|edition})",
    "{How to|Ways to|Tips to} {get|find|choose} the {best|cheapest|right|safest} {k} {today|now|this year}",
    "{K} {review|reviews|explained|comparison}: {is it worth it|what you need to know|pros and cons}",
]
_SEO_SENTENCES = [
    "{Looking for|Searching for|In need of|Interested in} {k}? {You have come to|You are in|This is} the "
    "{right|perfect|best} place.",
    "{Many|More and more|Thousands of|Millions of} {people|customers|users|readers} in {c} {choose|trust|prefer} "
    "{k} {every day|every month|each year}.",
    "{In this|In our|This} {article|guide|review|post} we {explain|show|cover|look at} {everything|all} you "
    "{need|want} to know about {k}.",
    "{K} {is|has become} {one of the most|the most} {popular|searched|talked about|profitable} {topics|options|"
    "choices} {online|on the internet|in {y}}.",
    "{Our|The} {experts|team|editors|specialists} {tested|compared|reviewed|ranked} {dozens of|over {n}|{n}} "
    "{k} {providers|sites|offers|brands} so you do not have to.",
    "{With|Thanks to|Using} {k2} you can {save|earn|win|get} up to {n}% {more|extra|back} {in minutes|today|"
    "instantly|right away}.",
    "{The best|The top|Our favourite} {k2} {offer|deal|provider|option} {right now|this month|in {y}} is "
    "{exclusive|limited|available} to {new|registered|verified} {customers|members|users}.",
    "{Always|Be sure to|Remember to|Do not forget to} {compare|check|read} the {terms|conditions|fine print|"
    "reviews} before you {sign up|apply|buy|register}.",
    "{Unlike|Compared to|Better than} {traditional|other|ordinary} {options|providers|offers}, {k2} {is|are} "
    "{fast|simple|safe|secure|convenient} and {easy|quick|hassle free}.",
    "{Click|Tap|Press} the button {below|above|here} to {claim|get|unlock|access} your {k2} {now|today|in "
    "seconds}.",
    "{Read|See|Check} our {full|detailed|honest|independent} {k2} {review|comparison|ranking|list} "
    "{below|further down|on the next page}.",
    "{Frequently asked questions|FAQ|Common questions} about {k2}: {is it legal|is it safe|how does it work|how "
    "much does it cost} in {c}?",
    "{The answer is|In short|Simply put}, {yes|it depends|absolutely}: {k2} is {legal|available|popular} in "
    "{c} {and|as well as} {most|many} other {cities|places|countries}.",
    "{Tip|Pro tip|Note|Important}: {the earlier|the sooner|the faster} you {act|start|sign up}, the {more|"
    "bigger} your {bonus|savings|profit|reward}.",
    "{Do not|Never} {miss|overlook|ignore} {this|our|the} {k2} {offer|deal|opportunity}, {it ends|it expires|"
    "spots run out} {soon|on {d}|this week}.",
    "{Last updated|Updated|Published} {on|:} {d} {by|-} {admin|editorial team|staff writer|guest author}.",
    "{Disclaimer|Note}: we may {receive|earn} a {commission|fee} {when you|if you} {sign up|buy|click} through "
    "our {links|partners}.",
    "{K2} {near me|in {c}|online}: {compare|find|see} {prices|rates|offers|reviews} {now|today}.",
]
_SPIN = re.compile(r"\{([^{}]*\|[^{}]*)\}")
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]


def _spin(template: str, rng: np.random.Generator, fill: dict[str, str]) -> str:
    """Resolve ``{k}``-style slots, then ``{a|b|c}`` alternatives (innermost first) of a spintax template."""
    text = template
    for key, value in fill.items():  # slots first: an alternative may hold one ("{now|in {y}}")
        text = text.replace("{" + key + "}", value)
    while True:
        text, n = _SPIN.subn(lambda m: m.group(1).split("|")[rng.integers(m.group(1).count("|") + 1)], text)
        if n == 0:
            return text


def generate_seo(n: int, rng: np.random.Generator, topics: list[str] | None = None,
                 sentences: tuple[int, int] = (7, 12)) -> list[str]:
    """``n`` machine-written SEO articles (a title and ``sentences`` spun sentences each) on ``topics`` (keys of
    ``SEO_TOPICS``; None: all). A content farm works one topic: its pages fill a narrow region of embedding
    space however many it posts, the head that curation is meant to cut back."""
    names = list(SEO_TOPICS) if topics is None else list(topics)
    unknown = sorted(set(names) - set(SEO_TOPICS))
    if unknown or not names:
        raise CurationInputError(f"SEO topics must be a non-empty subset of {sorted(SEO_TOPICS)}, got {names}")
    out = []
    for _ in range(n):
        words = SEO_TOPICS[names[rng.integers(len(names))]]
        k, k2 = (words[i] for i in rng.choice(len(words), size=2, replace=False))
        fill = {"k": k, "K": k.capitalize(), "k2": k2, "K2": k2.capitalize(),
                "c": _CITIES[rng.integers(len(_CITIES))], "y": str(int(rng.integers(2015, 2025))),
                "n": str(int(rng.integers(3, 95))),
                "d": f"{int(rng.integers(1, 29))} {_MONTHS[rng.integers(12)]} {int(rng.integers(2015, 2025))}"}
        count = int(rng.integers(sentences[0], sentences[1] + 1))
        body = [_spin(_SEO_SENTENCES[i], rng, fill)
                for i in rng.choice(len(_SEO_SENTENCES), size=min(count, len(_SEO_SENTENCES)), replace=False)]
        out.append(_spin(_SEO_TITLES[rng.integers(len(_SEO_TITLES))], rng, fill) + "\n" + " ".join(body))
    return out


def near_duplicate(text: str, rng: np.random.Generator, edit_rate: float = 0.03) -> str:
    """A mirrored copy: a few words dropped or repeated, plus site chrome around it."""
    words = text.split(" ")
    keep = []
    for w in words:
        u = rng.random()
        if u < edit_rate:
            continue
        keep.append(w)
        if u > 1 - edit_rate:
            keep.append(w)
    prefix = ["", "Posted by admin. ", "Originally published on our blog. ", "Reposted: ", "Share: "]
    suffix = ["", " Read more...", " (via RSS)", " Comments (0)", " Tags: news, info"]
    return prefix[rng.integers(len(prefix))] + " ".join(keep) + suffix[rng.integers(len(suffix))]


def generate_duplicates(sources: list[str], n: int, exact_fraction: float, rng: np.random.Generator,
                        zipf_a: float = 1.3) -> list[str]:
    """``n`` copies of ``sources`` with Zipf-like popularity: some exact, the rest near duplicates."""
    weights = 1.0 / np.arange(1, len(sources) + 1) ** zipf_a
    picks = rng.choice(len(sources), size=n, p=weights / weights.sum())
    return [sources[i] if rng.random() < exact_fraction else near_duplicate(sources[i], rng) for i in picks]


# ----------------------------------------------------------------------------------------------------------------
# the built-in pool, its held-out evaluation set and the CCNet reference slice

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


def _group_fraction(group: str, salt: int) -> float:
    """A stable pseudo-random number in [0, 1) per group (split decisions do not depend on list order)."""
    digest = hashlib.sha256(f"{salt}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2 ** 64


def _cap(corpus: TextCorpus, n: int | None, rng: np.random.Generator) -> TextCorpus:
    if n is None or len(corpus) <= n:
        return corpus
    return corpus.subset(np.sort(rng.choice(len(corpus), size=n, replace=False)))


def build_builtin(cfg, seed: int = 0) -> PoolSplit:
    """Build the offline pool from ``cfg`` (``configs/data/text_builtin.yaml``); deterministic in ``seed``.

    Splits are by group: ``cfg.reference_fraction`` of the Wikipedia articles train the CCNet n-gram model only,
    ``cfg.eval_fraction`` of the groups of every content domain are held out for evaluation, the rest (capped at
    ``cfg.max_docs[domain]``) enter the pool, and the generated junk is added to the pool alone.
    """
    rng = np.random.default_rng([seed, 7])
    lo, hi = cfg.min_chars, cfg.max_chars
    code, docs = stdlib_code_and_docs(lo, hi, cfg.min_doc_chars, cfg.get("stdlib_max_files"))
    sources = {"wiki": wikipedia_paragraphs(lo, hi), "news": news_paragraphs(lo, hi), "code": code,
               "docs": docs, "pkgdocs": package_descriptions(lo, hi)}
    pool, evals, reference = TextCorpus(), TextCorpus(), TextCorpus()
    for domain in CONTENT_DOMAINS:
        corpus = sources[domain]
        if len(corpus) == 0:
            raise CurationInputError(f"built-in pool: no '{domain}' documents found on this machine")
        in_pool, in_eval = [], []
        for i, g in enumerate(corpus.groups):
            u = _group_fraction(g, seed)
            if domain == "wiki" and u < cfg.reference_fraction:
                reference.add(corpus.texts[i], domain, g)
            elif u > 1 - cfg.eval_fraction:
                in_eval.append(i)
            else:
                in_pool.append(i)
        evals.extend(_cap(corpus.subset(in_eval), cfg.max_eval_docs, rng))
        pool.extend(_cap(corpus.subset(in_pool), cfg.max_docs.get(domain), rng))
    content = list(pool.texts)
    junk = cfg.junk
    for i, t in enumerate(generate_boilerplate(junk.boilerplate, rng)):
        pool.add(t, "boilerplate", f"boilerplate:{i}")
    for i, t in enumerate(generate_spam(junk.spam, rng, junk.get("spam_campaigns"))):
        pool.add(t, "spam", f"spam:{i}")
    for i, t in enumerate(generate_seo(junk.get("seo", 0), rng, junk.get("seo_topics"))):
        pool.add(t, "seo", f"seo:{i}")
    popular = [content[i] for i in rng.choice(len(content), size=min(junk.duplicate_sources, len(content)),
                                               replace=False)]
    for i, t in enumerate(generate_duplicates(popular, junk.duplicates, junk.exact_fraction, rng)):
        pool.add(t, "duplicate", f"duplicate:{i}")
    order = rng.permutation(len(pool))  # a crawl has no order
    pool = pool.subset(order)
    log.info("built-in text pool: %d documents %s; eval %d %s; CCNet reference %d Wikipedia paragraphs",
             len(pool), pool.domain_counts(), len(evals), evals.domain_counts(), len(reference))
    return PoolSplit(pool=pool, eval=evals, reference=reference)


# ----------------------------------------------------------------------------------------------------------------
# users' shards (C4, RedPajama, Common Crawl WET extracts): JSONL(.gz/.bz2/.zst-free) and Parquet, streamed

SHARD_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.bz2", ".parquet")


def list_shards(path: str | os.PathLike) -> list[Path]:
    """Shard files under ``path`` (a file, a folder searched recursively, or a glob), sorted."""
    p = Path(os.path.expanduser(str(path)))
    if any(ch in str(path) for ch in "*?["):
        files = sorted(Path(p.anchor or ".").glob(str(p.relative_to(p.anchor)) if p.is_absolute() else str(p)))
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(SHARD_SUFFIXES))
    elif p.is_file():
        files = [p]
    else:
        raise CurationInputError(f"text shards: {path} does not exist")
    files = [f for f in files if f.name.endswith(SHARD_SUFFIXES)]
    if not files:
        raise CurationInputError(f"text shards: no {'/'.join(SHARD_SUFFIXES)} files under {path}")
    return files


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if path.name.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_jsonl(path: Path, text_field: str, extra_fields: tuple[str, ...] = ()) -> Iterator[dict]:
    """Records of a JSONL shard, one line at a time; a bad line or a missing field is an error naming both."""
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise CurationInputError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(rec, dict) or text_field not in rec:
                raise CurationInputError(f"{path}:{lineno}: no '{text_field}' field "
                                         f"(set data.text_field; keys here: {sorted(rec)[:8] if isinstance(rec, dict) else type(rec).__name__})")
            yield {"text": rec[text_field], **{k: rec.get(k) for k in extra_fields}}


def iter_parquet(path: Path, text_field: str, extra_fields: tuple[str, ...] = (),
                 batch_rows: int = 4096) -> Iterator[dict]:
    """Records of a Parquet shard, read ``batch_rows`` rows at a time (never the whole file)."""
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a bad file
        raise CurationInputError(f"{path}: not a readable Parquet file ({err})") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise CurationInputError(f"{path}: no '{text_field}' column (set data.text_field; columns: {names})")
    cols = [text_field] + [k for k in extra_fields if k in names]
    for batch in pf.iter_batches(batch_size=batch_rows, columns=cols):
        data = batch.to_pydict()
        for i in range(batch.num_rows):
            yield {"text": data[text_field][i], **{k: (data[k][i] if k in data else None) for k in extra_fields}}


def iter_shards(path, text_field: str = "text", extra_fields: tuple[str, ...] = (),
                max_docs: int | None = None, min_chars: int = 1) -> Iterator[dict]:
    """Stream documents from every shard under ``path``; skips empty / non-string texts and ones shorter than
    ``min_chars``; stops after ``max_docs``."""
    n = 0
    for shard in list_shards(path):
        reader = iter_parquet if shard.name.endswith(".parquet") else iter_jsonl
        for rec in reader(shard, text_field, extra_fields):
            text = rec["text"]
            if not isinstance(text, str) or len(text.strip()) < min_chars:
                continue
            yield rec
            n += 1
            if max_docs is not None and n >= max_docs:
                return


GROUP_FIELDS = ("group", "source")  # data.group_by=auto: the first of these a record has names its document


def _record_group(rec: dict, group_by: str | None, text: str, n: int) -> str:
    """The source document of a record: its ``group_by`` field (``auto``: the first of GROUP_FIELDS it has), else
    the record itself (a hash of its text)."""
    if group_by == "auto":
        value = next((rec.get(f) for f in GROUP_FIELDS if rec.get(f) is not None), None)
    elif group_by:
        value = rec.get(group_by)
        if value is None:
            raise CurationInputError(f"text shards: document {n} has no '{group_by}' field (data.group_by names the "
                                     "record field holding its source document; null: each record alone)")
    else:
        value = None
    if value is None:
        return "doc:" + hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:12]
    return f"group:{value}"


def _group_fields(group_by: str | None) -> tuple[str, ...]:
    return GROUP_FIELDS if group_by == "auto" else ((group_by,) if group_by else ())


def read_corpus(path, cfg, max_docs: int | None = None) -> TextCorpus:
    """Every document under ``path`` (shards in the formats of :func:`list_shards`) as a corpus: text cut at
    ``cfg.max_chars``, domain from ``cfg.domain_field`` (else ``web``), group (source document) from
    ``cfg.group_by``."""
    group_by = cfg.get("group_by", None)
    extra = tuple(dict.fromkeys(((cfg.domain_field,) if cfg.domain_field else ()) + _group_fields(group_by)))
    corpus = TextCorpus()
    for n, rec in enumerate(iter_shards(path, cfg.text_field, extra, max_docs, cfg.min_chars)):
        text = rec["text"][: cfg.max_chars]
        domain = str(rec.get(cfg.domain_field) or "web") if cfg.domain_field else "web"
        corpus.add(text, domain, _record_group(rec, group_by, text, n))
    return corpus


def load_shards(cfg, seed: int = 0) -> PoolSplit:
    """A pool from users' shards (``configs/data/text_shards.yaml``) and its held-out evaluation documents.

    With ``cfg.eval_path``, the evaluation documents are read from there (same formats) and the pool is every
    document of ``cfg.path``. Otherwise whole source documents are held out: each record's group (the
    ``cfg.group_by`` field, e.g. the page or file a chunk was cut from; ``auto``: a ``group`` or ``source`` field
    when the records have one; null or absent: the record alone) goes to the evaluation side with probability
    ``cfg.eval_fraction``, decided by a hash of the group, so no document has pieces on both sides. The optional
    ``cfg.domain_field`` labels evaluation domains (else every document is ``web``); the CCNet reference is the
    built-in Wikipedia slice unless ``cfg.reference`` names shards of reference text."""
    corpus = read_corpus(cfg.path, cfg, cfg.max_docs)
    eval_path = cfg.get("eval_path")
    if eval_path:
        pool, evals = corpus, read_corpus(eval_path, cfg)
        shared = len(set(pool.texts) & set(evals.texts))
        if shared:
            log.warning("%d evaluation document(s) of %s also appear in the pool %s", shared, eval_path, cfg.path)
    else:
        held = [_group_fraction(g, seed) > 1 - cfg.eval_fraction for g in corpus.groups]
        pool = corpus.subset(i for i, h in enumerate(held) if not h)
        evals = corpus.subset(i for i, h in enumerate(held) if h)
        log.info("held out %d of %d documents (%d of %d source documents, data.group_by=%s)", len(evals),
                 len(corpus), len(set(evals.groups)), len(set(corpus.groups)), cfg.get("group_by", None))
    if len(pool) == 0 or len(evals) == 0:
        where = f"the evaluation file(s) {eval_path}" if eval_path else "the hold-out"
        raise CurationInputError(f"text shards under {cfg.path}: {len(pool)} pool and {len(evals)} held-out "
                                 f"documents from {where}; need at least one of each (more documents, another "
                                 "eval_fraction, or data.eval_path=FILE)")
    if cfg.reference:
        reference = TextCorpus()
        for rec in iter_shards(cfg.reference, cfg.text_field, (), None, cfg.min_chars):
            reference.add(rec["text"], "reference", "reference")
    else:
        wiki = wikipedia_paragraphs(200, 1500)
        reference = wiki
    return PoolSplit(pool=pool, eval=evals, reference=reference)
