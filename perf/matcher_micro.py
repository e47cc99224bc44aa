"""Micro-benchmark of the matcher twins: build time for 100,000 terms, match speed in MB/s.

Run from the repo root: python -m perf.matcher_micro (build first: python setup.py build_ext --inplace).
Terms are random lower-case words of 3-10 letters (the worst case for the trie: almost no
shared prefixes beyond three letters); texts are mixed-case English-like words, and CJK.
MB/s counts characters (1 MB = 10**6 characters).
"""

from __future__ import annotations

import random
import string
import time

from fastgw import matcher as py_matcher


def build(mod, terms: list[str]) -> tuple[object, float]:
    best, m = float("inf"), None
    for _ in range(3):
        t0 = time.perf_counter()
        m = mod.Matcher(terms)
        best = min(best, time.perf_counter() - t0)
    return m, best


def speed(m, text: str) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        m.find(text)
        best = min(best, time.perf_counter() - t0)
    return len(text) / best / 1e6


def main() -> None:
    from fastgw._c import matcher as c_matcher

    rng = random.Random(1)
    terms = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10))) for _ in range(100_000)]
    cjk_terms = ["".join(chr(rng.randint(0x4E00, 0x4FFF)) for _ in range(rng.randint(2, 4))) for _ in range(100_000)]
    words = [rng.choice(terms).capitalize() if rng.random() < 0.01 else "".join(rng.choices("etaoinshrdlu", k=5))
             for _ in range(200_000)]
    latin = " ".join(words)[:1_000_000]
    cjk = "".join(chr(rng.randint(0x4E00, 0x4FFF)) for _ in range(300_000))
    print(f"{'':<30}{'py':>10}{'c':>10}")
    rows = {}
    for name, mod in (("py", py_matcher), ("c", c_matcher)):
        m, latin_build = build(mod, terms)
        rows.setdefault("build 100k latin terms (s)", {})[name] = latin_build
        rows.setdefault("latin text (MB/s)", {})[name] = speed(m, latin)
        m, cjk_build = build(mod, cjk_terms)
        rows.setdefault("build 100k CJK terms (s)", {})[name] = cjk_build
        rows.setdefault("CJK text (MB/s)", {})[name] = speed(m, cjk)
        rows.setdefault("latin text, 10 terms (MB/s)", {})[name] = speed(mod.Matcher(terms[:10]), latin)
    for row, values in rows.items():
        print(f"{row:<30}{values['py']:>10.3f}{values['c']:>10.3f}")


if __name__ == "__main__":
    main()
