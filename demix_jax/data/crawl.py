"""The crawl tier: near-duplicate, boilerplate-dressed pages of wiki text.

`page(key, passage, copy)` turns one wiki passage into one "web page" the
way a crawl duplicates and dresses up what it scrapes: a contiguous run of
the passage's sentences (40-80% of them), about TYPO_PERCENT% of its words
misspelled by a swap of two inner letters, between a navigation line, a
cookie or newsletter banner, a tag-spam line of the passage's own words
and a footer, each drawn from the small fixed lists below. Seeded by a
hash of (key, copy), so pages are the same on every machine and Python.
demix_jax/data/offline.py builds the `crawl` corpus from these pages.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Iterable, Iterator

TYPO_PERCENT = 8  # share of words of 4+ letters that get two letters swapped
COPIES = 8  # pages per wiki train passage (held-out: one)

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


def _misspell(text: str, rng: random.Random) -> str:
  """Swaps two inner letters of about TYPO_PERCENT% of the words."""

  def swap(m: re.Match) -> str:
    w = m.group(0)
    if rng.randrange(100) >= TYPO_PERCENT:
      return w
    i = rng.randrange(1, len(w) - 2)
    return w[:i] + w[i + 1] + w[i] + w[i + 2 :]

  return WORD.sub(swap, text)


def page(key: str, passage: str, copy: int) -> str:
  """One near-duplicate "web page" of a wiki passage (deterministic).

  Args:
    key: the passage's wiki key (seeds the page with `copy`).
    passage: the wiki passage.
    copy: which of the passage's pages (0 .. COPIES - 1).

  Returns:
    Boilerplate lines around a misspelled run of the passage's sentences.
  """
  seed = int(
      hashlib.sha256(f"crawl/{key}/{copy}".encode()).hexdigest()[:16], 16
  )
  rng = random.Random(seed)
  sentences = [x for x in _SENTENCE.split(passage) if x.strip()]
  n = len(sentences)
  size = max(1, (n * rng.randint(40, 80)) // 100)
  start = rng.randrange(0, n - size + 1)
  body = _misspell(" ".join(sentences[start : start + size]), rng)
  words = WORD.findall(passage)
  spam = ", ".join(w.lower() for w in rng.sample(words, min(len(words), 6)))
  lines = [
      rng.choice(HEADERS),
      rng.choice(BANNERS),
      body,
      f"Tags: {spam}" if spam else "Tags: none",
      rng.choice(FOOTERS),
  ]
  return "\n".join(lines)


def documents(
    passages: Iterable[tuple[str, str]], train: bool
) -> Iterator[tuple[str, str]]:
  """Yields (key/copy, page) of wiki (key, passage) pairs, copy-major.

  Args:
    passages: the wiki split's (key, passage) pairs.
    train: COPIES pages per passage (train) or one (held-out).

  Yields:
    Pages in copy-major order: the first pages cover every passage once.
  """
  passages = list(passages)
  for copy in range(COPIES if train else 1):
    for key, passage in passages:
      yield f"{key}/{copy}", page(key, passage, copy)
