"""CQL stand-in: a protocol-level test double for Apache Cassandra, NOT a database.

No Cassandra server can be installed where the rehearsal lab runs, so this module speaks the CQL
native protocol (v4, and v3 for 2.1-era releases) well enough for the real `cassandra-driver`,
in the spirit of DataStax's simulacron. It answers what the driver sends when it connects
(OPTIONS, STARTUP, PasswordAuthenticator, REGISTER, the `system.local`/`system.peers` and
`system_schema` reads) and keeps an in-memory table store for simple, non-prepared statements:

- CREATE KEYSPACE / CREATE TABLE [IF NOT EXISTS], DROP KEYSPACE / DROP TABLE [IF EXISTS],
  TRUNCATE, USE;
- INSERT ... [IF NOT EXISTS] [USING TTL n] (per-cell expiry, TTL 0 = none);
- SELECT * | columns | COUNT(*) | TTL(column) ... [WHERE col = v | col IN (...) AND ...]
  [LIMIT n] [ALLOW FILTERING], with Cassandra's ALLOW FILTERING rule;
- DELETE FROM ... WHERE <full partition key> [AND clustering prefix].

Column types: text/varchar/ascii, int, bigint and boolean. Prepared statements, batches,
UPDATE, ranges and secondary indexes are not implemented: they get an error frame, never a crash.
A version newer than the stand-in speaks gets ERROR 0x000A "Invalid or unsupported protocol
version", so an unpinned driver falls back as it does against a real node.

An optional TCP listener stands in for the Thrift port (9160) ORS uses: it accepts connections
and nothing more. Cassandra 4.0 removed Thrift, so a 4.x stand-in refuses to open one.

Run `python -m ors_migrate.lab.cql_standin --help` for the command line.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import itertools
import json
import logging
import math
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LABEL = "CQL stand-in (protocol-level test double, not Apache Cassandra)"

# --------------------------------------------------------------------------- wire constants

OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE = 0x00, 0x01, 0x02, 0x03
OP_OPTIONS, OP_SUPPORTED, OP_QUERY, OP_RESULT = 0x05, 0x06, 0x07, 0x08
OP_PREPARE, OP_EXECUTE, OP_REGISTER, OP_BATCH = 0x09, 0x0A, 0x0B, 0x0D
OP_AUTH_RESPONSE, OP_AUTH_SUCCESS = 0x0F, 0x10

ERR_SERVER, ERR_PROTOCOL, ERR_BAD_CREDENTIALS = 0x0000, 0x000A, 0x0100
ERR_SYNTAX, ERR_UNAUTHORIZED, ERR_INVALID = 0x2000, 0x2100, 0x2200
ERR_CONFIG, ERR_ALREADY_EXISTS = 0x2300, 0x2400

FLAG_COMPRESSION, FLAG_CUSTOM_PAYLOAD = 0x01, 0x04
MAX_BODY = 256 * 1024 * 1024
MAX_TTL = 630_720_000
AUTHENTICATOR = "org.apache.cassandra.auth.PasswordAuthenticator"


class CqlError(Exception):
    """An error the stand-in answers with an ERROR frame (code + message)."""

    def __init__(self, code: int, message: str, extra: bytes = b"") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


def syntax_error(message: str) -> CqlError:
    return CqlError(ERR_SYNTAX, message)


def invalid(message: str) -> CqlError:
    return CqlError(ERR_INVALID, message)


def already_exists(message: str, keyspace: str, table: str = "") -> CqlError:
    return CqlError(ERR_ALREADY_EXISTS, message, enc_string(keyspace) + enc_string(table))


# --------------------------------------------------------------------------- encoding


def enc_short(n: int) -> bytes:
    return struct.pack(">H", n)


def enc_int(n: int) -> bytes:
    return struct.pack(">i", n)


def enc_string(s: str) -> bytes:
    data = s.encode()
    return enc_short(len(data)) + data


def enc_bytes(data: bytes | None) -> bytes:
    return enc_int(-1) if data is None else enc_int(len(data)) + data


def enc_string_list(items: list[str]) -> bytes:
    return enc_short(len(items)) + b"".join(enc_string(i) for i in items)


def enc_string_multimap(mapping: dict[str, list[str]]) -> bytes:
    body = b"".join(enc_string(k) + enc_string_list(v) for k, v in mapping.items())
    return enc_short(len(mapping)) + body


class Reader:
    """Reads the protocol's primitive notations from a frame body."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CqlError(ERR_PROTOCOL, "truncated message body")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def short(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def integer(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def string(self) -> str:
        return self.take(self.short()).decode()

    def long_string(self) -> str:
        return self.take(self.integer()).decode()

    def value(self) -> bytes | None:
        """The `[bytes]` notation: a length, -1 meaning null."""
        n = self.integer()
        return None if n < 0 else self.take(n)

    def string_map(self) -> dict[str, str]:
        return {self.string(): self.string() for _ in range(self.short())}

    def skip_bytes_map(self) -> None:
        for _ in range(self.short()):
            self.string()
            self.value()


# --------------------------------------------------------------------------- types


@dataclass(frozen=True)
class CqlType:
    name: str
    params: tuple[CqlType, ...] = ()

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}<{', '.join(str(p) for p in self.params)}>"


TEXT, INT, BIGINT, BOOLEAN = CqlType("text"), CqlType("int"), CqlType("bigint"), CqlType("boolean")
UUID_T, INET = CqlType("uuid"), CqlType("inet")
SET_TEXT = CqlType("set", (TEXT,))
MAP_TEXT = CqlType("map", (TEXT, TEXT))

_TYPE_IDS = {
    "bigint": 0x0002,
    "boolean": 0x0004,
    "int": 0x0009,
    "uuid": 0x000C,
    "text": 0x000D,
    "inet": 0x0010,
    "list": 0x0020,
    "map": 0x0021,
    "set": 0x0022,
}
_TYPE_ALIASES = {
    "text": TEXT,
    "varchar": TEXT,
    "ascii": TEXT,
    "int": INT,
    "bigint": BIGINT,
    "boolean": BOOLEAN,
}


def enc_type(t: CqlType) -> bytes:
    return enc_short(_TYPE_IDS[t.name]) + b"".join(enc_type(p) for p in t.params)


def enc_value(t: CqlType, value: Any) -> bytes | None:
    """A value's cell bytes (None for null)."""
    if value is None:
        return None
    if t.name == "text":
        return str(value).encode()
    if t.name == "int":
        return struct.pack(">i", value)
    if t.name == "bigint":
        return struct.pack(">q", value)
    if t.name == "boolean":
        return b"\x01" if value else b"\x00"
    if t.name == "uuid":
        return uuid.UUID(str(value)).bytes
    if t.name == "inet":
        return ipaddress.ip_address(value).packed
    if t.name in ("set", "list"):
        items = sorted(value) if t.name == "set" else list(value)
        return enc_int(len(items)) + b"".join(enc_bytes(enc_value(t.params[0], i)) for i in items)
    if t.name == "map":
        k_t, v_t = t.params
        pairs = sorted(value.items())
        body = b"".join(
            enc_bytes(enc_value(k_t, k)) + enc_bytes(enc_value(v_t, v)) for k, v in pairs
        )
        return enc_int(len(pairs)) + body
    raise CqlError(ERR_SERVER, f"cannot encode type {t}")


def coerce(column: str, t: CqlType, value: Any) -> Any:
    """Check a literal against a column's type the way Cassandra words the refusal."""
    if value is None:
        return None
    kind = {str: "STRING", bool: "BOOLEAN", int: "INTEGER", float: "FLOAT"}.get(type(value), "")
    ok = {"text": str, "int": int, "bigint": int, "boolean": bool}.get(t.name)
    if ok is None or type(value) is not ok:
        raise invalid(f'Invalid {kind or "constant"} constant ({value}) for "{column}" of type {t}')
    bits = {"int": 31, "bigint": 63}.get(t.name)
    if bits and not -(2**bits) <= value < 2**bits:
        raise invalid(f'Invalid INTEGER constant ({value}) for "{column}": out of {t} range')
    return value


# --------------------------------------------------------------------------- lexer

_TOKEN = re.compile(
    r"""(?P<ws>\s+|--[^\n]*|//[^\n]*|/\*.*?\*/)
      |(?P<string>'(?:[^']|'')*')
      |(?P<qident>"(?:[^"]|"")*")
      |(?P<number>-?\d+(?:\.\d+)?)
      |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      |(?P<symbol><=|>=|!=|[(),.;*=<>?{}:\[\]+\-])""",
    re.X | re.S,
)


@dataclass(frozen=True)
class Token:
    kind: str  # ident, qident, string, number, symbol, eof
    text: str
    pos: int

    def is_kw(self, *words: str) -> bool:
        return self.kind == "ident" and self.text.lower() in words


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(query):
        match = _TOKEN.match(query, pos)
        if not match:
            raise syntax_error(
                f"line 1:{pos} token recognition error at: '{query[pos : pos + 10]}'"
            )
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(Token("eof", "<EOF>", len(query)))
    return tokens


# --------------------------------------------------------------------------- statements


@dataclass
class CreateKeyspace:
    name: str
    if_not_exists: bool
    replication: dict[str, str]
    durable_writes: bool


@dataclass
class CreateTable:
    keyspace: str | None
    name: str
    if_not_exists: bool
    columns: dict[str, CqlType]
    partition_key: list[str]
    clustering: list[str]


@dataclass
class Drop:
    target: str  # KEYSPACE or TABLE
    keyspace: str | None
    name: str
    if_exists: bool


@dataclass
class Truncate:
    keyspace: str | None
    name: str


@dataclass
class Use:
    keyspace: str


@dataclass
class Insert:
    keyspace: str | None
    table: str
    values: dict[str, Any]
    ttl: int | None
    if_not_exists: bool


@dataclass
class Selector:
    kind: str  # star, count, column, ttl
    column: str = ""
    alias: str = ""


@dataclass
class Relation:
    column: str
    values: list[Any]  # one value for '=', several for IN


@dataclass
class Select:
    keyspace: str | None
    table: str
    selectors: list[Selector]
    where: list[Relation]
    limit: int | None
    allow_filtering: bool


@dataclass
class Delete:
    keyspace: str | None
    table: str
    where: list[Relation]


Statement = CreateKeyspace | CreateTable | Drop | Truncate | Use | Insert | Select | Delete

# --------------------------------------------------------------------------- parser

_SUPPORTED_HINT = (
    "the CQL stand-in understands CREATE/DROP KEYSPACE, CREATE/DROP TABLE, TRUNCATE, USE, "
    "INSERT, SELECT and DELETE"
)


class Parser:
    """Recursive descent over the small CQL subset the stand-in executes."""

    def __init__(self, query: str) -> None:
        self.tokens = tokenize(query)
        self.i = 0

    # -- token helpers
    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        token = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return token

    def fail(self, expecting: str = "") -> CqlError:
        token = self.peek()
        tail = f" expecting {expecting}" if expecting else ""
        return syntax_error(
            f"line 1:{token.pos} no viable alternative at input '{token.text}'{tail}"
        )

    def accept_kw(self, *words: str) -> bool:
        if self.peek().is_kw(*words):
            self.next()
            return True
        return False

    def expect_kw(self, *words: str) -> None:
        if not self.accept_kw(*words):
            raise self.fail(" ".join(w.upper() for w in words))

    def accept_sym(self, sym: str) -> bool:
        token = self.peek()
        if token.kind == "symbol" and token.text == sym:
            self.next()
            return True
        return False

    def expect_sym(self, sym: str) -> None:
        if not self.accept_sym(sym):
            raise self.fail(f"'{sym}'")

    def accept_all_kw(self, *words: str) -> bool:
        """Accept a keyword sequence (IF NOT EXISTS) only when all of it is there."""
        if all(
            self.tokens[min(self.i + n, len(self.tokens) - 1)].is_kw(w) for n, w in enumerate(words)
        ):
            self.i += len(words)
            return True
        return False

    def ident(self) -> str:
        token = self.peek()
        if token.kind == "ident":
            self.next()
            return token.text.lower()
        if token.kind == "qident":
            self.next()
            return token.text[1:-1].replace('""', '"')
        raise self.fail("identifier")

    def qualified(self) -> tuple[str | None, str]:
        first = self.ident()
        if self.accept_sym("."):
            return first, self.ident()
        return None, first

    def literal(self) -> Any:
        token = self.next()
        if token.kind == "string":
            return token.text[1:-1].replace("''", "'")
        if token.kind == "number":
            return float(token.text) if "." in token.text else int(token.text)
        if token.is_kw("true", "false"):
            return token.text.lower() == "true"
        if token.is_kw("null"):
            return None
        if token.kind == "symbol" and token.text == "{":
            return self.map_literal()
        if token.kind == "symbol" and token.text == "?":
            raise invalid("bind markers need prepared statements, which the CQL stand-in lacks")
        self.i -= 1
        raise self.fail("a constant")

    def map_literal(self) -> dict[str, str]:
        result: dict[str, str] = {}
        while not self.accept_sym("}"):
            if result:
                self.expect_sym(",")
            key = self.literal()
            self.expect_sym(":")
            result[str(key)] = str(self.literal())
        return result

    def end(self) -> None:
        self.accept_sym(";")
        if self.peek().kind != "eof":
            raise self.fail()

    # -- statements
    def statement(self) -> Statement:
        token = self.peek()
        handlers: dict[str, Callable[[], Statement]] = {
            "create": self.create,
            "drop": self.drop,
            "truncate": self.truncate,
            "use": self.use,
            "insert": self.insert,
            "select": self.select,
            "delete": self.delete,
        }
        handler = handlers.get(token.text.lower()) if token.kind == "ident" else None
        if handler is None:
            raise syntax_error(
                f"line 1:{token.pos} no viable alternative at input '{token.text}' "
                f"({_SUPPORTED_HINT})"
            )
        self.next()
        result = handler()
        self.end()
        return result

    def create(self) -> Statement:
        if self.accept_kw("keyspace", "schema"):
            return self.create_keyspace()
        if self.accept_kw("table", "columnfamily"):
            return self.create_table()
        raise self.fail("KEYSPACE or TABLE")

    def create_keyspace(self) -> CreateKeyspace:
        if_not_exists = self.accept_all_kw("if", "not", "exists")
        name = self.ident()
        replication: dict[str, str] = {}
        durable = True
        if self.accept_kw("with"):
            options = self.options()
            raw = options.get("replication", {})
            replication = raw if isinstance(raw, dict) else {}
            durable = bool(options.get("durable_writes", True))
        if "class" not in replication:
            raise CqlError(ERR_CONFIG, "Missing mandatory replication strategy class")
        return CreateKeyspace(name, if_not_exists, replication, durable)

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        while True:
            key = self.ident()
            self.expect_sym("=")
            options[key] = self.literal()
            if not self.accept_kw("and"):
                return options

    def create_table(self) -> CreateTable:
        if_not_exists = self.accept_all_kw("if", "not", "exists")
        keyspace, name = self.qualified()
        self.expect_sym("(")
        columns: dict[str, CqlType] = {}
        key: tuple[list[str], list[str]] | None = None
        while True:
            if self.accept_all_kw("primary", "key"):
                key = self.key_definition(key)
            else:
                column = self.ident()
                columns[column] = self.column_type(column)
                if self.accept_all_kw("primary", "key"):
                    key = self.single_key(key, column)
            if self.accept_sym(")"):
                break
            self.expect_sym(",")
        if self.accept_kw("with"):
            self.skip_to_end()
        if key is None:
            raise invalid("No PRIMARY KEY specifed (exactly one required)")
        partition, clustering = key
        for column in partition + clustering:
            if column not in columns:
                raise invalid(f"Unknown definition {column} referenced in PRIMARY KEY")
        return CreateTable(keyspace, name, if_not_exists, columns, partition, clustering)

    def single_key(
        self, current: tuple[list[str], list[str]] | None, column: str
    ) -> tuple[list[str], list[str]]:
        if current is not None:
            raise invalid("Multiple PRIMARY KEYs specifed (exactly one required)")
        return [column], []

    def key_definition(
        self, current: tuple[list[str], list[str]] | None
    ) -> tuple[list[str], list[str]]:
        if current is not None:
            raise invalid("Multiple PRIMARY KEYs specifed (exactly one required)")
        self.expect_sym("(")
        if self.accept_sym("("):
            partition = self.ident_list()
        else:
            partition = [self.ident()]
        clustering: list[str] = []
        while self.accept_sym(","):
            clustering.append(self.ident())
        self.expect_sym(")")
        return partition, clustering

    def ident_list(self) -> list[str]:
        """Identifiers up to and including the closing parenthesis."""
        names = [self.ident()]
        while self.accept_sym(","):
            names.append(self.ident())
        self.expect_sym(")")
        return names

    def column_type(self, column: str) -> CqlType:
        token = self.peek()
        name = self.ident()
        if self.accept_sym("<"):
            depth = 1
            while depth:
                sym = self.next()
                if sym.kind == "eof":
                    raise self.fail("'>'")
                depth += {"<": 1, ">": -1}.get(sym.text, 0) if sym.kind == "symbol" else 0
            name += "<...>"
        if name not in _TYPE_ALIASES:
            raise invalid(
                f"column {column}: type {token.text} is not supported by the CQL stand-in "
                "(text, varchar, ascii, int, bigint, boolean)"
            )
        return _TYPE_ALIASES[name]

    def skip_to_end(self) -> None:
        while self.peek().kind != "eof" and not (
            self.peek().kind == "symbol" and self.peek().text == ";"
        ):
            self.next()

    def drop(self) -> Drop:
        if self.accept_kw("keyspace", "schema"):
            target = "KEYSPACE"
        elif self.accept_kw("table", "columnfamily"):
            target = "TABLE"
        else:
            raise self.fail("KEYSPACE or TABLE")
        if_exists = self.accept_all_kw("if", "exists")
        keyspace, name = self.qualified()
        if target == "KEYSPACE" and keyspace is not None:
            raise self.fail()
        return Drop(target, keyspace, name, if_exists)

    def truncate(self) -> Truncate:
        self.accept_kw("table", "columnfamily")
        return Truncate(*self.qualified())

    def use(self) -> Use:
        return Use(self.ident())

    def insert(self) -> Insert:
        self.expect_kw("into")
        keyspace, table = self.qualified()
        self.expect_sym("(")
        columns = self.ident_list()
        self.expect_kw("values")
        self.expect_sym("(")
        values = [self.literal()]
        while self.accept_sym(","):
            values.append(self.literal())
        self.expect_sym(")")
        if len(columns) != len(values):
            raise invalid("Unmatched column names/values")
        if_not_exists = self.accept_all_kw("if", "not", "exists")
        ttl = self.using()
        return Insert(keyspace, table, dict(zip(columns, values, strict=True)), ttl, if_not_exists)

    def using(self) -> int | None:
        """USING TTL n [AND TIMESTAMP t]; the timestamp is accepted and ignored."""
        ttl = None
        if not self.accept_kw("using"):
            return None
        while True:
            if self.accept_kw("ttl"):
                ttl = self.literal()
                if type(ttl) is not int or ttl < 0:
                    raise invalid(f"A TTL must be greater or equal to 0, but was {ttl}")
                if ttl > MAX_TTL:
                    raise invalid(f"ttl is too large. requested ({ttl}) maximum ({MAX_TTL})")
            else:
                self.expect_kw("timestamp")
                self.literal()
            if not self.accept_kw("and"):
                return ttl

    def select(self) -> Select:
        selectors = self.selectors()
        self.expect_kw("from")
        keyspace, table = self.qualified()
        where = self.where() if self.accept_kw("where") else []
        limit = None
        if self.accept_kw("limit"):
            limit = self.literal()
            if type(limit) is not int or limit <= 0:
                raise invalid("LIMIT must be strictly positive")
        allow = self.accept_all_kw("allow", "filtering")
        return Select(keyspace, table, selectors, where, limit, allow)

    def selectors(self) -> list[Selector]:
        if self.accept_sym("*"):
            return [Selector("star")]
        result = [self.selector()]
        while self.accept_sym(","):
            result.append(self.selector())
        return result

    def selector(self) -> Selector:
        if self.peek().is_kw("count", "ttl") and self.tokens[self.i + 1].text == "(":
            function = self.next().text.lower()
            self.expect_sym("(")
            if function == "count":
                if not self.accept_sym("*"):
                    self.literal()
                chosen = Selector("count", alias="count")
            else:
                column = self.ident()
                chosen = Selector("ttl", column, f"ttl({column})")
            self.expect_sym(")")
        else:
            column = self.ident()
            chosen = Selector("column", column, column)
        if self.accept_kw("as"):
            chosen.alias = self.ident()
        return chosen

    def where(self) -> list[Relation]:
        relations = [self.relation()]
        while self.accept_kw("and"):
            relations.append(self.relation())
        return relations

    def relation(self) -> Relation:
        column = self.ident()
        if self.accept_sym("="):
            return Relation(column, [self.literal()])
        if self.accept_kw("in"):
            self.expect_sym("(")
            values = [self.literal()]
            while self.accept_sym(","):
                values.append(self.literal())
            self.expect_sym(")")
            return Relation(column, values)
        raise syntax_error(
            f"line 1:{self.peek().pos} only '=' and IN restrictions are supported by the "
            f"CQL stand-in, not '{self.peek().text}'"
        )

    def delete(self) -> Delete:
        if not self.peek().is_kw("from"):
            raise syntax_error("the CQL stand-in deletes whole rows only (DELETE FROM t WHERE ...)")
        self.next()
        keyspace, table = self.qualified()
        self.expect_kw("where")
        return Delete(keyspace, table, self.where())


def parse(query: str) -> Statement:
    return Parser(query).statement()


# --------------------------------------------------------------------------- results


@dataclass
class Void:
    pass


@dataclass
class Rows:
    keyspace: str
    table: str
    columns: list[tuple[str, CqlType]]
    rows: list[list[Any]]


@dataclass
class SetKeyspace:
    keyspace: str


@dataclass
class SchemaChange:
    change: str  # CREATED, DROPPED, UPDATED
    target: str  # KEYSPACE, TABLE
    keyspace: str
    table: str = ""


Result = Void | Rows | SetKeyspace | SchemaChange


def encode_result(result: Result) -> bytes:
    if isinstance(result, Void):
        return enc_int(1)
    if isinstance(result, SetKeyspace):
        return enc_int(3) + enc_string(result.keyspace)
    if isinstance(result, SchemaChange):
        body = enc_string(result.change) + enc_string(result.target) + enc_string(result.keyspace)
        return enc_int(5) + body + (enc_string(result.table) if result.target == "TABLE" else b"")
    meta = enc_int(0x0001) + enc_int(len(result.columns))
    meta += enc_string(result.keyspace) + enc_string(result.table)
    meta += b"".join(enc_string(name) + enc_type(t) for name, t in result.columns)
    cells = b"".join(
        enc_bytes(enc_value(t, value))
        for row in result.rows
        for (_, t), value in zip(result.columns, row, strict=True)
    )
    return enc_int(2) + meta + enc_int(len(result.rows)) + cells


# --------------------------------------------------------------------------- store


@dataclass
class StoredRow:
    """Cells with their own expiry (monotonic seconds, None = never), plus the row marker."""

    marker_expiry: float | None
    cells: dict[str, tuple[Any, float | None]] = field(default_factory=dict)


def _alive(expiry: float | None, now: float) -> bool:
    return expiry is None or expiry > now


@dataclass
class Table:
    keyspace: str
    name: str
    columns: dict[str, CqlType]
    partition_key: list[str]
    clustering: list[str]
    rows: dict[tuple[Any, ...], StoredRow] = field(default_factory=dict)

    @property
    def key_columns(self) -> list[str]:
        return self.partition_key + self.clustering

    def ordered_columns(self) -> list[str]:
        """Cassandra's `SELECT *` order: partition key, clustering, then the rest by name."""
        rest = sorted(c for c in self.columns if c not in self.key_columns)
        return self.key_columns + rest

    def live_row(self, key: tuple[Any, ...], now: float) -> dict[str, Any] | None:
        """The row as column -> value (with `_ttl:<col>` entries for TTL()), or None when it
        is absent or every cell and the row marker have expired (then it is purged)."""
        stored = self.rows.get(key)
        if stored is None:
            return None
        cells = {c: v for c, v in stored.cells.items() if _alive(v[1], now)}
        if not cells and not _alive(stored.marker_expiry, now):
            del self.rows[key]
            return None
        row: dict[str, Any] = dict(zip(self.key_columns, key, strict=True))
        for column, (value, expiry) in cells.items():
            row[column] = value
            row[f"_ttl:{column}"] = None if expiry is None else math.ceil(expiry - now)
        return row

    def live_rows(self, now: float) -> list[dict[str, Any]]:
        rows = (self.live_row(key, now) for key in sorted(self.rows))
        return [row for row in rows if row is not None]


@dataclass
class Keyspace:
    name: str
    replication: dict[str, str]
    durable_writes: bool = True
    tables: dict[str, Table] = field(default_factory=dict)


SYSTEM_KEYSPACES = {
    "system": {"class": "org.apache.cassandra.locator.LocalStrategy"},
    "system_schema": {"class": "org.apache.cassandra.locator.LocalStrategy"},
    "system_auth": {
        "class": "org.apache.cassandra.locator.SimpleStrategy",
        "replication_factor": "1",
    },
    "system_distributed": {
        "class": "org.apache.cassandra.locator.SimpleStrategy",
        "replication_factor": "3",
    },
    "system_traces": {
        "class": "org.apache.cassandra.locator.SimpleStrategy",
        "replication_factor": "2",
    },
}


def version_tuple(release: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", release)
    if not match:
        raise ValueError(f"release version '{release}' is not like 3.11.4")
    return int(match.group(1)), int(match.group(2))


@dataclass
class NodeInfo:
    """What the node says about itself in system.local."""

    release_version: str
    cluster_name: str
    address: str
    port: int
    host_id: uuid.UUID = field(default_factory=uuid.uuid4)
    data_center: str = "datacenter1"
    rack: str = "rack1"

    @property
    def major(self) -> int:
        return version_tuple(self.release_version)[0]

    @property
    def cql_version(self) -> str:
        return {2: "3.2.1", 3: "3.4.4"}.get(self.major, "3.4.5")


_VirtualColumns = list[tuple[str, CqlType]]
_PEERS: _VirtualColumns = [
    ("peer", INET),
    ("data_center", TEXT),
    ("host_id", UUID_T),
    ("preferred_ip", INET),
    ("rack", TEXT),
    ("release_version", TEXT),
    ("rpc_address", INET),
    ("schema_version", UUID_T),
    ("tokens", SET_TEXT),
]
_PEERS_V2: _VirtualColumns = [
    ("peer", INET),
    ("peer_port", INT),
    ("data_center", TEXT),
    ("host_id", UUID_T),
    ("native_address", INET),
    ("native_port", INT),
    ("preferred_ip", INET),
    ("preferred_port", INT),
    ("rack", TEXT),
    ("release_version", TEXT),
    ("schema_version", UUID_T),
    ("tokens", SET_TEXT),
]
# Schema catalog tables a driver reads, by table -> its key columns after keyspace_name. The
# stand-in keeps them empty: a driver's metadata lists keyspaces but describes no tables.
_CATALOG_V3 = {  # system_schema, Cassandra 3.0+
    "tables": ("table_name",),
    "columns": ("table_name", "column_name"),
    "dropped_columns": ("table_name", "column_name"),
    "indexes": ("table_name", "index_name"),
    "triggers": ("table_name", "trigger_name"),
    "views": ("view_name",),
    "types": ("type_name",),
    "functions": ("function_name",),
    "aggregates": ("aggregate_name",),
}
_CATALOG_V2 = {  # system.schema_*, before 3.0
    "schema_columnfamilies": ("columnfamily_name",),
    "schema_columns": ("columnfamily_name", "column_name"),
    "schema_triggers": ("columnfamily_name", "trigger_name"),
    "schema_usertypes": ("type_name",),
    "schema_functions": ("function_name",),
    "schema_aggregates": ("aggregate_name",),
}
_CATALOG_VIRTUAL = {  # system_virtual_schema, Cassandra 4.0+
    "keyspaces": (),
    "tables": ("table_name",),
    "columns": ("table_name", "column_name"),
}


def _catalog(keys: tuple[str, ...]) -> tuple[_VirtualColumns, list[dict[str, Any]]]:
    return [(name, TEXT) for name in ("keyspace_name", *keys)], []


class Store:
    """Keyspaces and tables in memory, plus the read-only system tables a driver reads."""

    def __init__(self, node: NodeInfo) -> None:
        self.node = node
        self.lock = threading.RLock()
        self.schema_version = uuid.uuid4()
        self.keyspaces: dict[str, Keyspace] = {
            name: Keyspace(name, dict(rep))
            for name, rep in SYSTEM_KEYSPACES.items()
            if node.major >= 3 or name != "system_schema"
        }

    def execute(self, statement: Statement, current_keyspace: str | None) -> Result:
        handler = getattr(self, f"_exec_{type(statement).__name__.lower()}")
        with self.lock:
            result: Result = handler(statement, current_keyspace)
            if isinstance(result, SchemaChange):
                self.schema_version = uuid.uuid4()
            return result

    # -- lookups
    def keyspace(self, name: str | None) -> Keyspace:
        if name is None:
            raise invalid(
                "No keyspace has been specified. USE a keyspace, or explicitly "
                "specify keyspace.tablename"
            )
        if name not in self.keyspaces:
            raise invalid(f"Keyspace '{name}' does not exist")
        return self.keyspaces[name]

    def table(self, keyspace: str | None, name: str) -> Table:
        space = self.keyspace(keyspace)
        if name not in space.tables:
            raise invalid(f"unconfigured table {name}")
        return space.tables[name]

    @staticmethod
    def user_keyspace(name: str, verb: str) -> None:
        if name in SYSTEM_KEYSPACES:
            raise CqlError(ERR_UNAUTHORIZED, f"Cannot {verb} system keyspace {name}")

    # -- DDL
    def _exec_createkeyspace(self, st: CreateKeyspace, _: str | None) -> Result:
        if st.name in self.keyspaces:
            if st.if_not_exists:
                return Void()
            raise already_exists(f"Keyspace {st.name} already exists", st.name)
        strategy = st.replication["class"]
        if "." not in strategy:
            strategy = f"org.apache.cassandra.locator.{strategy}"
        replication = {**st.replication, "class": strategy}
        self.keyspaces[st.name] = Keyspace(st.name, replication, st.durable_writes)
        return SchemaChange("CREATED", "KEYSPACE", st.name)

    def _exec_createtable(self, st: CreateTable, current: str | None) -> Result:
        space = self.keyspace(st.keyspace or current)
        self.user_keyspace(space.name, "create tables in")
        if st.name in space.tables:
            if st.if_not_exists:
                return Void()
            raise already_exists(
                f"Object {space.name}.{st.name} already exists", space.name, st.name
            )
        space.tables[st.name] = Table(
            space.name, st.name, st.columns, st.partition_key, st.clustering
        )
        return SchemaChange("CREATED", "TABLE", space.name, st.name)

    def _exec_drop(self, st: Drop, current: str | None) -> Result:
        if st.target == "KEYSPACE":
            self.user_keyspace(st.name, "drop")
            if st.name not in self.keyspaces:
                if st.if_exists:
                    return Void()
                raise CqlError(ERR_CONFIG, f"Cannot drop non existing keyspace '{st.name}'.")
            del self.keyspaces[st.name]
            return SchemaChange("DROPPED", "KEYSPACE", st.name)
        space = self.keyspace(st.keyspace or current)
        if st.name not in space.tables:
            if st.if_exists:
                return Void()
            raise CqlError(ERR_CONFIG, f"Table '{space.name}.{st.name}' doesn't exist")
        del space.tables[st.name]
        return SchemaChange("DROPPED", "TABLE", space.name, st.name)

    def _exec_truncate(self, st: Truncate, current: str | None) -> Result:
        self.table(st.keyspace or current, st.name).rows.clear()
        return Void()

    def _exec_use(self, st: Use, _: str | None) -> Result:
        return SetKeyspace(self.keyspace(st.keyspace).name)

    # -- DML
    def _exec_insert(self, st: Insert, current: str | None) -> Result:
        table = self.table(st.keyspace or current, st.table)
        values = self.checked_values(table, st.values)
        key = tuple(values[c] for c in table.key_columns)
        now = time.monotonic()
        if st.if_not_exists:
            existing = table.live_row(key, now)
            if existing is not None:
                return applied_rows(table, False, existing)
        expiry = now + st.ttl if st.ttl else None
        row = table.rows.setdefault(key, StoredRow(expiry))
        row.marker_expiry = expiry
        for column, value in values.items():
            if column in table.key_columns:
                continue
            if value is None:
                row.cells.pop(column, None)
            else:
                row.cells[column] = (value, expiry)
        return applied_rows(table, True, None) if st.if_not_exists else Void()

    @staticmethod
    def checked_values(table: Table, values: dict[str, Any]) -> dict[str, Any]:
        for column in values:
            if column not in table.columns:
                raise invalid(f"Undefined column name {column}")
        missing_pk = [c for c in table.partition_key if values.get(c) is None]
        if missing_pk:
            raise invalid(f"Some partition key parts are missing: {', '.join(missing_pk)}")
        missing_ck = [c for c in table.clustering if values.get(c) is None]
        if missing_ck:
            raise invalid(f"Some clustering keys are missing: {', '.join(missing_ck)}")
        return {c: coerce(c, table.columns[c], v) for c, v in values.items()}

    def _exec_delete(self, st: Delete, current: str | None) -> Result:
        table = self.table(st.keyspace or current, st.table)
        restricted = self.checked_relations(table.columns, st.where)
        missing = [c for c in table.partition_key if c not in restricted]
        if missing:
            raise invalid(f"Some partition key parts are missing: {', '.join(missing)}")
        extra = [c for c in restricted if c not in table.key_columns]
        if extra:
            raise invalid(f"Non PRIMARY KEY columns found in where clause: {', '.join(extra)}")
        self.require_prefix(table, restricted)
        for key in deleted_keys(table, st.where):
            table.rows.pop(key, None)
        return Void()

    @staticmethod
    def checked_relations(columns: dict[str, CqlType], where: list[Relation]) -> set[str]:
        for relation in where:
            if relation.column not in columns:
                raise invalid(f"Undefined column name {relation.column}")
            for value in relation.values:
                coerce(relation.column, columns[relation.column], value)
        return {r.column for r in where}

    @staticmethod
    def require_prefix(table: Table, restricted: set[str]) -> None:
        for before, column in zip(table.clustering, table.clustering[1:], strict=False):
            if column in restricted and before not in restricted:
                raise invalid(
                    f'PRIMARY KEY column "{column}" cannot be restricted as '
                    f'preceding column "{before}" is not restricted'
                )

    def _exec_select(self, st: Select, current: str | None) -> Result:
        keyspace = st.keyspace or current
        virtual = self.virtual_table(keyspace, st.table)
        if virtual is not None:
            columns, rows = virtual
            return project(keyspace or "", st, columns, rows)
        table = self.table(keyspace, st.table)
        restricted = self.checked_relations(table.columns, st.where)
        if not st.allow_filtering and needs_filtering(table, restricted):
            raise invalid(
                "Cannot execute this query as it might involve data filtering and thus may "
                "have unpredictable performance. If you want to execute this query despite "
                "the performance unpredictability, use ALLOW FILTERING"
            )
        columns = [(c, table.columns[c]) for c in table.ordered_columns()]
        return project(table.keyspace, st, columns, table.live_rows(time.monotonic()))

    # -- system tables
    def virtual_table(
        self, keyspace: str | None, name: str
    ) -> tuple[_VirtualColumns, list[dict[str, Any]]] | None:
        """The columns and rows of a read-only system table, or None for a user table."""
        major = self.node.major
        key = f"{keyspace}.{name}"
        if key == "system.local":
            return self.local_table()
        if key == "system.peers":
            return _PEERS, []
        if key == "system.peers_v2" and major >= 4:
            return _PEERS_V2, []
        if key == "system_schema.keyspaces" and major >= 3:
            return self.keyspaces_table()
        if key == "system.schema_keyspaces" and major < 3:
            return self.legacy_keyspaces_table()
        if keyspace == "system_schema" and major >= 3 and name in _CATALOG_V3:
            return _catalog(_CATALOG_V3[name])
        if keyspace == "system" and major < 3 and name in _CATALOG_V2:
            return _catalog(_CATALOG_V2[name])
        if keyspace == "system_virtual_schema" and major >= 4 and name in _CATALOG_VIRTUAL:
            return _catalog(_CATALOG_VIRTUAL[name])
        if keyspace in ("system", "system_schema", "system_virtual_schema"):
            if keyspace not in self.keyspaces:
                raise invalid(f"Keyspace '{keyspace}' does not exist")
            raise invalid(f"unconfigured table {name}")
        return None

    def local_table(self) -> tuple[_VirtualColumns, list[dict[str, Any]]]:
        node = self.node
        columns: _VirtualColumns = [
            ("key", TEXT),
            ("bootstrapped", TEXT),
            ("broadcast_address", INET),
            ("cluster_name", TEXT),
            ("cql_version", TEXT),
            ("data_center", TEXT),
            ("gossip_generation", INT),
            ("host_id", UUID_T),
            ("listen_address", INET),
            ("native_protocol_version", TEXT),
            ("partitioner", TEXT),
            ("rack", TEXT),
            ("release_version", TEXT),
            ("rpc_address", INET),
            ("schema_version", UUID_T),
            ("tokens", SET_TEXT),
        ]
        row: dict[str, Any] = {
            "key": "local",
            "bootstrapped": "COMPLETED",
            "broadcast_address": node.address,
            "cluster_name": node.cluster_name,
            "cql_version": node.cql_version,
            "data_center": node.data_center,
            "gossip_generation": int(time.time()),
            "host_id": node.host_id,
            "listen_address": node.address,
            "native_protocol_version": "4" if node.major >= 3 else "3",
            "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
            "rack": node.rack,
            "release_version": node.release_version,
            "rpc_address": node.address,
            "schema_version": self.schema_version,
            "tokens": {"0"},
        }
        if node.major >= 4:
            columns += [("broadcast_port", INT), ("listen_port", INT), ("rpc_port", INT)]
            row.update(broadcast_port=7000, listen_port=7000, rpc_port=node.port)
        else:
            columns.append(("thrift_version", TEXT))
            row["thrift_version"] = "20.1.0"
        return columns, [row]

    def keyspaces_table(self) -> tuple[_VirtualColumns, list[dict[str, Any]]]:
        columns = [("keyspace_name", TEXT), ("durable_writes", BOOLEAN), ("replication", MAP_TEXT)]
        rows = [
            {
                "keyspace_name": k.name,
                "durable_writes": k.durable_writes,
                "replication": k.replication,
            }
            for k in self.sorted_keyspaces()
        ]
        return columns, rows

    def legacy_keyspaces_table(self) -> tuple[_VirtualColumns, list[dict[str, Any]]]:
        columns = [
            ("keyspace_name", TEXT),
            ("durable_writes", BOOLEAN),
            ("strategy_class", TEXT),
            ("strategy_options", TEXT),
        ]
        rows = []
        for space in self.sorted_keyspaces():
            options = {k: v for k, v in space.replication.items() if k != "class"}
            rows.append(
                {
                    "keyspace_name": space.name,
                    "durable_writes": space.durable_writes,
                    "strategy_class": space.replication["class"],
                    "strategy_options": json.dumps(options),
                }
            )
        return columns, rows

    def sorted_keyspaces(self) -> list[Keyspace]:
        return [self.keyspaces[name] for name in sorted(self.keyspaces)]


def applied_rows(table: Table, applied: bool, existing: dict[str, Any] | None) -> Rows:
    columns: list[tuple[str, CqlType]] = [("[applied]", BOOLEAN)]
    values: list[Any] = [applied]
    if existing is not None:
        for column in table.ordered_columns():
            columns.append((column, table.columns[column]))
            values.append(existing.get(column))
    return Rows(table.keyspace, table.name, columns, [values])


def deleted_keys(table: Table, where: list[Relation]) -> list[tuple[Any, ...]]:
    """The stored keys a DELETE's relations select. When they pin every key column once (the
    usual delete of one row, or an IN list), the keys are looked up instead of matched against
    every row: a lab with thousands of live sessions deletes hundreds of them a second."""
    by_column = {r.column: r.values for r in where}
    if len(by_column) == len(where) and set(by_column) == set(table.key_columns):
        wanted = itertools.product(*(by_column[c] for c in table.key_columns))
        return [key for key in wanted if key in table.rows]
    return [k for k in table.rows if matches(table.key_columns, k, where)]


def matches(columns: list[str], key: tuple[Any, ...], where: list[Relation]) -> bool:
    row = dict(zip(columns, key, strict=True))
    return all(row.get(r.column) in r.values for r in where)


def needs_filtering(table: Table, restricted: set[str]) -> bool:
    """Cassandra's rule: a query may only restrict the full partition key, then a
    clustering prefix, unless ALLOW FILTERING is given."""
    if not restricted:
        return False
    if restricted - set(table.key_columns):
        return True
    if not set(table.partition_key) <= restricted:
        return True
    prefix = [c for c in table.clustering if c in restricted]
    return prefix != table.clustering[: len(prefix)]


def project(
    keyspace: str, st: Select, columns: _VirtualColumns, rows: list[dict[str, Any]]
) -> Rows:
    """Filter, select and limit rows for a SELECT."""
    types = dict(columns)
    for relation in st.where:
        if relation.column not in types:
            raise invalid(f"Undefined column name {relation.column}")
    kept = [r for r in rows if all(r.get(rel.column) in rel.values for rel in st.where)]
    if any(s.kind == "count" for s in st.selectors):
        if len(st.selectors) != 1:
            raise invalid("the CQL stand-in supports COUNT(*) only on its own")
        return Rows(keyspace, st.table, [(st.selectors[0].alias, BIGINT)], [[len(kept)]])
    if st.limit is not None:
        kept = kept[: st.limit]
    out_columns: list[tuple[str, CqlType]] = []
    getters: list[Callable[[dict[str, Any]], Any]] = []
    for selector in st.selectors:
        for name, t, getter in selector_columns(selector, columns, types):
            out_columns.append((name, t))
            getters.append(getter)
    return Rows(keyspace, st.table, out_columns, [[g(r) for g in getters] for r in kept])


def selector_columns(
    selector: Selector, columns: _VirtualColumns, types: dict[str, CqlType]
) -> list[tuple[str, CqlType, Callable[[dict[str, Any]], Any]]]:
    if selector.kind == "star":
        return [(n, t, _getter(n)) for n, t in columns]
    if selector.column not in types:
        raise invalid(f"Undefined column name {selector.column}")
    if selector.kind == "ttl":
        return [(selector.alias, INT, _getter(f"_ttl:{selector.column}"))]
    return [(selector.alias, types[selector.column], _getter(selector.column))]


def _getter(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda row: row.get(name)


# --------------------------------------------------------------------------- connections


@dataclass
class Frame:
    version: int
    flags: int
    stream: int
    opcode: int
    body: bytes


@dataclass
class ConnectionState:
    started: bool = False
    authenticated: bool = False
    keyspace: str | None = None


def recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def read_frame(sock: socket.socket) -> Frame | None:
    """One request frame; v1/v2 frames (8-byte header) are read so they can be refused."""
    first = recv_exact(sock, 1)
    if first is None:
        return None
    version = first[0] & 0x7F
    if version < 3:
        rest = recv_exact(sock, 7)
        if rest is None:
            return None
        flags, stream, opcode, length = struct.unpack(">BbBi", rest)
    else:
        rest = recv_exact(sock, 8)
        if rest is None:
            return None
        flags, stream, opcode, length = struct.unpack(">BhBi", rest)
    if not 0 <= length <= MAX_BODY:
        raise CqlError(ERR_PROTOCOL, f"invalid frame body length {length}")
    body = recv_exact(sock, length) if length else b""
    if body is None:
        return None
    return Frame(version, flags, stream, opcode, body)


def encode_frame(version: int, stream: int, opcode: int, body: bytes) -> bytes:
    if version < 3:
        header = struct.pack(">BBbBi", 0x80 | version, 0, stream, opcode, len(body))
    else:
        header = struct.pack(">BBhBi", 0x80 | version, 0, stream, opcode, len(body))
    return header + body


def error_body(error: CqlError) -> bytes:
    return enc_int(error.code) + enc_string(error.message) + error.extra


class Connection:
    """One client connection: a request/response loop on its own thread."""

    def __init__(self, server: CqlStandIn, sock: socket.socket, peer: str) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self.state = ConnectionState()

    def serve(self) -> None:
        try:
            while True:
                frame = read_frame(self.sock)
                if frame is None:
                    return
                if not self.answer(frame):
                    return
        except CqlError as error:
            self.send(4, 0, OP_ERROR, error_body(error))
        except OSError:
            return
        finally:
            self.server.forget(self)
            self.sock.close()

    def send(self, version: int, stream: int, opcode: int, body: bytes) -> None:
        try:
            self.sock.sendall(encode_frame(version, stream, opcode, body))
        except OSError:
            pass

    def answer(self, frame: Frame) -> bool:
        """Answer one frame; False closes the connection (after a protocol-version refusal)."""
        versions = self.server.protocol_versions
        if frame.version not in versions:
            supported = ", ".join(f"{v}/v{v}" for v in versions)
            message = (
                f"Invalid or unsupported protocol version ({frame.version}); "
                f"supported versions are ({supported})"
            )
            reply_version = frame.version if frame.version < 3 else max(versions)
            self.send(
                reply_version, frame.stream, OP_ERROR, error_body(CqlError(ERR_PROTOCOL, message))
            )
            return False
        try:
            opcode, body = self.dispatch(frame)
        except CqlError as error:
            opcode, body = OP_ERROR, error_body(error)
        except Exception as exc:  # a bug in the stand-in must not kill the connection
            log.exception("%s: server error answering opcode %#x", LABEL, frame.opcode)
            opcode, body = OP_ERROR, error_body(CqlError(ERR_SERVER, f"stand-in error: {exc}"))
        self.send(frame.version, frame.stream, opcode, body)
        return True

    def dispatch(self, frame: Frame) -> tuple[int, bytes]:
        if frame.flags & FLAG_COMPRESSION:
            raise CqlError(ERR_PROTOCOL, "compression was not negotiated")
        reader = Reader(frame.body)
        if frame.flags & FLAG_CUSTOM_PAYLOAD:
            reader.skip_bytes_map()
        if frame.opcode == OP_OPTIONS:
            return OP_SUPPORTED, self.supported()
        if frame.opcode == OP_STARTUP:
            return self.startup(reader)
        if frame.opcode == OP_AUTH_RESPONSE:
            return self.authenticate(reader)
        if not self.state.started:
            raise CqlError(
                ERR_PROTOCOL, f"Unexpected message {frame.opcode:#x}, expecting STARTUP or OPTIONS"
            )
        if not self.state.authenticated:
            raise CqlError(ERR_PROTOCOL, "Unexpected message before authentication")
        if frame.opcode == OP_REGISTER:
            return OP_READY, b""
        if frame.opcode == OP_QUERY:
            return OP_RESULT, self.query(reader.long_string())
        if frame.opcode in (OP_PREPARE, OP_EXECUTE, OP_BATCH):
            raise invalid("prepared statements and batches are not supported by the CQL stand-in")
        raise CqlError(ERR_PROTOCOL, f"Unknown opcode {frame.opcode:#x}")

    def supported(self) -> bytes:
        versions = [f"{v}/v{v}" for v in self.server.protocol_versions]
        return enc_string_multimap(
            {
                "CQL_VERSION": [self.server.node.cql_version],
                "COMPRESSION": [],
                "PROTOCOL_VERSIONS": versions,
            }
        )

    def startup(self, reader: Reader) -> tuple[int, bytes]:
        options = reader.string_map()
        if options.get("COMPRESSION"):
            raise CqlError(ERR_PROTOCOL, f"Unknown compression algorithm: {options['COMPRESSION']}")
        self.state.started = True
        if self.server.username is None:
            self.state.authenticated = True
            return OP_READY, b""
        return OP_AUTHENTICATE, enc_string(AUTHENTICATOR)

    def authenticate(self, reader: Reader) -> tuple[int, bytes]:
        if not self.state.started or self.server.username is None:
            raise CqlError(ERR_PROTOCOL, "Unexpected AUTH_RESPONSE")
        token = reader.value() or b""
        parts = token.split(b"\x00")
        user = parts[1].decode(errors="replace") if len(parts) == 3 else ""
        password = parts[2].decode(errors="replace") if len(parts) == 3 else ""
        expected = (self.server.username or "", self.server.password or "")
        if hmac.compare_digest(f"{user}\0{password}".encode(), "\0".join(expected).encode()):
            self.state.authenticated = True
            return OP_AUTH_SUCCESS, enc_bytes(None)
        log.info("%s: authentication failed for user %r from %s", LABEL, user, self.peer)
        raise CqlError(
            ERR_BAD_CREDENTIALS, f"Provided username {user} and/or password are incorrect"
        )

    def query(self, text: str) -> bytes:
        log.debug("%s: %s query: %s", LABEL, self.peer, text)
        result = self.server.store.execute(parse(text), self.state.keyspace)
        if isinstance(result, SetKeyspace):
            self.state.keyspace = result.keyspace
        return encode_result(result)


# --------------------------------------------------------------------------- listeners


class Listener:
    """A TCP listening socket with an accept loop on a daemon thread."""

    def __init__(
        self, host: str, port: int, on_accept: Callable[[socket.socket, str], None]
    ) -> None:
        self.sock = socket.create_server((host, port), reuse_port=False)
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.on_accept = on_accept
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=self.loop, name=f"cql-standin-accept-{self.port}", daemon=True
        )
        self.thread.start()

    def loop(self) -> None:
        while not self.stopping.is_set():
            try:
                client, address = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.on_accept(client, f"{address[0]}:{address[1]}")

    def close(self) -> None:
        self.stopping.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() on Linux
        except OSError:
            pass
        self.thread.join(timeout=2)
        self.sock.close()


def free_port(host: str) -> int:
    """A port nothing listens on right now (for a node whose CQL port is disabled)."""
    with socket.create_server((host, 0)) as probe:
        return int(probe.getsockname()[1])


class CqlStandIn:
    """A one-node 'cluster' that speaks CQL to the real driver; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        release_version: str = "3.11.4",
        cluster_name: str = "ORS Lab Cluster (CQL stand-in)",
        username: str | None = None,
        password: str | None = None,
        cql_enabled: bool = True,
        thrift_port: int | None = None,
        max_protocol_version: int | None = None,
    ) -> None:
        major, minor = version_tuple(release_version)
        if (major, minor) < (2, 1):
            raise ValueError(
                f"release {release_version}: the stand-in speaks protocol v3+ "
                "(Cassandra 2.1 or later)"
            )
        if thrift_port is not None and major >= 4:
            raise ValueError(
                f"release {release_version}: Cassandra 4.0 removed Thrift, "
                "so a 4.x node has no Thrift port"
            )
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        top = max_protocol_version or (3 if (major, minor) == (2, 1) else 4)
        if top not in (3, 4):
            raise ValueError("max_protocol_version must be 3 or 4")
        self.host = host
        self.requested_port = port
        self.requested_thrift_port = thrift_port
        self.cql_enabled = cql_enabled
        self.username = username
        self.password = password
        self.protocol_versions = list(range(3, top + 1))
        self.node = NodeInfo(release_version, cluster_name, host, port)
        self.store = Store(self.node)
        self.port: int | None = None
        self.thrift_port: int | None = None
        self._listeners: list[Listener] = []
        self._clients: dict[socket.socket, threading.Thread] = {}
        self._lock = threading.Lock()

    @property
    def release_version(self) -> str:
        return self.node.release_version

    def start(self) -> CqlStandIn:
        """Bind and listen; returns once connections are accepted."""
        if self.cql_enabled:
            cql = Listener(self.host, self.requested_port, self.accept_cql)
            self._listeners.append(cql)
            self.port = cql.port
        else:
            self.port = self.requested_port or free_port(self.host)
        self.node.port = self.port
        if self.requested_thrift_port is not None:
            thrift = Listener(self.host, self.requested_thrift_port, self.accept_thrift)
            self._listeners.append(thrift)
            self.thrift_port = thrift.port
        log.info(
            "%s: release %s, cluster %r, CQL %s, Thrift %s, auth %s",
            LABEL,
            self.release_version,
            self.node.cluster_name,
            f"{self.host}:{self.port}" if self.cql_enabled else "disabled",
            f"{self.host}:{self.thrift_port}" if self.thrift_port else "none",
            "PasswordAuthenticator" if self.username else "none",
        )
        return self

    def stop(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        with self._lock:
            clients = list(self._clients.items())
        for sock, _ in clients:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, thread in clients:
            thread.join(timeout=2)
        log.info("%s: stopped", LABEL)

    def __enter__(self) -> CqlStandIn:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def accept_cql(self, sock: socket.socket, peer: str) -> None:
        connection = Connection(self, sock, peer)
        self.track(sock, connection.serve)

    def accept_thrift(self, sock: socket.socket, peer: str) -> None:
        """Hold the connection open and discard what arrives, like an idle Thrift server."""

        def drain() -> None:
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
            finally:
                self.forget_socket(sock)
                sock.close()

        self.track(sock, drain)

    def track(self, sock: socket.socket, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name="cql-standin-conn", daemon=True)
        with self._lock:
            self._clients[sock] = thread
        thread.start()

    def forget(self, connection: Connection) -> None:
        self.forget_socket(connection.sock)

    def forget_socket(self, sock: socket.socket) -> None:
        with self._lock:
            self._clients.pop(sock, None)


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ors_migrate.lab.cql_standin",
        description=f"{LABEL}. Speaks the CQL native protocol (v4/v3) well enough for "
        "cassandra-driver, keeps tables in memory, and can open a Thrift stand-in "
        "port that only accepts connections. Runs until SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9042, help="CQL port (0 = any free port)")
    parser.add_argument("--thrift-port", type=int, help="also listen here, as Thrift would")
    parser.add_argument(
        "--release-version", default="3.11.4", help="what system.local reports (default 3.11.4)"
    )
    parser.add_argument("--cluster-name", default="ORS Lab Cluster (CQL stand-in)")
    parser.add_argument(
        "--no-cql",
        action="store_true",
        help="do not listen on the CQL port (native transport disabled)",
    )
    parser.add_argument("--username", help="require PasswordAuthenticator with this user")
    parser.add_argument(
        "--password-file", type=Path, help="file holding the password (never on the command line)"
    )
    parser.add_argument(
        "--ready-file", type=Path, help="write JSON with the bound ports here once listening"
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def write_ready_file(path: Path, standin: CqlStandIn) -> None:
    info = {
        "standin": LABEL,
        "host": standin.host,
        "cql_port": standin.port if standin.cql_enabled else None,
        "thrift_port": standin.thrift_port,
        "release_version": standin.release_version,
        "pid": os.getpid(),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(info) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    if (args.username is None) != (args.password_file is None):
        print("--username and --password-file go together", file=sys.stderr)
        return 2
    password = args.password_file.read_text().rstrip("\r\n") if args.password_file else None
    try:
        standin = CqlStandIn(
            args.host,
            args.port,
            args.release_version,
            args.cluster_name,
            args.username,
            password,
            not args.no_cql,
            args.thrift_port,
        )
        standin.start()
    except (ValueError, OSError) as exc:
        print(f"{LABEL}: cannot start: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if args.ready_file:
        write_ready_file(args.ready_file, standin)
    while not stop.wait(0.5):
        pass
    standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
