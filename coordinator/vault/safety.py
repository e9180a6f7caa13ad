"""The pre-restore safety snapshot: the live cluster into the vault, pinned, before a restore touches it.

A restore's preflight asks for it while the cluster still answers; if the
restore goes wrong after clients have seen the restored data, the forward
rollback restores from this snapshot. It is an ordinary backup (take on the
member ``choose_backup_member`` picks, pull into the vault) that runs inside
the restore, which already holds the daemon's slot, and is pinned so that
retention never removes it. Its entry's kind is ``pre-restore``, so that
``latest`` never names it (entry.resolve_ref): it is chosen by id.
"""

from __future__ import annotations

from etcdguard.coordinator.vault.entry import PRE_RESTORE
from etcdguard.coordinator.vault.policy import choose_backup_member
from etcdguard.coordinator.vault.pulls import Emit, VaultPulls
from etcdguard.coordinator.vault.store import Vault


def safety_snapshot(pulls: VaultPulls, vault: Vault, op: str, emit: Emit) -> str:
    """Take and pull a snapshot of the live cluster, pin it for ``op``; its sha256."""
    label = pulls.slot.doing   # the restore's; the pull says what it does while it runs
    try:
        view, why = choose_backup_member(pulls.survey(), None)
        emit({"message": f"pre-restore safety snapshot on {why}", "member": view.name})
        meta = pulls.take(view.name, emit)
        entry, _ = pulls.pull(view.name, meta, emit, PRE_RESTORE)
    finally:
        if label is not None:
            pulls.slot.update(label)
    vault.pin(entry.sha256, f"pre-restore {op}")
    emit({"message": f"pre-restore snapshot {entry.sha256[:12]} (revision {entry.revision}) is in the vault, "
                     "pinned", "member": view.name})
    return entry.sha256
