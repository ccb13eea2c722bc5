"""The demo site's settings (``project.settings``) as ``bench.workers`` runs them: the rate budget off.

Everything else is the demo's, configured as docs/operations/celery.md recommends. For its comparison
rows only, ``BENCH_DB_POOL=0`` leaves Django's connection pool out (with
``BENCH_CONN_MAX_AGE`` as ``CONN_MAX_AGE``, default 0).
"""

import os

from project.settings import *  # noqa: F403
from project.settings import CUSTOMERSYNC, DATABASES

CUSTOMERSYNC = {**CUSTOMERSYNC, "RATE_LIMIT": 0}  # the budget off: the pipeline's own ceiling
if os.environ.get("BENCH_DB_POOL") == "0":  # a connection per task, as without the pool
    DATABASES["default"]["OPTIONS"] = {k: v for k, v in DATABASES["default"]["OPTIONS"].items() if k != "pool"}
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("BENCH_CONN_MAX_AGE", "0"))
