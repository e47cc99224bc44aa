"""Who is calling: consumers, their API keys (kept as digests) and JWTs, and which models they may use.

A package of its own, below both the config layer (``fastgw/config/consumers.py`` checks issuer keys with
:mod:`fastgw.auth.jwt`) and the request path (the AI front door today, plain routes later), so neither
imports the other's runtime code for it.
"""

from fastgw.auth.authenticator import Authenticator, AuthFailure, Consumer

__all__ = ["AuthFailure", "Authenticator", "Consumer"]
