"""Retry-After in both forms RFC 9110 allows: delay-seconds and an HTTP-date."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

from fastgw.ai.attempts import retry_after_seconds


def test_delay_seconds():
    assert retry_after_seconds(b"2") == 2.0
    assert retry_after_seconds(b"0.5") == 0.5
    assert retry_after_seconds(b"-3") == 0.0


def test_an_http_date_is_seconds_from_now():
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True).encode()
    assert 28 <= retry_after_seconds(later) <= 30
    assert retry_after_seconds(b"Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: now


def test_absent_or_unreadable_is_none():
    for value in (None, b"", b"soon", b"nan", b"inf", b"Wed, 99 Foo 2015 07:28:00"):
        assert retry_after_seconds(value) is None, value
