"""FIPS mode for ORS (seed "Additional Configuration"): the file, environment and option edits of
"Configuring FIPS for ORS on Linux" (ORS 8.1.401.13+) and "... on Windows" (ORS 8.1.401.11+), and
the reverse for TLS without FIPS on Linux.

ORS started by Local Control Agent inherits LCA's environment, so the variables go where LCA
reads them: on Linux an environment file (`ors.fips.lca_env_file`, `KEY="value"` lines, the
format of a systemd EnvironmentFile that a shell can also source); on Windows the machine-wide
environment. Windows commands are PowerShell scripts, sent to Windows OpenSSH as
`powershell.exe -EncodedCommand` so that they run the same whichever shell sshd starts; the plan
shows each script as it runs.
"""

from __future__ import annotations

import base64
import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ors_migrate.errors import SiteError, VerificationFailed
from ors_migrate.options import OptionChange, version_at_least
from ors_migrate.step import Action, Preview, Transport, run_checked

if TYPE_CHECKING:
    from ors_migrate.site import Site
    from ors_migrate.step import PlannedAction, PlanningView, RunContext

SCXML = "scxml"
FIPS_ENABLED = "fips-enabled"
OPENSSL_CONF = "OPENSSL_CONF"
OPENSSL_MODULES = "OPENSSL_MODULES"
LD_LIBRARY_PATH = "LD_LIBRARY_PATH"
MIN_VERSION = {"linux": "8.1.401.13", "windows": "8.1.401.11"}
COMMAND_TIMEOUT_S = 120.0
PLATFORMS = ("linux", "windows")
MODES = ("fips", "non-fips")

# -------------------------------------------------------------------------- pure helpers


def ps_quote(value: str) -> str:
    """A PowerShell single-quoted literal: nothing inside is expanded. PowerShell also reads the
    typographic single quotes as quote marks, so they are doubled like the plain one."""
    return "'" + re.sub(r"(['\u2018\u2019\u201a\u201b])", r"\1\1", value) + "'"


def powershell_invocation(script: str) -> str:
    """The command line that runs `script` in Windows PowerShell whatever the SSH default shell
    is (cmd or PowerShell): the script travels base64-encoded (UTF-16LE), never re-quoted."""
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return (
        "powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass "
        f"-EncodedCommand {encoded}"
    )


def decode_invocation(command: str) -> str | None:
    """The script inside a `powershell_invocation`, or None for any other command."""
    match = re.search(r"-EncodedCommand (\S+)$", command)
    if not match or not command.startswith("powershell.exe "):
        return None
    return base64.b64decode(match.group(1)).decode("utf-16-le")


def windows_join(base: str, *parts: str) -> str:
    return "\\".join([base.rstrip("\\/"), *parts])


def openssl_cnf(fipsmodule_path: str) -> str:
    """openssl.cnf as the seed gives it (fips-windows.2). OpenSSL reads a backslash in a config
    value as an escape, so the included path must use forward slashes."""
    return (
        "config_diagnostics = 1\n"
        "openssl_conf = openssl_init\n"
        f".include {fipsmodule_path.replace(chr(92), '/')}\n"
        "[openssl_init]\n"
        "providers = provider_sect\n"
        "[provider_sect]\n"
        "fips = fips_sect\n"
        "base = base_sect\n"
        "[base_sect]\n"
        "activate = 1\n"
    )


def parse_providers(output: str) -> dict[str, str]:
    """`openssl list -providers` output as provider id -> status ("active", ...)."""
    providers: dict[str, str] = {}
    current: str | None = None
    for line in output.splitlines():
        text = line.strip()
        if not text or text.endswith(":") and ":" not in text[:-1]:
            continue
        key, sep, value = text.partition(":")
        if not sep:
            current = text
            providers[current] = ""
        elif current is not None and key.strip() == "status":
            providers[current] = value.strip()
    return providers


_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_UNSAFE_VALUE = re.compile(r'["$`\\\n]')


def _unquote(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    return raw


def parse_env_file(text: str) -> dict[str, str]:
    """Variables of an environment file (`KEY=value`, `KEY="value"`, `export KEY=value`)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line)
        if match and not line.lstrip().startswith("#"):
            values[match.group(1)] = _unquote(match.group(2))
    return values


def env_line(key: str, value: str) -> str:
    if _UNSAFE_VALUE.search(value):
        raise SiteError(
            f"the value of {key} ({value!r}) contains a quote, $, backquote, backslash or line "
            "break, which an environment file cannot carry the same way for systemd and a shell",
            field="ors.fips",
            rule="fips-env-value",
        )
    return f'{key}="{value}"'


def update_env_file(text: str, changes: dict[str, str | None]) -> str:
    """`text` with each variable set (first assignment replaced, later ones dropped, new ones
    appended) or removed (None); comments and other lines kept in order."""
    out: list[str] = []
    done: set[str] = set()
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line)
        key = match.group(1) if match and not line.lstrip().startswith("#") else None
        if key is None or key not in changes:
            out.append(line)
            continue
        value = changes[key]
        if value is not None and key not in done:
            out.append(env_line(key, value))
        done.add(key)
    for key, value in changes.items():
        if value is not None and key not in done:
            out.append(env_line(key, value))
    return "\n".join(out) + "\n" if out else ""


def _path_entries(value: str | None) -> list[str]:
    return [e for e in (value or "").split(":") if e]


def swap_library_entries(current: str | None, out: list[str], put: list[str]) -> str:
    """LD_LIBRARY_PATH with `put` in place of the first of the `out` folders ("instead of", as
    the documents say), or where `put` already stands, else first; `out` dropped, `put` once."""
    entries: list[str] = []
    placed = False
    for entry in _path_entries(current):
        if entry in out or entry in put:
            if not placed:
                entries.extend(put)
                placed = True
            continue
        entries.append(entry)
    return ":".join(entries if placed else [*put, *entries])


def fips_library_path(current: str | None, suggested: list[str], security_pack: str | None) -> str:
    """The folders fipsinstall.sh suggests (<ORS>/fips and <ORS>/lib64) in place of the
    Security Pack folder (fips-linux.2)."""
    return swap_library_entries(current, [security_pack] if security_pack else [], suggested)


def non_fips_library_path(current: str | None, install_dir: str, security_pack: str) -> str:
    """The Security Pack folder instead of <ORS>/fips (TLS without FIPS)."""
    return swap_library_entries(current, [f"{install_dir}/fips"], [security_pack])


FIPS_VARIABLES = (LD_LIBRARY_PATH, OPENSSL_MODULES, OPENSSL_CONF)
_SUGGESTION = re.compile(
    r"^\s*(?:export\s+)?(" + "|".join(FIPS_VARIABLES) + r")\s*=\s*(.+?)\s*;?\s*$"
)


def parse_fipsinstall_output(output: str) -> dict[str, str]:
    """The variables fipsinstall.sh suggests (`NAME=value` or `export NAME=value` lines, quoted
    or not; the rest of the line is the value, so a folder may have spaces). A reference to
    the variable's current value (`:$LD_LIBRARY_PATH`) is left out: the entries already there
    are kept by the edit itself."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        match = _SUGGESTION.match(line)
        if not match:
            continue
        name, value = match.group(1), _unquote(match.group(2))
        if name == LD_LIBRARY_PATH:
            value = ":".join(e for e in value.split(":") if e and not e.startswith("$"))
        found.setdefault(name, value)
    return found


_FIPSMODULE_PATH = re.compile(r"(/[^\n'\"]*?fipsmodule\.cnf)\b")
_INCLUDE = re.compile(r"^[ \t]*\.include[ \t]*=?[ \t]*(.+?)[ \t]*$", re.M)


def fipsmodule_location(output: str, openssl_cnf_text: str | None) -> str | None:
    """Where fipsinstall.sh wrote fipsmodule.cnf: the path its output names, else the file the
    openssl.cnf it suggests includes."""
    named = _FIPSMODULE_PATH.search(output)
    if named:
        return named.group(1)
    included = _INCLUDE.search(openssl_cnf_text or "")
    return included.group(1) if included else None


def openssl_folders_command(folders: list[str]) -> str:
    """A POSIX shell command printing, one a line, those of `folders` that hold OpenSSL
    libraries (libssl.so* or libcrypto.so*)."""
    return (
        "for d in "
        + " ".join(shlex.quote(f) for f in folders)
        + '; do for f in "$d"/libssl.so* "$d"/libcrypto.so*; do '
        'if [ -e "$f" ]; then echo "$d"; break; fi; done; done'
    )


PROCESS_MARK = "@@pid "
UNREADABLE_MARK = "@@unreadable "


def parse_process_environments(output: str) -> dict[int, dict[str, str] | str]:
    """The output of `process_environment_command` / `process_environment_script`: per process
    id its variables, or why they could not be read."""
    found: dict[int, dict[str, str] | str] = {}
    current: dict[str, str] | None = None
    for line in output.replace("\r\n", "\n").splitlines():
        if line.startswith(PROCESS_MARK):
            pid = int(line[len(PROCESS_MARK) :].strip())
            current = found[pid] = {}
        elif line.startswith(UNREADABLE_MARK):
            pid_text, _, reason = line[len(UNREADABLE_MARK) :].partition(" ")
            found[int(pid_text)] = reason.strip() or "not readable"
            current = None
        elif current is not None and "=" in line and not line.startswith("="):
            name, _, value = line.partition("=")
            current.setdefault(name, value)
    return found


def process_environment_command(app: str, pid: int | None) -> str:
    """A POSIX shell command printing the environment of the running ORS process of `app`
    (`/proc/<pid>/environ`): the process id the status command reported, else every process
    started with `-app <app>` (how Local Control Agent starts a Genesys application). The name
    is matched through two variables so that this command's own text never matches."""
    if pid is not None:
        find = f"pids={int(pid)}"
    else:
        find = (
            f"a=' -app'; n={shlex.quote(' ' + app + ' ')}; "
            "pids=$(for d in /proc/[0-9]*; do "
            """case " $(tr '\\0' ' ' < "$d/cmdline" 2>/dev/null) " in *"$a$n"*) """
            'echo "${d#/proc/}";; esac; done)'
        )
    return (
        f"{find}; for p in $pids; do "
        f'if [ -r "/proc/$p/environ" ]; then echo "{PROCESS_MARK}$p"; '
        """tr '\\0' '\\n' < "/proc/$p/environ"; """
        f'else echo "{UNREADABLE_MARK}$p cannot read /proc/$p/environ as $(id -un)"; fi; done'
    )


# Reads another process's environment block through its PEB (ProcessParameters->Environment and
# EnvironmentSize, offsets of 64-bit and 32-bit Windows): Windows has no /proc, and PowerShell
# shows only its own environment.
PROCESS_ENVIRONMENT_READER = """using System;
using System.ComponentModel;
using System.Runtime.InteropServices;
using System.Text;
public static class OrsMigrateProcessEnvironment {
    [StructLayout(LayoutKind.Sequential)]
    struct BasicInformation {
        public IntPtr ExitStatus; public IntPtr PebBaseAddress; public IntPtr AffinityMask;
        public IntPtr BasePriority; public IntPtr UniqueProcessId; public IntPtr ParentProcessId;
    }
    [DllImport("ntdll.dll")]
    static extern int NtQueryInformationProcess(
        IntPtr process, int infoClass, ref BasicInformation info, int size, out int returned);
    [DllImport("kernel32.dll", SetLastError = true)]
    static extern IntPtr OpenProcess(int access, bool inherit, int pid);
    [DllImport("kernel32.dll", SetLastError = true)]
    static extern bool ReadProcessMemory(
        IntPtr process, IntPtr address, byte[] buffer, IntPtr size, out IntPtr read);
    [DllImport("kernel32.dll")]
    static extern bool CloseHandle(IntPtr handle);
    static byte[] Read(IntPtr process, IntPtr address, int size) {
        byte[] buffer = new byte[size];
        IntPtr read;
        if (!ReadProcessMemory(process, address, buffer, new IntPtr(size), out read))
            throw new Win32Exception();
        return buffer;
    }
    static IntPtr Pointer(IntPtr process, IntPtr address) {
        byte[] bytes = Read(process, address, IntPtr.Size);
        if (IntPtr.Size == 8) return new IntPtr(BitConverter.ToInt64(bytes, 0));
        return new IntPtr(BitConverter.ToInt32(bytes, 0));
    }
    public static string Of(int pid) {
        IntPtr process = OpenProcess(0x0410, false, pid);
        if (process == IntPtr.Zero) throw new Win32Exception();
        try {
            BasicInformation info = new BasicInformation();
            int returned;
            int status = NtQueryInformationProcess(
                process, 0, ref info, Marshal.SizeOf(info), out returned);
            if (status != 0) throw new Win32Exception("NtQueryInformationProcess " + status);
            bool wide = IntPtr.Size == 8;
            IntPtr peb = info.PebBaseAddress;
            IntPtr parameters = Pointer(process, IntPtr.Add(peb, wide ? 0x20 : 0x10));
            IntPtr block = Pointer(process, IntPtr.Add(parameters, wide ? 0x80 : 0x48));
            long size = Pointer(process, IntPtr.Add(parameters, wide ? 0x3F0 : 0x290)).ToInt64();
            return Encoding.Unicode.GetString(Read(process, block, (int)size));
        } finally {
            CloseHandle(process);
        }
    }
}
"""


def process_environment_script(app: str, pid: int | None) -> str:
    """The PowerShell that prints the environment of the running ORS process of `app`, in the
    format of `process_environment_command`: the process id the status command reported, else
    every process whose command line has `-app <app>`."""
    if pid is not None:
        find = f"$ids = @({int(pid)})"
    else:
        find = (
            "$ids = @(Get-CimInstance Win32_Process | Where-Object { $_.CommandLine -match "
            f"('\\s-app\\s+\"?' + [regex]::Escape({ps_quote(app)}) + '\"?(\\s|$)') }} | "
            "ForEach-Object { $_.ProcessId })"
        )
    return ps_script(
        f"Add-Type -TypeDefinition @'\n{PROCESS_ENVIRONMENT_READER}'@",
        find,
        # one line, the one a failure names
        "foreach ($id in $ids) { try { $block = [OrsMigrateProcessEnvironment]::Of([int]$id) } "
        f"catch {{ '{UNREADABLE_MARK}' + $id + ' ' + $_.Exception.Message; continue }}; "
        f"'{PROCESS_MARK}' + $id; $block -split \"`0\" | Where-Object {{ $_ }} }}",
    )


# -------------------------------------------------------------------------- site paths


@dataclass(frozen=True)
class FipsPaths:
    """Where the FIPS files and variables of one application live."""

    app: str
    host: str
    platform: str
    install_dir: str
    env_file: str | None
    config_dir: str | None
    openssl: str

    @property
    def modules_dir(self) -> str:
        if self.platform == "windows":
            return windows_join(self.install_dir, "fips")
        return f"{self.install_dir}/fips"

    @property
    def fipsmodule(self) -> str:
        if self.platform == "windows":
            assert self.config_dir
            return windows_join(self.config_dir, "fipsmodule.cnf")
        return f"{self.install_dir}/fipsmodule.cnf"

    @property
    def openssl_cnf(self) -> str:
        if self.platform == "windows":
            assert self.config_dir
            return windows_join(self.config_dir, "openssl.cnf")
        return f"{self.install_dir}/openssl.cnf"


def fips_paths(site: Site, app_name: str) -> FipsPaths:
    """Raises SiteError naming the missing setting."""
    _, _, app = site.find_app(app_name)
    platform = site.hosts[app.host].platform
    fips = site.ors.fips
    if not app.install_dir:
        raise SiteError(
            f"application {app_name} has no install_dir: FIPS mode works on files of the ORS "
            "installation folder",
            field=f"app {app_name}: install_dir",
            rule="fips-install-dir",
        )
    values = site.placeholder_values(app_name)
    env_file = config_dir = None
    if platform == "linux":
        if not fips.lca_env_file:
            raise SiteError(
                "FIPS on Linux needs ors.fips.lca_env_file: the environment file LCA is started "
                "with (ORS started by LCA inherits LCA's environment)",
                field="ors.fips.lca_env_file",
                rule="fips-env-file",
            )
        env_file = fips.lca_env_file.format(**values)
        openssl = fips.openssl.format(**values)
    else:
        if not fips.windows_config_dir:
            raise SiteError(
                "FIPS on Windows needs ors.fips.windows_config_dir: the folder for "
                "fipsmodule.cnf and openssl.cnf (the seed's example: C:\\GCTI\\ORS_FIPS_CFG)",
                field="ors.fips.windows_config_dir",
                rule="fips-config-dir",
            )
        config_dir = fips.windows_config_dir.format(**values)
        openssl = windows_join(app.install_dir, "tools", "openssl.exe")
    return FipsPaths(app.name, app.host, platform, app.install_dir, env_file, config_dir, openssl)


def shared_setting_conflict(site: Site, app_name: str, where: str, value: str) -> None:
    """LCA gives every ORS it starts the same environment: applications that share an
    environment (same file, or same Windows host) must agree on the FIPS paths."""
    mine = fips_paths(site, app_name)
    for _, _, other in site.apps():
        if other.name == app_name or other.host != mine.host or not other.install_dir:
            continue
        theirs = fips_paths(site, other.name)
        if theirs.platform != mine.platform or theirs.env_file != mine.env_file:
            continue
        if theirs.install_dir != mine.install_dir:
            raise SiteError(
                f"applications {app_name} and {other.name} share {where} on host {mine.host} but "
                f"are installed in different folders ({mine.install_dir}, {theirs.install_dir}); "
                f"{value} can point to only one of them",
                field=f"app {app_name}: install_dir",
                rule="fips-shared-environment",
            )


# -------------------------------------------------------------------------- running commands


def run_command(transport: Transport, command: str) -> str:
    return run_checked(transport, command, timeout=COMMAND_TIMEOUT_S).stdout


def run_powershell(transport: Transport, script: str) -> str:
    shown = f"PowerShell: {script.splitlines()[-1]}"
    invocation = powershell_invocation(script)
    result = run_checked(
        transport, invocation, timeout=COMMAND_TIMEOUT_S, shown_as=shown, stdout_when_silent=True
    )
    return result.stdout


def ps_script(*lines: str) -> str:
    return "\n".join(
        ["$ErrorActionPreference = 'Stop'", "$ProgressPreference = 'SilentlyContinue'", *lines]
    )


def installed_version(ctx: RunContext, app: str) -> str | None:
    """The installed ORS version: the site's version command, else what the status reports."""
    if ctx.site.services.version:
        out = ctx.services.run("version", app).stdout.strip()
        return out.split()[-1] if out else None
    return ctx.services.status(app).version


# -------------------------------------------------------------------------- actions


class FipsAction(Action):
    """An action for the applications of one platform; applications on the other platform are
    left alone (the plan says so), so a mixed site can run both FIPS playbooks."""

    scopes = frozenset({"app"})
    platform: ClassVar[str | None] = None

    @classmethod
    def check_spec(cls, scope: str, spec: Any) -> str | None:
        problem = super().check_spec(scope, spec)
        if problem:
            return problem
        if cls.platform is None and spec.with_.get("platform") not in PLATFORMS:
            return f"action '{cls.name}' needs 'with: {{platform: linux|windows}}'"
        return None

    def platform_of(self, step: PlannedAction) -> str:
        return self.platform or str(step.args["platform"])

    def applies(self, site: Site, step: PlannedAction) -> bool:
        assert step.target.host
        return site.hosts[step.target.host].platform == self.platform_of(step)

    def skipped(self, step: PlannedAction) -> Preview:
        return Preview(
            f"nothing for {step.target.app}: host {step.target.host} is not a "
            f"{self.platform_of(step)} host"
        )

    def transport(self, ctx: RunContext, step: PlannedAction) -> Transport:
        assert step.target.host
        return ctx.pool.for_host(step.target.host)

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        if not self.applies(view.site, step):
            return self.skipped(step)
        assert step.target.app
        return self.describe(fips_paths(view.site, step.target.app), step, view)

    def describe(self, paths: FipsPaths, step: PlannedAction, view: PlanningView) -> Preview:
        raise NotImplementedError

    def prepare(self, ctx: RunContext, step: PlannedAction) -> dict[str, Any]:
        assert step.target.app
        return {"app": step.target.app, "applies": self.applies(ctx.site, step)}

    def paths(self, ctx: RunContext, intent: dict[str, Any]) -> FipsPaths:
        return fips_paths(ctx.site, intent["app"])


class ModeAction(FipsAction):
    """An action for FIPS mode or for TLS without FIPS: `with: {mode: fips|non-fips}`."""

    @classmethod
    def check_spec(cls, scope: str, spec: Any) -> str | None:
        problem = super().check_spec(scope, spec)
        if problem is None and spec.with_.get("mode") not in MODES:
            return f"action '{cls.name}' needs 'with: {{mode: fips|non-fips}}'"
        return problem


class CheckVersion(FipsAction):
    """FIPS with the OpenSSL 3.x bundled with ORS: 8.1.401.13+ on Linux, 8.1.401.11+ on Windows."""

    name = "fips.check_version"

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        platform = self.platform_of(step)
        if not any(view.site.hosts[a.host].platform == platform for _, _, a in view.site.apps()):
            raise SiteError(
                f"no ORS application of this site runs on a {platform} host; this FIPS "
                "playbook is for another platform",
                field="hosts",
                rule="fips-platform",
            )
        return super().preview(step, view)

    def describe(self, paths: FipsPaths, step: PlannedAction, view: PlanningView) -> Preview:
        from ors_migrate.actions.service import _service_preview

        minimum = MIN_VERSION[paths.platform]
        return Preview(
            f"check {paths.app} runs ORS {minimum} or later (FIPS on {paths.platform})",
            _service_preview(view, paths.app, ["version"] if view.site.services.version else []),
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        if not intent["applies"]:
            return {"skipped": True}
        platform = self.platform_of(step)
        minimum = MIN_VERSION[platform]
        installed = installed_version(ctx, intent["app"])
        if installed is None or not version_at_least(installed, minimum):
            raise VerificationFailed(
                f"{intent['app']} runs ORS {installed or 'of an unknown version'}; FIPS mode on "
                f"{platform} needs {minimum} or later (upgrade it first)"
            )
        return {"app": intent["app"], "installed": installed}


FIPSINSTALL = "fipsinstall"


def fipsinstall_report(ctx: RunContext, app: str) -> dict[str, Any] | None:
    """What fipsinstall.sh of `app` reported in this run (journaled by fips.linux_install)."""
    from ors_migrate.events import EventKind

    found = None
    for event in ctx.journal.events(ctx.run_id):
        observed = event.payload.get("observed") or {}
        if event.kind == EventKind.ACTION_ENDED and observed.get("app") == app:
            found = observed.get(FIPSINSTALL) or found
    return found


class LinuxInstall(FipsAction):
    """fips-linux.1: run fipsinstall.sh, which self-tests the FIPS module, writes openssl.cnf
    and fipsmodule.cnf and suggests the variables to set. What it suggests, and where it says
    the files are, is journaled: fips-linux.2 sets the variables "as fipsinstall.sh suggests".
    Running it again is harmless, so an interrupted run simply runs it again."""

    name = "fips.linux_install"
    platform = "linux"
    changes_world = True

    @staticmethod
    def command(paths: FipsPaths) -> str:
        return f"cd {shlex.quote(paths.install_dir)} && ./fipsinstall.sh"

    def describe(self, paths: FipsPaths, step: PlannedAction, view: PlanningView) -> Preview:
        return Preview(
            f"run fipsinstall.sh of {paths.app}: FIPS module self-test; it writes openssl.cnf and "
            "fipsmodule.cnf and suggests LD_LIBRARY_PATH, OPENSSL_MODULES and OPENSSL_CONF, "
            f"which are read from its output (the documents expect {paths.openssl_cnf})",
            [f"[{paths.host}] {self.command(paths)}"],
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        if not intent["applies"]:
            return {"skipped": True}
        paths = self.paths(ctx, intent)
        transport = self.transport(ctx, step)
        out = run_command(transport, self.command(paths))
        tail = out.strip()[-2000:]
        suggested = parse_fipsinstall_output(out)
        missing = [name for name in FIPS_VARIABLES if not suggested.get(name)]
        if missing:
            raise VerificationFailed(
                f"fipsinstall.sh of {paths.app} on {paths.host} does not suggest "
                f"{', '.join(missing)} in its output (the variables are set as it suggests "
                f"them); its output ends: {tail[-300:]!r}"
            )
        cnf = transport.read_file(suggested[OPENSSL_CONF])
        if cnf is None:
            raise VerificationFailed(
                f"fipsinstall.sh of {paths.app} suggests OPENSSL_CONF={suggested[OPENSSL_CONF]}, "
                f"which does not exist on {paths.host}"
            )
        fipsmodule = fipsmodule_location(out, cnf.decode("utf-8", "replace"))
        if fipsmodule is None or transport.read_file(fipsmodule) is None:
            raise VerificationFailed(
                f"fipsinstall.sh of {paths.app} on {paths.host} produced no fipsmodule.cnf "
                f"({fipsmodule or 'neither its output nor ' + suggested[OPENSSL_CONF]} "
                "names one that exists)"
            )
        report = {"suggested": suggested, "openssl_cnf": suggested[OPENSSL_CONF]}
        return {"app": paths.app, "output": tail, FIPSINSTALL: {**report, "fipsmodule": fipsmodule}}


class LinuxEnvironment(ModeAction):
    """fips-linux.2 (mode fips): OPENSSL_CONF, OPENSSL_MODULES and LD_LIBRARY_PATH in LCA's
    environment file as fipsinstall.sh suggested them, its folders in place of the Security
    Pack folder. Mode non-fips: the OPENSSL_* variables removed and the Security Pack folder on
    LD_LIBRARY_PATH instead of <ORS>/fips, as the seed asks for TLS without FIPS."""

    name = "fips.linux_environment"
    platform = "linux"
    changes_world = True

    @staticmethod
    def documented(paths: FipsPaths) -> dict[str, str]:
        """What the documents say fipsinstall.sh suggests: shown in the plan, never written."""
        return {
            LD_LIBRARY_PATH: f"{paths.modules_dir}:{paths.install_dir}/lib64",
            OPENSSL_MODULES: paths.modules_dir,
            OPENSSL_CONF: paths.openssl_cnf,
        }

    @staticmethod
    def desired(
        site: Site,
        paths: FipsPaths,
        mode: str,
        current: dict[str, str],
        suggested: dict[str, str],
    ) -> dict[str, str | None]:
        security_pack = site.ors.fips.security_pack_dir
        now = current.get(LD_LIBRARY_PATH)
        if mode == "fips":
            folders = _path_entries(suggested[LD_LIBRARY_PATH])
            return {
                OPENSSL_CONF: suggested[OPENSSL_CONF],
                OPENSSL_MODULES: suggested[OPENSSL_MODULES],
                LD_LIBRARY_PATH: fips_library_path(now, folders, security_pack),
            }
        if not security_pack:
            raise SiteError(
                "TLS without FIPS needs ors.fips.security_pack_dir: LD_LIBRARY_PATH must include "
                "the Genesys Security Pack folder instead of <ORS>/fips",
                field="ors.fips.security_pack_dir",
                rule="fips-security-pack",
            )
        return {
            OPENSSL_CONF: None,
            OPENSSL_MODULES: None,
            LD_LIBRARY_PATH: non_fips_library_path(now, paths.install_dir, security_pack),
        }

    def describe(self, paths: FipsPaths, step: PlannedAction, view: PlanningView) -> Preview:
        assert paths.env_file
        shared_setting_conflict(
            view.site, paths.app, f"the environment file {paths.env_file}", OPENSSL_CONF
        )
        mode = step.args["mode"]
        pack = view.site.ors.fips.security_pack_dir
        where = f"in LCA's environment file {paths.env_file} on {paths.host} (a backup kept): "
        if mode == "fips":
            expected = self.documented(paths)
            replaced = (
                f"in place of the Security Pack folder {pack}"
                if pack
                else "first (a folder already there that holds OpenSSL libraries stops the run: "
                "name it in ors.fips.security_pack_dir)"
            )
            return Preview(
                where + "OPENSSL_CONF, OPENSSL_MODULES and LD_LIBRARY_PATH as fipsinstall.sh "
                "suggested them (the documents: "
                + "; ".join(f'{k}="{v}"' for k, v in expected.items())
                + f"), its LD_LIBRARY_PATH folders {replaced}"
            )
        wanted = self.desired(view.site, paths, mode, {}, {})
        edits = [
            f"{k} removed"
            if v is None
            else f'{k}="{v}"' + (" (+ the entries already there)" if k == LD_LIBRARY_PATH else "")
            for k, v in wanted.items()
        ]
        return Preview(where + "; ".join(edits))

    def _current(self, ctx: RunContext, step: PlannedAction, paths: FipsPaths) -> str:
        assert paths.env_file
        data = self.transport(ctx, step).read_file(paths.env_file)
        return "" if data is None else data.decode("utf-8")

    def prepare(self, ctx: RunContext, step: PlannedAction) -> dict[str, Any]:
        intent = super().prepare(ctx, step)
        intent["mode"] = step.args["mode"]
        intent["suggested"] = {}
        if intent["applies"]:
            paths = self.paths(ctx, intent)
            shared_setting_conflict(
                ctx.site, paths.app, f"the environment file {paths.env_file}", OPENSSL_CONF
            )
            before = parse_env_file(self._current(ctx, step, paths))
            intent["env_file"] = paths.env_file
            intent["before"] = {k: before.get(k) for k in FIPS_VARIABLES}
            if intent["mode"] == "fips":
                intent["suggested"] = self._suggestion(ctx, paths)
                self._refuse_other_openssl(ctx, step, paths, before, intent["suggested"])
        return intent

    @staticmethod
    def _suggestion(ctx: RunContext, paths: FipsPaths) -> dict[str, str]:
        report = fipsinstall_report(ctx, paths.app)
        if report is None:
            raise VerificationFailed(
                f"this run has no output of fipsinstall.sh for {paths.app}: the variables are set "
                "as it suggests them, so run the fips-linux playbook from its first step"
            )
        return dict(report["suggested"])

    def _refuse_other_openssl(
        self,
        ctx: RunContext,
        step: PlannedAction,
        paths: FipsPaths,
        before: dict[str, str],
        suggested: dict[str, str],
    ) -> None:
        """Without ors.fips.security_pack_dir the Security Pack folder cannot be told apart:
        any folder of LD_LIBRARY_PATH that holds OpenSSL libraries would stay beside
        <ORS>/fips, which the documents forbid ("instead of")."""
        if ctx.site.ors.fips.security_pack_dir:
            return
        ours = _path_entries(suggested[LD_LIBRARY_PATH])
        others = [e for e in _path_entries(before.get(LD_LIBRARY_PATH)) if e not in ours]
        if not others:
            return
        out = run_command(self.transport(ctx, step), openssl_folders_command(others))
        found = out.splitlines()
        if found:
            raise VerificationFailed(
                f"LD_LIBRARY_PATH in {paths.env_file} on {paths.host} lists {', '.join(found)}, "
                "which holds OpenSSL libraries (the Genesys Security Pack?); <ORS>/fips must "
                "take its place: name it in ors.fips.security_pack_dir"
            )

    def _pending(
        self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]
    ) -> dict[str, str | None]:
        paths = self.paths(ctx, intent)
        current = parse_env_file(self._current(ctx, step, paths))
        wanted = self.desired(ctx.site, paths, intent["mode"], current, intent["suggested"])
        return {k: v for k, v in wanted.items() if current.get(k) != v}

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        return not intent["applies"] or not self._pending(ctx, step, intent)

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        if not intent["applies"]:
            return {"skipped": True}
        paths = self.paths(ctx, intent)
        assert paths.env_file
        text = self._current(ctx, step, paths)
        changes = self._pending(ctx, step, intent)
        if changes:
            backup = paths.env_file + ctx.site.options_backend.backup_suffix
            try:
                self.transport(ctx, step).write_file_atomic(
                    paths.env_file,
                    update_env_file(text, changes).encode("utf-8"),
                    backup_path=backup if text else None,
                )
            except OSError as exc:
                raise VerificationFailed(
                    f"cannot write LCA's environment file {paths.env_file} on {paths.host}: "
                    f"{exc.strerror or exc}; check ors.fips.lca_env_file and its folder"
                ) from None
        return {"app": paths.app, "env_file": paths.env_file, "changed": changes}

    def verify(
        self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]
    ) -> dict[str, Any]:
        if intent["applies"] and self._pending(ctx, step, intent):
            raise VerificationFailed(f"{intent['env_file']} does not read back as written")
        return {}


class WindowsInstall(FipsAction):
    """fips-windows.1: `openssl fipsinstall` with the ORS-bundled openssl.exe and fips.dll."""

    name = "fips.windows_install"
    platform = "windows"
    changes_world = True

    @staticmethod
    def script(paths: FipsPaths) -> str:
        assert paths.config_dir
        module = windows_join(paths.modules_dir, "fips.dll")
        return ps_script(
            f"New-Item -ItemType Directory -Force -Path {ps_quote(paths.config_dir)} | Out-Null",
            f"& {ps_quote(paths.openssl)} fipsinstall -out {ps_quote(paths.fipsmodule)} "
            f"-module {ps_quote(module)}",
            "if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }",
        )

    @staticmethod
    def digest_script(path: str) -> str:
        return ps_script(
            f"$path = {ps_quote(path)}",
            "if (Test-Path -LiteralPath $path) "
            "{ (Get-FileHash -Algorithm SHA256 -LiteralPath $path).Hash } else { 'absent' }",
        )

    def describe(self, paths: FipsPaths, step: PlannedAction, view: PlanningView) -> Preview:
        return Preview(
            f"create {paths.fipsmodule} with the openssl.exe and fips.dll bundled with {paths.app}",
            [f"[{paths.host}] {self.script(paths)}"],
        )

    def _digest(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> str:
        script = self.digest_script(self.paths(ctx, intent).fipsmodule)
        return run_powershell(self.transport(ctx, step), script).strip()

    def prepare(self, ctx: RunContext, step: PlannedAction) -> dict[str, Any]:
        intent = super().prepare(ctx, step)
        if intent["applies"]:
            intent["fipsmodule_before"] = self._digest(ctx, step, intent)
        return intent

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        """Done when fipsmodule.cnf was (re)written since the intent; running again is harmless."""
        if not intent["applies"]:
            return True
        return self._digest(ctx, step, intent) not in ("absent", intent["fipsmodule_before"])

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        if not intent["applies"]:
            return {"skipped": True}
        paths = self.paths(ctx, intent)
        out = run_powershell(self.transport(ctx, step), self.script(paths))
        return {"app": paths.app, "fipsmodule": paths.fipsmodule, "output": out.strip()[-2000:]}

    def verify(
        self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]
    ) -> dict[str, Any]:
        if intent["applies"] and self._digest(ctx, step, intent) == "absent":
            raise VerificationFailed(f"{self.paths(ctx, intent).fipsmodule} was not created")
        return {}


class WindowsOpensslCnf(FipsAction):
    """fips-windows.2: openssl.cnf that includes fipsmodule.cnf (forward slashes), written to a
    temporary file and moved over the old one, which is kept as a backup."""

    name = "fips.windows_openssl_cnf"
    platform = "windows"
    changes_world = True

    @staticmethod
    def script(paths: FipsPaths, backup_suffix: str) -> str:
        content = openssl_cnf(paths.fipsmodule)
        return ps_script(
            f"$path = {ps_quote(paths.openssl_cnf)}",
            f"$content = @'\n{content}'@",
            "if (Test-Path -LiteralPath $path) { Copy-Item -LiteralPath $path "
            f"-Destination ($path + {ps_quote(backup_suffix)}) -Force }}",
            "[IO.File]::WriteAllText($path + '.tmp', $content)",
            "Move-Item -LiteralPath ($path + '.tmp') -Destination $path -Force",
        )

    @staticmethod
    def read_script(path: str) -> str:
        return ps_script(
            f"$path = {ps_quote(path)}",
            "if (Test-Path -LiteralPath $path) { [IO.File]::ReadAllText($path) }",
        )

    def describe(self, paths: FipsPaths, step: PlannedAction, view: PlanningView) -> Preview:
        suffix = view.site.options_backend.backup_suffix
        return Preview(
            f"write {paths.openssl_cnf} including {paths.fipsmodule.replace(chr(92), '/')}",
            [f"[{paths.host}] {self.script(paths, suffix)}"],
        )

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        if not intent["applies"]:
            return True
        paths = self.paths(ctx, intent)
        out = run_powershell(self.transport(ctx, step), self.read_script(paths.openssl_cnf))
        return out.replace("\r\n", "\n").strip() == openssl_cnf(paths.fipsmodule).strip()

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        if not intent["applies"]:
            return {"skipped": True}
        paths = self.paths(ctx, intent)
        suffix = ctx.site.options_backend.backup_suffix
        run_powershell(self.transport(ctx, step), self.script(paths, suffix))
        return {"app": paths.app, "openssl_cnf": paths.openssl_cnf}

    def verify(
        self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]
    ) -> dict[str, Any]:
        if not self.check(ctx, step, intent):
            raise VerificationFailed(
                f"{self.paths(ctx, intent).openssl_cnf} does not read back as written"
            )
        return {}


class WindowsEnvironment(FipsAction):
    """fips-windows.3 (OPENSSL_CONF) and fips-windows.4 (OPENSSL_MODULES), machine-wide so that
    LCA and the ORS it starts see them."""

    name = "fips.windows_environment"
    platform = "windows"
    changes_world = True

    @classmethod
    def check_spec(cls, scope: str, spec: Any) -> str | None:
        problem = super().check_spec(scope, spec)
        if problem is None and spec.with_.get("variable") not in (OPENSSL_CONF, OPENSSL_MODULES):
            return f"action '{cls.name}' needs 'with: {{variable: OPENSSL_CONF|OPENSSL_MODULES}}'"
        return problem

    @staticmethod
    def value(paths: FipsPaths, variable: str) -> str:
        return paths.openssl_cnf if variable == OPENSSL_CONF else paths.modules_dir

    @staticmethod
    def script(variable: str, value: str) -> str:
        return ps_script(
            "[Environment]::SetEnvironmentVariable("
            f"{ps_quote(variable)}, {ps_quote(value)}, 'Machine')"
        )

    @staticmethod
    def read_script(variable: str) -> str:
        return ps_script(f"[Environment]::GetEnvironmentVariable({ps_quote(variable)}, 'Machine')")

    def describe(self, paths: FipsPaths, step: PlannedAction, view: PlanningView) -> Preview:
        variable = step.args["variable"]
        shared_setting_conflict(view.site, paths.app, "the machine environment", variable)
        value = self.value(paths, variable)
        return Preview(
            f"set {variable}={value} machine-wide on {paths.host}",
            [f"[{paths.host}] {self.script(variable, value)}"],
        )

    def prepare(self, ctx: RunContext, step: PlannedAction) -> dict[str, Any]:
        intent = super().prepare(ctx, step)
        intent["variable"] = step.args["variable"]
        if intent["applies"]:
            shared_setting_conflict(
                ctx.site, intent["app"], "the machine environment", intent["variable"]
            )
            intent["before"] = self._read(ctx, step, intent["variable"])
        return intent

    def _read(self, ctx: RunContext, step: PlannedAction, variable: str) -> str:
        return run_powershell(self.transport(ctx, step), self.read_script(variable)).strip()

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        if not intent["applies"]:
            return True
        wanted = self.value(self.paths(ctx, intent), intent["variable"])
        return self._read(ctx, step, intent["variable"]) == wanted

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        if not intent["applies"]:
            return {"skipped": True}
        value = self.value(self.paths(ctx, intent), intent["variable"])
        run_powershell(self.transport(ctx, step), self.script(intent["variable"], value))
        return {"app": intent["app"], "variable": intent["variable"], "value": value}

    def verify(
        self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]
    ) -> dict[str, Any]:
        if not self.check(ctx, step, intent):
            raise VerificationFailed(
                f"{intent['variable']} does not read back as written on {step.target.host}"
            )
        return {}


class VerifyProviders(FipsAction):
    """`openssl list -providers` with the environment ORS will get (fips-windows.5; on Linux the
    same check, reading LCA's environment file): the fips provider must be active."""

    name = "fips.verify_providers"

    @staticmethod
    def linux_command(paths: FipsPaths) -> str:
        assert paths.env_file
        return (
            f"set -a && . {shlex.quote(paths.env_file)} && set +a && "
            f"{shlex.quote(paths.openssl)} list -providers"
        )

    @staticmethod
    def windows_script(paths: FipsPaths) -> str:
        return ps_script(
            *(
                f"$env:{name} = [Environment]::GetEnvironmentVariable('{name}', 'Machine')"
                for name in (OPENSSL_CONF, OPENSSL_MODULES)
            ),
            f"& {ps_quote(paths.openssl)} list -providers",
            "exit $LASTEXITCODE",
        )

    def describe(self, paths: FipsPaths, step: PlannedAction, view: PlanningView) -> Preview:
        if not view.site.ors.fips.verify_providers:
            return Preview("skipped: ors.fips.verify_providers is false")
        command = (
            self.linux_command(paths) if paths.platform == "linux" else self.windows_script(paths)
        )
        return Preview(
            f"check on {paths.host} that OpenSSL, with the environment ORS will get, lists the "
            "fips provider as active",
            [f"[{paths.host}] {command}"],
        )

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        if not intent["applies"] or not ctx.site.ors.fips.verify_providers:
            return {"skipped": True}
        paths = self.paths(ctx, intent)
        transport = self.transport(ctx, step)
        if paths.platform == "linux":
            out = run_command(transport, self.linux_command(paths))
        else:
            out = run_powershell(transport, self.windows_script(paths))
        providers = parse_providers(out)
        if providers.get("fips") != "active":
            where = paths.env_file if paths.platform == "linux" else "the machine environment"
            raise VerificationFailed(
                f"OpenSSL on {paths.host} does not list the fips provider as active for "
                f"{paths.app} (providers: {providers or 'none'}); check OPENSSL_CONF and "
                f"OPENSSL_MODULES in {where} and the openssl.cnf they name"
            )
        return {"app": paths.app, "providers": providers}


class SetFipsOption(FipsAction):
    """`[scxml] fips-enabled`: true for FIPS mode, false for TLS without FIPS."""

    name = "fips.set_option"
    changes_world = True

    @classmethod
    def check_spec(cls, scope: str, spec: Any) -> str | None:
        problem = super().check_spec(scope, spec)
        if problem is None and spec.with_.get("value") not in ("true", "false"):
            return f"action '{cls.name}' needs 'with: {{value: \"true\"|\"false\"}}'"
        return problem

    def preview(self, step: PlannedAction, view: PlanningView) -> Preview:
        if not self.applies(view.site, step):
            return self.skipped(step)
        assert step.target.app
        old = view.option(step.target.app, SCXML, FIPS_ENABLED)
        new = str(step.args["value"])
        view.set_option(step.target.app, SCXML, FIPS_ENABLED, new)
        row = {
            "section": SCXML,
            "option": FIPS_ENABLED,
            "old": old,
            "old_known": view.options_known(step.target.app),
            "new": new,
            "source": "documents",
        }
        backend = view.site.options_backend.kind
        return Preview(
            f"set [scxml] fips-enabled={new} on {step.target.app} via the {backend} backend",
            [],
            [row],
        )

    def prepare(self, ctx: RunContext, step: PlannedAction) -> dict[str, Any]:
        intent = super().prepare(ctx, step)
        if intent["applies"]:
            ctx.capture_originals(intent["app"])
            intent["before"] = ctx.option_store(intent["app"]).read().get((SCXML, FIPS_ENABLED))
        return intent

    def check(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> bool:
        if not intent["applies"]:
            return True
        current = ctx.option_store(intent["app"]).read().get((SCXML, FIPS_ENABLED))
        return current == str(step.args["value"])

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        if not intent["applies"]:
            return {"skipped": True}
        value = str(step.args["value"])
        ctx.option_store(intent["app"]).write([(OptionChange(SCXML, FIPS_ENABLED, value), value)])
        return {
            "app": intent["app"],
            "changes": [
                {"section": SCXML, "option": FIPS_ENABLED, "old": intent["before"], "new": value}
            ],
        }

    def verify(
        self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]
    ) -> dict[str, Any]:
        if not self.check(ctx, step, intent):
            raise VerificationFailed(
                f"[scxml] fips-enabled of {intent['app']} does not read back as written"
            )
        return {}


class RestartLca(FipsAction):
    """LCA passes its own environment to the ORS it starts, and reads it at its start, so it
    is restarted before ORS is; but restarting LCA may stop what it started (systemd's default
    `KillMode=control-group`). So it is part of each pair's standard restart: on the backup's
    host just before the backup restarts, and after the switchover on the new backup's host,
    and it is refused while any ORS application of the site on that host is primary. With
    `ors.fips.lca_restart` the tool runs it; otherwise the operator does it and confirms.
    Nothing tells afterwards whether LCA restarted, so an interrupted restart is done again,
    which is harmless on a host without a primary."""

    name = "fips.lca_restart"
    scopes = frozenset({"ha_pair"})
    takes_role = True
    needs_role = True
    changes_world = True

    @classmethod
    def check_spec(cls, scope: str, spec: Any) -> str | None:
        problem = super().check_spec(scope, spec)
        if problem is None and spec.role != "backup":
            return f"action '{cls.name}' restarts LCA on the backup's host only: 'role: backup'"
        return problem

    def _command(self, site: Site, paths: FipsPaths) -> str | None:
        template = site.ors.fips.lca_restart
        if template is None:
            return None
        values = {"host": paths.host, "env_file": paths.env_file or ""}
        if paths.platform == "windows":
            return template.format_map({k: ps_quote(v) for k, v in values.items()})
        return template.format_map({k: shlex.quote(v) for k, v in values.items()})

    def _instruction(self, paths: FipsPaths) -> str:
        where = (
            f"the environment file {paths.env_file}"
            if paths.platform == "linux"
            else "the machine environment (a Windows service sees new machine variables only "
            "once the Service Control Manager has them: restart the host if LCA does not)"
        )
        return (
            f"Restart Local Control Agent on host {paths.host} so that it reads {where}. No ORS "
            f"primary runs there now; {paths.app} (backup) restarts next and picks the variables "
            "up."
        )

    @staticmethod
    def _on_host(site: Site, host: str) -> list[tuple[str, str]]:
        """(HA pair, application) of every ORS application of the site on `host`."""
        return [(pair.name, app.name) for _, pair, app in site.apps() if app.host == host]

    def describe(self, paths: FipsPaths, step: PlannedAction, view: PlanningView) -> Preview:
        expected = [
            f"{app} (primary of {pair})"
            for pair, app in self._on_host(view.site, paths.host)
            if view.primary[pair] == app
        ]
        warning = (
            f"; the plan expects {', '.join(expected)} on that host then: the run stops here "
            "unless it is switched over first"
            if expected
            else ""
        )
        command = self._command(view.site, paths)
        lead = (
            f"restart LCA on {paths.host}, the host of backup {paths.app} (resolved at run time), "
            "so that the ORS it starts reads the new environment; refused while an ORS "
            f"application on {paths.host} is primary{warning}"
        )
        if command is None:
            return Preview(f"operator step, confirmed by a person: {lead}")
        shown = ps_script(command) if paths.platform == "windows" else command
        return Preview(lead, [f"[{paths.host}] {shown}"])

    def prepare(self, ctx: RunContext, step: PlannedAction) -> dict[str, Any]:
        from ors_migrate.actions.service import Restart

        assert step.target.ha_pair
        app = Restart._member(ctx, step.target.ha_pair, "backup")  # a backup LCA stopped counts
        host = ctx.site.find_app(app)[2].host
        applies = ctx.site.hosts[host].platform == self.platform_of(step)
        return {"app": app, "host": host, "applies": applies}

    def _roles_on_host(self, ctx: RunContext, host: str) -> tuple[dict[str, str], list[str]]:
        """The role of every ORS application on `host`, and those that are primary."""
        roles = {app: ctx.services.status(app).role for _, app in self._on_host(ctx.site, host)}
        return roles, [app for app, role in roles.items() if role == "primary"]

    def _refuse_primary_on_host(self, ctx: RunContext, host: str) -> dict[str, str]:
        roles, primaries = self._roles_on_host(ctx, host)
        if primaries:
            raise VerificationFailed(
                f"LCA is not restarted on host {host}: {', '.join(primaries)} runs there as "
                "primary, and restarting LCA may stop the processes it started (systemd's "
                "default KillMode=control-group). Switch that HA pair over so that no primary "
                f"runs on {host}, then resume"
            )
        return roles

    def _recheck_after_confirmation(self, ctx: RunContext, host: str) -> dict[str, str]:
        """The operator may confirm minutes after the check before the prompt: a primary that
        came to the host meanwhile (a switchover elsewhere) may have been stopped with LCA."""
        roles, primaries = self._roles_on_host(ctx, host)
        if primaries:
            raise VerificationFailed(
                f"the LCA restart on host {host} was confirmed, but {', '.join(primaries)} now "
                "runs there as primary (it became primary while the step waited); check that it "
                "still serves and that LCA did not stop it, then resume"
            )
        return roles

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        if not intent["applies"]:
            return {"skipped": True}
        paths = self.paths(ctx, intent)
        roles = self._refuse_primary_on_host(ctx, paths.host)
        command = self._command(ctx.site, paths)
        if command is None:
            ctx.ui.operator_step(self._instruction(paths), who=ctx.operator)
            after = self._recheck_after_confirmation(ctx, paths.host)
            return {"host": paths.host, "roles_on_host": after, "confirmed_by": ctx.operator}
        transport = ctx.pool.for_host(paths.host)  # the host of the backup of now
        if paths.platform == "windows":
            run_powershell(transport, command)
        else:
            run_command(transport, command)
        return {"host": paths.host, "roles_on_host": roles, "command": command}


class VerifyProcessEnvironment(ModeAction):
    """After the restart, the evidence that counts: the environment of the running ORS process
    itself (Linux: /proc/<pid>/environ; Windows: the process's environment block), never the
    file or machine variables the tool wrote. Mode fips: OPENSSL_CONF and OPENSSL_MODULES as
    written for LCA, LD_LIBRARY_PATH with those folders and without the Security Pack folder;
    mode non-fips: neither OPENSSL_* variable, the Security Pack folder and not <ORS>/fips. The
    process is the one whose id the status command reports, else the one started with
    `-app <application>`."""

    name = "fips.verify_process_environment"

    @staticmethod
    def reader(paths: FipsPaths, pid: int | None) -> str:
        if paths.platform == "windows":
            return process_environment_script(paths.app, pid)
        return process_environment_command(paths.app, pid)

    def describe(self, paths: FipsPaths, step: PlannedAction, view: PlanningView) -> Preview:
        source = "/proc/<pid>/environ" if paths.platform == "linux" else "its environment block"
        wanted = (
            "OPENSSL_CONF, OPENSSL_MODULES and LD_LIBRARY_PATH as written for LCA, without the "
            "Security Pack folder"
            if step.args["mode"] == "fips"
            else "no OPENSSL_CONF or OPENSSL_MODULES, the Security Pack folder and not <ORS>/fips "
            "on LD_LIBRARY_PATH"
        )
        shown = self.reader(paths, None)
        return Preview(
            f"read the environment of the running ORS process of {paths.app} on {paths.host} "
            f"({source}; the pid the status command reports, else the process started with "
            f"-app {paths.app}) and check {wanted}",
            [f"[{paths.host}] {shown}"],
        )

    def _expected(
        self, ctx: RunContext, step: PlannedAction, paths: FipsPaths, mode: str
    ) -> tuple[dict[str, str | None], list[str], list[str]]:
        """Variables with their values (None: must be absent), LD_LIBRARY_PATH folders that
        must be there, and folders that must not."""
        pack = ctx.site.ors.fips.security_pack_dir
        if mode == "non-fips":
            assert pack, "fips.linux_environment refused a site without security_pack_dir"
            return {OPENSSL_CONF: None, OPENSSL_MODULES: None}, [pack], [paths.modules_dir]
        if paths.platform == "windows":
            values = {OPENSSL_CONF: paths.openssl_cnf, OPENSSL_MODULES: paths.modules_dir}
            return dict(values), [], []
        assert paths.env_file
        data = self.transport(ctx, step).read_file(paths.env_file)
        written = parse_env_file("" if data is None else data.decode("utf-8", "replace"))
        missing = [k for k in FIPS_VARIABLES if not written.get(k)]
        if missing:
            raise VerificationFailed(
                f"LCA's environment file {paths.env_file} on {paths.host} has no "
                f"{', '.join(missing)}: nothing to compare the running ORS of {paths.app} with"
            )
        values = {k: written[k] for k in (OPENSSL_CONF, OPENSSL_MODULES)}
        return dict(values), _path_entries(written[LD_LIBRARY_PATH]), [pack] if pack else []

    @staticmethod
    def problems(
        env: dict[str, str],
        platform: str,
        expected: tuple[dict[str, str | None], list[str], list[str]],
    ) -> list[str]:
        """What the running process's environment lacks or has wrongly (Windows: names and
        paths compared without case)."""

        def norm(text: str) -> str:
            return text.lower() if platform == "windows" else text

        seen = {norm(k): v for k, v in env.items()}
        values, wanted, unwanted = expected
        found: list[str] = []
        for name, value in values.items():
            got = seen.get(norm(name))
            if value is None and got is not None:
                found.append(f"{name}={got} is defined")
            elif value is not None and (got is None or norm(got) != norm(value)):
                found.append(f"{name} is {'not set' if got is None else repr(got)}, not {value!r}")
        folders = [norm(e) for e in (seen.get(norm(LD_LIBRARY_PATH)) or "").split(":") if e]
        found += [f"{LD_LIBRARY_PATH} lacks {e}" for e in wanted if norm(e) not in folders]
        found += [f"{LD_LIBRARY_PATH} has {e}" for e in unwanted if norm(e) in folders]
        return found

    def apply(self, ctx: RunContext, step: PlannedAction, intent: dict[str, Any]) -> dict[str, Any]:
        if not intent["applies"]:
            return {"skipped": True}
        paths = self.paths(ctx, intent)
        status = ctx.services.status(paths.app)
        reported = status.details.get("pid")
        pid = int(reported) if isinstance(reported, int | str) and str(reported).isdigit() else None
        transport = self.transport(ctx, step)
        if paths.platform == "windows":
            out = run_powershell(transport, self.reader(paths, pid))
        else:
            out = run_command(transport, self.reader(paths, pid))
        processes = parse_process_environments(out)
        if not processes:
            raise VerificationFailed(
                f"no running ORS process of {paths.app} found on {paths.host} (the status command "
                f"reports {'pid ' + str(pid) if pid else 'no pid'}; no process started with "
                f"-app {paths.app}): its environment cannot be checked"
            )
        expected = self._expected(ctx, step, paths, step.args["mode"])
        seen: dict[str, Any] = {}
        for process, env in processes.items():
            if isinstance(env, str):
                raise VerificationFailed(
                    f"cannot read the environment of {paths.app} (process {process}) on "
                    f"{paths.host}: {env}"
                )
            problems = self.problems(env, paths.platform, expected)
            if problems:
                raise VerificationFailed(
                    f"the running ORS process {process} of {paths.app} on {paths.host}: "
                    + "; ".join(problems)
                    + " (was LCA restarted after its environment changed, and ORS after LCA?)"
                )
            seen[str(process)] = {k: env.get(k) for k in FIPS_VARIABLES}
        return {"app": paths.app, "role": status.role, "processes": seen}


ACTIONS = [
    CheckVersion,
    LinuxInstall,
    LinuxEnvironment,
    WindowsInstall,
    WindowsOpensslCnf,
    WindowsEnvironment,
    VerifyProviders,
    SetFipsOption,
    RestartLca,
    VerifyProcessEnvironment,
]
