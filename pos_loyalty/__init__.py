"""pos-loyalty: offline-first loyalty for point-of-sale terminals.

A Python POS can use the till's service directly::

    import pos_loyalty
    service = pos_loyalty.open_service(pos_loyalty.load_settings(None, data_dir=path))
    service.commit(pos_loyalty.SaleRequest(...))

The names are imported lazily so ``import pos_loyalty.domain`` stays stdlib-only.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "load_settings": "pos_loyalty.config",
    "Settings": "pos_loyalty.config",
    "open_service": "pos_loyalty.bootstrap",
    "Service": "pos_loyalty.service",
    "Profile": "pos_loyalty.service",
    "SaleRequest": "pos_loyalty.service",
    "RefundRequest": "pos_loyalty.service",
    "Basket": "pos_loyalty.domain.basket",
    "BasketLine": "pos_loyalty.domain.basket",
    "Redemption": "pos_loyalty.domain.basket",
    "DomainError": "pos_loyalty.domain.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pos_loyalty' has no attribute {name!r}")
