"""The one decision of a window that ended empty or of a capacity finding: a person answers or
the unattended policy applies, a rollback is never started during a rollback, and the decision
is journaled with who made it. (The lab runs of test_verdict_faults.py show it end to end.)"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from ors_migrate.actions.evidence import CAPACITY_CHOICES, decide
from ors_migrate.events import EventKind


class Recorder:
    """The parts of a run context `decide` uses: the UI, the operator, the phase, the journal."""

    def __init__(self, *, unattended: bool, answer: str = "", phase: str = "forward") -> None:
        self.operator = "ops"
        self.phase = phase
        self.events: list[tuple[str, str | None, dict[str, Any]]] = []
        self.shown: list[str] = []
        self.ui = SimpleNamespace(
            unattended=lambda: unattended,
            warn=self.shown.append,
            choose=lambda title, lines, choices: answer,
        )

    def record(self, kind: str, *, action_key: str | None = None, payload: Any = None) -> None:
        self.events.append((kind, action_key, payload))


STEP = SimpleNamespace(key="monitor/site/0")
QUESTION = ("monitor/site/0: Redis capacity", ["cpu 93% on node 1"], CAPACITY_CHOICES)


@pytest.mark.parametrize(
    ("unattended", "answer", "phase", "expected"),
    [
        (True, "", "forward", ("stop", "the policy")),
        (False, "continue", "forward", ("continue", "ops")),
        (False, "rollback", "forward", ("rollback", "ops")),
        (False, "rollback", "rollback", ("stop", "ops")),
    ],
)
def test_a_decision_is_asked_or_the_policy_applies_and_is_journaled(
    unattended: bool, answer: str, phase: str, expected: tuple[str, str]
) -> None:
    ctx = Recorder(unattended=unattended, answer=answer, phase=phase)
    decision = decide(
        ctx,  # type: ignore[arg-type]
        STEP,  # type: ignore[arg-type]
        EventKind.CAPACITY_DECISION,
        QUESTION,
        unattended=("stop", "the policy"),
        payload={"findings": ["cpu 93% on node 1"]},
    )
    assert decision == expected
    assert ctx.events == [
        (
            "capacity_decision",
            "monitor/site/0",
            {"findings": ["cpu 93% on node 1"], "decision": expected[0], "by": expected[1]},
        )
    ]
    assert ctx.shown == (["cpu 93% on node 1"] if unattended else [])
