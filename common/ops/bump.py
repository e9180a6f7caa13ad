"""The revision bump of a restore (pure): how far past the snapshot the restored revision starts."""

from __future__ import annotations

from typing import Optional


def bump_for(configured: int, snapshot_revision: int, live_revision: Optional[int]) -> int:
    """How far to bump: the configured amount, more if the live store is already beyond it.

    The restored revision (snapshot + bump) must exceed every revision a client
    may have seen, or watch caches would see revisions go backwards.
    """
    if configured <= 0:
        return 0
    if live_revision is not None and snapshot_revision + configured <= live_revision:
        return live_revision - snapshot_revision + configured
    return configured
