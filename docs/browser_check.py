"""Look at the built documentation site as a reader would, in headless Chromium.

Serves a built site (``mkdocs build`` writes it to ``site/``) on a free local
port, drives headless Chromium through chromedriver's WebDriver HTTP API (plain
``urllib``, no extra Python package), writes a full-page screenshot of each page
below to a folder, and checks what the browser rendered:

* ``home``: the home page with its tagline and one-minute example;
* ``concepts-losses-math``: a concepts page with maths, every formula typeset by
  MathJax (no raw TeX left, no TeX errors);
* ``api-metrics``: an API page with mkdocstrings signatures and docstrings;
* ``leukemia``: the leukemia page, every figure loaded (non-zero natural size);
* ``search-mistake-severity``: Material's client-side search (opened with
  ``?q=``) lists results for "mistake severity".

Needs Chromium and its driver (Debian: ``apt-get install -y chromium
chromium-driver``). Nothing is fetched from the network: the site vendors its
scripts (MathJax) and uses system fonts.

Usage, from the repository root::

    mkdocs build --strict
    python docs/browser_check.py                  # PNGs in /tmp/hiercls-docs-shots
    python docs/browser_check.py --build --out shots --chromium /usr/bin/chromium

Then look at the PNGs. Exits 1 if a check fails. Not part of CI (it needs a
browser).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]


@dataclass(frozen=True)
class Page:
    name: str  # file stem of the screenshot
    path: str  # URL path (with query) on the local server
    ready: str  # JS expression, truthy once the page has finished rendering what we check
    check: str  # JS expression returning a list of problems (strings); empty when fine
    max_height: int = 6000  # screenshots are cut at this many pixels


_MATH_READY = "window.MathJax && MathJax.startup && MathJax.startup.promise && window.__mjDone === true"
# MathJax's startup promise resolves once the page is typeset; then wait for its web fonts
_MATH_HOOK = (
    "if (window.MathJax && MathJax.startup && MathJax.startup.promise && !window.__mjHooked) {"
    " window.__mjHooked = true;"
    " MathJax.startup.promise.then(() => document.fonts.ready).then(() => { window.__mjDone = true; }); }"
)

PAGES = [
    Page(
        "home",
        "/",
        "document.readyState === 'complete'",
        """(() => { const p = [];
            if (!document.body.innerText.includes('Hierarchical classification for PyTorch')) p.push('home: tagline missing');
            if (!document.body.innerText.includes('ConditionalHead')) p.push('home: one-minute example missing');
            return p; })()""",
    ),
    Page(
        "concepts-losses-math",
        "/concepts/losses/",
        _MATH_READY,
        r"""(() => { const p = [];
            const n = document.querySelectorAll('.arithmatex').length;
            const typeset = document.querySelectorAll('.arithmatex mjx-container').length;
            if (n === 0) p.push('math page: no formulas on the page');
            if (typeset < n) p.push(`math page: ${n - typeset} of ${n} formulas not typeset`);
            const errors = document.querySelectorAll('mjx-merror').length;
            if (errors) p.push(`math page: ${errors} TeX errors (red formulas)`);
            const glyphs = [...document.querySelectorAll('mjx-c')];
            const blank = glyphs.filter(c => getComputedStyle(c, '::before').content === 'none').length;
            if (glyphs.length && blank) p.push(`math page: ${blank} of ${glyphs.length} glyphs have no character (invisible maths)`);
            const fonts = [...document.fonts].filter(f => f.family.startsWith('MJX'));
            if (!fonts.some(f => f.status === 'loaded' && f.family !== 'MJXZERO')) p.push('math page: no MathJax font loaded');
            return p; })()""",
    ),
    Page(
        "api-metrics",
        "/api/metrics/",
        "document.readyState === 'complete'",
        """(() => { const p = [];
            if (document.querySelectorAll('.doc-heading').length < 5) p.push('API page: few or no mkdocstrings headings');
            if (document.querySelectorAll('.doc-signature').length < 3) p.push('API page: few or no signatures');
            return p; })()""",
    ),
    Page(
        "leukemia",
        "/leukemia/",
        "document.readyState === 'complete' && [...document.images].every(i => i.complete)",
        """(() => { const p = []; const imgs = [...document.querySelectorAll('article img')];
            if (imgs.length === 0) p.push('leukemia page: no figures');
            const bad = imgs.filter(i => i.naturalWidth === 0).map(i => i.getAttribute('src'));
            if (bad.length) p.push(`leukemia page: ${bad.length} of ${imgs.length} figures did not load: ${bad.slice(0, 3)}`);
            return p; })()""",
        max_height=9000,
    ),
    Page(
        "search-mistake-severity",
        "/?q=mistake+severity",
        "document.querySelectorAll('.md-search-result__item').length > 0",
        """(() => { const items = document.querySelectorAll('.md-search-result__item').length;
            return items ? [] : ['search: no results for "mistake severity"']; })()""",
        max_height=1200,
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start at {url}") from None
            time.sleep(0.1)


@contextlib.contextmanager
def _process(cmd: list[str], url: str, what: str) -> Iterator[None]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(url, what)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


class Browser:
    """A minimal WebDriver client over chromedriver's HTTP API."""

    def __init__(self, driver_url: str, chromium: str, profile: Path, width: int) -> None:
        self.url = driver_url
        self.width = width
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},1000"],
            },
        }
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"WebDriver {method} {path}: {err.read().decode(errors='replace')[:500]}") from None

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def go(self, url: str) -> None:
        self._call("POST", self._s("/url"), {"url": url})

    def js(self, expression: str) -> object:
        return self._call("POST", self._s("/execute/sync"), {"script": f"return ({expression});", "args": []})

    def wait(self, expression: str, seconds: float = 30, hook: str | None = None) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if hook:
                self.js(f"(() => {{ {hook} return 0; }})()")
            if self.js(f"!!({expression})"):
                return True
            time.sleep(0.25)
        return False

    def screenshot(self, path: Path, max_height: int) -> None:
        height = int(self.js("Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"))
        clip = {"x": 0, "y": 0, "width": self.width, "height": min(height, max_height), "scale": 1}
        params = {"format": "png", "captureBeyondViewport": True, "clip": clip}
        shot = self._call("POST", self._s("/goog/cdp/execute"), {"cmd": "Page.captureScreenshot", "params": params})
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call("DELETE", self._s(""))


def run(site: Path, out: Path, chromium: str, chromedriver: str, width: int = 1280) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    site_port, driver_port = _free_port(), _free_port()
    base = f"http://127.0.0.1:{site_port}"
    server = [sys.executable, "-m", "http.server", str(site_port), "--bind", "127.0.0.1", "--directory", str(site)]
    driver = [chromedriver, f"--port={driver_port}"]
    with (
        tempfile.TemporaryDirectory(prefix="hiercls-chromium-") as tmp,
        _process(server, base + "/", "the local web server"),
        _process(driver, f"http://127.0.0.1:{driver_port}/status", "chromedriver"),
    ):
        browser = Browser(f"http://127.0.0.1:{driver_port}", chromium, Path(tmp) / "profile", width)
        try:
            for page in PAGES:
                if not (site / page.path.split("?")[0].lstrip("/")).exists():
                    problems.append(f"{page.name}: {page.path} is not in the built site")
                    continue
                browser.go(base + page.path)
                hook = _MATH_HOOK if page.ready is _MATH_READY else None
                ready = browser.wait(page.ready, hook=hook)
                time.sleep(0.5)  # let fonts and late layout settle before the picture
                png = out / f"{page.name}.png"
                browser.screenshot(png, page.max_height)
                found = [] if ready else [f"{page.name}: not ready after 30 s ({page.ready})"]
                found += list(browser.js(page.check) or [])
                problems += found
                status = "ok  " if not found else "FAIL"
                print(f"{status} {page.name:26s} {png} ({png.stat().st_size // 1024} KiB)")
        finally:
            browser.close()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=REPO / "site", help="the built site (default: site/)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/hiercls-docs-shots"), help="folder for the PNGs")
    parser.add_argument(
        "--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    )
    parser.add_argument("--chromedriver", default=shutil.which("chromedriver") or "chromedriver")
    parser.add_argument("--build", action="store_true", help="run `mkdocs build --strict` into --site first")
    args = parser.parse_args(argv)
    if args.build:
        cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(args.site)]
        subprocess.run(cmd, cwd=REPO, check=True)
    if not (args.site / "index.html").is_file():
        print(f"no built site at {args.site}: run `mkdocs build` first, or pass --build", file=sys.stderr)
        return 2
    problems = run(args.site, args.out, args.chromium, args.chromedriver)
    for problem in problems:
        print("problem:", problem)
    print(f"{len(PAGES)} pages, {len(problems)} problems; screenshots in {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
