"""FIPS mode for ORS as the seed describes it: on Linux run for real against lab hosts whose ORS
installation is a test double (fipsinstall.sh and openssl scripts), on Windows through the exact
PowerShell each step sends to Windows OpenSSH."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, cli
from ruamel.yaml import YAML

from ors_migrate.actions.fips import (
    decode_invocation,
    fips_library_path,
    non_fips_library_path,
    openssl_cnf,
    parse_env_file,
    parse_providers,
    powershell_invocation,
    ps_quote,
    update_env_file,
)
from ors_migrate.actions.options_file import read_options
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


def test_ld_library_path_swaps_the_security_pack_and_the_fips_folder() -> None:
    ors, pack = "/opt/ors", "/opt/secpack/lib"
    fips = fips_library_path(f"{pack}:/usr/local/lib", ors, pack)
    assert fips == "/opt/ors/fips:/opt/ors/lib64:/usr/local/lib"
    assert fips_library_path(fips, ors, pack) == fips
    plain = non_fips_library_path(fips, ors, pack)
    assert plain == "/opt/secpack/lib:/opt/ors/lib64:/usr/local/lib"
    assert non_fips_library_path(plain, ors, pack) == plain


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
        if "fipsinstall" in script:
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


def windows_world(version: str) -> dict[str, Any]:
    return {
        "version": version,
        "log": [],
        "env": {},
        "started": [],
        "roles": {"ORS_APAC_1A": "primary", "ORS_APAC_1B": "backup"},
        "pairs": {"apac-1": ["ORS_APAC_1A", "ORS_APAC_1B"]},
        "files": {
            ("ors-win-01", "C:\\GCTI\\ORS\\options\\ORS_APAC_1A.ini"): "[scxml]\n",
            ("ors-win-02", "C:\\GCTI\\ORS\\options\\ORS_APAC_1B.ini"): "[scxml]\n",
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
    world: dict[str, Any], state_dir: Path, monkeypatch: pytest.MonkeyPatch, *, resume: bool = False
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
            str(WINDOWS_SITE), "fips-windows", resume=resume, run_id=None, auto_rollback=True
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


def fips_site(lab: LabLayout, tmp_path: Path) -> tuple[Path, Path, Path]:
    """The lab's site with one ORS installation (a test double) for its applications and the
    FIPS settings; LCA's environment file starts with the Security Pack on LD_LIBRARY_PATH."""
    install = tmp_path / "ORS 8.1.401.13"
    shutil.copytree(FAKE_INSTALL, install)
    pack = tmp_path / "security_pack" / "lib"
    pack.mkdir(parents=True)
    lca = tmp_path / "lca"
    lca.mkdir()
    env_file = lca / "lab.env"
    env_file.write_text(
        "# Local Control Agent environment\n"
        "GCTI_LOGS=/var/log/genesys\n"
        f'LD_LIBRARY_PATH="{pack}:/usr/local/lib"\n'
    )
    yaml = YAML()
    site = yaml.load(lab.site.read_text())
    for cluster in site["ors_clusters"]:
        for pair in cluster["ha_pairs"]:
            for app in pair["apps"]:
                app["install_dir"] = str(install)
    site["ors"]["fips"] = {
        "lca_env_file": str(lca / "{host}.env"),
        "lca_restart": "cp {env_file} {env_file}.seen-by-lca",
        "openssl": "{install_dir}/bin/openssl",
        "security_pack_dir": str(pack),
    }
    path = lab.root / "site-fips.yaml"
    with path.open("w") as fh:
        yaml.dump(site, fh)
    return path, install, env_file


def lab_apps(lab: LabLayout) -> list[str]:
    return list(lab.load_config()["apps"])


def fips_option(lab: LabLayout, app: str) -> str | None:
    values = read_options(lab.options(app).read_text(), str(lab.options(app)))
    return values.get(("scxml", "fips-enabled"))


def test_fips_linux_in_the_lab_then_back_to_tls_without_fips(make_lab, tmp_path: Path) -> None:
    lab = make_lab(clusters=1, pairs_per_cluster=1)
    site, install, env_file = fips_site(lab, tmp_path)
    original_env = env_file.read_text()

    refused = cli(
        "run", str(site), "-p", "fips-linux", "--yes", "--state-dir", str(tmp_path / "refused")
    )
    assert refused.returncode == 1
    assert "needs 8.1.401.13 or later" in refused.stderr
    assert not (install / "openssl.cnf").exists() and env_file.read_text() == original_env

    for app in lab_apps(lab):
        lab.installed_version(app).write_text("8.1.401.13\n")
    state_dir = str(tmp_path / "state")
    enabled = cli("run", str(site), "-p", "fips-linux", "--yes", "--state-dir", state_dir)
    assert enabled.returncode == 0, enabled.stderr[-3000:]

    assert ".include " + str(install / "fipsmodule.cnf") in (install / "openssl.cnf").read_text()
    assert "[fips_sect]" in (install / "fipsmodule.cnf").read_text()
    env = parse_env_file(env_file.read_text())
    assert env == {
        "GCTI_LOGS": "/var/log/genesys",
        "LD_LIBRARY_PATH": f"{install}/fips:{install}/lib64:/usr/local/lib",
        "OPENSSL_MODULES": f"{install}/fips",
        "OPENSSL_CONF": f"{install}/openssl.cnf",
    }
    assert Path(f"{env_file}.seen-by-lca").read_text() == env_file.read_text()
    assert Path(f"{env_file}.ors-migrate.bak").read_text() == original_env
    assert all(fips_option(lab, app) == "true" for app in lab_apps(lab))
    status = json.loads(cli("lab", "status", "--dir", str(lab.root), "--json").stdout)
    assert sorted(a["role"] for a in status["apps"]) == ["backup", "primary"]
    assert {a["version"] for a in status["apps"]} == {"8.1.401.13"}

    disabled = cli("run", str(site), "-p", "fips-linux-off", "--yes", "--state-dir", state_dir)
    assert disabled.returncode == 0, disabled.stderr[-3000:]
    env = parse_env_file(env_file.read_text())
    pack = tmp_path / "security_pack" / "lib"
    assert env == {
        "GCTI_LOGS": "/var/log/genesys",
        "LD_LIBRARY_PATH": f"{pack}:{install}/lib64:/usr/local/lib",
    }
    assert Path(f"{env_file}.seen-by-lca").read_text() == env_file.read_text()
    assert all(fips_option(lab, app) == "false" for app in lab_apps(lab))
    runs = json.loads(cli("runs", "--json", "--state-dir", state_dir).stdout)
    assert [(r["playbook"], r["status"]) for r in runs] == [
        ("fips-linux", "succeeded"),
        ("fips-linux-off", "succeeded"),
    ]
