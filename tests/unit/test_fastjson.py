"""fastgw.fastjson: what the request path decodes with."""

from __future__ import annotations

import pytest

from fastgw import fastjson


@pytest.mark.parametrize("data", [b"[" * 100_000, b'{"a":' * 50_000, "[" * 5000])
def test_nesting_too_deep_is_a_value_error_not_a_recursion_error(data):
    with pytest.raises(ValueError):
        fastjson.loads(data)


def test_ordinary_json_still_decodes():
    assert fastjson.loads(b'{"a": [1, {"b": "\\ud800"}]}') == {"a": [1, {"b": "\ud800"}]}
