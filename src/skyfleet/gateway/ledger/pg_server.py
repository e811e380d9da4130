"""A throw-away PostgreSQL server in a temp dir on a free 127.0.0.1 port (tests, benchmarks).

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user (or
`nobody`) through `runuser`; its data directory is a fresh temp dir owned by that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from skyfleet.errors import SkyfleetError

USER = "skyfleet"
PASSWORD = "skyfleet-test-pw"


def find_bin(name: str) -> str | None:
    """`name` (initdb, pg_ctl, postgres) on PATH or in Debian's /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return cands[-1] if cands else None


def missing_reason() -> str | None:
    """Why a server cannot be started here, or None."""
    for b in ("initdb", "pg_ctl"):
        if find_bin(b) is None:
            return (
                f"PostgreSQL's {b} is not installed (`make deps` installs it: apt-get install "
                "postgresql)"
            )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root needs runuser (util-linux) to start PostgreSQL as another user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> tuple[list[str], int | None, int | None]:
    """Command prefix and uid/gid to own the data dir (only when we are root)."""
    if os.geteuid() != 0:
        return [], None, None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pw = pwd.getpwnam(name)
            return ["runuser", "-u", name, "--"], pw.pw_uid, pw.pw_gid
    raise SkyfleetError("running as root and neither a postgres nor a nobody user exists")


@dataclass
class PostgresServer:
    """A running server; `stop()` shuts it down (fast) and removes its data directory."""

    root: Path
    port: int
    prefix: list[str]
    log_path: Path
    stopped: bool = field(default=False)

    @property
    def datadir(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    def url(self, db: str = "postgres", password: str | None = PASSWORD) -> str:
        """postgresql://skyfleet:…@127.0.0.1:port/db"""
        auth = USER if password is None else f"{USER}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run one SQL command with psql; return its unaligned output."""
        psql = find_bin("psql") or "psql"
        out = subprocess.run(
            [psql, "-XAtq", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", db],
            input=sql,
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": PASSWORD},
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise SkyfleetError(f"psql failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def create_database(self, name: str) -> str:
        """CREATE DATABASE name; returns its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (kill the postmaster if pg_ctl cannot), then remove the files."""
        if self.stopped:
            return
        self.stopped = True
        pg_ctl = find_bin("pg_ctl") or "pg_ctl"
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [*self.prefix, pg_ctl, "-D", str(self.datadir), "-m", "fast", "-w", "stop"],
                capture_output=True,
                timeout=30,
                check=False,
            )
        pidfile = self.datadir / "postmaster.pid"
        if pidfile.exists():
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_postgres(*, durable: bool = False, timeout_s: float = 60.0) -> PostgresServer:
    """initdb + start on a free port; `durable=False` turns fsync off (tests only)."""
    reason = missing_reason()
    if reason:
        raise SkyfleetError(reason)
    prefix, uid, gid = _run_as()
    root = Path(tempfile.mkdtemp(prefix="skyfleet-pg-"))
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if uid is not None and gid is not None:
        os.chown(root, uid, gid)
        os.chown(pwfile, uid, gid)
    initdb = find_bin("initdb") or "initdb"
    pg_ctl = find_bin("pg_ctl") or "pg_ctl"
    log_path = root / "server.log"
    init = subprocess.run(
        [
            *prefix,
            initdb,
            "-D",
            str(root / "data"),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise SkyfleetError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
    opts = f"-c listen_addresses=127.0.0.1 -k {root} -c max_connections=200"
    if not durable:
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    for _ in range(3):
        srv = PostgresServer(root, _free_port(), prefix, log_path)
        started = subprocess.run(
            [
                *prefix,
                pg_ctl,
                "-D",
                str(srv.datadir),
                "-l",
                str(log_path),
                "-o",
                f"-p {srv.port} {opts}",
                "-w",
                "-t",
                str(int(timeout_s)),
                "start",
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s + 10,
            check=False,
        )
        if started.returncode == 0:
            return srv
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        if "already in use" not in log:
            srv.stop()
            raise SkyfleetError(
                f"PostgreSQL did not start: {started.stderr.strip()}\n{log[-2000:]}"
            )
        time.sleep(0.2)
    srv.stop()
    raise SkyfleetError("PostgreSQL did not start: no free port found")
