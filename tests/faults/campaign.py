"""The kill -9 campaign: drive writers through :mod:`._zygote`, kill them, check the state.

Run it directly for the long version documented in RELIABILITY.md::

    .venv/bin/python -m tests.faults.campaign --rounds 1000 --legacy-rounds 1000

After every kill of a dapi-config writer: ``PRAGMA integrity_check`` is ``ok``; the open-time
check finds nothing to recover; and the state equals the model after the acknowledged
operations (or after one more, committed but not yet acknowledged when the kill landed).
The legacy rounds run the predecessor's write path under the same kills and count the files
left empty, unparsable or truncated.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from dapi_config import ConfigManager
from dapi_config.store.backup import backup_dir_for
from dapi_config.store.recovery import QUARANTINE_DIR_NAME, diagnose
from tests.faults._workload import Model, normalise, operations, read_state

ROOT = Path(__file__).resolve().parents[2]
LINE_TIMEOUT_S = 120.0
CONFIG_TEXT = """\
api:
  port: 8080
  admin_server_port: 9200
chain_node:
  url: http://127.0.0.1:26657
nats:
  host: 127.0.0.1
  port: 4222
"""


class CampaignFailure(AssertionError):
    """An acknowledged change is missing, the file is damaged, or the writer misbehaved."""


class Zygote:
    """A pre-warmed forking process (``_zygote`` by default) and a reader thread for its
    output; ``stderr`` is where its children's warnings go (default: inherited)."""

    def __init__(self, *command: str, stderr: Any = None) -> None:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_", "CONFIG_"))
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *(command or ("tests.faults._zygote",))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def poll_line(self, timeout: float) -> str | None:
        """The next line, or None when none came within ``timeout`` seconds."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None:
            raise CampaignFailure(f"the zygote died (exit {self.proc.wait(60)})")
        return line

    def next_line(self) -> str:
        line = self.poll_line(LINE_TIMEOUT_S)
        if line is None:
            raise CampaignFailure("the writer said nothing for two minutes")
        return line

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(60)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._reader.join(60)

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Outcome:
    """What one kill round saw."""

    acked: int
    committed_unacked: bool
    killed_before_ready: bool
    exit_code: int


def _run_and_kill(
    zygote: Zygote, command: str, rng: random.Random, max_delay: float
) -> tuple[int, bool, list[str], int]:
    """Send ``command``, kill the writer at a random moment; returns (acks, before_ready, acks
    lines, exit code)."""
    zygote.send(command)
    first = zygote.next_line()
    if not first.startswith("start "):
        raise CampaignFailure(f"unexpected first line {first!r}")
    pid = int(first.split()[1])
    early = rng.random() < 0.1
    lines: list[str] = []
    if early:
        time.sleep(rng.uniform(0, 0.02))  # often lands inside ConfigManager.open
    else:
        while True:
            line = zygote.next_line()
            if line == "ready":
                break
            lines.append(line)
            if line.startswith(("exit", "error")):
                raise CampaignFailure(f"writer failed before ready: {line}")
        time.sleep(rng.uniform(0, max_delay))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while True:
        line = zygote.next_line()
        if line.startswith("exit "):
            code = int(line.split()[1])
            break
        lines.append(line)
    errors = [x for x in lines if x.startswith("error")]
    if errors:
        raise CampaignFailure(errors[0])
    acks = [int(x.split()[1]) for x in lines if x.startswith("ack ")]
    if code != -signal.SIGKILL:
        raise CampaignFailure(f"writer exited with {code}, not by SIGKILL")
    return (max(acks) if acks else 0), early, lines, code


def integrity_ok(state: Path) -> None:
    """``PRAGMA integrity_check`` straight on the file, as the next start would open it."""
    if not state.exists():
        return
    conn = sqlite3.connect(state)
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    finally:
        conn.close()
    if rows != ["ok"]:
        raise CampaignFailure(f"integrity_check: {rows[:3]}")


@dataclass
class CampaignResult:
    rounds: int = 0
    acknowledged: int = 0
    committed_unacked: int = 0
    killed_before_ready: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "acknowledged_changes_checked": self.acknowledged,
            "rounds_with_committed_but_unacknowledged_change": self.committed_unacked,
            "rounds_killed_during_open": self.killed_before_ready,
            "failures": self.failures,
            "seconds": round(self.seconds, 1),
        }


def kill_campaign(
    directory: Path, rounds: int, *, seed: int = 20261127, max_delay: float = 0.25
) -> CampaignResult:
    """``rounds`` kill rounds of the mixed writer on one state file in ``directory``."""
    config = directory / "config.yaml"
    config.write_text(CONFIG_TEXT)
    config.chmod(0o600)
    state = directory / "state.db"
    rng = random.Random(seed)
    result = CampaignResult()
    started = time.monotonic()
    with ConfigManager.open(config) as cm:
        baseline = normalise(read_state(cm))
    with Zygote() as zygote:
        for round_no in range(1, rounds + 1):
            op_seed = rng.randrange(2**32)
            start_height = baseline.height
            acked, early, _lines, _code = _run_and_kill(
                zygote,
                f"mixed {op_seed} {round_no} {start_height} {config}",
                rng,
                max_delay,
            )
            try:
                integrity_ok(state)
                problem = diagnose(state, backup_dir_for(state))
                if problem is not None:
                    raise CampaignFailure(f"the open-time check would recover: {problem}")
                with ConfigManager.open(config) as cm:
                    actual = normalise(read_state(cm))
                expected = _expected(baseline, op_seed, round_no, start_height, acked)
                if actual == expected[0]:
                    pass
                elif actual == expected[1]:
                    result.committed_unacked += 1
                else:
                    raise CampaignFailure(
                        f"state after {acked} acknowledged ops differs from the model:\n"
                        f"  actual   {actual}\n  expected {expected[0]}\n"
                        f"  or       {expected[1]}"
                    )
            except CampaignFailure as exc:
                result.failures.append(f"round {round_no} (seed {op_seed}): {exc}")
                break
            baseline = actual
            result.rounds += 1
            result.acknowledged += acked
            result.killed_before_ready += early
    if (directory / QUARANTINE_DIR_NAME).exists():
        result.failures.append("a quarantine folder appeared: something was judged damaged")
    result.seconds = time.monotonic() - started
    return result


def _expected(
    baseline: Model, seed: int, round_no: int, start_height: int, acked: int
) -> tuple[Model, Model]:
    model = baseline.copy()
    ops = operations(seed, round_no, start_height)
    for _ in range(acked):
        model.apply(next(ops))
    after = model.copy()
    after.apply(next(ops))
    return normalise(model), normalise(after)


@dataclass
class LegacyResult:
    rounds: int = 0
    empty: int = 0
    unparsable: int = 0
    truncated: int = 0
    intact: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        lost = self.empty + self.unparsable + self.truncated
        return {
            "rounds": self.rounds,
            "empty": self.empty,
            "unparsable": self.unparsable,
            "truncated_but_parsable": self.truncated,
            "intact": self.intact,
            "configuration_lost": lost,
            "seconds": round(self.seconds, 1),
        }


def legacy_campaign(
    directory: Path,
    rounds: int,
    *,
    nodes: int = 100,
    seed: int = 20261127,
    max_delay: float = 0.25,
) -> LegacyResult:
    """The same kills against the predecessor's write path (truncate, then write the YAML)."""
    path = directory / "config.yaml"
    rng = random.Random(seed)
    result = LegacyResult()
    started = time.monotonic()
    yaml = YAML(typ="safe")
    with Zygote() as zygote:
        for round_no in range(1, rounds + 1):
            _run_and_kill(zygote, f"legacy 0 {round_no} {path} {nodes}", rng, max_delay)
            result.rounds += 1
            data = path.read_bytes() if path.exists() else b""
            if not data:
                result.empty += 1
                continue
            try:
                doc = yaml.load(data)
            except Exception:
                result.unparsable += 1
                continue
            if (
                not isinstance(doc, dict)
                or "nats" not in doc
                or len(doc.get("nodes") or []) != nodes
            ):
                result.truncated += 1
            else:
                result.intact += 1
    result.seconds = time.monotonic() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--legacy-rounds", type=int, default=1000)
    parser.add_argument("--legacy-nodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--max-delay", type=float, default=0.25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "store").mkdir()
        (base / "legacy").mkdir()
        store = kill_campaign(base / "store", args.rounds, seed=args.seed, max_delay=args.max_delay)
        legacy = legacy_campaign(
            base / "legacy",
            args.legacy_rounds,
            nodes=args.legacy_nodes,
            seed=args.seed,
            max_delay=args.max_delay,
        )
    print(json.dumps({"dapi_config": store.to_dict(), "legacy": legacy.to_dict()}, indent=2))
    sys.exit(1 if store.failures else 0)


if __name__ == "__main__":
    main()
