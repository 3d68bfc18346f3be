"""The hostile-client campaign (tests/faults/hostile.py): a short run in every ``make test``,
a long one under ``make stress``; results in RELIABILITY.md ("Hostile clients")."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import MACHINE_GROUP
from tests.faults.hostile import hostile_campaign

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(MACHINE_GROUP)]

CI_ROUNDS = 2
FULL_ROUNDS = 30


@pytest.mark.parametrize("workers", [1, 2])  # every bound holds in each worker of serve
def test_hostile_campaign_short(tmp_path: Path, workers: int) -> None:
    result = hostile_campaign(tmp_path, CI_ROUNDS, workers=workers)
    assert result.failures == [], result
    assert result.rounds == CI_ROUNDS
    assert result.acknowledged > 0  # the honest client was served meanwhile
    assert {"401", "405", "422"} <= set(result.statuses)


@pytest.mark.stress
def test_hostile_campaign_full(tmp_path: Path) -> None:
    result = hostile_campaign(tmp_path, FULL_ROUNDS, seed=11)
    assert result.failures == [], result
    assert result.rounds == FULL_ROUNDS
