"""A real browser against `llmos serve`: a page of an allowed origin uses it with fetch(); a page of
any other origin is refused (its preflight gets a 403 without CORS headers, so fetch() fails and
nothing runs).

Headless Chromium from Debian's package (`apt-get install chromium`) loads pages served on
127.0.0.1 by this test; each page reports what its fetch() got back to its own server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from queue import Empty, Queue

import pytest

from llmos_shell.config import TEST_MODEL
from servers import free_port, llmos_serve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")]

PAGE = """<!doctype html><html><body><pre id="out">pending</pre><script>
fetch("%(api)s/v1/chat/completions", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({model: "%(model)s", max_tokens: 8, messages: [{role: "user", content: "Say hi."}]})})
  .then(r => r.json().then(j => ({status: r.status, body: j})))
  .catch(e => ({refused: String(e)}))
  .then(result => fetch("/report", {method: "POST", body: JSON.stringify(result)}));
</script></body></html>"""


class PageServer:
    """Serves the page on 127.0.0.1:port and collects what the page reports."""

    def __init__(self, port: int, html: str) -> None:
        reports: Queue = Queue()
        self.reports = reports

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                data = html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                reports.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def open_in_chromium(url: str, page: PageServer, timeout: float = 300) -> dict:
    profile = tempfile.mkdtemp(prefix="llmos-chromium-")
    browser = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                                "--disable-sync", f"--user-data-dir={profile}", url],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return page.reports.get(timeout=timeout)
    except Empty:
        pytest.fail(f"the page at {url} reported nothing within {timeout:g} s")
    finally:
        os.killpg(browser.pid, signal.SIGTERM)
        try:
            browser.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait()
        shutil.rmtree(profile, ignore_errors=True)


def process_count(home) -> int:
    conn = sqlite3.connect(home / "llmos.db", timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM processes").fetchone()[0]
    finally:
        conn.close()


def test_an_allowed_origin_works_from_a_browser_and_a_foreign_one_is_refused(tmp_path, small_model_path):
    allowed_port, foreign_port = free_port(), free_port()
    home = tmp_path / "home"
    home.mkdir()
    with llmos_serve(home, TEST_MODEL, args=("--allow-origin", f"http://127.0.0.1:{allowed_port}"),
                     env={"LLMOS_PLUGINS_DIR": str(tmp_path)}) as server:
        html = PAGE % {"api": server.url, "model": TEST_MODEL}
        allowed, foreign = PageServer(allowed_port, html), PageServer(foreign_port, html)
        try:
            report = open_in_chromium(f"http://127.0.0.1:{allowed_port}/", allowed)
            assert report.get("status") == 200, report
            assert report["body"]["object"] == "chat.completion" and report["body"]["choices"][0]["message"]
            ran = process_count(home)
            assert ran == 1
            report = open_in_chromium(f"http://127.0.0.1:{foreign_port}/", foreign)
            assert "refused" in report and "Failed to fetch" in report["refused"], report
            assert process_count(home) == ran   # nothing ran for the foreign page
        finally:
            allowed.close()
            foreign.close()
