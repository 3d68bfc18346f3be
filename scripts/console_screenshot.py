"""Take the README's console screenshot (``docs/console.png``) from a clean example: the
example config copied into a directory of its own, served by the real ``dapi-config serve``,
filled through the real admin API the way a node fills it, and shown in headless Chromium.

    .venv/bin/python scripts/console_screenshot.py --dir /srv/dapi

The health strip shows where the state lives: give ``--dir`` a path an operator would have
(it must not exist yet; it is removed afterwards). It serves on the example's admin port,
9200, with an admin token it creates. Needs the dev venv (Playwright) and Debian's
``chromium``; no network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-gpu",
]
ADMIN = "/admin/v1"
MODEL = "Qwen/Qwen2.5-7B-Instruct"


def _node(node_id: str, host: str, gpus: int) -> dict[str, object]:
    return {
        "id": node_id,
        "host": host,
        "inference_port": 5000,
        "poc_port": 8080,
        "max_concurrent": 64,
        "models": {MODEL: {"args": ["--dtype", "float16"]}},
        "hardware": [{"type": "NVIDIA H100 80GB", "count": gpus}] if gpus else [],
    }


def _fill(client: httpx.Client) -> None:
    """A small node's day: three nodes, one disabled, a key, a schedule, a backup."""
    client.post(
        f"{ADMIN}/state/node-versions", json={"height": 1000, "version": "v0.2.0"}
    ).raise_for_status()
    for node in (
        _node("gpu-a", "10.0.0.5", 8),
        _node("gpu-b", "10.0.0.6", 8),
        _node("gpu-c", "10.0.0.7", 4),
    ):
        client.post(f"{ADMIN}/nodes", json=node).raise_for_status()
    client.post(f"{ADMIN}/nodes/gpu-c/disable").raise_for_status()
    client.post(f"{ADMIN}/nodes/gpu-a/security-key").raise_for_status()
    client.put(
        f"{ADMIN}/state/upgrade-plan", json={"name": "v0.2.1", "height": 2000}
    ).raise_for_status()
    client.post(
        f"{ADMIN}/state/node-versions", json={"height": 2000, "version": "v0.2.1"}
    ).raise_for_status()
    client.put(f"{ADMIN}/state/height", json={"height": 1234}).raise_for_status()
    client.post(f"{ADMIN}/backups").raise_for_status()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="where the example is served")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console.png")
    args = parser.parse_args()
    workdir: Path = args.dir.resolve()
    if workdir.exists():
        parser.error(f"{workdir} exists: give a directory that does not exist yet")
    workdir.mkdir(parents=True)
    try:
        config = workdir / "config.yaml"
        shutil.copyfile(ROOT / "examples" / "config.yaml", config)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DAPI_"))}
        cli = [sys.executable, "-m", "dapi_config", "--config", str(config)]
        token = subprocess.run(
            [*cli, "tokens", "create", "operator", "--role", "admin"],
            env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        # The example's admin port, as `make serve` uses it.
        server = subprocess.Popen([*cli, "serve"], cwd=workdir, env=env)
        try:
            url = "http://127.0.0.1:9200"
            auth = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the service did not become ready")
                    time.sleep(0.2)
                _fill(client)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
                )
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url + "/")
                page.fill("#token", token)
                page.click("#login-form button[type=submit]")
                page.wait_for_selector("#node-table tbody tr[data-node='gpu-c']")
                page.wait_for_selector("#backup-table tbody tr td:text('verified')")
                page.wait_for_selector("#feed li >> nth=5")
                page.screenshot(path=str(args.out), full_page=True)
                browser.close()
        finally:
            server.terminate()
            server.wait(30)
    finally:
        shutil.rmtree(workdir)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
