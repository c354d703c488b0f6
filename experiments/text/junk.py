"""Generated web junk that dominates a crawl by count: boilerplate, keyword spam, machine-spun SEO articles, and
exact or near copies of popular documents. Every generator is deterministic in the ``rng`` it is given."""

from __future__ import annotations

import re

import numpy as np

from sslcurate import CurationInputError

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
