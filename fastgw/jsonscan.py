"""Top-level-key scanner for streamed JSON chunks: the pure-Python reference twin.

``csrc/jsonscan.pyx`` (built as ``fastgw._c.jsonscan``) is the compiled twin with the same API
and the same answer for every input; ``fastgw._speedups`` picks one. The gateway relays
OpenAI-format SSE streams byte for byte but must find the provider's usage report in them.
Searching the bytes for ``"usage":{`` misses valid JSON such as ``"usage": {`` (a billing bug),
and decoding every chunk is the cost the relay avoids. OpenAI with
``stream_options.include_usage`` puts ``"usage":null`` in every chunk and then one chunk with
``"choices":[]`` and ``"usage":{...}``; other providers put usage on the last content chunk,
with other whitespace, key orders and escapes. So the scanner reads the JSON's structure in one
linear pass and answers only what that proves.

``scan_chunk(data) -> int`` returns bit flags:

- ``SCAN_UNKNOWN`` (2): nothing is proven; the caller decodes ``data`` itself. It comes alone
  (no other bit is set) and is the answer for everything outside the fast path: malformed or
  truncated JSON, empty input, ``[DONE]``, a top level that is not an object, a top-level key
  written with a backslash escape (``"us\\u0061ge"`` may be "usage"), NaN/Infinity (which
  strict JSON has not, though Python's ``json`` takes them) and nesting deeper than
  ``MAX_DEPTH`` containers.
- Otherwise ``data`` is proven to be one valid JSON text (RFC 8259; surrounding JSON
  whitespace allowed) whose value is an object, and:

  - ``USAGE_OBJECT`` (1) is set exactly when that object's top-level ``"usage"`` value is an
    object; when clear, there is no such key or its value is null, a bool, a number, a string
    or an array. Keys named "usage" deeper down and the text "usage" inside strings do not
    count. For a key given twice the last one decides, as in Python's ``json`` (and orjson).
  - ``CHOICES_EMPTY`` (4) is set exactly when the top-level ``"choices"`` value is ``[]``
    (whitespace inside allowed); when clear, there is no such key or it holds anything else.

``usage_state(data)`` is the usage half of the same scan: ``USAGE_NONE`` (0), ``USAGE_OBJECT``
(1) or ``USAGE_UNKNOWN`` (2), i.e. ``scan_chunk(data) & (USAGE_OBJECT | SCAN_UNKNOWN)``.

So a caller may skip decoding a chunk only on a proven answer (``USAGE_NONE``), and on
``USAGE_OBJECT`` or ``USAGE_UNKNOWN`` decodes it as before. For every text ``json.loads``
accepts, a claim holds for what it returns: ``USAGE_NONE`` => ``not isinstance(obj.get("usage"),
dict)``, ``USAGE_OBJECT`` => ``isinstance(obj["usage"], dict)``, ``CHOICES_EMPTY`` =>
``obj["choices"] == []`` (tests/test_jsonscan.py checks this against json on random objects in
every serialisation form). Output of ``json.dumps`` (any separators, indent, sort_keys,
ensure_ascii) of an object whose top-level keys it writes without escapes always gets a proven
answer, unless it holds NaN or Infinity or nests deeper than ``MAX_DEPTH``.

``data`` is the JSON text itself (the payload of one SSE event's ``data:`` lines): ``bytes``,
any C-contiguous buffer (``bytearray``, ``memoryview``...), or ``str``, scanned as its UTF-8
encoding (lone surrogates pass through as their 3-byte form). Other objects raise
``TypeError``, a non-contiguous buffer ``BufferError``; input never makes it raise otherwise.
String contents are opaque: bytes from 0x80 up are not checked as UTF-8, so the answer is
about the structure, which decoding such bytes with ``errors="replace"`` (as the SSE framer
does) cannot change: that decoder never swallows an ASCII byte.

How this twin works. The reference is ``_walk``: one regular expression cuts the text into
tokens (a string, a scalar, one punctuation character, or any other character but whitespace,
each after optional whitespace) and a loop runs the grammar's states over them. That costs a
Python step per token (some 15 us for a 200-byte chunk), more than decoding the chunk, so
``scan_chunk`` first takes a shortcut when it gives the same answer: a text with no backslash
anywhere (hence no escaped key) and at most ``MAX_DEPTH`` brackets (hence no deeper nesting)
is decoded by json's C scanner, held to strict JSON (NaN and Infinity refused, numbers not
converted, so a 5000-digit one is no error), and the flags read off the dict; the text is
valid exactly when ``_walk`` finds it valid. tests/test_jsonscan.py checks that both paths
and the compiled twin agree. Text is scanned as ``str``: ``bytes`` decoded as Latin-1 (one
character per byte, so ASCII stays ASCII and every other byte stays a non-ASCII character,
which is what the grammar needs), a ``str`` as it is (its UTF-8 form has the same structure).
The compiled twin walks the bytes with the same states as ``_walk`` and never allocates.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import re

__all__ = [
    "CHOICES_EMPTY",
    "MAX_DEPTH",
    "SCAN_UNKNOWN",
    "USAGE_NONE",
    "USAGE_OBJECT",
    "USAGE_UNKNOWN",
    "scan_chunk",
    "model_span",
    "no_usage_object",
    "usage_events",
    "usage_state",
]

USAGE_NONE = 0
USAGE_OBJECT = 1
USAGE_UNKNOWN = SCAN_UNKNOWN = 2
CHOICES_EMPTY = 4

# Containers open at once, the top-level object included; deeper texts get SCAN_UNKNOWN
# (so the compiled twin keeps its stack of container kinds in a fixed array).
MAX_DEPTH = 512

_TOKEN = re.compile(
    r"""[ \t\n\r]*
    (?:
        "([^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*)"  # 1: string body
      | (-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null)    # 2: other scalar
      | ([{}\[\]:,])                                                                # 3: punctuation
      | ([^ \t\n\r])                                                               # 4: anything else
    )""",
    re.VERBOSE,
)
_EMPTY_REST = re.compile(r"[ \t\n\r]*\]")

# What the next token may be.
_TOP = 0  # the opening brace of the top-level object
_VALUE = 1  # a value: after ":", or after "," in an array
_VALUE_OR_CLOSE = 2  # a value or "]": after "["
_KEY = 3  # a key: after "," in an object
_KEY_OR_CLOSE = 4  # a key or "}": after "{"
_COLON = 5
_NEXT = 6  # "," or the closer of the innermost container: after a value
_DONE = 7  # nothing: the top-level object is closed


def _as_text(data: bytes | bytearray | memoryview | str) -> str:
    """The text to scan, one character per byte of ``data`` (a str as it is); same errors as the compiled twin."""
    if type(data) is bytes:
        return data.decode("latin-1")
    if isinstance(data, str):
        return data
    view = memoryview(data)  # TypeError for objects without the buffer protocol
    if not view.c_contiguous:
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    return str(view, "latin-1")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# json's own pure-Python scanner (used only where its C one is missing) reads "\d" as any
# Unicode digit: the shortcut needs the C one.
_SHORTCUT = json.scanner.c_make_scanner is not None and json.decoder.c_scanstring is not None
# len() as number parser: nothing is converted (only the structure counts here).
_strict_decode = json.JSONDecoder(parse_constant=_no_constant, parse_int=len, parse_float=len).decode


def scan_chunk(data: bytes | bytearray | memoryview | str) -> int:
    """Flags proven about the JSON text ``data``: see the module docstring for the contract.

    ``SCAN_UNKNOWN`` alone, or a combination of ``USAGE_OBJECT`` and ``CHOICES_EMPTY`` (0:
    a valid JSON object whose "usage" is not an object and whose "choices" is not ``[]``).
    """
    text = _as_text(data)
    if _SHORTCUT and "\\" not in text and text.count("{") + text.count("[") <= MAX_DEPTH:
        try:
            obj = _strict_decode(text)
        except ValueError:
            return SCAN_UNKNOWN
        except RecursionError:  # a deep text on a deep stack: the walk has no recursion
            return _walk(text)
        if type(obj) is not dict:
            return SCAN_UNKNOWN
        return ((USAGE_OBJECT if type(obj.get("usage")) is dict else 0)
                | (CHOICES_EMPTY if obj.get("choices") == [] else 0))
    return _walk(text)


def _walk(text: str, model: list | None = None) -> int:
    """scan_chunk by the grammar, token by token: the reference the shortcut must equal.

    With ``model``, the span of each top-level "model" value is appended to it (None for a
    value that is not a string)."""
    arrays: list[bool] = []  # per open container, innermost last: is it an array?
    state = _TOP
    key = None  # the last top-level key read
    flags = 0
    for m in _TOKEN.finditer(text):
        punct = m.group(3)
        if state == _NEXT:
            if punct == ",":
                state = _VALUE if arrays[-1] else _KEY
            elif punct is not None and punct == ("]" if arrays[-1] else "}"):
                arrays.pop()
                state = _NEXT if arrays else _DONE
            else:
                return SCAN_UNKNOWN
        elif state == _COLON:
            if punct != ":":
                return SCAN_UNKNOWN
            state = _VALUE
        elif state == _KEY or state == _KEY_OR_CLOSE:
            if punct == "}" and state == _KEY_OR_CLOSE:
                arrays.pop()
                state = _NEXT if arrays else _DONE
                continue
            body = m.group(1)
            if body is None:
                return SCAN_UNKNOWN
            if len(arrays) == 1:
                if "\\" in body:  # an escape may spell "usage": only a decoder can tell
                    return SCAN_UNKNOWN
                key = body
            state = _COLON
        elif state == _TOP:
            if punct != "{":
                return SCAN_UNKNOWN
            arrays.append(False)
            state = _KEY_OR_CLOSE
        elif state == _DONE:  # anything but whitespace after the top-level object
            return SCAN_UNKNOWN
        else:  # _VALUE, _VALUE_OR_CLOSE
            if punct == "]" and state == _VALUE_OR_CLOSE:
                arrays.pop()
                state = _NEXT
                continue
            if len(arrays) == 1:  # the value of the top-level key just read
                if key == "usage":
                    flags = flags | USAGE_OBJECT if punct == "{" else flags & ~USAGE_OBJECT
                elif key == "choices":
                    empty = punct == "[" and _EMPTY_REST.match(text, m.end()) is not None
                    flags = flags | CHOICES_EMPTY if empty else flags & ~CHOICES_EMPTY
                elif key == "model" and model is not None:
                    model.append((m.start(1) - 1, m.end(1) + 1) if m.group(1) is not None else None)
            if punct == "{" or punct == "[":
                if len(arrays) == MAX_DEPTH:
                    return SCAN_UNKNOWN
                arrays.append(punct == "[")
                state = _VALUE_OR_CLOSE if punct == "[" else _KEY_OR_CLOSE
            elif m.group(1) is not None or m.group(2) is not None:
                state = _NEXT
            else:
                return SCAN_UNKNOWN
    # Only whitespace is left (the pattern matches wherever anything else is).
    return flags if state == _DONE else SCAN_UNKNOWN


def usage_state(data: bytes | bytearray | memoryview | str) -> int:
    """``USAGE_NONE``, ``USAGE_OBJECT`` or ``USAGE_UNKNOWN`` for ``data``: the usage half of scan_chunk."""
    return scan_chunk(data) & (USAGE_OBJECT | SCAN_UNKNOWN)


def model_span(data: bytes) -> tuple[int, int] | None:
    """``(start, end)`` of the top-level "model" string literal in the JSON object ``data``
    (quotes included; the last one when the key is given twice), or None unless ``data`` is
    proven valid JSON whose top-level "model" is a string."""
    spans: list = []
    if _walk(data.decode("latin-1"), spans) == SCAN_UNKNOWN or not spans:
        return None
    return spans[-1]


_NULL_USAGE = re.compile(r'usage"[ \t\n\r]*:[ \t\n\r]*null')


def no_usage_object(text: str) -> bool:
    """The compiled twin's two-search proof: without a backslash, a key "usage" is the bytes
    ``"usage"``; if each ``usage`` is followed by ``": null`` (any JSON whitespace), none holds
    an object. False: not proven."""
    if "\\" in text:
        return False
    found = text.count("usage")
    return not found or len(_NULL_USAGE.findall(text)) == found


def usage_events(events: list) -> list[int]:
    """Indexes of the SSE events (``.data``) whose data may carry a top-level usage object
    (``scan_chunk`` says USAGE_OBJECT or UNKNOWN, unless the quick proof above already says
    no); ``[DONE]`` is skipped."""
    return [i for i, event in enumerate(events)
            if type(event) is not bytes  # a run of plain events (SSEParser.feed_relay)
            and event.data != "[DONE]" and not (type(event.data) is str and no_usage_object(event.data))
            and usage_state(event.data) != USAGE_NONE]
