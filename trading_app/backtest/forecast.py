"""The backtest's model runs in a process of its own: every market's predictions
(Predictor.iter_series, many time steps per forward pass) stream back in time order while the
replay works through the steps already predicted. The model and the replay's database work then
use two cores at once without sharing an interpreter lock (in a thread, the forward passes and
the ORM slowed each other down by half).

The process is `python -m trading_app.backtest.forecast`, talking pickle over its stdin and
stdout: it imports mlcore, pandas and torch only (no Django, no database connection), and does
not depend on how the parent was started (multiprocessing's spawn would re-import the parent's
main script).
"""

import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from mlcore.errors import ModelError
from mlcore.predictor import PredictionResult

DONE = pd.Timestamp.max.tz_localize("UTC")
NOT_YET = pd.Timestamp.min.tz_localize("UTC")
ROOT = Path(__file__).resolve().parents[2]


class ForecastError(RuntimeError):
    """The model process failed or died; the message says how."""


def model_process(stdin, stdout) -> None:
    """Read (path, device, threads, markets, since) from stdin; write ("fingerprint", sha),
    then (market index, part) in time order across the markets, then ("done", busy seconds),
    or ("error", text) when anything fails."""
    import torch

    from mlcore.allocator import tune_glibc_malloc
    from mlcore.predictor import Predictor

    tune_glibc_malloc()  # a process of its own: its forward passes stop re-faulting pages

    def send(message) -> None:
        pickle.dump(message, stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()

    try:
        path, device, threads, markets, since = pickle.load(stdin)  # noqa: S301 - our parent
        torch.set_num_threads(threads)
        predictor = Predictor.load(path, device=device)
        send(("fingerprint", predictor.fingerprint))
        parts = {k: predictor.iter_series(candles, symbol=symbol, since=since)
                 for k, (symbol, candles) in enumerate(markets)}  # fmt: skip
        ready = dict.fromkeys(parts, NOT_YET)
        busy = 0.0
        while parts:
            k = min(parts, key=ready.__getitem__)  # the market furthest behind goes next
            started = time.perf_counter()
            part = next(parts[k], None)
            busy += time.perf_counter() - started
            if part is None:
                del parts[k]
                continue
            ready[k] = max(part)
            send((k, part))
        send(("done", busy))
    except Exception as exc:
        send(("error", f"{type(exc).__name__}: {exc}"))


class Forecast:
    """Predictions of `markets` [(symbol, candles)] from `since` on, computed by the model
    process started with start(); wait(t) blocks until every market is predicted through t.

    A reader thread takes the predictions in as they come: left in the pipe (64 KB, three
    batches) they would stop the model process a few batches ahead of the replay, which then
    waited for it after every quiet stretch of candles."""

    def __init__(self, *, path: str, device: str, threads: int, fingerprint: str,
                 markets: list[tuple[str, pd.DataFrame]], since: pd.Timestamp):  # fmt: skip
        self.fingerprint = fingerprint
        self.predictions: list[dict[pd.Timestamp, PredictionResult]] = [{} for _ in markets]
        self.missing: list[list[ModelError]] = [[] for _ in markets]
        self.ready = [NOT_YET] * len(markets)
        self.busy_seconds = self.wait_seconds = 0.0
        self._request = (path, device, threads, markets, since)
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._arrived = threading.Condition()
        self._failure: ForecastError | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(  # noqa: S603 - our own module, no shell
            [sys.executable, "-m", "trading_app.backtest.forecast"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        pickle.dump(self._request, self._process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self._process.stdin.close()
        self._reader = threading.Thread(target=self._read, name="forecast-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """The reader thread: every message into the results, until "done" or a failure."""
        try:
            while True:
                kind, payload = pickle.load(self._process.stdout)  # noqa: S301 - our child
                with self._arrived:
                    self._receive(kind, payload)
                    self._arrived.notify_all()
                if kind == "done":
                    return
        except EOFError:
            failure = ForecastError(
                f"the model process ended early (exit code {self._process.wait()})"
            )
        except ForecastError as exc:
            failure = exc
        except Exception as exc:  # whatever it is, the waiting replay must hear of it
            failure = ForecastError(f"the model process's answer is unreadable: {exc!r}")
        with self._arrived:
            self._failure = failure
            self._arrived.notify_all()

    def _receive(self, kind, payload) -> None:
        if kind == "error":
            raise ForecastError(f"the model process failed: {payload}")
        if kind == "fingerprint":
            if payload != self.fingerprint:
                raise ForecastError("the checkpoint file changed as the backtest started")
        elif kind == "done":
            self.busy_seconds = payload
            self.ready = [DONE] * len(self.ready)
        else:
            for t, result in payload.items():
                if isinstance(result, PredictionResult):
                    self.predictions[kind][t] = result
                else:
                    self.missing[kind].append(result)
            self.ready[kind] = max(payload)

    def wait(self, t: pd.Timestamp) -> None:
        started = time.perf_counter()
        with self._arrived:
            while min(self.ready) < t:
                if self._failure is not None:
                    raise self._failure
                self._arrived.wait()
        self.wait_seconds += time.perf_counter() - started

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        if self._reader is not None:
            self._reader.join()  # it ends at the stream's end
        self._process.stdout.close()


if __name__ == "__main__":
    model_process(sys.stdin.buffer, sys.stdout.buffer)
