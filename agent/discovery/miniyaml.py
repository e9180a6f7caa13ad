"""A small, strict reader for the YAML that Kubernetes tooling writes.

etcdguard reads static-pod manifests (and etcd's own config file) without
depending on a YAML library. This covers what kubeadm, kubectl and
controller-gen emit: one document of block mappings and sequences (indented or
at the key's column), plain, single- and double-quoted scalars (also folded
over several lines), ``|``/``>`` block scalars, comments, ``{}``/``[]`` and
one-line flow collections. Anything else (anchors, aliases, tags, complex
keys, directives, several documents with content, tabs in indentation) is a
`YAMLError` naming the line, never a silent misreading. JSON is read first.

Results are dicts, lists and strings; mapping keys are always strings (as
Kubernetes' YAML-to-JSON conversion makes them). Plain scalars resolve to
None (``null``, ``~``, empty), bool (``true``/``false``) and decimal int;
everything else, floats and YAML 1.1's yes/no/on/off included, stays a string.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

__all__ = ["YAMLError", "loads"]

_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)\Z")
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_ESCAPES = {
    "0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f",
    "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85",
    "_": "\xa0", "L": "\u2028", "P": "\u2029",
}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
_UNSUPPORTED = {
    "&": "anchors (&) are not supported",
    "*": "aliases (*) are not supported",
    "!": "tags (!) are not supported",
    "?": "complex keys (?) are not supported",
    "%": "directives (%) are not supported",
    "@": "'@' is reserved and cannot start a plain scalar",
    "`": "'`' is reserved and cannot start a plain scalar",
}


class YAMLError(ValueError):
    """Input outside the supported subset or malformed; ``line`` is 1-based."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


def loads(text: str) -> Any:
    """Parse one JSON or YAML document; an empty document is None."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    return _Parser(text).document()


def _resolve(plain: str) -> Any:
    if plain in _NULLS:
        return None
    if plain in _BOOLS:
        return _BOOLS[plain]
    if _INT.match(plain):
        return int(plain)
    return plain


def _is_entry(text: str) -> bool:
    """A block sequence entry: '-' alone or followed by whitespace."""
    return text == "-" or text.startswith(("- ", "-\t"))


def _strip_comment(text: str) -> str:
    """Cut a trailing comment from plain text: '#' at the start or after whitespace."""
    if text.startswith("#"):
        return ""
    m = re.search(r"[ \t]#", text)
    return (text[: m.start()] if m else text).rstrip()


def _blank(line: str) -> bool:
    s = line.strip()
    return not s or s.startswith("#")


class _Parser:
    def __init__(self, text: str) -> None:
        self.lines = [ln.rstrip("\r") for ln in text.lstrip("\ufeff").split("\n")]
        self.i = 0
        self._markers()

    # -- structure ---------------------------------------------------------

    def _err(self, problem: str, line: Optional[int] = None) -> YAMLError:
        return YAMLError((self.i if line is None else line) + 1, problem)

    def _markers(self) -> None:
        """Blank out '---'/'...' lines; refuse directives and a second document with content."""
        docs_with_content = 0
        current_has_content = False
        for idx, line in enumerate(self.lines):
            if line.startswith("%"):
                raise self._err(_UNSUPPORTED["%"], idx)
            marker = line[:3] in ("---", "...") and (len(line) == 3 or line[3] in " \t")
            if marker:
                if _strip_comment(line[3:].strip()):
                    raise self._err(f"content on the '{line[:3]}' line is not supported", idx)
                self.lines[idx] = ""
                current_has_content = False
                continue
            if not _blank(line) and not current_has_content:
                current_has_content = True
                docs_with_content += 1
                if docs_with_content > 1:
                    raise self._err("several YAML documents; only one is supported", idx)

    def _indent(self, line: str) -> int:
        n = len(line) - len(line.lstrip(" "))
        if line[n:n + 1] == "\t":
            raise self._err("tab characters must not be used for indentation")
        return n

    def _skip_blank(self) -> None:
        while self.i < len(self.lines) and _blank(self.lines[self.i]):
            self.i += 1

    def document(self) -> Any:
        self._skip_blank()
        if self.i >= len(self.lines):
            return None
        value = self._block(-1)
        self._skip_blank()
        if self.i < len(self.lines):
            raise self._err("unexpected content (check the indentation)")
        return value

    def _block(self, parent: int) -> Any:
        """The block node starting on the next content line, if it is indented beyond ``parent``."""
        self._skip_blank()
        if self.i >= len(self.lines):
            return None
        line = self.lines[self.i]
        ind = self._indent(line)
        if ind <= parent:
            return None
        if _is_entry(line[ind:]):
            return self._sequence(ind)
        if self._key(line, ind) is not None:
            return self._mapping(ind)
        return self._value(ind, parent)

    def _mapping(self, ind: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            self._skip_blank()
            if self.i >= len(self.lines):
                return out
            line = self.lines[self.i]
            li = self._indent(line)
            if li < ind:
                return out
            if li > ind:
                raise self._err("unexpected indentation")
            found = self._key(line, ind)
            if found is None:
                raise self._err("expected 'key: value'")
            key, vcol = found
            if key in out:
                raise self._err(f"duplicate key {key!r}")
            out[key] = self._mapping_value(ind, vcol)

    def _mapping_value(self, ind: int, vcol: int) -> Any:
        rest = self.lines[self.i][vcol:]
        if _strip_comment(rest) == "":
            self.i += 1
            self._skip_blank()
            if self.i < len(self.lines):
                line = self.lines[self.i]
                li = self._indent(line)
                if li > ind:
                    return self._block(ind)
                if li == ind and _is_entry(line[li:]):
                    return self._sequence(ind)  # kubectl style: entries at the key's column
            return None
        if _is_entry(rest):
            raise self._err("a block sequence cannot start on the line of its key")
        return self._value(vcol, ind)

    def _sequence(self, ind: int) -> list[Any]:
        out: list[Any] = []
        while True:
            self._skip_blank()
            if self.i >= len(self.lines):
                return out
            line = self.lines[self.i]
            li = self._indent(line)
            if li < ind:
                return out
            if li > ind:
                raise self._err("unexpected indentation")
            if not _is_entry(line[ind:]):
                return out  # the next key of the enclosing mapping
            col = ind + 1
            while col < len(line) and line[col] in " \t":
                col += 1
            rest = line[col:]
            if _strip_comment(rest) == "":
                self.i += 1
                out.append(self._block(ind))
            elif _is_entry(rest) or self._key(line, col) is not None:
                # "- key: v" / "- - x": a nested block node whose column is that of its content
                self.lines[self.i] = " " * col + rest
                out.append(self._block(ind))
            else:
                out.append(self._value(col, ind))

    def _key(self, line: str, col: int) -> Optional[tuple[str, int]]:
        """(key, column of the value) if a 'key:' starts at ``col``, else None."""
        text = line[col:]
        if not text:
            return None
        if text[0] in "\"'":
            scanned = self._quoted(self.i, col, multiline=False)
            if scanned is None:
                return None
            key, _, end = scanned
            while end < len(line) and line[end] in " \t":
                end += 1
            if line[end:end + 1] != ":" or line[end + 1:end + 2] not in ("", " ", "\t"):
                return None
            colon = end
        else:
            if text[0] in "[]{}&*!|>%@`#?-,:" and not (
                text[0] in "-?:" and text[1:2] not in ("", " ", "\t")
            ):
                return None
            m = re.search(r":(?=[ \t]|$)|[ \t]#", text)
            if m is None or m.group().endswith("#"):
                return None
            key = text[: m.start()].rstrip()
            if not key:
                return None
            colon = col + m.start()
        vcol = colon + 1
        while vcol < len(line) and line[vcol] in " \t":
            vcol += 1
        return key, vcol

    # -- scalars -----------------------------------------------------------

    def _value(self, col: int, parent: int) -> Any:
        """A non-collection-block node starting at ``col`` of the current line."""
        text = self.lines[self.i][col:]
        first = text[0]
        if first in _UNSUPPORTED and not (first == "?" and text[1:2] not in ("", " ", "\t")):
            raise self._err(_UNSUPPORTED[first])
        if first in "|>":
            return self._block_scalar(col, parent)
        if first in "[{":
            return self._flow(col)
        if first in "\"'":
            start = self.i
            scanned = self._quoted(self.i, col, multiline=True)
            assert scanned is not None
            value, self.i, end = scanned
            if _strip_comment(self.lines[self.i][end:].strip()) or (
                self.lines[self.i][end:end + 1] == "#"
            ):
                raise self._err("unexpected text after the quoted scalar" + (
                    f" that starts on line {start + 1}" if start != self.i else ""))
            self.i += 1
            return value
        return self._plain(col, parent)

    def _plain(self, col: int, parent: int) -> Any:
        parts = [self._plain_line(_strip_comment(self.lines[self.i][col:]))]
        self.i += 1
        folded = False
        j, empties = self.i, 0
        while j < len(self.lines):
            line = self.lines[j]
            if not line.strip():
                empties, j = empties + 1, j + 1
                continue
            if line.lstrip().startswith("#") or self._indent_at(line, j) <= parent:
                break
            parts.append("\n" * empties if empties else " ")
            parts.append(self._plain_line(_strip_comment(line.strip())))
            folded = True
            empties, j = 0, j + 1
            self.i = j
        value = "".join(parts)
        return value if folded else _resolve(value)

    def _indent_at(self, line: str, idx: int) -> int:
        saved, self.i = self.i, idx
        try:
            return self._indent(line)
        finally:
            self.i = saved

    def _plain_line(self, text: str) -> str:
        if re.search(r":[ \t]", text) or text.endswith(":"):
            raise self._err("mapping values are not allowed here (quote the value)")
        return text

    def _quoted(self, i: int, col: int, multiline: bool) -> Optional[tuple[str, int, int]]:
        """Scan a quoted scalar from (line i, col): (value, closing line, column after the quote)."""
        quote = self.lines[i][col]
        buf: list[str] = []
        keep = 0  # escapes and folds are never trimmed as trailing whitespace
        start, pos, line = i, col + 1, self.lines[i]
        while True:
            escaped_break = False
            while pos < len(line):
                ch = line[pos]
                if ch == quote and quote == "'" and line.startswith("''", pos):
                    buf.append("'")
                    keep, pos = len(buf), pos + 2
                elif ch == quote:
                    return "".join(buf), i, pos + 1
                elif ch == "\\" and quote == '"':
                    if pos + 1 == len(line):
                        escaped_break = True
                        break
                    text, pos = self._escape(line, pos, i)
                    buf.append(text)
                    keep = len(buf)
                else:
                    buf.append(ch)
                    pos += 1
            if not multiline:
                return None
            if not escaped_break:
                while len(buf) > keep and buf[-1] in (" ", "\t"):
                    buf.pop()
            empties = 0
            i += 1
            while i < len(self.lines) and not self.lines[i].strip():
                empties, i = empties + 1, i + 1
            if i >= len(self.lines):
                raise self._err("unterminated quoted scalar", start)
            line = self.lines[i]
            buf.append("\n" * empties if (empties or escaped_break) else " ")
            keep = len(buf)
            pos = len(line) - len(line.lstrip(" \t"))

    def _escape(self, line: str, pos: int, i: int) -> tuple[str, int]:
        code = line[pos + 1]
        if code in _ESCAPES:
            return _ESCAPES[code], pos + 2
        width = _HEX_ESCAPES.get(code)
        digits = line[pos + 2:pos + 2 + width] if width else ""
        if width and len(digits) == width and all(c in "0123456789abcdefABCDEF" for c in digits):
            return chr(int(digits, 16)), pos + 2 + width
        raise self._err(f"unknown escape '\\{code}' in a double-quoted scalar", i)

    def _block_scalar(self, col: int, parent: int) -> str:
        header = _strip_comment(self.lines[self.i][col:]).strip()
        style, chomp, explicit = header[0], "", 0
        for ch in header[1:]:
            if ch in "+-" and not chomp:
                chomp = ch
            elif ch in "123456789" and not explicit:
                explicit = int(ch)
            else:
                raise self._err(f"bad block scalar header {header!r}")
        self.i += 1
        indent = (parent + explicit if parent >= 0 else explicit) if explicit else 0
        if not indent:
            j = self.i
            while j < len(self.lines) and not self.lines[j].strip():
                j += 1
            indent = self._indent_at(self.lines[j], j) if j < len(self.lines) else 0
            if indent <= parent:
                indent = parent + 1  # an empty block scalar
        lines: list[str] = []
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.strip() and len(line) - len(line.lstrip(" ")) < indent:
                break
            lines.append(line[indent:])
            self.i += 1
        trailing = 0
        while lines and not lines[-1].strip():
            lines.pop()
            trailing += 1
        text = "\n".join(lines) if style == "|" else _fold(lines)
        if chomp == "-" or not lines:
            return text + ("\n" * trailing if chomp == "+" else "")
        return text + "\n" + ("\n" * trailing if chomp == "+" else "")

    # -- flow collections (one line) ------------------------------------------

    def _flow(self, col: int) -> Any:
        line = self.lines[self.i]
        value, end = self._flow_node(line, col)
        if _strip_comment(line[end:].strip()) or line[end:end + 1] == "#":
            raise self._err("unexpected text after the flow collection")
        self.i += 1
        return value

    def _flow_node(self, s: str, pos: int) -> tuple[Any, int]:
        pos = self._ws(s, pos)
        c = s[pos:pos + 1]
        if c == "[":
            items: list[Any] = []
            pos = self._ws(s, pos + 1)
            while s[pos:pos + 1] != "]":
                item, pos = self._flow_node(s, pos)
                items.append(item)
                pos = self._flow_sep(s, pos, "]")
            return items, pos + 1
        if c == "{":
            out: dict[str, Any] = {}
            pos = self._ws(s, pos + 1)
            while s[pos:pos + 1] != "}":
                key, pos = self._flow_scalar(s, pos, raw=True)
                pos = self._ws(s, pos)
                value: Any = None
                if s[pos:pos + 1] == ":":
                    pos = self._ws(s, pos + 1)
                    if s[pos:pos + 1] not in (",", "}"):
                        value, pos = self._flow_node(s, pos)
                if key in out:
                    raise self._err(f"duplicate key {key!r}")
                out[key] = value
                pos = self._flow_sep(s, pos, "}")
            return out, pos + 1
        return self._flow_scalar(s, pos)

    def _flow_scalar(self, s: str, pos: int, raw: bool = False) -> tuple[Any, int]:
        c = s[pos:pos + 1]
        if not c:
            raise self._err("unterminated flow collection (multi-line flow style is not supported)")
        if c in _UNSUPPORTED:
            raise self._err(_UNSUPPORTED[c])
        if c in "\"'":
            scanned = self._quoted(self.i, pos, multiline=False)
            if scanned is None:
                raise self._err("unterminated quoted scalar in a flow collection")
            return scanned[0], scanned[2]
        m = re.compile(r"[,\[\]{}]|:(?=[ \t,\[\]{}]|$)|[ \t]#").search(s, pos)
        end = m.start() if m else len(s)
        text = s[pos:end].strip()
        if not text or c in "[]{},#":
            raise self._err("empty or malformed entry in a flow collection")
        return (text if raw else _resolve(text)), end

    def _flow_sep(self, s: str, pos: int, close: str) -> int:
        pos = self._ws(s, pos)
        c = s[pos:pos + 1]
        if c == ",":
            return self._ws(s, pos + 1)
        if c == close:
            return pos
        if not c:
            raise self._err("unterminated flow collection (multi-line flow style is not supported)")
        raise self._err(f"expected ',' or '{close}' in a flow collection, got {c!r}")

    @staticmethod
    def _ws(s: str, pos: int) -> int:
        while pos < len(s) and s[pos] in " \t":
            pos += 1
        return pos


def _fold(lines: list[str]) -> str:
    """Folded block scalar: single breaks between normal lines become spaces."""
    out = ""
    prev: Optional[str] = None
    empties = 0
    for line in lines:
        if not line.strip():
            empties += 1
            continue
        if prev is None:
            out = "\n" * empties + line
        elif prev[0] not in " \t" and line[0] not in " \t":
            out += ("\n" * empties if empties else " ") + line
        else:
            out += "\n" * (empties + 1) + line
        prev, empties = line, 0
    return out
