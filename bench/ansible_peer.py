"""Side by side with Ansible: the same remote work done by ors-migrate, Ansible and raw paramiko.

The peer harness (`../shared/bench/ansible-peer/`, copied to a work folder before use, never
changed) builds /tmp/peer: one OpenSSH server on 127.0.0.1:2222 standing in for N inventory
hosts, each with its own options file /tmp/peer/hosts/orsN/options.cfg, and a venv with
ansible-core. Per host the work is 2 option edits, 1 command and 1 read-back, done by:

- ors-migrate through its real command line (`ors-migrate run SITE --playbook FILE --yes
  --state-dir TMP`), with a site of N SSH hosts (each its own name, all on the harness sshd,
  host keys checked strictly against the harness's known_hosts) and a small playbook of our own
  actions, written here; the output says which action stands for which operation and how the
  work differs;
- Ansible: the harness's play.yml (forks 5) and play_serial.yml (`serial: 1`), each run with a
  fresh ControlPath folder, so that every run starts without a warm SSH master as ours does;
- the harness's raw_paramiko.py, the lower bound, run by our own interpreter (same Python and
  paramiko as ors-migrate).

Each is timed as a whole process, N times (median), the options files reset before every run and
checked after it. CPU is user+sys of the whole child process tree, from getrusage(RUSAGE_CHILDREN)
deltas; the bench makes itself a child subreaper so that Ansible's ControlPersist masters, which
detach, are ended and counted too. `host CPU` is what the sshd side (login shells, Ansible's
modules, SFTP) spent, from a cpuacct cgroup holding the harness sshd; on this one machine it
competes with the tool for the same two cores.

The harness logs in as root, whose ~/.bashrc is slow on every command; that is the primary
variant. `--variants root,plain` adds a login user whose shell start-up is empty (the project's
test login `orsm-ssh`), with every tool facing that same login.

Run it under the shared lock: `flock /tmp/orsm-heavy.lock .venv/bin/python bench/ansible_peer.py
[--hosts 10] [--repeat 3] [--variants root,plain]`. It stops the harness sshd at the end.
"""

from __future__ import annotations

import argparse
import configparser
import ctypes
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_HARNESS = REPO.parent / "shared" / "bench" / "ansible-peer"
PEER = Path("/tmp/peer")
PEER_VENV = Path("/tmp/peer-venv")
SSHD_PID = PEER / "ssh" / "sshd.pid"
OURS = REPO / ".venv" / "bin" / "ors-migrate"
PYTHON = Path(sys.executable)
REDIS_NODES = "127.0.0.1:7000;127.0.0.1:7001;127.0.0.1:7002"
ORIGINAL_OPTIONS = "[persistence]\ntype = cassandra\n"
PLAIN_LOGIN = "orsm-ssh"
PR_SET_CHILD_SUBREAPER = 36
CPUACCT = Path("/sys/fs/cgroup/cpuacct")
TARGET_OF_RAW = 1.2
TARGET_OVER_SERIAL = 3.0

PLAYBOOK = """\
name: ansible-peer
title: Two option edits, one command and a read-back per application (Ansible side by side)
states:
  - id: set-options
    title: redis-nodes and username (with sessionid-with-nodeid), read back
    seed_step: null
    scope: app
    actions:
      - do: options.set
        with: {set: preparation}
  - id: set-type
    title: type=redis alone in its state, read back
    seed_step: null
    scope: app
    actions:
      - do: options.set
        with: {set: enable}
  - id: command
    title: one site command per host
    seed_step: null
    scope: app
    actions:
      - do: fips.check_version
        with: {platform: linux}
"""

MAPPING = """\
What stands for what, per host (ors-migrate: bench playbook `ansible-peer`, scope app):
  option edit 1  Ansible lineinfile redis-nodes | raw: SFTP read, edit, write .tmp, rename
                 ours: options.set {set: preparation}: [persistence] redis-nodes and
                 username=ors, and [orchestration] sessionid-with-nodeid=true, in ONE write
  option edit 2  Ansible lineinfile username=ors | raw: the same for username
                 ours: options.set {set: enable}: [persistence] type=redis
  command        Ansible command /bin/true | raw: exec /bin/true
                 ours: fips.check_version with the site's version command `/bin/echo
                 8.1.401.13` (an action at application scope that runs exactly one site
                 command per host, and checks the version it prints)
  read-back      Ansible slurp options.cfg | raw: SFTP read
                 ours: the verify step of each options.set (reads the file back, compares)
Where ours does other or more work:
  - the options differ: our rules refuse type=redis in the state that sets the other
    persistence options (options.type-redis-last) and require sessionid-with-nodeid first,
    so edit 1 writes three options at once and edit 2 writes type=redis, not username;
  - before the run it reads the live role of every application (site status command,
    `cat ROLEFILE`: one more command per host) and records the topology; every action is
    journaled (SQLite, synchronous=FULL) with intent and result, and the rules are checked;
  - per host: a pristine copy of the options file and its original values are kept before
    the first edit; each edit refuses a symlink or non-regular file at the path (lstat), copies
    the file to options.cfg.ors-migrate.bak (0600), writes via a temp file created 0600 and
    given the old mode, fsyncs, renames; the folder is listed for stale temp files at the first
    write of each file in a run; the file is read 4 times for edit 1 and 3 times for edit 2
    (originals and pristine copy, to edit, for the backup, to verify): 2 read-backs per host
    where the others do 1;
  - remote commands per host: ours 2 (status, version), raw 1, Ansible 4 (every task runs
    python3 on the host through the login shell).
"""


@dataclass(frozen=True)
class Login:
    name: str
    uid: int
    gid: int

    @property
    def is_root(self) -> bool:
        return self.uid == 0


@dataclass(frozen=True)
class Measure:
    wall: float
    cpu: float
    host_cpu: float | None


@dataclass
class Tool:
    label: str
    argv: list[str]
    env: dict[str, str]
    check: Callable[[int], None]
    fresh_env: Callable[[Path], dict[str, str]] = field(default=lambda _work: {})
    runs: list[Measure] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(m, attribute) for m in self.runs)

    def host_cpu(self) -> str:
        if any(m.host_cpu is None for m in self.runs):
            return "n/a"
        return f"{self.median('host_cpu'):.2f}"


ROOT = Login("root", 0, 0)


# Processes ------------------------------------------------------------------------------------


def become_subreaper() -> None:
    """Orphaned descendants (Ansible's detached ControlPersist masters) are re-parented to this
    process, so they can be ended after each run and their CPU counted with the tool's."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def end_orphans() -> None:
    """End and reap whatever the last tool left behind under this process (never the sshd)."""
    keep = sshd_pid() if SSHD_PID.exists() else None
    for pid in children_of(os.getpid()):
        if pid == keep:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            continue


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sshd_pid() -> int:
    return int(SSHD_PID.read_text().split()[0])


class SshdCpu:
    """CPU spent on the host side: the sshd and everything it starts (sessions, login shells,
    Ansible's modules, SFTP). The listener's reaped-children times miss most of it for a
    non-root login (they showed 0.05 s for Ansible's 40 module runs), so the sshd is moved into
    a cpuacct cgroup of its own, whose counter includes every descendant. Without cgroup v1
    cpuacct the figure is not available (None)."""

    def __init__(self, pid: int) -> None:
        self.group: Path | None = None
        if not (CPUACCT / "cgroup.procs").is_file():
            return
        group = CPUACCT / f"orsm-ansible-peer-{pid}"
        group.mkdir(exist_ok=True)
        (group / "cgroup.procs").write_text(str(pid))
        self.group = group

    def seconds(self) -> float | None:
        if self.group is None:
            return None
        return int((self.group / "cpuacct.usage").read_text()) / 1e9

    def remove(self) -> None:
        """Once the sshd has stopped; a group with processes left in it cannot be removed."""
        if self.group is None:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                self.group.rmdir()
                return
            except OSError:
                time.sleep(0.1)
        print(f"warning: could not remove {self.group}", file=sys.stderr)


def wait_sshd_idle(pid: int, timeout: float = 10.0) -> None:
    """Until every session of the last run has ended and been reaped by the listener."""
    deadline = time.monotonic() + timeout
    while children_of(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def measure(tool: Tool, work: Path, log: Path, host: SshdCpu) -> Measure:
    sshd = sshd_pid()
    wait_sshd_idle(sshd)
    cpu0, host0 = children_cpu(), host.seconds()
    env = {**os.environ, **tool.env, **tool.fresh_env(work)}
    with log.open("w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(tool.argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        code = proc.wait()
        wall = time.perf_counter() - started
    end_orphans()
    wait_sshd_idle(sshd)
    cpu, host1 = children_cpu() - cpu0, host.seconds()
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise SystemExit(f"{tool.label} exited with {code} (log {log}):\n{tail}")
    return Measure(wall, cpu, None if host0 is None or host1 is None else host1 - host0)


# The harness ----------------------------------------------------------------------------------


def set_up_harness(harness: Path, work: Path, hosts: int) -> None:
    """The harness's own setup, from a copy: sshd on 127.0.0.1:2222, /tmp/peer, /tmp/peer-venv."""
    copy = work / "harness"
    shutil.copytree(harness, copy)
    done = subprocess.run(
        ["bash", str(copy / "setup.sh"), str(hosts)], capture_output=True, text=True
    )
    if done.returncode != 0 or not SSHD_PID.exists():
        raise SystemExit(f"harness setup failed:\n{done.stdout}{done.stderr}")


def stop_sshd() -> None:
    if not SSHD_PID.exists():
        return
    pid = sshd_pid()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        raise SystemExit(f"the harness sshd (pid {pid}) did not stop")


def options_file(host: int) -> Path:
    return PEER / "hosts" / f"ors{host}" / "options.cfg"


def reset_hosts(hosts: int, login: Login) -> None:
    """Every host folder back to the harness's initial options file and nothing else (our
    backups and pristine copies go too), owned by the login that will edit it."""
    for host in range(1, hosts + 1):
        folder = options_file(host).parent
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        options_file(host).write_text(ORIGINAL_OPTIONS)
        for path in (folder, options_file(host)):
            os.chown(path, login.uid, login.gid)


def read_options(host: int) -> dict[tuple[str, str], str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(options_file(host).read_text())
    return {(s, o): parser[s][o] for s in parser.sections() for o in parser[s]}


def expect_options(wanted: dict[tuple[str, str], str]) -> Callable[[int], None]:
    def check(hosts: int) -> None:
        for host in range(1, hosts + 1):
            found = read_options(host)
            wrong = {k: found.get(k) for k, v in wanted.items() if found.get(k) != v}
            if wrong:
                raise SystemExit(f"ors{host}: after the run, {wrong} instead of {wanted}")

    return check


PEER_OPTIONS = {
    ("persistence", "redis-nodes"): REDIS_NODES,
    ("persistence", "username"): "ors",
    ("persistence", "type"): "cassandra",
}
OUR_OPTIONS = {
    ("persistence", "redis-nodes"): REDIS_NODES,
    ("persistence", "username"): "ors",
    ("persistence", "type"): "redis",
    ("orchestration", "sessionid-with-nodeid"): "true",
}


# The three tools ------------------------------------------------------------------------------


def write_site(folder: Path, hosts: int, login: Login) -> Path:
    """N SSH hosts on the harness sshd, one application each (HA pairs of two), ini-file options
    at the harness's paths, roles in files read by the status command."""
    roles = folder / "roles"
    roles.mkdir(parents=True, exist_ok=True)
    lines = ["version: 1", "name: ansible-peer", "hosts:"]
    for n in range(1, hosts + 1):
        lines += [
            f"  ors{n}:",
            "    transport: ssh",
            "    ssh:",
            "      address: 127.0.0.1",
            "      port: 2222",
            f"      user: {login.name}",
            f"      key_file: {PEER}/ssh/user_key",
            f"      known_hosts: {PEER}/ssh/known_hosts",
            "      ssh_config: null",
        ]
        (roles / f"ors{n}").write_text("primary\n" if n % 2 else "backup\n")
    lines += [
        "options_backend:",
        "  kind: ini-file",
        f"  path: {PEER}/hosts/{{app}}/options.cfg",
        "services:",
        "  start: 'false'",
        "  stop: 'false'",
        "  switchover: 'false'",
        f"  status: cat {roles}/{{app}}",
        "  version: /bin/echo 8.1.401.13",
        "ors:",
        "  fips:",
        f"    lca_env_file: {PEER}/hosts/{{app}}/lca.env",
        "    lca_restart: /bin/true",
        "ors_clusters:",
        "  - name: PEER",
        "    ha_pairs:",
    ]
    for pair in range(1, hosts // 2 + 1):
        lines += [f"      - name: pair-{pair}", "        apps:"]
        for n, role in ((2 * pair - 1, "primary"), (2 * pair, "backup")):
            lines.append(
                f"          - {{name: ors{n}, host: ors{n}, role: {role}, version: 8.1.401.12, "
                f"install_dir: {PEER}/hosts/ors{n}}}"
            )
    lines += [
        "redis:",
        f"  nodes: [{REDIS_NODES.replace(';', ', ')}]",
        "  username: ors",
        "  aof: true",
        "  replicas_per_master: 1",
    ]
    site = folder / "site.yaml"
    site.write_text("\n".join(lines) + "\n")
    return site


def fresh_control_path(work: Path) -> dict[str, str]:
    return {"ANSIBLE_SSH_CONTROL_PATH_DIR": tempfile.mkdtemp(prefix="cp-", dir=work)}


def our_tool(work: Path, hosts: int, login: Login) -> Tool:
    folder = work / f"ours-{login.name}"
    site = write_site(folder, hosts, login)
    playbook = folder / "playbook.yaml"
    playbook.write_text(PLAYBOOK)
    state = folder / "state"
    tool = Tool(
        "ors-migrate (serial)",
        [str(OURS), "run", str(site), "--playbook", str(playbook), "--yes", "--state-dir"],
        {"NO_COLOR": "1"},
        expect_options(OUR_OPTIONS),
    )

    def new_state(_work: Path) -> dict[str, str]:
        """A new journal per run: every run starts from nothing, as the others do."""
        shutil.rmtree(state, ignore_errors=True)
        return {}

    tool.argv.append(str(state))
    tool.fresh_env = new_state
    return tool


def inventory(work: Path, login: Login) -> Path:
    """The harness inventory; for another login, a copy with that ansible_user."""
    original = PEER / "inv.ini"
    if login.is_root:
        return original
    text = original.read_text()
    assert text.count("ansible_user=root") > 0
    copy = work / f"inv-{login.name}.ini"
    copy.write_text(text.replace("ansible_user=root", f"ansible_user={login.name}"))
    return copy


def ansible_tool(label: str, play: str, work: Path, login: Login, forks: bool) -> Tool:
    argv = [str(PEER_VENV / "bin" / "ansible-playbook"), "-i", str(inventory(work, login))]
    argv += (["--forks", "5"] if forks else []) + [str(PEER / play)]
    env = {"ANSIBLE_CONFIG": str(PEER / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return Tool(label, argv, env, expect_options(PEER_OPTIONS), fresh_control_path)


def raw_tool(work: Path, hosts: int, login: Login) -> Tool:
    """The harness's script as it is; for another login, a copy with that user name."""
    script = work / "harness" / "raw_paramiko.py"
    if not login.is_root:
        text = script.read_text()
        assert text.count('"root"') == 1
        script = work / f"raw_paramiko_{login.name.replace('-', '_')}.py"
        script.write_text(text.replace('"root"', f'"{login.name}"'))
    return Tool(
        "raw paramiko (lower bound)",
        [str(PYTHON), str(script), str(hosts)],
        {},
        expect_options(PEER_OPTIONS),
    )


# Logins ---------------------------------------------------------------------------------------


def login_for(variant: str) -> Login:
    if variant == "root":
        return ROOT
    sys.path.insert(0, str(REPO / "tests"))
    from sshd_fixture import ensure_login_user

    account = ensure_login_user(PLAIN_LOGIN)
    return Login(account.pw_name, account.pw_uid, account.pw_gid)


@contextmanager
def keys_readable_by(login: Login) -> Iterator[None]:
    """The harness's authorized_keys is root's alone (mode 600), and sshd reads it as the login
    user: for another login it is made world-readable (public keys only) for the variant."""
    keys = PEER / "ssh" / "authorized_keys"
    mode = keys.stat().st_mode & 0o777
    if not login.is_root:
        keys.chmod(0o644)
    try:
        yield
    finally:
        keys.chmod(mode)


def command_startup_ms(login: Login, count: int = 10) -> float:
    """Median time of `true` over one open connection: the login shell's start-up cost."""
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(str(PEER / "ssh" / "known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        2222,
        login.name,
        key_filename=str(PEER / "ssh" / "user_key"),
        look_for_keys=False,
        allow_agent=False,
    )
    times = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            _, out, _ = client.exec_command("true")
            out.channel.recv_exit_status()
            times.append(time.perf_counter() - started)
    finally:
        client.close()
    return 1000 * statistics.median(times)


# Where our time goes ---------------------------------------------------------------------------

PY_SPY = REPO / ".venv" / "bin" / "py-spy"
SAMPLE_HZ = 250
# The first matching frame names the bucket of a sample of the main thread (idle samples too,
# so that the buckets add up to the wall time).
BUCKETS = (
    ("_find_and_load (", "imports (paramiko's on first connect included)"),
    ("_open_client (", "SSH connect and key login (raw paramiko pays this too)"),
    ("_sftp_client (", "SFTP session start"),
    ("live_primaries (", "topology read before the run: the status command of every app"),
    ("run_checked (", "the command (the version command)"),
    ("capture_originals (", "options: original values and pristine copy before 1st edit"),
    ("write_file_atomic (", "options: atomic write (backup, temp file, fsync, rename)"),
    ("verify (ors_migrate/actions/option_actions.py", "options: read-back (verify)"),
    ("(ors_migrate/actions/options_file.py", "options: reads and edits"),
    ("(ors_migrate/journal.py", "journal (SQLite)"),
)


def profile_ours(tool: Tool, work: Path, hosts: int, login: Login) -> list[str]:
    """One more run of ours under py-spy (sampling without pausing it, idle included), its main
    thread's samples put in buckets by what they were doing."""
    if not PY_SPY.exists():
        return [f"  (no profile: {PY_SPY} is missing; `.venv/bin/pip install py-spy`)"]
    reset_hosts(hosts, login)
    tool.fresh_env(work)
    raw = work / f"profile-{login.name}.txt"
    argv = [str(PY_SPY), "record", "--idle", "--nonblocking", "-r", str(SAMPLE_HZ)]
    argv += ["-f", "raw", "-o", str(raw)]
    argv += ["--", str(PYTHON), *tool.argv]
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **tool.env})
    end_orphans()
    if done.returncode != 0 or not raw.exists():
        return [f"  (no profile: py-spy exited with {done.returncode}: {done.stderr[-300:]})"]
    tool.check(hosts)
    reset_hosts(hosts, ROOT)
    counts: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack.startswith("<module> (ors-migrate"):
            continue
        bucket = next((label for key, label in BUCKETS if key in stack), "everything else")
        counts[bucket] = counts.get(bucket, 0) + int(number)
    total = sum(counts.values())
    lines = [
        f"  where ours spends its wall time (one more run under py-spy at {SAMPLE_HZ} Hz, main "
        f"thread, {total / SAMPLE_HZ:.2f} s sampled; the profiler slows the run):"
    ]
    for label, count in sorted(counts.items(), key=lambda item: -item[1]):
        lines.append(f"    {count / SAMPLE_HZ:6.2f} s {100 * count / total:5.1f}%  {label}")
    return lines


# Running and reporting ------------------------------------------------------------------------


def run_variant(work: Path, hosts: int, repeat: int, login: Login, host: SshdCpu) -> list[Tool]:
    tools = [
        our_tool(work, hosts, login),
        raw_tool(work, hosts, login),
        ansible_tool("Ansible forks 5 (play.yml)", "play.yml", work, login, forks=True),
        ansible_tool("Ansible serial: 1 (play_serial.yml)", "play_serial.yml", work, login, False),
    ]
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    for round_ in range(repeat):
        # A different order each round, so that no tool always runs right after another.
        for tool in tools[round_ % len(tools) :] + tools[: round_ % len(tools)]:
            reset_hosts(hosts, login)
            slug = tool.label.split(" (")[0].replace(" ", "-").replace(":", "")
            tool.runs.append(measure(tool, work, logs / f"{login.name}-{slug}-{round_}.log", host))
            tool.check(hosts)
    reset_hosts(hosts, ROOT)
    return tools


def verdict(value: float, target: float, at_most: bool) -> str:
    if (value <= target) if at_most else (value >= target):
        return "met"
    if at_most:
        return f"MISSED by {value / target:.2f}x ({value:.2f}x, want <= {target:g}x)"
    return f"MISSED by {target / value:.2f}x ({value:.2f}x, want >= {target:g}x)"


def report(tools: list[Tool], login: Login, startup_ms: float, hosts: int) -> list[str]:
    ours, raw, forks, serial = tools
    lines = [
        f"login {login.name}: one remote `true` over an open connection takes {startup_ms:.0f} ms "
        "(median of 10; the login shell's start-up)",
        f"  {'tool':<38} {'wall s':>7} {'CPU s':>7} {'host CPU s':>10}   runs (wall s)",
    ]
    for tool in tools:
        runs = " ".join(f"{m.wall:.2f}" for m in tool.runs)
        lines.append(
            f"  {tool.label:<38} {tool.median('wall'):>7.2f} {tool.median('cpu'):>7.2f} "
            f"{tool.host_cpu():>10}   {runs}"
        )
    lines.append("  ratios of medians                        wall     CPU")
    for label, top, bottom in (
        ("ours / raw paramiko", ours, raw),
        ("Ansible serial: 1 / ours", serial, ours),
        ("Ansible forks 5 / ours", forks, ours),
    ):
        wall = top.median("wall") / bottom.median("wall")
        cpu = top.median("cpu") / bottom.median("cpu")
        lines.append(f"  {label:<38} {wall:>6.2f}x {cpu:>6.2f}x")
    over_raw = ours.median("wall") / raw.median("wall")
    under_serial = serial.median("wall") / ours.median("wall")
    lines += [
        f"  target: ours within {TARGET_OF_RAW:g}x of raw paramiko (wall): "
        + verdict(over_raw, TARGET_OF_RAW, at_most=True),
        f"  target: ours at least {TARGET_OVER_SERIAL:g}x faster than Ansible serial: 1 (wall): "
        + verdict(under_serial, TARGET_OVER_SERIAL, at_most=False),
        f"  per host, ours: {(ours.median('wall') - raw.median('wall')) / hosts * 1000:.0f} ms "
        "wall more than raw paramiko",
    ]
    return lines


def versions() -> str:
    ansible = subprocess.run(
        [
            str(PEER_VENV / "bin" / "python"),
            "-c",
            "import ansible.release as r; print(r.__version__)",
        ],
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = subprocess.run(
        [
            str(PYTHON),
            "-c",
            "import ors_migrate, paramiko; print(ors_migrate.__version__, paramiko.__version__)",
        ],
        capture_output=True,
        text=True,
    ).stdout.split()
    return (
        f"ors-migrate {ours[0]}, paramiko {ours[1]} (ours and raw), Python "
        f"{sys.version.split()[0]}; ansible-core {ansible}; {os.cpu_count()} CPUs"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10, help="inventory hosts (even)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool (median)")
    parser.add_argument("--variants", default="root", help="root and/or plain, comma-separated")
    parser.add_argument("--harness", type=Path, default=DEFAULT_HARNESS)
    parser.add_argument(
        "--profile", action="store_true", help="then one more run of ours under py-spy"
    )
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.hosts < 2 or args.hosts % 2 or args.repeat < 1 or set(variants) - {"root", "plain"}:
        parser.error("--hosts: an even number >= 2; --repeat >= 1; --variants: root, plain")
    if os.geteuid() != 0:
        parser.error("needs root (the harness starts sshd and logs in as root)")
    if not (args.harness / "setup.sh").is_file():
        parser.error(f"no peer harness at {args.harness} (setup.sh missing)")
    work = Path(tempfile.mkdtemp(prefix="orsm-ansible-peer-"))
    os.chmod(work, 0o755)
    host: SshdCpu | None = None
    try:
        set_up_harness(args.harness, work, args.hosts)
        host = SshdCpu(sshd_pid())
        become_subreaper()
        print(
            f"{args.hosts} hosts on one sshd 127.0.0.1:2222, 2 option edits + 1 command + "
            f"1 read-back each; median of {args.repeat} runs per tool; {versions()}"
        )
        print(MAPPING)
        for variant in variants:
            login = login_for(variant)
            with keys_readable_by(login):
                startup = command_startup_ms(login)
                tools = run_variant(work, args.hosts, args.repeat, login, host)
                profile = profile_ours(tools[0], work, args.hosts, login) if args.profile else []
            print("\n".join(report(tools, login, startup, args.hosts) + profile))
            print()
    finally:
        end_orphans()
        stop_sshd()
        if host is not None:
            host.remove()
    print(f"harness sshd stopped; logs in {work}/logs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
