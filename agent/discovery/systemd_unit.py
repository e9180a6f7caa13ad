"""systemd units as systemd reads them: pure parsing of text, no files.

What discovery needs from an etcd unit: the unit file and its drop-ins merged
into one [Service] (``ExecStart=``, ``Environment=``, ``EnvironmentFile=``,
``WorkingDirectory=``; an empty assignment resets a list, as drop-ins use it),
``EnvironmentFile=`` contents, %-specifiers, and ExecStart= split into the argv
systemd builds, with the etcd invocation found inside ``sh -c``/``env``
wrappers. Reading the files (which units, which drop-ins, in which order) is
the systemd reader's job (systemd.py); everything here takes text.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Callable, Optional

_SHELLS = frozenset({"sh", "bash", "dash"})
_SHELL_OPERATORS = frozenset({";", "&&", "||", "|", "&"})
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_ASSIGNMENT = re.compile(rf"({_NAME})=(.*)\Z", re.S)


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines as systemd's EnvironmentFile= reads them (and /etc/default files are written).

    ``#``/``;`` comment lines, single and double quotes, backslash continuation,
    an optional ``export``; lines that are not assignments are ignored (systemd
    warns and goes on).
    """
    out: dict[str, str] = {}
    pending = ""
    for raw in text.splitlines():
        line = pending + raw
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending = line[:-1]
            continue
        pending = ""
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        m = _ASSIGNMENT.match(line)
        if m:
            out[m.group(1)] = _unquote_env(m.group(2).strip())
    return out


def _unquote_env(raw: str) -> str:
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(raw):
        ch = raw[i]
        if quote == "'":
            if ch == "'":
                quote = ""
            else:
                out.append(ch)
        elif quote == '"':
            if ch == '"':
                quote = ""
            elif ch == "\\" and raw[i + 1:i + 2] in ('"', "\\", "`", "$"):
                i += 1
                out.append(raw[i])
            else:
                out.append(ch)
        elif ch in "'\"":
            quote = ch
        elif ch == "\\" and i + 1 < len(raw):
            i += 1
            out.append(raw[i])
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def parse_unit(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of a systemd unit file in order, continuation lines joined."""
    out: list[tuple[str, str, str]] = []
    section = ""
    logical: Optional[str] = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("#", ";")):
            continue  # comments, also inside a continued line
        if logical is None and not line:
            continue
        if line.endswith("\\"):
            logical = (logical or "") + line[:-1] + " "
            continue
        line, logical = (logical or "") + line, None
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif "=" in line:
            key, value = line.split("=", 1)
            out.append((section, key.strip(), value.strip()))
    if logical:
        line = logical.strip()
        if "=" in line:
            key, value = line.split("=", 1)
            out.append((section, key.strip(), value.strip()))
    return out


def expand_specifiers(value: str, unit: str, hostname: Callable[[], str]) -> str:
    """Replace systemd's %-specifiers that a system unit's paths and settings use."""
    base = unit.rsplit(".", 1)[0] if "." in unit else unit
    prefix, _, instance = base.partition("@")
    fixed = {
        "n": unit, "N": base, "p": prefix, "i": instance, "I": instance, "%": "%",
        "t": "/run", "S": "/var/lib", "C": "/var/cache", "L": "/var/log", "E": "/etc",
        "T": "/tmp", "V": "/var/tmp",
    }

    def one(m: re.Match[str]) -> str:
        ch = m.group(1)
        if ch in ("H", "l"):
            return hostname()
        return fixed.get(ch, m.group(0))

    return re.sub(r"%(.)", one, value)


def _substitute(word: str, env: Mapping[str, str], bare: bool) -> tuple[str, Optional[str]]:
    """Expand ``${VAR}`` (and ``$VAR`` when ``bare``, as a shell does) in one word; also the first name used."""
    used: list[str] = []
    pattern = rf"\$\$|\$\{{({_NAME})\}}" + (rf"|\$({_NAME})" if bare else "")

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(2)
        used.append(name)
        return env.get(name, "")

    return re.sub(pattern, one, word), (used[0] if used else None)


def exec_words(command: str, env: Mapping[str, str]) -> list[tuple[str, Optional[str]]]:
    """An ExecStart= line as systemd runs it: (word, variable it came from)."""
    command = command.strip()
    argv0_override = False
    while command[:1] in ("-", "@", "+", "!", ":", "|"):
        argv0_override = argv0_override or command[0] == "@"
        command = command[1:]
    words: list[tuple[str, Optional[str]]] = []
    for word in shlex.split(command):
        whole = re.fullmatch(rf"\$({_NAME})", word)
        if whole:  # "$VAR" as a word of its own is split at whitespace
            words.extend((part, whole.group(1)) for part in env.get(whole.group(1), "").split())
        else:
            words.append(_substitute(word, env, bare=False))
    if argv0_override and len(words) > 1:
        del words[1]  # "@/usr/bin/etcd etcd ...": the second word is only argv[0]
    return words


def split_exec(command: str, env: Mapping[str, str]) -> list[str]:
    """The argv systemd builds from an ExecStart= value (prefixes stripped, variables expanded)."""
    return [word for word, _ in exec_words(command, env)]


def etcd_command(
    words: Sequence[tuple[str, Optional[str]]], env: Mapping[str, str]
) -> tuple[list[tuple[str, Optional[str]]], dict[str, str]]:
    """The etcd invocation inside a wrapper, and variables assigned in front of it.

    Handles ``sh -c "... etcd ..."`` (the RHEL unit), ``env VAR=x etcd ...`` and
    ``VAR=x etcd ...``; a command without an etcd word is returned whole.
    """
    plain = [w for w, _ in words]
    if plain and posixpath.basename(plain[0]) in _SHELLS and "-c" in plain[1:-1]:
        script = plain[plain.index("-c", 1) + 1]
        lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = [(_substitute(w, env, bare=True)[0], None) for w in lexer]
        plain = [w for w, _ in words]
    start = next((i for i, w in enumerate(plain) if posixpath.basename(w) == "etcd"), None)
    if start is None:
        return list(words), {}
    assigned = {}
    for w in plain[:start]:
        m = _ASSIGNMENT.match(w)
        if m:
            assigned[m.group(1)] = m.group(2)
    end = next((i for i in range(start, len(plain)) if plain[i] in _SHELL_OPERATORS), len(plain))
    return list(words[start:end]), assigned


@dataclasses.dataclass(frozen=True)
class ServiceSpec:
    """What discovery needs from a unit's [Service] section once its drop-ins are applied."""

    exec_start: tuple[tuple[str, str], ...] = ()  # (command line, file)
    environment: tuple[tuple[str, str, str], ...] = ()  # (name, value, file), in order
    environment_files: tuple[tuple[str, bool, str], ...] = ()  # (path, optional, file)
    working_directory: Optional[str] = None


def read_service(files: Sequence[tuple[str, str]], expand: Callable[[str], str]) -> ServiceSpec:
    """Merge the unit and its drop-ins, given as (path, text) in the order systemd applies them.

    An empty assignment (``ExecStart=``) resets the list, as drop-ins use it.
    Raises ValueError naming the file for quoting systemd would reject.
    """
    exec_start: list[tuple[str, str]] = []
    env: list[tuple[str, str, str]] = []
    env_files: list[tuple[str, bool, str]] = []
    workdir: Optional[str] = None
    for path, text in files:
        for section, key, value in parse_unit(text):
            if section != "Service":
                continue
            if key == "ExecStart":
                exec_start = [*exec_start, (expand(value), path)] if value else []
            elif key == "Environment":
                env = [*env, *_assignments(path, value, expand)] if value else []
            elif key == "EnvironmentFile":
                if not value:
                    env_files = []
                else:
                    env_files.append((expand(value.lstrip("-")), value.startswith("-"), path))
            elif key == "WorkingDirectory":
                workdir = expand(value.lstrip("-")) or None
    return ServiceSpec(tuple(exec_start), tuple(env), tuple(env_files), workdir)


def _assignments(path: str, value: str, expand: Callable[[str], str]) -> list[tuple[str, str, str]]:
    """(name, value, file) of each NAME=VALUE word of an ``Environment=`` line, as systemd splits it."""
    try:
        words = shlex.split(expand(value))
    except ValueError as exc:
        raise ValueError(f"{path}: Environment={value}: {exc}") from None
    return [(m.group(1), m.group(2), path) for m in map(_ASSIGNMENT.match, words) if m]
