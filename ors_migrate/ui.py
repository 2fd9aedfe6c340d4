"""What the operator sees and answers: progress, gates, operator steps, the monitoring window.

On a terminal, states show a live spinner with elapsed time, the Redis monitoring window a live
table of CPU and memory per node, and a gate a one-screen summary (what is done, what comes next,
on which hosts, what is at risk) before it asks approve / stop / roll back. Without a terminal the
same facts are printed as plain lines, and anything that needs an answer stops the run at once
(`TerminalRequired`, exit 2) instead of waiting for input that cannot come.

With HA pairs in parallel (`run --parallel N`), each line of a pair's work starts with the pair
(`[pair-1]`), live bars give way to plain lines in the pairs' workers, and questions are asked
one at a time.
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ors_migrate.errors import GateStopped, TerminalRequired
from ors_migrate.parallel import WORKING_ON
from ors_migrate.step import Decision, GateView, SwitchoverPolicy

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.progress import Progress, TaskID

DECISIONS = ("approve", "stop", "rollback")
ON_TIMEOUT = ("stop", "rollback")  # what an unattended run does when a window ends empty


@dataclass
class _StateSeen:
    index: int
    total: int
    state_id: str
    seed: str | None
    title: str
    started: float
    actions_done: int = 0


@dataclass
class _NodeLoad:
    cpu: float | None = None
    memory_percent: float | None = None
    used_mb: float | None = None
    cpu_peak: float = 0.0
    samples: int = 0
    error: str | None = None


class Ui:
    def __init__(
        self,
        *,
        assume_yes: bool = False,
        quiet: bool = False,
        interactive: bool | None = None,
        console: Console | None = None,
        on_timeout: str | None = None,
    ) -> None:
        from rich.console import Console

        self.assume_yes = assume_yes
        self.on_timeout = on_timeout
        self.quiet = quiet
        no_color = bool(os.environ.get("NO_COLOR"))
        self.console = console or Console(
            stderr=True, no_color=no_color, highlight=False, soft_wrap=True
        )
        if interactive is None:
            interactive = sys.stdin.isatty() and sys.stderr.isatty()
        self.interactive = interactive
        self._seen: list[_StateSeen] = []
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._closes_at_exit = False
        self._asking = threading.RLock()  # one question on the screen at a time

    @property
    def live(self) -> bool:
        """Live displays (spinners, tables) only on a terminal, when not quiet, and not in a
        worker of pairs running in parallel (several bars at once would overwrite each other)."""
        return self.console.is_terminal and not self.quiet and WORKING_ON.get() is None

    # Lines
    @staticmethod
    def _pair() -> str:
        """`[pair] ` while HA pairs run in parallel, so interleaved lines stay readable."""
        pair = WORKING_ON.get()
        return f"[{pair}] " if pair else ""

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"{self._pair()}{message}", markup=False)

    def warn(self, message: str) -> None:
        self.console.print(f"{self._pair()}warning: {message}", style="yellow", markup=False)

    def state_started(
        self,
        index: int,
        total: int,
        state_id: str,
        title: str,
        seed: str | None,
        actions: int | None = None,
    ) -> None:
        """`actions`, when given, turns the state's spinner into a bar of actions done."""
        self._seen.append(_StateSeen(index, total, state_id, seed, title, time.monotonic()))
        if self.quiet:
            return
        self.console.print(
            f"[{index}/{total}] {state_id} ({seed or 'tool step'}): {title}",
            style="bold",
            markup=False,
        )
        self._show_activity(f"{state_id}: working", actions)

    def action_done(self, key: str, description: str, seconds: float, note: str = "") -> None:
        if self._seen:
            self._seen[-1].actions_done += 1
        if self.quiet:
            return
        extra = f" ({note})" if note else ""
        self.console.print(
            f"    {self._pair()}ok  {description}  [{seconds:.1f} s]{extra}", markup=False
        )
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    # Live activity: one spinner per state, paused while something else owns the screen
    def _show_activity(self, description: str, total: int | None) -> None:
        if not self.live:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._stop_activity()
        if not self._closes_at_exit:
            atexit.register(self.close)  # a live display left running hides the cursor
            self._closes_at_exit = True
        columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
        if total:
            columns += [BarColumn(), MofNCompleteColumn()]
        columns.append(TimeElapsedColumn())
        self._progress = Progress(*columns, console=self.console, transient=True)
        self._task = self._progress.add_task(description, total=total)
        self._progress.start()

    def _stop_activity(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress = None
        self._task = None

    @contextmanager
    def _screen(self) -> Iterator[None]:
        """Hand the screen to a prompt or another live display, then take the spinner back.
        Pairs in parallel wait their turn."""
        with self._asking:
            progress = self._progress
            if progress is not None:
                progress.stop()
            try:
                yield
            finally:
                if progress is not None and progress is self._progress:
                    progress.start()

    def close(self) -> None:
        self._stop_activity()

    # Answers
    def _need_terminal(self, what: str) -> None:
        if not self.interactive:
            raise TerminalRequired(
                f"{what} needs an operator's answer, but there is no terminal; continue from a "
                "terminal with `ors-migrate run SITE --resume`, or pass --yes to approve every "
                "gate"
            )

    def gate(self, title: str, summary: list[str], view: GateView | None = None) -> Decision:
        """Show what is done, what comes next and what is at risk; ask approve / stop /
        rollback. --yes approves. `view`, when the engine builds one (`gate.build_gate_view`),
        replaces the plain summary lines with live facts such as session counts."""
        if self.assume_yes:
            return "approve"
        self._need_terminal(f"gate '{title}'")
        shown = view or self._view_from_summary(title, summary)
        with self._screen():
            self.console.print(render_gate(shown))
            return self._ask_decision()

    def confirm(self, shown: str, question: str) -> bool:
        """Show what a disruptive command will do and ask yes/no on the terminal."""
        import questionary

        with self._screen():
            self.console.print(shown, markup=False)
            return bool(questionary.confirm(question, default=False).ask())

    def _ask_decision(self) -> Decision:
        import questionary

        answer = questionary.select(
            "How do you want to proceed?",
            choices=[
                questionary.Choice("approve: carry on", value="approve"),
                questionary.Choice("stop: pause here, resume later with --resume", value="stop"),
                questionary.Choice("roll back: disable Redis everywhere", value="rollback"),
            ],
        ).ask()
        return str(answer) if answer in DECISIONS else "stop"

    def _view_from_summary(self, title: str, summary: list[str]) -> GateView:
        current = self._seen[-1] if self._seen else None
        view = GateView(
            title=title,
            state_id=current.state_id if current else "",
            seed_step=current.seed if current else None,
            position=f"state {current.index} of {current.total}" if current else "",
            risk=summary[0] if summary else None,
            done=self._done_here(),
        )
        # The engine's lines: "next: ...", "hosts: a, b", then "  - <action>" lines.
        for line in summary[1:]:
            if line.startswith("hosts: "):
                view.hosts = line.removeprefix("hosts: ").split(", ")
            elif line and not line.startswith("next: "):
                view.next_actions.append(line.strip().removeprefix("- "))
        return view

    def _done_here(self) -> list[str]:
        """States finished in this process (every state before the current one)."""
        if not self._seen:
            return []
        finished = self._seen[:-1]
        lines = []
        first = self._seen[0].index
        if first > 1:
            lines.append(f"states 1-{first - 1} were done before this resume")
        for seen in finished:
            lines.append(f"{seen.seed or 'tool step':<10} {seen.state_id}")
        return lines

    def operator_step(self, text: str, *, who: str) -> None:
        """Show a manual instruction and wait until the operator confirms it is done. --yes
        approves gates, not manual work: the person at the terminal still confirms, and an
        unattended run stops here (exit 130, like a stop at a gate; resumable)."""
        if self.assume_yes and not self.interactive:
            self.console.print(f"\nOperator step: {text}", style="bold cyan", markup=False)
            raise GateStopped(
                "this step must be done by a person and cannot be approved by --yes; do it, "
                "then resume from a terminal"
            )
        self._need_terminal("an operator step")
        import questionary

        with self._screen():
            self.console.print(f"\nOperator step: {text}", style="bold cyan", markup=False)
            confirmed = questionary.confirm(f"{who}, is it done?", default=False).ask()
        if not confirmed:
            raise GateStopped("operator step not confirmed; the run is paused")

    def choose(self, title: str, lines: list[str], choices: list[tuple[str, str]]) -> str:
        """Show `lines` and ask one of `choices` ((value, label) pairs) on the terminal."""
        self._need_terminal(f"'{title}'")
        import questionary

        with self._screen():
            self.console.print(f"\n{title}", style="bold", markup=False)
            for line in lines:
                self.console.print(f"  {line}", markup=False)
            answer = questionary.select(
                "How do you want to proceed?",
                choices=[questionary.Choice(label, value=value) for value, label in choices],
            ).ask()
        values = [value for value, _ in choices]
        return str(answer) if answer in values else "stop"

    def unattended(self) -> bool:
        """No person to ask: no terminal, or --yes without one."""
        return not self.interactive

    # Waiting and monitoring
    @contextmanager
    def evidence_wait(
        self, description: str, window_s: float
    ) -> Iterator[Callable[[float, str], None]]:
        """Progress while a verification waits for evidence: a bar on a terminal, otherwise a
        line at most every 5 seconds. Yields `tick(elapsed_s, what_is_seen_so_far)`."""
        with self._timed_progress(description, window_s, every_s=5.0) as tick:
            yield tick

    @contextmanager
    def _timed_progress(
        self, description: str, total_s: float, *, every_s: float = 0.0
    ) -> Iterator[Callable[[float, str], None]]:
        """A wait of up to `total_s` and what is seen so far: a bar on a terminal, elsewhere a
        line at most every `every_s` seconds. Yields `tick(elapsed_s, seen)`."""
        if not self.live:
            last = [-math.inf]

            def line(elapsed: float, seen: str) -> None:
                if not self.quiet and elapsed - last[0] >= every_s:
                    last[0] = elapsed
                    self.console.print(
                        f"    {self._pair()}{description}: {seen} ({elapsed:.0f}/{total_s:g} s)",
                        markup=False,
                    )

            yield line
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with (
            self._screen(),
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[seen]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            ) as progress,
        ):
            task = progress.add_task(description, total=total_s, seen="")

            def bar(elapsed: float, seen: str) -> None:
                progress.update(task, completed=min(elapsed, total_s), seen=seen)

            yield bar

    @contextmanager
    def monitor(self, window_s: float) -> Iterator[Callable[[dict[str, Any]], None]]:
        """Progress for a monitoring window; yields the per-sample callback. On a terminal: a
        live table of CPU and memory per node; otherwise one line per sampling round."""
        nodes: dict[str, _NodeLoad] = {}
        started = time.monotonic()
        if not self.live:
            with self._monitor_lines(window_s, nodes, started) as on_sample:
                yield on_sample
            return
        from rich.live import Live

        with self._screen(), Live(console=self.console, transient=True) as live:

            def on_sample(sample: dict[str, Any]) -> None:
                _record_sample(nodes, sample)
                live.update(_monitor_table(nodes, time.monotonic() - started, window_s))

            yield on_sample
        if nodes:
            self.console.print(_monitor_table(nodes, time.monotonic() - started, window_s))

    @contextmanager
    def _monitor_lines(
        self, window_s: float, nodes: dict[str, _NodeLoad], started: float
    ) -> Iterator[Callable[[dict[str, Any]], None]]:
        pending: set[str] = set()

        def flush() -> None:
            if pending and not self.quiet:
                elapsed = time.monotonic() - started
                self.console.print(
                    f"    monitor {elapsed:4.1f}/{window_s:g} s  "
                    + "  ".join(_node_text(n, nodes[n]) for n in sorted(pending)),
                    markup=False,
                )
            pending.clear()

        def on_sample(sample: dict[str, Any]) -> None:
            node = str(sample.get("node", "?"))
            if node in pending:
                flush()
            _record_sample(nodes, sample)
            pending.add(node)

        yield on_sample
        flush()

    def wait_for_quiet(
        self,
        what: str,
        probe: Callable[[], int | None],
        *,
        policy: SwitchoverPolicy,
        interval_s: float = 1.0,
        sleep: Callable[[float], object] | None = None,
        halt: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Before a switchover: poll the sessions in progress until `policy` calls the moment
        quiet, or its `wait_s` has passed, or `halt` is set (the run is stopping: the caller
        then sends nothing). Returns what was seen, for the journal; never raises for a busy
        primary (switching anyway is the operator's documented choice).
        `sessions_when_due` is what an immediate switchover would have put at risk,
        `lowest_seen` the quietest moment the wait saw, `sessions_at_last_poll` the count the
        wait ended on (taken at `last_poll_at`, wall clock): the switchover command follows it,
        after the pair's status check, so calls that arrive meanwhile are not in it."""
        stop = halt if halt is not None else threading.Event()
        pause = sleep or stop.wait  # a halt ends the pause between polls at once
        started = time.monotonic()
        counts: list[int | None] = []
        lowest: int | None = None
        lowest_at = 0.0
        quiet = False
        waiting = f"{what}: waiting for {policy.describe()}"
        with self._timed_progress(waiting, policy.wait_s) as tick:
            while True:
                polled_at = time.time()
                count = probe()
                counts.append(count)
                elapsed = time.monotonic() - started
                if count is not None and (lowest is None or count < lowest):
                    lowest, lowest_at = count, elapsed
                quiet = policy.quiet_now(count, lowest, elapsed)
                tick(elapsed, f"{'unknown' if count is None else count} in progress")
                if quiet or elapsed >= policy.wait_s or stop.is_set():
                    break
                pause(min(interval_s, max(0.0, policy.wait_s - elapsed)))
        return {
            "policy": policy.policy,
            "below": policy.below,
            "wait_s": policy.wait_s,
            "waited_s": round(time.monotonic() - started, 3),
            "sessions_when_due": counts[0],
            "sessions_at_last_poll": counts[-1],
            "last_poll_at": round(polled_at, 3),
            "lowest_seen": lowest,
            "lowest_seen_at_s": round(lowest_at, 3),
            "quiet": quiet,
            "polls": len(counts),
        }


def _record_sample(nodes: dict[str, _NodeLoad], sample: dict[str, Any]) -> None:
    load = nodes.setdefault(str(sample.get("node", "?")), _NodeLoad())
    load.samples += 1
    load.error = sample.get("error")
    if load.error:
        return
    load.cpu = sample.get("cpu_percent")
    load.memory_percent = sample.get("memory_percent")
    used = sample.get("used_memory")
    load.used_mb = None if used is None else used / 1048576
    load.cpu_peak = max(load.cpu_peak, load.cpu or 0.0)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}%"


def _node_text(node: str, load: _NodeLoad) -> str:
    if load.error:
        return f"{node} error"
    return f"{node} cpu {_percent(load.cpu)} mem {_percent(load.memory_percent)}"


def _monitor_table(nodes: dict[str, _NodeLoad], elapsed: float, window_s: float) -> Any:
    from rich.table import Table

    table = Table(
        title=f"Redis nodes, {min(elapsed, window_s):.0f} of {window_s:g} s", title_justify="left"
    )
    for column in ("node", "cpu", "cpu peak", "memory", "used MB", "samples"):
        table.add_column(column, justify="left" if column == "node" else "right")
    for node in sorted(nodes):
        load = nodes[node]
        if load.error:
            table.add_row(node, "error", "", "", "", str(load.samples), style="red")
            continue
        used = "-" if load.used_mb is None else f"{load.used_mb:.1f}"
        table.add_row(
            node,
            _percent(load.cpu),
            _percent(load.cpu_peak),
            _percent(load.memory_percent),
            used,
            str(load.samples),
        )
    return table


def render_gate(view: GateView) -> RenderableType:
    """The gate's one screen: done so far, next, hosts, at risk, sessions in progress."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    where = f"{view.state_id} ({view.seed_step or 'tool step'})"
    if view.position:
        where += f", {view.position}"
    grid.add_row("Next", Text(where))
    for line in view.next_actions:
        grid.add_row("", Text(line))
    if view.hosts:
        grid.add_row("Hosts", Text(", ".join(view.hosts)))
    grid.add_row("Done so far", Text("\n".join(view.done) or "nothing yet in this run"))
    if view.risk:
        grid.add_row(Text("At risk", style="bold red"), Text(view.risk, style="yellow"))
    if view.window:
        grid.add_row("Window", Text(view.window))
    parts: list[Any] = [grid]
    if view.sessions:
        parts.append(_sessions_table(view))
    return Panel(Group(*parts), title=Text(f"Gate: {view.title}"), border_style="yellow")


def _sessions_table(view: GateView) -> Any:
    from rich.table import Table

    table = Table(
        title=f"Sessions in progress on the primaries now: {view.sessions_at_risk()}",
        title_justify="left",
    )
    for column in ("HA pair", "primary", "host", "sessions in progress"):
        table.add_column(column, justify="right" if column.startswith("sessions") else "left")
    for s in view.sessions:
        count = str(s.active) if s.active is not None else f"unknown ({s.error})"
        table.add_row(s.ha_pair, s.app, s.host, count)
    return table


def gate_lines(view: GateView) -> list[str]:
    """The gate as plain lines (for logs and tests)."""
    lines = [f"Gate: {view.title}", f"next: {view.state_id} ({view.seed_step or 'tool step'})"]
    lines += [f"  {a}" for a in view.next_actions]
    if view.hosts:
        lines.append("hosts: " + ", ".join(view.hosts))
    lines += [f"done: {d}" for d in view.done]
    if view.risk:
        lines.append(f"at risk: {view.risk}")
    if view.window:
        lines.append(view.window)
    lines += [
        f"sessions in progress on {s.app} (primary of {s.ha_pair}, host {s.host}): "
        + (str(s.active) if s.active is not None else f"unknown ({s.error})")
        for s in view.sessions
    ]
    return lines
