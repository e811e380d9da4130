"""Schema versions shared by the ledger backends: newer-than-known is refused."""

from __future__ import annotations

from skyfleet.gateway.ledger.target import LedgerError

SCHEMA_VERSION = 2  # the ledger schema this skyfleet writes; bump with a new migration
VERSION_TABLE = "skyfleet_ledger_schema"


def check_version(found: int, where: str) -> None:
    """Refuse a ledger whose schema a newer skyfleet wrote."""
    if found > SCHEMA_VERSION:
        raise LedgerError(
            f"ledger {where}: schema version {found} is newer than this skyfleet supports "
            f"({SCHEMA_VERSION}); upgrade skyfleet on every replica, or point the ledger at "
            "another database"
        )
