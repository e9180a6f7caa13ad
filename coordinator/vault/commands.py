"""The vault's side of the daemon: etcdguardctl's pin/unpin, and pulling a node bundle from an agent.

Kept out of daemon.py so the daemon only dispatches: one branch for these
commands, one call after a snapshot is pulled.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from typing import Any, Optional, Protocol, cast

from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import EtcdguardError, SnapshotCorrupt, UsageError
from etcdguard.coordinator.vault.entry import Incoming, VaultEntry
from etcdguard.coordinator.vault.store import Vault

log = logging.getLogger(__name__)

COMMANDS = ("pin", "unpin")
BUNDLE_CHUNK = 1 << 20
MAX_BUNDLE = 256 << 20       # a bundle is certificates and manifests: anything near this is not one
DEFAULT_REASON = "pinned by an operator"


def handle(vault: Vault, cmd: str, args: dict[str, Any]) -> Any:
    """``pin`` {id, reason?} and ``unpin`` {id}: the entry as it is afterwards."""
    ref = args.get("id")
    if not isinstance(ref, str) or not ref:
        raise UsageError(f"{cmd}: give a snapshot id (a sha256 prefix) or 'latest'")
    entry = vault.resolve(ref)
    if cmd == "pin":
        reason = args.get("reason", DEFAULT_REASON)
        if not isinstance(reason, str):
            raise UsageError("pin: 'reason' must be text")
        return vault.pin(entry.sha256, reason).to_json()
    return vault.unpin(entry.sha256).to_json()


class _Requester(Protocol):
    def request(self, op: str, args: Optional[dict[str, Any]] = None, *, timeout: float = 10.0,
                retries: Optional[int] = None, data: Optional[bytes] = None) -> tuple[Any, Optional[memoryview]]: ...

    def close(self) -> None: ...


def pull_bundle(vault: Vault, link: Any, incoming: Incoming, entry: VaultEntry, timeout: float = 30.0) -> VaultEntry:
    """Copy the agent's encrypted node bundle of ``incoming`` beside ``entry``; a failure is logged, not raised.

    The snapshot is already safe in the vault; a missing bundle shows in
    ``etcdguardctl snapshots`` and is tried again with the next snapshot.
    """
    client = cast(_Requester, link)
    temp = fsutil.temp_path(vault.work_dir, "bundle")
    try:
        fsutil.ensure_private_dir(vault.work_dir)
        _fetch(client, incoming, temp, timeout)
        return vault.add_bundle(entry, temp)
    except (EtcdguardError, OSError) as exc:
        log.warning("vault: the node bundle of %s from member %s was not copied: %s", incoming.original_name,
                    incoming.source_member, exc)
        return entry
    finally:
        client.close()
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _fetch(client: _Requester, incoming: Incoming, dest: Any, timeout: float) -> None:
    digest = hashlib.sha256()
    offset, total, expected = 0, None, None
    with fsutil.atomic_writer(dest) as out:
        while total is None or offset < total:
            reply, data = client.request("bundle.fetch", {"name": incoming.original_name, "offset": offset,
                                                          "size": BUNDLE_CHUNK}, timeout=timeout)
            result = reply.raise_for_error()
            total, expected = int(result["total"]), str(result["sha256"])
            if total > MAX_BUNDLE:
                raise UsageError(f"refused a {total}-byte node bundle (more than {MAX_BUNDLE}): not a bundle")
            chunk = bytes(data or b"")
            if int(result["offset"]) != offset or len(chunk) != int(result["size"]):
                raise SnapshotCorrupt(f"bundle of {incoming.original_name}: chunk at {offset} came back malformed")
            out.write(chunk)
            digest.update(chunk)
            offset += len(chunk)
            if result.get("eof"):
                break
        if offset != total or digest.hexdigest() != expected:
            raise SnapshotCorrupt(f"bundle of {incoming.original_name}: received {offset} of {total} bytes "
                                  f"with sha256 {digest.hexdigest()[:16]}, the agent said {str(expected)[:16]}")
