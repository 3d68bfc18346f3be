"""Power loss: the simulator's model (:mod:`.powerfs`), the harness's mutation checks, and the
campaign over every file protocol (:mod:`.powerloss`).

They need a real FUSE mount: Linux, root, ``/dev/fuse``, Debian's ``fuse3`` and the ``mfusepy``
bindings. Where one is missing they skip with the reason; with ``DAPI_CONFIG_REQUIRE_FUSE=1``
(set by ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MACHINE_GROUP
from tests.faults import powerloss
from tests.faults.powerfs import PowerFS, unavailable_reason
from tests.faults.powerloss import fsync_dir

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(MACHINE_GROUP)]

REQUIRED = os.environ.get("DAPI_CONFIG_REQUIRE_FUSE", "").strip() not in ("", "0")
#: Rounds per scenario in the default run (13 scenarios: >= 100 cuts); `make stress` runs 1,000+.
CI_ROUNDS = 8


def _need_fuse() -> None:
    reason = unavailable_reason()
    if reason is None:
        return
    if REQUIRED:
        pytest.fail(f"a FUSE mount is required (DAPI_CONFIG_REQUIRE_FUSE=1) but {reason}")
    pytest.skip(f"no FUSE mount: {reason}")


@pytest.fixture(scope="module")
def fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerFS]:
    _need_fuse()
    with PowerFS(tmp_path_factory.mktemp("powerfs")) as mounted:
        yield mounted


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[powerloss.Campaign]:
    _need_fuse()
    with powerloss.Campaign(tmp_path_factory.mktemp("powerloss")) as run:
        yield run


_rounds = iter(range(1, 10**6))


def _round(fs: PowerFS) -> tuple[str, Path]:
    name = f"model{next(_rounds)}"
    return name, fs.new_round(name)


def _write(path: Path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _after_cut(fs: PowerFS, name: str, dest: Path) -> dict[str, bytes]:
    fs.cut_now()
    assert fs.image(name, dest) is True
    return {
        str(p.relative_to(dest)): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()
    }


# -- the model: what survives a cut ----------------------------------------------------------------


def test_only_synced_data_under_a_synced_name_survives(fs: PowerFS, tmp_path: Path) -> None:
    name, folder = _round(fs)
    fs.arm()
    _write(folder / "unsynced", b"lost", sync=False)
    _write(folder / "synced", b"kept", sync=True)
    fsync_dir(folder)  # both names durable; only one file's data
    _write(folder / "late", b"data synced, name never", sync=True)
    assert _after_cut(fs, name, tmp_path) == {"unsynced": b"", "synced": b"kept"}


def test_a_rename_needs_the_directory_fsync(fs: PowerFS, tmp_path: Path) -> None:
    name, folder = _round(fs)
    fs.arm()
    _write(folder / "old", b"v1", sync=True)
    fsync_dir(folder)
    _write(folder / "tmp", b"v2", sync=True)
    os.replace(folder / "tmp", folder / "old")  # not yet durable: the old entry comes back
    assert _after_cut(fs, name, tmp_path / "a") == {"old": b"v1"}

    name, folder = _round(fs)
    fs.arm()
    _write(folder / "tmp", b"v2", sync=True)
    os.replace(folder / "tmp", folder / "new")
    fsync_dir(folder)
    assert _after_cut(fs, name, tmp_path / "b") == {"new": b"v2"}


def test_a_new_directory_needs_its_parent_synced(fs: PowerFS, tmp_path: Path) -> None:
    name, folder = _round(fs)
    fs.arm()
    (folder / "sub").mkdir()
    _write(folder / "sub" / "f", b"x", sync=True)
    fsync_dir(folder / "sub")  # the file's name is durable in sub, but sub itself is not
    assert _after_cut(fs, name, tmp_path) == {}


def test_a_torn_cut_lets_some_unsynced_pages_through(fs: PowerFS, tmp_path: Path) -> None:
    seen: set[bytes] = set()
    for seed in range(12):
        name, folder = _round(fs)
        fs.arm(torn_seed=seed)
        _write(folder / "f", b"A" * 4096 * 4, sync=True)
        fsync_dir(folder)
        fd = os.open(folder / "f", os.O_WRONLY)
        os.pwrite(fd, b"B" * 4096 * 4, 0)
        os.close(fd)
        data = _after_cut(fs, name, tmp_path / str(seed))["f"]
        assert len(data) == 4096 * 4
        pages = {data[i : i + 4096] for i in range(0, len(data), 4096)}
        assert pages <= {b"A" * 4096, b"B" * 4096}
        seen.add(data)
    assert len(seen) > 2  # some rounds mixed old and new pages


def test_after_the_cut_every_operation_fails_and_the_trigger_counts(
    fs: PowerFS, tmp_path: Path
) -> None:
    name, folder = _round(fs)
    fs.arm(at_fsync=3)
    _write(folder / "a", b"1", sync=True)  # fsync 1
    fsync_dir(folder)  # fsync 2
    with pytest.raises(OSError) as raised:
        _write(folder / "b", b"2", sync=True)  # fsync 3: the power goes before it
    assert raised.value.errno == errno.EIO
    with pytest.raises(OSError):
        (folder / "a").read_bytes()
    assert fs.stats().cut and fs.stats().fsyncs == 3
    assert fs.image(name, tmp_path) is True
    assert (tmp_path / "a").read_bytes() == b"1" and not (tmp_path / "b").exists()


def test_without_a_cut_the_picture_is_everything_written(fs: PowerFS, tmp_path: Path) -> None:
    name, folder = _round(fs)
    fs.arm()
    _write(folder / "never-synced", b"still here", sync=False)
    assert fs.image(name, tmp_path) is False
    assert (tmp_path / "never-synced").read_bytes() == b"still here"


# -- the harness can fail --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "mutation-rename-without-fsync",
        "mutation-no-directory-fsync",
        "mutation-normal-judged-as-full",
    ],
)
def test_a_broken_writer_is_reported_as_losses(campaign: powerloss.Campaign, name: str) -> None:
    result = campaign.run(powerloss.SCENARIOS[name], 12, seed=7)
    assert result.failures, f"{name}: 12 cuts and not one loss found: the harness proves nothing"


# -- what the campaign found -----------------------------------------------------------------------


def test_a_backup_is_never_ahead_of_the_state_after_a_cut(campaign: powerloss.Campaign) -> None:
    """Reproduction: under durability="normal" a backup copied commits that were not yet
    durable in the state file; a cut right after it left the state emptier than its backup (the
    next start restored the backup, and the state's newest commits were gone either way)."""
    scenario = powerloss.SCENARIOS["mixed-normal"]
    for seed in range(4):
        acks, cut, loss, _lost = campaign.run_round(scenario, seed, cut_after="backup")
        assert cut and any(a.startswith("backup ") for a in acks)
        assert loss is None, loss


# -- the campaign ----------------------------------------------------------------------------------


PROTOCOLS = [n for n, s in powerloss.SCENARIOS.items() if not s.mutation]


@pytest.mark.parametrize("name", PROTOCOLS)
def test_every_file_protocol_survives_power_cuts(campaign: powerloss.Campaign, name: str) -> None:
    scenario = powerloss.SCENARIOS[name]
    if not powerloss.available(scenario):
        if REQUIRED:
            pytest.fail(f"{name} needs {scenario.needs}, which is not installed")
        pytest.skip(f"{name} needs {scenario.needs}")
    result = campaign.run(scenario, CI_ROUNDS, seed=20261201)
    assert result.rounds == CI_ROUNDS and sum(result.cuts.values()) + result.uncut == CI_ROUNDS
    assert not result.failures, "\n".join(result.failures)


@pytest.mark.stress
def test_power_loss_campaign_long(tmp_path: Path) -> None:
    _need_fuse()
    results = powerloss.campaign(1300, workdir=tmp_path, seed=1)
    assert sum(r.rounds for r in results.values()) >= 1000
    for name, result in results.items():
        if powerloss.SCENARIOS[name].mutation:
            assert result.failures, name
        else:
            assert not result.failures, "\n".join(result.failures[:5])
