"""Operator steps: instructions the tool cannot carry out itself, confirmed by a person."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ors_migrate.step import Action, Preview

if TYPE_CHECKING:
    from ors_migrate.step import PlannedAction, PlanningView, RunContext


class Note(Action):
    """Show an instruction and record it; nothing to confirm."""

    name = "operator.note"
    scopes = frozenset({"site", "ors_cluster", "ha_pair", "app"})

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        return Preview(f"tell the operator: {step.args.get('text', '')}")

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        text = str(step.args.get("text", ""))
        ctx.ui.info(text)
        return {"text": text}


class Confirm(Action):
    """The operator does something by hand and confirms it is done."""

    name = "operator.confirm"
    scopes = frozenset({"site", "ors_cluster", "ha_pair", "app"})
    changes_world = True

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        return Preview(f"operator step, confirmed by a person: {step.args.get('text', '')}")

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        text = str(step.args.get("text", ""))
        ctx.ui.operator_step(text, who=ctx.operator)
        return {"text": text, "confirmed_by": ctx.operator}


ACTIONS = [Note, Confirm]
