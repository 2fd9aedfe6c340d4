"""Several HA pairs of a state at once (`run --parallel N --parallel-per-cluster M`): which pairs
may run together, the waves the plan shows, and how long a state takes when its pairs overlap.

Within a pair nothing changes: its actions run one after another, so the documented standard
procedure (restart the backup, switch over, restart the new backup) still keeps one member up.
Only different pairs overlap, and `per_cluster` keeps capacity in each ORS cluster. Pure: the
engine, the estimate and the plan share these rules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ors_migrate.errors import InputError
from ors_migrate.step import PlannedAction, PlannedState

# Actions that touch a whole host, not one pair: restarting LCA there stops every ORS node on it,
# so "no primary on this host" holds only while no other pair can switch over meanwhile.
HOST_WIDE_ACTIONS = frozenset({"fips.lca_restart"})

# The HA pair the current thread is working on while pairs run in parallel (None otherwise):
# the screen prefixes its lines with it.
WORKING_ON: ContextVar[str | None] = ContextVar("ors_migrate_working_on", default=None)


@dataclass(frozen=True)
class Parallelism:
    """At most `pairs` HA pairs in flight, at most `per_cluster` of them in one ORS cluster.
    The default, one pair at a time, is the documented behaviour."""

    pairs: int = 1
    per_cluster: int | None = None

    def __post_init__(self) -> None:
        """A limit below one would end a state with its pairs never started."""
        if self.pairs < 1:
            raise InputError(f"--parallel must be at least 1, not {self.pairs}")
        if self.per_cluster is not None and self.per_cluster < 1:
            raise InputError(f"--parallel-per-cluster must be at least 1, not {self.per_cluster}")

    @property
    def serial(self) -> bool:
        return self.pairs <= 1

    def applies_to(self, state: PlannedState) -> bool:
        """Pair-scoped states run pairs at once, except one with a host-wide action: another
        pair's switchover could put its primary on the host in between."""
        if self.serial or state.scope != "ha_pair":
            return False
        return not any(step.action in HOST_WIDE_ACTIONS for step in state.actions)

    def may_start(self, cluster: str | None, in_flight: Iterable[str | None]) -> bool:
        """A pair of `cluster` may start beside pairs of the clusters `in_flight`."""
        flying = list(in_flight)
        if len(flying) >= self.pairs:
            return False
        return self.per_cluster is None or flying.count(cluster) < self.per_cluster

    def describe(self) -> str:
        if self.serial:
            return "one HA pair at a time"
        cap = f", at most {self.per_cluster} per ORS cluster" if self.per_cluster else ""
        return f"up to {self.pairs} HA pairs at a time{cap}"

    def as_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "per_cluster": self.per_cluster}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Parallelism:
        per_cluster = data.get("per_cluster")
        return cls(int(data.get("pairs", 1)), int(per_cluster) if per_cluster else None)


def pair_groups(actions: Sequence[PlannedAction]) -> list[list[PlannedAction]]:
    """Consecutive actions of the same HA pair (the plan lists a pair's actions together)."""
    groups: list[list[PlannedAction]] = []
    for step in actions:
        if groups and groups[-1][0].target.ha_pair == step.target.ha_pair:
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


def cluster_of(group: Sequence[PlannedAction]) -> str | None:
    return group[0].target.cluster


def waves(
    groups: Sequence[list[PlannedAction]], parallelism: Parallelism
) -> list[list[list[PlannedAction]]]:
    """The pairs in waves, as the run starts them when every pair takes as long: each wave the
    first pairs in plan order that the limits allow."""
    pending = list(groups)
    found: list[list[list[PlannedAction]]] = []
    while pending:
        wave: list[list[PlannedAction]] = []
        for group in list(pending):
            if parallelism.may_start(cluster_of(group), [cluster_of(g) for g in wave]):
                wave.append(group)
                pending.remove(group)
        found.append(wave)
    return found


def schedule_seconds(pairs: Sequence[tuple[str | None, float]], parallelism: Parallelism) -> float:
    """How long pairs of (cluster, seconds) take when the run starts each, in order, as soon as
    the limits allow (the engine's rule): the wall time of the whole state."""
    pending = list(pairs)
    running: list[tuple[float, str | None]] = []
    now = 0.0
    while pending:
        for cluster, seconds in list(pending):
            if parallelism.may_start(cluster, [c for _, c in running]):
                running.append((now + seconds, cluster))
                pending.remove((cluster, seconds))
        running.sort(key=lambda item: item[0])
        now, _ = running.pop(0)
    return max([now, *(end for end, _ in running)])
