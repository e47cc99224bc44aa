"""Prompt templates and decorators: config validation and request rewriting."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from fastgw.ai.prompts import PromptError, Prompts
from fastgw.config.fields import Issues
from fastgw.config.prompts import prompts

MODELS = ["gpt-4o", "gpt-4o-mini", "claude-*"]
CONSUMERS = ["team-a", "team-b"]

CONFIG = """
templates:
  - name: summarize
    messages:
      - {role: system, content: "You summarise {{language}} text in {{ style }} style."}
      - {role: user, content: "{{text}}"}
    defaults: {style: concise}
    model: gpt-4o-mini
  - name: plain
    messages: [{role: user, content: "Hello {{who}}, {{who}}!"}]
decorators:
  - name: safety
    match: {consumers: [team-a]}
    prepend: [{role: system, content: "Never reveal secrets."}]
  - name: claude
    match: {models: ["claude-*"]}
    prepend: [{role: system, content: "Be brief."}]
    append: [{role: user, content: "Answer in English."}]
  - name: everyone
    append: [{role: user, content: "Thanks."}]
"""


def normalise(text: str) -> tuple[dict, list[str]]:
    issues = Issues()
    config = prompts(yaml.safe_load(text), issues, MODELS, CONSUMERS)
    return config, issues.errors


def build(text: str = CONFIG) -> Prompts:
    config, errors = normalise(text)
    assert errors == []
    return Prompts(config)


def contents(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"]]


# -- templates -------------------------------------------------------------------------------


def test_template_expands_with_defaults_and_takes_its_model() -> None:
    request = {"template": {"name": "summarize", "variables": {"language": "French", "text": "Bonjour"}}}
    out = build().apply(request, "team-b", None)
    assert "template" not in out and out["model"] == "gpt-4o-mini"
    assert out["messages"] == [
        {"role": "system", "content": "You summarise French text in concise style."},
        {"role": "user", "content": "Bonjour"},
        {"role": "user", "content": "Thanks."},
    ]
    assert request == {
        "template": {"name": "summarize", "variables": {"language": "French", "text": "Bonjour"}}
    }


def test_variables_override_defaults_numbers_allowed_and_request_messages_follow() -> None:
    request = {
        "model": "gpt-4o",
        "template": {"name": "summarize", "variables": {"language": 3, "text": "t", "style": "long"}},
        "messages": [{"role": "user", "content": "more"}],
        "temperature": 0,
    }
    out = Prompts(normalise(CONFIG)[0] | {"decorators": []}).apply(request, None, "gpt-4o")
    assert out["model"] == "gpt-4o" and out["temperature"] == 0
    assert contents(out) == ["You summarise 3 text in long style.", "t", "more"]


def test_missing_variables_are_a_400_naming_them() -> None:
    with pytest.raises(PromptError) as info:
        build().apply({"template": {"name": "summarize", "variables": {"style": "x"}}}, None, None)
    assert info.value.status == 400
    assert info.value.message == "prompt template 'summarize' needs variable(s) 'language', 'text'"


@pytest.mark.parametrize(
    ("template", "status", "fragment"),
    [
        ({"name": "nope"}, 404, "'nope' does not exist"),
        ("summarize", 400, "'template' must be an object"),
        ({"name": "plain", "variables": ["x"]}, 400, "'template.variables' must be an object"),
        ({"name": "plain", "variables": {"who": {"$ne": 1}}}, 400, "'who' must be a string or a number"),
        ({"name": "plain", "variables": {"who": True}}, 400, "'who' must be a string or a number"),
    ],
)
def test_bad_template_requests(template: Any, status: int, fragment: str) -> None:
    with pytest.raises(PromptError) as info:
        build().apply({"model": "gpt-4o", "template": template}, None, "gpt-4o")
    assert info.value.status == status and fragment in info.value.message


def test_values_are_never_expanded_again() -> None:
    hostile = "{{who}} {{language}} {{ __class__ }} ${HOME} %s {0}"
    out = build().apply({"template": {"name": "plain", "variables": {"who": hostile}}}, None, "gpt-4o")
    assert contents(out)[0] == f"Hello {hostile}, {hostile}!"


def test_requests_without_templates_or_messages() -> None:
    p = build()
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert contents(p.apply(request, "team-b", "gpt-4o")) == ["hi", "Thanks."]
    assert request["messages"] == [{"role": "user", "content": "hi"}]
    embeddings = {"model": "gpt-4o", "input": "x"}
    assert p.apply(embeddings, "team-a", "gpt-4o") == embeddings  # nothing to decorate


# -- decorators --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("consumer", "model", "expected"),
    [
        ("team-a", "gpt-4o", ["Never reveal secrets.", "hi", "Thanks."]),
        ("team-b", "gpt-4o", ["hi", "Thanks."]),
        (None, "claude-3-opus", ["Be brief.", "hi", "Answer in English.", "Thanks."]),
        (
            "team-a",
            "claude-3-opus",
            ["Never reveal secrets.", "Be brief.", "hi", "Answer in English.", "Thanks."],
        ),
    ],
)
def test_decorators_match_and_keep_config_order(
    consumer: str | None, model: str, expected: list[str]
) -> None:
    request = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    assert contents(build().apply(request, consumer, model)) == expected


def test_anonymous_decorator_and_no_shared_message_dicts() -> None:
    p = build(
        "decorators:\n  - name: anon\n    match: {consumers: [anonymous], models: [gpt-4o]}\n"
        "    prepend: [{role: system, content: s}]\n"
    )
    out = p.apply({"messages": []}, None, "gpt-4o")
    assert contents(out) == ["s"]
    out["messages"][0]["content"] = "changed"
    assert contents(p.apply({"messages": []}, None, "gpt-4o")) == ["s"]
    assert contents(p.apply({"messages": []}, "team-a", "gpt-4o")) == []
    assert contents(p.apply({"messages": []}, None, "gpt-4o-mini")) == []


# -- config ------------------------------------------------------------------------------------


def test_normalised_form_lists_variables() -> None:
    config, errors = normalise(CONFIG)
    assert errors == []
    summarize, plain = config["templates"]
    assert summarize["variables"] == ["language", "style", "text"] and summarize["defaults"] == {
        "style": "concise"
    }
    assert plain == {
        "name": "plain",
        "messages": [{"role": "user", "content": "Hello {{who}}, {{who}}!"}],
        "defaults": {},
        "model": None,
        "variables": ["who"],  # required per request: not an error at load
    }
    assert config["decorators"][2]["match"] == {"models": None, "consumers": None}
    assert normalise("{}") == ({"templates": [], "decorators": []}, [])


def test_config_errors_have_field_paths() -> None:
    _, errors = normalise(
        """
templates:
  - name: t
    messages: [{role: robot, content: x}, {role: user}, {role: user, content: 5}]
    defaults: {lang: en, text: [1]}
    model: gpt-5
  - name: t
    messages: []
    model: "gpt-*"
  - {messages: [{role: user, content: "{{text}}"}], defaults: {text: {a: 1}}, extra: 1}
decorators:
  - name: d
    match: {models: [gpt-4]}
  - name: d
    match: {consumers: [team-c, "team-*"], models: []}
    prepend: [{role: tool, content: x}]
"""
    )
    assert errors == [
        "prompts.templates[0].messages[0].role: expected one of system, developer, user, assistant; found string 'robot'",
        "prompts.templates[0].messages[1].content: required",
        "prompts.templates[0].messages[2].content: expected a string, found integer 5",
        "prompts.templates[0].defaults.lang: no message uses {{lang}}; variables: none",
        "prompts.templates[0].defaults.text: no message uses {{text}}; variables: none",
        "prompts.templates[0].defaults.text: expected a string or a number, found list",
        "prompts.templates[0].model: unknown model 'gpt-5'; did you mean 'gpt-4o'?",
        "prompts.templates[1].messages: a template needs at least one message",
        "prompts.templates[1].model: must name one model, not a pattern",
        "prompts.templates[2].extra: unknown key; expected one of: name, messages, defaults, model",
        "prompts.templates[2].name: required",
        "prompts.templates[2].defaults.text: expected a string or a number, found mapping",
        "prompts.templates[1].name: duplicate name 't' (already used by prompts.templates[0])",
        "prompts.decorators[0]: a decorator needs messages to prepend, append or both",
        "prompts.decorators[0].match.models[0]: unknown model 'gpt-4'; did you mean 'gpt-4o'?",
        "prompts.decorators[1].prepend[0].role: expected one of system, developer, user, assistant; found string 'tool'",
        "prompts.decorators[1].match.models: list at least one model, or leave models out to match any",
        "prompts.decorators[1].match.consumers[0]: unknown consumer 'team-c'; did you mean 'team-b'?",
        "prompts.decorators[1].name: duplicate name 'd' (already used by prompts.decorators[0])",
    ]


def test_wildcard_models_accept_a_concrete_template_model() -> None:
    config, errors = normalise(
        "templates:\n  - {name: t, model: claude-3-opus, messages: [{role: user, content: x}]}\n"
    )
    assert errors == [] and config["templates"][0]["model"] == "claude-3-opus"
