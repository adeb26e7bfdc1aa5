"""A round-trip probe per queue: proves a worker consumes that queue, not just that it lives."""

import logging
import os
import socket

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(name="botai.health.probe", ignore_result=False)
def probe() -> dict:
    logger.info("probe answered by pid %s", os.getpid())
    return {"hostname": socket.gethostname(), "pid": os.getpid()}
