"""A round-trip probe per queue: proves a worker consumes that queue, not just that it lives."""

import os
import socket

from celery import shared_task


@shared_task(name="botai.health.probe", ignore_result=False)
def probe() -> dict:
    return {"hostname": socket.gethostname(), "pid": os.getpid()}
