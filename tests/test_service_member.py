"""Which member of a pair `service.restart` restarts, with a fake status command: a pair whose
switchover the run did not see end must settle first, and one that never settles is refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ors_migrate.actions import service
from ors_migrate.actions.service import Restart
from ors_migrate.errors import VerificationFailed
from ors_migrate.step import AppStatus


class FlappingPair:
    """A pair whose primary moves to the other member at every status call."""

    def __init__(self) -> None:
        self.calls = 0

    def pair_status(self, pair: str) -> dict[str, AppStatus]:
        self.calls += 1
        first = self.calls % 2 == 0
        return {
            "ors-a": AppStatus("ors-a", "primary" if first else "backup"),
            "ors-b": AppStatus("ors-b", "backup" if first else "primary"),
        }


def test_a_restart_is_refused_when_the_pair_never_settles_after_its_switchover(monkeypatch):
    monkeypatch.setattr(service, "switchover_unfinished", lambda ctx, pair: True)
    statuses = FlappingPair()
    ctx = SimpleNamespace(
        services=statuses,
        site=SimpleNamespace(services=SimpleNamespace(ready_timeout_s=0.3, poll_interval_s=0.02)),
    )

    with pytest.raises(VerificationFailed, match="did not settle") as refused:
        Restart._member(ctx, "pair-1", "backup")  # type: ignore[arg-type]

    assert "ors-a=" in str(refused.value) and "ors-b=" in str(refused.value)
    assert statuses.calls > 2  # it did wait and look again
