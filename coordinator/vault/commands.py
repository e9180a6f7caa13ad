"""etcdguardctl's pin and unpin, on the vault.

Kept out of daemon.py so the daemon only dispatches: one branch for these
commands.
"""

from __future__ import annotations

from typing import Any

from etcdguard.common.base.errors import UsageError
from etcdguard.coordinator.vault.store import Vault

COMMANDS = ("pin", "unpin")
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

