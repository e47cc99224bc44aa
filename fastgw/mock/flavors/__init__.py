"""Mock LLM dialects beyond OpenAI, one module per provider wire format (see fastgw.mock.core.FLAVORS)."""
