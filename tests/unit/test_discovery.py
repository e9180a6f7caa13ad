import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

import pytest
from etcdguard.agent.config import AgentConfig, parse_agent_config
from etcdguard.agent.discovery.discover import discover
from etcdguard.agent.discovery.found import Found, absolute_only, config_file_settings, env_settings
from etcdguard.agent.discovery.manifests import host_path
from etcdguard.agent.discovery.member import ClientTLS
from etcdguard.agent.discovery.systemd_unit import (
    etcd_command,
    expand_specifiers,
    parse_env_file,
    parse_unit,
    read_service,
    split_exec,
)
from etcdguard.common.base.errors import DiscoveryError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
KUBEADM = FIXTURES / "kubeadm"
SYSTEMD = FIXTURES / "systemd"
MANIFESTS = "/etc/kubernetes/manifests"
PKI = "/etc/kubernetes/pki/etcd"


def config(**etcd: Any) -> AgentConfig:
    data: dict[str, Any] = {"etcd": etcd} if etcd else {}
    return parse_agent_config(data, "agent.toml")


def put(root: Path, path: str, content: str = "") -> Path:
    """Write a file at an absolute node path inside the fake root."""
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    return target


def fixture(path: Path, **replace: str) -> str:
    text = path.read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def kubeadm_root(root: Path, etcd_yaml: Optional[str] = None, apiserver: bool = False,
                 healthcheck: bool = False) -> Path:
    put(root, f"{MANIFESTS}/etcd.yaml", etcd_yaml if etcd_yaml is not None else (KUBEADM / "etcd.yaml").read_text())
    if apiserver:
        put(root, f"{MANIFESTS}/kube-apiserver.yaml", (KUBEADM / "kube-apiserver.yaml").read_text())
    if healthcheck:
        put(root, f"{PKI}/healthcheck-client.crt")
        put(root, f"{PKI}/healthcheck-client.key")
    return root


def debian_root(root: Path, default_etcd: Optional[str] = None, dropin: bool = True) -> Path:
    put(root, "/lib/systemd/system/etcd.service", (SYSTEMD / "etcd.service").read_text())
    put(root, "/etc/default/etcd", default_etcd if default_etcd is not None else (SYSTEMD / "default-etcd").read_text())
    if dropin:
        put(root, "/etc/systemd/system/etcd.service.d/override.conf",
            (SYSTEMD / "etcd.service.d" / "override.conf").read_text())
    return root


def assert_real_paths(member: Any, root: Path) -> None:
    """Every path in the result is a node path: absolute and without the fake root."""
    for value in json.dumps(member.to_json()).split('"'):
        assert str(root) not in value


# -- static pod ---------------------------------------------------------------------


def test_kubeadm_static_pod_with_healthcheck_cert(tmp_path):
    m = discover(config(), kubeadm_root(tmp_path, apiserver=True, healthcheck=True))
    assert m.runtime == "static-pod"
    assert m.manifest == Path(f"{MANIFESTS}/etcd.yaml")
    assert m.name == "cp1"
    assert m.data_dir == Path("/var/lib/etcd")
    assert m.endpoints == ("https://127.0.0.1:2379", "https://192.168.56.10:2379")
    assert m.peer_url == "https://192.168.56.10:2380"
    assert m.initial_cluster == "cp1=https://192.168.56.10:2380"
    assert m.image == "registry.k8s.io/etcd:3.5.15-0"
    assert m.tls == ClientTLS(
        cacert=Path(f"{PKI}/ca.crt"),
        cert=Path(f"{PKI}/healthcheck-client.crt"),
        key=Path(f"{PKI}/healthcheck-client.key"),
    )
    assert m.peer_tls == ClientTLS(Path(f"{PKI}/ca.crt"), Path(f"{PKI}/peer.crt"), Path(f"{PKI}/peer.key"))
    src = dict(m.sources)
    manifest = f"manifest:{MANIFESTS}/etcd.yaml"
    assert src["runtime"] == src["name"] == src["data_dir"] == src["endpoints"] == manifest
    assert src["tls.cacert"] == manifest
    assert src["tls.cert"] == src["tls.key"] == f"kubeadm:{PKI}/healthcheck-client.crt"
    assert_real_paths(m, tmp_path)


def test_kubeadm_without_healthcheck_uses_the_apiserver_etcd_client_cert(tmp_path):
    m = discover(config(), kubeadm_root(tmp_path, apiserver=True))
    assert m.tls == ClientTLS(
        cacert=Path(f"{PKI}/ca.crt"),
        cert=Path("/etc/kubernetes/pki/apiserver-etcd-client.crt"),
        key=Path("/etc/kubernetes/pki/apiserver-etcd-client.key"),
    )
    assert dict(m.sources)["tls.cert"] == f"manifest:{MANIFESTS}/kube-apiserver.yaml"


def test_manifest_with_anchors_flow_sequence_block_scalars_and_tags_reads_as_the_plain_one(tmp_path):
    plain = discover(config(), kubeadm_root(tmp_path / "plain", apiserver=True, healthcheck=True))
    fancy_root = kubeadm_root(tmp_path / "fancy", (KUBEADM / "etcd-anchors-flow.yaml").read_text(), apiserver=True,
                              healthcheck=True)
    fancy = discover(config(), fancy_root)
    assert fancy == plain
    assert fancy.data_dir == Path("/var/lib/etcd")  # through the *data alias of the volume's hostPath
    assert fancy.image == "registry.k8s.io/etcd:3.5.15-0"  # a folded block scalar


KUBEADM_134 = KUBEADM / "etcd-1.34.yaml"   # kubeadm 1.34's manifest for etcd 3.6: 3.6 flag names, feature gates


def test_kubeadm_1_34_manifest_for_etcd_3_6(tmp_path):
    m = discover(config(), kubeadm_root(tmp_path, KUBEADM_134.read_text(), apiserver=True, healthcheck=True))
    assert m.runtime == "static-pod"
    assert m.manifest == Path(f"{MANIFESTS}/etcd.yaml")
    assert m.name == "cp2"
    assert m.data_dir == Path("/var/lib/etcd")
    assert m.wal_dir is None
    assert m.endpoints == ("https://127.0.0.1:2379", "https://10.0.0.12:2379")
    assert m.peer_url == "https://10.0.0.12:2380"
    assert m.initial_cluster == "cp2=https://10.0.0.12:2380"
    assert m.image == "registry.k8s.io/etcd:3.6.4-0"
    assert m.tls == ClientTLS(Path(f"{PKI}/ca.crt"), Path(f"{PKI}/healthcheck-client.crt"),
                              Path(f"{PKI}/healthcheck-client.key"))
    assert m.peer_tls == ClientTLS(Path(f"{PKI}/ca.crt"), Path(f"{PKI}/peer.crt"), Path(f"{PKI}/peer.key"))
    assert m.quota_backend_bytes is None
    manifest = f"manifest:{MANIFESTS}/etcd.yaml"
    src = dict(m.sources)
    assert src["name"] == src["data_dir"] == src["endpoints"] == src["peer_url"] == src["tls.cacert"] == manifest
    assert_real_paths(m, tmp_path)
    # Without the healthcheck pair: kube-apiserver's etcd client certificate, as with 3.5.
    without = discover(config(), kubeadm_root(tmp_path / "api", KUBEADM_134.read_text(), apiserver=True))
    assert without.tls.cert == Path("/etc/kubernetes/pki/apiserver-etcd-client.crt")


def test_the_3_5_shape_of_the_same_manifest_reads_the_same(tmp_path):
    """kubeadm before 1.34 (etcd 3.5) wrote --experimental-* flags where 3.6 has their new names."""
    v35 = fixture(KUBEADM_134, **{
        "--feature-gates=InitialCorruptCheck=true": "--experimental-initial-corrupt-check=true",
        "--watch-progress-notify-interval=5s": "--experimental-watch-progress-notify-interval=5s",
        "etcd:3.6.4-0": "etcd:3.5.24-0",
    })
    new = discover(config(), kubeadm_root(tmp_path / "new", KUBEADM_134.read_text(), healthcheck=True))
    old = discover(config(), kubeadm_root(tmp_path / "old", v35, healthcheck=True))
    assert old == dataclasses.replace(new, image="registry.k8s.io/etcd:3.5.24-0")


def test_flags_discovery_does_not_know_are_ignored(tmp_path):
    """Flags written without a value (3.6's new booleans, a later release's flags, typos) never swallow the
    next flag: --memory-mlock before --name is a boolean, not the name's owner."""
    unknown = fixture(KUBEADM_134, **{
        "    - --name=cp2\n": "    - --enable-distributed-tracing\n    - --discovery-insecure-transport\n"
                             "    - --memory-mlock\n    - --name=cp2\n",
        "    - --data-dir=/var/lib/etcd\n": "    - --some-flag-of-etcd-3.8\n    - --a-future-setting\n    - '7'\n"
                                          "    - --data-dir=/var/lib/etcd\n",
        "    - --cert-file=": "    - --feature-gates=InitialCorruptCheck=true,CompactHashCheck=true\n"
                          "    - --no-such-flag=true\n    - --cert-file=",
    })
    plain = discover(config(), kubeadm_root(tmp_path / "plain", KUBEADM_134.read_text(), healthcheck=True))
    assert discover(config(), kubeadm_root(tmp_path / "unknown", unknown, healthcheck=True)) == plain


def test_apiserver_sidecar_listed_first_does_not_lend_its_client_cert(tmp_path):
    kubeadm_root(tmp_path)
    put(tmp_path, f"{MANIFESTS}/kube-apiserver.yaml", (KUBEADM / "kube-apiserver-sidecar.yaml").read_text())
    m = discover(config(), tmp_path)
    assert m.tls.cert == Path("/etc/kubernetes/pki/apiserver-etcd-client.crt")
    assert m.tls.key == Path("/etc/kubernetes/pki/apiserver-etcd-client.key")


def test_duplicate_key_in_a_manifest_is_refused_naming_file_and_lines(tmp_path):
    text = fixture(KUBEADM / "etcd.yaml", **{"    image: registry.k8s.io/etcd:3.5.15-0\n":
                                             "    image: registry.k8s.io/etcd:3.5.15-0\n    image: etcd:evil\n"})
    first = next(i for i, ln in enumerate(text.splitlines(), 1) if "image: registry" in ln)
    kubeadm_root(tmp_path, text)
    with pytest.raises(DiscoveryError, match=rf"{MANIFESTS}/etcd\.yaml is not valid YAML \(line {first + 1}, "
                                             rf"column 5: duplicate key 'image' \(first at line {first}\)\)"):
        discover(config(), tmp_path)


def test_unknown_tag_is_refused(tmp_path):
    kubeadm_root(tmp_path, "apiVersion: v1\nkind: !Pod Pod\n")
    with pytest.raises(DiscoveryError, match=r"etcd\.yaml is not valid YAML \(line 2, column 7: .*'!Pod'"):
        discover(config(), tmp_path)


def test_data_dir_value_that_starts_with_a_dash_is_the_value(tmp_path):
    # Go's flag package: a flag that takes a value takes the next word, whatever it looks like
    cmd = ["etcd", "--name", "m1", "--data-dir", "-weird"]
    with pytest.raises(DiscoveryError, match=r"--data-dir=-weird .*relative"):
        discover(config(start_command=cmd, pid_file="/run/e.pid"), tmp_path)
    m = discover(config(start_command=["etcd", "-name=m1", "-data-dir", "/var/lib/-weird"], pid_file="/run/e.pid"),
                 tmp_path)
    assert (m.name, m.data_dir) == ("m1", Path("/var/lib/-weird"))


@pytest.mark.parametrize(("command", "message"), [
    (["etcd", "--name", "m1", "--data-dir", "/d", "stray"], "'stray' is not a valid flag"),
    (["etcd", "--data-dir", "/d", "--name"], "flag needs an argument: -name"),
    (["etcd", "--name=m1", "--data-dir=/d", "--client-cert-auth=yes"], 'invalid boolean value "yes"'),
])
def test_command_line_etcd_would_refuse_is_a_discovery_error(tmp_path, command, message):
    with pytest.raises(DiscoveryError, match=rf"etcd\.start_command runs etcd with a command line etcd refuses: "
                                             rf"{message}.*fix etcd\.start_command in agent\.toml"):
        discover(config(start_command=command, pid_file="/run/e.pid"), tmp_path)


@pytest.mark.parametrize(("cluster", "why"), [
    ("m1=http://10.0.0.1:2380,", "entry 2 is empty"),
    ("m1=http://10.0.0.1:2380,m2", "entry 2 'm2' is not name=peer-URL"),
    ("m1=http://10.0.0.1:2380,m2=http://10.0.0.1:2380", "peer URL http://10.0.0.1:2380 appears more than once"),
])
def test_malformed_initial_cluster_is_refused_naming_where_it_is_set(tmp_path, cluster, why):
    cmd = ["etcd", "--name", "m1", "--data-dir", "/d", f"--initial-cluster={cluster}"]
    with pytest.raises(DiscoveryError) as info:
        discover(config(start_command=cmd, pid_file="/run/e.pid"), tmp_path)
    message = str(info.value)
    assert message.startswith(f"etcd.start_command: --initial-cluster={cluster} (from start_command): ")
    assert why in message and message.endswith("; fix it there")
    two_urls = "m1=http://10.0.0.1:2380,m1=http://m1.example:2380"   # one member, two peer URLs
    cmd[-1] = f"--initial-cluster={two_urls}"
    assert discover(config(start_command=cmd, pid_file="/run/e.pid"), tmp_path).initial_cluster == two_urls


def test_manifest_command_line_etcd_would_refuse_names_the_manifest(tmp_path):
    text = fixture(KUBEADM / "etcd.yaml", **{"    - --data-dir=/var/lib/etcd\n": "    - --data-dir\n"})
    text = text.replace("    - --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt\n", "")
    text = text.replace("    image: registry", "    - --trusted-ca-file\n    image: registry")
    kubeadm_root(tmp_path, text)
    with pytest.raises(DiscoveryError, match=rf"{MANIFESTS}/etcd\.yaml: flag needs an argument: -trusted-ca-file"):
        discover(config(), tmp_path)


def test_wildcard_client_urls_map_to_loopback_of_the_same_family(tmp_path):
    cmd = ["etcd", "--name", "m1", "--data-dir", "/d",
           "--listen-client-urls", "http://[::]:2379,http://0.0.0.0:12379,http://[fd00::5]:2379",
           "--advertise-client-urls", "http://[fd00::5]:2379"]
    m = discover(config(start_command=cmd, pid_file="/run/e.pid"), tmp_path)
    assert m.endpoints == ("http://[::1]:2379", "http://127.0.0.1:12379", "http://[fd00::5]:2379")


def test_kubeadm_without_client_certs_falls_back_to_the_server_cert(tmp_path):
    m = discover(config(), kubeadm_root(tmp_path))
    assert m.tls.cert == Path(f"{PKI}/server.crt")
    assert m.tls.key == Path(f"{PKI}/server.key")
    assert m.tls.cacert == Path(f"{PKI}/ca.crt")
    assert "fallback" in dict(m.sources)["tls.cert"]


def test_configured_apiserver_manifest_is_used_for_the_client_cert(tmp_path):
    kubeadm_root(tmp_path)
    put(tmp_path, "/srv/parked/kube-apiserver.yaml", (KUBEADM / "kube-apiserver.yaml").read_text())
    cfg = parse_agent_config({"apiserver": {"manifest": "/srv/parked/kube-apiserver.yaml"}}, "agent.toml")
    m = discover(cfg, tmp_path)
    assert m.tls.cert == Path("/etc/kubernetes/pki/apiserver-etcd-client.crt")


def test_kubeadm_non_identity_host_paths(tmp_path):
    # The CKA-style restore: data in another host dir, and certificates kept elsewhere too.
    text = fixture(
        KUBEADM / "etcd.yaml",
        **{
            "      path: /var/lib/etcd\n": "      path: /var/lib/etcd-from-backup\n",
            "      path: /etc/kubernetes/pki/etcd\n": "      path: /srv/pki/etcd\n",
        },
    )
    kubeadm_root(tmp_path, text)
    put(tmp_path, "/srv/pki/etcd/healthcheck-client.crt")
    put(tmp_path, "/srv/pki/etcd/healthcheck-client.key")
    # a healthcheck pair at the container path must not be picked: it is not what etcd's CA dir is
    put(tmp_path, f"{PKI}/healthcheck-client.crt")
    m = discover(config(), tmp_path)
    assert m.data_dir == Path("/var/lib/etcd-from-backup")
    assert m.tls == ClientTLS(
        cacert=Path("/srv/pki/etcd/ca.crt"),
        cert=Path("/srv/pki/etcd/healthcheck-client.crt"),
        key=Path("/srv/pki/etcd/healthcheck-client.key"),
    )
    assert m.peer_tls.cert == Path("/srv/pki/etcd/peer.crt")


def test_host_path_longest_mount_wins_and_subpath():
    pod = {"spec": {"volumes": [
        {"name": "varlib", "hostPath": {"path": "/data/var-lib"}},
        {"name": "etcd", "hostPath": {"path": "/mnt/etcd"}},
        {"name": "certs", "hostPath": {"path": "/srv/certs"}},
        {"name": "scratch", "emptyDir": {}},
    ]}}
    container = {"volumeMounts": [
        {"name": "varlib", "mountPath": "/var/lib"},
        {"name": "etcd", "mountPath": "/var/lib/etcd/"},
        {"name": "certs", "mountPath": "/pki", "subPath": "etcd"},
        {"name": "scratch", "mountPath": "/scratch"},
    ]}
    assert host_path(pod, container, "/var/lib/etcd/member-data") == "/mnt/etcd/member-data"
    assert host_path(pod, container, "/var/lib/etcd") == "/mnt/etcd"
    assert host_path(pod, container, "/var/lib/etcd2") == "/data/var-lib/etcd2"
    assert host_path(pod, container, "/pki/ca.crt") == "/srv/certs/etcd/ca.crt"
    with pytest.raises(LookupError, match="not a hostPath"):
        host_path(pod, container, "/scratch/x")
    with pytest.raises(LookupError, match="inside the container"):
        host_path(pod, container, "/opt/etcd")
    with pytest.raises(LookupError, match="relative"):
        host_path(pod, container, "data")


def test_container_found_by_command_and_args_flags_and_env(tmp_path):
    manifest = {
        "apiVersion": "v1", "kind": "Pod",
        "spec": {
            "containers": [
                {"name": "sidecar", "image": "busybox", "command": ["sleep", "inf"]},
                {
                    "name": "db", "image": "quay.io/coreos/etcd:v3.5.16",
                    "command": ["/usr/local/bin/etcd"],
                    "args": ["--name", "m9", "--data-dir", "/data", "--client-cert-auth",
                             "--listen-client-urls=http://0.0.0.0:2379"],
                    "env": [{"name": "ETCD_NAME", "value": "from-env"},
                            {"name": "ETCD_INITIAL_CLUSTER", "value": "m9=http://10.1.1.9:2380"},
                            {"name": "ETCD_DATA_DIR", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
                    "volumeMounts": [{"name": "d", "mountPath": "/data"}],
                },
            ],
            "volumes": [{"name": "d", "hostPath": {"path": "/var/lib/etcd-m9"}}],
        },
    }
    put(tmp_path, f"{MANIFESTS}/etcd.yaml", json.dumps(manifest))  # JSON manifests are valid too
    m = discover(config(), tmp_path)
    assert (m.name, m.data_dir, m.image) == ("m9", Path("/var/lib/etcd-m9"), "quay.io/coreos/etcd:v3.5.16")
    assert m.initial_cluster == "m9=http://10.1.1.9:2380"
    assert m.endpoints == ("http://127.0.0.1:2379",)
    assert m.tls == ClientTLS()


# -- systemd ------------------------------------------------------------------------


def test_systemd_unit_with_environment_file_and_dropin(tmp_path):
    m = discover(config(), debian_root(tmp_path), hostname="host-x")
    assert m.runtime == "systemd"
    assert m.unit == "etcd.service"
    assert m.manifest is None and m.image is None
    assert m.name == "node-a"  # /etc/default/etcd overrides the unit's ETCD_NAME=%H
    assert m.data_dir == Path("/var/lib/etcd/default")  # --data-dir ${ETCD_DATA_DIR} in the drop-in
    assert m.endpoints == ("https://127.0.0.1:2379", "https://10.0.0.11:2379")
    assert m.peer_url == "https://10.0.0.11:2380"
    assert m.initial_cluster == (
        "node-a=https://10.0.0.11:2380,node-b=https://10.0.0.12:2380,node-c=https://10.0.0.13:2380"
    )
    assert m.tls == ClientTLS(Path("/etc/etcd/pki/ca.crt"), Path("/etc/etcd/pki/server.crt"),
                              Path("/etc/etcd/pki/server.key"))
    assert m.peer_tls.key == Path("/etc/etcd/pki/peer.key")
    src = dict(m.sources)
    assert src["runtime"] == "unit:/lib/systemd/system/etcd.service"
    assert src["name"] == "env:/etc/default/etcd"
    assert src["data_dir"] == "unit:/lib/systemd/system/etcd.service"  # where ETCD_DATA_DIR is set
    assert src["endpoints"] == "env:/etc/default/etcd"
    assert "fallback" in src["tls.cert"]
    assert_real_paths(m, tmp_path)


def test_systemd_hostname_specifier_when_nothing_overrides_the_name(tmp_path):
    debian_root(tmp_path, default_etcd="# all defaults\n", dropin=False)
    m = discover(config(), tmp_path, hostname="cp-7")
    assert m.name == "cp-7"  # Environment=ETCD_NAME=%H
    assert m.data_dir == Path("/var/lib/etcd/default")
    assert m.endpoints == ("http://127.0.0.1:2379",)
    assert dict(m.sources)["endpoints"] == "default"
    assert m.tls == ClientTLS()


def test_flags_win_over_environment(tmp_path):
    env = (
        'ETCD_NAME=from-env\nETCD_DATA_DIR=/var/lib/etcd/from-env\n'
        'ETCD_LISTEN_CLIENT_URLS=http://10.9.9.9:2379\n'
        'DAEMON_ARGS="--data-dir /srv/etcd-flag --listen-client-urls=http://127.0.0.1:12379"\n'
    )
    debian_root(tmp_path, default_etcd=env, dropin=False)
    put(tmp_path, "/etc/systemd/system/etcd.service.d/name.conf",
        "[Service]\nExecStart=\nExecStart=/usr/bin/etcd --name from-flag $DAEMON_ARGS\n")
    m = discover(config(), tmp_path, hostname="h")
    assert m.name == "from-flag"
    assert m.data_dir == Path("/srv/etcd-flag")
    assert m.endpoints == ("http://127.0.0.1:12379",)
    src = dict(m.sources)
    assert src["name"] == "unit:/etc/systemd/system/etcd.service.d/name.conf"
    assert src["data_dir"] == "env:/etc/default/etcd"  # the flag came in through $DAEMON_ARGS


def test_environment_file_overrides_environment_and_missing_optional_is_fine(tmp_path):
    put(tmp_path, "/etc/systemd/system/etcd.service", (
        "[Service]\n"
        "Environment=ETCD_NAME=unit-name \"ETCD_DATA_DIR=/var/lib/etcd data\"\n"
        "EnvironmentFile=-/etc/etcd/missing.env\n"
        "EnvironmentFile=/etc/etcd/etcd.env\n"
        "ExecStart=/usr/local/bin/etcd\n"
    ))
    put(tmp_path, "/etc/etcd/etcd.env", "export ETCD_NAME='file-name'\n")
    m = discover(config(), tmp_path)
    assert m.name == "file-name"
    assert m.data_dir == Path("/var/lib/etcd data")
    assert dict(m.sources)["data_dir"] == "unit:/etc/systemd/system/etcd.service"


def test_missing_required_environment_file_is_an_error(tmp_path):
    put(tmp_path, "/etc/systemd/system/etcd.service",
        "[Service]\nEnvironmentFile=/etc/etcd/etcd.env\nExecStart=/usr/bin/etcd\n")
    with pytest.raises(DiscoveryError, match=r"/etc/etcd/etcd\.env not found"):
        discover(config(), tmp_path)


def test_rhel_unit_with_shell_wrapper_and_working_directory(tmp_path):
    put(tmp_path, "/usr/lib/systemd/system/etcd.service", (SYSTEMD / "rhel" / "etcd.service").read_text())
    put(tmp_path, "/etc/etcd/etcd.conf", (SYSTEMD / "rhel" / "etcd.conf").read_text())
    m = discover(config(), tmp_path)
    assert (m.name, m.data_dir) == ("default", Path("/var/lib/etcd/default.etcd"))
    assert m.endpoints == ("http://localhost:2379",)
    # without ETCD_DATA_DIR etcd uses ${name}.etcd in its working directory
    put(tmp_path, "/etc/etcd/etcd.conf", 'ETCD_NAME="m2"\n')
    m = discover(config(), tmp_path)
    assert m.data_dir == Path("/var/lib/etcd/m2.etcd")
    assert dict(m.sources)["data_dir"] == "default"


def test_unit_file_elsewhere_with_dropin_and_globbed_environment_files(tmp_path):
    put(tmp_path, "/opt/etcd/etcd.service",
        "[Service]\nEnvironmentFile=/opt/etcd/env.d/*.env\nExecStart=/opt/etcd/bin/etcd\n")
    put(tmp_path, "/opt/etcd/etcd.service.d/data.conf", "[Service]\nEnvironment=ETCD_DATA_DIR=/data/etcd\n")
    put(tmp_path, "/opt/etcd/env.d/10-name.env", "ETCD_NAME=first\n")
    put(tmp_path, "/opt/etcd/env.d/20-name.env", "ETCD_NAME=second\n")
    m = discover(config(unit_file="/opt/etcd/etcd.service"), tmp_path)
    assert (m.runtime, m.name, m.data_dir, m.unit) == ("systemd", "second", Path("/data/etcd"), "etcd.service")
    src = dict(m.sources)
    assert src["name"] == "env:/opt/etcd/env.d/20-name.env"
    assert src["data_dir"] == "unit:/opt/etcd/etcd.service.d/data.conf"


def test_configured_unit_name_and_template_instance(tmp_path):
    put(tmp_path, "/lib/systemd/system/etcd@.service",
        "[Service]\nExecStart=/usr/bin/etcd --name %i --data-dir /var/lib/etcd/%i\n")
    m = discover(config(runtime="systemd", unit="etcd@east"), tmp_path)
    assert (m.unit, m.name, m.data_dir) == ("etcd@east.service", "east", Path("/var/lib/etcd/east"))
    assert dict(m.sources)["runtime"] == "config"


# -- process and explicit config ------------------------------------------------------


def test_process_start_command(tmp_path):
    cmd = ["env", "ETCD_INITIAL_CLUSTER=m1=http://127.0.0.1:23800", "/usr/bin/etcd",
           "--name", "m1", "--data-dir=/var/lib/etcd-m1", "-listen-client-urls", "http://127.0.0.1:23790",
           "--advertise-client-urls", "http://127.0.0.1:23790", "--initial-advertise-peer-urls",
           "http://127.0.0.1:23800"]
    m = discover(config(start_command=cmd, pid_file="/run/etcd-m1.pid"), tmp_path)
    assert m.runtime == "process"
    assert (m.name, m.data_dir) == ("m1", Path("/var/lib/etcd-m1"))
    assert m.endpoints == ("http://127.0.0.1:23790",)
    assert m.peer_url == "http://127.0.0.1:23800"
    assert m.initial_cluster == "m1=http://127.0.0.1:23800"
    assert set(dict(m.sources).values()) == {"start_command"}


def test_etcd_config_file_replaces_flags_and_environment(tmp_path):
    put(tmp_path, "/etc/etcd/etcd.conf.yml", (
        "name: 'from-file'\n"
        "data-dir: /var/lib/etcd-file\n"
        "listen-client-urls: https://127.0.0.1:2379\n"
        "initial-cluster: from-file=https://10.0.0.5:2380\n"
        "client-transport-security:\n"
        "  cert-file: /etc/etcd/server.crt\n  key-file: /etc/etcd/server.key\n"
        "  trusted-ca-file: /etc/etcd/ca.crt\n  client-cert-auth: true\n"
        "peer-transport-security:\n  cert-file: /etc/etcd/peer.crt\n"
    ))
    cmd = ["etcd", "--name", "ignored", "--config-file", "/etc/etcd/etcd.conf.yml"]
    m = discover(config(start_command=cmd, pid_file="/run/etcd.pid"), tmp_path)
    assert (m.name, m.data_dir) == ("from-file", Path("/var/lib/etcd-file"))
    assert m.tls == ClientTLS(Path("/etc/etcd/ca.crt"), Path("/etc/etcd/server.crt"), Path("/etc/etcd/server.key"))
    assert m.peer_tls.cert == Path("/etc/etcd/peer.crt")
    assert dict(m.sources)["name"] == "config-file:/etc/etcd/etcd.conf.yml"


def test_explicit_config_wins_over_discovered_values(tmp_path):
    kubeadm_root(tmp_path, apiserver=True, healthcheck=True)
    cfg = config(
        name="override", data_dir="/mnt/etcd", endpoints=["https://10.0.0.1:2379"],
        peer_url="https://10.0.0.1:2380", cacert="/etc/ca.pem", cert="/etc/c.pem", key="/etc/k.pem",
    )
    m = discover(cfg, tmp_path)
    assert m.runtime == "static-pod"
    assert (m.name, m.data_dir, m.endpoints, m.peer_url) == (
        "override", Path("/mnt/etcd"), ("https://10.0.0.1:2379",), "https://10.0.0.1:2380")
    assert m.tls == ClientTLS(Path("/etc/ca.pem"), Path("/etc/c.pem"), Path("/etc/k.pem"))
    src = dict(m.sources)
    for field in ("name", "data_dir", "endpoints", "peer_url", "tls.cacert", "tls.cert", "tls.key"):
        assert src[field] == "config", field
    assert m.initial_cluster == "cp1=https://192.168.56.10:2380"  # what config does not set is still found


def test_explicit_config_covers_what_discovery_cannot_map(tmp_path):
    data_volume = "  - hostPath:\n      path: /var/lib/etcd\n      type: DirectoryOrCreate\n"
    text = fixture(KUBEADM / "etcd.yaml", **{data_volume: "  - emptyDir: {}\n"})
    kubeadm_root(tmp_path, text)
    with pytest.raises(DiscoveryError, match=r"not a hostPath volume.*etcd\.data_dir"):
        discover(config(), tmp_path)
    assert discover(config(data_dir="/var/lib/etcd"), tmp_path).data_dir == Path("/var/lib/etcd")


def test_explicit_config_without_any_runtime(tmp_path):
    m = discover(config(name="solo", data_dir="/var/lib/etcd"), tmp_path)
    assert (m.runtime, m.name, m.endpoints) == (None, "solo", ("http://127.0.0.1:2379",))


# -- detection order ------------------------------------------------------------------

CMD = ["etcd", "--name", "p", "--data-dir", "/var/lib/p"]


@pytest.mark.parametrize(
    ("present", "runtime", "expected"),
    [
        ({"manifest", "unit", "command"}, None, "static-pod"),
        ({"unit", "command"}, None, "systemd"),
        ({"command"}, None, "process"),
        ({"manifest", "unit", "command"}, "systemd", "systemd"),
        ({"manifest", "unit", "command"}, "process", "process"),
    ],
)
def test_detection_order(tmp_path, present, runtime, expected):
    if "manifest" in present:
        kubeadm_root(tmp_path)
    if "unit" in present:
        debian_root(tmp_path)
    etcd: dict[str, Any] = {}
    if "command" in present:
        etcd.update(start_command=CMD, pid_file="/run/etcd.pid")
    if runtime:
        etcd["runtime"] = runtime
    m = discover(config(**etcd), tmp_path, hostname="h")
    assert m.runtime == expected
    assert dict(m.sources)["runtime"] == ("config" if runtime else {
        "static-pod": f"manifest:{MANIFESTS}/etcd.yaml",
        "systemd": "unit:/lib/systemd/system/etcd.service",
        "process": "start_command",
    }[expected])


def test_unit_in_etc_shadows_the_packaged_one(tmp_path):
    put(tmp_path, "/lib/systemd/system/etcd.service", "[Service]\nExecStart=/usr/bin/etcd --name lib --data-dir /l\n")
    put(tmp_path, "/etc/systemd/system/etcd.service", "[Service]\nExecStart=/usr/bin/etcd --name etc --data-dir /e\n")
    assert discover(config(), tmp_path).name == "etc"


# -- errors ---------------------------------------------------------------------------


def test_nothing_found_names_what_was_looked_for(tmp_path):
    with pytest.raises(DiscoveryError) as info:
        discover(config(), tmp_path)
    msg = str(info.value)
    for part in (f"{MANIFESTS}/etcd.yaml", "etcd.service", "etcd.start_command", "etcd.runtime"):
        assert part in msg
    assert info.value.exit_code == 2


def test_missing_manifest_is_named(tmp_path):
    with pytest.raises(DiscoveryError, match=rf"{MANIFESTS}/etcd\.yaml not found.*etcd\.manifest"):
        discover(config(runtime="static-pod"), tmp_path)
    with pytest.raises(DiscoveryError, match=r"/srv/etcd\.yaml not found"):
        discover(config(manifest="/srv/etcd.yaml"), tmp_path)


def test_manifest_without_etcd_container(tmp_path):
    text = fixture(KUBEADM / "kube-apiserver.yaml")
    kubeadm_root(tmp_path, text)
    with pytest.raises(DiscoveryError, match=r"etcd\.yaml has no etcd container"):
        discover(config(), tmp_path)


def test_unparsable_manifest_names_the_line(tmp_path):
    # anchors are valid YAML now (PyYAML reads them as the kubelet does); an unclosed flow sequence is not
    text = fixture(KUBEADM / "etcd.yaml", **{"    image: registry": "    image: [registry"})
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "[registry" in ln)
    kubeadm_root(tmp_path, text)
    with pytest.raises(DiscoveryError, match=rf"etcd\.yaml is not valid YAML \(line {line + 1}, column \d+: "):
        discover(config(), tmp_path)


def test_not_a_pod(tmp_path):
    kubeadm_root(tmp_path, "apiVersion: v1\nkind: ConfigMap\n")
    with pytest.raises(DiscoveryError, match="not a Pod"):
        discover(config(), tmp_path)


def test_no_data_dir_names_the_config_key(tmp_path):
    with pytest.raises(DiscoveryError, match=r"no data dir.*etcd\.data_dir in agent\.toml"):
        discover(config(start_command=["etcd", "--name", "m1"], pid_file="/run/e.pid"), tmp_path)
    text = fixture(KUBEADM / "etcd.yaml", **{"    - --data-dir=/var/lib/etcd\n": ""})
    kubeadm_root(tmp_path, text)
    with pytest.raises(DiscoveryError, match=r"etcd\.data_dir"):
        discover(config(), tmp_path)


def test_relative_data_dir_without_working_directory(tmp_path):
    put(tmp_path, "/etc/systemd/system/etcd.service", "[Service]\nExecStart=/usr/bin/etcd --name a --data-dir a.etcd\n")
    with pytest.raises(DiscoveryError, match=r"relative.*WorkingDirectory.*etcd\.data_dir"):
        discover(config(), tmp_path)


def test_name_is_never_guessed(tmp_path):
    with pytest.raises(DiscoveryError, match=r"no member name.*etcd\.name"):
        discover(config(start_command=["etcd", "--data-dir", "/d"], pid_file="/run/e.pid"), tmp_path)


def test_unit_without_execstart(tmp_path):
    put(tmp_path, "/etc/systemd/system/etcd.service", "[Service]\nExecStart=/usr/bin/etcd\n")
    put(tmp_path, "/etc/systemd/system/etcd.service.d/x.conf", "[Service]\nExecStart=\n")
    with pytest.raises(DiscoveryError, match="no ExecStart"):
        discover(config(), tmp_path)


def test_no_usable_client_url(tmp_path):
    cmd = ["etcd", "--name", "a", "--data-dir", "/d", "--listen-client-urls", "unix://localhost:0"]
    with pytest.raises(DiscoveryError, match=r"no http\(s\) client URL.*etcd\.endpoints"):
        discover(config(start_command=cmd, pid_file="/run/e.pid"), tmp_path)


# -- pure parsers -----------------------------------------------------------------------


def test_parse_env_file():
    text = (
        "# comment\n; also a comment\n\nA=plain\nB=\"double \\\"q\\\" $x\"\nC='single # kept'\n"
        "export D=exported\nE=\"multi \\\nline\"\nnot an assignment\n  F = spaced\nG=\n"
    )
    assert parse_env_file(text) == {
        "A": "plain", "B": 'double "q" $x', "C": "single # kept", "D": "exported", "E": "multi line", "G": "",
    }


def test_parse_unit_continuations_and_comments():
    text = (
        "[Unit]\nDescription=x\n# c\n[Service]\n"
        "ExecStart=/bin/etcd \\\n  # skipped\n  --a=1 \\\n  --b 2\nUser=etcd\n"
    )
    assert parse_unit(text) == [
        ("Unit", "Description", "x"),
        ("Service", "ExecStart", "/bin/etcd  --a=1  --b 2"),
        ("Service", "User", "etcd"),
    ]


def test_split_exec_prefixes_and_variables():
    env = {"ARGS": "--a 1  --b=2", "DIR": "/var/lib/e tcd"}
    assert split_exec("-/usr/bin/etcd $ARGS --data-dir=${DIR} $MISSING '$$literal'", env) == [
        "/usr/bin/etcd", "--a", "1", "--b=2", "--data-dir=/var/lib/e tcd", "$literal",
    ]
    assert split_exec("@/usr/bin/etcd etcd-argv0 --name x", {}) == ["/usr/bin/etcd", "--name", "x"]
    assert split_exec("+!/usr/bin/etcd", {}) == ["/usr/bin/etcd"]


def test_etcd_command_inside_wrappers():
    words = [(w, None) for w in ["/bin/sh", "-c", "ulimit -n 65536; exec /usr/bin/etcd --name $N && echo done"]]
    argv, assigned = etcd_command(words, {"N": "n1"})
    assert [w for w, _ in argv] == ["/usr/bin/etcd", "--name", "n1"]
    argv, assigned = etcd_command([(w, None) for w in ["env", "GOMAXPROCS=2", "etcd", "--x"]], {})
    assert ([w for w, _ in argv], assigned) == (["etcd", "--x"], {"GOMAXPROCS": "2"})


def test_specifiers_and_dropin_resets():
    assert expand_specifiers("/etc/default/%p %n %i %H %%", "etcd@a.service", lambda: "host") == (
        "/etc/default/etcd etcd@a.service a host %")
    spec = read_service(
        [("/u", "[Service]\nExecStart=/a\nEnvironment=A=1\nEnvironmentFile=-/e\nWorkingDirectory=/w\n"),
         ("/d", "[Service]\nExecStart=\nExecStart=/b\nEnvironment=\nEnvironment=B=2\n")],
        lambda v: v,
    )
    assert spec.exec_start == (("/b", "/d"),)
    assert spec.environment == (("B", "2", "/d"),)
    assert spec.environment_files == (("/e", True, "/u"),)
    assert spec.working_directory == "/w"


# -- the pieces every reader shares ---------------------------------------------------


def test_etcd_variables_become_settings_and_others_are_ignored():
    env = {"ETCD_DATA_DIR": ("/d", "env:/etc/default/etcd"), "ETCD_": ("x", "unit:u"), "PATH": ("/bin", "unit:u"),
           "ETCD_INITIAL_ADVERTISE_PEER_URLS": ("https://a:2380", "unit:u")}
    assert env_settings(env) == {"data-dir": ("/d", "env:/etc/default/etcd"),
                                 "initial-advertise-peer-urls": ("https://a:2380", "unit:u")}


def test_config_file_settings_flatten_the_transport_sections():
    doc = {"name": "m1", "snapshot-count": 10000, "enable-v2": False, "listen-client-urls": "https://a:2379",
           "client-transport-security": {"cert-file": "/c.crt", "client-cert-auth": True},
           "peer-transport-security": {"key-file": "/p.key"}, "log-outputs": ["stderr"]}
    assert config_file_settings(doc, "config-file:/e.yml") == {
        "name": ("m1", "config-file:/e.yml"), "snapshot-count": ("10000", "config-file:/e.yml"),
        "enable-v2": ("false", "config-file:/e.yml"), "listen-client-urls": ("https://a:2379", "config-file:/e.yml"),
        "cert-file": ("/c.crt", "config-file:/e.yml"), "client-cert-auth": ("true", "config-file:/e.yml"),
        "peer-key-file": ("/p.key", "config-file:/e.yml"),
    }


def test_found_maps_paths_and_names_the_flag_its_source_and_the_fix():
    found = Found("process", "config", "etcd.start_command",
                  {"data-dir": ("rel/dir", "start_command"), "wal-dir": ("/w/../wal", "start_command"),
                   "name": ("", "start_command")},
                  absolute_only("is relative and the working directory is not known"))
    assert found.value("name") == "" and found.value("absent") == ""
    assert found.host_path("wal-dir", "set etcd.wal_dir") == Path("/wal")
    assert found.maybe_host_path("data-dir") is None and found.maybe_host_path("absent") is None
    with pytest.raises(DiscoveryError, match=r"^etcd\.start_command: --data-dir=rel/dir \(from start_command\) "
                                             r"is relative .*; set etcd\.data_dir in agent\.toml$"):
        found.host_path("data-dir", "set etcd.data_dir in agent.toml")
