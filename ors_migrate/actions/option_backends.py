"""Choose the option backend the site names (SPEC 3.4) for one application."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ors_migrate.actions.options_file import IniFileOptions
from ors_migrate.errors import SiteError

if TYPE_CHECKING:
    from ors_migrate.engine import RunContext


def options_path(ctx: RunContext, app_name: str) -> str:
    cluster, pair, app = ctx.site.find_app(app_name)
    if app.options_path:
        return app.options_path
    template = ctx.site.options_backend.path or ""
    return template.format(app=app.name, cluster=cluster.name, pair=pair.name, host=app.host)


def open_store(ctx: RunContext, app_name: str) -> Any:
    backend = ctx.site.options_backend
    _, _, app = ctx.site.find_app(app_name)
    transport = ctx.pool.for_host(app.host)
    if backend.kind == "ini-file":
        return IniFileOptions(transport, options_path(ctx, app_name), backend.backup_suffix)
    raise SiteError(
        f"option backend '{backend.kind}' is not available in this version; use ini-file",
        field="options_backend.kind",
        rule="backend-available",
    )
