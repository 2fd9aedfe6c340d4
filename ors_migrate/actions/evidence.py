"""Verdicts backed by evidence: waiting for fresh evidence within a window, what happens when
the window ends empty, and what is confirmed by hand where a site cannot observe something.

Three outcomes only: the evidence was seen (a pass, with what was seen), the evidence proves a
fault (VerificationFailed, which the engine handles by its failure policy), or nothing could be
seen. The last is never a pass: a person decides at a gate (wait longer / roll back / stop), an
unattended run follows `--on-timeout`, and what cannot be observed at all is confirmed by hand
and journaled as a manual confirmation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ors_migrate.errors import GateStopped, RollbackRequested
from ors_migrate.events import EventKind
from ors_migrate.step import CheckResult, PlannedAction, RunContext

ROLLBACK_PHASE = "rollback"
TIMEOUT_CHOICES = [
    ("wait", "wait longer: another window"),
    ("rollback", "roll back: disable Redis everywhere (the sessions in progress are lost)"),
    ("stop", "stop: pause here, resume later with --resume"),
]

Poll = Callable[[], tuple[bool, str]]


@dataclass(frozen=True)
class Window:
    """What a verification waits for, for how long, and what a person checks if it never
    comes. `setting` names the site-file key of the window (the documents give none)."""

    what: str
    window_s: float
    interval_s: float
    setting: str
    by_hand: str


def wait_for_evidence(
    ctx: RunContext,
    step: PlannedAction,
    window: Window,
    poll: Poll,
    sleep: Callable[[float], None] = time.sleep,
    at_window_end: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Poll until it reports evidence. `poll()` returns (found, what is seen so far) and raises
    VerificationFailed when what it sees proves a fault. A window that ends empty first calls
    `at_window_end` (which may prove a fault), then asks `timeout_decision`; "wait" opens
    another window with the same baseline."""
    started = time.monotonic()
    windows = 1
    seen = ""
    while True:
        opened = time.monotonic()
        with ctx.ui.evidence_wait(window.what, window.window_s) as tick:
            while True:
                found, seen = poll()
                elapsed = time.monotonic() - opened
                tick(elapsed, seen)
                if found:
                    return {"waited_s": round(time.monotonic() - started, 3), "windows": windows}
                if elapsed >= window.window_s:
                    break
                sleep(min(window.interval_s, max(0.0, window.window_s - elapsed)))
        if at_window_end is not None:
            at_window_end()
        timeout_decision(ctx, step, window, seen)
        windows += 1


def decide(
    ctx: RunContext,
    step: PlannedAction,
    kind: EventKind,
    question: tuple[str, list[str], list[tuple[str, str]]],
    *,
    unattended: tuple[str, str],
    payload: dict[str, Any],
) -> tuple[str, str]:
    """(decision, who made it) for a finding no check may settle alone: a person chooses from
    `question` (title, what was seen, choices), or an unattended run applies its policy
    (decision, how it is named) after showing the same lines. A rollback is never started
    during a rollback (that becomes "stop"). The decision is journaled as `kind`."""
    title, lines, choices = question
    ui = ctx.ui
    if ui.unattended():
        decision, by = unattended
        for line in lines:
            ui.warn(line)
    else:
        decision, by = ui.choose(title, lines, choices), ctx.operator
    if decision == "rollback" and ctx.phase == ROLLBACK_PHASE:
        decision = "stop"
    ctx.record(kind, action_key=step.key, payload={**payload, "decision": decision, "by": by})
    return decision, by


def timeout_decision(ctx: RunContext, step: PlannedAction, window: Window, seen: str) -> None:
    """A window ended without evidence: ask a person, or follow `--on-timeout` (default stop).
    Returns to wait another window; raises GateStopped or RollbackRequested otherwise."""
    lines = [
        f"no evidence of {window.what} within {window.window_s:g} s ({seen})",
        f"the window is {window.setting} in the site file (ors-migrate's own default, the "
        "documents give none); on a quiet night an empty window is not proof of a fault",
        f"check by hand: {window.by_hand}",
    ]
    policy = ctx.ui.on_timeout or "stop"
    decision, by = decide(
        ctx,
        step,
        EventKind.WINDOW_TIMEOUT,
        (f"{step.key}: verification window ended", lines, TIMEOUT_CHOICES),
        unattended=(
            policy,
            f"--on-timeout {policy}" if ctx.ui.on_timeout else "the default unattended policy",
        ),
        payload={"what": window.what, "window_s": window.window_s, "seen": seen},
    )
    if decision == "wait":
        return
    if decision == "rollback":
        raise RollbackRequested(
            f"no evidence of {window.what} within {window.window_s:g} s; rollback chosen by {by}"
        )
    raise GateStopped(
        f"no evidence of {window.what} within {window.window_s:g} s ({seen}); paused by {by}. "
        f"Check by hand: {window.by_hand}. Then `run --resume` (or `rollback`)."
    )


def confirm_by_hand(ctx: RunContext, step: PlannedAction, check: str, text: str) -> dict[str, Any]:
    """What the site does not let the tool observe: a person checks it and says so. Journaled
    as a manual confirmation (a warning-level check), never as a pass; an unattended run stops
    here (resumable)."""
    ctx.ui.operator_step(
        f"Check by hand (ors-migrate cannot observe this here): {text}", who=ctx.operator
    )
    ctx.record(
        EventKind.MANUAL_CONFIRMATION,
        action_key=step.key,
        payload={"check": check, "what": text, "by": ctx.operator},
    )
    ctx.record_checks(
        [
            CheckResult(
                check,
                "warning",
                f"not observable; confirmed by hand by {ctx.operator}: {text}",
                observed={"manual": True, "confirmed_by": ctx.operator},
            )
        ]
    )
    return {"verdict": "confirmed by hand", "by": ctx.operator, "what": text}


DOCUMENTED_CAPACITY_ADVICE = (
    "the documents (enable.3): add more Redis nodes or upgrade memory capacity depending on "
    "the monitoring data; consult Redis support, if necessary"
)
CAPACITY_CHOICES = [
    ("continue", "continue: the load is acceptable (or capacity was added)"),
    ("rollback", "roll back: disable Redis everywhere (the sessions in progress are lost)"),
    ("stop", "stop: pause here to add nodes or memory, resume later with --resume"),
]


def capacity_gate(
    ctx: RunContext, step: PlannedAction, findings: list[CheckResult]
) -> dict[str, Any]:
    """Redis load above the site's thresholds in the monitoring window. The documents advise
    adding capacity, not rolling back, so a person decides; an unattended run stops here."""
    lines = [
        *(f.message for f in findings),
        "thresholds: redis.monitor.max_cpu_percent / max_memory_percent in the site file, "
        "ors-migrate's own (the documents give none)",
        DOCUMENTED_CAPACITY_ADVICE,
    ]
    decision, by = decide(
        ctx,
        step,
        EventKind.CAPACITY_DECISION,
        (f"{step.key}: Redis capacity", lines, CAPACITY_CHOICES),
        unattended=("stop", "the unattended policy (capacity findings always stop)"),
        payload={"findings": [f.message for f in findings]},
    )
    if decision == "rollback":
        raise RollbackRequested(f"Redis capacity findings at {step.key}; rollback chosen by {by}")
    if decision == "stop":
        raise GateStopped(
            f"Redis capacity findings at {step.key}: "
            + "; ".join(f.message for f in findings)
            + f". Paused by {by}; {DOCUMENTED_CAPACITY_ADVICE}. Then `run --resume` (the "
            "window is sampled again) or `rollback`."
        )
    return {"decision": decision, "by": by, "findings": [f.message for f in findings]}
