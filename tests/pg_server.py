"""A real, throw-away PostgreSQL server for tests (no mocks, no docker).

    with PgServer() as pg:              # initdb into a temp dir, start on a free 127.0.0.1 port
        url = pg.url                    # postgresql://plexus:<password>@127.0.0.1:<port>/plexus
        other = pg.create_database()    # a fresh database (its URL) for an isolated test
        pg.stop()                       # "immediate" by default: PostgreSQL is gone, as in a crash
        pg.start()                      # back on the same port with the same data

In a test module, one server per module (the fixture yields the PgServer):

    from pg_server import pg_fixture
    pg = pg_fixture()                   # scope="module" by default

    def test_x(pg):
        url = pg.create_database()

The binaries are found with shutil.which (initdb, pg_ctl), else in the newest
/usr/lib/postgresql/*/bin; missing binaries raise RuntimeError (CI installs them: Debian
`postgresql`). PostgreSQL refuses to run as root: as root the temp dir is given to the `postgres`
user and initdb/pg_ctl run through `runuser -u postgres --`. Durability is off (fsync,
synchronous_commit, full_page_writes) for speed. Caution: with synchronous_commit off (the
default here) an "immediate" stop loses the commits of its last fraction of a second, as a crash
would: a test that stops the server and counts rows afterwards wants
`PgServer(synchronous_commit=True)` (still fast: fsync stays off). TCP connections need the password (scram), so
the URL carries one, as a real deployment's would; the unix socket in the temp dir is trusted.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time

USER = "plexus"
DATABASE = "plexus"


def find_bindir() -> str:
    """The directory holding initdb, pg_ctl and postgres."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return os.path.dirname(os.path.realpath(found))
    dirs = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(os.path.join(d, "pg_ctl"))]
    if not dirs:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install the "
                           "`postgresql` package (Debian/Ubuntu) or put them on PATH")
    return max(dirs, key=lambda d: [int(x) if x.isdigit() else 0 for x in d.split("/")[-2].split(".")])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL cluster in a temp dir; `start()` runs it, `stop()` stops it, `cleanup()`
    stops it and removes the dir. A context manager (start on enter, cleanup on exit)."""

    def __init__(self, password: str | None = None, synchronous_commit: bool = False) -> None:
        self.bindir = find_bindir()
        self.synchronous_commit = synchronous_commit
        self.password = password or "pw-" + secrets.token_hex(8)
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="plexus-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        self._as_postgres = os.geteuid() == 0
        self._initialised = False
        self._databases = 0
        atexit.register(self.cleanup)

    @property
    def url(self) -> str:
        return self.url_for(DATABASE)

    def url_for(self, database: str) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> "PgServer":
        if not self._initialised:
            self._initdb()
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
                f"-c fsync=off -c synchronous_commit={'on' if self.synchronous_commit else 'off'} "
                "-c full_page_writes=off -c max_connections=100 "
                "-c shared_buffers=32MB")
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "30", "start")
        if self._databases == 0:
            self._sql(f"CREATE DATABASE {DATABASE}")
            self._databases = 1
        return self

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server ("immediate": no shutdown checkpoint, clients cut off, like a crash)."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "30", "stop")

    def cleanup(self) -> None:
        try:
            if os.path.isdir(self.data):
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PgServer":
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def create_database(self, name: str | None = None) -> str:
        """Create a new empty database; return its URL."""
        self._databases += 1
        name = name or f"db{self._databases}"
        self._sql(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
        return self.url_for(name)

    def connect(self, database: str = DATABASE, **kw):
        import psycopg
        return psycopg.connect(self.url_for(database), autocommit=True, **kw)

    # -- helpers -----------------------------------------------------------------------------------

    def _initdb(self) -> None:
        pwfile = os.path.join(self.dir, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            for path in (self.dir, pwfile):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", self.data, "-U", USER, "--pwfile", pwfile, "-E", "UTF8", "--locale=C",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
        os.unlink(pwfile)
        self._initialised = True

    def _sql(self, sql: str) -> None:
        import psycopg  # over the trusted unix socket of the temp dir
        with psycopg.connect(host=self.dir, port=self.port, user=USER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql)

    def _run(self, tool: str, *args: str) -> None:
        cmd = [os.path.join(self.bindir, tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=self.dir if self._as_postgres else None)
        if p.returncode:
            tail = ""
            if os.path.exists(self.log):
                with open(self.log, errors="replace") as f:
                    tail = f.read()[-2000:]
            raise RuntimeError(f"{tool} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}\n{tail}")


def pg_fixture(scope: str = "module", **kw):
    """A pytest fixture (assign it to a module-level name) yielding a started PgServer (`kw` for
    its constructor), cleaned up at the end of its scope."""
    import pytest

    @pytest.fixture(scope=scope)
    def _pg():
        with PgServer(**kw) as server:
            yield server

    return _pg


def wait_until(predicate, timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll `predicate` until it is true or `timeout` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)
