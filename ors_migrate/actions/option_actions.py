"""Option actions: write ORS application options through the site's backend, capturing the
original values before the first edit of each application."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ors_migrate.errors import VerificationFailed
from ors_migrate.options import (
    PERSISTENCE,
    TYPE,
    OptionChange,
    disable_changes,
    enable_changes,
    preparation_changes,
)
from ors_migrate.step import Action, Preview

if TYPE_CHECKING:
    from ors_migrate.site import Site
    from ors_migrate.step import PlannedAction, PlanningView, RunContext

CHANGE_SETS = ("preparation", "enable", "disable")


def planned_changes(
    site: Site, change_set: str, original_type: str | None = None
) -> list[OptionChange]:
    if change_set == "preparation":
        return preparation_changes(site)
    if change_set == "enable":
        return enable_changes()
    return disable_changes(original_type)


def backend_commands(site: Site, app_name: str) -> list[str]:
    """What the backend will do for one application, exactly, for the plan."""
    from ors_migrate.actions.service_control import render

    backend = site.options_backend
    _, _, app = site.find_app(app_name)
    values = site.placeholder_values(app_name)
    if backend.kind == "ini-file":
        path = site.options_path(app_name)
        return [
            f"[{app.host}] edit {path} in place: copy to {path}{backend.backup_suffix}, "
            "write a temporary file beside it, rename it over the original"
        ]
    if backend.kind == "command":
        assert backend.get_command and backend.set_command
        return [
            f"[{app.host}] {render(backend.get_command, values)}",
            f"[{app.host}] {render(backend.set_command, {**values, 'changes_file': '<temp file>'})}"
            " (changes as JSON on stdin or in the temp file, never on the command line)",
        ]
    return [f"operator: Genesys Administrator, Application '{app.name}', Options tab"]


class SetOptions(Action):
    name = "options.set"
    scopes = frozenset({"app", "ha_pair"})
    changes_world = True
    takes_role = True
    needs_role = True

    @classmethod
    def check_spec(cls, scope: str, spec: Any) -> str | None:
        problem = super().check_spec(scope, spec)
        if problem:
            return problem
        if spec.with_.get("set") not in CHANGE_SETS:
            return f"action '{cls.name}' needs 'with: {{set: ...}}' with one of {list(CHANGE_SETS)}"
        return None

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        assert step.target.app
        change_set = step.args["set"]
        original = (
            view.option(step.target.app, PERSISTENCE, TYPE) if change_set == "disable" else None
        )
        rows = []
        changes = view.derived(
            ("changes", change_set, original),
            lambda: planned_changes(view.site, change_set, original),
        )
        for change in changes:
            old = view.option(step.target.app, change.section, change.option)
            new = change.new
            if change_set == "disable":
                new = "<value captured before the run>"
            rows.append(
                {
                    "section": change.section,
                    "option": change.option,
                    "old": "***" if change.secret and old is not None else old,
                    "old_known": view.options_known(step.target.app),
                    "new": "***" if change.secret else new,
                    "source": change.source,
                }
            )
            if change_set != "disable":
                view.set_option(step.target.app, change.section, change.option, change.new)
        backend = view.site.options_backend.kind
        app = step.target.app
        commands = view.derived(("backend commands", app), lambda: backend_commands(view.site, app))
        what = {
            "preparation": "configure Redis persistence options (type unchanged)",
            "enable": "set [persistence] type=redis",
            "disable": "set [persistence] type back to its value before the run",
        }[change_set]
        return Preview(f"{what} on {app} via the {backend} backend", list(commands), rows)

    def _app(self, ctx: RunContext, step: PlannedAction) -> str:
        if step.target.role_resolved_at_run_time:
            assert step.target.ha_pair and step.role
            return ctx.services.app_in_role(step.target.ha_pair, step.role)
        assert step.target.app
        return step.target.app

    def _desired(
        self, ctx: RunContext, app: str, change_set: str
    ) -> list[tuple[OptionChange, str | None]]:
        if change_set == "disable":
            present, value = ctx.journal.original(ctx.run_id, app, PERSISTENCE, TYPE)
            changes = disable_changes(value if present else None)
        else:
            changes = planned_changes(ctx.site, change_set)
        return [(c, ctx.secret_option_value(c) if c.secret else c.new) for c in changes]

    def prepare(self, ctx: RunContext, step: PlannedAction) -> dict[str, Any]:
        app = self._app(ctx, step)
        ctx.capture_originals(app)
        return {"app": app, "set": step.args["set"]}

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        current = ctx.option_store(intent["app"]).read()
        return all(
            current.get(change.key) == value
            for change, value in self._desired(ctx, intent["app"], intent["set"])
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        store = ctx.option_store(intent["app"])
        desired = self._desired(ctx, intent["app"], intent["set"])
        before = store.edit(desired)
        self._warn_if_secret_exposed(ctx, intent["app"], store, desired)
        return {
            "app": intent["app"],
            "changes": [
                {
                    "section": c.section,
                    "option": c.option,
                    "old": "***"
                    if c.secret and before.get(c.key) is not None
                    else before.get(c.key),
                    "new": "***" if c.secret and v is not None else v,
                }
                for c, v in desired
            ],
        }

    @staticmethod
    def _warn_if_secret_exposed(
        ctx: RunContext, app: str, store: Any, written: list[tuple[OptionChange, str | None]]
    ) -> None:
        """The Redis password in an options file that group or others may read is warned about
        (and journaled), naming the file and its mode: ORS needs it there, the mode is the
        site's to fix."""
        if not any(c.secret and v is not None for c, v in written):
            return
        exposure = getattr(store, "exposure", lambda: None)()
        if exposure:
            message = (
                f"the Redis password is now in {store.path} of {app}, which group or others "
                f"may read ({exposure}); restrict it, for example `chmod 600 {store.path}`"
            )
            ctx.ui.warn(message)
            ctx.record("warning", payload={"app": app, "file": store.path, "message": message})

    def verify(
        self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]
    ) -> dict[str, Any]:
        if not self.check(ctx, step, intent):
            raise VerificationFailed(
                f"options of {intent['app']} do not read back as written; check the "
                f"{ctx.site.options_backend.kind} backend"
            )
        return {}


class RestoreOriginalFiles(Action):
    """Put every option back exactly as captured before the run (rollback --to start)."""

    name = "options.restore_original"
    scopes = frozenset({"app"})
    changes_world = True

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        return Preview(f"restore every option of {step.target.app} as it was before the run")

    def prepare(self, ctx: RunContext, step: PlannedAction) -> dict[str, Any]:
        assert step.target.app
        return {"app": step.target.app}

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        restored = ctx.option_store(intent["app"]).restore_original(ctx.origin_run_id)
        return {"app": intent["app"], "restored": restored}


ACTIONS = [SetOptions, RestoreOriginalFiles]
