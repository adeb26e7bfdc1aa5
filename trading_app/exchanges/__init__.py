"""Exchange adapters: the paper exchange and ccxt. `adapter_for` picks one for an account."""

from trading_app.exchanges.base import (
    ExchangeAdapter,
    ExchangeError,
    PermanentExchangeError,
    TemporaryExchangeError,
)
from trading_app.models import ExchangeAccount

__all__ = [
    "ExchangeAdapter",
    "ExchangeError",
    "PermanentExchangeError",
    "TemporaryExchangeError",
    "adapter_for",
]

# One ccxt adapter per account and process: its market list costs several HTTP requests to load
# and is kept for the life of the process. An edit of the account (credentials, options, mode)
# changes updated_at and so builds a new one.
_ccxt_adapters: dict[tuple, ExchangeAdapter] = {}


def adapter_for(account: ExchangeAccount) -> ExchangeAdapter:
    if account.is_paper:
        from trading_app.exchanges.paper import PaperExchange

        return PaperExchange(account)
    key = (account.pk, account.updated_at)
    if key not in _ccxt_adapters:
        # Imported here: processes that only paper-trade never load ccxt (about 0.3 s, 70 MB here).
        from trading_app.exchanges.ccxt_adapter import CcxtExchange

        for stale in [k for k in _ccxt_adapters if k[0] == account.pk]:
            del _ccxt_adapters[stale]
        _ccxt_adapters[key] = CcxtExchange(
            account.exchange,
            sandbox=account.mode == ExchangeAccount.Mode.TESTNET,
            options=account.options,
            **account.credentials(),
        )
    return _ccxt_adapters[key]
