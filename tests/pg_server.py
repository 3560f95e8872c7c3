"""A throwaway PostgreSQL server for the store tests: initdb in a temp dir, a free port.

PostgreSQL refuses to run as root, so under root the server runs as the ``postgres``
system user (Debian's package creates it) via ``runuser``. Where no server can start,
:func:`unavailable` skips with the reason, and fails instead when ``CI`` is set.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

DEBIAN_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def unavailable(reason: str) -> None:
    (pytest.fail if os.environ.get("CI") else pytest.skip)(f"PostgreSQL server: {reason}")


def _binary(name: str) -> str | None:
    for folder in reversed(DEBIAN_BIN):
        if (folder / name).exists():
            return str(folder / name)
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser") is None:
        unavailable("running as root without runuser to drop to the postgres user")
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextmanager
def postgres_server() -> Iterator[PgServer]:
    """Start a server; yields it (``.url``: database ``postgres``, user ``trouter``, trust)."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        unavailable("initdb/pg_ctl not found (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="trouter-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    root.chmod(0o755)
    port = _free_port()
    run = lambda cmd: subprocess.run(  # noqa: E731
        _as_server_user(cmd), capture_output=True, text=True, timeout=120
    )
    made = run([initdb, "-D", str(data), "-U", "trouter", "--auth=trust", "-E", "UTF8"])
    if made.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        unavailable(f"initdb failed: {made.stderr.strip()[-400:]}")
    options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    started = run([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"])
    if started.returncode != 0:
        log = (root / "log").read_text() if (root / "log").exists() else started.stderr
        shutil.rmtree(root, ignore_errors=True)
        unavailable(f"pg_ctl start failed: {log.strip()[-400:]}")
    server = PgServer(pg_ctl, data, options, root, run)
    server.url = f"postgresql://trouter@127.0.0.1:{port}/postgres"
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


class PgServer:
    def __init__(self, pg_ctl, data, options, root, run) -> None:
        self.pg_ctl, self.data, self.options, self.root, self.run = pg_ctl, data, options, root, run
        self.url = ""

    def stop(self) -> None:
        self.run([self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def start(self) -> None:
        log = str(self.root / "log")
        self.run([self.pg_ctl, "-D", str(self.data), "-o", self.options, "-l", log, "-w", "start"])
