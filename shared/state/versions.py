"""Stored row formats carry a version, so a newer release can change them and an older one refuses to misread.

Every row the state layer writes in a format of its own holds a property ``v``; a row without one was written
before versions existed and is read as version 1, the format it has always had.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.errors import StoredFormatError

STATE_VERSION = 1  # the version written
READABLE_VERSIONS = (1,)  # a tuple: a damaged row may hold an unhashable version
VERSION = "v"  # the property holding it: short, as packed shards count against the entity size limit


def check_version(table: str, entity: Mapping[str, object]) -> None:
    """Raises StoredFormatError when the row is in a format this release cannot read."""
    version = entity.get(VERSION)
    if version is None:
        return  # written before versions existed: version 1
    if version not in READABLE_VERSIONS:
        row = f"{entity.get('PartitionKey', '?')}/{entity.get('RowKey', '?')}"
        raise StoredFormatError(
            f"table {table} row {row}",
            f"the row is in format version {version!r}, which this version of Consent Bridge cannot read",
            "it was written by a newer Consent Bridge: deploy that version, or delete the row to rebuild it with "
            "a full pass",
        )
