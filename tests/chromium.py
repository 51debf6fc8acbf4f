"""Headless Chromium (Debian's `chromium`) driven over the Chrome DevTools protocol, for the browser tests.

A page is checked by what it renders: `wait_for_text` polls `document.body.innerText` until every expected string
is there (single-page apps fill in after their API calls return), `click_text` clicks an element by its visible
text (a tab), `screenshot` saves a PNG of what a user sees. One browser process per `Chromium`, in its own process
group with a throwaway profile; `close()` ends it. Only the `websockets` package is needed (Prefect depends on it).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from infra.devstack import stop_group

CANDIDATES = ("chromium", "chromium-browser")


def find_chromium() -> str | None:
    """The Chromium binary: $CHROMIUM if set, else Debian's `chromium` on PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


class PageError(AssertionError):
    pass


def _by_text(text: str, selector: str = "*") -> str:
    """JavaScript for the innermost element matching `selector` whose visible text is exactly `text` (or null)."""
    return f"""(() => {{
        const hits = [...document.querySelectorAll({json.dumps(selector)})]
            .filter(e => e.innerText && e.innerText.trim() === {json.dumps(text)});
        return hits.find(e => !hits.some(o => o !== e && e.contains(o))) || null;
    }})()"""


class Chromium:
    """One headless browser with one tab. Use as a context manager, or call close()."""

    def __init__(self, binary: str, width: int = 1440, height: int = 1000, timeout: float = 60):
        from websockets.sync.client import connect

        self.profile = Path(tempfile.mkdtemp(prefix="videorft-chromium-"))
        self.log = self.profile / "chromium.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
                 f"--user-data-dir={self.profile}", "--remote-debugging-address=127.0.0.1",
                 "--remote-debugging-port=0", f"--window-size={width},{height}", "about:blank"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            port = self._devtools_port(timeout)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                page = next(t for t in json.load(r) if t["type"] == "page")
            self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout)
        except BaseException:
            self.close()
            raise
        self._id = 0
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                          "mobile": False})

    def _devtools_port(self, timeout: float) -> int:
        """Chromium writes the port it chose into <profile>/DevToolsActivePort."""
        deadline, marker = time.monotonic() + timeout, self.profile / "DevToolsActivePort"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            if marker.exists() and (lines := marker.read_text().split()):
                return int(lines[0])
            time.sleep(0.2)
        raise RuntimeError(f"chromium did not open its DevTools port within {timeout:.0f} s")

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == self._id:  # anything else is an event nobody waits for
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise PageError(f"{url}: {result['errorText']}")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, *needles: str, timeout: float = 60, forbidden: tuple[str, ...] = ()) -> str:
        """The page's visible text once it contains every needle; fails at once on a forbidden string (an error
        banner), or after `timeout` saying what was missing and what the page showed."""
        deadline, text = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            text = self.text()
            bad = [f for f in forbidden if f in text]
            if bad:
                raise PageError(f"page shows {bad}:\n{text[:3000]}")
            if all(n in text for n in needles):
                return text
            time.sleep(0.5)
        missing = [n for n in needles if n not in text]
        raise PageError(f"after {timeout:.0f} s the page lacks {missing}; it shows:\n{text[:3000]}")

    def _act(self, element_js: str, action_js: str) -> bool:
        """Run `action_js` on the element `element_js` finds (`el`); False when it finds none."""
        return bool(self.evaluate(f"(el => {{ if (!el) return false; {action_js}; return true; }})({element_js})"))

    def click_text(self, text: str, selector: str = "button, a, [role=tab], li, span, div") -> None:
        """Click the innermost element matching `selector` whose visible text is exactly `text`."""
        if not self._act(_by_text(text, selector), "el.scrollIntoView(); el.click()"):
            raise PageError(f"no element with the text {text!r} to click; the page shows:\n{self.text()[:3000]}")

    def click_beside(self, text: str, selector: str = "button", within: str = "[role=gridcell]") -> None:
        """Click the first `selector` in the closest `within` around the element showing `text` (a table row's
        expand button next to a run name)."""
        if not self._act(_by_text(text), f"el = el.closest({json.dumps(within)});"
                                         f" el = el && el.querySelector({json.dumps(selector)}); el.click()"):
            raise PageError(f"no element with the text {text!r}; the page shows:\n{self.text()[:3000]}")

    def click(self, selector: str) -> bool:
        """Click the first element matching a CSS selector; False when there is none."""
        return self._act(f"document.querySelector({json.dumps(selector)})", "el.click()")

    def type_into(self, selector: str, text: str) -> None:
        """Focus the element matching `selector` (an input) and type `text` into it, as keystrokes would."""
        if not self._act(f"document.querySelector({json.dumps(selector)})", "el.focus()"):
            raise PageError(f"no {selector} to type into; the page shows:\n{self.text()[:3000]}")
        self.send("Input.insertText", {"text": text})

    def scroll_to_text(self, text: str) -> bool:
        """Scroll the innermost element whose visible text is `text` to the top of its view (charts that are
        drawn only once visible)."""
        return self._act(_by_text(text), "el.scrollIntoView({block: 'start'})")

    def png(self, clip: dict | None = None, full_page: bool = False) -> bytes:
        """A PNG of the page as drawn now (canvas and WebGL included); `clip`: {x, y, width, height} in CSS px."""
        params: dict = {"format": "png", "captureBeyondViewport": full_page}
        if clip:
            params["clip"] = {"scale": 1, **clip}
        return base64.b64decode(self.send("Page.captureScreenshot", params)["data"])

    def screenshot(self, path: str | os.PathLike, full_page: bool = False) -> Path:
        path = Path(path)
        path.write_bytes(self.png(full_page=full_page))
        return path

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        if self.proc.poll() is None:
            stop_group(self.proc.pid, timeout=10)  # the browser and its renderer/GPU/zygote processes
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
