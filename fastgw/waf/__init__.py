"""The WAF: the OWASP Core Rule Set (or your own SecLang files) run by libmodsecurity.

:func:`rules_for` turns a normalised ``waf`` section into SecLang and compiles it once per
process (pushes that keep the section reuse it); :func:`inspect` runs one request through
it. The engine is libmodsecurity 3 bound in Cython (csrc/modsec.pyx), or through ctypes
(fastgw/waf/engine.py) as its pure twin.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

CRS_SETUP = "/etc/modsecurity/crs/crs-setup.conf"
CRS_RULES = "/usr/share/modsecurity-crs/rules/*.conf"
INSTALL_HINT = "the WAF needs libmodsecurity 3 and the OWASP CRS (Debian: apt install libmodsecurity3 modsecurity-crs)"

_RULE_ID = re.compile(r'\[id "(\d+)"\]')
_RULE_MSG = re.compile(r'\[msg "([^"]*)"\]')
_compiled: dict[str, Any] = {}
"""SecLang text -> compiled rules, per process: a push with the same section reuses them."""


def rules_text(spec: dict[str, Any]) -> str:
    """The SecLang for a ``waf`` section: engine mode, request-body access with JSON and
    XML parsers, the CRS at its paranoia level (or the given files), then the exclusions."""
    lines = [
        "SecRuleEngine " + ("On" if spec["mode"] == "block" else "DetectionOnly"),
        "SecRequestBodyAccess On",
        f"SecRequestBodyLimit {spec['body_limit']}",
        f"SecRequestBodyNoFilesLimit {spec['body_limit']}",
        "SecRequestBodyLimitAction ProcessPartial",
        "SecPcreMatchLimit 100000",
        "SecPcreMatchLimitRecursion 100000",
        "SecAuditEngine Off",
        'SecRule REQUEST_HEADERS:Content-Type "@rx ^application/(?:[a-z0-9.+-]+\\+)?json" '
        '"id:4200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"',
        'SecRule REQUEST_HEADERS:Content-Type "@rx ^(?:application(?:/soap\\+|/)|text/)xml" '
        '"id:4200002,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"',
        'SecRule REQBODY_ERROR "!@eq 0" "id:4200003,phase:2,t:none,log,deny,status:400,'
        "msg:'Failed to parse request body'\"",
    ]
    if spec["rules"] == "crs":
        level = spec["paranoia"]
        lines.append(f'SecAction "id:4200010,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level={level},'
                     f'setvar:tx.executing_paranoia_level={level}"')
        lines += [f"Include {CRS_SETUP}", f"Include {CRS_RULES}"]
    else:
        lines += [f"Include {path}" for path in spec["rules"]]
    lines += [f"SecRuleRemoveById {rule}" for rule in spec["exclusions"]]
    return "\n".join(lines) + "\n"


def rules_for(spec: dict[str, Any]) -> Any:
    """The compiled rules of a section; raises ValueError (bad rules) or OSError (no engine)."""
    from fastgw._speedups import WafRules

    text = rules_text(spec)
    found = _compiled.get(text)
    if found is None:
        found = _compiled[text] = WafRules(text)
    return found


@dataclass(frozen=True)
class Verdict:
    status: int  # the status to answer with (403...), or 0 to let the request through
    rules: tuple[str, ...]  # ids of the rules that matched, in order
    message: str  # the first matched rule's own message (never the request's data)


def inspect(rules: Any, peer: bytes, method: bytes, target: bytes, version: bytes,
            headers: list[tuple[bytes, bytes]], body: bytes) -> Verdict:
    """One request through the rules: the connection, the request line, the headers, the body."""
    t = rules.transaction()
    status = (t.process_connection(peer or b"0.0.0.0", 0, b"127.0.0.1", 0)
              or t.process_uri(target, method, version)
              or t.process_request_headers(headers)
              or t.process_request_body(body))
    t.finish()
    ids: list[str] = []
    message = ""
    for line in t.matches:
        found = _RULE_ID.search(line)
        if found and found.group(1) not in ids:
            ids.append(found.group(1))
            msg = _RULE_MSG.search(line)
            message = message or (msg.group(1) if msg else "")
    return Verdict(status, tuple(ids), message)


def body_for(request: dict[str, Any]) -> bytes:
    """An AI request as the JSON the rules inspect (prompts included)."""
    return json.dumps(request, ensure_ascii=False).encode()
