import json
from pathlib import Path

import pytest
from etcdguard.agent.discovery.miniyaml import YAMLError, loads

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kubeadm"


def test_kubeadm_etcd_manifest():
    pod = loads((FIXTURES / "etcd.yaml").read_text())
    assert pod["apiVersion"] == "v1"
    assert pod["kind"] == "Pod"
    meta = pod["metadata"]
    assert meta["annotations"] == {
        "kubeadm.kubernetes.io/etcd.advertise-client-urls": "https://192.168.56.10:2379"
    }
    assert meta["creationTimestamp"] is None
    assert meta["labels"] == {"component": "etcd", "tier": "control-plane"}
    spec = pod["spec"]
    assert spec["hostNetwork"] is True
    assert spec["priority"] == 2000001000
    assert spec["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    (c,) = spec["containers"]
    assert c["name"] == "etcd"
    assert c["command"][0] == "etcd"
    assert "--listen-client-urls=https://127.0.0.1:2379,https://192.168.56.10:2379" in c["command"]
    assert c["command"][-1] == "--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt"
    assert len(c["command"]) == 20
    assert c["livenessProbe"] == {
        "failureThreshold": 8,
        "httpGet": {"host": "127.0.0.1", "path": "/livez", "port": 2381, "scheme": "HTTP"},
        "initialDelaySeconds": 10,
        "periodSeconds": 10,
        "timeoutSeconds": 15,
    }
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "100Mi"}}
    assert c["volumeMounts"] == [
        {"mountPath": "/var/lib/etcd", "name": "etcd-data"},
        {"mountPath": "/etc/kubernetes/pki/etcd", "name": "etcd-certs"},
    ]
    assert spec["volumes"][1] == {
        "hostPath": {"path": "/var/lib/etcd", "type": "DirectoryOrCreate"}, "name": "etcd-data",
    }
    assert pod["status"] == {}


def test_kubeadm_apiserver_manifest():
    pod = loads((FIXTURES / "kube-apiserver.yaml").read_text())
    (c,) = pod["spec"]["containers"]
    assert "--etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt" in c["command"]
    assert c["readinessProbe"]["periodSeconds"] == 1
    assert c["resources"] == {"requests": {"cpu": "250m"}}
    assert all(m["readOnly"] is True for m in c["volumeMounts"])
    assert [v["hostPath"]["path"] for v in pod["spec"]["volumes"]][2] == "/etc/kubernetes/pki"


def test_json_input_gives_the_same_result():
    text = (FIXTURES / "etcd.yaml").read_text()
    assert loads(json.dumps(loads(text), indent=2)) == loads(text)


def test_sequences_indented_or_at_the_key_column():
    assert loads("a:\n- x\n- y\nb: 1\n") == loads("a:\n  - x\n  - y\nb: 1\n") == {"a": ["x", "y"], "b": 1}
    assert loads("- - a\n  - b\n- k: v\n  j: w\n-\n  n: 1\n") == [["a", "b"], {"k": "v", "j": "w"}, {"n": 1}]


def test_scalar_types():
    doc = loads(
        "i: 42\nneg: -3\nzero: 0\noctalish: 0755\nf: 1.5\nt: true\nF: False\nn: null\ntilde: ~\n"
        "empty:\nyes: yes\nq: '42'\ndq: \"true\"\n"
    )
    assert doc == {
        "i": 42, "neg": -3, "zero": 0, "octalish": "0755", "f": "1.5", "t": True, "F": False,
        "n": None, "tilde": None, "empty": None, "yes": "yes", "q": "42", "dq": "true",
    }


def test_quoted_scalars():
    assert loads('a: "tab\\there \\"q\\" \\u00e9\\x41 \\\\"\n') == {"a": 'tab\there "q" éA \\'}
    assert loads("a: 'it''s # not a comment'\n") == {"a": "it's # not a comment"}
    # controller-gen / yaml.v2 wrap long strings over several lines
    text = "d: 'APIVersion defines the versioned\n  schema of this object.\n\n  Second paragraph'\nn: 1\n"
    assert loads(text) == {"d": "APIVersion defines the versioned schema of this object.\nSecond paragraph", "n": 1}
    assert loads('a: "one\n  two\\\n  three"\n') == {"a": "one twothree"}


def test_plain_scalars_comments_and_colons():
    doc = loads(
        "# leading comment\n"
        "url: https://127.0.0.1:2379 # trailing comment\n"
        "path: /health?exclude=NOSPACE&serializable=true\n"
        "hash: a#b\n"
        "long: first\n  second\n\n  third\n"
        "kubeadm.kubernetes.io/etcd.advertise-client-urls: https://10.0.0.1:2379\n"
    )
    assert doc == {
        "url": "https://127.0.0.1:2379",
        "path": "/health?exclude=NOSPACE&serializable=true",
        "hash": "a#b",
        "long": "first second\nthird",
        "kubeadm.kubernetes.io/etcd.advertise-client-urls": "https://10.0.0.1:2379",
    }


def test_block_scalars():
    doc = loads(
        "lit: |\n  line1\n    indented\n\n  line3\n"
        "strip: |-\n  a\n  b\n\n"
        "keep: |+\n  a\n\n"
        "folded: >\n  folded\n  text\n\n  next\n    kept\n  back\n"
        "ind: |2\n    two extra\n  base\n"
        "last: x\n"
    )
    assert doc == {
        "lit": "line1\n  indented\n\nline3\n",
        "strip": "a\nb",
        "keep": "a\n\n",
        "folded": "folded text\nnext\n  kept\nback\n",
        "ind": "  two extra\nbase\n",
        "last": "x",
    }


def test_last_applied_configuration_block():
    text = (
        "metadata:\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: |\n"
        '      {"apiVersion":"v1","kind":"Pod"}\n  name: x\n'
    )
    assert loads(text) == {
        "metadata": {
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": '{"apiVersion":"v1","kind":"Pod"}\n'},
            "name": "x",
        }
    }


def test_flow_collections():
    assert loads("a: []\nb: {}\nc: [x, 'y, z', \"w\", 1, true, null]\nd: {k: v, n: 2, 'q': http://h:1}\n") == {
        "a": [], "b": {}, "c": ["x", "y, z", "w", 1, True, None], "d": {"k": "v", "n": 2, "q": "http://h:1"},
    }


def test_documents_and_empty_input():
    assert loads("") is None
    assert loads("# only a comment\n") is None
    assert loads("---\na: 1\n...\n") == {"a": 1}
    assert loads("---\n---\n# nothing\n---\na: 1\n---\n") == {"a": 1}
    assert loads("a: 1\r\nb:\r\n- x\r\n") == {"a": 1, "b": ["x"]}
    assert loads("just text\n") == "just text"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("a: 1\nb: &anchor 2\n", 2, "anchors"),
        ("a: 1\nb: *ref\n", 2, "aliases"),
        ("a:\n  <<: *base\n", 2, "aliases"),
        ("a: !!str 1\n", 1, "tags"),
        ("? complex\n: key\n", 1, "complex keys"),
        ("%YAML 1.2\n---\na: 1\n", 1, "directives"),
        ("a: 1\n---\nb: 2\n", 3, "several YAML documents"),
        ("a:\n\tb: 1\n", 2, "tab"),
        ("a: 1\nb: 2\na: 3\n", 3, "duplicate key"),
        ("a:\n  b: 1\n c: 2\n", 3, "unexpected"),
        ("a: 1\nb: 'open\n\n", 2, "unterminated"),
        ("a: b: c\n", 1, "mapping values"),
        ("a: [1, 2\n", 1, "flow"),
        ("a: \"bad \\q escape\"\n", 1, "escape"),
        ("- a\nb: 1\n", 2, "unexpected content"),
        ("a: 1\n  b: 2\n", 2, "mapping values"),
    ],
)
def test_outside_the_subset_is_an_error_naming_the_line(text, line, words):
    with pytest.raises(YAMLError) as info:
        loads(text)
    assert info.value.line == line
    assert str(info.value).startswith(f"line {line}: ")
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)
