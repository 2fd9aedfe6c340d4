"""Load YAML files strictly and keep line numbers, so every error can name its place."""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ors_migrate.errors import InputError

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_NODES = 200_000


class LocatedDocument:
    """A parsed YAML document and the way back from a path of keys to a line number.

    `root` is ruamel's round-trip tree, or, for a document read by the fast path, the plain
    data itself with `lines` (the line of every key and item by its path of keys)."""

    def __init__(
        self,
        path: str,
        root: Any,
        error: type[InputError] = InputError,
        lines: dict[tuple[str | int, ...], int] | None = None,
    ) -> None:
        self.path = path
        self.root = root
        self.error = error
        self.lines = lines

    def data(self) -> Any:
        """Plain dicts and lists; aliases are copied, so a self-referencing one is refused."""
        if self.lines is not None:
            return self.root  # the fast path built plain data and refused aliases
        try:
            return _PlainCopy(MAX_NODES)(self.root)
        except _KeyCollision as collision:
            raise self.error(
                f"keys {collision.first!r} and {collision.second!r} of one mapping are the same "
                "key once read as text: keep one of them",
                file=self.path,
                line=collision.line,
                rule="yaml-duplicate-key",
            ) from None
        except (RecursionError, _TooLarge):
            raise self.error(
                f"YAML aliases or nesting expand beyond {MAX_NODES} values "
                "(is an anchor used inside itself?)",
                file=self.path,
                rule="yaml-size",
            ) from None

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """1-based line of the deepest node of `loc` that exists in the document."""
        if self.lines is not None:
            return self._line_from_map(loc)
        node = self.root
        line: int | None = 1
        for key in loc:
            if isinstance(node, CommentedMap) and key in node:
                # A key merged in with `<<:` has no position of its own: keep the map's line.
                with contextlib.suppress(KeyError):
                    line = node.lc.key(key)[0] + 1
                node = node[key]
            elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
                line = node.lc.item(key)[0] + 1
                node = node[key]
            else:
                break
        return line

    def _line_from_map(self, loc: Sequence[str | int]) -> int | None:
        assert self.lines is not None
        line: int | None = 1
        for depth in range(1, len(loc) + 1):
            found = self.lines.get(tuple(loc[:depth]))
            if found is None:
                break
            line = found
        return line


class _TooLarge(Exception):
    pass


class _KeyCollision(Exception):
    """Two keys of one mapping that differ as values (`1` and `'1'`) but not as text."""

    def __init__(self, first: Any, second: Any, line: int | None) -> None:
        super().__init__(first, second, line)
        self.first, self.second, self.line = first, second, line


class _PlainCopy:
    """Copies a document into plain dicts and lists, refusing alias bombs: aliases are copied,
    so a few lines of anchors could otherwise expand into millions of nodes."""

    def __init__(self, max_nodes: int) -> None:
        self.left = max_nodes

    def __call__(self, node: Any) -> Any:
        self.left -= 1
        if self.left < 0:
            raise _TooLarge
        if isinstance(node, dict):
            copied: dict[str, Any] = {}
            first: dict[str, Any] = {}
            for key, value in node.items():
                name = key if isinstance(key, str) else str(key)
                if name in copied:
                    raise _KeyCollision(first[name], key, _key_line(node, key))
                first[name] = key
                copied[name] = self(value)
            return copied
        if isinstance(node, list):
            return [self(v) for v in node]
        return node


def _key_line(node: Any, key: Any) -> int | None:
    """The 1-based line of `key` in a ruamel mapping, when it has one (not a merged key)."""
    try:
        return int(node.lc.key(key)[0]) + 1
    except (AttributeError, KeyError, TypeError):
        return None


def _explain(problem: str) -> str:
    if "'\\t'" in problem:
        return f"{problem}; YAML does not allow tabs for indentation, indent with spaces"
    return problem


SURROGATE = re.compile("[\ud800-\udfff]")
NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
MAX_DIGITS = 4000


def text_of(node: Any) -> str:
    """Every string of a loaded document, keys included, joined (to search them all at once)."""
    parts: list[str] = []
    stack = [node]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, (dict, list)) and id(item) not in seen:
            seen.add(id(item))
            stack.extend(item.keys() if isinstance(item, dict) else ())
            stack.extend(item.values() if isinstance(item, dict) else item)
    return "\n".join(parts)


def _line_of_text(text: str, needle: str) -> int | None:
    """The line of a decoded character: searched in the source as an escape too."""
    for form in (needle, f"\\u{ord(needle):04x}", f"\\u{ord(needle):04X}"):
        index = text.find(form)
        if index >= 0:
            return text[:index].count("\n") + 1
    return None


def _warning_line(exc: Warning) -> int | None:
    match = re.search(r"line (\d+)", str(exc))
    return int(match.group(1)) if match else None


def _unbuildable_scalar_line(yaml: YAML, text: str) -> int | None:
    """The line of the first node that cannot become a value: a scalar tagged as a number that
    is not one, a number too long to convert, or a list or mapping used as a key."""
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    try:
        root = yaml.compose(text)
    except (YAMLError, ValueError, TypeError, RecursionError):
        return None
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, ScalarNode):
            digits = sum(c.isdigit() for c in str(node.value))
            if node.tag in NUMBER_TAGS or digits > MAX_DIGITS:
                try:
                    if digits > MAX_DIGITS:
                        raise ValueError
                    float(str(node.value).replace("_", ""))
                except ValueError:
                    return node.start_mark.line + 1
        elif isinstance(node, MappingNode):
            for key, _value in node.value:
                if not isinstance(key, ScalarNode):
                    # A list or mapping used as a key (`? [a, b]`) cannot be a dict key.
                    return key.start_mark.line + 1
            for key, value in reversed(node.value):
                stack += [value, key]
        elif isinstance(node, SequenceNode):
            stack += list(reversed(node.value))
    return None


# The fast path: libyaml (PyYAML's C parser) reads the events, ruamel's YAML 1.2 resolver and
# constructor give each plain scalar its value, so the data is what ruamel would build. Anything
# beyond plain mappings, lists and scalars goes to ruamel's own (pure Python) loader, which owns
# every error message.
# Anchors, tags, merge keys, directives; and tabs and the line breaks libyaml and ruamel do not
# read alike (NEL, LS, PS): a tab before a comment, after a colon or inside a plain scalar.
_SLOW_ONLY = re.compile(r"[&!\t\x85\u2028\u2029]|<<|^%", re.MULTILINE)
# A lone surrogate can only come from an escape of a double-quoted scalar (UTF-8 text holds
# none): without `\u` or `\U` in the text, there is no need to search every string for one.
_SURROGATE_ESCAPE = re.compile(r"\\[uU]")


class _NotPlain(Exception):
    """The document needs ruamel's loader."""


class _FastBuilder:
    """Plain data and the line of every key and item, from libyaml's events (not its nodes: a
    node tree is one more Python object and two resolver calls per value, and a site of 500
    HA pairs has some 17,000 values)."""

    def __init__(self, text: str) -> None:
        import yaml
        from ruamel.yaml.nodes import ScalarNode

        self.parser = yaml.cyaml.CParser(text)
        self.next_event = self.parser.get_event
        self.events = yaml.events
        self.ruamel = YAML(typ="rt", pure=True)
        self.ruamel_scalar = ScalarNode
        self.scalars: dict[str, Any] = {}
        # A plain scalar whose first character starts none of YAML 1.2's implicit types (no
        # number, boolean, null...: `ORS_0001_A`, `pair-0001`, `primary`) is ruamel's text as it
        # stands; a site of 500 HA pairs has thousands, which ruamel would each resolve and
        # construct only to return them unchanged.
        resolver = self.ruamel.resolver
        table = resolver.versioned_resolver
        self.typed_starts = frozenset(table) if None not in table else None
        if resolver.yaml_path_resolvers:
            self.typed_starts = None
        self.lines: dict[tuple[str | int, ...], int] = {}
        self.left = MAX_NODES

    def dispose(self) -> None:
        self.parser.dispose()

    def document(self) -> Any:
        """The data of the stream's one document; None for a stream without any."""
        events = self.events
        if type(self.next_event()) is not events.StreamStartEvent:
            raise _NotPlain
        start = self.next_event()
        if type(start) is events.StreamEndEvent:
            return None
        if type(start) is not events.DocumentStartEvent:
            raise _NotPlain
        root = self.build(self.next_event(), ())
        if type(self.next_event()) is not events.DocumentEndEvent:
            raise _NotPlain
        if type(self.next_event()) is not events.StreamEndEvent:
            raise _NotPlain  # a second document
        return root

    def scalar(self, event: Any) -> Any:
        if event.tag is not None or event.anchor is not None:
            raise _NotPlain  # an explicit tag, an anchor
        value = event.value
        if not event.implicit[0]:
            return value  # quoted, literal or folded: text as it stands
        if value and self.typed_starts is not None and value[0] not in self.typed_starts:
            return value
        try:
            return self.scalars[value]
        except KeyError:
            pass
        resolved = self.ruamel.resolver.resolve(self.ruamel_scalar, value, (True, False))
        built = self.ruamel.constructor.construct_object(self.ruamel_scalar(resolved, value))
        self.scalars[value] = built
        return built

    def build(self, event: Any, path: tuple[str | int, ...]) -> Any:
        """The value that starts with `event`, reading the events of its items."""
        self.left -= 1
        if self.left < 0:
            raise _NotPlain
        events = self.events
        kind = type(event)
        if kind is events.ScalarEvent:
            return self.scalar(event)
        if kind not in (events.SequenceStartEvent, events.MappingStartEvent):
            raise _NotPlain  # an alias
        if event.tag is not None or event.anchor is not None:
            raise _NotPlain
        lines = self.lines
        next_event = self.next_event
        if kind is events.SequenceStartEvent:
            items: list[Any] = []
            while type(item := next_event()) is not events.SequenceEndEvent:
                where = (*path, len(items))
                lines[where] = item.start_mark.line + 1
                items.append(self.build(item, where))
            return items
        built: dict[str, Any] = {}
        keys: set[Any] = set()
        while type(key_event := next_event()) is not events.MappingEndEvent:
            if type(key_event) is not events.ScalarEvent:
                raise _NotPlain  # a list or mapping as a key, or an alias
            key = self.scalar(key_event)
            name = key if isinstance(key, str) else str(key)
            if name in built or key in keys:
                # A duplicate key, as a value (`1.0` and `1` are equal) or as text.
                raise _NotPlain
            keys.add(key)
            where = (*path, name)
            lines[where] = key_event.start_mark.line + 1
            built[name] = self.build(next_event(), where)
        return built


def _fast_document(text: str, name: str, error: type[InputError]) -> LocatedDocument | None:
    """The document read by libyaml when it is plain YAML that reads the same in both; else
    None (ruamel reads it)."""
    if _SLOW_ONLY.search(text):
        return None
    try:
        builder = _FastBuilder(text)
        try:
            root = builder.document()
        finally:
            builder.dispose()
    except Exception:  # noqa: BLE001 - anything unusual is ruamel's to read and to report
        return None
    if not isinstance(root, dict):
        return None
    if _SURROGATE_ESCAPE.search(text) and SURROGATE.search(text_of(root)):
        return None
    return LocatedDocument(name, root, error, builder.lines)


def load_yaml(path: str | Path, error: type[InputError], what: str) -> LocatedDocument:
    """Read and parse one YAML mapping; raise `error` with file and line on any problem."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise error(f"{what} not found", file=name, rule="file-exists") from None
    except IsADirectoryError:
        raise error(f"{what} is a directory, not a file", file=name, rule="file-exists") from None
    except OSError as exc:
        raise error(
            f"cannot read {what}: {exc.strerror}", file=name, rule="file-readable"
        ) from None
    return parse_yaml(raw, name, error, what)


def parse_yaml(raw: bytes, name: str, error: type[InputError], what: str) -> LocatedDocument:
    if len(raw) > MAX_FILE_BYTES:
        raise error(f"{what} is larger than {MAX_FILE_BYTES} bytes", file=name, rule="file-size")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(
            f"{what} is not UTF-8 text (undecodable byte at offset {exc.start}): "
            "is it a binary file, or saved in another encoding?",
            file=name,
            line=line,
            rule="utf-8",
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise error(f"{what} contains a NUL byte", file=name, line=line, rule="text") from None
    if not text.strip():
        raise error(f"{what} is empty", file=name, line=1, rule="not-empty")
    fast = _fast_document(text, name, error)
    if fast is not None:
        return fast
    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    try:
        with warnings.catch_warnings():
            # ruamel reports some problems (an anchor defined twice) only as warnings.
            warnings.simplefilter("error")
            root = yaml.load(text)
    except Warning as exc:
        raise error(
            f"invalid YAML: {str(exc).strip().splitlines()[0]}",
            file=name,
            line=_warning_line(exc),
            rule="yaml-syntax",
        ) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = mark.line + 1 if mark is not None else None
        problem = _explain(exc.problem or exc.context or "invalid YAML")
        raise error(f"invalid YAML: {problem}", file=name, line=where, rule="yaml-syntax") from None
    except YAMLError as exc:
        raise error(f"invalid YAML: {exc}", file=name, rule="yaml-syntax") from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise error(
            f"invalid YAML: a value cannot be read: {str(exc)[:200]}",
            file=name,
            line=_unbuildable_scalar_line(yaml, text),
            rule="yaml-syntax",
        ) from None
    surrogate = SURROGATE.search(text_of(root))
    if surrogate is not None:
        raise error(
            "a string holds a lone UTF-16 surrogate (an escape such as \\ud83d): write the "
            "character itself, or \\U0001F4C8",
            file=name,
            line=_line_of_text(text, surrogate.group()),
            rule="text",
        )
    if root is None:
        raise error(f"{what} is empty", file=name, line=1, rule="not-empty")
    if not isinstance(root, CommentedMap):
        raise error(
            f"{what} must be a mapping of keys to values at the top level",
            file=name,
            line=1,
            rule="top-level-mapping",
        )
    return LocatedDocument(name, root, error)
