"""etcdguardctl pin, unpin and export.

``pin``/``unpin`` change the vault, so the daemon does them (it serialises
them with retention). ``export`` reads the vault itself, with the config's
backend, credentials and age identity: a snapshot or a node bundle can then
be had back on any host that has the config and the keys, also when the
coordinator daemon (or its host) is gone. Run it as root or as the
coordinator's user, who can read those.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from etcdguard.common.base.durations import format_bytes
from etcdguard.common.base.errors import EXIT_OK, UsageError
from etcdguard.coordinator.ctl.cli import _json_flag, ask, command, emit, load_config


def _pin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="vault id (a sha256 prefix) or 'latest'")
    p.add_argument("--reason", default="pinned by an operator", metavar="TEXT",
                   help="why it is kept, shown in listings (letters, digits, spaces, ._:/()+-; at most 64)")
    _json_flag(p)


@command("pin", "keep a vault snapshot whatever retention says (with a reason)", _pin_args)
def cmd_pin(args: argparse.Namespace) -> int:
    entry = ask(args, "pin", {"id": args.id, "reason": args.reason})
    emit(args, entry, f"pinned {entry['sha256'][:12]} (revision {entry['revision']}, taken {entry['created_at']}): "
                      f"{entry['pinned']}")
    return EXIT_OK


def _unpin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="vault id (a sha256 prefix) or 'latest'")
    _json_flag(p)


@command("unpin", "let retention remove a pinned vault snapshot again", _unpin_args)
def cmd_unpin(args: argparse.Namespace) -> int:
    entry = ask(args, "unpin", {"id": args.id})
    emit(args, entry, f"unpinned {entry['sha256'][:12]}: retention ([vault] keep) applies to it again")
    return EXIT_OK


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="vault id (a sha256 prefix) or 'latest'")
    p.add_argument("--output", type=Path, required=True, metavar="FILE",
                   help="where to write it (replaced atomically; written 0600)")
    p.add_argument("--bundle", action="store_true",
                   help="the node bundle (a tar of the PKI, manifests and kubeadm config) instead of the snapshot")
    p.add_argument("--raw", action="store_true", help="the bytes as stored (still age-encrypted when they are)")
    _json_flag(p)


@command("export", "write a vault snapshot (decrypted, sha256-verified) or its node bundle to a file",
         _export_args)
def cmd_export(args: argparse.Namespace) -> int:
    from etcdguard.coordinator.vault.factory import open_vault

    output: Path = args.output
    if output.is_dir():
        raise UsageError(f"--output {output}: is a directory; give a file name")
    if not output.parent.is_dir():
        raise UsageError(f"--output {output}: directory {output.parent} does not exist")
    vault = open_vault(load_config(args))
    entry = vault.resolve(args.id)
    size = vault.export(entry, output, bundle=args.bundle, raw=args.raw)
    what = "node bundle" if args.bundle else "snapshot"
    state = "as stored" if args.raw else ("decrypted" if (entry.encrypted or args.bundle) else "plain")
    check = "" if args.bundle or args.raw else f", sha256 {entry.sha256} verified"
    emit(args, {"id": entry.sha256, "output": str(output), "bytes": size, "bundle": args.bundle, "raw": args.raw,
                "entry": entry.to_json()},
         f"wrote the {what} of {entry.sha256[:12]} (revision {entry.revision}, from {entry.source_member}) to "
         f"{output}: {format_bytes(size)}, {state}{check}")
    return EXIT_OK

