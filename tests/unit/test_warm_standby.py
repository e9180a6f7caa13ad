"""Warm standby's pure decisions: the bump a warm copy gets, when a plan can adopt it, and which members
hold it (coordinator/restore/warm.py)."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from etcdguard.coordinator.restore.plan import PlanOptions
from etcdguard.coordinator.restore.warm import (
    WarmChoice,
    WarmState,
    adopt_in_plan,
    usable_bump,
    warm_bump,
    warm_initial_cluster,
)

from tests.unit.test_cluster_plan import NAMES, SHA, SNAP, plan, views

CLUSTER = ",".join(f"{n}=https://10.0.0.{i + 1}:2380" for i, n in enumerate(NAMES))


def listing(choice: WarmChoice, **over: Any) -> dict[str, dict[str, Any]]:
    """Every member's snapshot.list reply holding ``choice`` restored ahead (``over`` changes fields)."""
    return {n: {"warm": [{"sha256": choice.sha256, "name": n, "initial_cluster": choice.initial_cluster,
                          "token": choice.token, "peer_url": f"https://10.0.0.{i + 1}:2380",
                          "bump_revision": choice.bump_revision, "wal": False, **over}]}
            for i, n in enumerate(NAMES)}


def test_a_new_warm_copy_gets_the_bump_needed_or_headroom_once_the_live_store_is_past_it():
    assert warm_bump(1_000, 1_000) == 1_000
    assert warm_bump(5_000, 1_000) == 7_000


def test_a_plan_takes_the_warm_bump_when_it_is_at_least_the_needed_one_and_adopts_the_copy():
    choice = WarmChoice(SHA, "etcdguard-warm-x", CLUSTER, 1_000_000_000 + 500)
    options = PlanOptions(bump_at_least=usable_bump(choice, SHA))
    p = plan(views(), options=options)
    assert p.bump_revision == choice.bump_revision
    adopted = adopt_in_plan(p, choice, listing(choice))
    assert adopted.token == "etcdguard-warm-x" and adopted.warm == NAMES


def test_a_plan_needing_more_bump_than_the_warm_copy_has_does_not_adopt_it():
    choice = WarmChoice(SHA, "etcdguard-warm-x", CLUSTER, 1_000)
    far = views(m1={"etcd": {"revision": SNAP.revision + 5_000}})
    p = plan(far, options=PlanOptions(bump_revision=1_000, bump_at_least=usable_bump(choice, SHA)))
    assert p.bump_revision == 6_000
    assert adopt_in_plan(p, choice, listing(choice)) is p


def test_only_members_holding_exactly_the_planned_copy_count_and_a_spent_token_is_never_reused():
    choice = WarmChoice(SHA, "etcdguard-warm-x", CLUSTER, 1_000_000_000)
    p = plan(views())
    partial = listing(choice)
    partial["m2"] = listing(choice, peer_url="https://10.9.9.9:2380")["m2"]    # restored for another URL
    partial["m3"] = listing(choice, bump_revision=5)["m3"]
    assert adopt_in_plan(p, choice, partial).warm == ("m1",)
    assert adopt_in_plan(p, replace(choice, initial_cluster="m1=https://x:2380"), listing(choice)) is p
    assert adopt_in_plan(p, replace(choice, sha256="cd" * 32), listing(choice)) is p
    spent = replace(choice, consumed_by="r-earlier")
    assert usable_bump(spent, SHA) == 0 and adopt_in_plan(p, spent, listing(choice)) is p


def test_the_state_keeps_a_choice_while_it_fits_and_makes_a_new_token_when_not(tmp_path: Path):
    state = WarmState(tmp_path / "state")
    first = state.choose(SHA, CLUSTER, 1_000, 1_000)
    assert state.read() == first and first.bump_revision == 1_000
    assert state.choose(SHA, CLUSTER, 900, 1_000) == first                 # needs less: still fits
    grown = state.choose(SHA, CLUSTER, 1_500, 1_000)                        # the live store moved past it
    assert grown.token != first.token and grown.bump_revision == 3_500
    state.consumed(grown.token, "r-1")
    assert state.read() == replace(grown, consumed_by="r-1")
    after = state.choose(SHA, CLUSTER, 1_500, 1_000)
    assert after.token != grown.token and after.consumed_by is None
    assert asdict(state.read() or first) == asdict(after)


def test_the_initial_cluster_is_unknown_while_a_peer_url_is():
    assert warm_initial_cluster(["m1", "m2"], {"m1": "https://a:2380", "m2": "https://b:2380"}) == \
        "m1=https://a:2380,m2=https://b:2380"
    assert warm_initial_cluster(["m1", "m2"], {"m1": "https://a:2380", "m2": None}) is None
