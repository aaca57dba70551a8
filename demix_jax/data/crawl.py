"""The crawl tier: near-duplicate, boilerplate-dressed pages of wiki text.

`page(key, passage, copy, style)` turns one wiki passage into one "web
page" the way a crawl duplicates and dresses up what it scrapes: a
contiguous run of the passage's sentences (40-80% of them), about
TYPO_PERCENT[style]% of its words misspelled by a swap of two inner
letters, between a navigation line, a cookie or newsletter banner, a
tag-spam line of the passage's own words and a footer, each drawn from the
small fixed lists below. Seeded by a hash of (key, copy), so pages are the
same on every machine and Python. demix_jax/data/offline.py builds the
`crawl` corpus (style "typo"), `crawl_spam` (style "spam"),
`crawl_boiler` and `crawl_tags` from these pages (CORPUS_STYLES).

Styles:
  typo: the sentences keep their word order; 8% of the words misspelled
        (the first demo design's crawl tier).
  spam: keyword stuffing, "spun" text: each sentence's words in a shuffled
        order (the passage's words without its syntax), 25% misspelled
        (the demo's crawl tier from its second design on), as real
        low-value crawl is worse than a re-typed copy of curated text.
        Measured in the demo (docs/recipe_study.md, "Demo designs"), both
        styles still help the general benchmarks' bits per byte: at this
        scale a model gains from English words even without their syntax.
  boiler: a boilerplate page: one sentence of the passage (8% misspelled)
        among twice the navigation, banner and footer lines of the others.
  tags: a keyword-stuffing page: four "Tags:" lines of the passage's
        words, lowercased and drawn at random, between a header and a
        footer; no sentence at all. Boiler and tags are the junk tiers of
        the fourth demo design (configs/demo.py, DESIGNS), two pages per
        passage each.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Iterable, Iterator

# Per style: the share of words of 4+ letters that get two letters swapped.
TYPO_PERCENT = {"typo": 8, "spam": 25, "boiler": 8, "tags": 0}
STYLES = tuple(TYPO_PERCENT)
# The offline corpora built from these pages (data/offline.py), by style.
CORPUS_STYLES = {
    "crawl": "typo",
    "crawl_spam": "spam",
    "crawl_boiler": "boiler",
    "crawl_tags": "tags",
}
# Pages per wiki train passage, by style (held-out: one). The junk styles
# have fewer: a real crawl's boilerplate and tag pages are many, but short.
COPIES = {"typo": 8, "spam": 8, "boiler": 2, "tags": 2}
TAG_LINES, TAGS_PER_LINE = 4, 8  # the tags style's keyword lines

HEADERS = (
    "Home | News | Topics | About Us | Contact | Log in | Sign up",
    "Skip to main content. Menu: Home > Articles > Reference > Browse all",
    "HOME  ARTICLES  CATEGORIES  POPULAR  NEW  RANDOM  SEARCH",
    "You are here: Home / Encyclopedia / Articles / Read more",
)
BANNERS = (
    "We use cookies to improve your experience. By continuing to browse "
    "you agree to our use of cookies. Accept | Learn more",
    "This site uses cookies and similar technologies. Click OK to accept.",
    "Subscribe to our newsletter for the latest updates! Enter your email.",
    "Advertisement - Continue reading below",
)
FOOTERS = (
    "Copyright 2024 All rights reserved. Privacy Policy | Terms of Use | "
    "Sitemap | Contact",
    "Share this: Facebook Twitter Email Print. Related posts: Read more.",
    "Was this article helpful? Yes No. Comments (0). Leave a reply.",
    "Back to top. About | Careers | Advertise | Help | Privacy | Terms",
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
WORD = re.compile(r"[A-Za-z]{4,}")


def _misspell(text: str, rng: random.Random, percent: int) -> str:
  """Swaps two inner letters of about `percent`% of the words."""

  def swap(m: re.Match) -> str:
    w = m.group(0)
    if rng.randrange(100) >= percent:
      return w
    i = rng.randrange(1, len(w) - 2)
    return w[:i] + w[i + 1] + w[i] + w[i + 2 :]

  return WORD.sub(swap, text)


def _stuff(sentence: str, rng: random.Random) -> str:
  """The sentence's whitespace-separated words in a shuffled order."""
  words = sentence.split()
  rng.shuffle(words)
  return " ".join(words)


def page(key: str, passage: str, copy: int, style: str = "typo") -> str:
  """One near-duplicate "web page" of a wiki passage (deterministic).

  Args:
    key: the passage's wiki key (seeds the page with `copy`).
    passage: the wiki passage.
    copy: which of the passage's pages (0 .. COPIES[style] - 1).
    style: one of STYLES (the module doc).

  Returns:
    Boilerplate lines around a misspelled run of the passage's sentences.
  """
  if style not in TYPO_PERCENT:
    raise ValueError(f"unknown crawl style {style!r}; use one of {STYLES}")
  seed = int(
      hashlib.sha256(f"crawl/{key}/{copy}".encode()).hexdigest()[:16], 16
  )
  rng = random.Random(seed)
  sentences = [x for x in _SENTENCE.split(passage) if x.strip()]
  n = len(sentences)
  size = max(1, (n * rng.randint(40, 80)) // 100)
  start = rng.randrange(0, n - size + 1)
  run = sentences[start : start + size]
  if style == "spam":
    run = [_stuff(x, rng) for x in run]
  elif style == "boiler":
    run = run[:1]
  body = _misspell(" ".join(run), rng, TYPO_PERCENT[style])
  words = WORD.findall(passage)
  spam = ", ".join(w.lower() for w in rng.sample(words, min(len(words), 6)))
  tags = f"Tags: {spam}" if spam else "Tags: none"
  header, banner = rng.choice(HEADERS), rng.choice(BANNERS)
  if style == "tags":
    lines = [header]
    for _ in range(TAG_LINES if words else 0):
      drawn = rng.choices(words, k=TAGS_PER_LINE)
      lines.append("Tags: " + ", ".join(w.lower() for w in drawn))
    return "\n".join([*lines, rng.choice(FOOTERS)])
  if style == "boiler":
    head = [header, rng.choice(HEADERS), banner]
    tail = [rng.choice(BANNERS), tags, rng.choice(FOOTERS)]
    return "\n".join([*head, body, *tail, rng.choice(FOOTERS)])
  return "\n".join([header, banner, body, tags, rng.choice(FOOTERS)])


def documents(
    passages: Iterable[tuple[str, str]], train: bool, style: str = "typo"
) -> Iterator[tuple[str, str]]:
  """Yields (key/copy, page) of wiki (key, passage) pairs, copy-major.

  Args:
    passages: the wiki split's (key, passage) pairs.
    train: COPIES[style] pages per passage (train) or one (held-out).
    style: one of STYLES.

  Yields:
    Pages in copy-major order: the first pages cover every passage once.
  """
  passages = list(passages)
  if style not in COPIES:
    raise ValueError(f"unknown crawl style {style!r}; use one of {STYLES}")
  for copy in range(COPIES[style] if train else 1):
    for key, passage in passages:
      yield f"{key}/{copy}", page(key, passage, copy, style)
