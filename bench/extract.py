"""HTML main-content extraction: ``python -m bench.extract [--pages 300] [--seed 0]``.

resiliparse against trafilatura (the two engines of ``ops.extract_text``) on the same
generated pages, one process, one run: pages per second, and quality against the known
article of each page: the fraction of the article's sentences found in the text
(recall) and the fraction of the boilerplate sentences (navigation, sidebar, footer,
cookie banner) that leaked into it. Half the pages mark their blocks with HTML5 tags
(``nav``, ``article``, ``footer``), half are ``div`` soup."""

from __future__ import annotations

import argparse
import random
import sys
import time

WORDS = (
    "data model river engine table stream query partition signal archive museum garden "
    "harbour mountain library market forest station theatre journal"
).split()
VERBS = "describes measures builds explains records shows improves follows joins".split()


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    words.insert(2, rng.choice(VERBS))
    return " ".join(words).capitalize() + f" {rng.randrange(10**6)}."


def make_page(rng: random.Random, index: int) -> tuple[str, list[str], list[str]]:
    """(html, article sentences, boilerplate sentences) of one synthetic news page; odd
    pages use ``div`` for every block, as many real sites do."""
    article = [_sentence(rng, rng.randint(12, 24)) for _ in range(rng.randint(6, 20))]
    paragraphs, at = [], 0
    while at < len(article):
        size = rng.randint(1, 3)
        paragraphs.append(" ".join(article[at : at + size]))
        at += size
    nav = [f"Section {w} {index}" for w in rng.sample(WORDS, 6)]
    boiler = [
        f"Subscribe to our newsletter for weekly {rng.choice(WORDS)} updates {index}.",
        f"Copyright {2000 + index % 25} Example Media Group {index}. All rights reserved.",
        f"We use cookies to improve your experience on site {index}. Accept all cookies.",
        f"Related story about the {rng.choice(WORDS)} {rng.choice(WORDS)} {index} today.",
        f"Popular now: the {rng.choice(WORDS)} {rng.choice(WORDS)} guide {index} for you.",
    ]
    body = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    html = f"""<!DOCTYPE html><html><head><title>Page {index}</title>
<script>var tracking = {{id: {index}}};</script><style>body {{color: #333}}</style></head>
<body><header><div class="logo">Example Media</div><nav><ul>
{"".join(f'<li><a href="/s/{i}">{n}</a></li>' for i, n in enumerate(nav))}</ul></nav></header>
<div class="cookie-banner">{boiler[2]}</div>
<main><article><h1>{_sentence(rng, 6)}</h1><p class="byline">By Staff Writer</p>
{body}</article>
<aside class="sidebar"><h3>Related</h3><ul><li><a href="/r/1">{boiler[3]}</a></li>
<li><a href="/r/2">{boiler[4]}</a></li></ul></aside></main>
<footer><p>{boiler[0]}</p><p>{boiler[1]}</p><a href="/privacy">Privacy</a></footer>
</body></html>"""
    if index % 2:  # half the pages are "div soup": no semantic tags to go by
        for tag in ("header", "nav", "main", "article", "aside", "footer"):
            html = html.replace(f"<{tag}", f'<div class="{tag}-{index % 7}"')
            html = html.replace(f"</{tag}>", "</div>")
    return html, article, boiler + nav


def _score(text: str | None, article: list[str], boiler: list[str]) -> tuple[float, float]:
    flat = " ".join((text or "").split())
    recall = sum(s in flat for s in article) / len(article)
    leaked = sum(s in flat for s in boiler) / len(boiler)
    return recall, leaked


def measure(engine: str, pages: list[tuple[str, list[str], list[str]]]) -> dict[str, float]:
    from millpond.ops.extract import extractor

    extract = extractor(engine)
    extract(pages[0][0])  # warm: imports, lazy set-up
    start = time.perf_counter()
    texts = [extract(html) for html, _a, _b in pages]
    seconds = time.perf_counter() - start
    scores = [_score(t, a, b) for t, (_h, a, b) in zip(texts, pages)]
    return {
        "pages_per_s": len(pages) / seconds,
        "recall": sum(r for r, _ in scores) / len(scores),
        "leaked": sum(leak for _, leak in scores) / len(scores),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    pages = [make_page(rng, i) for i in range(args.pages)]
    print(f"{args.pages} synthetic pages, one process")
    print(f"{'engine':<12} {'pages/s':>9} {'article recall':>15} {'boilerplate leaked':>19}")
    for engine in ("resiliparse", "trafilatura"):
        m = measure(engine, pages)
        print(f"{engine:<12} {m['pages_per_s']:>9.0f} {m['recall']:>15.3f} {m['leaked']:>19.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
