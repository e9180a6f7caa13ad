"""The manual member replacement (etcd's runbook for a member whose data is lost) as an etcdctl script: the
baseline of the replace bench.

As a careful operator scripts it, and as fast as that can be, with the member's etcd already down
and its data gone:

1. ``etcdctl member list`` to find the lost member's id, then ``etcdctl member remove ID``;
2. ``etcdctl member add NAME --peer-urls=URL --learner`` (both retried while etcd answers "unhealthy
   cluster": it changes the membership only while the leader has heard from enough voters for 5 s);
3. start etcd on the member's (empty) data dir with ``--initial-cluster-state=existing`` and the
   initial cluster `member add` printed;
4. wait until it caught up: ``etcdctl endpoint status`` of the learner and the leader until the
   learner's applied raft index is within 1,000 entries of the leader's (etcdguard's own criterion);
5. ``etcdctl member promote ID`` (retried while etcd answers that the learner is not in sync);
6. wait until the member reports itself healthy (``etcdctl endpoint health``).

The clock runs from the first command to the promoted member's health.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

from tests.helpers.etcd import EtcdCluster, EtcdMember, clean_env, run_etcdctl

CATCH_UP_SLACK = 1000
POLL = 0.05


@dataclass(frozen=True)
class ManualReplace:
    total_seconds: float        # remove .. promoted and healthy
    remove_seconds: float
    add_seconds: float
    catch_up_seconds: float     # start .. caught up
    promote_seconds: float      # promote .. healthy
    pid: int                    # the etcd the script started (the caller stops it)

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _ctl(cluster: EtcdCluster, endpoints: list[EtcdMember], *args: str, check: bool = True
         ) -> subprocess.CompletedProcess[str]:
    tls = cluster.tls.etcdctl_args() if cluster.tls is not None else []
    return run_etcdctl(cluster.build, [f"--endpoints={','.join(m.client_url for m in endpoints)}", *tls, *args],
                       check=check)


def _retry(cluster: EtcdCluster, endpoints: list[EtcdMember], *args: str, timeout: float = 120.0
           ) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + timeout
    while True:
        r = _ctl(cluster, endpoints, *args, check=False)
        if r.returncode == 0 or time.monotonic() > deadline:
            if r.returncode != 0:
                raise RuntimeError(f"etcdctl {' '.join(args)}: {r.stderr}")
            return r
        time.sleep(POLL)


def _status(cluster: EtcdCluster, member: EtcdMember) -> Optional[dict[str, Any]]:
    r = _ctl(cluster, [member], "endpoint", "status", "-w", "json", check=False)
    if r.returncode != 0:
        return None
    status: dict[str, Any] = json.loads(r.stdout)[0]["Status"]
    return status


def replace_manually(cluster: EtcdCluster, lost: EtcdMember, timeout: float = 600.0) -> ManualReplace:
    """Replace ``lost`` (its etcd down, its data gone) by the manual procedure; its timings."""
    others = [m for m in cluster.members if m is not lost]
    started = time.perf_counter()
    members = json.loads(_ctl(cluster, others, "member", "list", "-w", "json").stdout)["members"]
    member_id = next(f"{int(m['ID']):x}" for m in members if m.get("name") == lost.name)
    _retry(cluster, others, "member", "remove", member_id)
    removed = time.perf_counter()
    out = _retry(cluster, others, "member", "add", lost.name, f"--peer-urls={lost.peer_url}", "--learner").stdout
    new_id = next(line.split()[1] for line in out.splitlines() if line.startswith("Member "))
    initial = next(line.split("=", 1)[1].strip('"') for line in out.splitlines()
                   if line.startswith("ETCD_INITIAL_CLUSTER="))
    argv = [a for a in lost.command if not a.startswith(("--initial-cluster=", "--initial-cluster-state="))]
    argv += [f"--initial-cluster={initial}", "--initial-cluster-state=existing"]
    with open(lost.log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=lost.dir,
                                env=clean_env(), start_new_session=True)
    added = time.perf_counter()
    deadline = time.monotonic() + timeout
    while True:
        mine = _status(cluster, lost)
        lead_id = int(mine["leader"]) if mine and mine.get("leader") else 0
        leader = next((m for m in others if lead_id and m.member_id() == lead_id), None) if lead_id else None
        theirs = _status(cluster, leader) if leader is not None else None
        if mine and theirs and int(theirs["raftIndex"]) - int(mine.get("raftAppliedIndex") or mine["raftIndex"]) \
                <= CATCH_UP_SLACK:
            break
        if proc.poll() is not None:
            raise RuntimeError(f"{lost.name}'s etcd exited ({proc.returncode}); see {lost.log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{lost.name} did not catch up within {timeout:.0f}s")
        time.sleep(POLL)
    caught_up = time.perf_counter()
    _retry(cluster, others, "member", "promote", new_id)
    _retry(cluster, [lost], "endpoint", "health")
    done = time.perf_counter()
    return ManualReplace(total_seconds=done - started, remove_seconds=removed - started, add_seconds=added - removed,
                         catch_up_seconds=caught_up - added, promote_seconds=done - caught_up, pid=proc.pid)
