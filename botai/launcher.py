"""`make up`'s last step: start the embedded Redis when no broker is configured, then every Procfile
process under honcho, and print where everything is. Ctrl-C stops all of it.
"""

import os
import subprocess
import sys

import django

PROCESSES = ("web", "gpu", "trading", "default", "beat", "flower")  # release runs in `bootstrap`


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botai.settings")
    django.setup()
    from django.conf import settings

    from botai import embedded_redis

    redis_process = None
    if settings.CELERY_BROKER_URL == settings.EMBEDDED_REDIS_URL:
        redis_process = embedded_redis.start(
            port=settings.EMBEDDED_REDIS_PORT, directory=settings.DATA_DIR / "redis"
        )
        print(f"embedded Redis on {settings.EMBEDDED_REDIS_URL} (files in data/redis)")
    web = f"http://127.0.0.1:{os.environ.get('WEB_PORT', '8000')}"
    flower = f"http://127.0.0.1:{os.environ.get('FLOWER_PORT', '5555')}"
    print(
        f"\n  admin          {web}/admin/\n"
        f"  API (browse)   {web}/api/v1/\n"
        f"  API docs       {web}/api/docs/\n"
        f"  dashboard      {web}/admin/dashboard/\n"
        f"  Flower         {flower}/\n"
        f"  status         .venv/bin/python manage.py botai_status\n"
        "  Ctrl-C stops every process.\n",
        flush=True,
    )
    env = dict(os.environ)
    # Flower listens on 127.0.0.1 only; its API needs this or auth (FLOWER_BASIC_AUTH) to answer.
    env.setdefault("FLOWER_UNAUTHENTICATED_API", "true")
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}"
    honcho = [sys.executable, "-m", "honcho", "-f", str(settings.BASE_DIR / "Procfile"), "start"]
    try:
        return subprocess.call([*honcho, *PROCESSES], env=env, cwd=settings.BASE_DIR)  # noqa: S603
    except KeyboardInterrupt:
        return 0
    finally:
        embedded_redis.stop(redis_process)


if __name__ == "__main__":
    sys.exit(main())
