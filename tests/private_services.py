"""A PostgreSQL of a test's own, to stop and start: never the shared one.

``PrivatePostgres`` runs ``initdb`` in a temporary folder (as the ``postgres``
OS user when this process is root: PostgreSQL refuses to run as root), serves
it on a free loopback port with its socket in that folder, and removes it all
on exit, also when the test fails::

    with PrivatePostgres() as pg:
        pg.create_database("outage")
        url = pg.url_for("outage")
        pg.stop()   # connections are cut, new ones refused
        pg.start()  # back on the same port, with the same data

The first cluster of a process is initialised once and copied for the next
ones (``initdb`` is most of the start-up time).
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

_TEMPLATE: Path | None = None
_TEMPLATE_LOCK = threading.Lock()


def free_port() -> int:
    """A free loopback port for a server started later, below the ephemeral range (32768-60999):
    one from that range can be taken by an outgoing socket before the server listens on it, or
    between a stop and a restart on the same port."""
    for _ in range(500):
        port = random.randrange(20000, 32768)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("No free loopback port between 20000 and 32767.")


def postgres_bin() -> Path:
    """The newest PostgreSQL server binaries installed (Debian's layout), or the ones on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise RuntimeError("No PostgreSQL server binaries (pg_ctl, initdb) found.")
    return Path(pg_ctl).parent


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", str(path)], check=True)


def _run(args: list[str], timeout: float = 60) -> None:
    result = subprocess.run(_as_postgres(args), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def _template(bindir: Path) -> Path:
    """An initialised, never started cluster, made once per process and copied for each server."""
    global _TEMPLATE
    with _TEMPLATE_LOCK:
        if _TEMPLATE is None or not (_TEMPLATE / "PG_VERSION").exists():
            root = Path(tempfile.mkdtemp(prefix="customersync-pg-template-"))
            os.chmod(root, 0o755)
            data = root / "data"
            data.mkdir()
            _own(root)
            _run([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            _TEMPLATE = data
            import atexit

            atexit.register(shutil.rmtree, root, True)
        return _TEMPLATE


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (see the module docstring)."""

    def __init__(self) -> None:
        self.bindir = postgres_bin()
        self.port = free_port()
        self.root: Path | None = None
        self.data: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> PrivatePostgres:
        try:
            self.root = Path(tempfile.mkdtemp(prefix="customersync-pg-"))
            os.chmod(self.root, 0o755)
            self.data = self.root / "data"
            shutil.copytree(_template(self.bindir), self.data)
            _own(self.root)
            os.chmod(self.data, 0o700)
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop at once (no checkpoint: the data is thrown away) and remove everything."""
        try:
            if self.running:
                self.stop(mode="immediate")
        finally:
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = self.data = None

    def start(self) -> float:
        """Start (again) on the same port; returns when it accepts connections, with the seconds it took."""
        assert self.data is not None, "use PrivatePostgres as a context manager"
        # fsync off: quick, and a stopped or killed server loses nothing (the OS keeps what was
        # written). synchronous_commit stays on: a crash must not forget an acknowledged commit.
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        started = time.monotonic()
        _run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        return time.monotonic() - started

    def stop(self, mode: str = "fast") -> float:
        """Stop: ``fast`` cuts every connection (their next query fails) and refuses new ones;
        ``immediate`` is a crash. Returns the seconds it took."""
        assert self.data is not None
        started = time.monotonic()
        _run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])
        return time.monotonic() - started

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.data is not None and (self.data / "postmaster.pid").exists()

    @property
    def log(self) -> str:
        path = None if self.root is None else self.root / "log"
        return path.read_text(errors="replace") if path is not None and path.exists() else ""

    # -- databases ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres") as conn:
            conn.autocommit = True
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def query(self, database: str, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of ``sql`` run on ``database`` with a connection of its own."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database) as conn:
            return conn.execute(sql, params).fetchall()
