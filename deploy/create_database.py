"""Create the PostgreSQL database of a SQLAlchemy URL if it does not exist yet."""

from __future__ import annotations

import sys

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url


def _name(parsed: URL) -> str:
    if not parsed.database:
        raise ValueError(f"the URL names no database: {parsed!r}")
    return parsed.database


def ensure_database(url: str) -> bool:
    """True when the database was created, False when it was already there."""
    parsed = make_url(url)
    name = _name(parsed)
    admin = parsed.set(drivername="postgresql", database="postgres")
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def drop_database(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(_name(parsed)))
        )


if __name__ == "__main__":
    created = ensure_database(sys.argv[1])
    print(f"database {make_url(sys.argv[1]).database}: {'created' if created else 'exists'}")
