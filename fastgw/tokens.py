"""Token counting for rate-limit budgets: exact for OpenAI's encodings, estimated for the rest.

The gateway reserves rate-limit budget before it forwards a call and meters streams that
report no usage, so it needs a prompt's token count without calling anyone. For OpenAI's
``cl100k_base`` (GPT-4, GPT-3.5, embeddings) and ``o200k_base`` (GPT-4o and later) the
count is exact: the rank tables ship in ``fastgw/data`` (see its LICENSE note) and are
loaded once per process, on the first count of that encoding. Other models get
``estimate_tokens``.

``TokenCounter`` and ``count_tokens`` are the pure-Python twin; ``csrc/tokens.pyx`` (built as
``fastgw._c.tokens``) is the compiled one, and ``fastgw._speedups`` picks. Both reproduce
tiktoken's encoder:

1. Pre-tokenize with the encoding's regex (copied from tiktoken's ``openai_public.py``,
   see ``CL100K_PATTERN`` / ``O200K_PATTERN``). Python's ``re`` has no ``\\p{..}``, so this
   twin maps every character to a one-letter class code (``char_class``, from
   ``unicodedata``) and runs an equivalent pattern over the codes with ``re``; the piece
   boundaries are the same, and the pieces are cut from the text. The compiled twin
   walks the same class codes with a hand-written scanner. Tests prove both equal the
   original regexes run by the third-party ``regex`` module.
2. Encode each piece as UTF-8 and count its byte-level BPE tokens: a piece that is a
   token is one; otherwise repeatedly merge the adjacent pair of parts whose
   concatenation has the lowest rank (leftmost on ties) until no pair is a token.
   A heap keeps that O(n log n), so one huge piece (a megabyte of "aaaa...") cannot stall
   a worker the way tiktoken's quadratic loop would.

Counts of short pieces are cached in a bounded dict per counter (most words repeat).

Deliberate differences from ``tiktoken.Encoding.encode``:

- Special tokens such as ``<|endoftext|>`` are counted as ordinary text (tiktoken would
  raise by default): we count what users send, and a user cannot send a control token.
- Lone surrogates are replaced by U+FFFD first, as tiktoken's Python binding does.
- Character classes come from the running Python's ``unicodedata`` (Unicode 14 on 3.11),
  OpenAI's tokenizer from a newer Unicode: characters assigned since (new scripts,
  rare CJK extensions) and the one letter whose category changed (U+0295) may split
  differently. Emoji are unaffected (symbols either way).
"""

from __future__ import annotations

import binascii
import gzip
import hashlib
import heapq
import json
import math
import re
import unicodedata
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "CL100K_PATTERN",
    "ENCODINGS",
    "O200K_PATTERN",
    "TokenCounter",
    "char_class",
    "count_chat",
    "count_text",
    "count_tokens",
    "encoding_for_model",
    "estimate_tokens",
]

ENCODINGS = ("cl100k_base", "o200k_base")

# The encodings' pre-tokenizer regexes exactly as tiktoken has them (for the tests and readers;
# the counters run the equivalents below).
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])

_DATA = Path(__file__).parent / "data"
# SHA-256 of the decompressed rank files, as pinned by tiktoken for OpenAI's originals.
_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}

CACHE_MAX = 1 << 15  # pieces cached per counter; the cache is emptied when full
CACHE_PIECE_CHARS = 32  # longer pieces are not cached: they rarely repeat and would pin memory
MAX_TOKEN_BYTES = 128  # the longest token of either encoding: longer byte strings need no lookup

# -- character classes ---------------------------------------------------------------------------
# What the two regexes distinguish. Both twins use these numbers; the compiled one also
# keeps, in the high nibble, which contraction letter (s t d m l v r e, any case) or "/" a char is.
OTHER, UPPER, LOWER, BOTH, MARK, NUM, SPACE, WS, NL, APOS = range(10)
_CATEGORY = {"Lu": UPPER, "Lt": UPPER, "Ll": LOWER, "Lm": BOTH, "Lo": BOTH,
             "Mn": MARK, "Mc": MARK, "Me": MARK, "Nd": NUM, "Nl": NUM, "No": NUM}
# \s in OpenAI's (Rust) regexes is the Unicode White_Space property, not str.isspace()
# (which also takes U+001C..U+001F).
_WHITE_SPACE = frozenset(
    [0x09, 0x0B, 0x0C, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)


def char_class(cp: int) -> int:
    """The pre-tokenizer class of code point ``cp`` (``OTHER`` ... ``APOS``)."""
    if cp == 0x20:
        return SPACE
    if cp == 0x0A or cp == 0x0D:
        return NL
    if cp == 0x27:
        return APOS
    if cp in _WHITE_SPACE:
        return WS
    return _CATEGORY.get(unicodedata.category(chr(cp)), OTHER)


# The pure twin's one-letter class codes. Contraction letters keep their own letter (their
# case is their class), so the patterns can spell "'s", "'ll"... U+017F (long s) is an "s"
# to the regexes' case-insensitive match. "/" stays itself for o200k's [\r\n/]*.
_CODE = {OTHER: ".", UPPER: "A", LOWER: "a", BOTH: "o", MARK: "~", NUM: "0", SPACE: " ", WS: "\t",
         NL: "\n", APOS: "'"}
_KEEP = "sdmtlvreSDMTLVRE/"
_CODES_MAX = 1 << 16  # code points remembered; rarer ones are classified on every use


class _Codes(dict):
    """``str.translate`` table: code point -> class code, filled as characters are met."""

    def __missing__(self, cp: int) -> str:
        ch = chr(cp)
        if ch in _KEEP:
            code = ch
        elif cp == 0x17F:
            code = "s"
        else:
            code = _CODE[char_class(cp)]
        if len(self) < _CODES_MAX:
            self[cp] = code
        return code


_CODES = _Codes()
for _cp in range(128):
    _CODES[_cp]  # noqa: B018 - prefill ASCII
del _cp

# The patterns over class codes: \p{L} = [A-Za-z] (letters, all codes), \p{N} = 0,
# \s = [ \t\n], [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] = [A-Zo~], [\p{Ll}\p{Lm}\p{Lo}\p{M}] = [a-z~].
# cl100k's possessive quantifiers become greedy ones: each is followed by nothing that
# could match what backtracking would give back, so the matches are the same.
_CL100K_CODES = re.compile(
    r"'(?:[sdmtSDMT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\nA-Za-z0]?[A-Za-z]+|0{1,3}| ?[^ \t\nA-Za-z0]+\n*"
    r"|[ \t\n]+\Z|[ \t\n]*\n|[ \t\n]+(?![^ \t\n])|[ \t\n]"
)
_O200K_SUFFIX = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
_O200K_CODES = re.compile(
    rf"[^\nA-Za-z0]?[A-Zo~]*[a-z~]+{_O200K_SUFFIX}|[^\nA-Za-z0]?[A-Zo~]+[a-z~]*{_O200K_SUFFIX}"
    r"|0{1,3}| ?[^ \t\nA-Za-z0]+[\n/]*|[ \t\n]*\n+|[ \t\n]+(?![^ \t\n])|[ \t\n]+"
)
_SURROGATE = re.compile("[\ud800-\udfff]")


def fix_surrogates(text: str) -> str:
    """Pair up surrogates and replace lone ones with U+FFFD, as tiktoken does before encoding."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# -- rank tables ---------------------------------------------------------------------------------


def token_bytes(encoding: str) -> list[bytes]:
    """The encoding's tokens in rank order, read from the shipped file (about 0.1 s for o200k)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
    raw = gzip.decompress((_DATA / f"{encoding}.tiktoken.gz").read_bytes())
    if hashlib.sha256(raw).hexdigest() != _SHA256[encoding]:
        raise ValueError(f"{encoding} rank file is corrupt (SHA-256 mismatch)")
    a2b = binascii.a2b_base64
    # Ranks are 0..n-1 in file order (the hash pins that), so a token's rank is its index.
    return [a2b(line[:line.index(b" ")]) for line in raw.splitlines()]


@cache
def _rank_dict(encoding: str) -> dict[bytes, int]:
    return {token: rank for rank, token in enumerate(token_bytes(encoding))}


def _bpe_count(piece: bytes, ranks: dict[bytes, int]) -> int:
    """Tokens in ``piece`` after tiktoken's merges (lowest rank first, leftmost on ties)."""
    n = len(piece)
    if n < 2 or piece in ranks:
        return 1 if n else 0
    # Parts are byte ranges: part i runs from i to nxt[i]; nxt[i] == -1 once merged away.
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    heap = []
    for i in range(n - 1):
        rank = ranks.get(piece[i:i + 2])
        if rank is not None:
            heap.append((rank, i, i + 2))
    heapq.heapify(heap)
    count = n
    while heap:
        _, i, end = heapq.heappop(heap)
        j = nxt[i]
        if j == -1 or j == n or nxt[j] != end:
            continue  # stale: part i or its neighbour changed since this pair was pushed
        nxt[i] = end
        nxt[j] = -1
        if end < n:
            prv[end] = i
            after = nxt[end]
            if after - i <= MAX_TOKEN_BYTES and (rank := ranks.get(piece[i:after])) is not None:
                heapq.heappush(heap, (rank, i, after))
        p = prv[i]
        if p >= 0 and end - p <= MAX_TOKEN_BYTES and (rank := ranks.get(piece[p:end])) is not None:
            heapq.heappush(heap, (rank, p, end))
        count -= 1
    return count


# -- the counter ---------------------------------------------------------------------------------


class TokenCounter:
    """Counts tokens of one encoding; keeps a per-piece cache, so reuse one per encoding."""

    __slots__ = ("encoding", "_pattern", "_ranks", "_cache")

    def __init__(self, encoding: str) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
        self.encoding = encoding
        self._pattern = _CL100K_CODES if encoding == "cl100k_base" else _O200K_CODES
        self._ranks = _rank_dict(encoding)
        self._cache: dict[str, int] = {}

    def pieces(self, text: str) -> list[str]:
        """The pre-tokenizer's pieces of ``text`` (for tests and debugging)."""
        if not text.isascii() and _SURROGATE.search(text):
            text = fix_surrogates(text)
        out = []
        start = 0
        for codes in self._pattern.findall(text.translate(_CODES)):
            end = start + len(codes)
            out.append(text[start:end])
            start = end
        return out

    def count(self, text: str) -> int:
        """Number of tokens OpenAI's tokenizer makes of ``text`` (special tokens as plain text)."""
        cache = self._cache
        total = 0
        for piece in self.pieces(text):
            n = cache.get(piece)
            if n is None:
                n = _bpe_count(piece.encode(), self._ranks)
                if len(piece) <= CACHE_PIECE_CHARS:
                    if len(cache) >= CACHE_MAX:
                        cache.clear()
                    cache[piece] = n
            total += n
        return total


_COUNTERS: dict[str, TokenCounter] = {}


def count_tokens(encoding: str, text: str) -> int:
    """Tokens of ``text`` in ``encoding``, with this process's shared counter for it."""
    counter = _COUNTERS.get(encoding)
    if counter is None:
        counter = _COUNTERS[encoding] = TokenCounter(encoding)
    return counter.count(text)


# -- models --------------------------------------------------------------------------------------

# Checked in order: the first matching prefix wins (so "gpt-4o" before "gpt-4").
_MODEL_PREFIXES = (
    ("gpt-4o", "o200k_base"), ("chatgpt-4o", "o200k_base"), ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"), ("gpt-5", "o200k_base"),
    ("o1", "o200k_base"), ("o3", "o200k_base"), ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-3.5", "cl100k_base"), ("gpt-35", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"), ("text-embedding-ada-002", "cl100k_base"),
)


def encoding_for_model(model: str) -> str | None:
    """The OpenAI encoding of ``model`` (``ft:`` fine-tunes included), or None if not an OpenAI model."""
    if model.startswith("ft:"):
        model = model[3:]
    for prefix, encoding in _MODEL_PREFIXES:
        if model.startswith(prefix):
            return encoding
    return None


# Scripts whose characters are about one token each in modern tokenizers: CJK symbols and
# punctuation, kana, CJK ideographs (BMP and supplementary planes), Hangul, fullwidth forms.
_CJK = re.compile(
    "[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
    "\U00020000-\U0003ffff]"
)


def estimate_tokens(text: str) -> int:
    """Token estimate for models whose tokenizer we do not have (Claude, Gemini, Llama...).

    One token per CJK character (kana, Hangul, ideographs, CJK punctuation) plus one per
    4 UTF-8 bytes of everything else, rounded up. Measured against o200k_base's exact count
    (``python -m perf.tokens_micro``): English prose +13 %, Markdown docs -8 %, Python code
    -14 % to +7 %, Chinese +30 %, Japanese +18 %, Korean +43 % (o200k packs CJK better than
    most tokenizers do, so the estimate errs high there, the safe side for a budget).
    Other models' tokenizers differ from o200k by a similar margin: treat it as +-30 %.
    """
    if text.isascii():
        return -(-len(text) // 4)
    cjk = _CJK.findall(text)
    cjk_bytes = 3 * len(cjk) + sum(1 for ch in cjk if ch >= "\U00010000")
    return len(cjk) + math.ceil((len(text.encode("utf-8", "surrogatepass")) - cjk_bytes) / 4)


def count_text(model: str, text: str) -> tuple[int, bool]:
    """(tokens, exact): exact for OpenAI models, else ``estimate_tokens``."""
    encoding = encoding_for_model(model)
    if encoding is None:
        return estimate_tokens(text), False
    from fastgw._speedups import count_tokens as count  # here: _speedups imports this module

    return count(encoding, text), True


# Fixed costs OpenAI documents for images at detail "low" (any size) and for a 1024x1024
# image at "high"/"auto" (85 + 4 tiles of 170) on gpt-4o: we do not know the image size here.
IMAGE_TOKENS_LOW = 85
IMAGE_TOKENS_HIGH = 765
TOKENS_PER_MESSAGE = 3  # <|start|>{role}<|message|> ... <|end|> around each message
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3  # <|start|>assistant<|message|> the reply starts with


def count_chat(model: str, messages: list[dict[str, Any]],
               tools: list[dict[str, Any]] | None = None) -> tuple[int, bool]:
    """(prompt tokens, exact) of a chat request's decoded JSON, the way OpenAI bills it.

    OpenAI's published formula: 3 tokens per message plus the tokens of its role, content
    and name (a name costs 1 more), plus 3 that prime the reply. Content may be a string or
    a list of parts: text parts are counted; an image part costs ``IMAGE_TOKENS_LOW`` at
    detail "low" else ``IMAGE_TOKENS_HIGH`` (the real cost depends on its size); other parts
    (audio, files) get ``estimate_tokens`` of their JSON. An assistant's tool calls count
    their function name and arguments. How OpenAI lays out tool calls and tool definitions
    in the prompt is not public, so those, images and other parts make the result a close
    estimate (exact False); tool definitions are counted as the JSON of each function.
    Models without a known encoding get ``estimate_tokens`` throughout (exact False).
    """
    encoding = encoding_for_model(model)
    if encoding is None:
        count, exact = estimate_tokens, False
    else:
        from fastgw._speedups import count_tokens

        def count(text: str) -> int:
            return count_tokens(encoding, text)

        exact = True
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE + count(str(message.get("role", "")))
        content = message.get("content")
        if isinstance(content, str):
            total += count(content)
        elif isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    total += count(str(part.get("text", "")))
                    continue
                if kind == "image_url":
                    detail = (part.get("image_url") or {}).get("detail")
                    total += IMAGE_TOKENS_LOW if detail == "low" else IMAGE_TOKENS_HIGH
                else:
                    total += estimate_tokens(json.dumps(part))
                exact = False
        name = message.get("name")
        if name:
            total += count(str(name)) + TOKENS_PER_NAME
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            total += count(str(function.get("name", ""))) + count(str(function.get("arguments", "")))
            exact = False
    if tools:
        for tool in tools:
            total += count(json.dumps(tool.get("function", tool), separators=(",", ":")))
        exact = False
    return total, exact
