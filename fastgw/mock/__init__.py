"""Built-in mock LLM: an OpenAI-compatible (and Anthropic, Gemini, Azure...) upstream for tests, demos and
the bench (``fastgw mock-llm``).

Its modules, each importing only those listed before it:

- ``core``: the pure ``MockLLM`` (request in, ``MockReply`` out) and the OpenAI flavor; what the gateway's
  in-process ``mock`` provider uses, so workers load no server code;
- ``flavors``: the other provider dialects, loaded when chosen;
- ``server``: the httptools server that frames replies on the wire;
- ``process``: ``serve()``, one process or a fork supervisor over SO_REUSEPORT workers;
- ``cli``: the ``fastgw mock-llm`` options and entry point.
"""
