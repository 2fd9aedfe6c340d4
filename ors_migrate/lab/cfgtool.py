"""The lab's stand-in for a site's Configuration Server tooling (the `command` option backend):
`python -m ors_migrate.lab.cfgtool ROOT get APP` prints the application's options in the INI
export format; `... set APP` reads the changes as JSON on stdin and applies them. Every call's
argv is appended to ROOT/cfgtool.argv.log, so a rehearsal (and the tests) can show that no value
travels on a command line."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from configupdater import ConfigUpdater


def command(root: Path) -> str:
    """The command line prefix a site file uses for this tool."""
    import shlex

    return f"{shlex.quote(sys.executable)} -m ors_migrate.lab.cfgtool {shlex.quote(str(root))}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root, verb, app = Path(args[0]), args[1], args[2]
    with open(root / "cfgtool.argv.log", "a") as log:
        log.write(json.dumps(["cfgtool", *args]) + "\n")
    path = root / "apps" / app / "options.ini"
    if verb == "get":
        sys.stdout.write(path.read_text())
        return 0
    changes = json.loads(sys.stdin.read())
    updater = ConfigUpdater(space_around_delimiters=False)
    updater.read_string(path.read_text())
    for item in changes["set"]:
        if not updater.has_section(item["section"]):
            updater.add_section(item["section"])
        updater[item["section"]][item["option"]] = item["value"]
    for item in changes["remove"]:
        if updater.has_option(item["section"], item["option"]):
            updater.remove_option(item["section"], item["option"])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(str(updater))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
