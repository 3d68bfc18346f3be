"""Tables (markdown + JSON), the targets verdict and the plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from benchmarks._harness import ratio, summary

TARGETS_NOTE = "ratios are medians of per-round ratios; [p10–p90] across rounds"


def fmt_time(seconds: float) -> str:
    """3 significant digits in ns, µs, ms or s."""
    if math.isnan(seconds):
        return "–"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            value = seconds / scale
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"
    return f"{seconds} s"


def fmt_x(x: float) -> str:
    if math.isnan(x):
        return "–"
    return f"{x:.3g}×" if x < 1000 else f"{x:,.0f}×"


def cell(s: dict[str, float]) -> str:
    return f"{fmt_time(s['median'])} [{fmt_time(s['p10'])}–{fmt_time(s['p90'])}]"


def xcell(s: dict[str, float]) -> str:
    return f"**{fmt_x(s['median'])}** [{fmt_x(s['p10'])}–{fmt_x(s['p90'])}]"


def _cell_of(stats: dict[str, Any], label: str) -> str:
    return cell(stats[label]) if label in stats else "–"


def _xcell_of(ratios: dict[str, Any], key: str) -> str:
    return xcell(ratios[key]) if key in ratios else "–"


def analyse(samples: dict[str, list[float]], sizes: list[int]) -> dict[str, Any]:
    """Summaries of every label and the ratios the report and the targets need."""
    stats = {label: summary(v) for label, v in samples.items()}
    ratios: dict[str, dict[str, float]] = {}

    def add(name: str, a: str, b: str) -> None:
        if a in samples and b in samples:
            ratios[name] = ratio(samples[a], samples[b])

    for n in sizes:
        for op in ("set_height", "add_node", "remove_node"):
            for kind in ("truncate", "durable"):
                add(
                    f"legacy.{kind}/store.full {op}@{n}",
                    f"legacy.{kind}.{op}@{n}",
                    f"store.full.{op}@{n}",
                )
                add(
                    f"legacy.{kind}.io_only/store.full {op}@{n}",
                    f"legacy.{kind}.io_only@{n}",
                    f"store.full.{op}@{n}",
                )
            add(
                f"store.full/store.normal {op}@{n}",
                f"store.full.{op}@{n}",
                f"store.normal.{op}@{n}",
            )
            for dur in ("full", "normal"):
                add(f"scale.{dur} {op}@{n}/@1", f"scale.{dur}.{op}@{n}", f"scale.{dur}.{op}@1")
        for dur in ("full", "normal"):
            add(f"pair.{dur} store/floor@{n}", f"pair.{dur}.store@{n}", f"pair.{dur}.floor@{n}")
            add(
                f"pair.{dur} store/floor_audit@{n}",
                f"pair.{dur}.store@{n}",
                f"pair.{dur}.floor_audit@{n}",
            )
        add(f"pair.full store/fsync@{n}", f"pair.full.store@{n}", f"pair.full.fsync@{n}")
        add(f"pair.full floor/fsync@{n}", f"pair.full.floor@{n}", f"pair.full.fsync@{n}")
        add(
            f"legacy.marshal/legacy.truncate set_height@{n}",
            f"legacy.marshal@{n}",
            f"legacy.truncate.set_height@{n}",
        )
    add("get_height data_version/wal-index", "read.get_height.data_version", "read.get_height")
    return {"stats": stats, "ratios": ratios}


def targets(
    analysis: dict[str, Any], sizes: list[int], http: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Each §12 target of the issue: what was measured, and met or missed."""
    r, s = analysis["ratios"], analysis["stats"]
    rows: list[dict[str, Any]] = []

    def row(
        name: str, measured: float | None, limit: float, fmt: str, higher_is_better: bool
    ) -> None:
        if measured is None or math.isnan(measured):
            rows.append({"target": name, "measured": "not measured", "met": None})
            return
        met = measured >= limit if higher_is_better else measured <= limit
        rows.append(
            {"target": name, "measured": fmt.format(measured), "value": measured, "met": met}
        )

    def get(key: str) -> float | None:
        return r[key]["median"] if key in r else None

    worst_floor = max(
        (get(f"pair.full store/floor@{n}") or math.nan for n in sizes), default=math.nan
    )
    row(
        "durable set_height ≤ 1.3× bare SQLite UPSERT+COMMIT (worst size)",
        worst_floor,
        1.3,
        "{:.2f}×",
        False,
    )
    gh = s.get("read.get_height", {}).get("median")
    row("get_height ≤ 1 µs (wall)", None if gh is None else gh * 1e6, 1.0, "{:.2f} µs", False)
    gh_cpu = s.get("read.get_height.cpu", {}).get("median")
    row(
        "get_height ≤ 1 µs (CPU)", None if gh_cpu is None else gh_cpu * 1e6, 1.0, "{:.2f} µs", False
    )
    big = max(sizes)
    if big >= 10_000:
        row(
            f"set_height at {big:,} nodes ≤ 1.2× at 1 node",
            get(f"scale.full set_height@{big}/@1"),
            1.2,
            "{:.2f}×",
            False,
        )
        row(
            f"add_node at {big:,} nodes ≤ 1.2× at 1 node",
            get(f"scale.full add_node@{big}/@1"),
            1.2,
            "{:.2f}×",
            False,
        )
    if 100 in sizes:
        for op in ("set_height", "add_node", "remove_node"):
            row(
                f"{op} ≥ 50× faster than the durable legacy rewrite at 100 nodes",
                get(f"legacy.durable/store.full {op}@100"),
                50,
                "{:.1f}×",
                True,
            )
    if http is not None:
        row(
            "≥ 1,000 durable node writes/s over HTTP (16 clients)",
            http["writes_per_s"]["median"],
            1000,
            "{:.0f}/s",
            True,
        )
        row("HTTP p99 < 50 ms", http["p99_ms"]["median"], 50, "{:.1f} ms", False)
        row(
            "service RSS ≤ 80 MB (peak, after the load)",
            http["rss_peak_mib"] * 1.048576,
            80,
            "{:.1f} MB",
            False,
        )
    else:
        for name in (
            "≥ 1,000 durable node writes/s over HTTP (16 clients)",
            "HTTP p99 < 50 ms",
            "service RSS ≤ 80 MB",
        ):
            row(name, None, 0, "", True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    m, a, sizes = result["machine"], result["analysis"], result["sizes"]
    s, r = a["stats"], a["ratios"]
    lines = [f"# dapi-config benchmarks — {result['mode']} run", ""]
    lines += [f"Reproduce: `{result['command']}`", ""]
    lines += ["## Machine", "", "| | |", "|---|---|"]
    for key, value in m.items():
        lines.append(f"| {key} | {value} |")
    lines += [
        "",
        f"Rounds: {result['rounds']} (every variant once per round, shuffled order; "
        f"{TARGETS_NOTE}). Times are per operation: median [p10–p90] over rounds.",
        "",
    ]
    if result.get("note"):
        lines += [f"Note: {result['note']}", ""]

    lines += ["## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    for t in result["targets"]:
        verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "**missed**")
        lines.append(f"| {t['target']} | {t['measured']} | {verdict} |")

    for op in ("set_height", "add_node", "remove_node"):
        lines += [
            "",
            f"## `{op}`: new store vs the legacy full rewrite",
            "",
            "Legacy columns marshal the whole config with the marshaller named above; "
            "*I/O only* writes already-marshalled bytes (an infinitely fast marshaller: "
            "the most conservative baseline).",
            "",
            "| nodes | store (full) | store (normal) | legacy truncate | legacy durable "
            "| legacy durable, I/O only | legacy truncate / store | legacy durable / store "
            "| legacy durable I/O only / store |",
            "|---:|---|---|---|---|---|---|---|---|",
        ]
        for n in sizes:

            def c(label: str) -> str:
                return cell(s[label]) if label in s else "–"

            def x(key: str) -> str:
                return xcell(r[key]) if key in r else "–"

            lines.append(
                f"| {n:,} | {c(f'store.full.{op}@{n}')} | {c(f'store.normal.{op}@{n}')} "
                f"| {c(f'legacy.truncate.{op}@{n}')} | {c(f'legacy.durable.{op}@{n}')} "
                f"| {c(f'legacy.durable.io_only@{n}')} "
                f"| {x(f'legacy.truncate/store.full {op}@{n}')} "
                f"| {x(f'legacy.durable/store.full {op}@{n}')} "
                f"| {x(f'legacy.durable.io_only/store.full {op}@{n}')} |"
            )

    lines += [
        "",
        "## Registry size: cost at N nodes / cost at 1 node (new store)",
        "",
        "Measured in one loop that calls the stores of every size in turn (order reversed "
        "every other call); per-op medians [p10–p90] are in the JSON under `scale.*`.",
        "",
        "| nodes | set_height (full) | add_node (full) | remove_node (full) "
        "| set_height (normal) | add_node (normal) | remove_node (normal) |",
        "|---:|---|---|---|---|---|---|",
    ]
    for n in sizes:

        def x2(key: str) -> str:
            return xcell(r[key]) if key in r else "–"

        lines.append(
            f"| {n:,} | {x2(f'scale.full set_height@{n}/@1')} "
            f"| {x2(f'scale.full add_node@{n}/@1')} "
            f"| {x2(f'scale.full remove_node@{n}/@1')} "
            f"| {x2(f'scale.normal set_height@{n}/@1')} "
            f"| {x2(f'scale.normal add_node@{n}/@1')} "
            f"| {x2(f'scale.normal remove_node@{n}/@1')} |"
        )

    lines += [
        "",
        "## `set_height` against the floor and the physical limit",
        "",
        "Floor: a bare `BEGIN IMMEDIATE; UPSERT; COMMIT` of the height row through the project's "
        "own `Database` (same pragmas, same WAL mode), in a database of its own. Physical limit: "
        "`pwrite` of 4 KiB in place + `fsync`. Each `set_height` is immediately followed by one "
        "floor commit and one fsync (order reversed every other time), so each ratio compares "
        "operations made at the same moment. *Floor + audit* is the floor plus the one audit-log "
        "INSERT (same table, AUTOINCREMENT) that `set_height` commits with the height: what "
        "SQLite itself charges for the audit trail; `set_height` / *floor + audit* is then the "
        "product's own overhead (reading the old height, the schedule lookup, validation, Python).",
        "",
        "| nodes | set_height (full) | floor (full) | floor + audit (full) | fsync 4 KiB "
        "| set_height / floor (full) | set_height / floor + audit (full) | set_height / fsync "
        "| set_height (normal) | floor (normal) | floor + audit (normal) "
        "| set_height / floor (normal) | set_height / floor + audit (normal) |",
        "|---:|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sizes:

        def c3(label: str) -> str:
            return cell(s[label]) if label in s else "–"

        def x3(key: str) -> str:
            return xcell(r[key]) if key in r else "–"

        lines.append(
            f"| {n:,} | {c3(f'pair.full.store@{n}')} | {c3(f'pair.full.floor@{n}')} "
            f"| {c3(f'pair.full.floor_audit@{n}')} "
            f"| {c3(f'pair.full.fsync@{n}')} | {x3(f'pair.full store/floor@{n}')} "
            f"| {x3(f'pair.full store/floor_audit@{n}')} "
            f"| {x3(f'pair.full store/fsync@{n}')} | {c3(f'pair.normal.store@{n}')} "
            f"| {c3(f'pair.normal.floor@{n}')} | {c3(f'pair.normal.floor_audit@{n}')} "
            f"| {x3(f'pair.normal store/floor@{n}')} "
            f"| {x3(f'pair.normal store/floor_audit@{n}')} |"
        )

    lines += [
        "",
        "## Legacy rewrite: how much of it is YAML marshalling",
        "",
        "| nodes | file size | marshal only | PyYAML CSafeDumper (reference) "
        "| truncate write, I/O only | durable write, I/O only | marshal / truncate-rewrite |",
        "|---:|---|---|---|---|---|---|",
    ]
    for n in sizes:
        size = result.get("legacy_file_bytes", {}).get(str(n))
        size_text = f"{size / 1024:,.1f} KiB" if size else "–"
        lines.append(
            f"| {n:,} | {size_text} | {_cell_of(s, f'legacy.marshal@{n}')} "
            f"| {_cell_of(s, f'legacy.marshal_pyyaml@{n}')} "
            f"| {cell(s[f'legacy.truncate.io_only@{n}'])} "
            f"| {cell(s[f'legacy.durable.io_only@{n}'])} "
            f"| {_xcell_of(r, f'legacy.marshal/legacy.truncate set_height@{n}')} |"
        )

    reads = [k for k in s if k.startswith("read.") and not k.endswith(".cpu")]
    if reads:
        names = {
            "read.get_height": "`get_height` (WAL-index header check)",
            "read.get_height.data_version": "`get_height` with the `PRAGMA data_version` fallback",
            "read.get_height.after_commit": (
                "`get_height`, first read after another connection's commit"
            ),
        }
        lines += [
            "",
            "## Reads",
            "",
            "Wall time, and the reading thread's CPU time (what the read costs when the "
            "scheduler does not take the core away mid-sample).",
            "",
            "| read | wall | CPU |",
            "|---|---|---|",
        ]
        for k in sorted(reads):
            label = names.get(k, f"`{k.removeprefix('read.').replace('@', '` at ')} nodes")
            cpu = cell(s[f"{k}.cpu"]) if f"{k}.cpu" in s else "–"
            lines.append(f"| {label} | {cell(s[k])} | {cpu} |")
        if "get_height data_version/wal-index" in r:
            lines += [
                "",
                "The header check makes `get_height` "
                f"{xcell(r['get_height data_version/wal-index'])} faster than the "
                "`PRAGMA data_version` check it replaced (wall time, same rounds).",
            ]

    http = result.get("http")
    lines += ["", "## HTTP: `POST /admin/v1/nodes` through `dapi-config serve`", ""]
    if http is None:
        lines.append(f"Not measured: {result.get('http_skipped', 'skipped')}.")
    else:
        lines += [
            f"{http['clients']} concurrent keep-alive clients on loopback, "
            f"{len(http['runs'])} runs of at most {http['requests_per_run']:,} requests or "
            f"{http['max_seconds_per_run']:.0f} s; durability full. Clients and server share "
            "the machine's cores.",
            "",
            "| | median [p10–p90] over runs |",
            "|---|---|",
            f"| node writes/s | {http['writes_per_s']['median']:,.0f} "
            f"[{http['writes_per_s']['p10']:,.0f}–{http['writes_per_s']['p90']:,.0f}] |",
            f"| latency p50 | {http['p50_ms']['median']:.2f} ms "
            f"[{http['p50_ms']['p10']:.2f}–{http['p50_ms']['p90']:.2f}] |",
            f"| latency p99 | {http['p99_ms']['median']:.2f} ms "
            f"[{http['p99_ms']['p10']:.2f}–{http['p99_ms']['p90']:.2f}] |",
            f"| server CPU per request | {http['server_cpu_ms_per_request']['median']:.2f} ms |",
            f"| server CPU busy (cores) | {http['server_cpu_busy']['median']:.2f} |",
            f"| errors | {http['errors']} |",
            f"| nodes acknowledged / stored | {http['nodes_acknowledged']:,} "
            f"/ {http['nodes_stored']:,} |",
            f"| service RSS idle / after load / peak | {http['rss_idle_mib']:.1f} / "
            f"{http['rss_after_mib']:.1f} / {http['rss_peak_mib']:.1f} MiB |",
        ]
    if result.get("plot"):
        lines += [
            "",
            "## Cost against registry size",
            "",
            f"![cost vs registry size]({result['plot']})",
        ]
    lines.append("")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    """Cost per write against registry size, new store vs legacy rewrite (log-log)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    s, sizes = result["analysis"]["stats"], result["sizes"]
    fig, ax = plt.subplots(figsize=(10.5, 5.4), dpi=110)
    series = [
        ("legacy.durable.set_height", "legacy rewrite, durable (set_height)", "tab:red", "-"),
        ("legacy.truncate.set_height", "legacy rewrite, O_TRUNC (set_height)", "tab:orange", "-"),
        ("legacy.durable.add_node", "legacy rewrite, durable (add_node)", "tab:red", ":"),
        ("legacy.durable.io_only", "legacy rewrite, durable, I/O only", "tab:brown", "-."),
        ("store.full.set_height", "new store, full (set_height)", "tab:blue", "-"),
        ("store.full.add_node", "new store, full (add_node)", "tab:blue", ":"),
        ("store.normal.set_height", "new store, normal (set_height)", "tab:cyan", "-"),
    ]
    for key, name, color, style in series:
        xs = [n for n in sizes if f"{key}@{n}" in s]
        if not xs:
            continue
        med = [s[f"{key}@{n}"]["median"] * 1e3 for n in xs]
        lo = [m - s[f"{key}@{n}"]["p10"] * 1e3 for m, n in zip(med, xs, strict=True)]
        hi = [s[f"{key}@{n}"]["p90"] * 1e3 - m for m, n in zip(med, xs, strict=True)]
        ax.errorbar(
            xs,
            med,
            yerr=[lo, hi],
            label=name,
            color=color,
            linestyle=style,
            marker="o",
            markersize=4,
            capsize=3,
        )
    for key, name, color in (
        ("floor.full", "bare SQLite commit (full)", "gray"),
        ("fsync4k", "one fsync of 4 KiB", "black"),
    ):  # measured alone, every round
        if key in s:
            ax.axhline(s[key]["median"] * 1e3, color=color, linestyle="--", linewidth=1, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("registered inference nodes")
    ax.set_ylabel("cost per write (ms, median, p10–p90 bars)")
    ax.set_title(f"dapi-config: cost per write vs registry size ({result['mode']} run)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    mode = result["mode"]
    png = out_dir / f"{mode}_cost_vs_registry.png"
    if plot(result, png):
        result["plot"] = png.name
    json_path = out_dir / f"{mode}.json"
    json_path.write_text(json.dumps(result, indent=1, sort_keys=False, default=str) + "\n")
    md_path = out_dir / f"{mode}.md"
    md_path.write_text(markdown(result))
    return md_path, json_path
