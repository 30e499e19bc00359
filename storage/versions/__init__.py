"""Signed version vectors for mutable files (issue 5): records, sets, replica store, service."""

from storage.versions.records import (
    dominates,
    file_id_for,
    new_binding,
    record_id,
    sign_grant,
    sign_version,
    writer_id,
)
from storage.versions.store import VersionStore
from storage.versions.vset import Version, VersionSet

__all__ = ["Version", "VersionSet", "VersionStore", "dominates", "file_id_for", "new_binding",
           "record_id", "sign_grant", "sign_version", "writer_id"]
