"""Connection caps of a worker (fastgw.server.admission)."""

from __future__ import annotations

from types import SimpleNamespace

from fastgw.server.admission import Admission


def test_total_and_per_ip_caps():
    gen = SimpleNamespace(max_connections=3, max_connections_per_ip=2)
    a = Admission()
    assert [a.admit(b"1.1.1.1", gen), a.admit(b"1.1.1.1", gen)] == [None, None]
    assert a.admit(b"1.1.1.1", gen) == "refused_per_ip"
    assert a.admit(b"2.2.2.2", gen) is None
    assert a.admit(b"3.3.3.3", gen) == "refused_max"
    a.release(b"1.1.1.1")
    assert a.admit(b"1.1.1.1", gen) is None
    for peer in (b"1.1.1.1", b"1.1.1.1", b"2.2.2.2"):
        a.release(peer)
    assert a.open == 0 and a.per_ip == {}  # nothing left behind per address


def test_zero_means_no_cap():
    gen = SimpleNamespace(max_connections=0, max_connections_per_ip=0)
    a = Admission()
    assert all(a.admit(b"1.1.1.1", gen) is None for _ in range(10_000))
    assert a.per_ip == {}
