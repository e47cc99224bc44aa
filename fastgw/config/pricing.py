"""``models[].pricing``: what a model's tokens cost, for the cost metric and the usage records.

::

    pricing: {input_per_mtok: 2.5, output_per_mtok: 10, cached_input_per_mtok: 1.25}

USD per million tokens. ``cached_input_per_mtok`` (prompt-cache reads) defaults to the input
price. A model without ``pricing`` is priced by the cost quotas' ``prices`` tables, if any
(see :mod:`fastgw.config.limits`); otherwise it has no cost.

Normalised: ``None`` when absent, else ``{input_per_mtok, output_per_mtok, cached_input_per_mtok}``.
"""

from __future__ import annotations

import math
from typing import Any

from fastgw.config.fields import Issues, mapping

PARTS = ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok")


def pricing(value: Any, path: str, issues: Issues) -> dict[str, float] | None:
    given = mapping(value, path, issues, PARTS)
    if given is None:
        return None
    out: dict[str, float] = {}
    for part in PARTS:
        if part not in given:
            if part != "cached_input_per_mtok":
                issues.add(f"{path}.{part}", "required")
            continue
        price = given[part]
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0:
            issues.add(f"{path}.{part}", f"expected a number >= 0 (USD per million tokens), found {issues.describe(price)}")
            continue
        out[part] = float(price)
    if "input_per_mtok" not in out or "output_per_mtok" not in out:
        return None
    out.setdefault("cached_input_per_mtok", out["input_per_mtok"])
    return out
