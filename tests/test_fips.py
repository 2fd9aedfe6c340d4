"""FIPS mode for ORS as the seed describes it: on Linux run for real against lab hosts whose ORS
installation is a test double (fipsinstall.sh and openssl scripts), on Windows through the exact
PowerShell each step sends to Windows OpenSSH."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import REPO, cli
from ruamel.yaml import YAML

from ors_migrate.actions.fips import (
    RestartLca,
    VerifyProcessEnvironment,
    decode_invocation,
    fips_library_path,
    fipsmodule_location,
    non_fips_library_path,
    openssl_cnf,
    openssl_folders_command,
    parse_env_file,
    parse_fipsinstall_output,
    parse_process_environments,
    parse_providers,
    powershell_invocation,
    process_environment_command,
    process_environment_script,
    ps_quote,
    update_env_file,
)
from ors_migrate.actions.options_file import read_options
from ors_migrate.errors import VerificationFailed
from ors_migrate.lab.layout import LabLayout
from ors_migrate.step import CommandResult
from ors_migrate.ui import Ui

FAKE_INSTALL = Path(__file__).parent / "fixtures" / "fake_ors_install"
WINDOWS_SITE = REPO / "examples" / "site-windows.yaml"
SEED_PROVIDERS = """Providers:
  base
    name: OpenSSL Base Provider
    version: 3.0.10
    status: active
  fips
    name: OpenSSL FIPS Provider
    version: 3.0.10
    status: active
"""
HOSTS = ("lab-a", "lab-b")
PREAMBLE = "$ErrorActionPreference = 'Stop'\n$ProgressPreference = 'SilentlyContinue'\n"


def plan_json(site: Path, playbook: str) -> dict[str, Any]:
    result = cli("plan", str(site), "--playbook", playbook, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def state(plan: dict[str, Any], state_id: str) -> dict[str, Any]:
    return next(s for s in plan["states"] if s["id"] == state_id)


def command_for(plan: dict[str, Any], state_id: str, app: str) -> str:
    action = next(a for a in state(plan, state_id)["actions"] if a["app"] == app)
    (command,) = action["commands"]
    return command


# ----------------------------------------------------------------------------- pure pieces


def test_powershell_literals_keep_spaces_and_double_every_kind_of_single_quote() -> None:
    assert ps_quote(r"C:\GCTI\ORS 8.1.401.11\fips") == r"'C:\GCTI\ORS 8.1.401.11\fips'"
    assert ps_quote("C:\\O'Brien\\ors") == "'C:\\O''Brien\\ors'"
    assert ps_quote("a\u2019b") == "'a\u2019\u2019b'"
    assert ps_quote("$env:PATH") == "'$env:PATH'"


def test_powershell_scripts_travel_encoded_and_decode_to_the_same_text() -> None:
    script = "& 'C:\\GCTI\\ORS 8.1.401.11\\tools\\openssl.exe' list -providers\nexit $LASTEXITCODE"
    command = powershell_invocation(script)
    assert command.startswith("powershell.exe -NoProfile -NonInteractive ")
    assert "'" not in command and " list " not in command
    assert decode_invocation(command) == script


def test_openssl_cnf_is_the_seed_text_with_the_include_in_forward_slashes() -> None:
    assert openssl_cnf(r"C:\GCTI\ORS_FIPS_CFG\fipsmodule.cnf") == (
        "config_diagnostics = 1\n"
        "openssl_conf = openssl_init\n"
        ".include C:/GCTI/ORS_FIPS_CFG/fipsmodule.cnf\n"
        "[openssl_init]\n"
        "providers = provider_sect\n"
        "[provider_sect]\n"
        "fips = fips_sect\n"
        "base = base_sect\n"
        "[base_sect]\n"
        "activate = 1\n"
    )


def test_providers_output_of_the_seed_shows_fips_active() -> None:
    assert parse_providers(SEED_PROVIDERS) == {"base": "active", "fips": "active"}
    assert parse_providers("Providers:\n  default\n    status: active\n") == {"default": "active"}


def test_env_file_edit_keeps_other_lines_replaces_ours_and_is_idempotent() -> None:
    text = (
        "# environment of Local Control Agent\n"
        "GCTI_LOGS=/var/log/genesys\n"
        "export OPENSSL_CONF=/old/openssl.cnf\n"
        "OPENSSL_CONF=/older/openssl.cnf\n"
    )
    changes = {"OPENSSL_CONF": "/opt/ors/openssl.cnf", "OPENSSL_MODULES": "/opt/ors/fips"}
    edited = update_env_file(text, changes)
    assert edited == (
        "# environment of Local Control Agent\n"
        "GCTI_LOGS=/var/log/genesys\n"
        'OPENSSL_CONF="/opt/ors/openssl.cnf"\n'
        'OPENSSL_MODULES="/opt/ors/fips"\n'
    )
    assert update_env_file(edited, changes) == edited
    removed = update_env_file(edited, {"OPENSSL_CONF": None, "OPENSSL_MODULES": None})
    assert parse_env_file(removed) == {"GCTI_LOGS": "/var/log/genesys"}


def test_ld_library_path_puts_the_fips_folders_in_place_of_the_security_pack_and_back() -> None:
    ors, pack = "/opt/ors", "/opt/secpack/lib"
    suggested = ["/opt/ors/fips", "/opt/ors/lib64"]
    fips = fips_library_path(f"/usr/local/lib:{pack}:/opt/x", suggested, pack)
    assert fips == "/usr/local/lib:/opt/ors/fips:/opt/ors/lib64:/opt/x"
    assert fips_library_path(fips, suggested, pack) == fips
    assert fips_library_path("/usr/local/lib", suggested, None) == (
        "/opt/ors/fips:/opt/ors/lib64:/usr/local/lib"
    )
    plain = non_fips_library_path(fips, ors, pack)
    assert plain == "/usr/local/lib:/opt/secpack/lib:/opt/ors/lib64:/opt/x"
    assert non_fips_library_path(plain, ors, pack) == plain


def test_the_variables_and_fipsmodule_cnf_are_read_from_what_fipsinstall_sh_reports() -> None:
    output = (
        "INSTALL PASSED\n"
        "Set before starting ORS:\n"
        "  export LD_LIBRARY_PATH=/srv/ors/fips:/srv/ors/lib64:$LD_LIBRARY_PATH\n"
        '  OPENSSL_MODULES="/srv/ors/fips"\n'
        "  export OPENSSL_CONF=/srv/ors/ssl/openssl.cnf;\n"
    )
    assert parse_fipsinstall_output(output) == {
        "LD_LIBRARY_PATH": "/srv/ors/fips:/srv/ors/lib64",
        "OPENSSL_MODULES": "/srv/ors/fips",
        "OPENSSL_CONF": "/srv/ors/ssl/openssl.cnf",
    }
    assert parse_fipsinstall_output("INSTALL PASSED\n") == {}
    cnf = "config_diagnostics = 1\n.include /srv/ors/ssl/fipsmodule.cnf\n[openssl_init]\n"
    assert fipsmodule_location(output, cnf) == "/srv/ors/ssl/fipsmodule.cnf"
    named = output + "wrote /var/lib/ORS 8.1/fipsmodule.cnf\n"
    assert fipsmodule_location(named, cnf) == "/var/lib/ORS 8.1/fipsmodule.cnf"
    assert fipsmodule_location("", ".include /opt/ORS 8.1/fipsmodule.cnf\n") == (
        "/opt/ORS 8.1/fipsmodule.cnf"
    )
    assert fipsmodule_location(output, "[openssl_init]\n") is None


def test_folders_with_openssl_libraries_are_found_among_ld_library_path_entries(
    tmp_path: Path,
) -> None:
    """Without ors.fips.security_pack_dir, a folder of LD_LIBRARY_PATH that holds OpenSSL
    libraries (the Security Pack, most likely) stops the run instead of staying beside
    <ORS>/fips: this is how such folders are found on the host."""
    pack, plain, spaced = tmp_path / "secpack", tmp_path / "plain", tmp_path / "with space"
    for folder in (pack, plain, spaced):
        folder.mkdir()
    (pack / "libssl.so.1.1").write_text("")
    (spaced / "libcrypto.so.3").write_text("")
    (plain / "libz.so.1").write_text("")
    folders = [str(pack), str(plain), str(spaced), str(tmp_path / "missing")]
    done = subprocess.run(
        ["sh", "-c", openssl_folders_command(folders)], capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines() == [str(pack), str(spaced)]


def test_a_running_process_without_the_fips_variables_fails_the_check_and_with_them_passes(
    tmp_path: Path,
) -> None:
    """Real processes started the way LCA starts ORS (`-app NAME`), one with the environment of
    FIPS mode and one without: the check reads /proc/<pid>/environ of each."""
    ors, pack = "/opt/ors", "/opt/secpack/lib"
    wanted = {"OPENSSL_CONF": f"{ors}/openssl.cnf", "OPENSSL_MODULES": f"{ors}/fips"}
    expected = (dict(wanted), [f"{ors}/fips", f"{ors}/lib64"], [pack])
    good = {**wanted, "LD_LIBRARY_PATH": f"{ors}/fips:{ors}/lib64:/usr/lib"}
    stale = {"LD_LIBRARY_PATH": f"{pack}:/usr/lib"}
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)", "-host", "cfg", "-app"]
    children = {
        name: subprocess.Popen([*sleeper, name], env=env, cwd=tmp_path)
        for name, env in (("ORS 1A", good), ("ORS 1", stale))
    }
    try:
        seen = {}
        for name, child in children.items():
            for pid in (None, child.pid):  # found by its -app argument, or by the reported pid
                out = subprocess.run(
                    ["sh", "-c", process_environment_command(name, pid)],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                envs = parse_process_environments(out)
                assert list(envs) == [child.pid], (name, pid, out[:300])
                seen[name] = envs[child.pid]
    finally:
        for child in children.values():
            child.kill()
            child.wait()
    assert VerifyProcessEnvironment.problems(seen["ORS 1A"], "linux", expected) == []
    assert VerifyProcessEnvironment.problems(seen["ORS 1"], "linux", expected) == [
        "OPENSSL_CONF is not set, not '/opt/ors/openssl.cnf'",
        "OPENSSL_MODULES is not set, not '/opt/ors/fips'",
        "LD_LIBRARY_PATH lacks /opt/ors/fips",
        "LD_LIBRARY_PATH lacks /opt/ors/lib64",
        "LD_LIBRARY_PATH has /opt/secpack/lib",
    ]


def test_windows_process_environment_is_read_from_the_process_and_parsed() -> None:
    script = process_environment_script("ORS_APAC_1A", None)
    assert "[OrsMigrateProcessEnvironment]::Of([int]$id)" in script
    assert "[regex]::Escape('ORS_APAC_1A')" in script and "Win32_Process" in script
    assert "$ids = @(4242)" in process_environment_script("ORS_APAC_1A", 4242)
    output = (
        "@@pid 4242\r\n=C:=C:\\GCTI\r\nPath=C:\\Windows\r\n"
        "Openssl_Conf=C:\\GCTI\\ORS_FIPS_CFG\\openssl.cnf\r\n"
        "@@unreadable 4343 Access is denied\r\n"
    )
    envs = parse_process_environments(output)
    assert envs == {
        4242: {"Path": "C:\\Windows", "Openssl_Conf": "C:\\GCTI\\ORS_FIPS_CFG\\openssl.cnf"},
        4343: "Access is denied",
    }
    env = envs[4242]
    assert isinstance(env, dict)
    expected = (
        {
            "OPENSSL_CONF": "c:\\gcti\\ors_fips_cfg\\OPENSSL.cnf",
            "OPENSSL_MODULES": "C:\\GCTI\\ORS 8.1.401.11\\fips",
        },
        [],
        [],
    )
    assert VerifyProcessEnvironment.problems(env, "windows", expected) == [
        "OPENSSL_MODULES is not set, not 'C:\\\\GCTI\\\\ORS 8.1.401.11\\\\fips'"
    ]


# ----------------------------------------------------------------------------- Windows


def test_windows_plan_covers_fips_windows_1_to_6_and_starts_ors_only_after() -> None:
    plan = plan_json(WINDOWS_SITE, "fips-windows")
    steps = [s["seed_step"] for s in plan["states"]]
    assert {f"fips-windows.{n}" for n in range(1, 7)} <= set(steps)
    restart = steps.index("fips-windows.6")
    assert all(steps.index(f"fips-windows.{n}") < restart for n in range(1, 6))
    assert state(plan, "standard-restart")["seed_step"] == "fips-windows.6"
    assert state(plan, "check-version")["seed_step"] is None


def test_windows_fipsinstall_uses_the_bundled_openssl_and_fips_dll_quoted_for_spaces() -> None:
    plan = plan_json(WINDOWS_SITE, "fips-windows")
    assert command_for(plan, "fipsinstall", "ORS_APAC_1A") == (
        "[ors-win-01] " + PREAMBLE + "New-Item -ItemType Directory -Force -Path "
        "'C:\\GCTI\\ORS_FIPS_CFG' | Out-Null\n"
        "& 'C:\\GCTI\\ORS 8.1.401.11\\tools\\openssl.exe' fipsinstall "
        "-out 'C:\\GCTI\\ORS_FIPS_CFG\\fipsmodule.cnf' "
        "-module 'C:\\GCTI\\ORS 8.1.401.11\\fips\\fips.dll'\n"
        "if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }"
    )


def test_windows_openssl_cnf_is_written_with_forward_slashes_and_a_backup() -> None:
    plan = plan_json(WINDOWS_SITE, "fips-windows")
    script = command_for(plan, "write-openssl-cnf", "ORS_APAC_1B")
    assert script.startswith(
        "[ors-win-02] " + PREAMBLE + "$path = 'C:\\GCTI\\ORS_FIPS_CFG\\openssl.cnf'\n"
    )
    body = re.search(r"@'\n(.*?)'@", script, re.S)
    assert body is not None
    assert body.group(1) == openssl_cnf("C:\\GCTI\\ORS_FIPS_CFG\\fipsmodule.cnf")
    assert ".include C:/GCTI/ORS_FIPS_CFG/fipsmodule.cnf\n" in body.group(1)
    assert "Copy-Item -LiteralPath $path -Destination ($path + '.ors-migrate.bak')" in script
    assert script.endswith("Move-Item -LiteralPath ($path + '.tmp') -Destination $path -Force")


def test_windows_variables_are_set_machine_wide() -> None:
    plan = plan_json(WINDOWS_SITE, "fips-windows")
    assert command_for(plan, "set-openssl-conf", "ORS_APAC_1A") == (
        "[ors-win-01] " + PREAMBLE + "[Environment]::SetEnvironmentVariable("
        "'OPENSSL_CONF', 'C:\\GCTI\\ORS_FIPS_CFG\\openssl.cnf', 'Machine')"
    )
    assert command_for(plan, "set-openssl-modules", "ORS_APAC_1A") == (
        "[ors-win-01] " + PREAMBLE + "[Environment]::SetEnvironmentVariable("
        "'OPENSSL_MODULES', 'C:\\GCTI\\ORS 8.1.401.11\\fips', 'Machine')"
    )
    providers = command_for(plan, "verify-providers", "ORS_APAC_1A")
    assert "& 'C:\\GCTI\\ORS 8.1.401.11\\tools\\openssl.exe' list -providers" in providers
    fips_option = state(plan, "set-fips-enabled")["actions"][0]["option_changes"]
    assert fips_option == [
        {
            "section": "scxml",
            "option": "fips-enabled",
            "old": None,
            "old_known": False,
            "new": "true",
            "source": "documents",
        }
    ]


class FakeWindowsHost:
    """A Windows host as seen through SSH: it runs the PowerShell the tool sends (recognising the
    scripts of this module and the site's service commands), keeps files and machine variables,
    and plays the Management Layer for the ORS applications on it."""

    platform = "windows"

    def __init__(self, name: str, world: dict[str, Any]) -> None:
        self.name = name
        self.world = world

    def _ok(self, command: str, stdout: str = "", code: int = 0) -> CommandResult:
        return CommandResult(self.name, command, code, stdout, "", 0.0)

    def run(
        self,
        command: str,
        *,
        stdin: str | None = None,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        self.world["log"].append((self.name, command))
        script = decode_invocation(command)
        if script is None:
            return self._service(command)
        result = self._powershell(command, script)
        if self.world.get("kill_after") and self.world["kill_after"] in script:
            self.world["kill_after"] = None
            raise KeyboardInterrupt
        return result

    def _powershell(self, command: str, script: str) -> CommandResult:
        machine = self.world["env"].setdefault(self.name, {})
        files = self.world["files"]
        if "OrsMigrateProcessEnvironment" in script:
            return self._ok(command, self._process_environment(script))
        if script.startswith("Restart-Service"):
            self._restart_lca(machine)
        elif "fipsinstall" in script:
            out = re.search(r"-out '([^']+)'", script)
            assert out is not None
            files[(self.name, out.group(1))] = "[fips_sect]\nactivate = 1\n"
        elif "Move-Item" in script:
            path = re.search(r"\$path = '([^']+)'", script)
            body = re.search(r"@'\n(.*?)'@", script, re.S)
            assert path and body
            files[(self.name, path.group(1))] = body.group(1).rstrip("\n")
        elif "ReadAllText" in script:
            path = re.search(r"\$path = '([^']+)'", script)
            assert path
            return self._ok(command, files.get((self.name, path.group(1)), ""))
        elif "Get-FileHash" in script:
            path = re.search(r"\$path = '([^']+)'", script)
            assert path
            text = files.get((self.name, path.group(1)))
            return self._ok(command, "absent" if text is None else f"{hash(text):X}")
        elif "SetEnvironmentVariable" in script:
            name, value = re.findall(r"'([^']*)'", script.split("SetEnvironmentVariable(")[1])[:2]
            machine[name] = value
        elif "list -providers" in script:
            active = machine.get("OPENSSL_CONF") and machine.get("OPENSSL_MODULES")
            return self._ok(command, SEED_PROVIDERS if active else "Providers:\n  default\n")
        elif "GetEnvironmentVariable" in script:
            name = re.findall(r"GetEnvironmentVariable\('([^']+)'", script)[0]
            return self._ok(command, machine.get(name, "") + "\r\n")
        return self._ok(command)

    def _restart_lca(self, machine: dict[str, str]) -> None:
        """LCA restarts: the roles on this host at that moment are recorded, and LCA takes the
        machine environment (unless the world says it does not), which the ORS it starts next
        inherits."""
        on_host = {
            a: r for a, r in self.world["roles"].items() if self.world["hosts"][a] == self.name
        }
        self.world["lca_restarts"].append((self.name, on_host))
        if self.world.get("lca_reads_env", True):
            self.world["lca_env"][self.name] = dict(machine)

    def _process_environment(self, script: str) -> str:
        name = re.findall(r"\[regex\]::Escape\('([^']+)'\)", script)[0]
        if self.world["roles"][name] == "down":
            return ""
        env = {"Path": "C:\\Windows", **self.world["process_env"].get(name, {})}
        lines = [f"@@pid {1000 + sorted(self.world['roles']).index(name)}"]
        return "\r\n".join(lines + [f"{k}={v}" for k, v in env.items()]) + "\r\n"

    def _service(self, command: str) -> CommandResult:
        roles = self.world["roles"]
        words = command.split()
        app = words[-1]
        if "ors-version" in command:
            return self._ok(command, self.world["version"] + "\n")
        if "ors-sessions" in command:
            return self._ok(command, "12\n")
        if "ors-role" in command:  # a status that reports counters: new sessions observable
            self.world["created"] = self.world.get("created", 0) + 1
            status = {"role": roles[app], "created": self.world["created"]}
            return self._ok(command, json.dumps(status) + "\n")
        if "-stop" in words:
            roles[app] = "down"
        elif "-start" in words:
            roles[app] = "backup"
            self.world["started"].append(app)
            self.world["process_env"][app] = dict(self.world["lca_env"].get(self.name, {}))
        elif "-switchover" in words:
            pair = self.world["pairs"][app]
            for member in pair:
                roles[member] = "primary" if roles[member] == "backup" else "backup"
        return self._ok(command)

    def read_file(self, path: str) -> bytes | None:
        text = self.world["files"].get((self.name, path))
        return None if text is None else text.encode()

    def write_file_atomic(self, path: str, data: bytes, *, backup_path: str | None) -> None:
        self.world["files"][(self.name, path)] = data.decode()

    def close(self) -> None:
        return None


def windows_world(
    version: str, hosts: tuple[str, str] = ("ors-win-01", "ors-win-02")
) -> dict[str, Any]:
    return {
        "version": version,
        "log": [],
        "env": {},
        "lca_env": {},
        "lca_restarts": [],
        "process_env": {},
        "hosts": {"ORS_APAC_1A": hosts[0], "ORS_APAC_1B": hosts[1]},
        "started": [],
        "roles": {"ORS_APAC_1A": "primary", "ORS_APAC_1B": "backup"},
        "pairs": {"apac-1": ["ORS_APAC_1A", "ORS_APAC_1B"]},
        "files": {
            (hosts[0], "C:\\GCTI\\ORS\\options\\ORS_APAC_1A.ini"): "[scxml]\n",
            (hosts[1], "C:\\GCTI\\ORS\\options\\ORS_APAC_1B.ini"): "[scxml]\n",
        },
    }


class FakeHosts:
    """The run's transports (`step.Transports`): the fake Windows hosts by name."""

    def __init__(self, hosts: dict[str, FakeWindowsHost]) -> None:
        self.hosts = hosts

    def for_host(self, host_name: str) -> FakeWindowsHost:
        return self.hosts[host_name]

    def close_all(self) -> None:
        pass


def run_on_fake_windows(
    world: dict[str, Any],
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    resume: bool = False,
    site: Path = WINDOWS_SITE,
) -> Any:
    from ors_migrate.runner import Runner

    hosts = {name: FakeWindowsHost(name, world) for name in ("ors-win-01", "ors-win-02")}
    runner = Runner(
        state_dir,
        Ui(assume_yes=True, quiet=True),
        transports=lambda site, secrets: FakeHosts(hosts),
    )
    try:
        _, outcome = runner.start(
            str(site), "fips-windows", resume=resume, run_id=None, auto_rollback=True
        )
    finally:
        runner.close()
    return outcome


def test_windows_run_interrupted_after_setting_a_variable_resumes_without_setting_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = windows_world("8.1.401.11")
    world["kill_after"] = "SetEnvironmentVariable('OPENSSL_CONF'"

    interrupted = run_on_fake_windows(world, tmp_path, monkeypatch)
    assert interrupted.status == "interrupted"
    resumed = run_on_fake_windows(world, tmp_path, monkeypatch, resume=True)

    assert resumed.status == "succeeded", resumed.message
    sent = [(host, decode_invocation(c) or "") for host, c in world["log"]]
    sets = [host for host, script in sent if "SetEnvironmentVariable('OPENSSL_CONF'" in script]
    assert sets == ["ors-win-01", "ors-win-02"]


def test_windows_fips_refuses_ors_older_than_8_1_401_11(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = windows_world("8.1.401.10")
    outcome = run_on_fake_windows(world, tmp_path, monkeypatch)
    assert outcome.status == "failed"
    assert "FIPS mode on windows needs 8.1.401.11 or later" in outcome.message
    assert not world["env"] and not world["started"]


def test_windows_playbook_runs_the_planned_powershell_and_starts_ors_only_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plan_json(WINDOWS_SITE, "fips-windows")
    world = windows_world("8.1.401.11")

    outcome = run_on_fake_windows(world, tmp_path, monkeypatch)

    assert outcome.status == "succeeded", outcome.message
    sent = [(host, decode_invocation(c)) for host, c in world["log"] if decode_invocation(c)]
    for state_id in (
        "fipsinstall",
        "write-openssl-cnf",
        "set-openssl-conf",
        "set-openssl-modules",
        "verify-providers",
    ):
        for action in state(plan, state_id)["actions"]:
            host, script = action["commands"][0].split(" ", 1)
            assert (host.strip("[]"), script) in sent, f"{state_id} on {host} not sent as planned"
    assert world["env"]["ors-win-01"] == {
        "OPENSSL_CONF": "C:\\GCTI\\ORS_FIPS_CFG\\openssl.cnf",
        "OPENSSL_MODULES": "C:\\GCTI\\ORS 8.1.401.11\\fips",
    }
    assert (
        ".include C:/GCTI/ORS_FIPS_CFG/fipsmodule.cnf"
        in world["files"][("ors-win-02", "C:\\GCTI\\ORS_FIPS_CFG\\openssl.cnf")]
    )
    first_stop = next(i for i, (_, c) in enumerate(world["log"]) if "-stop" in c)
    last_env = max(
        i
        for i, (_, c) in enumerate(world["log"])
        if "SetEnvironmentVariable" in (decode_invocation(c) or "")
    )
    assert last_env < first_stop
    assert world["started"] == ["ORS_APAC_1B", "ORS_APAC_1A"]
    options = world["files"][("ors-win-01", "C:\\GCTI\\ORS\\options\\ORS_APAC_1A.ini")]
    assert read_options(options, "x")[("scxml", "fips-enabled")] == "true"


def test_windows_lca_restarts_on_the_backups_host_only_first_then_after_the_switchover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = windows_world("8.1.401.11")
    outcome = run_on_fake_windows(world, tmp_path, monkeypatch)
    assert outcome.status == "succeeded", outcome.message
    assert world["lca_restarts"] == [
        ("ors-win-02", {"ORS_APAC_1B": "backup"}),
        ("ors-win-01", {"ORS_APAC_1A": "backup"}),
    ]
    assert (
        world["process_env"]["ORS_APAC_1A"]["OPENSSL_MODULES"] == "C:\\GCTI\\ORS 8.1.401.11\\fips"
    )


def test_lca_is_never_restarted_on_the_host_of_a_primary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both members on one host: the backup's host is also the primary's, so the run stops
    before LCA or any ORS restarts there, naming the primary."""
    yaml = YAML()
    site = yaml.load(WINDOWS_SITE.read_text())
    site["ors_clusters"][0]["ha_pairs"][0]["apps"][1]["host"] = "ors-win-01"
    path = tmp_path / "site.yaml"
    with path.open("w") as fh:
        yaml.dump(site, fh)
    world = windows_world("8.1.401.11", hosts=("ors-win-01", "ors-win-01"))

    outcome = run_on_fake_windows(world, tmp_path / "state", monkeypatch, site=path)

    assert outcome.status == "failed"
    assert "LCA is not restarted on host ors-win-01: ORS_APAC_1A runs there as primary" in (
        outcome.message
    )
    assert world["lca_restarts"] == [] and world["started"] == []
    assert not any("-stop" in c for _, c in world["log"])


def test_ors_started_by_an_lca_without_the_variables_fails_the_process_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machine variables are set and read back, but LCA did not take them: the running
    ORS lacks them, and only the check of its own environment can tell."""
    world = windows_world("8.1.401.11")
    world["lca_reads_env"] = False
    outcome = run_on_fake_windows(world, tmp_path, monkeypatch)
    assert outcome.status == "failed"
    assert "the running ORS process 100" in outcome.message
    assert "OPENSSL_CONF is not set" in outcome.message
    assert world["env"]["ors-win-01"]["OPENSSL_CONF"] == "C:\\GCTI\\ORS_FIPS_CFG\\openssl.cnf"


def test_windows_fips_plan_names_an_application_without_install_dir(tmp_path: Path) -> None:
    yaml = YAML()
    site = yaml.load(WINDOWS_SITE.read_text())
    site["ors_clusters"][0]["ha_pairs"][0]["apps"][0]["install_dir"] = None
    path = tmp_path / "site.yaml"
    with path.open("w") as fh:
        yaml.dump(site, fh)
    result = cli("plan", str(path), "--playbook", "fips-windows")
    assert result.returncode == 2
    assert "ORS_APAC_1A has no install_dir" in result.stderr


# ----------------------------------------------------------------------------- Linux, in the lab


def fips_site(lab: LabLayout, tmp_path: Path) -> tuple[Path, Path, dict[str, Path]]:
    """The lab's site with one ORS installation (a test double) for its applications, each
    member of the pair on its own (local) host, and the FIPS settings. Each host's LCA is
    emulated: its restart copies the host's environment file to what "LCA" read (and notes the
    roles of the ORS applications on that host at that moment), and the lab's start command
    starts ORS with what "LCA" read, as LCA passes its environment to the ORS it starts."""
    install = tmp_path / "ORS 8.1.401.13"
    shutil.copytree(FAKE_INSTALL, install)
    (install / "lib64" / "libssl.so.3").unlink()  # the lab's Python would load the stand-in
    pack = tmp_path / "security_pack" / "lib"
    pack.mkdir(parents=True)
    lca = tmp_path / "lca"
    lca.mkdir()
    yaml = YAML()
    site = yaml.load(lab.site.read_text())
    site["hosts"] = {name: {"transport": "local", "platform": "linux"} for name in HOSTS}
    env_files = {}
    for name in HOSTS:
        env_files[name] = lca / f"{name}.env"
        env_files[name].write_text(
            "# Local Control Agent environment\n"
            "GCTI_LOGS=/var/log/genesys\n"
            f'LD_LIBRARY_PATH="/usr/local/lib:{pack}"\n'
        )
    for cluster in site["ors_clusters"]:
        for pair in cluster["ha_pairs"]:
            for app, host in zip(pair["apps"], HOSTS, strict=True):
                app["install_dir"] = str(install)
                app["host"] = host
    states = shlex.quote(str(lab.root / "apps"))
    site["ors"]["fips"] = {
        "lca_env_file": str(lca / "{host}.env"),
        "lca_restart": (
            "cp {env_file} {env_file}.seen-by-lca && (echo {host}; "
            f'for f in {states}/*/state.json; do cat "$f"; echo; done) >> '
            + shlex.quote(str(lca / "restarts.log"))
        ),
        "openssl": "{install_dir}/bin/openssl",
        "security_pack_dir": str(pack),
    }
    seen = shlex.quote(str(lca)) + "/{host}.env.seen-by-lca"
    site["services"]["start"] = (
        f"if [ -f {seen} ]; then set -a; . {seen}; set +a; fi; " + site["services"]["start"]
    )
    path = lab.root / "site-fips.yaml"
    with path.open("w") as fh:
        yaml.dump(site, fh)
    return path, install, env_files


def lca_restarts(log: Path) -> list[tuple[str, dict[str, str]]]:
    """Each LCA restart: the host, and the role of each ORS application of the lab then."""
    restarts: list[tuple[str, dict[str, str]]] = []
    for line in log.read_text().splitlines():
        if line in HOSTS:
            restarts.append((line, {}))
        elif line.strip():
            state = json.loads(line)
            restarts[-1][1][state["app"]] = state["role"]
    return restarts


def lab_apps(lab: LabLayout) -> list[str]:
    return list(lab.load_config()["apps"])


def fips_option(lab: LabLayout, app: str) -> str | None:
    values = read_options(lab.options(app).read_text(), str(lab.options(app)))
    return values.get(("scxml", "fips-enabled"))


def process_environment(lab: LabLayout, app: str) -> dict[str, str]:
    """/proc/<pid>/environ of the running simulated ORS, read by the test itself."""
    pid = int(lab.pid(app).read_text())
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in raw if b"=" in e)


def test_fips_linux_in_the_lab_then_back_to_tls_without_fips(make_lab, tmp_path: Path) -> None:
    lab = make_lab(clusters=1, pairs_per_cluster=1)
    site, install, env_files = fips_site(lab, tmp_path)
    original_env = {host: f.read_text() for host, f in env_files.items()}
    primary, backup = lab_apps(lab)
    log = tmp_path / "lca" / "restarts.log"

    refused = cli(
        "run", str(site), "-p", "fips-linux", "--yes", "--state-dir", str(tmp_path / "refused")
    )
    assert refused.returncode == 1
    assert "needs 8.1.401.13 or later" in refused.stderr
    assert not (install / "openssl.cnf").exists()
    assert {h: f.read_text() for h, f in env_files.items()} == original_env

    for app in lab_apps(lab):
        lab.installed_version(app).write_text("8.1.401.13\n")
    state_dir = str(tmp_path / "state")
    enabled = cli("run", str(site), "-p", "fips-linux", "--yes", "--state-dir", state_dir)
    assert enabled.returncode == 0, enabled.stderr[-3000:]

    assert ".include " + str(install / "fipsmodule.cnf") in (install / "openssl.cnf").read_text()
    assert "[fips_sect]" in (install / "fipsmodule.cnf").read_text()
    fips_env = {
        "OPENSSL_CONF": f"{install}/openssl.cnf",
        "OPENSSL_MODULES": f"{install}/fips",
        "LD_LIBRARY_PATH": f"/usr/local/lib:{install}/fips:{install}/lib64",
    }
    for host, env_file in env_files.items():
        assert parse_env_file(env_file.read_text()) == {"GCTI_LOGS": "/var/log/genesys", **fips_env}
        assert Path(f"{env_file}.ors-migrate.bak").read_text() == original_env[host]
    # LCA restarted on the backup's host, then (after the switchover) on the other one; never
    # where a primary ran; and the running ORS processes carry the variables.
    on_host = {"lab-a": primary, "lab-b": backup}
    restarts = lca_restarts(log)
    assert [host for host, _ in restarts] == ["lab-b", "lab-a"]
    assert all(roles[on_host[host]] == "backup" for host, roles in restarts), restarts
    for app in lab_apps(lab):
        running = process_environment(lab, app)
        assert {k: running.get(k) for k in fips_env} == fips_env, app
    assert all(fips_option(lab, app) == "true" for app in lab_apps(lab))
    status = json.loads(cli("lab", "status", "--dir", str(lab.root), "--json").stdout)
    assert sorted(a["role"] for a in status["apps"]) == ["backup", "primary"]
    assert {a["version"] for a in status["apps"]} == {"8.1.401.13"}

    log.unlink()
    disabled = cli("run", str(site), "-p", "fips-linux-off", "--yes", "--state-dir", state_dir)
    assert disabled.returncode == 0, disabled.stderr[-3000:]
    pack = tmp_path / "security_pack" / "lib"
    plain_env = {"LD_LIBRARY_PATH": f"/usr/local/lib:{pack}:{install}/lib64"}
    for env_file in env_files.values():
        assert parse_env_file(env_file.read_text()) == {
            "GCTI_LOGS": "/var/log/genesys",
            **plain_env,
        }
    restarts = lca_restarts(log)
    assert [host for host, _ in restarts] == ["lab-a", "lab-b"]
    assert all(roles[on_host[host]] == "backup" for host, roles in restarts), restarts
    for app in lab_apps(lab):
        running = process_environment(lab, app)
        assert "OPENSSL_CONF" not in running and "OPENSSL_MODULES" not in running
        assert running["LD_LIBRARY_PATH"] == plain_env["LD_LIBRARY_PATH"]
    assert all(fips_option(lab, app) == "false" for app in lab_apps(lab))
    runs = json.loads(cli("runs", "--json", "--state-dir", state_dir).stdout)
    assert [(r["playbook"], r["status"]) for r in runs] == [
        ("fips-linux", "succeeded"),
        ("fips-linux-off", "succeeded"),
    ]


def test_a_manual_lca_restart_is_checked_again_after_the_operator_confirms(monkeypatch):
    """Another pair switched over while the prompt waited: its new primary is on the host."""
    roles = {"ors-1b": "backup", "ors-2a": "backup"}
    apps = [
        (None, SimpleNamespace(name=pair), SimpleNamespace(name=app, host="h1"))
        for pair, app in (("pair-1", "ors-1b"), ("pair-2", "ors-2a"))
    ]

    def confirmed(text: str, *, who: str) -> None:
        roles["ors-2a"] = "primary"

    ctx = SimpleNamespace(
        site=SimpleNamespace(
            apps=lambda: apps, ors=SimpleNamespace(fips=SimpleNamespace(lca_restart=None))
        ),
        services=SimpleNamespace(status=lambda app: SimpleNamespace(role=roles[app])),
        ui=SimpleNamespace(operator_step=confirmed),
        operator="op",
    )
    paths = SimpleNamespace(host="h1", app="ors-1b", platform="linux", env_file="/etc/lca.env")
    monkeypatch.setattr(RestartLca, "paths", lambda self, ctx, intent: paths)
    intent = {"applies": True, "app": "ors-1b", "host": "h1"}

    with pytest.raises(VerificationFailed, match="ors-2a now runs there as primary"):
        RestartLca().apply(ctx, None, intent)  # type: ignore[arg-type]

    roles["ors-2a"] = "backup"
    ctx.ui = SimpleNamespace(operator_step=lambda text, *, who: None)
    done = RestartLca().apply(ctx, None, intent)  # type: ignore[arg-type]
    assert done["confirmed_by"] == "op" and done["roles_on_host"] == roles
