"""What `etcdguard-agent snapshot` imports: only what the command runs (a one-shot command is timed
against etcdctl, and every module is start-up time). No timing here: only which modules load."""

from __future__ import annotations

import json
import subprocess
import sys

from etcdguard.agent import cli, config


def test_the_cli_default_config_path_is_the_config_modules() -> None:
    assert cli.DEFAULT_CONFIG_PATH == config.DEFAULT_CONFIG_PATH


def test_the_snapshot_path_needs_neither_python_etcd3_nor_protobuf_nor_the_restore_machinery() -> None:
    code = ("import json, sys\n"
            "from etcdguard.agent import cli\n"
            "cli._load_extensions()\n"
            "from etcdguard.agent.snapshots import take\n"
            "from etcdguard.common.etcd import client\n"
            "from etcdguard.common.snapshot import tools\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    assert "grpc" in loaded
    for heavy in ("etcd3", "google.protobuf", "yaml", "prometheus_client", "zmq", "etcdguard.agent.config",
                  "etcdguard.agent.restore.steps", "etcdguard.agent.runtime.factory"):
        assert heavy not in loaded, heavy
