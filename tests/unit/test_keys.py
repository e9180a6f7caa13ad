"""CURVE key files: generation, loading, and every way a key file can be unusable."""

from __future__ import annotations

import os
import stat

import pytest
import zmq
import zmq.auth
from etcdguard.common.base.errors import EXIT_USAGE, ConfigError, UsageError
from etcdguard.common.wire import keys


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_generate_writes_a_pair_zmq_can_read(tmp_path):
    directory = tmp_path / "new" / "keys"
    public_path, secret_path = keys.generate("cp1", directory)
    assert (public_path.name, secret_path.name) == ("cp1.key", "cp1.key_secret")
    assert mode(secret_path) == 0o600
    assert mode(directory) == 0o700
    assert mode(public_path) & 0o077 in (0o044, 0o004, 0o040, 0)   # whatever the umask left; public anyway
    assert sorted(p.name for p in directory.iterdir()) == ["cp1.key", "cp1.key_secret"]   # no temp left
    # pyzmq's own reader (and so ThreadAuthenticator's authorized-keys directory) agrees
    zpub, zsec = zmq.auth.load_certificate(str(secret_path))
    public, secret = keys.load_keypair(secret_path)
    assert (public, secret) == (zpub, zsec)
    assert keys.load_public(public_path) == public == zmq.auth.load_certificate(str(public_path))[0]
    assert keys.load_public(secret_path) == public
    assert zmq.curve_public(secret) == public
    assert len(public) == len(secret) == 40
    assert "secret-key" not in public_path.read_text()


def test_keys_written_by_pyzmq_load(tmp_path):
    _public_file, secret_file = zmq.auth.create_certificates(str(tmp_path), "coordinator")
    os.chmod(secret_file, 0o600)
    public, secret = keys.load_keypair(tmp_path / "coordinator.key_secret")
    assert keys.load_public(tmp_path / "coordinator.key") == public
    assert zmq.curve_public(secret) == public


def test_generate_never_overwrites(tmp_path):
    public_path, secret_path = keys.generate("agent", tmp_path)
    before = secret_path.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        keys.generate("agent", tmp_path)
    assert secret_path.read_bytes() == before
    public_path.unlink()
    with pytest.raises(UsageError, match="already exists"):
        keys.generate("agent", tmp_path)   # the secret alone is enough to refuse
    assert secret_path.read_bytes() == before


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "a/b", "../up", "x" * 65, "sp ace"])
def test_generate_refuses_bad_names(tmp_path, name):
    with pytest.raises(UsageError, match="key name"):
        keys.generate(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_generated_keys_differ(tmp_path):
    a = keys.load_keypair(keys.generate("a", tmp_path)[1])
    b = keys.load_keypair(keys.generate("b", tmp_path)[1])
    assert a != b


def test_missing_file_names_the_config_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        keys.load_keypair(tmp_path / "nope.key_secret", "agent.toml: server.secret_key")
    assert str(info.value) == f"agent.toml: server.secret_key {tmp_path / 'nope.key_secret'}: no such file"
    assert info.value.exit_code == EXIT_USAGE


def test_secret_readable_by_others_is_refused(tmp_path):
    _, secret_path = keys.generate("agent", tmp_path)
    os.chmod(secret_path, 0o644)
    with pytest.raises(ConfigError, match=r"readable by other users.*chmod 600"):
        keys.load_keypair(secret_path)
    os.chmod(secret_path, 0o640)   # group-readable: allowed (a service group), with a warning
    assert keys.load_keypair(secret_path)


def test_public_file_is_not_a_secret(tmp_path):
    public_path, _ = keys.generate("agent", tmp_path)
    with pytest.raises(ConfigError, match="no secret-key line"):
        keys.load_keypair(public_path)


def test_mismatched_pair_is_refused(tmp_path):
    _, secret_path = keys.generate("agent", tmp_path)
    other_public, _ = zmq.curve_keypair()
    text = secret_path.read_text()
    public = keys.load_public(secret_path).decode()
    secret_path.write_text(text.replace(public, other_public.decode()))
    with pytest.raises(ConfigError, match="does not belong to its secret-key"):
        keys.load_keypair(secret_path)


@pytest.mark.parametrize("content, words", [
    ("", "no public-key line"),
    ("just some text\n", "no public-key line"),
    ('curve\n    public-key = "short"\n', "not a 40-character Z85 key"),
    ('curve\n    public-key = "' + "~" * 40 + '"\n', "not valid Z85"),
    ('curve\n    public-key = "' + "#" * 40 + '"\n', "not valid Z85"),
    ("\udcff", "not a ZeroMQ certificate"),
])
def test_malformed_public_files(tmp_path, content, words):
    path = tmp_path / "bad.key"
    if content == "\udcff":
        path.write_bytes(b"\xff\xfe garbage")
    else:
        path.write_text(content)
    with pytest.raises(ConfigError, match=words):
        keys.load_public(path)


def test_commented_key_lines_are_ignored(tmp_path):
    public_path, _ = keys.generate("agent", tmp_path)
    text = public_path.read_text()
    other, _ = zmq.curve_keypair()
    public_path.write_text(f'#    public-key = "{other.decode()}"\n' + text)
    assert keys.load_public(public_path) != other


def test_directory_and_huge_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a regular file"):
        keys.load_public(tmp_path)
    big = tmp_path / "big.key"
    big.write_bytes(b"#" * (keys.MAX_KEY_FILE + 1))
    with pytest.raises(ConfigError, match="too large"):
        keys.load_public(big)


def test_unreadable_file(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    _, secret_path = keys.generate("agent", tmp_path)
    os.chmod(secret_path, 0)
    with pytest.raises(ConfigError, match="permission denied"):
        keys.load_keypair(secret_path)


def test_fingerprint_is_a_short_prefix(tmp_path):
    public, _ = keys.load_keypair(keys.generate("agent", tmp_path)[1])
    assert keys.fingerprint(public) == public.decode()[:8]


def test_parse_keys_reads_the_key_lines_of_a_certificates_text():
    public, secret = zmq.curve_keypair()
    text = (f'#   public-key = "{"x" * 40}"\nmetadata\ncurve\n    public-key = "{public.decode()}"\n'
            f"    secret-key = '{secret.decode()}'\n")
    assert keys.parse_keys(text, "server.secret_key /k") == {"public-key": public, "secret-key": secret}
    assert keys.parse_keys("metadata\ncurve\n", "x") == {}
    for bad, why in [(f'public-key = "{public.decode()[:-1]}"', "public-key is not a 40-character Z85 key"),
                     ('secret-key = "' + "~" * 40 + '"', "secret-key is not valid Z85")]:
        with pytest.raises(ConfigError, match=f"^server.secret_key /k: {why}$"):
            keys.parse_keys(bad, "server.secret_key /k")
