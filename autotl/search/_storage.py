"""Open a study's storage (a SQLite file or a database server) so that several workers can share it safely."""

from __future__ import annotations

import os
import time
import warnings

import optuna
import sqlalchemy

from ..errors import AutoTLError
from ._trial_files import retry_lost

# A running trial beats every HEARTBEAT_S seconds; after GRACE_S seconds of silence it is stale.
HEARTBEAT_S = int(os.environ.get("AUTOTL_HEARTBEAT_S", 10))
GRACE_S = int(os.environ.get("AUTOTL_GRACE_S", 40))


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage (SQLite file or a database server) with heartbeats.

    A trial whose process died (SIGKILL, a lost machine) stops beating; after the grace
    period any worker marks it failed, and a retry is queued that continues its saved
    training state where that is reachable (``_trial_files``).
    """
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    url = _postgres_driver(url)
    try:
        storage = _rdb_storage(url, kwargs)
    except ImportError as error:
        raise AutoTLError(
            f"the storage {url.split(':')[0]} needs a driver: {error}; for PostgreSQL run 'pip install psycopg2-binary'"
        ) from error
    except Exception as error:  # noqa: BLE001 - SQLAlchemy's many connection errors
        raise AutoTLError(f"cannot open storage {url.split('@')[-1]}: {str(error).splitlines()[0]}") from error
    if storage.engine.name == "sqlite":
        _lock_sqlite_on_begin(storage.engine)
    return storage


def _rdb_storage(url: str, engine_kwargs: dict, attempts: int = 3) -> optuna.storages.RDBStorage:
    """Open the storage, creating its tables the first time.

    Two processes opening a fresh database at once (workers, machines, a watcher) race to
    create the schema and stamp its version; the loser gets an IntegrityError although the
    database is now fine, so it opens it again.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(attempts):
            try:
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=retry_lost,
                )
            except (
                sqlalchemy.exc.IntegrityError,
                sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.ProgrammingError,
            ) as error:
                lost_the_race = isinstance(error, sqlalchemy.exc.IntegrityError) or "already exists" in str(error)
                if not lost_the_race or attempt == attempts - 1:
                    raise
                time.sleep(0.5)


def _lock_sqlite_on_begin(engine) -> None:
    """Make each SQLite transaction take the write lock when it begins.

    Python's sqlite3 runs a transaction's SELECTs before its BEGIN, so two workers can both
    read an enqueued trial as WAITING and both claim it (Optuna's SELECT ... FOR UPDATE is a
    no-op on SQLite): the same trial then runs twice and the second tell fails. BEGIN
    IMMEDIATE serialises the read-then-write (SQLAlchemy's documented pysqlite recipe).
    """

    @sqlalchemy.event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy, not the driver, emits BEGIN

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed are dropped


def _postgres_driver(url: str) -> str:
    """A plain postgresql:// URL uses psycopg2 when that is the driver installed (SQLAlchemy 2.1 wants psycopg 3)."""
    if not url.startswith("postgresql://"):
        return url
    try:
        import psycopg  # noqa: F401

        return url
    except ImportError:
        return "postgresql+psycopg2://" + url[len("postgresql://") :]
