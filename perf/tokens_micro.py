"""Micro-benchmark of the token counter twins, and how far estimate_tokens is from exact.

Run from the repo root: python -m perf.tokens_micro (build first: python setup.py build_ext --inplace).
Prints: the one-off cost of loading each encoding; µs per count of about 1 KB of English,
code and CJK text, warm (the per-piece cache holds the text's pieces, the steady state of a
worker) and cold (a fresh counter each time, BPE for every piece); and estimate_tokens
against o200k_base's exact count on the same kinds of text.
"""

from __future__ import annotations

import subprocess
import sys
import timeit
from pathlib import Path

from fastgw import tokens as py_tokens
from fastgw.tokencount import estimate_tokens

ROOT = Path(__file__).resolve().parent.parent

ENGLISH = (
    "The gateway counts tokens before it forwards a request, so that a tenant who has used up "
    "its budget is turned away early instead of after the upstream has done the work. Counting "
    "has to be exact for the models we bill by, and cheap enough that nobody notices it: a "
    "worker handles thousands of requests a second, and most prompts are a few hundred words "
    "long. Streams that end without a usage report are metered the same way, one chunk at a "
    "time, which is why the counter caches the pieces it has seen; most words repeat. When a "
    "model's tokenizer is not public, we fall back to an estimate and say so, because an "
    "honest guess is more useful than a number that only looks precise. It's 9:41 on a "
    "Tuesday, the queue holds 1,024 requests, and we'd rather not drop any of them today. "
    "Isn't that what a gateway is for? Every estimate we publish comes with the error we "
    "measured for it, in English, in code and in CJK text, so operators know what to expect.\n"
)
CJK = (
    "网关在转发请求之前先计算令牌数，这样预算用完的租户会被提前拒绝，而不是等上游完成工作之后。"
    "对于按令牌计费的模型，计数必须精确，而且要足够便宜，让人察觉不到。"
    "ゲートウェイはリクエストを転送する前にトークンを数えます。予算を使い切ったテナントは早めに断られます。"
    "ほとんどの単語は繰り返し現れるので、カウンターは一度見た断片を覚えておきます。"
    "게이트웨이는 요청을 전달하기 전에 토큰을 셉니다. 대부분의 단어는 반복되므로 카운터는 본 조각을 기억합니다."
)
CODE = (ROOT / "fastgw" / "sse.py").read_text()[4000:5000]
TEXTS = {"english": ENGLISH, "code": CODE, "cjk": CJK}


def load_seconds(module: str, encoding: str) -> float:
    """First-count cost in a fresh process: reading the rank file and building the tables."""
    code = (f"import time; from {module} import TokenCounter; t = time.perf_counter(); "
            f"TokenCounter({encoding!r}).count('x'); print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True, cwd=ROOT).stdout)


def per_count_us(mod, encoding: str, text: str, warm: bool) -> float:
    counter = mod.TokenCounter(encoding)
    if warm:
        counter.count(text)
        fn = lambda: counter.count(text)  # noqa: E731
    else:
        fn = lambda: mod.TokenCounter(encoding).count(text)  # noqa: E731
    number = 200 if mod is py_tokens else 2000
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    from fastgw._c import tokens as c_tokens

    print("load (first count in a fresh process):")
    for encoding in py_tokens.ENCODINGS:
        py = load_seconds("fastgw.tokens", encoding)
        c = load_seconds("fastgw._c.tokens", encoding)
        print(f"  {encoding:<12} py {py * 1000:6.0f} ms   c {c * 1000:6.0f} ms")
    print(f"\n{'text':<9}{'bytes':>6}{'chars':>6}  {'encoding':<12}{'tokens':>7}"
          f"{'py warm':>10}{'py cold':>10}{'c warm':>9}{'c cold':>9}   (µs per count)")
    for name, text in TEXTS.items():
        for encoding in py_tokens.ENCODINGS:
            row = [per_count_us(mod, encoding, text, warm) for mod in (py_tokens, c_tokens) for warm in (True, False)]
            n = c_tokens.TokenCounter(encoding).count(text)
            print(f"{name:<9}{len(text.encode()):>6}{len(text):>6}  {encoding:<12}{n:>7}"
                  f"{row[0]:>10.1f}{row[1]:>10.1f}{row[2]:>9.1f}{row[3]:>9.1f}")
    print("\nestimate_tokens vs o200k_base:")
    samples = dict(TEXTS, readme=(ROOT / "README.md").read_text(),
                   python=(ROOT / "fastgw" / "tokens.py").read_text(),
                   chinese=CJK[:CJK.index("ゲ")], japanese=CJK[CJK.index("ゲ"):CJK.index("게")],
                   korean=CJK[CJK.index("게"):])
    for name, text in samples.items():
        exact = c_tokens.count_tokens("o200k_base", text)
        estimate = estimate_tokens(text)
        print(f"  {name:<9} exact {exact:>6}  estimate {estimate:>6}  {100 * (estimate - exact) / exact:+5.0f} %")


if __name__ == "__main__":
    main()
