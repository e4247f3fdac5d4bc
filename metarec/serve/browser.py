"""The serving page in a real browser: search, rate, watch the top 10 change (the browser test and the screenshot).

Drives Debian's ``chromium`` through its ``chromedriver`` (packages ``chromium`` and ``chromium-driver``; Selenium
from the ``browser`` extra), headless, on a server that listens on loopback only:

    python -m metarec.serve.browser runs/demo/melu-s0 --rate "star wars=5" "empire strikes=5" "titanic=1" \\
        --shot docs/serving_page.png

starts ``metarec serve`` on a free loopback port, rates the first search hit of each query, checks after each
rating that the top 10 was answered by a model adapted on every rating so far, saves a screenshot and stops the
server. ``drive`` is the part the browser test calls on a server of its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Step", "chromium", "drive", "serve_in_background"]


@dataclass
class Step:
    rated: str  # the title rated
    status: str  # the page's status line: model, "adapted on N rating(s)", latency
    top: list[str]  # the top-10 titles shown after it


def chromium():
    """A headless Chromium driven by Selenium, from the system packages (no browser download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        raise RuntimeError("the system chromium and chromedriver are needed (apt-get install chromium "
                           "chromium-driver; `make test-browser` installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)


def drive(url: str, ratings: list[tuple[str, int]], shot: Path | None = None, timeout: float = 20.0) -> list[Step]:
    """Open the page at ``url``; for each (query, value) search, rate the first hit, and wait for the top 10 of a
    model adapted on every rating so far. Returns what the page showed after each rating."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    def first_hit(b) -> str:
        spans = b.find_elements(By.CSS_SELECTOR, "#hits li:first-child span")
        return spans[0].text.lower() if spans else ""

    browser = chromium()
    try:
        wait = WebDriverWait(browser, timeout, ignored_exceptions=(StaleElementReferenceException,))
        browser.get(url)
        wait.until(lambda b: b.find_element(By.ID, "status").text.strip() != "")
        steps = []
        for n, (query, value) in enumerate(ratings, start=1):
            box = browser.find_element(By.ID, "q")
            box.clear()
            box.send_keys(query)
            # the hits of this query (not the previous one's, still on the page while the search runs)
            wanted = query.lower()
            wait.until(lambda b, q=wanted: q in first_hit(b))
            first = wait.until(ec.element_to_be_clickable(
                (By.CSS_SELECTOR, f"#hits li:first-child button[data-value='{value}']")))
            title = browser.find_element(By.CSS_SELECTOR, "#hits li:first-child span").text
            first.click()
            try:
                wait.until(lambda b, n=n: b.find_element(By.ID, "status").get_attribute("data-adapted-on") == str(n))
            except TimeoutException:
                status = browser.find_element(By.ID, "status").text
                rated = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#rated li")]
                raise AssertionError(f"after rating {title!r} ({n} rated: {rated}) the page shows {status!r}") \
                    from None
            top = [li.find_element(By.TAG_NAME, "span").text for li in browser.find_elements(By.CSS_SELECTOR,
                                                                                            "#top li")]
            steps.append(Step(title, browser.find_element(By.ID, "status").text, top))
        if shot is not None:
            Path(shot).parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(shot))
        return steps
    finally:
        browser.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_in_background(runs: list[str], port: int, extra: tuple[str, ...] = (), env: dict | None = None,
                        seconds: float = 120.0) -> subprocess.Popen:
    """``metarec serve RUNS`` on 127.0.0.1:``port``, returned once /healthz answers (stopped on failure)."""
    proc = subprocess.Popen([sys.executable, "-m", "metarec.cli", "serve", *runs, "--port", str(port), *extra],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read().strip()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the server did not come up")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Rate a few items on the serving page in headless chromium.")
    ap.add_argument("runs", nargs="+", help="run directories to serve (the first answers)")
    ap.add_argument("--rate", nargs="+", default=["star wars=5", "empire strikes=5", "titanic=1"],
                    help="QUERY=VALUE: search QUERY, give its first hit VALUE")
    ap.add_argument("--shot", type=Path, help="save a screenshot there")
    args = ap.parse_args(argv)
    ratings = []
    for r in args.rate:
        q, _, v = r.rpartition("=")
        ratings.append((q, int(v)))
    port = free_port()
    proc = serve_in_background(args.runs, port)
    try:
        for s in drive(f"http://127.0.0.1:{port}/", ratings, args.shot):
            print(f"rated {s.rated}: {s.status}\n  top: {'; '.join(s.top)}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if args.shot:
        print(f"wrote {args.shot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
