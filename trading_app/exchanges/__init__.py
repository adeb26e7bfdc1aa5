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


def adapter_for(account: ExchangeAccount) -> ExchangeAdapter:
    if account.is_paper:
        from trading_app.exchanges.paper import PaperExchange

        return PaperExchange(account)
    # Imported here: processes that only paper-trade never load ccxt (about 0.3 s, 70 MB here).
    from trading_app.exchanges.ccxt_adapter import CcxtExchange

    return CcxtExchange(
        account.exchange,
        sandbox=account.mode == ExchangeAccount.Mode.TESTNET,
        options=account.options,
        **account.credentials(),
    )
