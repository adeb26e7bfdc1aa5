"""Live facts only a worker can tell (which workers consume which queue), cached in Redis.

Asking the workers costs the whole inspect timeout (~1.5 s), far too slow for every status
request. A probe's value is served from the cache; once it is older than `fresh_for`, ONE caller
refreshes it in a background thread while everybody keeps getting the previous value, so no
request waits for the workers except the very first one after a cold cache.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.core.cache import cache

from botai.status import queue_workers

logger = logging.getLogger(__name__)

QUEUE_WORKERS_KEY = "probe:queue-workers"
QUEUE_WORKERS_FRESH_FOR = 5.0


def cached_probe(*, key: str, fresh_for: float, compute: Callable[[], Any]) -> tuple[Any, float]:
    """(value, age in seconds) of the probe `key`; stale values are refreshed in the background."""
    entry = cache.get(key)
    now = time.time()
    if entry is None:
        return _refresh(key=key, fresh_for=fresh_for, compute=compute), 0.0
    value, computed_at = entry
    if now - computed_at >= fresh_for and cache.add(f"{key}:refreshing", 1, timeout=30):
        arguments = {"key": key, "fresh_for": fresh_for, "compute": compute}
        threading.Thread(target=_refresh_quietly, kwargs=arguments, daemon=True).start()
    return value, now - computed_at


def _refresh(*, key: str, fresh_for: float, compute: Callable[[], Any]) -> Any:
    try:
        value = compute()
        # Kept well past freshness so a slow refresh never leaves callers with nothing.
        cache.set(key, (value, time.time()), timeout=max(60, fresh_for * 20))
        return value
    finally:
        cache.delete(f"{key}:refreshing")


def _refresh_quietly(**kwargs) -> None:
    try:
        _refresh(**kwargs)
    except Exception:  # a failed refresh keeps the previous value; the next caller retries
        logger.exception("refreshing probe %s failed", kwargs["key"])


def _queue_workers_or_error() -> dict:
    try:
        return {"workers": queue_workers(), "error": ""}
    except Exception as exc:  # noqa: BLE001 - an unreachable broker is an answer, not a crash
        return {"workers": {}, "error": f"cannot ask the workers: {exc}"}


def queue_workers_cached() -> tuple[dict, float]:
    """({"workers": queue -> worker names, "error": why unknown}, age of that answer in seconds)."""
    return cached_probe(
        key=QUEUE_WORKERS_KEY, fresh_for=QUEUE_WORKERS_FRESH_FOR, compute=_queue_workers_or_error
    )


def forget_probes() -> None:
    """Drop cached answers (after starting or stopping workers, e.g. in tests)."""
    cache.delete_many([QUEUE_WORKERS_KEY, f"{QUEUE_WORKERS_KEY}:refreshing"])
