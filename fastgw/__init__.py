"""fastgw: one gateway for HTTP services and LLM providers, Python with Cython hot paths."""

__version__ = "0.5.0"
