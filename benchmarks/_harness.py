"""Round-robin timing: every variant once per round, in a fresh shuffled order."""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

#: A variant runs ``n`` operations and returns seconds spent per label (one label per kind of
#: operation it times, e.g. add_node and remove_node of one add/remove pair).
Op = Callable[[int], dict[str, float]]


@dataclass
class Variant:
    name: str
    op: Op
    #: Operations per sample, calibrated so a sample lasts about the target time.
    batch: int = 1
    #: Multiplies the target time (the fsync-bound pairs need more operations per sample for
    #: a stable ratio on a noisy disk).
    weight: float = 1.0


@dataclass
class Samples:
    """Per-operation cost of one label, one value per round (seconds)."""

    values: list[float] = field(default_factory=list)


def calibrate(variants: Sequence[Variant], target_s: float, max_batch: int = 100_000) -> None:
    """Warm each variant up and pick its batch so one sample takes about ``target_s``."""
    for v in variants:
        target = target_s * v.weight
        start = time.perf_counter()
        v.op(1)  # first call: caches, statements, page cache
        if time.perf_counter() - start >= target:
            v.batch = 1  # slow enough alone (the legacy rewrite of a big registry)
            continue
        n = 1
        while True:
            start = time.perf_counter()
            v.op(n)
            elapsed = time.perf_counter() - start
            if elapsed >= target / 4 or n >= max_batch:
                break
            n *= 4
        per_op = elapsed / n
        v.batch = max(1, min(max_batch, math.ceil(target / per_op)))


def run_rounds(
    variants: Sequence[Variant],
    rounds: int,
    seed: int = 12,
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Run every variant once per round in a shuffled order; per-op seconds per label."""
    rng = random.Random(seed)
    out: dict[str, list[float]] = {}
    order = list(variants)
    for r in range(rounds):
        rng.shuffle(order)
        for v in order:
            for label, seconds in v.op(v.batch).items():
                out.setdefault(label, []).append(seconds / v.batch)
        if progress is not None:
            progress(r + 1)
    return out


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (q in [0, 1])."""
    data = sorted(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, p10, p90, quartiles and the sample count."""
    return {
        "median": statistics.median(values),
        "p10": quantile(values, 0.10),
        "p25": quantile(values, 0.25),
        "p75": quantile(values, 0.75),
        "p90": quantile(values, 0.90),
        "n": float(len(values)),
    }


def ratio(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Per-round ratios a/b (both measured in the same rounds), summarised."""
    return summary([x / y for x, y in zip(a, b, strict=True)])
