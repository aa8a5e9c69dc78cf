"""Who the code below the application layer audits as: the principal the application layer is
acting for, never a name taken from the environment.

The application layer (:mod:`appliance.app`) passes its principal explicitly wherever a function
takes an ``actor``; this context covers the modules that still audit without being handed one (the
model registry, the external-endpoint client). It is a :class:`contextvars.ContextVar`, so two
requests of the API server answered in two threads each see their own principal, and code run
outside any principal's action audits as :data:`UNATTRIBUTED` rather than as whoever the operating
system says runs the process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

UNATTRIBUTED = "unattributed"

_acting: ContextVar[str | None] = ContextVar("memo_acting_principal", default=None)


def current_actor() -> str:
    """The principal the application layer is acting for in this context, or ``unattributed``."""
    return _acting.get() or UNATTRIBUTED


@contextmanager
def acting(principal: str) -> Iterator[None]:
    """Attribute everything audited inside the block to ``principal`` (restored afterwards)."""
    token = _acting.set(principal)
    try:
        yield
    finally:
        _acting.reset(token)
