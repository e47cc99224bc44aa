"""Exact token counts for OpenAI's encodings: the pure-Python twin of the BPE counter.

The gateway reserves rate-limit budget before it forwards a call and meters streams that
report no usage, so it needs a prompt's token count without calling anyone. For OpenAI's
``cl100k_base`` (GPT-4, GPT-3.5, embeddings) and ``o200k_base`` (GPT-4o and later) the
count is exact: the rank tables ship in ``fastgw/data`` (see its LICENSE note) and are
loaded once per process, on the first count of that encoding. Which encoding a model uses,
the estimate for other models and the count of a whole chat request are in
``fastgw.tokencount``, which counts with whichever twin ``fastgw._speedups`` chose.

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
import re
import unicodedata
from functools import cache
from pathlib import Path

__all__ = [
    "CL100K_PATTERN",
    "ENCODINGS",
    "O200K_PATTERN",
    "TokenCounter",
    "char_class",
    "count_tokens",
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
