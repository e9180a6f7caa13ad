"""The pure parts of pre-staging: which copy a member holds, which older copies go, the rate limit."""

from __future__ import annotations

import pytest
from etcdguard.coordinator.restore.agents import held_name
from etcdguard.coordinator.vault.prestage import RateLimit, Stopped, stale_uploads, upload_id

SHA = "ab" * 32


def test_a_staged_copy_or_a_store_snapshot_of_the_same_sha_and_size_is_held():
    listing = {"snapshots": [{"name": "snap-1.db", "sha256": SHA, "size": 10}],
               "staged": [{"name": "pre-x.db", "upload": "pre-x", "sha256": SHA, "size": 10}]}
    assert held_name(listing, SHA, 10) == "pre-x.db"                     # the staged copy first
    assert held_name({"snapshots": listing["snapshots"]}, SHA, 10) == "snap-1.db"
    assert held_name(listing, SHA, 11) is None                            # same digest, other size: not it
    assert held_name({"staged": [{"name": 3, "sha256": SHA, "size": 10}]}, SHA, 10) is None


def test_only_older_prestaged_uploads_are_stale():
    keep = upload_id(SHA)
    listing = {"staged": [{"upload": keep}, {"upload": "pre-0011223344556677"}, {"upload": "r20261207-abc"},
                          "garbage"]}
    assert stale_uploads(listing, keep) == ["pre-0011223344556677"]      # a restore's own upload is not touched


def test_the_rate_limit_waits_for_what_it_is_ahead_and_stops_when_asked():
    waits: list[float] = []
    limit = RateLimit(1_000_000, lambda: False, lambda s: waits.append(s) or False)
    limit(500_000, 1_000_000)          # half a second's worth at once: it waits about that long
    assert waits and 0.3 < waits[0] <= 0.5
    unlimited = RateLimit(0, lambda: False, lambda s: waits.append(s) or False)
    unlimited(10**9, 10**9)
    assert len(waits) == 1
    with pytest.raises(Stopped):
        RateLimit(0, lambda: True, lambda s: False)(1, 2)
