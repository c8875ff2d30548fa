"""One SQLite database per (task, store): the bytes-level key-value store.

Writes arrive once per commit as a batch, in one transaction together with the
changelog offset they reflect, so the file and its checkpoint never disagree.
It uses the synchronous sqlite3 module on purpose: a table read inside an agent
(`counts[user]`) is a plain expression, and one awaited statement per operation
ran at 10k/s here, against 540k/s for batched `executemany` (DESIGN.md).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from itertools import chain
from operator import itemgetter
from pathlib import Path

log = logging.getLogger("streamkit.state")

# updated_ms: when the key last changed (commit time, or the changelog record's
# timestamp on restore); a table with a TTL forgets keys not updated for that long.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY, value BLOB NOT NULL, updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
Change = tuple[bytes, bytes | None, int]  # key, value (None deletes), updated_ms
# Keys per `WHERE key IN (...)`: well under SQLite's bound of bound parameters.
READ_CHUNK = 500
# Rows per upsert statement: past 32-64, longer statements gained nothing.
WRITE_ROWS = 64
# Up to this many pages (8 MB), WRITE_ROWS rows to a statement took less time per row
# than one (10,000 scattered rows into 50,000: 2.64 -> 1.80 us a row; into 250,000:
# 4.6 -> 4.25); past it more (into 500,000: 6.3 -> 6.7; 1.25 million: 9.1 -> 10.3).
MULTI_ROW_MAX_PAGES = 2_000
_first = itemgetter(0)


def _upserts(tail: str) -> tuple[str, str]:
    """The upsert of one row and of WRITE_ROWS rows, ending in `tail`."""
    one = "INSERT INTO kv(key, value, updated_ms) VALUES(?, ?, ?)" + tail
    many = "INSERT INTO kv(key, value, updated_ms) VALUES" + ",".join(["(?, ?, ?)"] * WRITE_ROWS)
    return one, many + tail


_UPSERTS = _upserts(
    " ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_ms=excluded.updated_ms"
)
# A row whose time is part of its key (a window's end) keeps it: an upsert that does
# not set it leaves the time index alone, where setting it (to the same value) moved
# the row's index entry: 15,000 scattered windows into 250,000 rows, 7.3 -> 4.9 us a row.
_UPSERTS_TIME_IN_KEY = _upserts(" ON CONFLICT(key) DO UPDATE SET value=excluded.value")


def read_checkpoint(path: Path) -> int | None:
    """The changelog offset a store file reflects, read without touching the file."""
    if not path.exists():
        return None
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT value FROM meta WHERE name='changelog_offset'").fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else int(row[0])


def store_path(state_dir: Path, task: object, table: str) -> Path:
    """`{data_dir}/{app_id}/{task}/{table}.sqlite`: the same for active and standby copies."""
    return state_dir / str(task) / f"{table}.sqlite"


class SqliteStore:
    def __init__(self, path: Path, *, expiring: bool = False, time_in_key: bool = False) -> None:
        self.path = path
        # Only tables with a TTL pay for the index that finds expired keys.
        self._expiring = expiring
        # Whether a row's time follows from its key (`Table.row_time_in_key`).
        self._upsert, self._upsert_many = _UPSERTS_TIME_IN_KEY if time_in_key else _UPSERTS
        self._db: sqlite3.Connection | None = None
        self._get_cursor: sqlite3.Cursor | None = None
        # At least the largest row time ever stored (expiring stores only, where an
        # index makes it cheap): a window store need not look up a newer window.
        self.latest_row_time: int | None = None
        # True while the file holds no rows (a new store, or one wiped): then a key
        # that memory does not hold is absent without a read. Writes through this
        # connection alone can change that (the task directory's lock).
        self.empty = False

    def open(self) -> bool:
        """Open (or create) the file; False when it was unreadable and had to be replaced.
        Opening an open store does nothing (a restore that starts again)."""
        if self._db is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connect()
            return True
        except sqlite3.DatabaseError as exc:
            log.warning("state file %s is unreadable (%s): rebuilding it", self.path, exc)
            self.close()
            self._remove_files()
            self._connect()
            return False

    def _connect(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db = db
        # `get`'s own: a window store reads a row per record, and a cursor made per
        # read cost 0.27 us of its 2.35 (`Connection.execute` makes one each call).
        self._get_cursor = db.cursor()
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        if self._expiring:
            db.execute("CREATE INDEX IF NOT EXISTS kv_updated ON kv(updated_ms)")
        # A damaged page may only show up when read: check before trusting the file.
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("quick_check failed")
        # A file of another layout raises here (OperationalError is a DatabaseError).
        db.execute("SELECT key, value, updated_ms FROM kv LIMIT 0")
        if self._expiring:
            self.latest_row_time = db.execute("SELECT MAX(updated_ms) FROM kv").fetchone()[0]
        self.empty = db.execute("SELECT 1 FROM kv LIMIT 1").fetchone() is None

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    @property
    def is_open(self) -> bool:
        return self._db is not None

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "store is not open"
        return self._db

    def checkpoint(self) -> int | None:
        """The next changelog offset this file does not reflect yet; None for a new file."""
        row = self.db.execute("SELECT value FROM meta WHERE name='changelog_offset'").fetchone()
        return None if row is None else int(row[0])

    def get(self, key: bytes, since_ms: int = 0) -> bytes | None:
        """The value of a key updated at or after `since_ms`."""
        cursor = self._get_cursor
        assert cursor is not None, "store is not open"
        row = cursor.execute(
            "SELECT value FROM kv WHERE key=? AND updated_ms>=?", (key, since_ms)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def get_many(self, keys: Sequence[bytes], since_ms: int = 0) -> dict[bytes, bytes]:
        """The values of those keys that are there (updated at or after `since_ms`), read
        `READ_CHUNK` keys to a query: for many keys, a third of the time of a `get` each."""
        found: dict[bytes, bytes] = {}
        db = self.db
        for i in range(0, len(keys), READ_CHUNK):
            chunk = sorted(keys[i : i + READ_CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT key, value FROM kv WHERE key IN ({marks}) AND updated_ms>=?",
                (*chunk, since_ms),
            )
            found.update(rows)  # BLOB columns come back as bytes
        return found

    def range(
        self,
        low: bytes | None = None,
        high: bytes | None = None,
        since_ms: int = 0,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Keys in [low, high) updated at or after `since_ms`, in byte order; the
        first `limit` of them if given."""
        sql, args = "SELECT key, value FROM kv", []
        clauses = ["updated_ms >= ?"]
        args.append(since_ms)
        if low is not None:
            clauses.append("key >= ?")
            args.append(low)
        if high is not None:
            clauses.append("key < ?")
            args.append(high)
        sql += " WHERE " + " AND ".join(clauses) + " ORDER BY key"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        for key, value in self.db.execute(sql, args):
            yield bytes(key), bytes(value)

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM kv").fetchone()[0])

    def expired(self, before_ms: int) -> list[bytes]:
        """Keys last updated before `before_ms`."""
        rows = self.db.execute("SELECT key FROM kv WHERE updated_ms < ?", (before_ms,))
        return [bytes(key) for (key,) in rows]

    def delete_before(self, before_ms: int) -> None:
        """Drop rows whose time is below `before_ms` (expired windows)."""
        db = self.db
        db.execute("BEGIN")
        db.execute("DELETE FROM kv WHERE updated_ms < ?", (before_ms,))
        db.execute("COMMIT")

    def write(self, changes: Iterable[Change], checkpoint: int | None) -> None:
        """Apply upserts (and deletions, value None) and move the checkpoint, atomically."""
        upserts: list[Change] = []
        deletes: list[tuple[bytes]] = []
        for change in changes:
            if change[1] is None:
                deletes.append((change[0],))
            else:
                upserts.append(change)
        # In key order, each B-tree page is visited once, while it is in the cache: a
        # commit of 25,000 scattered keys into 1.25 million went from 94-100k to 124-135k
        # rows per CPU-second, a restore's batches from 150k to 215-237k. By the key
        # alone: a stable sort (the last change of a key stays last) and a third faster.
        upserts.sort(key=_first)
        deletes.sort()
        db = self.db
        db.execute("BEGIN")
        try:
            whole = 0
            if db.execute("PRAGMA page_count").fetchone()[0] <= MULTI_ROW_MAX_PAGES:
                whole = len(upserts) - len(upserts) % WRITE_ROWS
            if whole:
                flat = list(chain.from_iterable(upserts[:whole]))
                step = 3 * WRITE_ROWS
                db.executemany(
                    self._upsert_many, [flat[i : i + step] for i in range(0, len(flat), step)]
                )
            if whole < len(upserts):
                db.executemany(self._upsert, upserts[whole:])
            if deletes:
                db.executemany("DELETE FROM kv WHERE key=?", deletes)
            if checkpoint is not None:
                db.execute(
                    "INSERT INTO meta(name, value) VALUES('changelog_offset', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                    (checkpoint,),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if upserts:
            self.empty = False
        if self._expiring and upserts:
            latest = max(u[2] for u in upserts)
            if self.latest_row_time is None or latest > self.latest_row_time:
                self.latest_row_time = latest

    def wipe(self) -> None:
        """Forget everything, checkpoint included (before a full replay)."""
        db = self.db
        db.execute("BEGIN")
        db.execute("DELETE FROM kv")
        db.execute("DELETE FROM meta")
        db.execute("COMMIT")
        self.latest_row_time = None
        self.empty = True

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = self._get_cursor = None
        self.empty = False
