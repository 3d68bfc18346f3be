"""How long the operator console takes to show a registry (SPEC §14: under a second at 1,000).

A real ``dapi-config serve`` process on a loopback port serves a state of 10, 1,000 and 5,000
nodes (with a schedule, keys and an audit trail); headless Debian Chromium (Playwright) opens
the console cold (a new browser context each time: no cache) and the clock runs from the
navigation's start to the moment the node table holds every row and the health strip says
ready (the page's own ``performance.now()``). Each round opens every size once, in a shuffled
order; medians, and the ratio to the 10-node page measured in the same rounds.

``python -m benchmarks.console [--quick]``; writes ``benchmarks/results/console.json`` and
``console.md``. Needs ``/usr/bin/chromium`` (or ``DAPI_CONFIG_TEST_CHROMIUM``) and Playwright.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._harness import ratio, summary
from dapi_config import ConfigManager, InferenceNodeConfig

RESULTS = Path(__file__).resolve().parent / "results"
#: Rows the console draws before "Show all" (console.js PAGE_ROWS).
PAGE_ROWS = 200
CHROMIUM = Path(os.environ.get("DAPI_CONFIG_TEST_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-gpu",
]
CONFIG = """\
api:
  port: 8080
  admin_server_port: {port}
chain_node:
  url: http://127.0.0.1:26657
nats:
  host: 127.0.0.1
  port: 4222
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _state(folder: Path, nodes: int) -> tuple[Path, int]:
    port = _free_port()
    config = folder / "config.yaml"
    config.write_text(CONFIG.format(port=port))
    config.chmod(0o600)
    with ConfigManager.open(config) as cm:
        cm.set_height(1_234_567)
        cm.add_node_version(1_300_000, "v0.2.1")
        cm.add_nodes(
            [
                InferenceNodeConfig(
                    id=f"node-{i:05d}",
                    host=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                    inference_port=5000,
                    poc_port=8080,
                    max_concurrent=4,
                    models={"Qwen/Qwen2.5-7B-Instruct": {"args": ["--tp", "1"]}},
                    hardware=[{"type": "NVIDIA H100 80GB", "count": 8}],
                )
                for i in range(nodes)
            ]
        )
        for i in range(min(nodes, 20)):
            cm.create_security_key(f"node-{i:05d}")
        cm.backup()
    return config, port


def _serve(config: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dapi_config", "--config", str(config), "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("serve did not become ready")


def _load_ms(browser: Any, url: str, nodes: int) -> float:
    context = browser.new_context(service_workers="block")
    try:
        page = context.new_page()
        page.goto(url)
        first_page = min(nodes, PAGE_ROWS)
        last = f"node-{first_page - 1:05d}"
        page.wait_for_selector(f"tr[data-node='{last}']", state="attached", timeout=60_000)
        page.wait_for_selector("#h-ready:text('ready')", timeout=60_000)
        page.wait_for_selector("#feed li", state="attached", timeout=60_000)
        shown = page.locator("#node-table tbody tr[data-node]").count()
        if shown != first_page or page.inner_text("#node-count") != f"({nodes})":
            raise RuntimeError(f"{shown} rows shown, {first_page} expected")
        return float(page.evaluate("performance.now()"))
    finally:
        context.close()


def run(folder: Path, sizes: list[int], rounds: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    servers: dict[int, tuple[subprocess.Popen[bytes], str]] = {}
    samples: dict[int, list[float]] = {n: [] for n in sizes}
    try:
        for n in sizes:
            sub = folder / str(n)
            sub.mkdir()
            config, port = _state(sub, n)
            servers[n] = (_serve(config, port), f"http://127.0.0.1:{port}/")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=ARGS
            )
            try:
                for n in sizes:  # warm-up: the server's first request, the browser's first page
                    _load_ms(browser, servers[n][1], n)
                for _ in range(rounds):
                    order = list(sizes)
                    random.shuffle(order)
                    for n in order:
                        samples[n].append(_load_ms(browser, servers[n][1], n))
            finally:
                browser.close()
    finally:
        for proc, _url in servers.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    base = min(sizes)
    return {
        "rounds": rounds,
        "load_ms": {str(n): summary(samples[n]) for n in sizes},
        "ratio_to_smallest": {str(n): ratio(samples[n], samples[base]) for n in sizes},
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| nodes | page shown (ms, median) | p90 | vs the smallest registry |",
        "|---|---|---|---|",
    ]
    for n, stats in result["load_ms"].items():
        r = result["ratio_to_smallest"][n]["median"]
        lines.append(f"| {int(n):,} | {stats['median']:.0f} | {stats['p90']:.0f} | {r:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two rounds, 10 and 1,000 nodes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes, rounds = ([10, 1_000], 2) if args.quick else ([10, 1_000, 5_000], 7)
    with tempfile.TemporaryDirectory(prefix="dapi-bench-console-") as tmp:
        result = run(Path(tmp), sizes, rounds)
    result["command"] = "python -m benchmarks.console " + " ".join(argv or sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "console.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (args.out / "console.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
