"""Static-pod manifests (and etcd's YAML config file), read once for discovery and the runtime.

YAML is parsed by PyYAML's safe loader (libyaml's C parser where present), so
anchors, aliases, tags, block scalars and multi-line flow sequences read as
the kubelet reads them. A duplicate mapping key is refused: the kubelet's
YAML-to-JSON step keeps one of the two silently, and a manifest whose meaning
depends on which one is not something to guess about.

A container is chosen by name (``etcd``, ``kube-apiserver``), else as the one
whose command runs that program; never by its position in the pod, because a
sidecar may come first.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any, Optional

import yaml

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestError(ValueError):
    """A manifest (or YAML file) that cannot be read as one; the message says where in it."""


class _StrictLoader(_BaseLoader):  # type: ignore[misc]
    """The safe loader, refusing a key that appears twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *base": explicit keys may override merged ones
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # an unhashable key: the base constructor reports it
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                    key_node.start_mark)
        result: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return result


def load_yaml(text: str) -> Any:
    """Parse one YAML (or JSON) document; an empty one is None. ManifestError says what and where."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = ": ".join(p for p in (exc.context, exc.problem) if p)
        raise ManifestError(f"{where}{problem}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(str(exc)) from None


def as_pod(doc: Any) -> dict[str, Any]:
    """``doc`` if it is a Pod; ManifestError saying what it is otherwise."""
    if not isinstance(doc, dict) or doc.get("kind") != "Pod":
        kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
        raise ManifestError(f"not a Pod (kind: {kind!r})")
    return doc


def load_pod(text: str) -> dict[str, Any]:
    """A Pod manifest as a mapping; ManifestError if it is not valid YAML or not a Pod."""
    return as_pod(load_yaml(text))


def containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod.get("spec")
    items = spec.get("containers") if isinstance(spec, dict) else None
    return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []


def find_container(pod: Mapping[str, Any], name: str) -> Optional[dict[str, Any]]:
    """The container called ``name``, else the one whose command[0] is the program ``name``."""
    candidates = containers(pod)
    for c in candidates:
        if c.get("name") == name:
            return c
    for c in candidates:
        command = c.get("command")
        if isinstance(command, list) and command and posixpath.basename(str(command[0])) == name:
            return c
    return None


def container_argv(container: Mapping[str, Any]) -> list[str]:
    """command + args of a container; ManifestError if they are not lists of strings."""
    argv: list[str] = []
    for key in ("command", "args"):
        value = container.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ManifestError(f"container {container.get('name')!r}: {key} must be a list of strings")
        argv.extend(value)
    return argv


def pod_command(pod: Mapping[str, Any], name: str) -> list[str]:
    """The command line of the pod's ``name`` container; ManifestError if there is none."""
    container = find_container(pod, name)
    if container is None:
        names = ", ".join(repr(c.get("name")) for c in containers(pod)) or "none"
        raise ManifestError(f"no spec.containers[] entry named {name!r} or running {name} (containers: {names})")
    argv = container_argv(container)
    if not argv:
        raise ManifestError(f"container {container.get('name')!r} has no command")
    return argv


def container_env(container: Mapping[str, Any]) -> dict[str, str]:
    """Literal ``env`` values of a container (valueFrom cannot be resolved here)."""
    out: dict[str, str] = {}
    for item in container.get("env") or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("value"), str):
            out[item["name"]] = item["value"]
    return out


def host_path(pod: Mapping[str, Any], container: Mapping[str, Any], path: str) -> str:
    """The host path behind a container path; raises LookupError saying why there is none.

    The volumeMount with the longest mountPath that contains ``path`` decides; its
    volume must be a hostPath (kubeadm mounts /var/lib/etcd and
    /etc/kubernetes/pki/etcd at the same paths, but a manifest need not).
    """
    if not path.startswith("/"):
        raise LookupError("is relative and the container's working directory is not known")
    path = posixpath.normpath(path)
    best: Optional[Mapping[str, Any]] = None
    best_mount = ""
    for mount in container.get("volumeMounts") or []:
        if not isinstance(mount, dict) or not isinstance(mount.get("mountPath"), str):
            continue
        mp = posixpath.normpath(mount["mountPath"])
        inside = path == mp or path.startswith(mp.rstrip("/") + "/")
        if inside and (best is None or len(mp) > len(best_mount)):
            best, best_mount = mount, mp
    if best is None:
        raise LookupError("is not under any volumeMount, so it exists only inside the container")
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    volumes = [v for v in (spec or {}).get("volumes") or [] if isinstance(v, dict)]
    volume = next((v for v in volumes if v.get("name") == best.get("name")), None)
    source = volume.get("hostPath") if volume else None
    if not isinstance(source, dict) or not isinstance(source.get("path"), str):
        raise LookupError(f"is in volume {best.get('name')!r}, which is not a hostPath volume")
    rest = posixpath.relpath(path, best_mount)
    sub = best.get("subPath")
    sub = sub if isinstance(sub, str) else ""
    return posixpath.normpath(posixpath.join(source["path"], sub, "" if rest == "." else rest))
