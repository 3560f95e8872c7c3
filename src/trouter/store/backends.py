"""Two database backends behind one small interface: SQLite (embedded) and PostgreSQL.

Both run the same SQL, written with ``?`` placeholders (translated to ``%s`` for psycopg),
and both apply the versioned migration files of their dialect on open. SQLite opens one
file in WAL mode with a busy timeout, so several processes on one machine share it; its
connection is guarded by a lock and used from any thread. PostgreSQL goes through a
psycopg 3 connection pool (``psycopg_pool``), one connection per call.

Migrations are plain SQL files (``migrations/<dialect>/NNNN_name.sql``), applied in order
inside one transaction each and recorded in ``schema_migrations``. Alembic would bring
SQLAlchemy and an environment script for three tables; here the two dialects differ only
in a few type names, and concurrent starts (``--workers N``) are serialised by the
database's own lock (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from trouter.config import TrouterError

#: PostgreSQL advisory lock key that serialises concurrent migrations.
MIGRATION_LOCK = 7_262_901


class StoreError(TrouterError):
    """The store URL is malformed, or the database cannot be opened or migrated."""


class StoreUnavailable(TrouterError):
    """A read or write failed because the database is down or too slow (retryable)."""


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """(version, name, SQL) of the packaged migration files of ``dialect``, in order."""
    folder = resources.files("trouter.store") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _apply_migrations(conn: Any, dialect: str, create_sql: str, record_sql: str) -> int:
    """Inside the caller's locked transaction on ``conn`` (sqlite3 or psycopg): create the
    ``schema_migrations`` table, apply the files of ``dialect`` not recorded yet, record each
    with ``record_sql`` (version, name); the schema version after."""
    conn.execute(create_sql)
    done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    for version, name, sql in migrations(dialect):
        if version in done:
            continue
        for statement in _statements(sql):
            conn.execute(statement)
        conn.execute(record_sql, (version, name))
    return conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]


#: Rows one multi-row INSERT takes at most (fewer where the database binds fewer parameters).
MAX_ROWS_PER_INSERT = 500


class Backend:
    """What :class:`~trouter.store.store.Store` needs from a database."""

    dialect: str
    url: str
    #: the most parameters one statement may bind (SQLite's multi-row inserts)
    max_params: int = 999

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement in its own transaction; the number of rows it changed."""
        raise NotImplementedError

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], tail: str = ""
    ) -> None:
        """Insert ``rows`` (``tail``: e.g. an ON CONFLICT clause), the fastest way this
        database takes a batch."""
        marks = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) {tail}"
        self.executemany(sql, rows)  # psycopg pipelines it

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def migrate(self) -> int:
        """Apply the migrations not applied yet; the schema version after."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SQLiteBackend(Backend):
    dialect = "sqlite"

    def __init__(self, path: Path, timeout_s: float = 5.0) -> None:
        self.url = f"sqlite:///{path}"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                path, timeout=timeout_s, check_same_thread=False, isolation_level=None
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self.max_params = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        except sqlite3.Error as err:
            raise StoreError(f"cannot open the SQLite store {path}: {err}") from err
        self._lock = threading.Lock()

    @contextmanager
    def _transaction(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.OperationalError as err:
                raise StoreUnavailable(f"SQLite store {self.url}: {err}") from err

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._transaction() as conn:
            return conn.execute(sql, tuple(params)).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._transaction() as conn:
            conn.executemany(sql, [tuple(r) for r in rows])

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], tail: str = ""
    ) -> None:
        # Statements of many rows, not executemany: Python's sqlite3 releases and retakes
        # the GIL around every row's step, and under load each retake waits on the event
        # loop's thread; one statement takes it back once. One transaction for the batch.
        mark = "(" + ", ".join("?" * len(columns)) + ")"
        per_statement = max(1, min(MAX_ROWS_PER_INSERT, self.max_params // len(columns)))
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        with self._transaction() as conn:
            for start in range(0, len(rows), per_statement):
                chunk = rows[start : start + per_statement]
                values = [value for row in chunk for value in row]
                conn.execute(f"{head}{', '.join([mark] * len(chunk))} {tail}", values)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.OperationalError as err:
                raise StoreUnavailable(f"SQLite store {self.url}: {err}") from err

    def migrate(self) -> int:
        with self._transaction(immediate=True) as conn:
            return _apply_migrations(
                conn,
                self.dialect,
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)",
                "INSERT INTO schema_migrations VALUES (?, ?, strftime('%s','now'))",
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresBackend(Backend):
    dialect = "postgresql"

    def __init__(self, url: str, max_size: int = 4, timeout_s: float = 5.0) -> None:
        try:
            from psycopg_pool import ConnectionPool
        except ImportError as err:
            raise StoreError(
                "a postgresql:// store needs psycopg 3 and psycopg_pool: "
                "pip install 'trouter[store]'"
            ) from err
        self.url = url
        self.timeout_s = timeout_s
        self._pool = ConnectionPool(
            url, min_size=1, max_size=max_size, timeout=timeout_s, open=False,
            kwargs={"connect_timeout": max(1, int(timeout_s))},
        )  # fmt: skip
        try:
            self._pool.open(wait=True, timeout=timeout_s)
        except Exception as err:  # noqa: BLE001  (psycopg's PoolTimeout, OperationalError)
            self._pool.close()
            raise StoreError(
                f"cannot connect to the PostgreSQL store {_redact(url)}: {err}"
            ) from err

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    @contextmanager
    def _connection(self):
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection(timeout=self.timeout_s) as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as err:
            raise StoreUnavailable(f"PostgreSQL store {_redact(self.url)}: {err}") from err

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._connection() as conn:
            return conn.execute(self._sql(sql), tuple(params)).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._connection() as conn, conn.cursor() as cursor:
            cursor.executemany(self._sql(sql), [tuple(r) for r in rows])

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._connection() as conn:
            return conn.execute(self._sql(sql), tuple(params)).fetchall()

    def migrate(self) -> int:
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            return _apply_migrations(
                conn,
                self.dialect,
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
            )

    def close(self) -> None:
        self._pool.close()


def _redact(url: str) -> str:
    """The URL without its password."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


def open_backend(url: str) -> Backend:
    """``sqlite:///path`` (a relative path after the three slashes, an absolute one after
    four) or ``postgresql://user@host:port/db``; the schema is migrated."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path:
            raise StoreError("sqlite:/// needs a file path, e.g. sqlite:///trouter.db")
        backend: Backend = SQLiteBackend(Path(path))
    elif url.startswith(("postgresql://", "postgres://")):
        backend = PostgresBackend(url)
    else:
        raise StoreError(
            f"unknown store URL {_redact(url)!r}: use sqlite:///path/to/file.db or "
            "postgresql://user@host:port/dbname"
        )
    try:
        backend.migrate()
    except StoreUnavailable as err:
        backend.close()
        raise StoreError(f"cannot migrate the store: {err}") from err
    return backend
