"""Where a push task's time goes, measured inside real worker processes (``bench.workers``).

Loaded into ``celery worker`` with ``--include bench.probe`` when ``BENCH_PROBE_DIR``
is set (nothing happens otherwise). Each worker process appends one JSON line per
task to a file of its own in that folder: the task's wall time between Celery's
``task_prerun`` and ``task_postrun``, the time its queries took (through Django's
``connection.execute_wrapper``), the time spent opening database connections, the
time of its HTTP requests, and its CPU time. Benchmark code only: the app never
imports it.
"""

from __future__ import annotations

import json
import os
import time

DIRECTORY = os.environ.get("BENCH_PROBE_DIR")


class _Task:
    def __init__(self) -> None:
        self.started = self.cpu = 0.0
        self.queries = self.query_count = self.connect = self.http = 0.0
        self.wrapper = None


if DIRECTORY:
    import threading

    import requests
    from celery.signals import task_postrun, task_prerun
    from django.db import connection
    from django.db.backends.base.base import BaseDatabaseWrapper

    _local = threading.local()
    _files: dict[int, object] = {}

    def _current() -> _Task | None:
        return getattr(_local, "task", None)

    _connect = BaseDatabaseWrapper.connect

    def _timed_connect(self, *args, **kwargs):
        began = time.perf_counter()
        try:
            return _connect(self, *args, **kwargs)
        finally:
            if (task := _current()) is not None:
                task.connect += time.perf_counter() - began

    BaseDatabaseWrapper.connect = _timed_connect

    _send = requests.Session.send

    def _timed_send(self, *args, **kwargs):
        began = time.perf_counter()
        try:
            return _send(self, *args, **kwargs)
        finally:
            if (task := _current()) is not None:
                task.http += time.perf_counter() - began

    requests.Session.send = _timed_send

    def _query(execute, sql, params, many, context):
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            if (task := _current()) is not None:
                task.queries += time.perf_counter() - began
                task.query_count += 1

    @task_prerun.connect
    def _prerun(**kwargs) -> None:
        task = _Task()
        task.wrapper = connection.execute_wrapper(_query)
        task.wrapper.__enter__()
        _local.task = task
        task.cpu = time.thread_time()
        task.started = time.perf_counter()

    @task_postrun.connect
    def _postrun(sender=None, **kwargs) -> None:
        ended = time.perf_counter()
        task = _current()
        if task is None:
            return
        _local.task = None
        task.wrapper.__exit__(None, None, None)
        line = {
            "task": getattr(sender, "name", ""),
            "wall": ended - task.started,
            "cpu": time.thread_time() - task.cpu,
            "queries": task.queries,
            "query_count": task.query_count,
            "connect": task.connect,
            "http": task.http,
        }
        key = (os.getpid(), threading.get_ident())
        out = _files.get(key)
        if out is None:
            out = _files[key] = open(os.path.join(DIRECTORY, f"{key[0]}-{key[1]}.jsonl"), "a", buffering=1)  # noqa: SIM115
        out.write(json.dumps(line) + "\n")
