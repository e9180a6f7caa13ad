"""Opening the vault the configuration describes; every problem found here is a ConfigError (exit 2).

Used by the daemon at start and on reload, and by ``etcdguardctl export``,
which reads the vault itself so that a snapshot can be had back with the
config and the keys alone, also when the coordinator is gone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from etcdguard.common.base import agekeys
from etcdguard.common.base.errors import ConfigError
from etcdguard.coordinator.config import CoordinatorConfig
from etcdguard.coordinator.vault.backends import DirStore, SnapStore
from etcdguard.coordinator.vault.store import FailureHook, Vault
from etcdguard.coordinator.vault.verified import FILE_NAME, ObjectRecords

WORK_DIR = "vault-work"


def work_dir(config: CoordinatorConfig) -> Path:
    """Where plaintext passes through on the coordinator (pulls before encryption, materialized reads)."""
    return config.coordinator.state_dir / WORK_DIR


def open_vault(config: CoordinatorConfig, on_failure: Optional[FailureHook] = None) -> Vault:
    v = config.vault
    where = f"{config.source}: vault"
    if v.encrypt_to or v.age_identity is not None:
        try:
            agekeys.find_age()
        except agekeys.AgeError as exc:
            raise ConfigError(f"{where}.encrypt_to/age_identity: {exc}") from None
    if v.age_identity is not None:
        agekeys.check_identity_file(v.age_identity, f"{where}.age_identity")
        if v.encrypt_to:
            try:
                mine = agekeys.identity_recipients(v.age_identity)
            except agekeys.AgeError as exc:
                raise ConfigError(f"{where}.age_identity: {exc}") from None
            if not set(mine) & set(v.encrypt_to):
                raise ConfigError(
                    f"{where}.age_identity {v.age_identity}: its public key ({', '.join(mine) or 'none'}) is not in "
                    "vault.encrypt_to, so the coordinator could not read back what it writes; add it there")
    store: SnapStore
    if v.backend == "s3":
        from etcdguard.coordinator.vault.s3 import open_s3

        assert v.s3 is not None
        store = open_s3(v.s3, config.source)
    else:
        store = DirStore(v.dir)
    plain_dir = v.backend == "dir" and not v.encrypt_to
    return Vault(store, encrypt_to=v.encrypt_to, identity=v.age_identity,
                 work_dir=None if plain_dir else work_dir(config), on_failure=on_failure,
                 records=ObjectRecords(config.coordinator.state_dir / FILE_NAME),
                 compression="" if v.compression == "none" else v.compression, level=v.compression_level)
