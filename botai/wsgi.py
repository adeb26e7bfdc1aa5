import gc
import os
from importlib import import_module

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botai.settings")
application = get_wsgi_application()

# What a web worker loads lives as long as the worker: load the URLconf (and with it the views)
# now and freeze it all out of the garbage collector's sight, so a full collection scans only what
# requests allocate. Unfrozen, each one walked ~150k objects for 20-140 ms while every request of
# that worker waited: the worst latencies of bench/bench_api.py (max 75-270 ms -> 22-42 ms).
import_module(settings.ROOT_URLCONF)
gc.freeze()
