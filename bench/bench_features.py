"""Feature throughput: what the per-minute cycle pays per market.

compute_features on 500 candles for 1 symbol (median of repeats; also keeping only the last 96
rows, the Predictor's input window), for 100 symbols one after another
in one process (as a gpu worker does for its batch), and for the same 100 symbols spread over
worker processes; next to `ta.add_all_ta_features` on the same 500 candles as a baseline.
Candles come from the synthetic market (one seed and price level per symbol), so the run needs no
data files. Target on 2 CPU cores: <= 30 ms per symbol.

    .venv/bin/python -m bench.bench_features [--symbols 100] [--candles 500] [--workers 2]
"""

import argparse
import os
import statistics
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import ta

from mlcore.features import FEATURE_NAMES, FEATURE_SET, WARMUP, compute_features
from mlcore.synthetic import generate_candles

TARGET_MS_PER_SYMBOL = 30.0


def symbol_candles(count: int, *, candles: int) -> list[pd.DataFrame]:
    # Price levels from 0.05 to 100,000: the features must not care, and the timing should not.
    prices = np.geomspace(0.05, 100_000.0, count)
    return [generate_candles(candles, seed=i, start_price=float(p)) for i, p in enumerate(prices)]


def median_ms(fn, *, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """Median wall and CPU milliseconds of fn(): CPU time shows the cost when other work shares
    the cores, wall time what a caller waits."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def _features_of_chunk(chunk: list[pd.DataFrame]) -> int:
    return sum(len(compute_features(frame)) for frame in chunk)


def many_symbols_ms(frames: list[pd.DataFrame], *, workers: int) -> float:
    """Wall time per symbol for all frames, in one process or split over `workers` processes."""
    if workers == 1:
        start = time.perf_counter()
        _features_of_chunk(frames)
        return (time.perf_counter() - start) * 1e3 / len(frames)
    chunks = [frames[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_features_of_chunk, [chunk[:1] for chunk in chunks]))  # start-up, imports
        start = time.perf_counter()
        list(pool.map(_features_of_chunk, chunks))
        return (time.perf_counter() - start) * 1e3 / len(frames)


def ta_all_features_ms(frame: pd.DataFrame, *, repeats: int) -> tuple[float, int]:
    def run() -> pd.DataFrame:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return ta.add_all_ta_features(
                frame.reset_index(drop=True).copy(), "open", "high", "low", "close", "volume"
            )

    n_columns = run().shape[1] - frame.shape[1]
    return median_ms(run, repeats=repeats, warmup=1)[0], n_columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--candles", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    frames = symbol_candles(args.symbols, candles=args.candles)
    print(
        f"features {FEATURE_SET}: {len(FEATURE_NAMES)} columns, WARMUP {WARMUP}; "
        f"{args.candles} candles per symbol; {os.cpu_count()} CPUs; "
        f"numpy {np.__version__}, pandas {pd.__version__}"
    )
    one, one_cpu = median_ms(lambda: compute_features(frames[0]), repeats=args.repeats)
    print(f"{'1 symbol:':36}{one:8.1f} ms  (CPU {one_cpu:.1f} ms; median of {args.repeats})")
    window, _ = median_ms(lambda: compute_features(frames[0], last=96), repeats=args.repeats)
    print(f"{'1 symbol, last 96 rows (Predictor):':36}{window:8.1f} ms")
    sequential = many_symbols_ms(frames, workers=1)
    print(f"{f'{args.symbols} symbols, 1 process:':36}{sequential:8.1f} ms per symbol")
    parallel = None
    if args.workers > 1:
        parallel = many_symbols_ms(frames, workers=args.workers)
        label = f"{args.symbols} symbols, {args.workers} processes:"
        print(f"{label:36}{parallel:8.1f} ms per symbol")
    baseline, n_ta = ta_all_features_ms(frames[0], repeats=3)
    print(
        f"{'ta.add_all_ta_features, 1 symbol:':36}{baseline:8.1f} ms  ({n_ta} columns; "
        f"{baseline / one:.0f}x our time for {len(FEATURE_NAMES)} columns)"
    )
    best = min(sequential, parallel or sequential)
    verdict = "met" if best <= TARGET_MS_PER_SYMBOL else "MISSED"
    print(f"target <= {TARGET_MS_PER_SYMBOL:.0f} ms per symbol: {verdict} ({best:.1f} ms)")


if __name__ == "__main__":
    main()
