"""Backtests on the live code path: `replay` runs a trader over past candles through the same
services live trading uses, `candles` loads those candles, `metrics` scores the run against
buy-and-hold and the EMA/RSI rule, `page` writes the JSON and HTML report."""
