"""History never runs backwards across a restore, on every backend (reproduction: revisions
1-6, a backup at 3, a restore, and the next two changes were given revisions 4 and 5 again;
``audit --since 6`` answered nothing forever and the restore was not in the trail)."""

from __future__ import annotations

import pytest

from dapi_config import ConfigManager, InferenceNodeConfig
from tests.conftest import raw_rows

pytestmark = pytest.mark.both_backends


def node(node_id: str) -> InferenceNodeConfig:
    return InferenceNodeConfig(id=node_id, host="10.0.0.5", inference_port=5000, poc_port=8080)


def test_revisions_keep_increasing_across_a_restore(manager: ConfigManager) -> None:
    cm = manager
    for height in (1, 2, 3):
        cm.set_height(height)
    backup = cm.backup()
    assert backup.revision == 3
    cm.add_node(node("after-backup"))
    cm.set_height(5)
    cm.set_height(6)
    assert cm.latest_revision() == 6

    cm.restore_backup(backup.path)
    assert cm.get_height() == 3 and cm.get_nodes() == []
    (restore,) = cm.get_audit(since=6)  # a poller at 6 sees the restore
    assert restore.revision == 7 and restore.action == "restore"
    assert restore.new_value == {
        "backup": str(backup.path),
        "backup_revision": 3,
        # The chain value of the backup's newest row: this trail's r3 (a check tells from it
        # that the backup's history is this state's).
        "backup_chain": raw_rows(cm, "SELECT chain FROM audit_log WHERE revision = 3")[0][0],
        "undone": {"from": 4, "to": 6},
    }

    cm.set_height(10)
    cm.add_node(node("after-restore"))
    trail = cm.get_audit(since=0, limit=1000)
    assert [e.revision for e in trail] == list(range(1, 10))  # append-only, never reused
    # What the restore undid stays readable, marked; what it kept and what came later are not.
    assert [e.revision for e in trail if e.undone_by == 7] == [4, 5, 6]
    assert all(e.undone_by is None for e in trail if e.revision not in (4, 5, 6))
    assert cm.get_height() == 10 and [n.id for n in cm.get_nodes()] == ["after-restore"]


def test_restoring_twice_names_each_undone_range_once(manager: ConfigManager) -> None:
    cm = manager
    cm.set_height(1)
    first = cm.backup()
    cm.set_height(2)
    cm.restore_backup(first.path)  # 3 undoes 2
    cm.set_height(4)
    cm.restore_backup(first.path)  # 5 undoes 2-4 (2 was undone already, by 3)
    undone = {e.revision: e.undone_by for e in cm.get_audit(since=0) if e.undone_by}
    assert undone == {2: 3, 3: 5, 4: 5}
    assert cm.latest_revision() == 5 and cm.get_height() == 1
