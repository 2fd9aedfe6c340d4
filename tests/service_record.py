"""Reading the lab's own service record (`lab status --json`, `services`: every stop, start and
switchover the lab's Management Layer stand-in carried out, with its time): which applications
were down when, and how many HA pairs were busy at once. Evidence from the lab, not from the
tool under test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OPEN = float("inf")  # an application still down at the end of the record


@dataclass(frozen=True)
class Span:
    """From `start` to `end` (seconds since the epoch), one application or pair was busy."""

    app: str
    pair: str
    cluster: str
    start: float
    end: float

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end


def down_spans(record: list[dict[str, Any]]) -> list[Span]:
    """Each application is down from the moment its stop began until a start of it reported
    it ready (an application that did not come up stays down)."""
    spans: list[Span] = []
    since: dict[str, dict[str, Any]] = {}
    for event in record:
        if event["event"] == "stopping":
            since.setdefault(event["app"], event)
        elif event["event"] == "started" and event["app"] in since:
            began = since.pop(event["app"])
            spans.append(_span(began, event["at"]))
    spans.extend(_span(began, OPEN) for began in since.values())
    return spans


def switch_spans(record: list[dict[str, Any]]) -> list[Span]:
    spans: list[Span] = []
    since: dict[str, dict[str, Any]] = {}
    for event in record:
        if event["event"] == "switching":
            since[event["pair"]] = event
        elif event["event"] == "switched" and event["pair"] in since:
            spans.append(_span(since.pop(event["pair"]), event["at"]))
    return spans


def _span(began: dict[str, Any], end: float) -> Span:
    return Span(began["app"], began["pair"], began["cluster"], began["at"], end)


def both_members_down(record: list[dict[str, Any]]) -> list[tuple[Span, Span]]:
    """Every moment an HA pair had both members down: what must never happen."""
    spans = down_spans(record)
    return [
        (a, b)
        for i, a in enumerate(spans)
        for b in spans[i + 1 :]
        if a.pair == b.pair and a.app != b.app and a.overlaps(b)
    ]


def most_pairs_busy(record: list[dict[str, Any]]) -> tuple[int, dict[str, int]]:
    """The most HA pairs busy at once (a member down or a switchover under way), overall and
    per ORS cluster."""
    spans = down_spans(record) + switch_spans(record)
    most, per_cluster = 0, dict.fromkeys({s.cluster for s in spans}, 0)
    for moment in sorted({s.start for s in spans}):
        busy = {(s.cluster, s.pair) for s in spans if s.start <= moment < s.end}
        most = max(most, len(busy))
        for cluster in per_cluster:
            per_cluster[cluster] = max(per_cluster[cluster], sum(c == cluster for c, _ in busy))
    return most, per_cluster
