"""(b) `--help` and `plan` start-up time, and (c) planning a site of 500 HA pairs.

Start-up is timed as an operator sees it: a new `python -m ors_migrate` process each time, the
median of N. The large site is generated here: ORS clusters of 50 HA pairs on SSH hosts, a Redis
Cluster with TLS and an ACL user, Cassandra in use; options changed through site commands.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SITE = REPO / "examples" / "site.yaml"
HEAVY_MODULES = ("redis", "paramiko", "cassandra", "questionary")


def compile_package() -> str:
    """Byte-compile the package as `pip install` does, so that a new process times what an
    installed tool does, not compiling our sources (this environment may set
    PYTHONDONTWRITEBYTECODE, which keeps a checkout from ever caching them)."""
    import compileall

    compileall.compile_dir(str(REPO / "ors_migrate"), quiet=1)
    return "  (the package byte-compiled first, as pip installs it)"


def command_line(*args: str) -> list[str]:
    return [sys.executable, "-m", "ors_migrate", *args]


def timed_process(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    began = time.perf_counter()
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1"},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return time.perf_counter() - began, result


def median_of(repeat: int, argv: list[str]) -> tuple[float, float, float]:
    """Median, fastest and slowest wall time of `repeat` runs; each must exit 0."""
    times = []
    for _ in range(repeat):
        seconds, result = timed_process(argv)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr}")
        times.append(seconds)
    return statistics.median(times), min(times), max(times)


def heavy_imports(*args: str) -> list[str]:
    """The network and terminal libraries a command imports (they should load lazily)."""
    _, result = timed_process([sys.executable, "-X", "importtime", "-m", "ors_migrate", *args])
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    return sorted(m for m in imported if m.split(".")[0] in HEAVY_MODULES and "." not in m)


def startup(repeat: int) -> Iterator[str]:
    cases = {
        "python -c pass (interpreter alone)": [sys.executable, "-c", "pass"],
        "ors-migrate --help": command_line("--help"),
        "ors-migrate plan examples/site.yaml": command_line("plan", str(EXAMPLE_SITE)),
        "ors-migrate plan ... --format json": command_line(
            "plan", str(EXAMPLE_SITE), "--format", "json"
        ),
    }
    yield compile_package()
    yield f"  {'command':<40} {'median s':>9} {'min s':>7} {'max s':>7}   (N={repeat})"
    for label, argv in cases.items():
        median, fastest, slowest = median_of(repeat, argv)
        yield f"  {label:<40} {median:>9.3f} {fastest:>7.3f} {slowest:>7.3f}"
    for args in (["--help"], ["plan", str(EXAMPLE_SITE)]):
        loaded = heavy_imports(*args) or ["none"]
        yield f"  heavy libraries imported by `{args[0]}`: {', '.join(loaded)}"


def big_site_yaml(pairs: int, pairs_per_cluster: int = 50) -> str:
    hosts = max(2, pairs // 5)
    lines = [
        "version: 1",
        f"name: bench-{pairs}-pairs",
        "hosts:",
        *(
            f"  ors-{h:04d}: {{transport: ssh, ssh: {{address: 10.{h // 250}.{h % 250}.10, "
            "user: genesys}}"
            for h in range(hosts)
        ),
        "options_backend:",
        "  kind: command",
        "  get_command: /opt/genesys/bin/cfg-options.sh export --app {app}",
        "  set_command: /opt/genesys/bin/cfg-options.sh import --app {app} --json-stdin",
        "services:",
        "  start: /opt/genesys/bin/mlcmd.sh -start {app}",
        "  stop: /opt/genesys/bin/mlcmd.sh -stop {app}",
        "  status: /opt/genesys/bin/ors-role.sh {app}",
        "  switchover: /opt/genesys/bin/mlcmd.sh -switchover {pair}",
        "  version: /opt/genesys/bin/ors-version.sh {app}",
        "ors:",
        "  min_version: 8.1.401.10",
        "  digital_persistence: {section: persistence, option: enable-multimedia-persistence, "
        "value: 'false'}",
        "ors_clusters:",
    ]
    for pair in range(pairs):
        if pair % pairs_per_cluster == 0:
            lines += [f"  - name: ORS_{pair // pairs_per_cluster:02d}", "    ha_pairs:"]
        lines += [f"      - name: pair-{pair:04d}", "        apps:"]
        for member, role in enumerate(("primary", "backup")):
            host = (2 * pair + member) % hosts
            lines.append(
                f"          - {{name: ORS_{pair:04d}_{'AB'[member]}, host: ors-{host:04d}, "
                f"role: {role}, memory_mb: 8192, version: 8.1.401.12}}"
            )
    nodes = max(3, -(-pairs // 3))
    lines += [
        "redis:",
        "  nodes:",
        *(f"    - redis-{n:03d}.example.com:6379" for n in range(nodes)),
        "  username: ors",
        "  password: env:ORS_REDIS_PASSWORD",
        "  aof: true",
        "  replicas_per_master: 1",
        "  node_memory_mb: 16384",
        "  tls: {enabled: true, cert: /etc/ors/tls/client.crt, key: /etc/ors/tls/client.key, "
        "cacert: /etc/ors/tls/ca.crt}",
        "cassandra:",
        "  contact_points: [cass-1.example.com:9042, cass-2.example.com:9042]",
        "  version: 3.11.4",
        "",
    ]
    return "\n".join(lines)


def _in_process(label: str, step: Callable[[], T]) -> tuple[str, T]:
    began = time.perf_counter()
    value = step()
    return f"  {label:<52} {time.perf_counter() - began:>7.3f} s", value


def large_plan(pairs: int, directory: Path, repeat: int) -> Iterator[str]:
    from ors_migrate.render import render_plan
    from ors_migrate.rules import check
    from ors_migrate.runner import load_playbook, make_plan
    from ors_migrate.site import load_site

    site = directory / f"site-{pairs}-pairs.yaml"
    site.write_text(big_site_yaml(pairs))
    size = site.stat().st_size
    yield f"  site file: {pairs} HA pairs, {2 * pairs} applications, {size / 1024:.0f} KiB"
    line, loaded = _in_process("load_site (parse + validate)", lambda: load_site(site))
    yield line
    line, playbook = _in_process(
        "load_playbook migrate-to-redis", lambda: load_playbook("migrate-to-redis")
    )
    yield line
    line, plan = _in_process(
        "make_plan (expand, preview, hash)", lambda: make_plan(loaded, playbook)
    )
    yield line
    line, findings = _in_process(
        "rules.check (every documented rule)", lambda: check(loaded, plan, playbook)
    )
    yield line
    for fmt in ("text", "json"):
        line, text = _in_process(f"render {fmt}", functools.partial(render_plan, plan, fmt))
        yield line + f"  ({len(text) / 1024:.0f} KiB)"
    actions = sum(len(s.actions) for s in plan.states)
    yield f"  plan: {len(plan.states)} states, {actions} actions, {len(findings)} findings"
    yield compile_package()
    for args in ([], ["--format", "json"]):
        median, fastest, slowest = median_of(repeat, command_line("plan", str(site), *args))
        label = f"command line: plan SITE {' '.join(args)}"
        yield (
            f"  {label:<52} {median:>7.3f} s median "
            f"(min {fastest:.3f}, max {slowest:.3f}, N={repeat}; target 1 s)"
        )
    _, result = timed_process(command_line("plan", str(site), "--format", "json"))
    json.loads(result.stdout)
