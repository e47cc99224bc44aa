"""Content guard: banned terms, regexes and personal data on prompts and streamed answers.

Built once per config generation from the normalised ``guard`` section
(:mod:`fastgw.config.guard`): :meth:`Guard.check_prompt` judges a request's texts,
:meth:`Guard.stream` gives a :class:`StreamGuard` per streamed answer, and
:meth:`Guard.moderate` asks the optional external moderation hook.

Actions: ``block`` refuses (a prompt) or cuts the answer (``content_filter``), ``mask``
rewrites the matched text, ``flag`` only records a hit. When rules disagree, block wins
over mask over flag.
"""

from __future__ import annotations

from fastgw.guard.moderation import moderate
from fastgw.guard.rules import Rule, Side, Verdict, render
from fastgw.guard.stream import StreamGuard

__all__ = ["Guard", "StreamGuard", "Verdict"]


class Guard:
    """Compiled rules for both sides."""

    __slots__ = ("rules", "moderation", "window", "_prompt", "_response")

    def __init__(self, config: dict, window: int = 256) -> None:
        self.rules = [Rule(r["name"], r["action"], r["mask"]) for r in config["rules"]]
        self.moderation: dict | None = config.get("moderation")
        self.window = window
        self._prompt = Side(config["rules"], "prompt")
        self._response = Side(config["rules"], "response")

    def check_prompt(self, texts: list[str]) -> Verdict:
        """Judge a request's texts (messages, system prompt...) with the prompt-side rules."""
        action, out, hits = "allow", [], []
        for text in texts:
            masks = []
            for s, e, i, category in self._prompt.spans(text):
                rule = self.rules[i]
                hits.append((rule.name, category))
                if rule.action == "block":
                    action = "block"
                elif rule.action == "mask":
                    masks.append((s, e, rule.mask))
            if masks and action != "block":
                action = "mask"
            out.append(render(text, 0, 0, len(text), masks) if masks else text)
        return Verdict(action, texts if action == "allow" else out, hits)

    def stream(self) -> StreamGuard:
        """A filter for one streamed answer, with the response-side rules."""
        return StreamGuard(self._response, self.rules, self.window)

    async def moderate(self, side: str, texts: list[str]) -> bool:
        """Whether the moderation hook flags ``texts`` (False without a hook for ``side``)."""
        hook = self.moderation
        if hook is None or side not in hook["apply_to"] or not any(texts):
            return False
        return await moderate(hook["url"], "\n".join(texts), hook["timeout"], hook["on_error"])
