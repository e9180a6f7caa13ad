"""A real S3 API server for tests: moto's standalone ``moto_server`` on a free 127.0.0.1 port.

It is a separate process spoken to over HTTP by the real boto3 client (the
vault's S3 backend with ``endpoint`` and ``path_style``), so the tests cover
the wire, the multipart protocol and the error replies. Production targets
are AWS S3, MinIO or Ceph RGW.

``MotoServer(auth=True)`` makes the server check signatures: it creates an
IAM user with S3 rights and an access key (the first requests, before
authentication starts), so wrong keys are refused as AWS refuses them.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Optional

from .net import free_server_port, wait_until

START_TIMEOUT = 30.0
ANONYMOUS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
# Requests moto lets through unauthenticated with auth=True: create_user, put_user_policy, create_access_key.
SETUP_ACTIONS = 3

_lock = threading.Lock()
_running: list[MotoServer] = []


def _kill_leftovers() -> None:
    with _lock:
        left = list(_running)
    for server in left:
        with contextlib.suppress(OSError):
            server.stop()


atexit.register(_kill_leftovers)


def moto_binary() -> str:
    for candidate in (str(Path(sys.executable).parent / "moto_server"), shutil.which("moto_server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("moto_server not found: install the test extra (pip install -e '.[test]', moto[server])")


def quiet_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """An environment whose boto3 chain finds nothing by itself and never asks an instance metadata service."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/dev/null",
                "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})
    env.update(extra or {})
    return env


class MotoServer:
    """moto_server on 127.0.0.1:<free port>; ``stop()`` ends it (its data is in memory)."""

    def __init__(self, workdir: Path, auth: bool = False) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_server_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "moto.log"
        self.auth = auth
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.access_key: dict[str, str] = dict(ANONYMOUS)

    def start(self) -> MotoServer:
        env = quiet_env({"PYTHONUNBUFFERED": "1"})
        if self.auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_ACTIONS)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([moto_binary(), "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        with _lock:
            _running.append(self)
        wait_until(self._answers, START_TIMEOUT, interval=0.05, what=f"moto_server on {self.endpoint}")
        if self.auth:
            self._make_user()
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {self.proc.returncode}: {self.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _make_user(self) -> None:
        iam = self.client("iam", ANONYMOUS)
        iam.create_user(UserName="etcdguard")
        iam.put_user_policy(UserName="etcdguard", PolicyName="vault", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="etcdguard")["AccessKey"]
        self.access_key = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}

    def client(self, service: str = "s3", keys: Optional[dict[str, str]] = None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}), **(keys or self.access_key))

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def credentials_file(self, path: Path, keys: Optional[dict[str, str]] = None) -> Path:
        k = keys or self.access_key
        path.write_text(f"[default]\naws_access_key_id = {k['aws_access_key_id']}\n"
                        f"aws_secret_access_key = {k['aws_secret_access_key']}\n")
        os.chmod(path, 0o600)
        return path

    def keys_in_bucket(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []) or [])

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        with _lock:
            if self in _running:
                _running.remove(self)


def age_keypair(directory: Path, name: str = "vault") -> tuple[Path, str]:
    """An age identity file (0600) and its recipient, made by age-keygen."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.age"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True, timeout=30)
    os.chmod(path, 0o600)
    recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True,
                               timeout=30).stdout.strip()
    return path, recipient


def synthetic_snapshot(path: Path, size: int, seed: int = 0) -> str:
    """A file that passes etcd's trailer check (body + sha256(body)), written in 1 MiB blocks; its sha256."""
    import hashlib

    body = hashlib.sha256()
    whole = hashlib.sha256()
    block = hashlib.sha256(f"seed-{seed}".encode()).digest() * (1 << 15)   # 1 MiB
    left = max(0, size - 32)
    with open(path, "wb") as fh:
        n = 0
        while left:
            piece = block[: min(left, len(block))]
            piece = n.to_bytes(8, "big") + piece[8:] if len(piece) >= 8 else piece
            fh.write(piece)
            body.update(piece)
            whole.update(piece)
            left -= len(piece)
            n += 1
        trailer = body.digest()
        fh.write(trailer)
        whole.update(trailer)
    return whole.hexdigest()


def random_snapshot(path: Path, size: int) -> str:
    """Like synthetic_snapshot, but incompressible (random bytes): a compressed vault object stays as large
    as the snapshot, for tests and benchmarks of the upload path at full size. Its sha256."""
    import hashlib

    body = hashlib.sha256()
    whole = hashlib.sha256()
    left = max(0, size - 32)
    with open(path, "wb") as fh:
        while left:
            piece = os.urandom(min(left, 1 << 20))
            fh.write(piece)
            body.update(piece)
            whole.update(piece)
            left -= len(piece)
        trailer = body.digest()
        fh.write(trailer)
        whole.update(trailer)
    return whole.hexdigest()
