"""Apps in real Chromium: navigation start → first widget visible, warm and cold, vs anchors.

Run from the repository root, as root (the hub authenticates with PAM; jobs run as the
user, bob by default)::

    sudo /opt/shopfloor/venv/bin/python -m benchmarks.apps_browser --runs 5 --table

Debian's Chromium (``/usr/bin/chromium``) driven by Playwright, headless, one browser
context per arm (its cookies kept: a viewer who already opened the app once). Each view opens
a new page, navigates and waits until the notebook's slider (``.widget-slider``) is visible;
the time is measured around that (``page.goto`` → selector visible) and, as a cross-check,
``performance.now()`` of the final document (its own navigation start, which excludes the
progress page of a cold start). Arms, interleaved per round with the first arm rotating:

* ``warm``: a published app of the user through the app origin (``apps.origin_url``, the apps
  service in front of the app's Slurm job), its pool preheated; the owner views it.
* ``direct_voila`` (anchor): a standalone ``voila`` on this machine with the *same* preheat
  settings as the app job (``shopfloor.apps.job.voila_argv``: preheat, pool size, no
  sources), reached directly on its port, no hub, no proxy.
* ``lab_voila`` (anchor): the same notebook rendered by the Voila server extension inside
  the user's running JupyterLab session (``/user/<user>/voila/render/...`` through the hub's
  proxy): what a hub without Shopfloor shares. The extension cannot preheat.
* ``cold``: a freshly published app: the first visit starts its Slurm job; the time runs
  from navigation start through the progress page to the slider. Each cold run also records
  the service's phases and the job's own timings (``phases``, ``job_timings``). Its browser
  has viewed another app before (the warm arm's app, once, before the rounds): Voila's files
  come from the browser's cache, as for anyone who opened any app of the site before. This
  is the goal figure of issue 17.
* ``cold_first``: the same, in a new browser context for every view (an empty cache: the
  first app a browser ever opens on the site; its login happens before the clock starts).

Every view records ``breakdown_ms`` from the final document's own timeline (first byte, page
done, DOM ready, load, the widget manager's kernel request, the widget; resources fetched from
the server vs the cache). Views end as a viewer closing the tab does (Voila's goodbye beacon
frees the kernel), so repeated views never hit the per-viewer kernel cap.

Between rounds the benchmark waits ``--refill-wait`` so that pools refill (an app in use).
Targets (issue 17): warm median ≤ 1.2x ``direct_voila``; cold median ≤ 3 s.
JSON on stdout, a table on stderr (``--table``: the table on stdout).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import yaml

from benchmarks.anchors import load_average, rotate, spread
from benchmarks.apps import NOTEBOOK, login, wait_no_jobs
from benchmarks.report import RunResult, emit, format_grid, format_table, ratio, summarize
from shopfloor.apps.job import voila_argv

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SHOPFLOOR_CHROMIUM", "/usr/bin/chromium")
WIDGET = ".widget-slider"
ARMS = ("warm", "direct_voila", "lab_voila", "cold", "cold_first")
TARGET_WARM_RATIO = 1.2
TARGET_COLD_S = 3.0
FOLDER = "apps-bench"


def targets(blocks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ratios and whether the issue's targets are met (``None`` where an arm is missing)."""
    warm = blocks.get("warm", {}).get("median")
    cold = blocks.get("cold", {}).get("median")
    over_direct = ratio(warm, blocks.get("direct_voila", {}).get("median"))
    return {
        "warm_over_direct_voila": over_direct,
        "warm_over_lab_voila": ratio(warm, blocks.get("lab_voila", {}).get("median")),
        "cold_over_direct_voila": ratio(cold, blocks.get("direct_voila", {}).get("median")),
        "warm_met": None if over_direct is None else over_direct <= TARGET_WARM_RATIO,
        "cold_met": None if cold is None else cold <= TARGET_COLD_S,
        "cold_first_met": None if (first := blocks.get("cold_first", {}).get("median")) is None
        else first <= TARGET_COLD_S,
    }


# -- the servers --------------------------------------------------------------------------------


@contextmanager
def bench_hub(port_base: int, partition: str) -> Iterator[tuple[str, str, dict[str, str]]]:
    """Our hub (apps service included) on ``port_base``..+2: yields (hub, app origin, passwords)."""
    from shopfloor.apps.model import app_origin
    from shopfloor.demo.hub import Credentials, Hub, credentials_path, default_site_file
    from shopfloor.site import load_site

    passwords = Credentials(credentials_path(load_site(default_site_file()))).ensure()
    directory = Path(tempfile.mkdtemp(prefix="shopfloor-bench-apps-browser-"))
    directory.chmod(0o711)  # owners must reach the app store beside the hub's state
    data = yaml.safe_load((REPO / "hub_config" / "demo_site.yaml").read_text())
    for offset, key in enumerate(("bind_url", "hub_bind_url", "proxy_api_url")):
        data["hub"][key] = f"http://127.0.0.1:{port_base + offset}"
    data["hub"]["state_dir"] = str(directory / "hub")
    data["apps"] = {**data.get("apps", {}), "partition": partition, "walltime": "0:20:00",
                    "idle_stop_minutes": 10}
    site_file = directory / "site.yaml"
    site_file.write_text(yaml.safe_dump(data))
    site = load_site(site_file)
    hub = Hub(site, site_file)
    hub.start(detach=True)
    try:
        base = f"http://127.0.0.1:{port_base}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not _service_answers(base):
            time.sleep(0.3)
        yield base, app_origin(site.hub.bind_url, site.apps).url, passwords
    finally:
        hub.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _service_answers(base: str) -> bool:
    """Whether the apps service itself answers through the proxy: its JSON 404 for an app
    nobody published (until the hub has routed the service, the hub answers in HTML, and a
    redirect of the gallery's address proves nothing)."""
    try:
        reply = requests.get(f"{base}/services/apps/api/apps/nobody/nothing/status", timeout=5,
                             allow_redirects=False)
        return reply.status_code == 404 and reply.json().get("status") == 404
    except (requests.RequestException, ValueError):
        return False


@contextmanager
def direct_voila(notebook: Path, port: int, pool_size: int) -> Iterator[str]:
    """A standalone Voila with the app job's own settings (preheated pool), on ``port``."""
    argv = voila_argv(str(notebook), "/", "127.0.0.1", port, pool_size)
    proc = subprocess.Popen([sys.executable, "-m", "voila", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                requests.get(url + "voila/static/", timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def install_notebook(user: str) -> Path:
    """The benchmark's copy of the example notebook in ``user``'s home (as the user)."""
    folder = Path(f"/home/{user}/{FOLDER}")
    subprocess.run(["sudo", "-u", user, "--", "mkdir", "-p", str(folder)], check=True)
    subprocess.run(["sudo", "-u", user, "--", "cp", str(NOTEBOOK), str(folder)], check=True)
    return folder / NOTEBOOK.name


def start_session(http: requests.Session, base: str, user: str, partition: str,
                  timeout: float = 180) -> None:
    """Start ``user``'s JupyterLab session (the Voila server extension's host) and wait."""
    options = {"partition": partition, "cpus": 1, "memory_gb": 1, "walltime": "30"}
    reply = http.post(f"{base}/hub/api/users/{user}/server", json=options, timeout=60)
    if reply.status_code not in (201, 202, 400):  # 400: already running
        raise RuntimeError(f"spawn answered {reply.status_code}: {reply.text[:200]}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = http.get(f"{base}/hub/api/users/{user}", timeout=30).json()["servers"].get("")
        if server and server.get("ready"):
            return
        time.sleep(0.3)
    raise RuntimeError(f"{user}'s session did not start in {timeout:.0f} s")


# -- the browser ----------------------------------------------------------------------------------


def view(context: Any, url: str, timeout_s: float) -> RunResult:
    """Open ``url`` in a new page of ``context``; seconds until the slider is visible."""
    page = context.new_page()
    try:
        started = time.perf_counter()
        page.goto(url, wait_until="commit", timeout=timeout_s * 1000)
        page.wait_for_selector(WIDGET, state="visible", timeout=timeout_s * 1000)
        seconds = time.perf_counter() - started
        timing = page.evaluate(_TIMING_JS)
        in_page = timing.pop("now_ms") / 1000
        return RunResult(0, True, seconds, detail={"document_s": round(in_page, 3),
                                                   "final_url_path": _path(page.url),
                                                   "breakdown_ms": timing})
    except Exception as exc:  # Playwright's errors; recorded as a failed view with the reason
        try:  # where it got stuck: the page's path and the start of its visible text
            where = f" at {_path(page.url)}: {page.inner_text('body')[:200]!r}"
        except Exception:  # the page itself is gone
            where = ""
        return RunResult(0, False, error=f"{type(exc).__name__}{where}")
    finally:
        _leave(page)


def _leave(page: Any) -> None:
    """Leave the page as a viewer closing the tab does: Voila's ``beforeunload`` handler
    sends the beacon that shuts the viewer's kernel down (Playwright's plain ``close()``
    skips it, and the kernels would pile up against the per-viewer cap)."""
    try:
        page.goto("about:blank", timeout=10_000)
    except Exception:  # Playwright's errors: a page that is gone needs no goodbye
        pass
    page.close()


#: Where a view's time went, from the final document's own timeline (milliseconds since its
#: navigation start): first byte and last byte of the page, the DOM ready, the load event,
#: the kernel request of the widget manager, and the resources (how many, how many went to
#: the server rather than the browser's cache, and the slowest one).
_TIMING_JS = """() => {
  const nav = performance.getEntriesByType('navigation')[0] || {};
  const res = performance.getEntriesByType('resource');
  const kernel = res.find(r => /\\/api\\/kernels\\//.test(r.name));
  const fetched = res.filter(r => r.transferSize > 0);
  const slowest = res.reduce((m, r) => Math.max(m, r.duration), 0);
  const round = v => v === undefined ? null : Math.round(v);
  return {now_ms: performance.now(), first_byte: round(nav.responseStart),
          page_done: round(nav.responseEnd), dom_ready: round(nav.domContentLoadedEventEnd),
          load: round(nav.loadEventEnd), kernel_request: kernel ? round(kernel.startTime) : null,
          widget: round(performance.now()), resources: res.length,
          resources_fetched: fetched.length, slowest_resource: round(slowest),
          last_resource_end: round(res.reduce((m, r) => Math.max(m, r.responseEnd), 0))};
}"""


def _path(url: str) -> str:
    """A URL without host or query (the JSON says which page rendered, not who)."""
    from urllib.parse import urlsplit

    return urlsplit(url).path


def start_phases(http: requests.Session, base: str, user: str, slug: str) -> dict[str, Any]:
    """Where a cold start's time went, as the apps service saw it (seconds from submit:
    ``submitted``, ``running``, ``port``, ``ready``) and as the job reported it (seconds from
    its process start: ``imports_s``, ``voila_ready_s``, ``listening_s``, ``pool_warm_s``)."""
    try:
        status = http.get(f"{base}/services/apps/api/apps/{user}/{slug}/status",
                          timeout=30).json()
    except (requests.RequestException, ValueError):
        return {}
    return {"phases": status.get("phases", {}), "job_timings": status.get("job_timings", {})}


def browser_login(context: Any, base: str, user: str, password: str) -> None:
    page = context.new_page()
    page.goto(f"{base}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_load_state()
    page.close()


def publish(http: requests.Session, base: str, notebook: Path, slug: str) -> None:
    reply = http.post(f"{base}/services/apps/api/apps", timeout=60, json={
        "notebook": str(notebook), "title": "Bench", "slug": slug})
    if reply.status_code != 201:
        raise RuntimeError(f"publishing {slug} failed ({reply.status_code}): {reply.text[:200]}")


def measure(args: argparse.Namespace) -> tuple[dict[str, list[RunResult]], dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    user = args.user
    notebook = install_notebook(user)
    results: dict[str, list[RunResult]] = {arm: [] for arm in args.arms}
    info: dict[str, Any] = {}
    with bench_hub(args.port_base, args.partition) as (base, origin, passwords), \
            direct_voila(NOTEBOOK, args.port_base + 10, args.pool_size) as voila_url, \
            sync_playwright() as pw:
        http = login(base, user, passwords[user])
        published: list[str] = []
        try:
            _rounds(args, pw, http, base, origin, voila_url, notebook, passwords[user],
                    published, results, info)
        finally:
            # Also on errors and Ctrl-C: nothing of this run may stay on the shared nodes.
            for slug in published:
                http.delete(f"{base}/services/apps/api/apps/{user}/{slug}", timeout=60)
            http.delete(f"{base}/hub/api/users/{user}/server", timeout=60)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and http.get(
                    f"{base}/hub/api/users/{user}", timeout=30).json()["servers"]:
                time.sleep(0.5)
            wait_no_jobs(r"shopfloor-app-.*bench-", user=user)
    return results, info


def _rounds(args: argparse.Namespace, pw: Any, http: requests.Session, base: str,
            origin: str, voila_url: str, notebook: Path, password: str, published: list[str],
            results: dict[str, list[RunResult]], info: dict[str, Any]) -> None:
    """The first visits, then ``--runs`` interleaved rounds; ``published`` collects slugs."""
    user = args.user
    stamp = int(time.time()) % 100000
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"])
    try:
        contexts = {arm: browser.new_context(viewport={"width": 1280, "height": 800})
                    for arm in args.arms if arm != "cold_first"}
        for arm in ("warm", "lab_voila", "cold"):
            if arm in contexts:
                browser_login(contexts[arm], base, user, password)
        warm_slug = f"bench-warm-{stamp}"
        warm_url = f"{origin}/services/apps/{user}/{warm_slug}/"
        lab_url = f"{base}/user/{user}/voila/render/{FOLDER}/{NOTEBOOK.name}"
        if "warm" in contexts:
            publish(http, base, notebook, warm_slug)
            published.append(warm_slug)
            info["warm_first_visit"] = view(contexts["warm"], warm_url, 300).to_json()
            if "cold" in contexts:  # the cold arm's viewer has opened an app before
                info["cold_primed_with_warm_app"] = view(contexts["cold"], warm_url,
                                                         120).to_json()
        if "lab_voila" in contexts:
            start_session(http, base, user, args.partition)
            info["lab_voila_first_visit"] = view(contexts["lab_voila"], lab_url, 120).to_json()
        if "direct_voila" in contexts:
            info["direct_voila_first_visit"] = view(contexts["direct_voila"], voila_url,
                                                    120).to_json()
        time.sleep(args.refill_wait)
        for run in range(1, args.runs + 1):
            for arm in rotate(list(args.arms), run - 1):
                if arm in ("cold", "cold_first"):
                    slug = f"bench-{arm.replace('_', '')}-{stamp}-{run}"
                    publish(http, base, notebook, slug)
                    published.append(slug)
                    if arm == "cold":
                        result = view(contexts[arm], f"{origin}/services/apps/{user}/{slug}/",
                                      args.cold_timeout)
                    else:  # a browser that never opened an app here: an empty cache
                        fresh = browser.new_context(viewport={"width": 1280, "height": 800})
                        try:
                            browser_login(fresh, base, user, password)
                            result = view(fresh, f"{origin}/services/apps/{user}/{slug}/",
                                          args.cold_timeout)
                        finally:
                            fresh.close()
                    result.detail.update(start_phases(http, base, user, slug))
                    http.delete(f"{base}/services/apps/api/apps/{user}/{slug}", timeout=60)
                    published.remove(slug)
                    wait_no_jobs(rf"shopfloor-app-.*{slug}", user=user)
                else:
                    url = {"warm": warm_url, "direct_voila": voila_url,
                           "lab_voila": lab_url}[arm]
                    result = view(contexts[arm], url, 120)
                result.run = run
                results[arm].append(result)
                print(f"{arm} run {run}: {result.seconds or result.error}", file=sys.stderr,
                      flush=True)
            time.sleep(args.refill_wait)
    finally:
        browser.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.apps_browser",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--user", default="bob",
                        help="who publishes and views (not alice: the apps tests cancel "
                        "alice's app jobs when they clean up)")
    parser.add_argument("--partition", default="cpu",
                        help="where the app jobs and the JupyterLab session run")
    parser.add_argument("--pool-size", type=int, default=1,
                        help="preheated kernels of the direct Voila (the app job's default)")
    parser.add_argument("--refill-wait", type=float, default=3.0,
                        help="seconds between rounds (pools refill)")
    parser.add_argument("--cold-timeout", type=float, default=180,
                        help="seconds a cold view may take (its job may queue)")
    parser.add_argument("--arms", default=",".join(ARMS), type=_arms,
                        help="comma-separated, from: " + ", ".join(ARMS))
    parser.add_argument("--port-base", type=int, default=9680,
                        help="the bench hub (+0..+2) and the direct Voila (+10)")
    parser.add_argument("--json-out")
    parser.add_argument("--table", action="store_true")
    return parser.parse_args(argv)


def _arms(text: str) -> list[str]:
    arms = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(ARMS)}, not {text!r}")
    return arms


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_start = load_average()
    results, info = measure(args)
    labels = {"warm": "app, warm (app origin)", "direct_voila": "standalone Voila, preheated",
              "lab_voila": "Voila extension in JupyterLab",
              "cold": "app, cold (Slurm job), Voila files cached",
              "cold_first": "app, cold, empty browser cache"}
    blocks = {arm: summarize(labels[arm], runs) for arm, runs in results.items()}
    verdict = targets(blocks)
    document = {"benchmark": "apps_browser", "browser": CHROMIUM, "user": args.user,
                "partition": args.partition, "pool_size": args.pool_size, "arms": blocks,
                "first_visits": info, "ratio": verdict,
                "targets": {"warm_over_direct_voila_max": TARGET_WARM_RATIO,
                            "cold_median_max_s": TARGET_COLD_S},
                "load_start": load_start, "load_end": load_average()}

    def num(value: float | None, unit: str = "x") -> str:
        return "-" if value is None else f"{value:.2f}{unit}"

    grid = format_grid("Same run, medians (min-max), seconds", ("arm", "navigation -> widget"),
                       [(labels[a], spread(b)) for a, b in blocks.items()], [
        f"warm / direct Voila: {num(verdict['warm_over_direct_voila'])} "
        f"(target <= {TARGET_WARM_RATIO}x)",
        f"warm / Voila in JupyterLab: {num(verdict['warm_over_lab_voila'])}",
        f"cold median: {num(blocks.get('cold', {}).get('median'), ' s')} "
        f"(target <= {TARGET_COLD_S:g} s); with an empty cache: "
        f"{num(blocks.get('cold_first', {}).get('median'), ' s')}",
        f"load average: start {load_start['load1']}, end {document['load_end']['load1']}"])
    emit(document, format_table("Apps in Chromium: navigation -> widget visible (s)", blocks)
         + "\n" + grid, json_out=args.json_out, table_on_stdout=args.table)
    return 0 if all(b["failures"] == 0 for b in blocks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
