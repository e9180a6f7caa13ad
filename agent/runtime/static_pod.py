"""The static-pod runtime: park the manifest where the kubelet cannot see it.

The kubelet runs whatever manifest sits in its manifests dir and stops a pod
whose file disappears. Stop moves the manifest into a parking dir under the
agent's state dir (never inside the manifests dir: the kubelet might read it
there) and then waits for the stop proof, because the kubelet stops pods in
its own time. Start moves it back byte-for-byte with mode, owner and mtime.

A move is a rename when both dirs share a filesystem, else copy to a hidden
temp file (the kubelet ignores dot-files) + fsync + rename + unlink, so a crash
leaves the manifest in one place or the other, at worst in both.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional

from etcdguard.agent.runtime.base import RuntimeError_
from etcdguard.agent.runtime.proof import StopProof, wait_proven
from etcdguard.common.base.errors import ConfigError
from etcdguard.common.base.fsutil import atomic_writer, ensure_private_dir, fsync_dir
from etcdguard.common.base.polling import Deadline

log = logging.getLogger(__name__)

PARK_DIR_NAME = "parked-manifests"


def park_dir(state_dir: Path) -> Path:
    """Where manifests are parked while their pod is stopped: ``<state>/parked-manifests``.

    Discovery looks there too, so an interrupted restore still finds the member.
    """
    return Path(state_dir) / PARK_DIR_NAME


def is_within(path: Path, directory: Path) -> bool:
    """Pure-ish: is ``path`` (resolved) ``directory`` or below it?"""
    p, d = Path(os.path.realpath(path)), Path(os.path.realpath(directory))
    return p == d or d in p.parents


def move_preserving(src: Path, dst: Path, force_copy: bool = False) -> None:
    """Move ``src`` to ``dst`` keeping bytes, mode, owner and mtime; durable on return.

    Same filesystem: one rename. Otherwise (or ``force_copy``): copy into a
    hidden temp file next to ``dst``, fsync, rename into place, then unlink ``src``.
    """
    st = os.stat(src)
    if not force_copy and os.stat(dst.parent).st_dev == st.st_dev:
        os.rename(src, dst)
        fsync_dir(dst.parent)
        if src.parent != dst.parent:
            fsync_dir(src.parent)
        return
    data = src.read_bytes()
    with atomic_writer(dst, st.st_mode & 0o7777) as fh:
        fh.write(data)
        fh.flush()
        if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
            os.fchown(fh.fileno(), st.st_uid, st.st_gid)
            os.fchmod(fh.fileno(), st.st_mode & 0o7777)  # chown clears setuid bits; set the mode again
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.unlink(src)
    fsync_dir(src.parent)


class StaticPodService:
    """A kubelet static pod, stopped by parking its manifest."""

    backend = "static-pod"

    def __init__(self, name: str, manifest_path: Path, park_dir: Path, proof: StopProof) -> None:
        self.name = name
        self.manifest_path = Path(manifest_path)
        self.park_dir = Path(park_dir)
        self.proof = proof
        self.last_note: Optional[str] = None
        if is_within(self.park_dir, self.manifest_path.parent):
            raise ConfigError(
                f"{name}: the parking dir {self.park_dir} is inside the kubelet's manifests dir "
                f"{self.manifest_path.parent}; the kubelet could still run a parked manifest. "
                "Use a state dir outside it."
            )

    @property
    def parked_path(self) -> Path:
        return self.park_dir / self.manifest_path.name

    def is_parked(self) -> bool:
        return self.parked_path.exists()

    def is_running(self) -> bool:
        ok, _why = self.proof.check()
        return not ok

    def describe(self) -> str:
        return (
            f"{self.name} (static-pod): stop = move {self.manifest_path} to {self.parked_path} and prove "
            f"{self.proof.describe()}; start = move it back"
        )

    def _note(self, text: str) -> None:
        self.last_note = text
        log.warning("%s: %s", self.name, text)

    def stop(self, timeout: float, grace: Optional[float] = None) -> None:
        """Park the manifest (unless already parked), then wait for the proof (the kubelet's grace applies)."""
        deadline = Deadline(timeout)
        self.last_note = None
        live, parked = self.manifest_path.exists(), self.parked_path.exists()
        if not live and not parked:
            raise RuntimeError_(
                f"{self.name}: no manifest at {self.manifest_path} and none parked at {self.parked_path}; "
                "cannot tell how this pod is run, so nothing was done"
            )
        if live:
            ensure_private_dir(self.park_dir)
            if parked and self.parked_path.read_bytes() != self.manifest_path.read_bytes():
                keep = self.park_dir / f"{self.manifest_path.name}.superseded-{time.strftime('%Y%m%dT%H%M%S')}"
                os.rename(self.parked_path, keep)
                self._note(f"an older, different parked manifest was kept as {keep}")
            try:
                move_preserving(self.manifest_path, self.parked_path)
            except OSError as exc:
                raise RuntimeError_(
                    f"{self.name}: cannot move {self.manifest_path} to {self.parked_path}: {exc.strerror or exc}"
                ) from None
            log.info("%s: parked %s in %s", self.name, self.manifest_path, self.park_dir)
        evidence = wait_proven(self.proof, deadline, f"{self.name} (static pod)")
        log.info("%s stopped: %s", self.name, evidence)

    def start(self, timeout: float) -> None:
        """Put the parked manifest back; a manifest already in place is left alone."""
        self.last_note = None
        live, parked = self.manifest_path.exists(), self.parked_path.exists()
        if live:
            if parked:
                self._note(
                    f"{self.manifest_path} is already in place (put back by someone else); left it and "
                    f"the parked copy {self.parked_path} untouched"
                )
            return
        if not parked:
            raise RuntimeError_(
                f"{self.name}: nothing to start: no manifest at {self.manifest_path} and none parked at "
                f"{self.parked_path}"
            )
        try:
            move_preserving(self.parked_path, self.manifest_path)
        except OSError as exc:
            raise RuntimeError_(
                f"{self.name}: cannot move {self.parked_path} back to {self.manifest_path}: {exc.strerror or exc}"
            ) from None
        log.info("%s: manifest back in %s", self.name, self.manifest_path)
