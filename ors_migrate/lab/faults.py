"""Faults an operator can inject into the rehearsal lab, to rehearse how a run reacts.

A fault belongs to one simulated ORS application and lives in its `faults.json`; the simulator
reads it at start (refuse-start, slow-start, redis-unreachable) and on every tick (no-persist,
no-new-sessions), so the faults that act at start take effect at the next (re)start, as they
would on a real host. The lab's Management Layer (`orsctl`) reads switchover-ignored when it is
asked to switch the application's HA pair over. `lab fault --clear` removes them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ors_migrate.lab.layout import LabLayout, read_json, write_json_atomic

UNREACHABLE_REDIS = "127.0.0.1:1"  # nothing listens on port 1: connections are refused


@dataclass(frozen=True)
class FaultKind:
    name: str
    effect: str
    at_start: bool


KINDS = {
    k.name: k
    for k in (
        FaultKind(
            "no-persist",
            "reports its persistence type and stays up, but writes nothing to its store",
            False,
        ),
        FaultKind("refuse-start", "exits at its next start with an error", True),
        FaultKind("no-new-sessions", "as primary, creates no new session", False),
        FaultKind("slow-start", "takes SECONDS longer to report ready at its next start", True),
        FaultKind(
            "redis-unreachable",
            f"from its next start, reaches Redis at {UNREACHABLE_REDIS} (connection refused)",
            True,
        ),
        FaultKind(
            "switchover-ignored",
            "the next switchover of its HA pair is accepted but does not take effect: the roles "
            "stay as they are",
            False,
        ),
    )
}

# Kinds that `--times` limits: each occurrence uses one up.
COUNTED = ("refuse-start", "switchover-ignored")


class FaultError(ValueError):
    """An unknown application or fault kind."""


def active_faults(layout: LabLayout, app: str) -> dict[str, dict[str, Any]]:
    data = read_json(layout.faults(app))
    return data if isinstance(data, dict) else {}


def add_fault(
    layout: LabLayout, app: str, kind: str, seconds: float | None = None, times: int | None = None
) -> str:
    """Record `kind` for `app`; returns what it does, for the operator."""
    if app not in layout.load_config()["apps"]:
        known = ", ".join(layout.load_config()["apps"])
        raise FaultError(f"no application {app} in this lab (applications: {known})")
    if kind not in KINDS:
        raise FaultError(f"unknown fault kind {kind} (kinds: {', '.join(KINDS)})")
    params: dict[str, Any] = {}
    if kind == "slow-start":
        params["seconds"] = float(seconds if seconds is not None else 10.0)
    if kind in COUNTED and times is not None:
        params["times"] = int(times)
    faults = active_faults(layout, app)
    faults[kind] = params
    write_json_atomic(layout.faults(app), faults)
    effect = KINDS[kind].effect.replace("SECONDS", f"{params.get('seconds', 0):g} s")
    when = " (takes effect at its next start)" if KINDS[kind].at_start else ""
    return f"{app}: {kind}: {effect}{when}"


def consume_refusal(layout: LabLayout, app: str) -> bool:
    """At a start: whether a refuse-start fault refuses it."""
    return consume(layout, app, "refuse-start")


def consume(layout: LabLayout, app: str, kind: str) -> bool:
    """Whether a counted fault acts now. A fault given `times` acts that many times and then
    removes itself (a fault fixed by the operator, without a race)."""
    faults = active_faults(layout, app)
    if kind not in faults:
        return False
    times = faults[kind].get("times")
    if times is not None:
        if times <= 1:
            del faults[kind]
        else:
            faults[kind]["times"] = times - 1
        write_json_atomic(layout.faults(app), faults)
    return True


def clear_faults(layout: LabLayout, app: str | None = None) -> list[str]:
    """Remove the faults of `app`, or of every application; returns the apps cleared."""
    apps = [app] if app else list(layout.load_config()["apps"])
    cleared = []
    for name in apps:
        path = layout.faults(name)
        if path.exists():
            path.unlink()
            cleared.append(name)
    return cleared
