"""A simulated ORS application for the rehearsal lab.

It behaves as the documents describe ORS: options are read from the INI file at start only; it
refuses to start on invalid persistence options; as primary it serves HTTP, creates sessions and
persists them to Redis under `ORS:<cluster>` with TTLs (type=redis) or to the Cassandra stand-in
(any other type); as backup it serves no HTTP; when promoted it restores the sessions that were
in progress on the old primary from the store it is configured for, and counts what it could
not restore as lost. Run as `python -m ors_migrate.lab.ors_sim --dir DIR --app APP`.
"""

from __future__ import annotations

import argparse
import configparser
import http.server
import json
import math
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ors_migrate.lab.faults import UNREACHABLE_REDIS, active_faults, consume_refusal
from ors_migrate.lab.layout import LabLayout, read_json, read_pid, write_json_atomic
from ors_migrate.processes import pid_alive

REDIS_MIN_VERSION = (8, 1, 401, 10)
TICK_S = 0.05
# A role change is published at once; the rest (session counts) at most this often: with a
# 30-pair lab's 60 simulators, writing two files five times a second each took most of a core.
PUBLISH_S = 1.0
FAULTS_S = 0.2  # how soon a fault set by `lab fault` takes effect
WAVE_DEPTH = 0.75  # the rate swings between a quarter and 1.75 times the mean


class SeededLoad:
    """A pair's calls as a schedule fixed by the lab's `--load-seed`: a Poisson process whose
    rate follows the lab's wave from the lab's start, each call with its duration, drawn from
    one generator per pair. Both members draw the same schedule, so the load depends neither on
    which member serves it nor on when a simulator's ticks fall: two labs started with the same
    seed and shape get the same calls at the same time after their start."""

    def __init__(self, seed: int, pair: str, config: dict[str, Any]) -> None:
        self.rng = random.Random(f"{seed}:{pair}")
        self.epoch = float(config["load_epoch"])
        self.rate = float(config.get("session_rate", 8.0))
        self.wave_s = float(config.get("session_wave_s", 0))
        self.min_s = float(config.get("session_min_s", 2.0))
        self.max_s = float(config.get("session_max_s", 5.0))
        self.peak = self.rate * (1 + WAVE_DEPTH) if self.wave_s > 0 else self.rate
        self.at = 0.0
        self.next = self._draw()

    def rate_at(self, lab_s: float) -> float:
        if self.wave_s <= 0:
            return self.rate
        return self.rate * (1 + WAVE_DEPTH * math.sin(2 * math.pi * lab_s / self.wave_s))

    def _draw(self) -> tuple[float, float]:
        """The next call (start, duration in seconds from the lab's start), by thinning."""
        while True:
            self.at += self.rng.expovariate(self.peak)
            keep = self.rng.random() * self.peak < self.rate_at(self.at)
            duration = self.rng.uniform(self.min_s, self.max_s)
            if keep:
                return self.at, duration

    def calls_until(self, now: float) -> list[tuple[float, float]]:
        """The calls that start by `now` (wall clock) and were not taken yet: (start, end)."""
        calls = []
        while self.epoch + self.next[0] <= now:
            start = self.epoch + self.next[0]
            calls.append((start, start + self.next[1]))
            self.next = self._draw()
        return calls


class StartRefused(Exception):
    """The options would not let a real ORS start."""


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.strip().split("."))


def validate_options(opts: configparser.ConfigParser, version: str) -> str:
    """The persistence type ORS would use, or StartRefused with the reason."""
    get = lambda s, o: opts.get(s, o, fallback="").strip()  # noqa: E731
    kind = "redis" if get("persistence", "type").lower() == "redis" else "cassandra"
    if bool(get("persistence", "tls-cert")) != bool(get("persistence", "tls-key")):
        raise StartRefused("tls-cert and tls-key must be set together")
    if kind == "redis":
        if version_tuple(version) < REDIS_MIN_VERSION:
            raise StartRefused(
                f"Redis persistence needs ORS 8.1.401.10 or later, this is {version}"
            )
        nodes = get("persistence", "redis-nodes")
        if not nodes:
            raise StartRefused("type=redis but redis-nodes is empty")
        for node in nodes.split(";"):
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit():
                raise StartRefused(f"redis-nodes entry '{node}' is not host:port")
        if get("orchestration", "sessionid-with-nodeid").lower() != "true":
            raise StartRefused("Redis persistence needs [orchestration] sessionid-with-nodeid=true")
        if get("persistence", "tls-enabled").lower() == "true" and not (
            get("persistence", "tls-cacert") or get("persistence", "tls-cacertdir")
        ):
            raise StartRefused("tls-enabled=true needs tls-cacert or tls-cacertdir")
    return kind


class RedisSessions:
    """Sessions in Redis. The connection is made at first use, so that, like ORS, the
    application starts and keeps routing when Redis cannot be reached, counting the failures."""

    def __init__(
        self, opts: configparser.ConfigParser, cluster: str, unreachable: bool = False
    ) -> None:
        self.section = opts["persistence"]
        self.unreachable = unreachable
        self._client: Any = None
        self.cluster = cluster

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        from redis.cluster import ClusterNode, RedisCluster

        section = self.section
        listed = UNREACHABLE_REDIS if self.unreachable else section.get("redis-nodes", "")
        nodes = []
        for node in listed.split(";"):
            host, _, port = node.strip().rpartition(":")
            nodes.append(ClusterNode(host, int(port)))
        tls = section.get("tls-enabled", "false").lower() == "true"
        return RedisCluster(
            startup_nodes=nodes,
            username=section.get("username") or None,
            password=section.get("password") or None,
            ssl=tls,
            ssl_certfile=section.get("tls-cert") or None if tls else None,
            ssl_keyfile=section.get("tls-key") or None if tls else None,
            ssl_ca_certs=section.get("tls-cacert") or None if tls else None,
            socket_timeout=2,
            socket_connect_timeout=2,
        )

    def _key(self, pair: str, session_id: str) -> str:
        return f"ORS:{self.cluster}:{pair}:session:{session_id}"

    def save(self, pair: str, session_id: str, payload: str, ttl_s: int) -> None:
        self.client.set(self._key(pair, session_id), payload, ex=ttl_s)

    def delete(self, pair: str, session_id: str) -> None:
        self.client.delete(self._key(pair, session_id))

    def load(self, pair: str) -> set[str]:
        from redis.cluster import RedisCluster

        prefix = self._key(pair, "")
        found = set()
        for key in self.client.scan_iter(
            match=prefix + "*", count=500, target_nodes=RedisCluster.PRIMARIES
        ):
            name = key.decode() if isinstance(key, bytes) else key
            found.add(name[len(prefix) :])
        return found

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class CassandraSessions:
    def __init__(self, opts: configparser.ConfigParser, cluster: str) -> None:
        from ors_migrate.lab.cassandra_sessions import CassandraSessionStore

        section = opts["persistence"]
        points = [p.strip() for p in section.get("cassandra-nodes", "").split(";") if p.strip()]
        self.store = CassandraSessionStore(
            points, section.get("cassandra-keyspace", "orchestration")
        )
        self.cluster = cluster

    def save(self, pair: str, session_id: str, payload: str, ttl_s: int) -> None:
        self.store.save(self.cluster, pair, session_id, payload, ttl_s)

    def delete(self, pair: str, session_id: str) -> None:
        self.store.delete(self.cluster, pair, session_id)

    def load(self, pair: str) -> set[str]:
        return set(self.store.load(self.cluster, pair))

    def close(self) -> None:
        self.store.close()


class Simulator:
    def __init__(self, layout: LabLayout, app: str) -> None:
        self.layout = layout
        self.app = app
        config = layout.load_config()
        self.lab = config
        me = config["apps"][app]
        self.cluster = me["cluster"]
        self.pair = me["pair"]
        self.peer = next(a for a in config["pairs"][self.pair]["apps"] if a != app)
        self.http_port = int(me["http_port"])
        self.rate = float(config.get("session_rate", 8.0))
        self.min_s = float(config.get("session_min_s", 2.0))
        self.max_s = float(config.get("session_max_s", 5.0))
        self.ttl_s = int(config.get("session_ttl_s", 300))
        self.wave_s = float(config.get("session_wave_s", 0))
        seed = config.get("load_seed")
        self.load = SeededLoad(int(seed), self.pair, config) if seed is not None else None
        self.role = "backup"
        self.started_at = time.time()
        self.instance = f"{os.getpid()}-{int(self.started_at * 1000)}"
        self.version = layout.installed_version(app).read_text().strip()
        self.counters = read_json(layout.counters(app)) or {"created": 0, "restored": 0, "lost": 0}
        self.active: dict[str, float] = {}
        self.serial = 0
        self.persistence_errors = 0
        self.last_error: str | None = None
        self.last_promotion: dict[str, Any] | None = None
        self.http: http.server.ThreadingHTTPServer | None = None
        self.stopping = False
        if consume_refusal(layout, app):
            raise StartRefused("lab fault refuse-start: this application refuses to start")
        self.faults = active_faults(layout, app)
        self.opts = configparser.ConfigParser(interpolation=None)
        self.opts.read(layout.options(app))
        self.type = validate_options(self.opts, self.version)
        nodeid = self.opts.get("orchestration", "sessionid-with-nodeid", fallback="false")
        self.node_prefix = f"{app}-" if nodeid.strip().lower() == "true" else ""
        self.store: RedisSessions | CassandraSessions = (
            RedisSessions(self.opts, self.cluster, "redis-unreachable" in self.faults)
            if self.type == "redis"
            else CassandraSessions(self.opts, self.cluster)
        )

    # State that `orsctl status` and `lab status` read.
    def snapshot(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "cluster": self.cluster,
            "ha_pair": self.pair,
            "role": self.role,
            "version": self.version,
            "type": self.type,
            "pid": os.getpid(),
            "instance": self.instance,
            "started_at": self.started_at,
            "active": len(self.active),
            "persistence_errors": self.persistence_errors,
            "last_error": self.last_error,
            "last_promotion": self.last_promotion,
            "faults": sorted(self.faults),
            **self.counters,
        }

    def publish(self) -> None:
        write_json_atomic(self.layout.state(self.app), self.snapshot())
        write_json_atomic(self.layout.counters(self.app), self.counters)

    def _persist(self, fn: Any, *args: Any) -> Any:
        if "no-persist" in self.faults and fn != self.store.load:
            return None  # the fault: nothing written, nothing reported
        try:
            return fn(*args)
        except Exception as exc:  # a real ORS logs persistence failures and keeps routing
            self.persistence_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return None

    # Role changes
    def promote(self) -> None:
        deadline = time.time() + 5
        while time.time() < deadline:
            peer_state = read_json(self.layout.state(self.peer)) or {}
            peer_pid = read_pid(self.layout.pid(self.peer))
            if peer_state.get("role") != "primary" or not pid_alive(peer_pid):
                break
            time.sleep(TICK_S)
        handover = read_json(self.layout.handover(self.pair))
        in_progress: list[str] = []
        if handover and handover.get("from") != self.app:
            in_progress = list(handover.get("sessions", []))
        stored = self._persist(self.store.load, self.pair) or set()
        restored = [s for s in in_progress if s in stored]
        now = time.time()
        for session_id in restored:
            self.active[session_id] = now + random.uniform(self.min_s, self.max_s)
        lost = len(in_progress) - len(restored)
        self.counters["restored"] += len(restored)
        self.counters["lost"] += lost
        self.last_promotion = {
            "at": now,
            "store": self.type,
            "in_progress": len(in_progress),
            "restored": len(restored),
            "lost": lost,
            "from": handover.get("from") if handover else None,
        }
        self.layout.handover(self.pair).unlink(missing_ok=True)
        with open(self.layout.events, "a") as fh:
            fh.write(
                json.dumps(
                    {
                        "event": "promoted",
                        "app": self.app,
                        "pair": self.pair,
                        "cluster": self.cluster,
                        **self.last_promotion,
                    }
                )
                + "\n"
            )
        if self.load is not None:
            self.load.calls_until(time.time())  # calls before now were the peer's (or nobody's)
        self.role = "primary"
        self._serve_http()

    def demote(self) -> None:
        write_json_atomic(
            self.layout.handover(self.pair),
            {"from": self.app, "at": time.time(), "sessions": sorted(self.active)},
        )
        self.active.clear()
        self._stop_http()
        self.role = "backup"

    def _serve_http(self) -> None:
        sim = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                body = json.dumps(sim.snapshot()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", self.http_port), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def _stop_http(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
            self.http = None

    # Sessions
    def _tick_sessions(self, elapsed: float) -> None:
        now = time.time()
        for session_id, ends in list(self.active.items()):
            if ends <= now:
                del self.active[session_id]
                self._persist(self.store.delete, self.pair, session_id)
        for ends in self._new_calls(now, elapsed):
            self.serial += 1
            session_id = f"{self.node_prefix}{self.instance}-{self.serial}"
            self.active[session_id] = ends
            self.counters["created"] += 1
            self._persist(
                self.store.save,
                self.pair,
                session_id,
                json.dumps({"app": self.app, "created": now}),
                self.ttl_s,
            )

    def _new_calls(self, now: float, elapsed: float) -> list[float]:
        """When each call that arrived since the last tick ends: from the seeded schedule, or
        drawn now at the current rate."""
        if self.load is not None:
            calls = [end for _, end in self.load.calls_until(now)]
        else:
            expected = self.current_rate() * elapsed
            count = int(expected) + (1 if random.random() < expected - int(expected) else 0)
            calls = [now + random.uniform(self.min_s, self.max_s) for _ in range(count)]
        return [] if "no-new-sessions" in self.faults else calls

    def current_rate(self) -> float:
        """Sessions per second now. Call load rises and falls (a wave of `wave_s` seconds, the
        same for every application), so a quieter moment for a switchover comes and goes."""
        if self.wave_s <= 0:
            return self.rate
        phase = 2 * math.pi * time.time() / self.wave_s
        return self.rate * (1 + WAVE_DEPTH * math.sin(phase))

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        last = time.monotonic()
        last_publish = last_faults = 0.0
        while not self.stopping:
            pair = read_json(self.layout.pair(self.pair)) or {}
            wanted = "primary" if pair.get("primary") == self.app else "backup"
            if wanted == "primary" and self.role != "primary":
                self.promote()
                self.publish()
            elif wanted == "backup" and self.role == "primary":
                self.demote()
                self.publish()
            now = time.monotonic()
            if self.role == "primary":
                self._tick_sessions(now - last)
            last = now
            if now - last_faults > FAULTS_S:
                faults = active_faults(self.layout, self.app)
                if faults != self.faults:
                    self.faults = faults
                    last_publish = 0.0
                last_faults = now
            if now - last_publish > PUBLISH_S:
                self.publish()
                last_publish = now
            time.sleep(TICK_S)
        self._stop_http()
        self.publish()
        self.store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Simulated ORS application (rehearsal lab)")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--app", required=True)
    args = parser.parse_args(argv)
    layout = LabLayout(Path(args.dir))
    try:
        sim = Simulator(layout, args.app)
    except StartRefused as exc:
        print(f"ORS {args.app} refused to start: {exc}", file=sys.stderr, flush=True)
        write_json_atomic(
            layout.state(args.app),
            {"app": args.app, "role": "down", "error": str(exc), "pid": os.getpid()},
        )
        return 2
    delay = float(sim.faults.get("slow-start", {}).get("seconds", 0))
    if delay:
        print(f"ORS {args.app}: lab fault slow-start, ready in {delay:g} s", flush=True)
        time.sleep(delay)
    print(f"ORS {args.app} {sim.version} started, persistence type {sim.type}", flush=True)
    sim.publish()
    sim.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
