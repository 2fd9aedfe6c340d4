"""Read-only verification actions: Redis Cluster health and load, serialization under
`ORS:<cluster>`, Cassandra, and whether sessions are processed and restored."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ors_migrate.errors import VerificationFailed
from ors_migrate.step import Action, CheckResult, Preview

if TYPE_CHECKING:
    from ors_migrate.step import PlannedAction, PlanningView, RunContext


def raise_on_blocking(results: list[CheckResult], what: str) -> dict[str, Any]:
    blocking = [r for r in results if r.blocking]
    if blocking:
        detail = "; ".join(f"{r.message}" + (f" (fix: {r.fix})" if r.fix else "") for r in blocking)
        raise VerificationFailed(f"{what}: {detail}")
    return {"checks": [r.as_dict() for r in results]}


CAPACITY_CHECKS = frozenset({"redis.monitor.cpu", "redis.monitor.memory"})


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
            f"{mon.interval_s:g} s; average above {mon.max_cpu_percent:g}% CPU or "
            f"{mon.max_memory_percent:g}% memory (thresholds from the site file, ours, not the "
            "documents') stops at a gate with the documents' advice (add nodes or memory, "
            "consult Redis support); a node that stops answering fails the state"
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
        capacity = [r for r in results if r.blocking and r.check in CAPACITY_CHECKS]
        failures = [r for r in results if r not in capacity]
        observed = raise_on_blocking(failures, "Redis Cluster nodes failed during monitoring")
        observed["checks"] = [r.as_dict() for r in results]
        observed["samples"] = samples
        if capacity:
            from ors_migrate.actions.evidence import capacity_gate

            observed["capacity"] = capacity_gate(ctx, step, capacity)
        return observed


class RedisSerialization(Action):
    """Fresh evidence that each primary of an ORS cluster serializes to Redis: keys under
    `ORS:<cluster>` that appear during the check (keys an earlier attempt left behind do not
    count), per application where `verification.app_key_pattern` makes that observable. A
    primary that creates sessions while none of its keys appear does not persist to Redis."""

    name = "redis.serialization"
    scopes = frozenset({"ors_cluster"})

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        verification = view.site.verification
        per = (
            f"per primary application (keys matching {verification.app_key_pattern})"
            if verification.app_key_pattern
            else "for the ORS cluster as a whole (set verification.app_key_pattern for "
            "evidence per application)"
        )
        return Preview(
            f"verify ORS serializes to Redis: SCAN every primary (never KEYS) for keys under "
            f"ORS:{step.target.cluster} that appear within "
            f"{verification.serialization_window_s:g} s (verification.serialization_window_s, "
            f"ours), {per}; leftover keys of an earlier attempt do not count"
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        from ors_migrate.actions.evidence import Window, wait_for_evidence
        from ors_migrate.actions.redis_checks import KeyWatcher

        cluster = step.target.cluster
        assert cluster
        pairs = [p.name for c, p in ctx.site.pairs() if c.name == cluster]
        primaries = {ctx.services.app_in_role(pair, "primary"): pair for pair in pairs}
        created_before = {app: self._created(ctx, app) for app in primaries}
        watcher = KeyWatcher(ctx.site.redis, ctx.redis_password(), cluster)
        try:
            baseline = set(watcher.scan())
            fresh: dict[str, bool] = {}
            per_app: dict[str, int] = {}

            def poll() -> tuple[bool, str]:
                fresh.clear()
                fresh.update({k: ttl for k, ttl in watcher.scan().items() if k not in baseline})
                per_app.clear()
                per_app.update(self._per_app(ctx, cluster, primaries, fresh))
                if per_app:
                    shown = ", ".join(f"{app}: {n}" for app, n in per_app.items())
                    return all(per_app.values()), f"new keys per primary: {shown}"
                return bool(fresh), f"{len(fresh)} new keys under ORS:{cluster}"

            def at_window_end() -> None:
                self._fail_if_not_persisting(
                    ctx, cluster, primaries, created_before, per_app, fresh
                )

            window = Window(
                what=f"new keys under ORS:{cluster} from " + ", ".join(primaries),
                window_s=ctx.site.verification.serialization_window_s,
                interval_s=2.0,
                setting="verification.serialization_window_s",
                by_hand=f"that the ORS logs of {', '.join(primaries)} show sessions persisted "
                "to Redis, and keys under ORS:" + cluster + " grow (redis-cli --scan)",
            )
            waited = wait_for_evidence(ctx, step, window, poll, at_window_end=at_window_end)
        finally:
            watcher.close()
        with_ttl = sum(1 for ttl in fresh.values() if ttl)
        result = CheckResult(
            "redis.serialization",
            "ok",
            f"{len(fresh)} new keys under ORS:{cluster} since the check began ({with_ttl} with a "
            "TTL)"
            + (
                f"; per primary: {per_app}"
                if per_app
                else " (per application: not observable without verification.app_key_pattern)"
            ),
            observed={
                "new_keys": len(fresh),
                "new_keys_with_ttl": with_ttl,
                "keys_before": len(baseline),
                "per_primary": per_app,
                **waited,
            },
        )
        ctx.record_checks([result])
        return {"checks": [result.as_dict()]}

    @staticmethod
    def _created(ctx: RunContext, app: str) -> int | None:
        created = ctx.services.status(app).details.get("created")
        return created if isinstance(created, int) else None

    @staticmethod
    def _per_app(
        ctx: RunContext, cluster: str, primaries: dict[str, str], fresh: dict[str, bool]
    ) -> dict[str, int]:
        """New keys per primary application, or {} when the site gives no key pattern."""
        from fnmatch import fnmatchcase

        pattern = ctx.site.verification.app_key_pattern
        if not pattern:
            return {}
        counts = {}
        for app, pair in primaries.items():
            glob = pattern.format(cluster=cluster, pair=pair, app=app)
            counts[app] = sum(1 for key in fresh if fnmatchcase(key, glob))
        return counts

    def _fail_if_not_persisting(
        self,
        ctx: RunContext,
        cluster: str,
        primaries: dict[str, str],
        created_before: dict[str, int | None],
        per_app: dict[str, int],
        fresh: dict[str, bool],
    ) -> None:
        """The window ended without evidence. A primary that created sessions meanwhile yet
        left no key does not persist to Redis: that is a fault, not a quiet night."""
        silent = (
            [a for a in primaries if per_app.get(a) == 0]
            if per_app
            else ([] if fresh else list(primaries))
        )
        busy = []
        for app in silent:
            before, now = created_before.get(app), self._created(ctx, app)
            if before is not None and now is not None and now > before:
                busy.append(
                    f"{app} (primary of {primaries[app]}) created {now - before} new sessions"
                )
        if busy:
            raise VerificationFailed(
                f"ORS cluster {cluster} does not serialize to Redis: "
                + "; ".join(busy)
                + f", but none of their keys appeared under ORS:{cluster}. Check that they run "
                "with [persistence] type=redis and log a working connection to every Redis node"
            )


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
    """New sessions are processed by the primary: its created-session counter grows within the
    site's window. A status command without counters gives no evidence: a person confirms."""

    name = "sessions.verify_processing"
    scopes = frozenset({"ha_pair"})

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        window = view.site.verification.new_sessions_window_s
        return Preview(
            f"verify the primary of {step.target.ha_pair} creates a new session within "
            f"{window:g} s (verification.new_sessions_window_s, ours) without new persistence "
            "errors; no session counters: a person confirms; window ends empty: a gate"
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        from ors_migrate.actions.evidence import Window, confirm_by_hand, wait_for_evidence

        assert step.target.ha_pair
        pair = step.target.ha_pair
        primary = ctx.services.app_in_role(pair, "primary")
        details = ctx.services.status(primary).details
        first = details.get("created")
        if not isinstance(first, int):
            return {
                "primary": primary,
                "observable": False,
                **confirm_by_hand(
                    ctx,
                    step,
                    "sessions.processing",
                    f"{primary} (primary of {pair}) creates and routes new sessions (ORS log, "
                    "your reporting or a test call); the status command reports no counters",
                ),
            }
        errors_before = details.get("persistence_errors")
        latest = {"created": first}

        def poll() -> tuple[bool, str]:
            now = ctx.services.status(primary).details
            self._persistence_failing(primary, errors_before, now)
            latest["created"] = now.get("created", first)
            return latest["created"] > first, f"{latest['created'] - first} new sessions"

        window = Window(
            what=f"a new session on {primary} (primary of {pair})",
            window_s=ctx.site.verification.new_sessions_window_s,
            interval_s=max(0.5, ctx.site.services.poll_interval_s),
            setting="verification.new_sessions_window_s",
            by_hand=f"that {primary} receives calls and creates sessions (its ORS log)",
        )
        waited = wait_for_evidence(ctx, step, window, poll)
        return {"primary": primary, "created_during_check": latest["created"] - first, **waited}

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
    """At the last switchover the new primary restored in-progress sessions from Redis. Where
    the status command does not report restores, a person confirms from the ORS log."""

    name = "sessions.verify_restored"
    scopes = frozenset({"ha_pair"})

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        return Preview(
            f"verify the new primary of {step.target.ha_pair} restored the sessions in progress "
            f"at the switchover from {step.args.get('store', 'redis')} (no restore report "
            f"within {view.site.verification.restore_window_s:g} s: a person confirms)"
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        from ors_migrate.actions.evidence import confirm_by_hand

        assert step.target.ha_pair
        primary = ctx.services.app_in_role(step.target.ha_pair, "primary")
        expected_store = step.args.get("store", "redis")
        promotion = self._promotion(ctx, primary)
        if not promotion:
            return {
                "primary": primary,
                "observable": False,
                **confirm_by_hand(
                    ctx,
                    step,
                    "sessions.restored",
                    f"the ORS log of {primary} shows the sessions in progress at the "
                    f"switchover of {step.target.ha_pair} restored from {expected_store}",
                ),
            }
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

    @staticmethod
    def _promotion(ctx: RunContext, primary: str) -> dict[str, Any] | None:
        """The restore report of the last promotion, waiting up to the restore window for it
        (a primary may publish it a moment after taking over)."""
        deadline = time.monotonic() + ctx.site.verification.restore_window_s
        while True:
            details = ctx.services.status(primary).details
            promotion = details.get("last_promotion")
            if promotion or "last_promotion" not in details:
                return promotion or None
            if time.monotonic() >= deadline:
                return None
            time.sleep(max(0.5, ctx.site.services.poll_interval_s))


ACTIONS = [
    RedisClusterHealth,
    RedisMonitor,
    RedisSerialization,
    CassandraCheck,
    SessionsProcessed,
    SessionsRestored,
]
