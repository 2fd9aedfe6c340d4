"""Where a rehearsal lab keeps its files. Every process the lab starts lives under one directory."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIMULATOR_START_VERSION = "8.1.400.48"
UPGRADE_VERSION = "8.1.401.12"


@dataclass(frozen=True)
class LabLayout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "lab.json"

    @property
    def site(self) -> Path:
        return self.root / "site.yaml"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def services(self) -> Path:
        """The lab's own record of every stop, start and switchover, one JSON line each."""
        return self.root / "services.jsonl"

    def app_dir(self, app: str) -> Path:
        return self.root / "apps" / app

    def options(self, app: str) -> Path:
        return self.app_dir(app) / "options.ini"

    def installed_version(self, app: str) -> Path:
        return self.app_dir(app) / "installed_version"

    def state(self, app: str) -> Path:
        return self.app_dir(app) / "state.json"

    def counters(self, app: str) -> Path:
        return self.app_dir(app) / "counters.json"

    def faults(self, app: str) -> Path:
        return self.app_dir(app) / "faults.json"

    def pid(self, app: str) -> Path:
        return self.app_dir(app) / "pid"

    def log(self, app: str) -> Path:
        return self.app_dir(app) / "ors.log"

    def pair(self, pair: str) -> Path:
        return self.root / "pairs" / f"{pair}.json"

    def handover(self, pair: str) -> Path:
        return self.root / "pairs" / f"{pair}.handover.json"

    def load_config(self) -> dict[str, Any]:
        return json.loads(self.config.read_text())


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, sort_keys=True)
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
