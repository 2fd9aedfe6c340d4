"""SSH command round trips: one reused connection versus a fresh connection per command.

Starts a throwaway OpenSSH server on loopback (tests/sshd_fixture.py, needs root) for a plain
login user, then times `true` run N times through one SshTransport and M times through a new
SshTransport each (connect, key exchange, key auth, command, close). Also times the option-file
operations over the reused connection. Usage: `python bench/ssh_roundtrip.py [-n 300] [-m 40]`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sshd_fixture import LOOPBACK, SshLab, start_lab, unavailable_reason  # noqa: E402

from ors_migrate.actions.ssh import SshTransport  # noqa: E402
from ors_migrate.site import SshSettings  # noqa: E402


def settings(lab: SshLab) -> SshSettings:
    return SshSettings(
        address=LOOPBACK,
        port=lab.target.port,
        user=lab.user,
        key_file=str(lab.key.path),
        known_hosts=str(lab.known_hosts(lab.directory / "known_hosts", lab.target)),
        ssh_config=None,
    )


def timed(count: int, step: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for n in range(count):
        step(n)
    return time.perf_counter() - started


def report(label: str, count: int, seconds: float) -> None:
    print(
        f"{label:<44} {count:>5} in {seconds:7.3f} s  {count / seconds:8.1f}/s  "
        f"{1000 * seconds / count:7.2f} ms each"
    )


def fresh_command(config: SshSettings) -> Callable[[int], None]:
    def step(_n: int) -> None:
        with SshTransport("bench", config) as transport:
            assert transport.run("true").ok

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--reused", type=int, default=300, help="commands on one connection")
    parser.add_argument("-m", "--fresh", type=int, default=40, help="commands, one connection each")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"cannot start sshd: {reason}", file=sys.stderr)
        return 2
    lab = start_lab()
    try:
        config = settings(lab)
        print(f"sshd {LOOPBACK}:{lab.target.port}, login {lab.user} (plain user), ed25519 keys")
        imported = timed(1, lambda _n: importlib.import_module("paramiko"))
        report("import paramiko (lazy, on first use)", 1, imported)
        with SshTransport("bench", config) as reused:
            connect = timed(1, lambda _n: reused.run("true"))
            report("first command (connect + auth + command)", 1, connect)
            mark = lab.target.log_mark()
            seconds = timed(args.reused, lambda _n: reused.run("true"))
            report("`true`, one reused connection", args.reused, seconds)
            assert lab.target.accepted_logins(mark) == 0, "the reused connection reconnected"
            path = str(lab.remote_dir / "bench.ini")
            body = b"[persistence]\ntype=redis\n" * 40
            write = timed(50, lambda _n: reused.write_file_atomic(path, body, backup_path=None))
            report("write_file_atomic 1 KB, reused connection", 50, write)
            read = timed(50, lambda _n: reused.read_file(path))
            report("read_file 1 KB, reused connection", 50, read)
        mark = lab.target.log_mark()
        fresh = timed(args.fresh, fresh_command(config))
        report("`true`, fresh connection per command", args.fresh, fresh)
        assert lab.target.accepted_logins(mark) == args.fresh
        per_reused, per_fresh = seconds / args.reused, fresh / args.fresh
        print(
            f"reuse is {per_fresh / per_reused:.1f}x faster per command "
            f"({1000 * (per_fresh - per_reused):.1f} ms saved per command)"
        )
    finally:
        lab.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
