"""Read-only verification actions: Redis Cluster health and load, serialization under
`ORS:<cluster>`, Cassandra, and whether sessions are processed and restored."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ors_migrate.errors import VerificationFailed
from ors_migrate.step import Action, CheckResult, Preview, poll_until

if TYPE_CHECKING:
    from ors_migrate.step import PlannedAction, PlanningView, RunContext


def raise_on_blocking(results: list[CheckResult], what: str) -> dict[str, Any]:
    blocking = [r for r in results if r.blocking]
    if blocking:
        detail = "; ".join(f"{r.message}" + (f" (fix: {r.fix})" if r.fix else "") for r in blocking)
        raise VerificationFailed(f"{what}: {detail}")
    return {"checks": [r.as_dict() for r in results]}


class RedisClusterHealth(Action):
    name = "redis.cluster_health"
    scopes = frozenset({"site"})

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        nodes = ";".join(view.site.redis.nodes)
        return Preview(
            f"check the Redis Cluster at {nodes}: cluster mode, cluster_state ok, 16384 slots "
            "covered, >= 3 masters, replicas, AOF, memory headroom, auth/TLS as configured"
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        from ors_migrate.actions.redis_checks import cluster_health

        site = ctx.site
        results = cluster_health(
            site.redis,
            ctx.redis_password(),
            ors_app_memory_mb=[a.memory_mb for _, _, a in site.apps() if a.memory_mb],
            ha_pair_count=sum(1 for _ in site.pairs()),
        )
        ctx.record_checks(results)
        return raise_on_blocking(results, "Redis Cluster is not ready for ORS")


class RedisMonitor(Action):
    name = "redis.monitor"
    scopes = frozenset({"site"})

    @classmethod
    def check_spec(cls, scope: str, spec: Any) -> str | None:
        problem = super().check_spec(scope, spec)
        window = spec.with_.get("window_s")
        if problem is None and window is not None:
            if isinstance(window, bool) or not isinstance(window, (int, float)) or window <= 0:
                return f"action '{cls.name}': window_s must be a number of seconds above 0"
            if window > 86400:
                return f"action '{cls.name}': window_s must be at most 86400 seconds (a day)"
        return problem

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        mon = view.site.redis.monitor
        window = float(step.args.get("window_s", mon.window_s))
        return Preview(
            f"sample CPU and memory of every Redis node for {window:g} s every "
            f"{mon.interval_s:g} s; stop above {mon.max_cpu_percent:g}% CPU or "
            f"{mon.max_memory_percent:g}% memory"
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        from ors_migrate.actions.redis_checks import evaluate_samples, sample_resources

        mon = ctx.site.redis.monitor
        window = float(step.args.get("window_s", mon.window_s))
        with ctx.ui.monitor(window) as on_sample:
            samples = sample_resources(
                ctx.site.redis,
                ctx.redis_password(),
                window_s=window,
                interval_s=mon.interval_s,
                on_sample=on_sample,
            )
        results = evaluate_samples(samples, mon)
        ctx.record_checks(results)
        observed = raise_on_blocking(results, "Redis Cluster load is above the thresholds")
        observed["samples"] = samples
        return observed


class RedisSerialization(Action):
    name = "redis.serialization"
    scopes = frozenset({"ors_cluster"})

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        return Preview(
            f"verify ORS serializes to Redis: SCAN every primary for keys under "
            f"ORS:{step.target.cluster} (never KEYS) and check their TTLs"
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        from ors_migrate.actions.redis_checks import serialization_check

        assert step.target.cluster
        cluster = step.target.cluster
        result, _ = poll_until(
            lambda: serialization_check(ctx.site.redis, ctx.redis_password(), cluster),
            lambda seen: not seen.blocking,
            timeout_s=float(step.args.get("wait_s", 10)),
            interval_s=1.0,
        )
        ctx.record_checks([result])
        return raise_on_blocking([result], f"ORS cluster {step.target.cluster}")


class CassandraCheck(Action):
    name = "cassandra.check"
    scopes = frozenset({"site"})

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        cass = view.site.cassandra
        points = ", ".join(cass.contact_points) if cass else "-"
        return Preview(
            f"check Cassandra at {points}: reachable, release 3.x or lower, keyspace "
            f"{cass.keyspace if cass else '-'} present (CQL, else Thrift TCP or nodetool)"
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        from ors_migrate.actions.cassandra_checks import check_cassandra

        cass = ctx.site.cassandra
        assert cass is not None
        nodetool = ctx.pool.for_host(cass.nodetool_host) if cass.nodetool_host else None
        results = check_cassandra(cass, ctx.cassandra_password(), nodetool=nodetool)
        ctx.record_checks(results)
        return raise_on_blocking(results, "Cassandra persistence is not healthy")


class SessionsProcessed(Action):
    """New sessions are processed by the primary: its created-session counter grows, or, where
    the status command does not report counters, the session-count command answers."""

    name = "sessions.verify_processing"
    scopes = frozenset({"ha_pair"})

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        return Preview(f"verify the primary of {step.target.ha_pair} processes new sessions")

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        assert step.target.ha_pair
        primary = ctx.services.app_in_role(step.target.ha_pair, "primary")
        details = ctx.services.status(primary).details
        first = details.get("created")
        errors_before = details.get("persistence_errors")
        if first is None:
            if ctx.site.services.sessions is None:
                return {"primary": primary, "observable": False}
            count = ctx.services.run("sessions", primary).stdout.strip()
            return {"primary": primary, "active_sessions": count}
        wait_s = float(step.args.get("wait_s", 5))
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            time.sleep(0.5)
            details = ctx.services.status(primary).details
            self._persistence_failing(primary, errors_before, details)
            now_created = details.get("created", first)
            if now_created > first:
                return {"primary": primary, "created_during_check": now_created - first}
        raise VerificationFailed(
            f"{primary} (primary of {step.target.ha_pair}) created no new session in {wait_s:g} s"
        )

    @staticmethod
    def _persistence_failing(primary: str, before: Any, details: dict[str, Any]) -> None:
        """Sessions routed without being persisted are not "processed as expected": a growing
        persistence error count (where the status command reports one) fails the check."""
        after = details.get("persistence_errors")
        if isinstance(before, int) and isinstance(after, int) and after > before:
            cause = details.get("last_error") or "no detail reported"
            raise VerificationFailed(
                f"{primary} cannot persist sessions to {details.get('type') or 'its store'}: "
                f"{after - before} new persistence errors during the check (last: {cause})"
            )


class SessionsRestored(Action):
    """At the last switchover the new primary restored in-progress sessions from Redis."""

    name = "sessions.verify_restored"
    scopes = frozenset({"ha_pair"})

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        return Preview(
            f"verify the new primary of {step.target.ha_pair} restored the sessions in progress "
            "at the switchover from Redis"
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        assert step.target.ha_pair
        primary = ctx.services.app_in_role(step.target.ha_pair, "primary")
        promotion = ctx.services.status(primary).details.get("last_promotion")
        if not promotion:
            return {
                "primary": primary,
                "observable": False,
                "note": "the status command does not report restores; confirm in ORS logs",
            }
        expected_store = step.args.get("store", "redis")
        if promotion.get("store") != expected_store:
            raise VerificationFailed(
                f"{primary} restored from {promotion.get('store')}, not {expected_store}"
            )
        in_progress = promotion.get("in_progress", 0)
        if in_progress and promotion.get("restored", 0) == 0:
            raise VerificationFailed(
                f"{primary} restored none of the {in_progress} sessions in progress at the "
                f"switchover of {step.target.ha_pair}"
            )
        return {"primary": primary, **promotion}


ACTIONS = [
    RedisClusterHealth,
    RedisMonitor,
    RedisSerialization,
    CassandraCheck,
    SessionsProcessed,
    SessionsRestored,
]
