"""What the operator sees and answers: progress lines, gates, operator steps, the monitoring
window. Without a terminal and without --yes, anything that needs an answer stops the run at
once with a message instead of waiting for input."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ors_migrate.errors import GateStopped

Decision = str  # "approve" | "stop" | "rollback"


class Ui:
    def __init__(self, *, assume_yes: bool = False, quiet: bool = False) -> None:
        from rich.console import Console

        self.assume_yes = assume_yes
        self.quiet = quiet
        no_color = bool(os.environ.get("NO_COLOR"))
        self.console = Console(stderr=True, no_color=no_color, highlight=False, soft_wrap=True)
        self.interactive = sys.stdin.isatty() and sys.stderr.isatty()

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", style="yellow", markup=False)

    def state_started(
        self, index: int, total: int, state_id: str, title: str, seed: str | None
    ) -> None:
        if not self.quiet:
            self.console.print(
                f"[{index}/{total}] {state_id} ({seed or 'tool step'}): {title}",
                style="bold",
                markup=False,
            )

    def action_done(self, key: str, description: str, seconds: float, note: str = "") -> None:
        if not self.quiet:
            extra = f" ({note})" if note else ""
            self.console.print(f"    ok  {description}  [{seconds:.1f} s]{extra}", markup=False)

    def _need_terminal(self, what: str) -> None:
        if not self.interactive:
            raise GateStopped(
                f"{what} needs an operator's answer, but there is no terminal; "
                "run it from a terminal, or pass --yes to approve every gate"
            )

    def gate(self, title: str, summary: list[str]) -> Decision:
        """Ask approve / stop / rollback. --yes approves."""
        if self.assume_yes:
            return "approve"
        self._need_terminal(f"gate '{title}'")
        import questionary

        self.console.print(f"\nGate: {title}", style="bold yellow", markup=False)
        for line in summary:
            self.console.print(f"  {line}", markup=False)
        answer = questionary.select(
            "How do you want to proceed?",
            choices=[
                questionary.Choice("approve: carry on", value="approve"),
                questionary.Choice("stop: pause here, resume later with --resume", value="stop"),
                questionary.Choice("roll back: disable Redis everywhere", value="rollback"),
            ],
        ).ask()
        return str(answer) if answer else "stop"

    def operator_step(self, text: str, *, who: str) -> None:
        """Show a manual instruction and wait until the operator confirms it is done."""
        self.console.print(f"\nOperator step: {text}", style="bold cyan", markup=False)
        if self.assume_yes:
            raise GateStopped(
                "this step must be done by a person and cannot be approved by --yes; "
                "do it, then resume from a terminal"
            )
        self._need_terminal("an operator step")
        import questionary

        if not questionary.confirm(f"{who}, is it done?", default=False).ask():
            raise GateStopped("operator step not confirmed; the run is paused")

    @contextmanager
    def monitor(self, window_s: float) -> Iterator[Callable[[dict[str, Any]], None]]:
        """Progress for a monitoring window; yields the per-sample callback."""
        started = time.monotonic()

        def on_sample(sample: dict[str, Any]) -> None:
            if self.quiet:
                return
            elapsed = time.monotonic() - started
            node = sample.get("node", "?")
            cpu = sample.get("cpu_percent")
            mem = sample.get("memory_percent")
            cpu_text = "-" if cpu is None else f"{cpu:.1f}%"
            mem_text = "-" if mem is None else f"{mem:.1f}%"
            self.console.print(
                f"    monitor {elapsed:4.1f}/{window_s:g} s  {node}  cpu {cpu_text}  mem {mem_text}",
                markup=False,
            )

        yield on_sample
