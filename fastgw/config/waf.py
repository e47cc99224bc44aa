"""``waf`` on a route or a model: the OWASP Core Rule Set (or your SecLang files) run by
libmodsecurity on each request before the upstream sees it.

``waf: {rules: crs, paranoia: 1, mode: block, exclusions: [920350], body_limit: 10m}``

- ``rules``: ``crs`` (Debian's modsecurity-crs, with its crs-setup.conf) or a list of
  SecLang files (Include'd in order).
- ``paranoia``: CRS paranoia level 1-4 (1: few false positives).
- ``mode``: ``block`` (403 ``waf_blocked`` naming the rule ids) or ``detect`` (log and count).
- ``exclusions``: rule ids to remove (``SecRuleRemoveById``), for false positives.
- ``body_limit``: how much of a body the rules read (default 10m; the rest passes unread).

The rules are compiled here, so a bad rule file or a missing engine is a check error with
its field path.
"""

from __future__ import annotations

import os
from typing import Any

from fastgw.config.fields import Issues, integer, mapping, one_of, sequence, size, text

WAF_KEYS = ("rules", "paranoia", "mode", "exclusions", "body_limit")


def waf(value: Any, path: str, issues: Issues) -> dict | None:
    before = len(issues.errors)
    given = mapping(value, path, issues, WAF_KEYS)
    if given is None:
        return None
    rules: Any = given.get("rules", "crs")
    if rules != "crs":
        files = [text(item, f"{path}.rules[{i}]", issues) for i, item in enumerate(sequence(rules, f"{path}.rules", issues) or [])]
        rules = [os.path.abspath(f) for f in files if f]
        for i, f in enumerate(rules):
            if not os.access(f, os.R_OK):
                issues.add(f"{path}.rules[{i}]", f"cannot read {f}")
    spec = {
        "rules": rules,
        "paranoia": integer(1, 4)(given.get("paranoia", 1), f"{path}.paranoia", issues),
        "mode": one_of("block", "detect")(given.get("mode", "block"), f"{path}.mode", issues),
        "exclusions": [integer(1)(rule, f"{path}.exclusions[{i}]", issues)
                       for i, rule in enumerate(sequence(given.get("exclusions", []), f"{path}.exclusions", issues) or [])],
        "body_limit": size(given["body_limit"], f"{path}.body_limit", issues) if "body_limit" in given else 10 * 1024 * 1024,
    }
    if len(issues.errors) > before:
        return None
    from fastgw.waf import CRS_SETUP, INSTALL_HINT, rules_for

    if rules == "crs" and not os.path.exists(CRS_SETUP):
        issues.add(path, INSTALL_HINT)
        return None
    try:
        rules_for(spec)
    except OSError:
        issues.add(path, INSTALL_HINT)
        return None
    except ValueError as exc:
        issues.add(f"{path}.rules", f"the rules do not load: {exc}")
        return None
    return spec
