"""The audit record of a run (`ors-migrate report`), built from the journal alone.

One data structure (the JSON format) is rendered as Markdown for a change ticket, as a single
self-contained HTML page (inline CSS and SVG charts, no external asset, no script), or as a
one-screen text view. Every value whose key names a secret is masked again here, so even a
journal written by an older version cannot leak one into a report.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ors_migrate.events import CheckRecord, EventKind, GateDecision, SwitchoverDone
from ors_migrate.journal import Event, Journal, RunRecord
from ors_migrate.parallel import Parallelism
from ors_migrate.site import SECRET_REF

FORMATS = ("markdown", "html", "json", "text")
SECRET_KEY = re.compile(r"pass(word|phrase)|secret|token|credential", re.IGNORECASE)
MASK = "***"
GATE_COLUMNS = ("at", "state_id", "decision", "by", "approved_by_yes", "sessions_in_progress")
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


# Building the record
def build_report(journal: Journal, run: RunRecord) -> dict[str, Any]:
    events = journal.events(run.run_id)
    plan = json.loads(run.plan_json)
    rows = timeline(plan, events)
    facts = _run_facts(run, events)
    report = {
        "run": facts,
        "operators": sorted({run.operator, *_deciders(events)}),
        "outcome": _outcome(run, events),
        "timeline": rows,
        "estimate": estimate_and_actual(events, rows, facts["duration_s"]),
        "milestones": milestones(events),
        "gate_decisions": gate_decisions(events),
        "option_changes": option_changes(events),
        "original_options": journal.originals(run.run_id),
        "switchovers": switchovers(events),
        "checks": checks(events),
        "redis_monitoring": redis_series(events),
        "rehearsal": _rehearsal(run),
    }
    return scrub(report)


def _rehearsal(run: RunRecord) -> dict[str, Any] | None:
    """A run on a lab made by `lab up --from SITE`: the site it rehearses, both plan hashes."""
    from ors_migrate.rehearsal import rehearsal_facts

    return rehearsal_facts(Path(run.site_path), run.playbook, run.plan_hash)


def rehearsal_line(report: dict[str, Any]) -> str | None:
    facts = report.get("rehearsal")
    if not facts:
        return None
    production = facts["production_plan_hash"] or f"unknown ({facts['note']})"
    return (
        f"rehearsal of site '{facts['production_name']}' ({facts['production_site']}): "
        f"plan hash {production} there, {facts['lab_plan_hash']} in this lab"
    )


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    delta = dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)
    return round(delta.total_seconds(), 3)


def _run_facts(run: RunRecord, events: list[Event]) -> dict[str, Any]:
    facts = run.summary()
    facts["duration_s"] = _seconds_between(run.created_at, events[-1].ts if events else None)
    return facts


def _deciders(events: list[Event]) -> set[str]:
    return {
        GateDecision.from_payload(e.payload).by
        for e in events
        if e.kind == EventKind.GATE_DECISION and "by" in e.payload
    }


def _outcome(run: RunRecord, events: list[Event]) -> dict[str, Any]:
    rollback = next((e for e in events if e.kind == EventKind.ROLLBACK_STARTED), None)
    return {
        "status": run.status,
        "message": run.outcome,
        "rolled_back": rollback is not None,
        "rollback_reason": rollback.payload.get("reason") if rollback else None,
    }


def _planned_actions(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["key"]: a for s in plan.get("states", []) for a in s.get("actions", [])}


def timeline(plan: dict[str, Any], events: list[Event]) -> list[dict[str, Any]]:
    """Every state of the plan in order (and those of a rollback), with its actions, their
    status and durations; states never reached are listed as such."""
    planned = _planned_actions(plan)
    states: dict[tuple[str, str], dict[str, Any]] = {}
    for state in plan.get("states", []):
        states[("forward", state["id"])] = _state_row("forward", state["id"], state)
    for event in events:
        if event.state_id is None or event.kind not in STATE_EVENTS:
            continue
        row = states.setdefault(
            (event.phase, event.state_id), _state_row(event.phase, event.state_id, {})
        )
        STATE_EVENTS[event.kind](row, event, planned)
    return sorted(states.values(), key=lambda r: (r["started_at"] is None, r["started_at"] or ""))


def estimate_and_actual(
    events: list[Event], rows: list[dict[str, Any]], run_seconds: float | None
) -> dict[str, Any] | None:
    """The estimate the run made at its start beside what each state and the run took."""
    made = next((e for e in events if e.kind == EventKind.ESTIMATE), None)
    if made is None:
        return None
    took = {r["state_id"]: r["wall_seconds"] for r in rows if r["phase"] == "forward"}
    states = [
        {
            "state_id": s["id"],
            "estimated_s": s["seconds"],
            "actual_s": took.get(s["id"]),
            "sources": s.get("sources", []),
        }
        for s in made.payload.get("states", [])
    ]
    at_start = Parallelism.from_dict(made.payload.get("parallel") or {})
    return {
        "total_estimated_s": made.payload.get("total_s"),
        "total_actual_s": run_seconds,
        "parallel": at_start.as_dict(),
        "parallel_latest": latest_parallelism(events, at_start).as_dict(),
        "states": states,
    }


def latest_parallelism(events: list[Event], default: Parallelism) -> Parallelism:
    """The parallelism the run last started or resumed with (journaled each time)."""
    journaled = [e for e in events if e.kind == EventKind.PARALLELISM]
    return Parallelism.from_dict(journaled[-1].payload) if journaled else default


def estimate_line(report: dict[str, Any]) -> str | None:
    compared = report.get("estimate")
    if not compared:
        return None
    estimated, actual = compared["total_estimated_s"], compared["total_actual_s"]
    parallel = Parallelism.from_dict(compared.get("parallel") or {})
    line = (
        f"estimated {_secs(estimated)} at the start ({parallel.describe()}), took {_secs(actual)}"
    )
    if estimated and actual:
        line += f" ({(actual - estimated) / estimated:+.0%})"
    latest = Parallelism.from_dict(
        compared.get("parallel_latest") or compared.get("parallel") or {}
    )
    if latest != parallel:
        line += f"; resumed with {latest.describe()}"
    return line


def _state_row(phase: str, state_id: str, planned: dict[str, Any]) -> dict[str, Any]:
    return {
        "phase": phase,
        "state_id": state_id,
        "seed_step": planned.get("seed_step"),
        "title": planned.get("title", state_id),
        "gate": planned.get("gate"),
        "status": "not reached",
        "started_at": None,
        "ended_at": None,
        "seconds": None,
        "wall_seconds": None,
        "actions": [],
    }


def _action_row(row: dict[str, Any], event: Event, planned: dict[str, Any]) -> dict[str, Any]:
    key = event.action_key or ""
    for action in row["actions"]:
        if action["key"] == key:
            return action
    plan = planned.get(key, {})
    action = {
        "key": key,
        "action": plan.get("action"),
        "description": plan.get("description", key),
        "app": event.payload.get("app") or plan.get("app"),
        "host": plan.get("host"),
        "status": "started, not ended",
        "started_at": event.ts,
        "ended_at": None,
        "seconds": None,
        "error": None,
    }
    row["actions"].append(action)
    return action


def _on_state_started(row: dict[str, Any], event: Event, planned: dict[str, Any]) -> None:
    row["status"] = "started, not ended"
    row["started_at"] = row["started_at"] or event.ts
    row["seed_step"] = row["seed_step"] or event.payload.get("seed_step")


def _on_state_ended(row: dict[str, Any], event: Event, planned: dict[str, Any]) -> None:
    row["status"] = "done"
    row["ended_at"] = event.ts
    row["seconds"] = event.payload.get("seconds")
    row["wall_seconds"] = _seconds_between(row["started_at"], event.ts)


def _on_action_intent(row: dict[str, Any], event: Event, planned: dict[str, Any]) -> None:
    _action_row(row, event, planned)


def _on_action_ended(row: dict[str, Any], event: Event, planned: dict[str, Any]) -> None:
    action = _action_row(row, event, planned)
    observed = event.payload.get("observed", {})
    action["status"] = "already done (reconciled)" if observed.get("reconciled") else "ok"
    action["ended_at"] = event.ts
    action["seconds"] = event.payload.get("seconds")
    action["app"] = observed.get("app") or observed.get("primary") or action["app"]


def _on_action_failed(row: dict[str, Any], event: Event, planned: dict[str, Any]) -> None:
    action = _action_row(row, event, planned)
    action["status"] = "failed"
    action["ended_at"] = event.ts
    action["error"] = event.payload.get("error")
    row["status"] = "failed"


def _on_gate_decision(row: dict[str, Any], event: Event, planned: dict[str, Any]) -> None:
    row["status"] = {
        "stop": "stopped at its gate",
        "rollback": "rolled back at its gate",
    }.get(str(event.payload.get("decision")), "started, not ended")


STATE_EVENTS: dict[str, Callable[[dict[str, Any], Event, dict[str, Any]], None]] = {
    EventKind.STATE_STARTED: _on_state_started,
    EventKind.STATE_ENDED: _on_state_ended,
    EventKind.ACTION_INTENT: _on_action_intent,
    EventKind.ACTION_ENDED: _on_action_ended,
    EventKind.ACTION_FAILED: _on_action_failed,
    EventKind.GATE_DECISION: _on_gate_decision,
}


def milestones(events: list[Event]) -> list[dict[str, Any]]:
    """Run-level moments: created, status changes (paused, interrupted, resumed...), rollback."""
    out: list[dict[str, Any]] = []
    last_status = None
    for event in events:
        if event.kind == EventKind.RUN_CREATED:
            out.append({"at": event.ts, "what": "run created"})
        elif event.kind.startswith("rollback_"):
            what = event.kind.replace("_", " ")
            out.append({"at": event.ts, "what": f"{what}: {event.payload.get('reason', '-')}"})
        elif event.kind.startswith("status_"):
            status = event.kind.removeprefix("status_")
            if status != last_status:
                what = "resumed" if last_status and status == "running" else status
                out.append({"at": event.ts, "what": what, "state": event.state_id})
            last_status = status
    return out


def gate_decisions(events: list[Event]) -> list[dict[str, Any]]:
    rows = []
    for e in events:
        if e.kind != EventKind.GATE_DECISION:
            continue
        gate = GateDecision.from_payload(e.payload)
        rows.append(
            {
                "at": e.ts,
                "state_id": e.state_id,
                "phase": e.phase,
                "decision": gate.decision,
                "by": gate.by,
                "approved_by_yes": gate.assumed,
                "sessions_in_progress": gate.sessions_in_progress,
            }
        )
    return rows


def option_changes(events: list[Event]) -> list[dict[str, Any]]:
    """Option values as written by the run (secrets as ***), in order."""
    rows = []
    for event in events:
        observed = event.payload.get("observed", {}) if event.kind == EventKind.ACTION_ENDED else {}
        for change in observed.get("changes", []):
            rows.append(
                {
                    "at": event.ts,
                    "state_id": event.state_id,
                    "phase": event.phase,
                    "app": observed.get("app"),
                    **{k: change.get(k) for k in ("section", "option", "old", "new")},
                }
            )
    return rows


def switchovers(events: list[Event]) -> list[dict[str, Any]]:
    rows = []
    for event in events:
        observed = event.payload.get("observed", {}) if event.kind == EventKind.ACTION_ENDED else {}
        done = SwitchoverDone.from_observed(observed)
        if done is not None and done.promotion is not None:
            promotion = done.promotion
            rows.append(
                {
                    "at": event.ts,
                    "state_id": event.state_id,
                    "new_primary": done.primary,
                    "old_primary": promotion.get("from"),
                    **{k: promotion.get(k) for k in ("store", "in_progress", "restored", "lost")},
                }
            )
    return rows


def checks(events: list[Event]) -> list[dict[str, Any]]:
    """Check observations, each attributed to the action that was running when it was made."""
    rows = []
    running: tuple[str | None, str | None] = (None, None)
    for event in events:
        if event.kind == EventKind.ACTION_INTENT:
            running = (event.state_id, event.action_key)
        elif event.kind == EventKind.CHECK:
            record = CheckRecord.from_payload(event.payload)
            rows.append(
                {
                    "at": event.ts,
                    "state_id": running[0],
                    "action_key": running[1],
                    "check": record.check,
                    "severity": record.severity,
                    "message": record.message,
                    "fix": record.fix,
                    "observed": record.observed,
                }
            )
    return rows


def redis_series(events: list[Event]) -> list[dict[str, Any]]:
    """The samples of each `redis.monitor` window: seconds from the window's start, CPU %,
    memory % and used MB per node."""
    windows = []
    for event in events:
        observed = event.payload.get("observed", {}) if event.kind == EventKind.ACTION_ENDED else {}
        samples = [s for s in observed.get("samples", []) if isinstance(s, dict)]
        if not samples:
            continue
        start = min(float(s.get("timestamp", 0.0)) for s in samples)
        windows.append(
            {
                "state_id": event.state_id,
                "action_key": event.action_key,
                "ended_at": event.ts,
                "samples": [_point(s, start) for s in samples],
            }
        )
    return windows


def _point(sample: dict[str, Any], start: float) -> dict[str, Any]:
    used = sample.get("used_memory")
    return {
        "node": sample.get("node"),
        "t": round(float(sample.get("timestamp", start)) - start, 3),
        "cpu_percent": sample.get("cpu_percent"),
        "memory_percent": sample.get("memory_percent"),
        "used_mb": None if used is None else round(used / 1048576, 3),
        "error": sample.get("error"),
    }


def scrub(value: Any, key: str = "") -> Any:
    """Mask every value under a key that names a secret, unless it is only a reference."""
    if isinstance(value, dict):
        return {k: scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, key) for v in value]
    if SECRET_KEY.search(key) and isinstance(value, str) and value:
        return value if SECRET_REF.match(value) or value == MASK else MASK
    return value


# Shared helpers of the renderers
def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _node_stats(samples: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    per_node: dict[str, dict[str, list[float]]] = {}
    for s in samples:
        node = per_node.setdefault(str(s["node"]), {"cpu": [], "mem": [], "mb": []})
        for name, key in (("cpu", "cpu_percent"), ("mem", "memory_percent"), ("mb", "used_mb")):
            if s.get(key) is not None:
                node[name].append(float(s[key]))
    return {
        node: {
            "cpu_avg": _avg(v["cpu"]),
            "cpu_peak": max(v["cpu"], default=None),
            "mem_peak": max(v["mem"], default=None),
            "mb_peak": max(v["mb"], default=None),
        }
        for node, v in sorted(per_node.items())
    }


def _avg(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _num(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.3g}{unit}"


def _clock(timestamp: str | None) -> str:
    """The time of day of a journal timestamp (the date is in the run's facts)."""
    return "-" if not timestamp else timestamp[11:23]


# Markdown
def as_markdown(report: dict[str, Any]) -> str:
    run = report["run"]
    out = [
        f"# Change record: run {run['run_id']}",
        "",
        f"- site: `{run['site']}` ({run['site_path']})",
        f"- playbook: `{run['playbook']}`, plan hash `{run['plan_hash']}`",
        *([f"- {line}"] if (line := rehearsal_line(report)) else []),
        f"- operator(s): {', '.join(report['operators'])} on {run['hostname']}",
        f"- started {run['created_at']}, last event after {_secs(run['duration_s'])}",
        *([f"- {line}"] if (line := estimate_line(report)) else []),
        f"- outcome: **{report['outcome']['status']}**: {report['outcome']['message'] or '-'}",
        "",
        "## Timeline",
        "",
        "| seed step | state / action | status | took |",
        "|---|---|---|---|",
    ]
    for state in report["timeline"]:
        rollback = " (rollback)" if state["phase"] == "rollback" else ""
        out.append(
            f"| {state['seed_step'] or 'tool step'} | `{state['state_id']}`{rollback} "
            f"{_md(state['title'])} | {state['status']} | {_secs(state['seconds'])} |"
        )
        out += [
            f"| | ↳ {_md(a['description'])}{': ' + _md(a['error']) if a['error'] else ''} | "
            f"{a['status']} | {_secs(a['seconds'])} |"
            for a in state["actions"]
        ]
    if report.get("estimate"):
        out += _md_table(
            "Estimate and actual",
            ("state_id", "estimated_s", "actual_s", "sources"),
            report["estimate"]["states"],
        )
    out += _md_table(
        "Gate decisions",
        GATE_COLUMNS,
        report["gate_decisions"],
    )
    out += _md_table(
        "Option changes",
        ("at", "app", "section", "option", "old", "new"),
        report["option_changes"],
    )
    out += _md_table(
        "Switchovers",
        ("at", "old_primary", "new_primary", "store", "in_progress", "restored", "lost"),
        report["switchovers"],
    )
    out += _md_table("Checks", ("at", "state_id", "check", "severity", "message"), report["checks"])
    out += _md_redis(report["redis_monitoring"])
    out += _md_table("Milestones", ("at", "what"), report["milestones"])
    return "\n".join(out) + "\n"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(title: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> list[str]:
    out = ["", f"## {title}", ""]
    if not rows:
        return out + ["none"]
    out.append("| " + " | ".join(columns) + " |")
    out.append("|" + "---|" * len(columns))
    for row in rows:
        out.append(
            "| " + " | ".join(_md("-" if row.get(c) is None else row[c]) for c in columns) + " |"
        )
    return out


def _md_redis(windows: list[dict[str, Any]]) -> list[str]:
    out = ["", "## Redis CPU and memory", ""]
    if not windows:
        return out + ["no monitoring window in this run"]
    for window in windows:
        out += [
            f"Window of `{window['state_id']}` ({len(window['samples'])} samples):",
            "",
            "| node | CPU avg | CPU peak | memory peak | used MB peak |",
            "|---|---|---|---|---|",
        ]
        for node, st in _node_stats(window["samples"]).items():
            out.append(
                f"| {node} | {_num(st['cpu_avg'], '%')} | {_num(st['cpu_peak'], '%')} | "
                f"{_num(st['mem_peak'], '%')} | {_num(st['mb_peak'])} |"
            )
        out.append("")
    return out


# Text: one screen
def as_text(report: dict[str, Any]) -> str:
    run = report["run"]
    marks = {"done": "✓", "failed": "✗", "not reached": "·"}
    lines = [
        f"run {run['run_id']}  site {run['site']}  playbook {run['playbook']}",
        f"status {run['status']} ({run['phase']})  current {run['current_state'] or '-'}  "
        f"operator {', '.join(report['operators'])}@{run['hostname']}",
        f"plan {run['plan_hash'][:16]}  started {run['created_at']}  "
        f"elapsed {_secs(run['duration_s'])}",
        *([line] if (line := rehearsal_line(report)) else []),
        *([line] if (line := estimate_line(report)) else []),
        "",
    ]
    for state in report["timeline"]:
        mark = marks.get(state["status"], "▶")
        phase = " (rollback)" if state["phase"] == "rollback" else ""
        lines.append(
            f" {mark} {state['seed_step'] or 'tool step':<10} {state['state_id']}{phase}"
            f"  {_secs(state['seconds']) if state['seconds'] is not None else state['status']}"
        )
    for gate in report["gate_decisions"]:
        how = " (--yes)" if gate["approved_by_yes"] else ""
        lines.append(f"gate {gate['state_id']}: {gate['decision']} by {gate['by']}{how}")
    failed = [a for s in report["timeline"] for a in s["actions"] if a["status"] == "failed"]
    if failed:
        lines.append(f"last error: {failed[-1]['error']}")
    if report["outcome"]["message"]:
        lines.append(f"outcome: {report['outcome']['message']}")
    return "\n".join(lines) + "\n"


# HTML
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
.wrap,td code{word-break:break-all}
th{background:#f4f4f4}td.num{text-align:right;white-space:nowrap}
.done,.ok,.approve{color:#1a7f37}.failed,.error,.rollback{color:#c62828}
.warning,.stop{color:#b26a00}.not-reached{color:#888}
.facts td:first-child{font-weight:bold;width:12em}
.action{color:#555;font-size:.92em}.outcome{font-size:1.2em;font-weight:bold}
figure{margin:1em 0}figcaption{font-weight:bold;margin-bottom:.3em}
svg text{font:11px system-ui,sans-serif;fill:#333}
"""


def _e(value: Any) -> str:
    return html.escape("-" if value is None else str(value))


def _cls(text: str) -> str:
    return re.sub(r"[^a-z]+", "-", text.lower()).strip("-")


def as_html(report: dict[str, Any]) -> str:
    run = report["run"]
    body = [
        f"<h1>Change record: run {_e(run['run_id'])}</h1>",
        _html_facts(report),
        '<section id="timeline"><h2>Timeline</h2>',
        _gantt(report["timeline"]),
        _html_timeline(report["timeline"]),
        "</section>",
        '<section id="gates"><h2>Gate decisions</h2>',
        _html_rows(report["gate_decisions"], GATE_COLUMNS),
        "</section>",
        '<section id="options"><h2>Option changes</h2>',
        _html_rows(report["option_changes"], ("at", "app", "section", "option", "old", "new")),
        "</section>",
        '<section id="switchovers"><h2>Switchovers</h2>',
        _html_rows(
            report["switchovers"],
            ("at", "old_primary", "new_primary", "store", "in_progress", "restored", "lost"),
        ),
        "</section>",
        '<section id="redis"><h2>Redis CPU and memory</h2>',
        *[_redis_figure(n, w) for n, w in enumerate(report["redis_monitoring"], start=1)],
        "" if report["redis_monitoring"] else "<p>No monitoring window in this run.</p>",
        "</section>",
        '<section id="checks"><h2>Checks and what they observed</h2>',
        _html_checks(report["checks"]),
        "</section>",
        '<section id="milestones"><h2>Milestones</h2>',
        _html_rows(report["milestones"], ("at", "what", "state")),
        "</section>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>ors-migrate run {_e(run['run_id'])}</title><style>{CSS}</style></head>"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _html_facts(report: dict[str, Any]) -> str:
    run, outcome = report["run"], report["outcome"]
    rows = [
        ("Site", f"{run['site']} ({run['site_path']})"),
        ("Playbook", run["playbook"]),
        ("Plan hash", run["plan_hash"]),
        *([("Rehearsal", line)] if (line := rehearsal_line(report)) else []),
        ("Operator(s)", f"{', '.join(report['operators'])} on {run['hostname']}"),
        ("Started", run["created_at"]),
        ("Last event after", _secs(run["duration_s"])),
        *([("Estimate", line)] if (line := estimate_line(report)) else []),
    ]
    cells = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    status = outcome["status"]
    return (
        f'<p class="outcome {_cls(status)}" id="outcome">Outcome: {_e(status)}'
        + (f": {_e(outcome['message'])}" if outcome["message"] not in (None, status) else "")
        + "</p>"
        + (
            f"<p>Rolled back after: {_e(outcome['rollback_reason'])}</p>"
            if outcome["rolled_back"]
            else ""
        )
        + f'<table class="facts">{cells}</table>'
    )


def _html_timeline(states: list[dict[str, Any]]) -> str:
    rows = []
    for s in states:
        phase = " (rollback)" if s["phase"] == "rollback" else ""
        rows.append(
            f'<tr class="state"><td>{_e(s["seed_step"] or "tool step")}</td>'
            f"<td><code>{_e(s['state_id'])}</code>{phase}<br>{_e(s['title'])}</td>"
            f'<td class="{_cls(s["status"])}">{_e(s["status"])}</td>'
            f'<td>{_clock(s["started_at"])}</td><td class="num">{_secs(s["seconds"])}</td></tr>'
        )
        for a in s["actions"]:
            error = f'<br><span class="error">{_e(a["error"])}</span>' if a["error"] else ""
            rows.append(
                f'<tr class="action"><td></td><td>{_e(a["description"])}{error}</td>'
                f'<td class="{_cls(a["status"])}">{_e(a["status"])}</td>'
                f'<td>{_clock(a["started_at"])}</td><td class="num">{_secs(a["seconds"])}</td></tr>'
            )
    head = "".join(
        f"<th>{c}</th>" for c in ("seed step", "state / action", "status", "started", "took")
    )
    return f'<table class="timeline"><tr>{head}</tr>{"".join(rows)}</table>'


def _html_rows(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{_e(c.replace('_', ' '))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_html_cell(r.get(c)) for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html_cell(value: Any) -> str:
    """A word such as `approve` or `failed` is coloured; a long value may break anywhere."""
    text = str(value)
    css = _cls(text) if re.fullmatch(r"[a-z_ ]{1,16}", text) else "wrap" if len(text) > 40 else ""
    return f'<td class="{css}">{_e(value)}</td>'


def _html_checks(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>None.</p>"
    body = "".join(
        f"<tr><td>{_e(r['state_id'])}</td><td><code>{_e(r['check'])}</code></td>"
        f'<td class="{_cls(str(r["severity"]))}">{_e(r["severity"])}</td>'
        f"<td>{_e(r['message'])}{'<br>fix: ' + _e(r['fix']) if r['fix'] else ''}</td>"
        f"<td><code>{_e(json.dumps(r['observed'], sort_keys=True)[:300])}</code></td></tr>"
        for r in rows
    )
    head = "<tr><th>state</th><th>check</th><th>severity</th><th>message</th><th>observed</th></tr>"
    return f"<table>{head}{body}</table>"


def _gantt(states: list[dict[str, Any]]) -> str:
    """States as bars on the run's clock (wall time, so a wait at a gate shows)."""
    timed = [s for s in states if s["started_at"]]
    if not timed:
        return ""
    origin = dt.datetime.fromisoformat(timed[0]["started_at"])
    spans = []
    for s in timed:
        start = (dt.datetime.fromisoformat(s["started_at"]) - origin).total_seconds()
        spans.append((s, start, s["wall_seconds"] or 0.0))
    total = max(start + length for _, start, length in spans) or 1.0
    width, label_w, row_h = 900, 260, 16
    scale = (width - label_w - 10) / total
    bars = []
    for n, (s, start, length) in enumerate(spans):
        y = n * row_h
        colour = "#c62828" if s["status"] == "failed" else "#1f77b4"
        if s["phase"] == "rollback":
            colour = "#ff7f0e"
        bars.append(
            f'<text x="0" y="{y + 12}">{_e(s["seed_step"] or "tool")} {_e(s["state_id"])}</text>'
            f'<rect x="{label_w + start * scale:.1f}" y="{y + 3}" '
            f'width="{max(length * scale, 1.5):.1f}" height="{row_h - 5}" fill="{colour}">'
            f"<title>{_e(s['state_id'])}: {_secs(length)}</title></rect>"
        )
    height = len(spans) * row_h + 20
    axis = (
        f'<text x="{label_w}" y="{height - 4}">0 s</text>'
        f'<text x="{width - 60}" y="{height - 4}">{total:.0f} s</text>'
    )
    return (
        f'<svg id="timeline-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" role="img" aria-label="states over time">{"".join(bars)}{axis}</svg>'
    )


def _redis_figure(number: int, window: dict[str, Any]) -> str:
    samples = [s for s in window["samples"] if not s.get("error")]
    nodes = sorted({str(s["node"]) for s in window["samples"]})
    colours = {node: PALETTE[i % len(PALETTE)] for i, node in enumerate(nodes)}
    cpu = _line_chart(samples, nodes, colours, "cpu_percent", "CPU %", 0)
    mem = _line_chart(samples, nodes, colours, "used_mb", "used memory (MB)", 1)
    legend = "".join(
        f'<span style="color:{colours[n]}">&#9632; {_e(n)}</span>&nbsp;&nbsp; ' for n in nodes
    )
    stats = _node_stats(window["samples"])
    table = "".join(
        f'<tr><td>{_e(n)}</td><td class="num">{_num(st["cpu_avg"], "%")}</td>'
        f'<td class="num">{_num(st["cpu_peak"], "%")}</td>'
        f'<td class="num">{_num(st["mem_peak"], "%")}</td>'
        f'<td class="num">{_num(st["mb_peak"])}</td></tr>'
        for n, st in stats.items()
    )
    return (
        f'<figure class="redis-chart" id="redis-chart-{number}"><figcaption>Monitoring window '
        f"of {_e(window['state_id'])} ({len(window['samples'])} samples, {len(nodes)} nodes)"
        f"</figcaption>{cpu}{mem}<div>{legend}</div>"
        "<table><tr><th>node</th><th>CPU avg</th><th>CPU peak</th><th>memory peak</th>"
        f"<th>used MB peak</th></tr>{table}</table></figure>"
    )


def _line_chart(
    samples: list[dict[str, Any]],
    nodes: list[str],
    colours: dict[str, str],
    key: str,
    label: str,
    index: int,
) -> str:
    width, height, left, bottom, top = 900, 180, 60, 24, 14
    points = [
        (float(s["t"]), float(s[key]), str(s["node"])) for s in samples if s.get(key) is not None
    ]
    t_max = max((p[0] for p in points), default=1.0) or 1.0
    values = [p[1] for p in points]
    v_min, v_max = 0.0, max(values, default=0.0) * 1.1 or 1.0

    def xy(t: float, v: float) -> str:
        x = left + (width - left - 10) * t / t_max
        y = top + (height - top - bottom) * (1 - (v - v_min) / (v_max - v_min))
        return f"{x:.1f},{y:.1f}"

    lines = "".join(
        f'<polyline class="series" data-node="{_e(node)}" fill="none" stroke="{colours[node]}" '
        f'stroke-width="1.5" points="{" ".join(xy(t, v) for t, v, n in points if n == node)}"/>'
        for node in nodes
        if any(n == node for _, _, n in points)
    )
    frame = (
        f'<rect x="{left}" y="{top}" width="{width - left - 10}" height="{height - top - bottom}" '
        'fill="none" stroke="#bbb"/>'
        f'<text x="4" y="{top + 10}">{v_max:.2f}</text>'
        f'<text x="4" y="{height - bottom}">{v_min:.2f}</text>'
        f'<text x="{left}" y="{height - 6}">0 s</text>'
        f'<text x="{width - 60}" y="{height - 6}">{t_max:.1f} s</text>'
        f'<text x="{left + 8}" y="{top - 2}">{_e(label)}</text>'
    )
    kind = "cpu" if index == 0 else "memory"
    return (
        f'<svg class="redis-{kind}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" role="img" aria-label="{_e(label)} per Redis node">'
        f"{frame}{lines}</svg>"
    )


def status_screen(journal: Journal, run: RunRecord, status: str) -> str:
    """`status` on a terminal: the one-screen view, with the status as the runner sees it (a
    run marked running that nobody holds is shown as interrupted)."""
    report = build_report(journal, run)
    report["run"]["status"] = status
    return as_text(report)


def render_report(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, default=str) + "\n"
    if fmt == "html":
        return as_html(report)
    if fmt == "text":
        return as_text(report)
    return as_markdown(report)
