"""kill -9 of a mixed writer at random moments: nothing acknowledged is ever lost.

The short campaign runs in every ``make test``; ``make stress`` runs the long one and the
contrast with the predecessor's write path (numbers in RELIABILITY.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import MACHINE_GROUP
from tests.faults.campaign import kill_campaign, legacy_campaign

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(MACHINE_GROUP)]

CI_ROUNDS = 50
FULL_ROUNDS = 1000


def test_kill_campaign_short(tmp_path: Path) -> None:
    result = kill_campaign(tmp_path, CI_ROUNDS, seed=5, max_delay=0.15)
    assert result.failures == []
    assert result.rounds == CI_ROUNDS
    assert result.acknowledged > CI_ROUNDS  # the writers really wrote between kills


@pytest.mark.stress
def test_kill_campaign_full(tmp_path: Path) -> None:
    result = kill_campaign(tmp_path, FULL_ROUNDS)
    assert result.failures == []
    assert result.rounds == FULL_ROUNDS


@pytest.mark.stress
def test_predecessor_write_path_loses_the_file_under_the_same_kills(tmp_path: Path) -> None:
    result = legacy_campaign(tmp_path, FULL_ROUNDS)
    assert result.rounds == FULL_ROUNDS
    assert result.empty + result.unparsable + result.truncated > 0
