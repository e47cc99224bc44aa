"""The one place that chooses between the Cython hot paths and their pure-Python twins.

Set FASTGW_PURE=1 to force the pure-Python versions (tests run both). Each name is
exported three ways: ``X`` (the one in use), ``XPy`` and, when built, ``XC``.
"""

from __future__ import annotations

import os

PURE = os.environ.get("FASTGW_PURE", "") == "1"

from fastgw.http import parser as _py_parser  # noqa: E402

RequestParserPy = _py_parser.RequestParser
ResponseParserPy = _py_parser.ResponseParser
serialize_headPy = _py_parser.serialize_head

RequestParserC = ResponseParserC = serialize_headC = None
try:
    from fastgw._c import http_parser as _c_parser
except ImportError:  # not built: the pure twin serves
    _c_parser = None
else:
    RequestParserC = _c_parser.RequestParser
    ResponseParserC = _c_parser.ResponseParser
    serialize_headC = _c_parser.serialize_head

COMPILED = _c_parser is not None and not PURE

RequestParser = RequestParserC if COMPILED else RequestParserPy
ResponseParser = ResponseParserC if COMPILED else ResponseParserPy
serialize_head = serialize_headC if COMPILED else serialize_headPy

from fastgw import sse as _py_sse  # noqa: E402

SSEParserPy = _py_sse.SSEParser
serialize_eventPy = _py_sse.serialize_event
relay_bytesPy = _py_sse.relay_bytes
ends_streamPy = _py_sse.ends_stream

SSEParserC = serialize_eventC = relay_bytesC = ends_streamC = None
try:
    from fastgw._c import sse as _c_sse
except ImportError:  # not built: the pure twin serves
    _c_sse = None
else:
    SSEParserC = _c_sse.SSEParser
    serialize_eventC = _c_sse.serialize_event
    relay_bytesC = _c_sse.relay_bytes
    ends_streamC = _c_sse.ends_stream

SSEParser = SSEParserC if _c_sse is not None and not PURE else SSEParserPy
serialize_event = serialize_eventC if _c_sse is not None and not PURE else serialize_eventPy
relay_bytes = relay_bytesC if _c_sse is not None and not PURE else relay_bytesPy
ends_stream = ends_streamC if _c_sse is not None and not PURE else ends_streamPy

from fastgw import tokens as _py_tokens  # noqa: E402

TokenCounterPy = _py_tokens.TokenCounter
count_tokensPy = _py_tokens.count_tokens

TokenCounterC = count_tokensC = None
try:
    from fastgw._c import tokens as _c_tokens
except ImportError:  # not built: the pure twin serves
    _c_tokens = None
else:
    TokenCounterC = _c_tokens.TokenCounter
    count_tokensC = _c_tokens.count_tokens

TokenCounter = TokenCounterC if _c_tokens is not None and not PURE else TokenCounterPy
count_tokens = count_tokensC if _c_tokens is not None and not PURE else count_tokensPy

from fastgw import matcher as _py_matcher  # noqa: E402

MatcherPy = _py_matcher.Matcher

MatcherC = None
try:
    from fastgw._c import matcher as _c_matcher
except ImportError:  # not built: the pure twin serves
    _c_matcher = None
else:
    MatcherC = _c_matcher.Matcher

Matcher = MatcherC if _c_matcher is not None and not PURE else MatcherPy

from fastgw import jsonscan as _py_jsonscan  # noqa: E402

scan_chunkPy = _py_jsonscan.scan_chunk
usage_statePy = _py_jsonscan.usage_state
usage_eventsPy = _py_jsonscan.usage_events
model_spanPy = _py_jsonscan.model_span

scan_chunkC = usage_stateC = usage_eventsC = model_spanC = None
try:
    from fastgw._c import jsonscan as _c_jsonscan
except ImportError:  # not built: the pure twin serves
    _c_jsonscan = None
else:
    scan_chunkC = _c_jsonscan.scan_chunk
    usage_stateC = _c_jsonscan.usage_state
    usage_eventsC = _c_jsonscan.usage_events
    model_spanC = _c_jsonscan.model_span

scan_chunk = scan_chunkC if _c_jsonscan is not None and not PURE else scan_chunkPy
usage_state = usage_stateC if _c_jsonscan is not None and not PURE else usage_statePy
usage_events = usage_eventsC if _c_jsonscan is not None and not PURE else usage_eventsPy
model_span = model_spanC if _c_jsonscan is not None and not PURE else model_spanPy
