"""Redis as each ORS host sees it: checked on the host, over the transport the run uses for it.

The Redis checks of `redis_checks` run on the operator's machine, but ORS connects from its own
hosts, with TLS files read there by the account ORS runs as. A firewall between an ORS host and
a Redis node, or a certificate that is missing, unreadable, mismatched or signed by another CA
on that host, would otherwise first show at enable.1, after a switchover. The documents say to
verify the Redis connection before enabling it with ORS; this does it from where ORS stands.

On Linux one shell script runs on the host (as the ORS account when TLS is on) with what a
stock host has: `test` and `stat` for the files, `openssl` for the key match and the chain,
`python3` for TCP and the TLS handshake (bash's `/dev/tcp` for TCP when python3 is missing).
A missing tool is a failed verdict that says so ("cannot check: ... is missing"), never a pass.
Windows hosts (where ORS has no TLS) get the TCP check through PowerShell's TcpClient.

The handshake sends `PING` without AUTH: any reply (`-NOAUTH` included) proves the node
accepted the TLS session and the client certificate; no secret leaves the operator's machine.
The node's certificate is checked against the CA and, like the operator-side check does, its
name against `tls-sni` when set, else the node's address.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ors_migrate.errors import CommandFailed
from ors_migrate.site import RedisSettings, Site, TlsSettings
from ors_migrate.step import Action, CheckResult, CommandResult, Preview, Transport

if TYPE_CHECKING:
    from ors_migrate.step import PlannedAction, PlanningView, RunContext

MARK = "orsm"
COMMAND_SLACK_S = 30.0
# What an ORS process's command line carries: LCA starts a Genesys application with
# `-app <name>`; the lab's simulated ORS takes `--app <name>`.
APP_FLAGS = ("-app", "--app")
# How a node's refusal of the client certificate reads on the client side (TLS 1.3 clients
# may see only an EOF once the handshake seemed done).
REJECTED_CLIENT_CERT = (
    "certificate required",
    "bad certificate",
    "unknown ca",
    "eof occurred in violation",
    "unexpected eof",
)

# Runs on the host with its python3 (3.6 or later): TCP to each node, and with TLS a handshake
# with the client certificate and one PING (no AUTH). One line per node and check.
PYTHON_PROBE = r"""
import socket, ssl, sys
timeout = float(sys.argv[1])
tls = sys.argv[2] == "tls"
cafile, capath, cert, key, sni = sys.argv[3:8]
nodes = sys.argv[8:]
def say(kind, node, status, detail=""):
    detail = " ".join(str(detail).split())
    sys.stdout.write("orsm\t%s\t%s\t%s\t%s\n" % (kind, node, status, detail))
context, setup_error = None, ""
if tls:
    try:
        made = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if cafile or capath:
            made.load_verify_locations(cafile=cafile or None, capath=capath or None)
        else:
            made.load_default_certs()
        if cert:
            made.load_cert_chain(cert, key or None)
        context = made
    except Exception as exc:
        setup_error = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
for node in nodes:
    host, _, port = node.rpartition(":")
    host = host.strip("[]")
    try:
        raw = socket.create_connection((host, int(port)), timeout=timeout)
    except (OSError, ValueError) as exc:
        say("tcp", node, "fail", getattr(exc, "strerror", None) or str(exc) or "timed out")
        continue
    say("tcp", node, "ok")
    if not tls:
        raw.close()
        continue
    if context is None:
        raw.close()
        say("tls", node, "setup", setup_error)
        continue
    try:
        wrapped = context.wrap_socket(raw, server_hostname=sni or host)
        wrapped.sendall(b"PING\r\n")
        reply = wrapped.recv(64)
        wrapped.close()
    except ssl.CertificateError as exc:
        say("tls", node, "verify", getattr(exc, "verify_message", None) or exc)
    except ssl.SSLError as exc:
        message = getattr(exc, "verify_message", None)
        if message:
            say("tls", node, "verify", message)
        else:
            say("tls", node, "fail", getattr(exc, "reason", None) or exc)
    except OSError as exc:
        say("tls", node, "fail", exc.strerror or str(exc) or "timed out")
    else:
        status = "ok" if reply[:1] in (b"+", b"-") else "closed"
        say("tls", node, status, reply.decode("ascii", "replace").strip())
"""

SHELL_PRELUDE = r"""
out() { printf 'orsm\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(printf '%s' "$4" | tr '\t\n' '  ')"; }
have() { command -v "$1" >/dev/null 2>&1; }
info() { stat -c 'owner %U:%G, mode %a' "$1" 2>/dev/null || echo 'owner unknown'; }
out whoami "$(id -un 2>/dev/null)" "$(id -u 2>/dev/null)" ""
"""

SHELL_FILES = r"""
check_file() {
  [ -n "$2" ] || return 0
  if [ "$3" = d ]; then
    if [ ! -d "$2" ]; then out file "$1" missing "$2"
    elif [ -r "$2" ] && [ -x "$2" ]; then out file "$1" ok "$2"
    else out file "$1" unreadable "$2 ($(info "$2"))"; fi
  elif [ ! -e "$2" ]; then out file "$1" missing "$2"
  elif [ ! -f "$2" ]; then out file "$1" notfile "$2"
  elif [ -r "$2" ]; then out file "$1" ok "$2"
  else out file "$1" unreadable "$2 ($(info "$2"))"; fi
}
check_file tls-cert "$CERT" f
check_file tls-key "$KEY" f
check_file tls-cacert "$CA" f
check_file tls-cacertdir "$CADIR" d
if ! have openssl; then
  out tool openssl missing ""
else
  if [ -n "$CERT" ] && [ -r "$CERT" ] && [ -r "$KEY" ]; then
    c=$(openssl x509 -in "$CERT" -noout -pubkey 2>&1 </dev/null) ||
      { out match tls-cert unusable "$c"; c=; }
    k=$(openssl pkey -in "$KEY" -pubout -passin pass: 2>&1 </dev/null) ||
      { out match tls-key unusable "$k"; k=; }
    if [ -n "$c" ] && [ -n "$k" ]; then
      if [ "$c" = "$k" ]; then out match - ok ""; else out match - mismatch ""; fi
    fi
  fi
  if [ -n "$CERT" ] && [ -r "$CERT" ] && { [ -r "$CA" ] || [ -d "$CADIR" ]; }; then
    set --
    [ -n "$CA" ] && set -- -CAfile "$CA"
    [ -n "$CADIR" ] && set -- "$@" -CApath "$CADIR"
    if v=$(openssl verify -purpose sslclient "$@" -untrusted "$CERT" "$CERT" 2>&1 </dev/null)
    then out chain - ok ""
    else out chain - fail "$v"; fi
  fi
fi
"""

SHELL_NETWORK = r"""
set -f  # node labels such as [fd00::3]:7000 are words, never file name patterns
if have python3; then
  python3 -c "$PY" "$T" "$MODE" "$CA" "$CADIR" "$CERT" "$KEY" "$SNI" $NODES </dev/null
else
  out tool python3 missing ""
  if have bash; then
    for node in $NODES; do
      host=${node%:*}; port=${node##*:}; host=${host#[}; host=${host%]}
      if have timeout; then
        r=$(timeout "$T" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>&1 </dev/null); rc=$?
      else
        r=$(bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>&1 </dev/null); rc=$?
      fi
      if [ $rc -eq 0 ]; then out tcp "$node" ok ""
      elif [ $rc -eq 124 ]; then out tcp "$node" fail "timed out after $T s"
      else out tcp "$node" fail "${r##*: }"; fi
    done
  else
    out tool bash missing ""
  fi
fi
"""


@dataclass(frozen=True)
class ProbeLine:
    """One observation the host reported: `kind` (tcp, tls, file, match, chain, tool,
    whoami), what it is about (a node, an option, a tool), a status and its detail."""

    kind: str
    subject: str
    status: str
    detail: str


@dataclass(frozen=True)
class Account:
    """The account ORS runs as on a host, and where that came from."""

    name: str
    source: str


def parse_probe(stdout: str) -> list[ProbeLine]:
    """The `orsm` lines of a probe's output (Windows lines may end in CR); others are ignored."""
    lines = []
    for raw in stdout.splitlines():
        parts = raw.rstrip("\r").split("\t")
        if len(parts) >= 4 and parts[0] == MARK:
            detail = parts[4].strip() if len(parts) > 4 else ""
            lines.append(ProbeLine(parts[1], parts[2], parts[3], detail))
    return lines


def node_labels(redis: RedisSettings) -> list[str]:
    """Every `redis-nodes` entry as `host:port` (an IPv6 address in brackets)."""
    labels = []
    for host, port in redis.endpoints():
        labels.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return labels


def linux_probe_script(redis: RedisSettings) -> str:
    """The POSIX shell script run on a Linux host: the TLS files (with TLS), then TCP and the
    handshake to every `redis-nodes` entry. It only reads, and holds no secret."""
    tls = redis.tls
    settings = {
        "T": f"{redis.connect_timeout_s:g}",
        "MODE": "tls" if tls.enabled else "tcp",
        "CERT": (tls.cert or "") if tls.enabled else "",
        "KEY": (tls.key or "") if tls.enabled else "",
        "CA": (tls.cacert or "") if tls.enabled else "",
        "CADIR": (tls.cacertdir or "") if tls.enabled else "",
        "SNI": (tls.sni or "") if tls.enabled else "",
        "NODES": " ".join(node_labels(redis)),
        "PY": PYTHON_PROBE,
    }
    assigned = "".join(f"{name}={shlex.quote(value)}\n" for name, value in settings.items())
    files = SHELL_FILES if tls.enabled else ""
    return assigned + SHELL_PRELUDE + files + SHELL_NETWORK


def windows_probe_script(redis: RedisSettings) -> str:
    """PowerShell: a TCP connection to every `redis-nodes` entry by System.Net.Sockets.TcpClient
    (Windows PowerShell 5.1 and later), within the site's connect timeout."""
    from ors_migrate.actions.fips import ps_quote

    millis = int(redis.connect_timeout_s * 1000)
    nodes = ", ".join(
        f"@({ps_quote(label)}, {ps_quote(host)}, {port})"
        for label, (host, port) in zip(node_labels(redis), redis.endpoints(), strict=True)
    )
    # The trailing $null keeps a single node an array of arrays (PowerShell would flatten it).
    return "\n".join(
        [
            "$ProgressPreference = 'SilentlyContinue'",
            f"foreach ($n in @({nodes}, $null)) {{",
            "  if ($null -eq $n) { continue }",
            "  $client = New-Object System.Net.Sockets.TcpClient",
            "  try {",
            f"    if ($client.ConnectAsync($n[1], $n[2]).Wait({millis})) {{ $s = 'ok'; $d = '' }}",
            f"    else {{ $s = 'fail'; $d = 'timed out after {redis.connect_timeout_s:g} s' }}",
            "  } catch { $s = 'fail'; $d = $_.Exception.GetBaseException().Message }",
            "  finally { $client.Dispose() }",
            '  "orsm`ttcp`t$($n[0])`t$s`t$d"',
            "}",
        ]
    )


def windows_probe_command(redis: RedisSettings) -> str:
    from ors_migrate.actions.fips import powershell_invocation

    return powershell_invocation(windows_probe_script(redis))


def as_account(command: str, login: ProbeLine, account: str | None) -> str:
    """`command` run by `account`: as is when the login is that account (or none is needed),
    through runuser when the login is root, else through `sudo -n` (never a password prompt)."""
    if account is None or login.subject == account:
        return command
    if login.status == "0":
        return f"runuser -u {shlex.quote(account)} -- {command}"
    return f"sudo -n -u {shlex.quote(account)} -- {command}"


def ors_processes(ps_output: str, apps: Iterable[str]) -> list[tuple[str, str, str]]:
    """(uid, pid, app) of each process whose arguments name one of `apps` after `-app` (or
    `--app`), from `ps -ww -eo uid=,pid=,args=`."""
    wanted = set(apps)
    found = []
    for line in ps_output.splitlines():
        fields = line.split(None, 2)
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        words = fields[2].split()
        for flag, value in zip(words, words[1:], strict=False):
            if flag in APP_FLAGS and value in wanted:
                found.append((fields[0], fields[1], value))
                break
    return found


def _whoami(transport: Transport) -> ProbeLine:
    """Who the transport logs in as on the host (name and uid)."""
    result = transport.run(SHELL_PRELUDE, timeout=COMMAND_SLACK_S)
    lines = [line for line in parse_probe(result.stdout) if line.kind == "whoami"]
    if not lines or not lines[0].subject:
        raise CommandFailed(transport.name, "id -un; id -u", result.exit_code, result.stderr)
    return lines[0]


def ors_account(site: Site, host_name: str, transport: Transport) -> Account | CheckResult:
    """The account ORS runs as on the host: the site file's `ors_account`, else the owner of
    the running ORS processes of the host's applications. A finding when it cannot be told."""
    configured = site.hosts[host_name].ors_account
    if configured:
        return Account(configured, f"site file: hosts.{host_name}.ors_account")
    apps = [app.name for _, _, app in site.apps() if app.host == host_name]
    listing = transport.run("ps -ww -eo uid=,pid=,args=", timeout=COMMAND_SLACK_S)
    found = ors_processes(listing.stdout, apps) if listing.exit_code == 0 else []
    fix = f"set hosts.{host_name}.ors_account in the site file to the account ORS runs as"
    uids = sorted({uid for uid, _, _ in found})
    if not found:
        why = "ps failed" if listing.exit_code != 0 else "none of them is running"
        return CheckResult(
            "host.ors_account",
            "error",
            f"{host_name}: cannot tell the account ORS runs as: no process with `-app "
            f"<name>` of {', '.join(apps)} found ({why})",
            fix,
        )
    if len(uids) > 1:
        shown = ", ".join(f"{app} (pid {pid}, uid {uid})" for uid, pid, app in found)
        return CheckResult(
            "host.ors_account",
            "error",
            f"{host_name}: ORS processes run under several accounts: {shown}",
            fix,
        )
    named = transport.run(
        f"getent passwd {uids[0]} || echo {uids[0]}", timeout=COMMAND_SLACK_S
    ).stdout.strip()
    name = named.split(":", 1)[0] or uids[0]
    pids = ", ".join(f"{pid} ({app})" for _, pid, app in found)
    return Account(name, f"owner of the running ORS process {pids}")


# ---------------------------------------------------------------- verdicts


def _by_kind(lines: list[ProbeLine], kind: str) -> dict[str, ProbeLine]:
    return {line.subject: line for line in lines if line.kind == kind}


def _missing_tools(host: str, lines: list[ProbeLine], tls: bool) -> list[CheckResult]:
    tools = {line.subject for line in lines if line.kind == "tool" and line.status == "missing"}
    found = []
    if "openssl" in tools:
        found.append(
            CheckResult(
                "host.tools",
                "error",
                f"{host}: cannot check: openssl is missing, so whether tls-key matches tls-cert "
                "and whether tls-cert validates against the CA were not checked",
                f"install openssl on {host}, or check both by hand before enable.1",
            )
        )
    if "python3" in tools and tls:
        found.append(
            CheckResult(
                "host.tools",
                "error",
                f"{host}: cannot check: python3 is missing, so no TLS handshake with the Redis "
                "nodes was tried from this host",
                f"install python3 on {host}, or try `openssl s_client` with the ORS certificate "
                "from it by hand before enable.1",
            )
        )
    if "python3" in tools and "bash" in tools:
        found.append(
            CheckResult(
                "host.tools",
                "error",
                f"{host}: cannot check: python3 and bash are missing, so whether the Redis nodes "
                "are reachable from this host was not checked",
                f"install python3 on {host}, or check each node's port from it by hand",
            )
        )
    return found


def _tcp_verdicts(host: str, nodes: list[str], lines: list[ProbeLine]) -> list[CheckResult]:
    tcp = _by_kind(lines, "tcp")
    found = []
    for node in nodes:
        line = tcp.get(node)
        if line is None:
            continue  # no tool to try it, or never reached: _unobserved says so
        if line.status == "ok":
            found.append(CheckResult("host.redis.tcp", "ok", f"{host} reaches Redis node {node}"))
        else:
            found.append(
                CheckResult(
                    "host.redis.tcp",
                    "error",
                    f"{host} cannot reach Redis node {node}: {line.detail or 'no reason given'}",
                    f"open the way from {host} to {node} (ORS connects to every Redis node "
                    "from its own host: firewall, routing, the node's bind address)",
                    observed={"host": host, "node": node, "error": line.detail},
                )
            )
    return found


def _file_verdicts(host: str, lines: list[ProbeLine], account: Account) -> list[CheckResult]:
    found = []
    for line in lines:
        if line.kind != "file":
            continue
        option = f"[persistence] {line.subject}"
        if line.status == "ok":
            found.append(
                CheckResult(
                    "host.redis.tls_files",
                    "ok",
                    f"{host}: {option} {line.detail} is readable by {account.name}",
                )
            )
            continue
        who = f"{account.name}, the account ORS runs as ({account.source})"
        if line.status == "missing":
            what = f"{line.detail} does not exist, or a folder on its path is closed to {who}"
        elif line.status == "notfile":
            what = f"{line.detail} is not a regular file"
        else:
            what = f"{line.detail} is not readable by {who}"
        found.append(
            CheckResult(
                "host.redis.tls_files",
                "error",
                f"{host}: {option} {what}",
                f"put the file on {host} and let {account.name} read it",
                observed={"host": host, "option": line.subject, "account": account.name},
            )
        )
    return found


def _match_verdicts(host: str, lines: list[ProbeLine], redis: RedisSettings) -> list[CheckResult]:
    tls = redis.tls
    found = []
    for line in lines:
        if line.kind != "match":
            continue
        if line.status == "ok":
            found.append(
                CheckResult(
                    "host.redis.tls_match", "ok", f"{host}: tls-key {tls.key} matches tls-cert"
                )
            )
        elif line.status == "mismatch":
            found.append(
                CheckResult(
                    "host.redis.tls_match",
                    "error",
                    f"{host}: tls-key {tls.key} does not belong to tls-cert {tls.cert} (their "
                    "public keys differ)",
                    f"install on {host} the private key of that certificate (or the certificate "
                    "of that key)",
                    observed={"host": host},
                )
            )
        else:
            found.append(
                CheckResult(
                    "host.redis.tls_match",
                    "error",
                    f"{host}: {line.subject} cannot be read as PEM by openssl: {line.detail}",
                    "give ORS an unencrypted PEM private key and a PEM certificate",
                    observed={"host": host},
                )
            )
    return found


def _words(detail: str) -> str:
    """`TLSV13_ALERT_CERTIFICATE_REQUIRED` as `tlsv13 alert certificate required`."""
    return detail.lower().replace("_", " ")


def _handshake_failure(host: str, node: str, line: ProbeLine, ca: str) -> CheckResult:
    if line.status == "verify":
        cause = f"the certificate of {node} does not validate against {ca} on {host}: {line.detail}"
        fix = f"install on {host} the CA that issued the Redis server certificates"
    elif line.status == "closed" or any(r in _words(line.detail) for r in REJECTED_CLIENT_CERT):
        cause = (
            f"{node} rejected the TLS session ({line.detail or 'it closed the connection'}): "
            "most likely it does not trust the client certificate"
        )
        fix = "use a client certificate issued by the CA in the nodes' tls-ca-cert-file"
    else:
        cause = f"the TLS handshake with {node} failed: {line.detail}"
        fix = f"check that {node} speaks TLS on that port"
    return CheckResult(
        "host.redis.tls_handshake",
        "error",
        f"{host}: {cause}",
        fix,
        observed={"host": host, "node": node, "status": line.status, "error": line.detail},
    )


def _tls_verdicts(
    host: str, nodes: list[str], lines: list[ProbeLine], redis: RedisSettings
) -> list[CheckResult]:
    tls = redis.tls
    handshakes = _by_kind(lines, "tls")
    ca = (
        f"tls-cacert {tls.cacert}"
        if tls.cacert
        else f"tls-cacertdir {tls.cacertdir}"
        if tls.cacertdir
        else "the system's trust store"
    )
    found = []
    untried = [n for n in nodes if n in handshakes and handshakes[n].status == "setup"]
    if untried:
        found.append(
            CheckResult(
                "host.redis.tls_handshake",
                "error",
                f"{host}: no TLS handshake with {', '.join(untried)} could be tried: python's "
                f"ssl could not load the TLS files: {handshakes[untried[0]].detail}",
                "fix the TLS files (see the other findings of this host)",
                observed={"host": host, "nodes": untried, "error": handshakes[untried[0]].detail},
            )
        )
    for node in nodes:
        line = handshakes.get(node)
        if line is None or node in untried:
            continue  # not reached, or no python3, or the files failed: said elsewhere
        if line.status == "ok":
            found.append(
                CheckResult(
                    "host.redis.tls_handshake",
                    "ok",
                    f"{host}: TLS handshake with {node} "
                    + ("with the client certificate " if tls.cert else "")
                    + f"succeeded (Redis answered {line.detail[:40]!r} without AUTH)",
                )
            )
        else:
            found.append(_handshake_failure(host, node, line, ca))
    chain = _by_kind(lines, "chain").get("-")
    if chain is not None and chain.status == "ok":
        found.append(
            CheckResult("host.redis.tls_chain", "ok", f"{host}: tls-cert validates against {ca}")
        )
    elif chain is not None:
        accepted = nodes and all(handshakes.get(n) and handshakes[n].status == "ok" for n in nodes)
        found.append(
            CheckResult(
                "host.redis.tls_chain",
                "warning" if accepted else "error",
                f"{host}: tls-cert {tls.cert} does not validate against {ca} as a client "
                f"certificate: {_openssl_reason(chain.detail)}"
                + (" (every node accepted it in the handshake)" if accepted else ""),
                f"install on {host} the CA that issued the certificates, or a client "
                "certificate issued by it (with clientAuth usage)",
                observed={"host": host, "error": chain.detail},
            )
        )
    return found


def _openssl_reason(text: str) -> str:
    """The useful part of `openssl verify`'s output: its `error N at D depth lookup: ...`."""
    marker = "depth lookup:"
    if marker in text:
        return text.split(marker, 1)[1].split(" error ", 1)[0].strip()
    return text.strip()[:200] or "no reason given"


def _unobserved(
    host: str,
    nodes: list[str],
    lines: list[ProbeLine],
    tls: bool,
    exit_code: int,
    stderr: str,
) -> list[CheckResult]:
    """An error for every node the probe said nothing about: a probe that crashed part-way, or
    a python3 that exists but cannot run, must not pass the nodes it never reached. A missing
    tool already reported covers the nodes it leaves untried."""
    tools = {line.subject for line in lines if line.kind == "tool" and line.status == "missing"}
    tcp, handshakes = _by_kind(lines, "tcp"), _by_kind(lines, "tls")
    ended = (
        f" (the probe exited {exit_code}: {stderr.strip()[-200:] or 'no output'})"
        if exit_code != 0
        else ""
    )
    found = []
    for node in nodes:
        if node not in tcp:
            if {"python3", "bash"} <= tools:
                continue
            what = "whether it is reachable"
        elif tls and tcp[node].status == "ok" and node not in handshakes:
            if "python3" in tools:
                continue
            what = "a TLS handshake with it"
        else:
            continue
        found.append(
            CheckResult(
                "host.redis.unobserved",
                "error",
                f"{host}: could not observe {what} for Redis node {node}: the probe printed "
                f"nothing about it{ended}",
                f"run the probe's checks from {host} to {node} by hand, or fix what stopped "
                "the probe, and check again",
                observed={"host": host, "node": node, "exit_code": exit_code},
            )
        )
    return found


def verdicts(
    host: str,
    redis: RedisSettings,
    lines: list[ProbeLine],
    account: Account | None,
    exit_code: int = 0,
    stderr: str = "",
) -> list[CheckResult]:
    """What one host's probe output means, a finding per node and TLS file. `exit_code` and
    `stderr` are the probe's: they explain the nodes it never reported on."""
    nodes = node_labels(redis)
    tls = redis.tls.enabled
    found = _missing_tools(host, lines, tls)
    found += _tcp_verdicts(host, nodes, lines)
    if tls and account is not None:
        found += _file_verdicts(host, lines, account)
        found += _match_verdicts(host, lines, redis)
        found += _tls_verdicts(host, nodes, lines, redis)
    found += _unobserved(host, nodes, lines, tls and account is not None, exit_code, stderr)
    return found


# ---------------------------------------------------------------- on a host


def _probe_timeout(redis: RedisSettings) -> float:
    return COMMAND_SLACK_S + 2 * redis.connect_timeout_s * len(redis.nodes)


def _windows(host_name: str, redis: RedisSettings, transport: Transport) -> list[CheckResult]:
    result = transport.run(windows_probe_command(redis), timeout=_probe_timeout(redis))
    lines = parse_probe(result.stdout)
    if not lines:
        shown = "PowerShell: TCP to each Redis node"
        raise CommandFailed(host_name, shown, result.exit_code, result.stderr)
    return verdicts(host_name, redis, lines, None, result.exit_code, result.stderr)


def _linux(
    host_name: str,
    redis: RedisSettings,
    transport: Transport,
    login: ProbeLine,
    account: Account | None,
) -> tuple[list[ProbeLine], CheckResult | None, CommandResult]:
    """The probe's lines, run as `account` (None: as the login), or why it could not run so,
    and how the probe ended."""
    script = linux_probe_script(redis)
    command = as_account(f"sh -c {shlex.quote(script)}", login, account.name if account else None)
    result = transport.run(command, timeout=_probe_timeout(redis))
    lines = parse_probe(result.stdout)
    ran_as = next((line.subject for line in lines if line.kind == "whoami"), None)
    if account is None or ran_as == account.name:
        return lines, None, result
    how = command.split(" -- ", 1)[0] if " -- " in command else "the login"
    refused = CheckResult(
        "host.ors_account",
        "error",
        f"{host_name}: cannot check the TLS files as {account.name}, the account ORS runs as "
        f"({account.source}): `{how}` failed (exit {result.exit_code}: "
        f"{result.stderr.strip()[:200] or 'no output'})",
        f"log in to {host_name} as {account.name}, as root, or allow "
        f"`sudo -n -u {account.name}` for the login",
    )
    return [], refused, result


def check_host(site: Site, host_name: str, transport: Transport) -> list[CheckResult]:
    """Every check of Redis from one ORS host, over its own transport. When the TLS files
    cannot be checked as the ORS account, that is a finding, and TCP is still checked."""
    redis = site.redis
    if transport.platform == "windows":
        return _windows(host_name, redis, transport)
    login = _whoami(transport)
    tcp_only = redis.model_copy(update={"tls": TlsSettings()})
    if not redis.tls.enabled:
        lines, _, ended = _linux(host_name, redis, transport, login, None)
        return verdicts(host_name, redis, lines, None, ended.exit_code, ended.stderr)
    account = ors_account(site, host_name, transport)
    if isinstance(account, CheckResult):
        lines, _, ended = _linux(host_name, tcp_only, transport, login, None)
        return [account, *verdicts(host_name, tcp_only, lines, None, ended.exit_code, ended.stderr)]
    lines, refused, ended = _linux(host_name, redis, transport, login, account)
    if refused is not None:
        lines, _, ended = _linux(host_name, tcp_only, transport, login, None)
        return [refused, *verdicts(host_name, tcp_only, lines, None, ended.exit_code, ended.stderr)]
    known = CheckResult(
        "host.ors_account", "ok", f"{host_name}: ORS runs as {account.name} ({account.source})"
    )
    return [known, *verdicts(host_name, redis, lines, account, ended.exit_code, ended.stderr)]


def ors_hosts(site: Site) -> list[str]:
    return sorted({app.host for _, _, app in site.apps()})


def check_ors_hosts(site: Site, pool: Any) -> list[tuple[str, CheckResult]]:
    """Every ORS host's findings, by host name."""
    return [
        (host, result)
        for host in ors_hosts(site)
        for result in check_host(site, host, pool.for_host(host))
    ]


class RedisFromOrsHosts(Action):
    """Before enable.1: every ORS host reaches each Redis node, and with TLS reads, matches and
    validates its certificate files and completes a handshake, as the account ORS runs as."""

    name = "redis.check_from_ors_hosts"
    scopes = frozenset({"site"})

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        site = view.site
        hosts = ors_hosts(site)
        what = f"TCP to {';'.join(site.redis.nodes)}"
        if site.redis.tls.enabled:
            what += (
                "; the TLS files readable by the account ORS runs as, tls-key matching "
                "tls-cert, tls-cert validating against the CA, a TLS handshake with each node "
                "(no AUTH)"
            )
        return Preview(
            f"check Redis from each ORS host ({', '.join(hosts)}) over its own transport: "
            f"{what}; any failure stops the run before Redis is enabled"
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        from ors_migrate.actions.checks import raise_on_blocking

        results = [result for _, result in check_ors_hosts(ctx.site, ctx.pool)]
        ctx.record_checks(results)
        return raise_on_blocking(results, "Redis is not usable from every ORS host")


ACTIONS = [RedisFromOrsHosts]
