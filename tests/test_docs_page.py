"""The AsyncAPI page (`streamtools docs serve`, `ConsumerRunner(docs=True)`), in a real browser.

Debian's `chromium` and `chromium-driver` (`make browser-deps` installs them) run headless,
driven over the W3C WebDriver protocol (chromedriver; no client library). The browser must
render every channel address and message name of the demo contracts (`examples/contracts`)
while it cannot reach anything but loopback: every other request goes to a proxy on 127.0.0.1
that records it and answers 403 (chromium's own background calls, to update.googleapis.com,
accounts.google.com and its search engine, end there too; they are not the page's). Every
request the page made, as Chrome's performance log records it (`Network.requestWillBeSent`),
must be to 127.0.0.1, and the console must show no refused load (a Content-Security-Policy
violation is one). A control test shows the log and the proxy catch a page that reaches out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML: pinned in the dev extra

from examples.contracts import QUEUES
from streamtools import CONSUMER_LOOPS, HTTP, MEMORY, ConsumerRunner, Queue
from streamtools import _docs_page as docs_page
from streamtools.asyncapi import document
from streamtools.errors import ConfigurationError
from tests.conftest import eventually, free_port, unique_name

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "streamtools" / "_docs_assets"
INSTALL = "make browser-deps (as root: apt-get install -y chromium chromium-driver)"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
WAIT = 30.0


# --- the browser -------------------------------------------------------------------------


def _browser_binaries() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        missing = " and ".join(
            name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path
        )
        message = f"{missing} not on PATH; install them with: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # Debian's /usr/bin/chromium is a script that adds the flags of /etc/chromium.d (API
    # keys, remote extensions: the browser's own calls home); the binary behind it has none
    real = Path("/usr/lib/chromium/chromium")
    return (str(real) if real.is_file() else chromium), driver


class Recorder(socketserver.ThreadingTCPServer):
    """An HTTP proxy that forwards nothing: it records each request line and answers 403."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordRequest)
        self.seen: list[str] = []
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port

    def taken(self) -> list[str]:
        with self.lock:
            seen, self.seen = self.seen, []
        return seen


class _RecordRequest(socketserver.StreamRequestHandler):
    server: Recorder

    def handle(self) -> None:
        line = self.rfile.readline(8192).decode("latin-1").strip()
        with self.server.lock:
            self.server.seen.append(line)
        self.wfile.write(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )


class WebDriver:
    """The few W3C WebDriver commands the tests need, over chromedriver's HTTP API."""

    def __init__(self, url: str, capabilities: Mapping[str, Any]) -> None:
        self.url = url
        answer = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        self.session = f"/session/{answer['sessionId']}"

    def _call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"WebDriver {method} {path}: {exc.read().decode()}") from None

    def get(self, url: str) -> None:
        self._call("POST", f"{self.session}/url", {"url": url})

    def execute(self, script: str) -> Any:
        return self._call("POST", f"{self.session}/execute/sync", {"script": script, "args": []})

    def log(self, kind: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self._call("POST", f"{self.session}/se/log", {"type": kind})
        return entries

    def requested(self) -> list[str]:
        """The URLs the page requested since the last call (Chrome's performance log)."""
        urls = []
        for entry in self.log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls

    def quit(self) -> None:
        self._call("DELETE", self.session)

    def wait_rendered(self) -> str:
        """Wait until the viewer says it rendered the document; its visible text."""
        deadline = time.monotonic() + WAIT
        state = None
        while time.monotonic() < deadline:
            state = self.execute("return document.body ? document.body.dataset.rendered : null")
            if state is not None:
                break
            time.sleep(0.05)
        assert state == "true", f"the page did not render (state {state!r})"
        text: str = self.execute("return document.body.innerText")
        return text


class Browser:
    def __init__(self, driver: WebDriver, proxy: Recorder) -> None:
        self.driver = driver
        self.proxy = proxy

    def visit(self, url: str) -> tuple[str, list[str]]:
        """Open `url` in a clean state; the rendered text and the URLs the page requested."""
        self.driver.get("about:blank")
        self.driver.requested()  # what came before this page
        self.driver.log("browser")
        self.driver.get(url)
        text = self.driver.wait_rendered()
        return text, self.driver.requested()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with open_browser(*_browser_binaries()) as opened:
        yield opened


@contextlib.contextmanager
def open_browser(chromium: str, driver_binary: str) -> Iterator[Browser]:
    """Headless chromium driven by chromedriver, every non-loopback request to a recorder."""
    proxy = Recorder()
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    port = free_port()
    driver_process = subprocess.Popen(
        [driver_binary, f"--port={port}", "--allowed-ips=127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    profile = tempfile.mkdtemp(prefix="st-chromium-")
    try:
        deadline = time.monotonic() + WAIT
        while True:  # until chromedriver answers
            try:
                with urllib.request.urlopen(url + "/status", timeout=5) as response:
                    if json.loads(response.read())["value"]["ready"]:
                        break
            except OSError:
                pass
            assert driver_process.poll() is None, "chromedriver exited"
            assert time.monotonic() < deadline, "chromedriver did not start"
            time.sleep(0.05)
        capabilities = {
            "browserName": "chrome",
            "goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    f"--user-data-dir={profile}",
                    # every request to another host goes to the recorder, which forwards none
                    f"--proxy-server=http://127.0.0.1:{proxy.port}",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-default-apps",
                    "--disable-extensions",
                    "--disable-sync",
                    "--disable-breakpad",
                    "--disable-client-side-phishing-detection",
                    "--disable-component-extensions-with-background-pages",
                    "--disable-domain-reliability",
                    "--disable-search-engine-choice-screen",
                    "--metrics-recording-only",
                    "--no-default-browser-check",
                    "--no-pings",
                    "--dns-prefetch-disable",
                    "--disable-features=NetworkTimeServiceQuerying,PreconnectToSearch,"
                    "OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,"
                    "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions,"
                    "SafeBrowsing,SpareRendererForSitePerProcess",
                ],
                "perfLoggingPrefs": {"enableNetwork": True, "enablePage": False},
                # no search engine to preconnect to, no sign-in, no component updates
                "prefs": {
                    "default_search_provider": {"enabled": False},
                    "signin": {"allowed": False},
                    "net": {"network_prediction_options": 2},
                },
                "localState": {"component_updates": {"component_updates_enabled": False}},
            },
        }
        driver = WebDriver(url, capabilities)
        try:
            yield Browser(driver, proxy)
        finally:
            driver.quit()
    finally:
        driver_process.terminate()
        driver_process.wait(timeout=30)
        proxy.shutdown()
        proxy.server_close()
        shutil.rmtree(profile, ignore_errors=True)


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "about", "blob"):
        return True
    return parts.scheme in ("http", "https") and (parts.hostname or "") in LOCAL_HOSTS


def _names(doc: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The channel addresses and message names of `doc`, checked against the contracts."""
    channels = [channel["address"] for channel in doc["channels"].values()]
    messages = [message["name"] for message in doc["components"]["messages"].values()]
    assert set(QUEUES) <= set(channels)
    assert {queue.message_type.__name__ for queue in QUEUES.values()} <= set(messages)
    return channels, messages


def _assert_offline_render(browser: Browser, base: str, doc: Mapping[str, Any]) -> None:
    text, requested = browser.visit(base + docs_page.DOCS_PATH)
    channels, messages = _names(doc)
    for name in [*channels, *messages]:
        assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", text), f"{name!r} not on the page"
    assert doc["info"]["title"] in text
    assert not re.search(r"\b(null|undefined|NaN)\b|\[object ", text), "a value left unrendered"
    # the capture works: the page, its script and its style were seen ...
    assert {base + path for path in (docs_page.DOCS_PATH, docs_page.SCRIPT_PATH)} <= set(
        requested
    ), requested
    assert base + docs_page.STYLE_PATH in requested
    # ... and nothing else: the page asked for nothing beyond loopback
    assert [url for url in requested if not _is_local(url)] == []
    # nothing was refused either (a CSP violation is logged to the console)
    problems = [e["message"] for e in browser.driver.log("browser") if e["level"] == "SEVERE"]
    assert problems == []


# --- the CLI -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_server() -> Iterator[str]:
    """`streamtools docs serve` in a subprocess on a free port: its base URL."""
    command = [sys.executable, "-m", "streamtools", "docs", "serve"]
    command += ["--contracts", "examples.contracts", "--host", "127.0.0.1", "--port", "0"]
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            line = process.stdout.readline()  # printed once listening
            pattern = r"serving the AsyncAPI page at (http://127\.0\.0\.1:\d+)/docs\n"
            match = re.fullmatch(pattern, line)
            if match is None:
                process.kill()
                pytest.fail(f"unexpected first line {line!r}; stderr: {process.stderr.read()}")
            yield match[1]
        finally:
            process.terminate()  # SIGTERM: a graceful stop
            assert process.wait(timeout=30) == 0


def _cli_document() -> dict[str, Any]:
    return document(QUEUES, title="examples.contracts", version="0.0.0", transport=HTTP)


def _get(url: str) -> tuple[int, Mapping[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers, response.read()


def test_cli_page_renders_every_channel_and_message_offline(
    browser: Browser, cli_server: str
) -> None:
    _assert_offline_render(browser, cli_server, _cli_document())


def test_cli_serves_the_document_as_json_and_yaml(cli_server: str) -> None:
    status, headers, body = _get(cli_server + docs_page.JSON_PATH)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert json.loads(body) == _cli_document()
    status, headers, body = _get(cli_server + docs_page.YAML_PATH)
    assert status == 200
    assert headers["Content-Type"].startswith("application/yaml")
    assert yaml.safe_load(body) == _cli_document()


def test_cli_page_forbids_other_origins(cli_server: str) -> None:
    for path in (docs_page.DOCS_PATH, docs_page.SCRIPT_PATH, docs_page.STYLE_PATH):
        status, headers, _ = _get(cli_server + path)
        assert status == 200
        assert headers["Content-Security-Policy"] == docs_page.CONTENT_SECURITY_POLICY
        assert headers["X-Content-Type-Options"] == "nosniff"
    policy = docs_page.CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in policy
    for directive in policy.split(";"):  # only 'self', 'none' and data: images
        sources = set(directive.split()[1:])
        assert sources <= {"'self'", "'none'", "data:"}, directive
    # the page carries it too, for servers that send no header (an HTTP consumer's port)
    page = _get(cli_server + docs_page.DOCS_PATH)[2].decode()
    assert '<meta http-equiv="Content-Security-Policy"' in page
    assert "default-src 'none'; script-src 'self'" in page


def test_cli_refuses_bad_contracts_before_listening() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamtools", "docs", "serve", "--contracts", "no_such_pkg"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: no contracts package 'no_such_pkg'")
    assert "serving" not in done.stdout


def test_cli_reports_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "streamtools", "docs", "serve", "--port", str(port)]
        done = subprocess.run(
            [*command, "--contracts", "examples.contracts"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")


# --- ConsumerRunner(docs=True) ---------------------------------------------------------------


async def _ignore(message: object) -> None:
    pass


@pytest.mark.parametrize("transport", [MEMORY, HTTP])
async def test_runner_page_renders_every_channel_and_message_offline(
    browser: Browser, transport: str
) -> None:
    """Memory: on the runner's own server; HTTP: mounted on the consumers' port."""
    options: dict[str, Any] = {"host": "127.0.0.1", "port": 0} if transport == HTTP else {}
    consumers = [CONSUMER_LOOPS[transport](queue, **options) for queue in QUEUES.values()]
    runner = ConsumerRunner(
        consumers,
        dict.fromkeys(QUEUES, _ignore),
        port=0,
        host="127.0.0.1",
        docs=True,
    )
    serving = asyncio.create_task(runner.serve())
    try:
        await eventually(lambda: all(c.serving for c in consumers), "serving")
        base = f"http://127.0.0.1:{runner.health_port}"
        server = f"http://127.0.0.1:{runner.health_port}" if transport == HTTP else None
        expected = document(
            QUEUES, title="examples.contracts", version="0.0.0", transport=transport, server=server
        )
        status, headers, body = await asyncio.to_thread(_get, base + docs_page.JSON_PATH)
        assert (status, headers["Content-Type"]) == (200, "application/json")
        assert json.loads(body) == expected
        yaml_body = (await asyncio.to_thread(_get, base + docs_page.YAML_PATH))[2]
        assert yaml.safe_load(yaml_body) == expected
        page_headers = (await asyncio.to_thread(_get, base + docs_page.DOCS_PATH))[1]
        if transport == MEMORY:  # the runner's own server sends the policy as a header too
            assert page_headers["Content-Security-Policy"] == docs_page.CONTENT_SECURITY_POLICY
        health = await asyncio.to_thread(_get, base + "/healthz")
        assert health[0] == 200
        await asyncio.to_thread(_assert_offline_render, browser, base, expected)
    finally:
        runner.stop()
        async with asyncio.timeout(30):
            await serving


def test_runner_docs_needs_a_port_and_one_describable_transport() -> None:
    queue = Queue(unique_name(), next(iter(QUEUES.values())).message_type)
    with pytest.raises(ConfigurationError, match=r"docs=True\) needs port="):
        ConsumerRunner([CONSUMER_LOOPS[MEMORY](queue)], {queue.name: _ignore}, docs=True)
    other = Queue(unique_name(), queue.message_type)
    mixed = [
        CONSUMER_LOOPS[MEMORY](queue),
        CONSUMER_LOOPS[HTTP](other, host="127.0.0.1", port=0),
    ]
    with pytest.raises(ConfigurationError, match="describes one transport"):
        ConsumerRunner(mixed, {queue.name: _ignore, other.name: _ignore}, port=0, docs=True)
    untyped = Queue(unique_name(), object)
    with pytest.raises(ConfigurationError, match="msgspec Struct"):
        ConsumerRunner(
            [CONSUMER_LOOPS[MEMORY](untyped)], {untyped.name: _ignore}, port=0, docs=True
        )


def test_cli_run_overrides_keep_the_docs() -> None:
    import argparse

    from streamtools.cli import _runner_for

    queue = next(iter(QUEUES.values()))
    runner = ConsumerRunner(
        [CONSUMER_LOOPS[MEMORY](queue)], {queue.name: _ignore}, port=0, docs=True
    )
    overrides = argparse.Namespace(transport=None, host=None, port=free_port(), target="m:a")
    overridden = _runner_for(runner, overrides)
    assert overridden is not runner
    assert overridden.docs


# --- the viewer itself ---------------------------------------------------------------------


def test_the_harness_sees_a_page_that_reaches_out(browser: Browser) -> None:
    """The control: a page (without the viewer's policy) that loads an image from elsewhere
    is seen by both nets, so their silence above means something."""
    external = "http://streamtools-docs.invalid/pixel.png"
    browser.driver.get("about:blank")
    browser.driver.requested()
    browser.proxy.taken()
    browser.driver.get(f'data:text/html,<img src="{external}"><p>x</p>')
    deadline = time.monotonic() + WAIT
    seen: list[str] = []
    while not any(external in line for line in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
        seen += browser.proxy.taken()
    assert any(external in line for line in seen), seen
    assert external in browser.driver.requested()


def test_the_shipped_viewer_references_no_other_origin() -> None:
    files = sorted(ASSETS.iterdir())
    assert [f.name for f in files] == ["page.html", "viewer.css", "viewer.js"]
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?:|//[A-Za-z0-9.-]+\.[A-Za-z]", text.replace("// ", "")), path
        assert "@import" not in text
        assert "url(" not in text
        assert not re.search(r"\b(fetch|XMLHttpRequest|WebSocket|EventSource|import)\s*\(", text)
    page = docs_page.page(_cli_document())
    # the document's own content may name URLs; the page's markup names none
    markup = re.sub(r"<script type=\"application/json\".*?</script>", "", page, flags=re.S)
    assert not re.search(r"(src|href)=\"(?!/|data:)", markup), markup


def test_the_embedded_document_cannot_end_its_script_element() -> None:
    doc = _cli_document()
    doc["info"]["title"] = "</script><script>alert(1)</script>"
    page = docs_page.page(doc)
    embedded = re.search(
        r'<script type="application/json" id="asyncapi-document">(.*?)</script>', page, re.S
    )
    assert embedded is not None
    assert json.loads(embedded[1]) == doc
    assert "<script>alert(1)" not in page


def test_the_wheel_ships_the_viewer(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for asset in ("page.html", "viewer.js", "viewer.css"):
        assert f"streamtools/_docs_assets/{asset}" in names
