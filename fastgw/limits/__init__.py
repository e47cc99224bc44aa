"""Rate limits and quotas for AI requests: reserve before the call, settle after it.

Where things are built:

* supervisor, before forking: one :class:`~fastgw.limits.local.LocalLimitStore` (the
  node's shared counters and quota ledger); per generation a
  :class:`~fastgw.limits.quotas.QuotaAdmin` for the admin API;
* each worker, in its event loop: one :class:`~fastgw.limits.cluster.RedisLink` when
  ``redis`` is set (kept while the URL is unchanged) and one ``stats`` dict;
* each generation: ``Limiter(config["limits"], store=store, redis=link, stats=stats)``.

Per request::

    ctx = RequestContext(consumer.name if consumer else None, model, ip, head.get, head.query)
    if limiter.needs_check(ctx):                      # no matching rule: nothing to await
        decision = limiter.reserve_nowait(ctx, tokens_in, tokens_out) or await limiter.reserve(ctx, tokens_in, tokens_out)
        if not decision.allowed: reply decision.status / decision.code / decision.message, + decision.headers
        ... call the provider, add decision.headers to the answer ...
        limiter.settle(decision.reservation, actual_in, actual_out)   # also on failure: settle(res, 0, 0) refunds tokens

Concurrency rules (``concurrency: N``) go through ``limiter.concurrency``
(:mod:`fastgw.limits.concurrency`): ``acquire_nowait`` / ``acquire`` before the call and
``release`` when the request ends, however it ends.

Every rule that matches applies; one Redis script (or one locked update of the local
store) checks and charges all of their counters, or none (:mod:`fastgw.limits.limiter`).
Neither this package face nor the limiter holds an I/O library: the supervisor imports
:mod:`fastgw.limits.local` without loading redis.
"""

from fastgw.limits.limiter import Decision, Limiter, Reservation
from fastgw.limits.rules import RequestContext

__all__ = ["Decision", "Limiter", "RequestContext", "Reservation"]
