"""The dry-run plan as text, JSON, Markdown or a Mermaid state diagram."""

from __future__ import annotations

import json
import os
from typing import Any

from ors_migrate.estimate import Estimate
from ors_migrate.plan import SharedChanges
from ors_migrate.step import Plan, PlannedAction, clock

FORMATS = ("text", "json", "markdown", "mermaid")


def _target(action: PlannedAction) -> str:
    t = action.target
    parts = []
    if t.cluster:
        parts.append(f"cluster {t.cluster}")
    if t.ha_pair:
        parts.append(f"pair {t.ha_pair}")
    if t.app:
        role = ""
        if t.role:
            role = (
                f" ({t.role}, resolved at run time)"
                if t.role_resolved_at_run_time
                else f" ({t.role})"
            )
        parts.append(f"app {t.app}{role}")
    if t.host:
        parts.append(f"host {t.host}")
    return ", ".join(parts) or "site"


def _old(c: dict[str, object]) -> object:
    if not c.get("old_known", True):
        return "(read at run time)"
    return "(unset)" if c["old"] is None else c["old"]


def _new(c: dict[str, object]) -> object:
    """A new value of None is a removal: said in words, never printed as `None`."""
    return "(removed)" if c["new"] is None else c["new"]


def _change(c: dict[str, object]) -> str:
    old = _old(c)
    source = f"  (name from: {c['source']})" if c.get("source") else ""
    return f"[{c['section']}] {c['option']}: {old} -> {_new(c)}{source}"


def estimate_line(estimate: Estimate) -> str:
    sources = sorted({source for state in estimate.states for source in state.sources})
    return (
        f"estimated duration {clock(estimate.total_s)}, {estimate.parallel.describe()} "
        f"(durations from: {'; '.join(sources) or '-'}; gate answers not included)"
    )


def _waves(waves: list[list[str]]) -> list[str]:
    """The HA pairs a parallel run starts together, wave by wave."""
    return [f"   wave {n}: {', '.join(pairs)}" for n, pairs in enumerate(waves, start=1)]


def as_text(plan: Plan, estimate: Estimate | None = None) -> str:
    lines = [
        f"Plan: {plan.title}",
        f"playbook {plan.playbook}, site {plan.site}",
        f"plan_hash {plan.plan_hash}",
        *([estimate_line(estimate)] if estimate else []),
        "",
    ]
    rollback_point = plan.rollback_point()
    per_state = {s.state_id: s for s in estimate.states} if estimate else {}
    for n, state in enumerate(plan.states, start=1):
        seed = state.seed_step or "tool step"
        lines.append(f"{n}. {state.id} [{seed}] {state.title}")
        if state.id in per_state:
            lines.append(f"   about {clock(per_state[state.id].seconds)}")
            lines.extend(_waves(per_state[state.id].waves))
        if state.id == rollback_point:
            lines.append("   ROLLBACK POINT: from here a failed verification rolls back")
        if state.gate:
            lines.append(f"   GATE: {state.gate}")
        for action in state.actions:
            lines.append(f"   - {action.action} @ {_target(action)}")
            lines.append(f"     {action.preview.description}")
            lines.extend(f"     $ {cmd}" for cmd in action.preview.commands)
            lines.extend(f"     {_change(c)}" for c in action.preview.option_changes)
        lines.append("")
    return "\n".join(lines)


def _cell(value: object) -> str:
    """A Markdown table cell: pipes escaped, one line."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def as_markdown(plan: Plan) -> str:
    lines = [
        f"# Plan: {plan.title}",
        "",
        f"- playbook: `{plan.playbook}`",
        f"- site: `{plan.site}`",
        f"- plan_hash: `{plan.plan_hash}`",
        "",
    ]
    rollback_point = plan.rollback_point()
    for n, state in enumerate(plan.states, start=1):
        lines.append(f"## {n}. {state.title}")
        lines.append("")
        lines.append(
            f"state `{state.id}`, seed step `{state.seed_step or 'tool step'}`, scope {state.scope}"
        )
        if state.id == rollback_point:
            lines.append("")
            lines.append("**Rollback point**: from here a failed verification rolls back.")
        if state.gate:
            lines += ["", f"> **Gate**: {state.gate}"]
        lines.append("")
        lines.append("| action | target | what | commands |")
        lines.append("|---|---|---|---|")
        for action in state.actions:
            commands = "<br>".join(f"`{_cell(c)}`" for c in action.preview.commands)
            lines.append(
                f"| `{action.action}` | {_cell(_target(action))} | "
                f"{_cell(action.preview.description)} | {commands} |"
            )
        changes = [(a, c) for a in state.actions for c in a.preview.option_changes]
        if changes:
            lines += [
                "",
                "| application | section | option | old | new | name from |",
                "|---|---|---|---|---|---|",
            ]
            for a, c in changes:
                cells = (
                    a.target.app,
                    c["section"],
                    c["option"],
                    _old(c),
                    _new(c),
                    c.get("source", ""),
                )
                lines.append("| " + " | ".join(_cell(v) for v in cells) + " |")
        lines.append("")
    return "\n".join(lines)


MERMAID_ENTITIES = str.maketrans({"<": "#lt;", ">": "#gt;", ":": "#58;", ";": "#59;"})


def _mermaid_text(text: str) -> str:
    """Mermaid reads `<...>` as HTML and `:` and `;` as syntax; use its entity codes."""
    return text.translate(MERMAID_ENTITIES)


def as_mermaid(plan: Plan) -> str:
    """A state diagram: each state with its seed step, success and failure transitions, gates
    and the rollback point as notes."""
    lines = ["stateDiagram-v2"]
    if not plan.states:
        return "\n".join([*lines, "    [*] --> [*]: nothing to do for this site"])
    ids = [s.id.replace("-", "_") for s in plan.states]
    rollback_point = plan.rollback_point()
    for state, sid in zip(plan.states, ids, strict=True):
        label = _mermaid_text(f"{state.seed_step or 'tool'} {state.title}")
        lines.append(f"    {sid}: {label}")
        if state.gate:
            lines.append(f"    note right of {sid}: GATE, operator approval")
        if state.id == rollback_point:
            lines.append(f"    note left of {sid}: ROLLBACK POINT")
    lines.append(f"    [*] --> {ids[0]}")
    enabled = False
    for state, (a, b) in zip(plan.states, zip(ids, ids[1:], strict=False), strict=False):
        enabled = enabled or state.enables_redis
        lines.append(f"    {a} --> {b}: ok")
        lines.append(f"    {a} --> {'rollback' if enabled else 'stopped'}: failed")
    enabled = enabled or plan.states[-1].enables_redis
    lines.append(f"    {ids[-1]} --> [*]")
    lines.append(f"    {ids[-1]} --> {'rollback' if enabled else 'stopped'}: failed")
    if enabled:
        lines.append("    rollback --> [*]")
    lines.append("    stopped --> [*]: fix, then --resume")
    return "\n".join(lines)


_ONE_LINE = json.JSONEncoder()


def as_json(data: dict[str, Any]) -> str:
    """The plan as JSON, indented by 2 down to each planned action, which is one line: the
    standard library indents only in pure Python, and a plan of 500 HA pairs (10,000 actions,
    14 MB) took most of a second; one line per action is also what grep and diff want. Each
    action is left as one marker in the indented skeleton, then encoded by the C encoder into
    its place (the encoder writes the lists in order), its option changes encoded once for all
    actions that make the same (`SharedChanges`)."""
    marker = f"\0{os.urandom(8).hex()}"
    actions: list[Any] = []
    skeleton = dict(data)
    skeleton["states"] = []
    for state in data.get("states", []):
        actions += state.get("actions", [])
        skeleton["states"].append({**state, "actions": [marker] * len(state.get("actions", []))})
    pieces = json.dumps(skeleton, indent=2).split(json.dumps(marker))
    out = [pieces[0]]
    changes = SharedChanges(_ONE_LINE)
    for action, piece in zip(actions, pieces[1:], strict=True):
        out += [changes.filled(_ONE_LINE.encode(changes.held(action))), piece]
    return "".join(out)


def render_plan(plan: Plan, fmt: str, estimate: Estimate | None = None) -> str:
    if fmt == "json":
        data = plan.as_dict()
        if estimate is not None:
            data["estimate"] = estimate.as_dict()
        return as_json(data)
    if fmt == "markdown":
        text = as_markdown(plan)
        return f"{text}\n{estimate_line(estimate)}\n" if estimate else text
    if fmt == "mermaid":
        return as_mermaid(plan)
    return as_text(plan, estimate)
