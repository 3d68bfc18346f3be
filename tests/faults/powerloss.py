"""The power-loss campaign: every file protocol of the product under simulated power cuts.

Each round mounts a fresh folder on :mod:`.powerfs`, runs one scenario's writer (a process
forked from a pre-warmed zygote, printing an acknowledgement after each call returns), cuts the
power before a chosen operation or fsync (sometimes letting a random subset of unsynced pages
through: a *torn* cut), writes what a restart would find into a real folder, and checks it in a
fresh process. A scenario is first run once without a cut to count its operations and fsyncs,
so the cuts fall uniformly over every window of the protocol.

Run it directly for the long version documented in RELIABILITY.md::

    .venv/bin/python -m tests.faults.powerloss --rounds 1000

(``--rounds`` is spread over the scenarios; ``--scenario NAME`` picks some; ``--json`` prints the
table as JSON.) The *mutation* scenarios are deliberately broken writers: the campaign must report
losses for them, or it proves nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults._zygote import serve_forks
from tests.faults.campaign import CONFIG_TEXT, Zygote
from tests.faults.powerfs import PowerFS

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
LINE_TIMEOUT_S = 60.0
SECRET_A = "power-loss-key-one-0123456789"
SECRET_B = "power-loss-key-two-9876543210"
STATIC_CONFIG = CONFIG_TEXT  # the kill campaign's static config
SEAL_PRIVATE = "c2VhbGVkLXdvcmtlci1wcml2YXRlLWtleS0zMi1ieXRlcw=="
SEAL_PUBLIC = "c2VhbGVkLXdvcmtlci1wdWJsaWMta2V5LTMyLWJ5dGVzLQ=="
SEAL_CONFIG = f"""\
# operator: node eu-1
api:
    port: 8080
chain_node:
    KeyringPassword: correct-horse-battery
    url: http://node:26657
ml_node_key_config:
    worker_private: {SEAL_PRIVATE}
    worker_public: {SEAL_PUBLIC}
nats:
    port: 4222
"""


class Loss(AssertionError):
    """What a restart found differs from what the writer was told is safe."""


Say = Callable[[str], None]


@dataclass(frozen=True)
class Scenario:
    """One file protocol: its starting files, its writer and the check after a cut."""

    name: str
    #: Fills the round's folder (on a real disk; loaded into the simulator as durable).
    setup: Callable[[Path], None]
    #: Runs in the forked writer: the folder on the mount, the acknowledgement printer, a seed.
    write: Callable[[Path, Say, int], None]
    #: Runs in a fresh process on the restart's picture: raises :class:`Loss`; returns how many
    #: acknowledged changes a ``normal``-durability round lost (allowed there, counted).
    check: Callable[[Path, list[str], int], int]
    #: A deliberately broken writer: the campaign must find losses.
    mutation: bool = False
    needs: str | None = None


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_", "CONFIG_"))}
    env.update(extra)
    return env


def _open(folder: Path, **kwargs: Any) -> Any:
    from dapi_config import ConfigManager

    env = kwargs.pop("env", None) or _env()
    return ConfigManager.open(folder / "config.yaml", env=env, **kwargs)


def _integrity(path: Path) -> None:
    if not path.exists():
        return
    # Read-write, as the next start opens it: a -wal without its -shm needs writing to be read.
    conn = sqlite3.connect(path)
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise Loss(f"{path.name}: not a database after the cut ({exc})") from None
    finally:
        conn.close()
    if rows != ["ok"]:
        raise Loss(f"{path.name}: integrity_check {rows[:3]}")


def _sound(folder: Path) -> None:
    """The state opens as the next start would: sound, nothing to recover."""
    from dapi_config.store.backup import backup_dir_for
    from dapi_config.store.recovery import diagnose

    state = folder / "state.db"
    _integrity(state)
    problem = diagnose(state, backup_dir_for(state))
    if problem is not None:
        raise Loss(f"the next start would recover the state: {problem}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_config(folder: Path, text: str = STATIC_CONFIG) -> None:
    path = folder / "config.yaml"
    path.write_text(text)
    path.chmod(0o600)


# -- the mixed writer: heights, schedule, seeds, nodes, keys, batches, backups ---------------------

MIXED_OPS = 36
BACKUP_EVERY = 12
ROTATE_EVERY = 9


def _mixed_ops(seed: int) -> list[Any]:
    from itertools import islice

    from tests.faults._workload import operations

    return list(islice(operations(seed, 1, 0), MIXED_OPS))


def _mixed_write(durability: str) -> Callable[[Path, Say, int], None]:
    def write(folder: Path, say: Say, seed: int) -> None:
        from tests.faults._workload import apply, node

        cm = _open(folder, durability=durability)
        public = cm.create_worker_key()  # creates the master key file, seals a secret
        say(f"secret {public}")
        cm.add_node(node("keyed"))
        say("ack 0")
        version = cm.create_security_key("keyed").key_version
        say(f"keyver {version}")
        for n, op in enumerate(_mixed_ops(seed), start=1):
            apply(cm, op)
            say(f"ack {n}")
            if n % ROTATE_EVERY == 0 and any(x.id == "keyed" for x in cm.get_nodes()):
                say(f"keyver {cm.rotate_security_key('keyed').key_version}")
            if n % BACKUP_EVERY == 0:
                info = cm.backup()
                say(f"backup {info.path.name} {info.revision}")
        cm.close()

    return write


def _mixed_models(seed: int) -> Iterator[Any]:
    """The expected state after 0, 1, 2, ... acknowledged operations."""
    from tests.faults._workload import Model, normalise

    model = Model()
    model.apply(("add", "keyed"))
    yield normalise(model)
    for op in _mixed_ops(seed):
        model.apply(op)
        yield normalise(model)


def _mixed_check(durable: bool) -> Callable[[Path, list[str], int], int]:
    def check(folder: Path, acks: list[str], seed: int) -> int:
        from tests.faults._workload import Model, normalise, read_state

        acked = [int(a.split()[1]) for a in acks if a.startswith("ack ")]
        secret = next((a.split()[1] for a in acks if a.startswith("secret ")), None)
        key_file = folder / "state.db.key"
        if secret is not None and not key_file.exists():
            raise Loss("a secret was acknowledged but the master key file is gone")
        state = folder / "state.db"
        if not state.exists():
            if acked and durable:
                raise Loss(f"{len(acked)} acknowledged changes, but no state file")
            return len(acked)
        _sound(folder)
        backups = []
        for line in acks:
            if line.startswith("backup "):
                _, name, taken = line.split()
                _check_backup(folder / "backups" / name, int(taken))
                backups.append(int(taken))
        cm = _open(folder)
        try:
            actual = read_state(cm)
            revision = cm.latest_revision()
            started = actual != normalise(Model())  # normal: even the first commits may be lost
            stored = cm.get_ml_node_key_config().worker_public
            if secret is not None and (durable or started) and stored != secret:
                raise Loss("the acknowledged worker key is not the one stored")
            versions = [int(a.split()[1]) for a in acks if a.startswith("keyver ")]
            if versions and "keyed" in actual.nodes:
                info = cm.get_security_key_info("keyed")
                if durable and info.key_version < versions[-1]:
                    raise Loss(f"key version {info.key_version} < acknowledged {versions[-1]}")
        finally:
            cm.close()
        if backups and revision < max(backups):
            raise Loss(
                f"the state is at revision {revision}, behind the acknowledged backup of "
                f"revision {max(backups)}: a backup held commits the state file had not made "
                "durable"
            )
        if not acked:
            return 0
        models = list(_mixed_models(seed))
        last = acked[-1]
        allowed = models[last : last + 2] if durable else [normalise(Model()), *models[: last + 2]]
        if actual not in allowed:
            raise Loss(
                f"after {last} acknowledged operations the state matches none the writer "
                f"could have left:\n  actual   {actual}\n  expected {models[last]}"
            )
        if durable:
            return 0
        return last - next((i for i, m in enumerate(models) if m == actual), -1)

    return check


def _check_backup(path: Path, revision: int) -> None:
    from dapi_config.store.backup import inspect_backup

    if not path.exists():
        raise Loss(f"the acknowledged backup {path.name} is gone")
    info = inspect_backup(path)
    if info.problem is not None:
        raise Loss(f"the acknowledged backup {path.name} is damaged: {info.problem}")
    if info.revision != revision:
        raise Loss(f"backup {path.name}: revision {info.revision}, acknowledged {revision}")


def _mixed_setup(folder: Path) -> None:
    _write_config(folder)


# -- the legacy migration --------------------------------------------------------------------------


def _legacy_setup(folder: Path) -> None:
    _write_config(folder, (DATA / "legacy_go_writer.yaml").read_text())


def _legacy_expected() -> tuple[int, set[str]]:
    from ruamel.yaml import YAML

    doc = YAML(typ="safe").load((DATA / "legacy_go_writer.yaml").read_text())
    return int(doc["current_height"]), {n["id"] for n in doc["nodes"]}


def _migrate_write(durability: str) -> Callable[[Path, Say, int], None]:
    def write(folder: Path, say: Say, seed: int) -> None:
        cm = _open(folder, durability=durability)  # the first open migrates
        say("ack migrated")
        height = cm.get_height()
        cm.set_height(height + 1)
        say("ack height")
        cm.close()

    return write


def _migrate_check(folder: Path, acks: list[str], seed: int) -> int:
    from ruamel.yaml import YAML

    height, ids = _legacy_expected()
    original = (DATA / "legacy_go_writer.yaml").read_text()
    text = (folder / "config.yaml").read_text() if (folder / "config.yaml").exists() else ""
    if not text:
        raise Loss("the config file is gone or empty")
    if text != original:
        doc = YAML(typ="safe").load(text)
        if "nodes" in doc or "current_height" in doc:
            raise Loss("the config file is neither the legacy file nor the static one")
        # Static-only config: the state must hold everything the legacy file had.
        _sound(folder)
        cm = _open(folder, read_only=True)
        try:
            got_ids = {n.id for n in cm.get_nodes()}
            got_height = cm.get_height()
        finally:
            cm.close()
        if got_ids != ids or got_height < height:
            raise Loss(
                f"the config lost its dynamic keys but the state has {len(got_ids)} of "
                f"{len(ids)} nodes and height {got_height} (not {height})"
            )
    elif "ack migrated" in acks:
        raise Loss("the migration was acknowledged, but the config file is the legacy one again")
    # Whatever the cut left, the next start ends with everything.
    cm = _open(folder)
    try:
        if {n.id for n in cm.get_nodes()} != ids or cm.get_height() < height:
            raise Loss("the next start did not end with every node and the height")
    finally:
        cm.close()
    return 0


# -- secrets seal ----------------------------------------------------------------------------------


def _seal_setup(folder: Path) -> None:
    _write_config(folder, SEAL_CONFIG)
    _open(folder).close()


def _seal_write(folder: Path, say: Say, seed: int) -> None:
    cm = _open(folder)
    cm.seal_secrets()
    say("ack sealed")
    cm.close()


def _seal_check(folder: Path, acks: list[str], seed: int) -> int:
    text = (folder / "config.yaml").read_text()
    if SEAL_PRIVATE in text and "correct-horse-battery" in text:
        if "ack sealed" in acks:
            raise Loss("the seal was acknowledged but the secrets are back in the file")
        return 0
    if SEAL_PRIVATE in text or "correct-horse-battery" in text:
        raise Loss("the config file holds one secret but not the other")
    _sound(folder)
    cm = _open(folder)
    try:
        if cm.get_ml_node_key_config().worker_private != SEAL_PRIVATE:
            raise Loss("the file no longer holds worker_private and the state does not either")
        if cm.sealed_keyring_password() != "correct-horse-battery":
            raise Loss("the file no longer holds KeyringPassword and the state does not either")
    finally:
        cm.close()
    return 0


# -- backup and restore ----------------------------------------------------------------------------


def _restore_setup(folder: Path) -> None:
    from tests.faults._workload import node

    _write_config(folder)
    cm = _open(folder)
    cm.set_height(50)
    for i in range(3):
        cm.add_node(node(f"old-{i}"))
    cm.backup()  # the only backup: recovery restores this one
    cm.set_height(100)
    for i in range(3):
        cm.remove_node(f"old-{i}")
    for i in range(5):
        cm.add_node(node(f"new-{i}"))
    cm.close()


_BEFORE = (100, {f"new-{i}" for i in range(5)})
_RESTORED = (50, {f"old-{i}" for i in range(3)})


def _restore_write(folder: Path, say: Say, seed: int) -> None:
    cm = _open(folder)
    backup = next(b for b in cm.list_backups() if b.reason == "manual")
    fresh = cm.backup()
    say(f"backup {fresh.path.name} {fresh.revision}")
    cm.restore_backup(backup.path)
    say("ack restored")
    cm.close()


def _restore_check(folder: Path, acks: list[str], seed: int) -> int:
    _sound(folder)
    for line in acks:
        if line.startswith("backup "):
            _, name, revision = line.split()
            _check_backup(folder / "backups" / name, int(revision))
    cm = _open(folder)
    try:
        got = (cm.get_height(), {n.id for n in cm.get_nodes()})
        for info in cm.list_backups():
            if info.problem is not None and not info.path.name.startswith("."):
                raise Loss(f"a backup is damaged after the cut: {info.path.name}: {info.problem}")
    finally:
        cm.close()
    allowed = [_RESTORED] if "ack restored" in acks else [_BEFORE, _RESTORED]
    if got not in allowed:
        raise Loss(f"after the cut the state is {got}, expected one of {allowed}")
    return 0


# -- automatic recovery of a damaged file ----------------------------------------------------------


def _recovery_setup(folder: Path) -> None:
    _restore_setup(folder)
    state = folder / "state.db"
    data = bytearray(state.read_bytes())
    data[:100] = b"\x00" * 100  # the header gone: the next open must recover from a backup
    state.write_bytes(bytes(data))


def _recovery_write(folder: Path, say: Say, seed: int) -> None:
    cm = _open(folder)  # finds the damage, quarantines the file, restores the newest backup
    say(f"ack recovered {cm.get_height()}")
    cm.close()


def _recovery_check(folder: Path, acks: list[str], seed: int) -> int:
    from dapi_config.store.backup import inspect_backup

    backups = sorted((folder / "backups").glob("state-*-manual.db"))
    if len(backups) != 1 or inspect_backup(backups[0]).problem is not None:
        raise Loss(f"the backup recovery restores from is gone or damaged: {backups}")
    if any(a.startswith("ack recovered") for a in acks):
        _sound(folder)
    cm = _open(folder)  # recovers again if the cut fell before the swap was durable
    try:
        got = (cm.get_height(), {n.id for n in cm.get_nodes()})
    finally:
        cm.close()
    if got != _RESTORED:
        raise Loss(f"after recovery the state is {got}, not the backup's {_RESTORED}")
    return 0


# -- encrypt, rekey, decrypt -----------------------------------------------------------------------


def _cipher_setup(folder: Path) -> None:
    from tests.faults._workload import node

    _write_config(folder)
    cm = _open(folder)
    cm.set_height(77)
    cm.set_nodes([node(f"c-{i}") for i in range(4)])
    cm.close()


_FORMS = [None, SECRET_A, SECRET_B, None]  # plain -> encrypted A -> rekeyed B -> plain again


def _cipher_write(folder: Path, say: Say, seed: int) -> None:
    from dapi_config.store.encrypt_file import decrypt_state, encrypt_state, rekey_state

    state = folder / "state.db"
    encrypt_state(state, SECRET_A)
    say("ack 1")
    rekey_state(state, SECRET_A, SECRET_B)
    say("ack 2")
    decrypt_state(state, SECRET_B)
    say("ack 3")


def _opens_as(folder: Path, secret: str | None) -> tuple[int, set[str]] | None:
    env = _env() if secret is None else _env(API_STATE_KEY=secret, API_STATE_ENCRYPTION="sqlcipher")
    try:
        cm = _open(folder, env=env, read_only=True)
    except Exception:
        return None
    try:
        return cm.get_height(), {n.id for n in cm.get_nodes()}
    except Exception:
        return None
    finally:
        cm.close()


def _cipher_check(folder: Path, acks: list[str], seed: int) -> int:
    done = max((int(a.split()[1]) for a in acks if a.startswith("ack ")), default=0)
    expected = (77, {f"c-{i}" for i in range(4)})
    candidates = {_FORMS[done], _FORMS[min(done + 1, 3)]}
    for secret in candidates:
        if _opens_as(folder, secret) == expected:
            return 0
    raise Loss(
        f"after {done} acknowledged conversions the state opens with none of the keys it may "
        "have (or lost its data)"
    )


# -- the periodic export ---------------------------------------------------------------------------


def _export_write(folder: Path, say: Say, seed: int) -> None:
    from dapi_config.export import export_once

    cm = _open(folder)
    for height in range(1, 6):
        cm.set_height(height)
        export_once(cm, keep=2)
        say(f"ack {height}")
    cm.close()


def _export_check(folder: Path, acks: list[str], seed: int) -> int:
    from ruamel.yaml import YAML

    done = max((int(a.split()[1]) for a in acks if a.startswith("ack ")), default=0)
    path = folder / "api-config-full.yaml"
    if not path.exists():
        if done:
            raise Loss(f"export {done} was acknowledged but the file is gone")
        return 0
    try:
        doc = YAML(typ="safe").load(path.read_text())
        height = int(doc["current_height"])
    except Exception as exc:
        raise Loss(f"the export does not parse after the cut: {exc}") from None
    if height not in (done, done + 1):
        raise Loss(f"the export has height {height}; acknowledged {done}")
    for copy in folder.glob("api-config-full.*.yaml"):
        YAML(typ="safe").load(copy.read_text())
    return 0


# -- the dual mirror and yaml mode -----------------------------------------------------------------


def _mode_write(mode: str) -> Callable[[Path, Say, int], None]:
    def write(folder: Path, say: Say, seed: int) -> None:
        cm = _open(folder, env=_env(API_STATE_MODE=mode))
        for height in range(1, 6):
            cm.set_height(height)
            say(f"ack {height}")
        cm.close()

    return write


def _mode_check(mode: str) -> Callable[[Path, list[str], int], int]:
    def check(folder: Path, acks: list[str], seed: int) -> int:
        from ruamel.yaml import YAML

        done = max((int(a.split()[1]) for a in acks if a.startswith("ack ")), default=0)
        if mode == "dual":
            _sound(folder)
        cm = _open(folder, env=_env(API_STATE_MODE=mode))
        try:
            height = cm.get_height()
        finally:
            cm.close()
        if height not in (done, done + 1):
            raise Loss(f"{mode} mode: height {height} after {done} acknowledged")
        if mode == "dual":
            mirror = folder / "config-legacy.yaml"
            if mirror.exists() and mirror.stat().st_size:
                YAML(typ="safe").load(mirror.read_text())
        return 0

    return check


def _legacy_mode_setup(folder: Path) -> None:
    _write_config(folder, STATIC_CONFIG + "current_height: 0\nnodes: []\n")


# -- state copy ------------------------------------------------------------------------------------


def _copy_write(folder: Path, say: Say, seed: int) -> None:
    from dapi_config.settings import Settings
    from dapi_config.state_copy import copy_state

    copy_state(folder / "state.db", folder / "copy" / "state.db", Settings.from_env(_env()))
    say("ack copied")


def _copy_check(folder: Path, acks: list[str], seed: int) -> int:
    target = folder / "copy" / "state.db"
    expected = (77, {f"c-{i}" for i in range(4)})
    if not target.exists() or target.stat().st_size == 0:
        if "ack copied" in acks:
            raise Loss("the copy was acknowledged but the target is gone")
        return 0
    _integrity(target)
    (folder / "copy" / "config.yaml").write_text(STATIC_CONFIG)
    got = _opens_as(folder / "copy", None)
    if "ack copied" not in acks and got in (None, (0, set())):
        return 0  # an unfinished copy: the target is not a state, or an empty one
    if got != expected:
        raise Loss(f"the copied state is {got}, not the source's {expected}")
    return 0


def _copy_setup(folder: Path) -> None:
    _cipher_setup(folder)
    (folder / "copy").mkdir()


# -- mutation checks: writers with a known missing fsync -------------------------------------------


def _file_writer(sync_file: bool, sync_dir: bool) -> Callable[[Path, Say, int], None]:
    def write(folder: Path, say: Say, seed: int) -> None:
        target = folder / "data.txt"
        for n in range(1, 9):
            tmp = folder / "data.txt.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, f"value {n}\n".encode())
                if sync_file:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            if sync_dir:
                fsync_dir(folder)
            say(f"ack {n}")

    return write


def _file_check(folder: Path, acks: list[str], seed: int) -> int:
    done = max((int(a.split()[1]) for a in acks if a.startswith("ack ")), default=0)
    target = folder / "data.txt"
    text = target.read_text() if target.exists() else ""
    allowed = {f"value {done}\n", f"value {done + 1}\n"} | ({""} if done == 0 else set())
    if text not in allowed and not (done == 0 and not target.exists()):
        raise Loss(f"data.txt holds {text!r} after {done} acknowledged writes")
    return 0


def _file_setup(folder: Path) -> None:
    pass


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("mixed-full", _mixed_setup, _mixed_write("full"), _mixed_check(True)),
        Scenario("mixed-normal", _mixed_setup, _mixed_write("normal"), _mixed_check(False)),
        Scenario("migrate-full", _legacy_setup, _migrate_write("full"), _migrate_check),
        Scenario("migrate-normal", _legacy_setup, _migrate_write("normal"), _migrate_check),
        Scenario("seal", _seal_setup, _seal_write, _seal_check),
        Scenario("backup-restore", _restore_setup, _restore_write, _restore_check),
        Scenario("recovery", _recovery_setup, _recovery_write, _recovery_check),
        Scenario(
            "encrypt-rekey-decrypt", _cipher_setup, _cipher_write, _cipher_check, needs="sqlcipher3"
        ),
        Scenario("export", _mixed_setup, _export_write, _export_check),
        Scenario("dual", _mixed_setup, _mode_write("dual"), _mode_check("dual")),
        Scenario("yaml", _legacy_mode_setup, _mode_write("yaml"), _mode_check("yaml")),
        Scenario("state-copy", _copy_setup, _copy_write, _copy_check),
        Scenario("atomic-file", _file_setup, _file_writer(True, True), _file_check),
        # Deliberately broken: each must be reported as losses.
        Scenario(
            "mutation-rename-without-fsync",
            _file_setup,
            _file_writer(False, True),
            _file_check,
            mutation=True,
        ),
        Scenario(
            "mutation-no-directory-fsync",
            _file_setup,
            _file_writer(True, False),
            _file_check,
            mutation=True,
        ),
        Scenario(
            "mutation-normal-judged-as-full",
            _mixed_setup,
            _mixed_write("normal"),
            _mixed_check(True),
            mutation=True,
        ),
    ]
}


def available(scenario: Scenario) -> bool:
    if scenario.needs is None:
        return True
    try:
        __import__(scenario.needs)
    except ImportError:
        return False
    return True


# -- the zygote: a pre-warmed process that forks the writers and the checkers ----------------------


def _say(line: str) -> None:
    os.write(1, (line.replace("\n", " | ") + "\n").encode())


def _child(argv: list[str]) -> None:
    code = 0
    try:
        scenario = SCENARIOS[argv[1]]
        folder, seed = Path(argv[2]), int(argv[3])
        if argv[0] == "write":
            _say(f"start {os.getpid()}")
            scenario.write(folder, _say, seed)
        else:
            acks = json.loads(Path(argv[4]).read_text())
            try:
                lost = scenario.check(folder, acks, seed)
                _say("verdict " + json.dumps({"lost": lost}))
            except Loss as exc:
                _say("verdict " + json.dumps({"loss": str(exc)}))
    except BaseException:
        _say("error " + traceback.format_exc())
        code = 3
    finally:
        os._exit(code)


def zygote_main() -> None:
    # Imported once here, inherited by every fork.
    import dapi_config
    import dapi_config.export
    import dapi_config.state_copy  # noqa: F401

    serve_forks(_child)


# -- the campaign ----------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    name: str
    rounds: int = 0
    cuts: dict[str, int] = field(default_factory=dict)
    uncut: int = 0
    acknowledged: int = 0
    lost_allowed: int = 0
    failures: list[str] = field(default_factory=list)
    ops: int = 0
    fsyncs: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "cuts": dict(sorted(self.cuts.items())),
            "rounds_without_cut": self.uncut,
            "acknowledged": self.acknowledged,
            "acknowledged_lost_where_allowed": self.lost_allowed,
            "failures": len(self.failures),
            "first_failure": self.failures[0] if self.failures else None,
            "operations_per_run": self.ops,
            "fsyncs_per_run": self.fsyncs,
            "seconds": round(self.seconds, 1),
        }


class Campaign:
    """The simulator, the zygote and a scratch folder, for rounds of any scenario."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.fs = PowerFS(workdir / "fs")
        self._log = open(workdir / "writers.log", "w")  # noqa: SIM115
        self.zygote = Zygote("tests.faults.powerloss", "--zygote", stderr=self._log)
        self._round = 0
        self._setups: dict[str, Path] = {}

    def close(self) -> None:
        self.zygote.close()
        self.fs.close()
        self._log.close()

    def __enter__(self) -> Campaign:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self, scenario: Scenario) -> Path:
        if scenario.name not in self._setups:
            folder = self.workdir / "setup" / scenario.name
            folder.mkdir(parents=True)
            scenario.setup(folder)
            self._setups[scenario.name] = folder
        return self._setups[scenario.name]

    def run_round(
        self,
        scenario: Scenario,
        seed: int,
        *,
        at_op: int = 0,
        at_fsync: int = 0,
        torn_seed: int | None = None,
        cut_after: str | None = None,
    ) -> tuple[list[str], bool, str | None, int]:
        """One round; returns (acks, cut, loss or None, lost-where-allowed). ``cut_after``: cut
        the power as soon as the writer acknowledges a line starting with it."""
        self._round += 1
        name = f"round{self._round:05d}"
        folder = self.fs.new_round(name, self._setup(scenario))
        self.fs.arm(at_op=at_op, at_fsync=at_fsync, torn_seed=torn_seed)
        acks, error = self._write(scenario, folder, seed, cut_after)
        image = self.workdir / "images" / name
        image.mkdir(parents=True)
        cut = self.fs.image(name, image)
        self.fs.drop_round(name)
        if error is not None and not cut:
            raise RuntimeError(f"{scenario.name}: the writer failed without a power cut: {error}")
        ack_file = self.workdir / "images" / f"{name}.acks.json"
        ack_file.write_text(json.dumps(acks))
        verdict = self._check(scenario, image, seed, ack_file)
        if "loss" in verdict:
            kept = self.workdir / "failed" / name
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(image), kept)
            return acks, cut, f"{verdict['loss']} (picture kept in {kept})", 0
        shutil.rmtree(image)
        ack_file.unlink()
        return acks, cut, None, int(verdict["lost"])

    def _write(
        self, scenario: Scenario, folder: Path, seed: int, cut_after: str | None
    ) -> tuple[list[str], str | None]:
        self.zygote.send(f"write {scenario.name} {folder} {seed}")
        acks: list[str] = []
        error = None
        pid = None
        killed = False
        deadline = time.monotonic() + LINE_TIMEOUT_S
        while True:
            line = self.zygote.poll_line(0.05)
            if line is None:
                if not killed and pid is not None and self.fs.stats().cut:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)  # the machine is off: nothing more runs
                    killed = True
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{scenario.name}: the writer hangs")
                continue
            if line.startswith("start "):
                pid = int(line.split()[1])
            elif line.startswith("error "):
                error = line
            elif line.startswith("exit "):
                return acks, error
            else:
                acks.append(line)
                if cut_after is not None and line.startswith(cut_after):
                    self.fs.cut_now()
                    cut_after = None

    def _check(self, scenario: Scenario, image: Path, seed: int, acks: Path) -> dict[str, Any]:
        self.zygote.send(f"check {scenario.name} {image} {seed} {acks}")
        verdict: dict[str, Any] | None = None
        error = None
        while True:
            line = self.zygote.poll_line(LINE_TIMEOUT_S)
            if line is None:
                raise RuntimeError(f"{scenario.name}: the checker hangs")
            if line.startswith("verdict "):
                verdict = json.loads(line[len("verdict ") :])
            elif line.startswith("error "):
                error = line
            elif line.startswith("exit "):
                break
        if verdict is None:
            return {"loss": f"the check itself failed: {error}"}
        return verdict

    def calibrate(self, scenario: Scenario, seed: int) -> tuple[int, int]:
        """Run without a cut: the scenario's operation and fsync counts (and its check passes)."""
        _, _, loss, _ = self.run_round(scenario, seed)
        stats = self.fs.stats()
        if loss is not None and not scenario.mutation:
            raise RuntimeError(f"{scenario.name}: fails without any power cut: {loss}")
        return stats.ops, stats.fsyncs

    def run(self, scenario: Scenario, rounds: int, seed: int) -> ScenarioResult:
        """``rounds`` cuts aimed uniformly over the scenario's operations and fsyncs."""
        result = ScenarioResult(scenario.name)
        started = time.monotonic()
        rng = random.Random(seed)
        writer_seed = rng.randrange(2**32)
        result.ops, result.fsyncs = self.calibrate(scenario, writer_seed)
        for _ in range(rounds):
            kind = rng.choice(("operation", "fsync"))
            torn = rng.random() < 0.3
            at_op = rng.randint(1, result.ops) if kind == "operation" else 0
            at_fsync = rng.randint(1, max(result.fsyncs, 1)) if kind == "fsync" else 0
            acks, cut, loss, lost = self.run_round(
                scenario,
                writer_seed,
                at_op=at_op,
                at_fsync=at_fsync,
                torn_seed=rng.randrange(2**32) if torn else None,
            )
            result.rounds += 1
            label = f"{'torn ' if torn else ''}before {kind}"
            if cut:
                result.cuts[label] = result.cuts.get(label, 0) + 1
            else:
                result.uncut += 1
            result.acknowledged += sum(1 for a in acks if a.startswith(("ack", "backup", "keyver")))
            result.lost_allowed += lost
            if loss is not None:
                result.failures.append(f"{label} #{at_op or at_fsync}: {loss}")
        result.seconds = time.monotonic() - started
        return result


def campaign(
    rounds: int,
    *,
    names: list[str] | None = None,
    seed: int = 20261201,
    workdir: Path | None = None,
) -> dict[str, ScenarioResult]:
    """``rounds`` in all, spread over the chosen scenarios (default: every available one)."""
    chosen = [SCENARIOS[n] for n in names] if names else list(SCENARIOS.values())
    chosen = [s for s in chosen if available(s)]
    per = max(1, rounds // len(chosen))
    results: dict[str, ScenarioResult] = {}
    with contextlib.ExitStack() as stack:
        base = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        run = stack.enter_context(Campaign(base))
        for i, scenario in enumerate(chosen):
            results[scenario.name] = run.run(scenario, per, seed + i)
    return results


def table(results: dict[str, ScenarioResult]) -> str:
    """The RELIABILITY.md table: scenario, rounds, cuts by kind, failures."""
    lines = [
        "| scenario | rounds | cuts before an operation / an fsync (torn) | failures |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        op = r.cuts.get("before operation", 0)
        fs = r.cuts.get("before fsync", 0)
        top = r.cuts.get("torn before operation", 0)
        tfs = r.cuts.get("torn before fsync", 0)
        failures = f"{len(r.failures)}" + (" (must be > 0)" if SCENARIOS[name].mutation else "")
        lines.append(f"| {name} | {r.rounds} | {op} / {fs} ({top} / {tfs}) | {failures} |")
    return "\n".join(lines)


def main() -> None:
    if "--zygote" in sys.argv:
        zygote_main()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--workdir", type=Path, help="keep the scratch folder (and its logs) here")
    args = parser.parse_args()
    results = campaign(args.rounds, names=args.scenario, seed=args.seed, workdir=args.workdir)
    if args.json:
        print(json.dumps({n: r.to_dict() for n, r in results.items()}, indent=2))
    else:
        print(table(results))
        for name, r in results.items():
            for failure in r.failures[:3]:
                print(f"{name}: {failure}")
    bad = [n for n, r in results.items() if (bool(r.failures) != SCENARIOS[n].mutation)]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
