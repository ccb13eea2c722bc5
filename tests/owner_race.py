"""One of the processes of the get_or_create_for race: ``python -m tests.owner_race OWNER_PK THREADS``.

Starts THREADS threads, prints ``ready``, and on a ``go`` line from stdin
lets them all call ``get_or_create_for(owner, wait=True)`` at once; prints
each caller's Stripe id (or its error) on a line of its own.
"""

from __future__ import annotations

import sys
import threading


def main(owner_pk: str, threads: int) -> None:
    import django

    django.setup()
    from django.db import connection

    from customersync import sync
    from customersync.sync import publisher
    from tests.owners import owner_model

    go = threading.Event()
    results: list[str] = []

    def call() -> None:
        owner = owner_model().objects.get(pk=owner_pk)
        go.wait()
        try:
            results.append("id " + str(sync.get_or_create_for(owner, wait=True).stripe_id))
        except Exception as err:  # reported to the test, which fails on it
            results.append(f"error {type(err).__name__}: {err}")
        finally:
            connection.close()

    workers = [threading.Thread(target=call) for _ in range(threads)]
    for worker in workers:
        worker.start()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected go")
    go.set()
    for worker in workers:
        worker.join()
    publisher.flush(10)
    for line in results:
        print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
