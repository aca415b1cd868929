"""Sign-in to a usable JupyterLab, and to a rendered Voilà dashboard, for 1 and for 10 users at once.

Starts the real workbench (`cloudmri up --demo` in a temporary directory: JupyterHub, its proxy, the API
service) and drives Debian's Chromium with Playwright, one browser context per user, all users of a round
signing in at the same moment. A user's time runs from opening the sign-in page to:

* **JupyterLab usable**: the launcher shows the "Cloud-MRI (Python 3)" kernel (researchers; their server
  spawned as their own system account when run as root);
* **dashboard rendered**: the reading app's worklist table is on the page (radiologists, each with the demo
  studies assigned: Voilà has executed the notebook and the browser has rendered the reading room widget).

The peer, in the same run: a bare ``jupyter lab`` process (no hub, no spawner, token in the URL), timed from
starting the process to the same launcher in the same browser: what any JupyterLab costs on this machine.
Every server is stopped between rounds. Run as root (CI's machine) for per-user accounts:

    python benchmarks/hub_spawn.py --markdown hub_spawn.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cloudmri_kernel import up  # noqa: E402
from cloudmri_kernel.processes import free_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
LAUNCHER = ".jp-LauncherCard[title='Cloud-MRI (Python 3)']"
WORKLIST = "table.reading-worklist tbody tr"
TIMEOUT_MS = 300_000


def _accounts(hub_dir: Path, users: int) -> dict[str, str]:
    """Demo accounts plus ``users`` researchers and radiologists, written where the authenticator reads them."""
    names = [*up.DEMO_USERS, *(f"bench-r{n:02d}" for n in range(users)), *(f"bench-d{n:02d}" for n in range(users))]
    passwords = {name: secrets.token_urlsafe(12) for name in names}
    hub_dir.mkdir(parents=True, mode=0o700)
    path = hub_dir / "demo-accounts.json"
    path.write_text(json.dumps(passwords))
    path.chmod(0o600)
    return passwords


def _join_groups(bench: up.Workbench, users: int) -> None:
    manager = {"Authorization": f"token {bench.manager_token}"}
    for prefix, group in (("bench-r", "researchers"), ("bench-d", "radiologists")):
        names = [f"{prefix}{n:02d}" for n in range(users)]
        httpx.post(f"{bench.url}/hub/api/users", json={"usernames": names}, headers=manager).raise_for_status()
        for target in (group, f"site-{up.DEMO_SITE}"):
            reply = httpx.post(f"{bench.url}/hub/api/groups/{target}/users", json={"users": names}, headers=manager)
            reply.raise_for_status()


def _assign_demo_studies(bench: up.Workbench, readers: list[str]) -> None:
    """The demo admin puts every demo dataset on each benchmark radiologist's worklist."""
    from cloudmri_kernel.client import Client

    with Client(f"{bench.url}/services/cloudmri", up.user_token(bench, "admin", "benchmark")) as admin:
        datasets = admin.datasets()
        for reader in readers:
            for dataset in datasets:
                admin.assign(dataset["id"], reader, priority=3)


async def _sign_in_and_wait(browser, bench: up.Workbench, user: str, password: str, selector: str) -> float:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    started = time.perf_counter()
    await page.goto(f"{bench.url}/hub/login")
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", password)
    await page.click("input[type=submit], button[type=submit]")
    await page.locator(selector).first.wait_for()
    elapsed = time.perf_counter() - started
    await context.close()
    return elapsed


def _stop_servers(bench: up.Workbench, users: list[str]) -> None:
    for user in users:
        token = up.user_token(bench, user, "benchmark")
        headers = {"Authorization": f"token {token}"}
        httpx.delete(f"{bench.url}/hub/api/users/{user}/server", headers=headers, timeout=120)
        deadline = time.monotonic() + 120
        while httpx.get(f"{bench.url}/hub/api/users/{user}", headers=headers).json()["servers"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{user}'s server did not stop")
            time.sleep(0.3)


async def _round(browser, bench, passwords, users: list[str], selector: str) -> list[float]:
    return list(await asyncio.gather(*(_sign_in_and_wait(browser, bench, user, passwords[user], selector)
                                       for user in users)))


async def _bare_jupyterlab(browser, home: Path) -> float:
    """Seconds from starting a plain `jupyter lab` to its launcher showing the Cloud-MRI kernel."""
    port, token = free_port(), secrets.token_hex(16)
    started = time.perf_counter()
    process = subprocess.Popen([str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser",
                                f"--port={port}", "--ip=127.0.0.1", f"--IdentityProvider.token={token}",
                                f"--ServerApp.root_dir={home}", "--allow-root"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        await page.goto(f"http://127.0.0.1:{port}/lab?token={token}")
        await page.locator(LAUNCHER).first.wait_for()
        elapsed = time.perf_counter() - started
        await context.close()
        return elapsed
    finally:
        process.terminate()
        process.wait(timeout=30)


def _stats(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f}"


async def run(users: int, repeats: int) -> list[str]:
    from playwright.async_api import async_playwright

    root = Path(tempfile.mkdtemp(prefix="cloudmri-bench-", dir="/tmp"))
    root.chmod(0o755)
    prefix = f"cmb{secrets.token_hex(2)}-"
    os.environ.update({"CLOUDMRI_HOMES_DIR": str(root / "homes"), "CLOUDMRI_SYSTEM_PREFIX": prefix})
    passwords = _accounts(root / "data" / "hub", users)
    bench = up.start(root / "data", port=free_port(), demo=True)
    rows = []
    try:
        _join_groups(bench, users)
        researchers = [f"bench-r{n:02d}" for n in range(users)]
        readers = [f"bench-d{n:02d}" for n in range(users)]
        _assign_demo_studies(bench, readers)
        async with async_playwright() as driver:
            browser = await driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
            bare = [await _bare_jupyterlab(browser, root) for _ in range(repeats)]
            rows.append(f"| bare `jupyter lab` (peer): process start → launcher | 1 | {repeats} | {_stats(bare)} |")
            for kind, group, selector in (("JupyterLab usable", researchers, LAUNCHER),
                                          ("dashboard rendered", readers, WORKLIST)):
                single = []
                for _ in range(repeats):
                    single += await _round(browser, bench, passwords, group[:1], selector)
                    _stop_servers(bench, group[:1])
                rows.append(f"| sign-in → {kind} | 1 | {repeats} | {_stats(single)} |")
                together = await _round(browser, bench, passwords, group, selector)
                _stop_servers(bench, group)
                rows.append(f"| sign-in → {kind} | {users} at once | {users} | {_stats(together)} |")
            await browser.close()
    finally:
        bench.stop()
        for name in [line.split(":")[0] for line in Path("/etc/passwd").read_text().splitlines()]:
            if name.startswith(prefix):
                subprocess.run(["userdel", name], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10, help="users signing in at once in the second round")
    parser.add_argument("--repeats", type=int, default=3, help="single-user rounds (median reported)")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = asyncio.run(run(args.users, args.repeats))
    cores = len(os.sched_getaffinity(0))
    lines = [f"* Machine: {cores} usable cores; per-user system accounts: {'yes' if os.geteuid() == 0 else 'no'}; "
             f"whole run {time.perf_counter() - started:.0f} s",
             "", "| what | users | samples | median s | min s | max s |", "|---|---|---:|---:|---:|---:|", *rows]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
