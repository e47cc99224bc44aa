"""A model's failover chain with this node's zone first among equals (targets of the same model)."""

from __future__ import annotations

from fastgw.ai.frontdoor import local_first


def chain(*targets: tuple[str, str, str | None]) -> list[dict]:
    return [{"provider": p, "model": m, "zone": z} for p, m, z in targets]


def names(targets: list[dict]) -> list[str]:
    return [t["provider"] for t in targets]


def test_local_targets_of_a_model_come_first_and_other_models_keep_their_place() -> None:
    targets = chain(("east", "gpt-4o", "east"), ("mini-east", "gpt-4o-mini", "east"), ("west", "gpt-4o", "west"),
                    ("mini-west", "gpt-4o-mini", "west"), ("any", "gpt-4o", None))
    assert names(local_first(targets, "west")) == ["west", "east", "any", "mini-west", "mini-east"]
    assert names(local_first(targets, "east")) == ["east", "west", "any", "mini-east", "mini-west"]


def test_without_a_zone_or_a_local_target_the_order_is_the_configured_one() -> None:
    targets = chain(("a", "m", "z1"), ("b", "m", "z2"))
    assert local_first(targets, None) is targets
    assert local_first(targets, "z9") is targets
