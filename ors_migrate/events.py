"""The journal's vocabulary: the kinds of event a run records, and typed payloads for the events
that other modules read back (a switchover, a gate decision, a check result). The writer builds
the payload from its type and every reader parses it through the same type, so the keys are
written down once."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    RUN_CREATED = "run_created"
    TOPOLOGY = "topology"
    RULES_OVERRIDDEN = "rules_overridden"
    SWITCHOVER_POLICY = "switchover_policy"
    STATE_STARTED = "state_started"
    STATE_ENDED = "state_ended"
    STATE_TIMED_OUT = "state_timed_out"
    GATE_DECISION = "gate_decision"
    ACTION_INTENT = "action_intent"
    ACTION_RECONCILED = "action_reconciled"
    ACTION_RETRY = "action_retry"
    ACTION_ENDED = "action_ended"
    ACTION_FAILED = "action_failed"
    CHECK = "check"
    ROLLBACK_STARTED = "rollback_started"
    ROLLBACK_REQUESTED = "rollback_requested"
    ROLLBACK_PLAN_AT_START = "rollback_plan_at_start"
    ROLLBACK_END_STATE = "rollback_end_state"
    ABANDONED = "abandoned"
    ESTIMATE = "estimate"
    PARALLELISM = "parallelism"  # on every start and resume: the latest is the run's
    WINDOW_PAUSE = "window_pause"
    WINDOW_TIMEOUT = "window_timeout"
    CAPACITY_DECISION = "capacity_decision"
    MANUAL_CONFIRMATION = "manual_confirmation"


ROLLBACK_EVENTS = (EventKind.ROLLBACK_STARTED, EventKind.ROLLBACK_REQUESTED)


@dataclass(frozen=True)
class SwitchoverIntent:
    """The intent of a switchover (`action_intent` of `service.switchover`): which pair, and
    who is primary before and after. Resume reads it to know who may be primary now."""

    pair: str
    old_primary: str
    new_primary: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> SwitchoverIntent | None:
        """The intent, or None for the intent of any other action."""
        if not {"pair", "old_primary", "new_primary"} <= payload.keys():
            return None
        return cls(str(payload["pair"]), str(payload["old_primary"]), str(payload["new_primary"]))


@dataclass(frozen=True)
class SwitchoverDone:
    """What a switchover observed (`observed` of its `action_ended`): the new roles, the type
    the new primary loaded and, where its status reports it, the promotion (sessions in
    progress, restored and lost)."""

    primary: str
    backup: str
    type: str | None = None
    promotion: dict[str, Any] | None = None
    quiet_wait: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        done = asdict(self)
        if self.quiet_wait is None:
            done.pop("quiet_wait")
        return done

    @classmethod
    def from_observed(cls, observed: dict[str, Any]) -> SwitchoverDone | None:
        """The switchover, or None for what any other action observed."""
        if not {"primary", "backup", "promotion"} <= observed.keys():
            return None
        promotion = observed.get("promotion")
        return cls(
            primary=str(observed["primary"]),
            backup=str(observed["backup"]),
            type=observed.get("type"),
            promotion=promotion if isinstance(promotion, dict) else None,
            quiet_wait=observed.get("quiet_wait"),
        )


@dataclass(frozen=True)
class GateDecision:
    """An operator's answer at a gate, who gave it, whether `--yes` gave it, and the sessions
    in progress on each pair's primary when it was given."""

    decision: str
    by: str
    assumed: bool = False
    sessions_in_progress: dict[str, int | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> GateDecision:
        return cls(
            decision=str(payload.get("decision")),
            by=str(payload.get("by", "?")),
            assumed=bool(payload.get("assumed")),
            sessions_in_progress=dict(payload.get("sessions_in_progress") or {}),
        )


@dataclass(frozen=True)
class CheckRecord:
    """One check result as journaled (`step.CheckResult.as_dict()`)."""

    check: str
    severity: str
    message: str
    fix: str = ""
    observed: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> CheckRecord:
        return cls(
            check=str(payload.get("check")),
            severity=str(payload.get("severity")),
            message=str(payload.get("message")),
            fix=str(payload.get("fix") or ""),
            observed=dict(payload.get("observed") or {}),
        )
