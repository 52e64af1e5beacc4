"""Before a server starts: is the database URL usable as given? Answers without creating
anything, so a mistake is one line naming the path or URL, and nothing is left behind."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from vimark.client.errors import VimarkError

SQLITE_HEADER = b"SQLite format 3\x00"


def displayed(url: str) -> str:
    """The URL as a person may see it: any password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a database URL>"


def check_database_url(url: str) -> None:
    """Raise VimarkError(DATABASE) when `url` is not a database URL vimark can use, or names a
    SQLite file that is not a database or cannot be created or written. A database server that
    does not answer is not an error here: it may come back (the server waits for it)."""
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise _unusable(
            f"--db {url!r} is not a database URL vimark can use ({exc}); "
            "give sqlite:///FILE or postgresql+psycopg://USER@HOST/DB"
        ) from None
    if not parsed.drivername.startswith("sqlite"):
        return
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    folder = path.absolute().parent
    if path.exists():
        if path.is_dir():
            raise _unusable(f"the database {path} is a directory; give --db sqlite:///FILE")
        if not os.access(path, os.R_OK | os.W_OK):
            raise _unusable(f"the database file {path} cannot be read and written by this user; check its mode")
        with path.open("rb") as file:
            head = file.read(len(SQLITE_HEADER))
        if head and head != SQLITE_HEADER:
            raise _unusable(f"{path} is not a SQLite database; give --db sqlite:///FILE of a vimark database")
    elif not folder.is_dir():
        raise _unusable(f"cannot create the database {path}: there is no directory {folder}")
    # SQLite writes its -wal and -shm files (and vimark its writer lock) beside the database.
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _unusable(
            f"cannot write the database {path}: the directory {folder} is not writable; "
            "give --db sqlite:///PATH in a writable place"
        )


def _unusable(message: str) -> VimarkError:
    return VimarkError(message, reason="DATABASE")
