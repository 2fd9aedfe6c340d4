"""The command line: a thin typer layer. Heavy modules are imported inside the commands so that
`--help`, `validate` and `plan` start fast and import no network library."""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ors_migrate.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, OrsMigrateError
from ors_migrate.events import EventKind

if TYPE_CHECKING:
    from ors_migrate.parallel import Parallelism

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 a run failed or was rolled back; 2 bad input (site file, playbook, "
    "arguments) or an answer needed with no terminal; 3 preflight or verification found a "
    "blocking problem; 4 another run holds the lock; 130 interrupted or stopped at a gate."
)

# Real invocations shown at the end of each command's --help.
EXAMPLES: dict[str, list[str]] = {
    "": [
        "ors-migrate validate site.yaml && ors-migrate plan site.yaml",
        "ors-migrate run site.yaml",
    ],
    "lab": [
        "ors-migrate lab up --dir /tmp/lab && ors-migrate run /tmp/lab/site.yaml --yes",
    ],
    "validate": [
        "ors-migrate validate site.yaml",
        "ors-migrate validate site.yaml --playbook remove-cassandra --json",
    ],
    "plan": [
        "ors-migrate plan site.yaml",
        "ors-migrate plan site.yaml --format markdown > plan.md",
        "ors-migrate plan site.yaml --parallel 4   # the waves and the window for 4 at once",
    ],
    "schema": [
        "ors-migrate schema -o site.schema.json",
    ],
    "preflight": [
        "ors-migrate preflight site.yaml",
        "ors-migrate preflight site.yaml --json",
    ],
    "run": [
        "ors-migrate run site.yaml",
        "ors-migrate run site.yaml --resume --yes     # continue unattended",
        "ors-migrate run site.yaml --parallel 4 --parallel-per-cluster 2",
    ],
    "rollback": [
        "ors-migrate rollback 20261130-061500-ab12cd",
        "ors-migrate rollback 20261130-061500-ab12cd --to start --yes",
    ],
    "abandon": [
        'ors-migrate abandon 20261130-061500-ab12cd --reason "lab torn down"',
    ],
    "runs": [
        "ors-migrate runs",
        "ors-migrate runs --json --state-dir /var/lib/ors-migrate",
    ],
    "status": [
        "ors-migrate status",
        "ors-migrate status 20261130-061500-ab12cd --json",
    ],
    "lab up": [
        "ors-migrate lab up --dir /tmp/lab",
        "ors-migrate lab up --dir /tmp/lab --secure --pairs-per-cluster 3",
        "ors-migrate lab up --dir /tmp/rehearsal --from site.yaml --monitor-window-s 10",
    ],
    "lab status": [
        "ors-migrate lab status --dir /tmp/lab",
        "ors-migrate lab status --dir /tmp/lab --json",
    ],
    "lab fault": [
        "ors-migrate lab fault --dir /tmp/lab --app ors-cl1-p1-b no-persist",
        "ors-migrate lab fault --dir /tmp/lab --app ors-cl1-p1-a slow-start --seconds 20",
        "ors-migrate lab fault --dir /tmp/lab --clear",
    ],
    "lab down": [
        "ors-migrate lab down --dir /tmp/lab",
    ],
    "demo": [
        "ors-migrate demo",
        "ors-migrate demo --keep --pairs-per-cluster 3",
        "ors-migrate demo --from site.yaml --monitor-window-s 10",
    ],
    "init": [
        "ors-migrate init site.yaml",
        "ors-migrate init site.yaml --from old.yaml --answers answers.yaml --force",
    ],
    "report": [
        "ors-migrate report --format html -o change-1234.html",
        "ors-migrate report 20261130-061500-ab12cd --format text",
    ],
}


def examples(command: str) -> str:
    """The epilog of a command's --help: its examples, kept as written (\\b stops rewrapping)."""
    lines = "\n".join(f"  {line}" for line in EXAMPLES[command])
    return f"Examples:\n\n\b\n{lines}"


app = typer.Typer(
    name="ors-migrate",
    help="Move Genesys ORS 8.1.4 session persistence from Cassandra to Redis Cluster, step by "
    "documented step, resumably. " + EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help: flags read as flags (`--yes`), not as options taking a value (`--yes <bool>`).
    rich_markup_mode=None,
    epilog=examples(""),
    add_completion=True,
)
lab_app = typer.Typer(
    help="The local rehearsal lab: real Redis Cluster, simulated ORS HA pairs, "
    "CQL stand-in for Cassandra.",
    no_args_is_help=True,
    rich_markup_mode=None,
    epilog=examples("lab"),
)
app.add_typer(lab_app, name="lab")

SiteArg = Annotated[Path, typer.Argument(help="Site file (YAML).", show_default=False)]
PlaybookOpt = Annotated[
    str, typer.Option("--playbook", "-p", help="Bundled playbook name or a YAML path.")
]
StateDirOpt = Annotated[
    str | None,
    typer.Option(
        "--state-dir",
        envvar="ORS_MIGRATE_STATE_DIR",
        help="Where runs are kept (default ~/.local/state/ors-migrate).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
ParallelOpt = Annotated[
    int | None,
    typer.Option(
        "--parallel",
        min=1,
        help="In each state that works pair by pair, run up to N HA pairs at once (default 1: "
        "one pair at a time, as documented; a resume keeps the run's own). A pair's own steps "
        "stay in order.",
        show_default=False,
    ),
]
PerClusterOpt = Annotated[
    int | None,
    typer.Option(
        "--parallel-per-cluster",
        min=1,
        help="With --parallel (required): at most M of those pairs in one ORS cluster, to "
        "keep capacity.",
        show_default=False,
    ),
]
DirOpt = Annotated[Path, typer.Option("--dir", help="Lab directory.")]


def _parallelism(pairs: int | None, per_cluster: int | None) -> Parallelism | None:
    """`--parallel` and `--parallel-per-cluster` as a `Parallelism`, or None when not given.
    A cap per ORS cluster alone is refused, on a resume too: without the pair count it would
    either run one pair at a time (silently serial) or take a count the operator did not type."""
    from ors_migrate.errors import InputError
    from ors_migrate.parallel import Parallelism

    if pairs is None and per_cluster is not None:
        raise InputError(
            f"--parallel-per-cluster {per_cluster} limits the HA pairs of --parallel N in each "
            "ORS cluster and means nothing alone: give --parallel N with it (on --resume too; "
            "a plain --resume keeps the run's own parallelism)",
            rule="parallel-per-cluster",
        )
    if pairs is None:
        return None
    return Parallelism(pairs, per_cluster)


def _state_dir(value: str | None) -> Path:
    from ors_migrate.journal import default_state_dir
    from ors_migrate.statedir import StateDirError

    if value is not None and not value.strip():
        raise StateDirError("''", "an empty path names no directory; give one (--state-dir DIR)")
    return Path(value) if value is not None else default_state_dir()


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def _ui(yes: bool = False, quiet: bool = False, on_timeout: str | None = None) -> Any:
    from ors_migrate.ui import Ui

    return Ui(assume_yes=yes, quiet=quiet, on_timeout=on_timeout)


@contextmanager
def _planning_outside_the_collector() -> Iterator[None]:
    """`plan` without cyclic garbage collection. For 500 HA pairs it allocates millions of
    objects, nearly all alive until the plan is printed and almost none in a cycle (the
    collector found some 750); its passes over them cost some 40 ms. At the end, what is left
    (mostly the libraries planning imported) is frozen as `main` freezes the command line's,
    so that the interpreter's last collections at exit skip it: they took as long again.
    `plan` is the last thing its process does."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


@app.command(epilog=examples("validate"))
def validate(
    site: SiteArg,
    playbook: PlaybookOpt = "migrate-to-redis",
    as_json: JsonOpt = False,
) -> None:
    """Static checks of the site file and of the options the playbook would write, against every
    documented rule. No network. Exit 0 when valid (warnings allowed), 2 on any error."""
    from ors_migrate.errors import InputError
    from ors_migrate.rules import check, errors_in, findings_from_error, render_findings
    from ors_migrate.runner import load_playbook, make_plan
    from ors_migrate.site import load_site

    try:
        loaded = load_site(site)
        chosen = load_playbook(playbook)
        findings = check(loaded, make_plan(loaded, chosen, read_current=False), chosen)
    except InputError as exc:
        if not as_json:
            raise
        findings = findings_from_error(exc)
    errors = errors_in(findings)
    if as_json:
        _print_json(
            {
                "site": str(site),
                "playbook": playbook,
                "valid": not errors,
                "errors": len(errors),
                "warnings": len(findings) - len(errors),
                "findings": [f.as_dict() for f in findings],
            }
        )
    else:
        typer.echo(render_findings(str(site), findings))
    raise typer.Exit(EXIT_BAD_INPUT if errors else 0)


@app.command(epilog=examples("plan"))
def plan(
    site: SiteArg,
    playbook: PlaybookOpt = "migrate-to-redis",
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="text, json, markdown or mermaid.")
    ] = "text",
    state_dir: StateDirOpt = None,
    parallel: ParallelOpt = None,
    parallel_per_cluster: PerClusterOpt = None,
) -> None:
    """The dry-run plan: every state in order, expanded to hosts, applications and commands,
    with option diffs, gates and the rollback point; secrets as ***; an estimate of how long
    it takes (from the site's `durations`, the site's latest succeeded run in the state
    directory, or our defaults), with --parallel the waves of HA pairs and the estimate for
    that parallelism. A site that breaks a documented rule gets its findings on
    stderr instead, and exit code 2."""
    from ors_migrate.errors import InputError
    from ors_migrate.render import FORMATS, render_plan
    from ors_migrate.rules import check, errors_in, render_findings
    from ors_migrate.runner import load_playbook, make_plan
    from ors_migrate.site import load_site

    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}", rule="format")
    with _planning_outside_the_collector():
        loaded = load_site(site)
        chosen = load_playbook(playbook)
        planned = make_plan(loaded, chosen)
        findings = check(loaded, planned, chosen)
        if findings:
            typer.echo(render_findings(str(site), findings), err=True)
        if errors_in(findings):
            raise typer.Exit(EXIT_BAD_INPUT)
        from ors_migrate.estimate import estimate_plan
        from ors_migrate.runner import durations_for

        estimate = estimate_plan(
            planned,
            durations_for(loaded, _state_dir(state_dir)),
            _parallelism(parallel, parallel_per_cluster),
        )
        typer.echo(render_plan(planned, fmt, estimate))


@app.command(epilog=examples("schema"))
def schema(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the schema to this file instead of stdout."),
    ] = None,
) -> None:
    """The site file's JSON Schema, for editors (yaml-language-server) and CI linters."""
    from ors_migrate.site import site_json_schema

    text = json.dumps(site_json_schema(), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        from ors_migrate.userfiles import write_user_file

        write_user_file(output, text)


@app.command(epilog=examples("preflight"))
def preflight(
    site: SiteArg,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
) -> None:
    """Live, read-only checks: hosts and keys, ORS roles and versions, Redis Cluster health,
    Cassandra, current options. Exit 0 when nothing blocks, 3 when something does."""
    from ors_migrate.errors import EXIT_BLOCKED
    from ors_migrate.preflight import render_table, run_preflight
    from ors_migrate.site import load_site

    ui = _ui(quiet=True)
    findings = run_preflight(load_site(site), _state_dir(state_dir), ui)
    blocking = [f for f in findings if f["severity"] == "error"]
    if as_json:
        _print_json({"site": str(site), "blocking": len(blocking), "findings": findings})
    else:
        render_table(findings, ui.console)
        verdict = (
            f"{len(blocking)} blocking problem(s)" if blocking else "nothing blocks the migration"
        )
        print(f"preflight: {verdict}", file=sys.stderr)
    raise typer.Exit(EXIT_BLOCKED if blocking else 0)


@app.command(epilog=examples("run"))
def run(
    site: SiteArg,
    run_id: Annotated[
        str | None, typer.Argument(help="With --resume: the run to continue.")
    ] = None,
    playbook: Annotated[
        str | None,
        typer.Option(
            "--playbook",
            "-p",
            help="Bundled playbook name or a YAML path (default: migrate-to-redis; with "
            "--resume, the playbook the run started with).",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Approve every gate (unattended).")
    ] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run.")] = False,
    no_auto_rollback: Annotated[
        bool,
        typer.Option(
            "--no-auto-rollback",
            help="After Redis is enabled, stop instead of rolling back on failure.",
        ),
    ] = False,
    override_rule: Annotated[
        list[str] | None,
        typer.Option(
            "--override-rule",
            help="Start although this documented rule (by id) reports an error; journaled. "
            "Repeat for each rule.",
        ),
    ] = None,
    switchover_below: Annotated[
        int | None,
        typer.Option(
            "--switchover-below",
            min=1,
            help="Before the first switchover of each pair (sessions in progress are lost "
            "there), wait until its primary has fewer than N sessions in progress...",
        ),
    ] = None,
    switchover_wait: Annotated[
        float,
        typer.Option(
            "--switchover-wait", min=0, help="...for at most this many seconds, then switch."
        ),
    ] = 60.0,
    on_timeout: Annotated[
        str | None,
        typer.Option(
            "--on-timeout",
            help="Without a terminal, when a verification window ends without evidence: "
            "'stop' (default: pause, resumable, exit 130) or 'rollback'.",
            show_default=False,
        ),
    ] = None,
    window_end: Annotated[
        str | None,
        typer.Option(
            "--window-end",
            help="When the change window closes: a time of day (HH:MM, local) or an ISO "
            "timestamp. No restart or switchover starts that its estimate says would end "
            "later; the run pauses at the last safe point (exit 130) for --resume.",
        ),
    ] = None,
    parallel: ParallelOpt = None,
    parallel_per_cluster: PerClusterOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Execute a playbook against a site, journaled so that it can be resumed."""
    import datetime as dt

    from ors_migrate.errors import InputError
    from ors_migrate.estimate import parse_window_end
    from ors_migrate.runner import Runner
    from ors_migrate.step import SwitchoverPolicy
    from ors_migrate.ui import ON_TIMEOUT

    if on_timeout is not None and on_timeout not in ON_TIMEOUT:
        raise InputError(f"--on-timeout takes {' or '.join(ON_TIMEOUT)}", rule="on-timeout")

    if run_id is not None and not resume:
        raise InputError(
            f"a run id ({run_id}) is taken only with --resume, to continue that run; "
            "to start a new run give no run id (--yes takes no value)",
            rule="run-id-without-resume",
        )
    policy = (
        SwitchoverPolicy(switchover_below, switchover_wait)
        if switchover_below is not None
        else None
    )
    end = parse_window_end(window_end, dt.datetime.now(dt.UTC)) if window_end else None
    runner = Runner(
        _state_dir(state_dir),
        _ui(yes, on_timeout=on_timeout),
        switchover_policy=policy,
        window_end=end,
        parallel=_parallelism(parallel, parallel_per_cluster),
    )
    try:
        run_id, outcome = runner.start(
            str(site),
            playbook,
            resume=resume,
            run_id=run_id,
            auto_rollback=not no_auto_rollback,
            override_rules=frozenset(override_rule or ()),
        )
    finally:
        runner.close()
    _finish(run_id, outcome)


def _finish(run_id: str, outcome: Any) -> None:
    stream = sys.stderr
    print(f"run {run_id}: {outcome.status}: {outcome.message}", file=stream)
    raise typer.Exit(outcome.exit_code)


@app.command(epilog=examples("rollback"))
def rollback(
    run_id: Annotated[
        str | None, typer.Argument(help="Run to roll back (default: the latest).")
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="'start': also restore every option file exactly as before the run."
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y")] = False,
    state_dir: StateDirOpt = None,
) -> None:
    """The documented rollback: Redis disabled everywhere, then the standard restart."""
    from ors_migrate.errors import InputError
    from ors_migrate.runner import Runner

    if to not in (None, "start"):
        raise InputError("--to takes only 'start'", rule="rollback-to")
    runner = Runner(_state_dir(state_dir), _ui(yes))
    try:
        run_id, outcome = runner.rollback(run_id, to_start=to == "start")
    finally:
        runner.close()
    if outcome.status == "rolled_back":
        print(f"run {run_id}: {outcome.message}", file=sys.stderr)
        raise typer.Exit(0)
    _finish(run_id, outcome)


@app.command(epilog=examples("abandon"))
def abandon(
    run_id: Annotated[str, typer.Argument(help="The run to end.", show_default=False)],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (journaled with who ended it).", show_default=False)
    ],
    state_dir: StateDirOpt = None,
) -> None:
    """End a failed, paused or interrupted run without touching the estate (for example when
    the lab or hosts behind it are gone), so that a new run of its site can start. Refused while
    a live process holds the run's lock (exit 4)."""
    from ors_migrate.runner import Runner

    runner = Runner(_state_dir(state_dir), _ui(quiet=True))
    try:
        record = runner.abandon(run_id, reason)
    finally:
        runner.close()
    print(f"run {record.run_id}: abandoned ({record.outcome})", file=sys.stderr)


@app.command(epilog=examples("runs"))
def runs(as_json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Every run in the state directory, oldest first."""
    from ors_migrate.runner import Runner

    where = _state_dir(state_dir)
    runner = Runner(where, _ui(quiet=True), create=False)
    try:
        rows = [runner.run_summary(r) for r in runner.journal.runs()]
    finally:
        runner.close()
    if as_json:
        _print_json(rows)
        return
    if not rows:
        typer.echo(f"no runs in {where}")
    for row in rows:
        typer.echo(
            f"{row['run_id']}  {row['site']:<16} {row['playbook']:<18} "
            f"{row['status']:<12} {row['current_state'] or '-'}"
        )


@app.command(epilog=examples("status"))
def status(
    run_id: Annotated[str | None, typer.Argument(help="Run id (default: the latest).")] = None,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
) -> None:
    """Where one run stands: status, current state, states done."""
    from ors_migrate.report import status_screen
    from ors_migrate.runner import Runner

    runner = Runner(_state_dir(state_dir), _ui(quiet=True), create=False)
    try:
        record = runner.find_run(run_id)
        summary = runner.run_summary(record)
        events = runner.journal.events(record.run_id)
        screen = status_screen(runner.journal, record, summary["status"])
    finally:
        runner.close()
    done = [e.state_id for e in events if e.kind == EventKind.STATE_ENDED and e.phase == "forward"]
    summary["states_done"] = done
    summary["rollback_states_done"] = [
        e.state_id for e in events if e.kind == EventKind.STATE_ENDED and e.phase == "rollback"
    ]
    failures = [e.payload.get("error") for e in events if e.kind == EventKind.ACTION_FAILED]
    summary["last_error"] = failures[-1] if failures else None
    if as_json:
        _print_json(summary)
        return
    typer.echo(screen, nl=False)


@lab_app.command("up", epilog=examples("lab up"))
def lab_up(
    directory: DirOpt,
    clusters: Annotated[int, typer.Option(min=1, max=10)] = 2,
    pairs_per_cluster: Annotated[int, typer.Option(min=1, max=50)] = 2,
    secure: Annotated[
        bool, typer.Option("--secure", help="Redis with TLS and an ACL user.")
    ] = False,
    from_site: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Shape the lab like this site file (its clusters, pairs, application names, "
            "Redis shape, backend, versions) and write DIR/site.yaml for it.",
        ),
    ] = None,
    monitor_window_s: Annotated[
        float | None,
        typer.Option(
            "--monitor-window-s",
            min=0.5,
            help="With --from: a shorter Redis monitoring window than the site's.",
        ),
    ] = None,
    load_seed: Annotated[
        int | None,
        typer.Option(
            "--load-seed",
            help="Make the call load reproducible: two labs with the same seed get the same "
            "calls at the same time after lab up (to compare runs on the same load).",
        ),
    ] = None,
) -> None:
    """Start a lab in DIR and write DIR/site.yaml for it."""
    if from_site is not None:
        from ors_migrate.errors import InputError
        from ors_migrate.rehearsal import describe, lab_up_from_site

        if load_seed is not None:
            raise InputError("--load-seed is for the generic lab, not with --from", rule="usage")

        lab = lab_up_from_site(directory, from_site, monitor_window_s=monitor_window_s)
        typer.echo(describe(lab))
        return
    from ors_migrate.lab.lab import LabShape
    from ors_migrate.lab.lab import lab_up as up

    shape = LabShape(
        clusters=clusters, pairs_per_cluster=pairs_per_cluster, secure=secure, load_seed=load_seed
    )
    layout = up(directory, shape)
    typer.echo(f"lab up in {layout.root}; site file: {layout.site}")


@lab_app.command("status", epilog=examples("lab status"))
def lab_status(directory: DirOpt, as_json: JsonOpt = False) -> None:
    """Role, version, persistence type and session counters of every simulated ORS application."""
    from ors_migrate.lab.lab import lab_status as status_of

    data = status_of(directory)
    if as_json:
        _print_json(data)
        return
    typer.echo(
        f"{'app':<16} {'pair':<12} {'role':<8} {'version':<12} {'type':<10} "
        "created restored lost starts"
    )
    for a in data["apps"]:
        typer.echo(
            f"{a['app']:<16} {a['ha_pair']:<12} {a['role']:<8} {a['version'] or '-':<12} "
            f"{a['type'] or '-':<10} {a['created']:>7} {a['restored']:>8} {a['lost']:>4} "
            f"{a['starts']:>6}"
        )


@lab_app.command("fault", epilog=examples("lab fault"))
def lab_fault(
    directory: DirOpt,
    kind: Annotated[
        str | None,
        typer.Argument(
            help="no-persist, refuse-start, no-new-sessions, slow-start, redis-unreachable or "
            "switchover-ignored.",
            show_default=False,
        ),
    ] = None,
    app_name: Annotated[
        str | None, typer.Option("--app", help="The simulated ORS application to break.")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option("--seconds", min=0, help="slow-start: extra seconds.")
    ] = None,
    times: Annotated[
        int | None,
        typer.Option(
            "--times",
            min=1,
            help="refuse-start, switchover-ignored: act only this many times.",
        ),
    ] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove the faults (of --app, or of every app).")
    ] = False,
) -> None:
    """Inject a fault into one simulated ORS application, to rehearse how a run reacts; faults
    that act at start take effect at the application's next (re)start."""
    from ors_migrate.errors import InputError
    from ors_migrate.lab.faults import FaultError, add_fault, clear_faults
    from ors_migrate.lab.layout import LabLayout

    layout = LabLayout(directory.resolve())
    if not layout.config.exists():
        raise InputError(f"no lab in {layout.root} (no lab.json)", rule="lab-exists")
    try:
        if clear:
            cleared = clear_faults(layout, app_name)
            typer.echo("cleared faults of " + (", ".join(cleared) or "no application"))
            return
        if kind is None or app_name is None:
            raise InputError("give KIND and --app APP, or --clear", rule="lab-fault")
        typer.echo(add_fault(layout, app_name, kind, seconds, times))
    except FaultError as exc:
        raise InputError(str(exc), rule="lab-fault") from None


@lab_app.command("down", epilog=examples("lab down"))
def lab_down(directory: DirOpt) -> None:
    """Stop everything the lab started."""
    from ors_migrate.lab.lab import lab_down as down

    for line in down(directory):
        typer.echo(f"stopped {line}")


@app.command(epilog=examples("demo"))
def demo(
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Leave the lab directory (not the processes) for inspection."),
    ] = False,
    pairs_per_cluster: Annotated[int, typer.Option(min=1, max=20)] = 2,
    from_site: Annotated[
        Path | None,
        typer.Option("--from", help="Rehearse this site's own migration (see `lab up --from`)."),
    ] = None,
    monitor_window_s: Annotated[
        float | None,
        typer.Option(
            "--monitor-window-s", min=0.5, help="With --from: a shorter monitoring window."
        ),
    ] = None,
) -> None:
    """Lab up in a temporary directory, the whole migration with --yes, a summary, lab down."""
    from ors_migrate.demo import run_demo

    raise typer.Exit(
        run_demo(
            keep=keep,
            pairs_per_cluster=pairs_per_cluster,
            from_site=from_site,
            monitor_window_s=monitor_window_s,
        )
    )


@app.command(epilog=examples("init"))
def init(
    site: Annotated[Path, typer.Argument(help="The site file to write.")] = Path("site.yaml"),
    from_site: Annotated[
        Path | None,
        typer.Option("--from", help="Start from this site file: its values are the defaults."),
    ] = None,
    answers: Annotated[
        Path | None,
        typer.Option("--answers", help="Answer every question from this YAML file (no prompts)."),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE: one answer (no prompts); repeatable."),
    ] = None,
    save_answers: Annotated[
        Path | None,
        typer.Option("--save-answers", help="Also write the answers given, for --answers."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite SITE if it exists.")] = False,
) -> None:
    """Write a site file: asks, in a terminal, for ORS clusters, HA pairs, hosts, transport,
    option backend, service commands, Redis, TLS and Cassandra; or reads the answers from
    --answers/--set. Passwords are references (env:NAME, file:PATH, prompt), never values."""
    from ors_migrate.wizard import InitRequest, run_init

    request = InitRequest(site, from_site, answers, sets or [], save_answers, force)
    raise typer.Exit(run_init(request))


@app.command(epilog=examples("report"))
def report(
    run_id: Annotated[str | None, typer.Argument(help="Run id (default: the latest).")] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="markdown, html, json or text (one screen).")
    ] = "markdown",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
    state_dir: StateDirOpt = None,
) -> None:
    """The audit record of a run: site, plan hash, operators, timeline with durations, option
    changes, gate decisions, checks, Redis CPU and memory, outcome. No secret in it."""
    from ors_migrate.errors import InputError
    from ors_migrate.report import FORMATS, build_report, render_report
    from ors_migrate.runner import Runner
    from ors_migrate.userfiles import check_target

    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}", rule="format")
    if output is not None:
        check_target(output)
    runner = Runner(_state_dir(state_dir), _ui(quiet=True), create=False)
    try:
        text = render_report(build_report(runner.journal, runner.find_run(run_id)), fmt)
    finally:
        runner.close()
    if output is None:
        typer.echo(text, nl=False)
        return
    from ors_migrate.userfiles import write_user_file

    write_user_file(output, text)
    print(f"wrote {output}", file=sys.stderr)


def fewer_collections() -> None:
    """A plan of 500 HA pairs allocates hundreds of thousands of objects that live as long as
    the command, and nearly none form cycles: the collector's default rhythm spent a fifth of
    `plan` rescanning them. What is loaded so far is kept out of its scans."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def main() -> None:
    fewer_collections()
    if os.environ.get("NO_COLOR"):
        os.environ.setdefault("TERM", "dumb")
    try:
        code = app(standalone_mode=False)
    except OrsMigrateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # usage errors from typer's command-line parser
        from typer._click import ClickException

        if isinstance(exc, ClickException):
            exc.show()
            sys.exit(EXIT_BAD_INPUT)
        if os.environ.get("ORS_MIGRATE_DEBUG"):
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc}\n"
            "This is a defect in ors-migrate; set ORS_MIGRATE_DEBUG=1 to see the traceback. "
            "A run in progress is journaled and can be resumed.",
            file=sys.stderr,
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
