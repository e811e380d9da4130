"""Where the ledger lives: a SQLite file or a PostgreSQL URL (`ledger.path` / `ledger.url`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from skyfleet.errors import SkyfleetError

_PG = re.compile(r"^postgres(ql)?://", re.IGNORECASE)
_SQLITE = "sqlite:///"


class LedgerError(SkyfleetError):
    """The ledger database cannot be opened, migrated or written (names the masked URL)."""


def mask_url(url: str) -> str:
    """The URL with its password replaced by `***` (safe to log and print)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host += f":{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True, slots=True)
class LedgerTarget:
    """A parsed ledger location."""

    kind: Literal["sqlite", "postgres"]
    location: str  # the file path (sqlite) or the full URL (postgres)

    @property
    def shown(self) -> str:
        """The location as it may appear in logs and errors."""
        return mask_url(self.location) if self.kind == "postgres" else self.location

    @property
    def path(self) -> Path:
        """The SQLite file."""
        if self.kind != "sqlite":
            raise ValueError(f"{self.shown} is not a SQLite ledger")
        return Path(self.location)


def is_postgres_url(text: str) -> bool:
    """`postgresql://…` or `postgres://…`."""
    return bool(_PG.match(text))


def parse_target(text: str | Path) -> LedgerTarget:
    """A file path, `sqlite:///path` or `postgresql://user:pw@host:port/db`."""
    s = str(text)
    if is_postgres_url(s):
        return LedgerTarget("postgres", s)
    if s.startswith(_SQLITE) and len(s) > len(_SQLITE):
        return LedgerTarget("sqlite", s[len(_SQLITE) :])  # sqlite:////abs, sqlite:///rel
    if "://" in s:
        scheme = s.split("://", 1)[0]
        raise LedgerError(
            f"ledger {s.split('@')[-1]!r}: unknown scheme {scheme!r}; expected a file path, "
            "sqlite:///path/to/usage.sqlite or postgresql://user:password@host:5432/db"
        )
    return LedgerTarget("sqlite", s)
