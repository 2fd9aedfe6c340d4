"""The lab's stand-in for the Genesys Management Layer: start, stop, status, switchover,
version, upgrade, session count and log of simulated ORS applications.

The generated site file points its service commands here, so the tool drives the lab exactly as
it drives a production site: through site-defined commands. Run as
`python -m ors_migrate.lab.orsctl --dir DIR COMMAND ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from ors_migrate.lab.faults import consume
from ors_migrate.lab.layout import LabLayout, read_json, read_pid, write_json_atomic
from ors_migrate.processes import pid_alive

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
SWITCH_TIMEOUT_S = 20.0


class LabCommandError(Exception):
    pass


def http_status(port: int) -> dict[str, Any] | None:
    """A primary answers on its HTTP port; a backup does not listen."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1.0) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def status(layout: LabLayout, app: str) -> dict[str, Any]:
    config = layout.load_config()
    if app not in config["apps"]:
        raise LabCommandError(f"no application {app} in this lab")
    pid = read_pid(layout.pid(app))
    state = read_json(layout.state(app)) or {}
    base = {
        "app": app,
        "cluster": config["apps"][app]["cluster"],
        "ha_pair": config["apps"][app]["pair"],
    }
    if not pid_alive(pid) or state.get("pid") != pid:
        counters = read_json(layout.counters(app)) or {}
        return {
            **base,
            "role": "down",
            "version": layout.installed_version(app).read_text().strip(),
            "type": state.get("type"),
            "error": state.get("error"),
            **counters,
        }
    live = http_status(int(config["apps"][app]["http_port"]))
    if live is not None and live.get("pid") == pid:
        return {**base, **live, "role": "primary"}
    return {
        **base,
        **state,
        "role": "backup" if state.get("role") in ("backup", "primary") else "down",
    }


def starts(layout: LabLayout, app: str) -> int:
    """How many times the application was started since the lab came up (a test's proof that
    a command restarted nothing)."""
    try:
        return int((layout.app_dir(app) / "starts").read_text())
    except (OSError, ValueError):
        return 0


def count_start(layout: LabLayout, app: str) -> None:
    counter = layout.app_dir(app) / "starts"
    counter.write_text(f"{starts(layout, app) + 1}\n")


def record(layout: LabLayout, event: str, **what: Any) -> None:
    """Append one line to the lab's service record (`lab status` shows it as `services`): a
    test's evidence of what overlapped, from the lab itself rather than from the tool. One
    `write` of one short line to a file opened for appending: lines of concurrent commands
    never interleave."""
    line = json.dumps({"event": event, "at": time.time(), **what}, sort_keys=True) + "\n"
    fd = os.open(layout.services, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def service_record(layout: LabLayout) -> list[dict[str, Any]]:
    try:
        lines = layout.services.read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def _record_app(layout: LabLayout, event: str, app: str) -> None:
    config = layout.load_config()["apps"][app]
    record(layout, event, app=app, pair=config["pair"], cluster=config["cluster"])


def start(layout: LabLayout, app: str) -> dict[str, Any]:
    pid = read_pid(layout.pid(app))
    if pid_alive(pid):
        return status(layout, app)
    _record_app(layout, "starting", app)
    try:
        ready = _start(layout, app)
    except LabCommandError:
        _record_app(layout, "start_failed", app)
        raise
    _record_app(layout, "started", app)
    return ready


def _start(layout: LabLayout, app: str) -> dict[str, Any]:
    config = layout.load_config()
    log = open(layout.log(app), "ab")
    proc = subprocess.Popen(
        [
            config["python"],
            "-m",
            "ors_migrate.lab.ors_sim",
            "--dir",
            str(layout.root),
            "--app",
            app,
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=layout.app_dir(app),
        start_new_session=True,
        close_fds=True,
    )
    log.close()
    layout.pid(app).write_text(str(proc.pid))
    count_start(layout, app)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            state = read_json(layout.state(app)) or {}
            raise LabCommandError(
                f"{app} exited at start: {state.get('error') or 'see ' + str(layout.log(app))}"
            )
        state = read_json(layout.state(app)) or {}
        if state.get("pid") == proc.pid and state.get("role") in ("primary", "backup"):
            return status(layout, app)
        time.sleep(0.05)
    raise LabCommandError(f"{app} did not report ready within {START_TIMEOUT_S:g} s")


def stop(layout: LabLayout, app: str) -> None:
    pid = read_pid(layout.pid(app))
    if not pid_alive(pid):
        return
    assert pid is not None
    _record_app(layout, "stopping", app)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    _record_app(layout, "stopped", app)


def switchover(layout: LabLayout, pair: str) -> dict[str, Any]:
    config = layout.load_config()
    if pair not in config["pairs"]:
        raise LabCommandError(f"no HA pair {pair} in this lab")
    members = config["pairs"][pair]["apps"]
    current = str((read_json(layout.pair(pair)) or {}).get("primary"))
    new = next(a for a in members if a != current)
    if status(layout, new)["role"] != "backup":
        raise LabCommandError(f"{new} is not running as backup; switchover refused")
    if any(consume(layout, app, "switchover-ignored") for app in members):
        return status(layout, new)  # the fault: accepted, and nothing happens
    cluster = config["pairs"][pair]["cluster"]
    record(layout, "switching", pair=pair, cluster=cluster, app=new)
    write_json_atomic(layout.pair(pair), {"primary": new, "since": time.time()})
    deadline = time.monotonic() + SWITCH_TIMEOUT_S
    while time.monotonic() < deadline:
        if (
            status(layout, new)["role"] == "primary"
            and status(layout, current)["role"] != "primary"
        ):
            record(layout, "switched", pair=pair, cluster=cluster, app=new)
            return status(layout, new)
        time.sleep(0.05)
    raise LabCommandError(
        f"switchover of {pair} to {new} did not complete in {SWITCH_TIMEOUT_S:g} s"
    )


def log_tail(layout: LabLayout, app: str, lines: int) -> str:
    """The last `lines` lines of the application's log (what it printed at its starts)."""
    try:
        text = layout.log(app).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Management Layer stand-in for the ORS lab")
    parser.add_argument("--dir", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "stop", "status", "version", "sessions"):
        sub.add_parser(name).add_argument("app")
    sub.add_parser("switchover").add_argument("pair")
    log = sub.add_parser("log")
    log.add_argument("app")
    log.add_argument("--lines", type=int, default=20)
    upgrade = sub.add_parser("upgrade")
    upgrade.add_argument("app")
    upgrade.add_argument("version")
    args = parser.parse_args(argv)
    layout = LabLayout(Path(args.dir))
    try:
        if args.command == "status":
            print(json.dumps(status(layout, args.app), sort_keys=True))
        elif args.command == "start":
            print(json.dumps(start(layout, args.app), sort_keys=True))
        elif args.command == "stop":
            stop(layout, args.app)
        elif args.command == "switchover":
            print(json.dumps(switchover(layout, args.pair), sort_keys=True))
        elif args.command == "log":
            print(log_tail(layout, args.app, args.lines))
        elif args.command == "version":
            print(layout.installed_version(args.app).read_text().strip())
        elif args.command == "sessions":
            print(status(layout, args.app).get("active", 0))
        elif args.command == "upgrade":
            layout.installed_version(args.app).write_text(args.version + "\n")
            print(f"{args.app}: installed {args.version}; active after the next restart")
    except LabCommandError as exc:
        print(f"orsctl: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
