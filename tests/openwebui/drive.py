"""Drive Open WebUI 0.12.4 in headless Chromium against an OpenAI-compatible base URL.

What it does (the driver behind ``make e2e-openwebui``):

1. starts Open WebUI (its own venv, see ``install.sh``) on a free loopback port with a fresh
   temporary ``DATA_DIR`` and ``OPENAI_API_BASE_URL`` set to the base URL given, default
   settings otherwise (Ollama off, offline mode so it reaches nothing but loopback);
2. drives Debian's ``/usr/bin/chromium`` through Playwright: signs up the first account
   (which becomes the admin), opens a new chat, picks the model (default
   ``booagent-cluster``), sends a coding question, waits for the streamed answer to finish,
   then for the generated title, tags and follow-ups; sends a second turn and waits for its
   answer; looks for the token-usage info button under the answers and reads its text;
3. takes a screenshot at each stage into the output directory (default ``docs/openwebui``),
   writes ``summary.json`` there, prints the summary and exits non-zero naming each
   expectation that failed.

Open WebUI and Chromium are stopped on every exit path (normal end, failure, Ctrl-C, SIGTERM);
Open WebUI also gets SIGTERM from the kernel if this process dies (``PR_SET_PDEATHSIG``).

Run it with the Python of the Open WebUI venv (it needs ``playwright``)::

    tests/openwebui/install.sh
    .venv-openwebui/bin/python tests/openwebui/drive.py http://127.0.0.1:8100/v1

Only loopback base URLs are accepted.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = Path(os.environ.get("OWUI_VENV", REPO / ".venv-openwebui"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QUESTION_1 = "Write a Python function that checks whether a string is a palindrome."
QUESTION_2 = "Add type hints and a few pytest tests for it."
ADMIN = {"name": "E2E Admin", "email": "admin@example.com", "password": "e2e-openwebui-pass"}

# Reads every assistant message of the open chat from the DOM (see Open WebUI's
# src/lib/components/chat/Messages/ResponseMessage.svelte: id="message-<id>", class
# "chat-assistant", the Copy button only once message.done, span#usage-<id> with the usage
# text behind the "Info" button, buttons "Follow up: ..." under the last answer, and the
# Error component with its "bg-black/[0.03]" box).
READ_MESSAGES_JS = """
() => Array.from(document.querySelectorAll('div[id^="message-"]'))
  .filter((el) => el.classList.contains(el.id) && el.querySelector(':scope .chat-assistant'))
  .map((el) => {
    const id = el.id.slice('message-'.length);
    const content = el.querySelector('#response-content-container');
    const usage = el.querySelector('[id="usage-' + id + '"]');
    const errorBox = Array.from(el.querySelectorAll('div')).find(
      (d) => typeof d.className === 'string' && d.className.includes('bg-black/[0.03]')
        && d.className.includes('rounded-2xl'));
    let text = content ? content.innerText.trim() : '';
    if (errorBox && text.endsWith(errorBox.innerText.trim())) {
      text = text.slice(0, text.length - errorBox.innerText.trim().length).trim();
    }
    return {
      id,
      text,
      done: !!el.querySelector('.copy-response-button'),
      has_info_button: !!el.querySelector('[id="info-' + id + '"]'),
      usage: usage ? usage.textContent : null,
      follow_ups: Array.from(el.querySelectorAll('button[aria-label^="Follow up: "]'))
        .map((b) => b.innerText.trim()),
      error: errorBox ? errorBox.innerText.trim() : null,
    };
  })
"""


class Interrupted(Exception):
    """SIGTERM/SIGINT arrived: unwind and clean up."""


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setsid()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback only (checked)
        return json.loads(resp.read() or b"null")


@dataclass
class Summary:
    expectations: dict[str, tuple[bool, str]] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)

    def expect(self, name: str, ok: bool, detail: str = "") -> bool:
        self.expectations[name] = (bool(ok), detail)
        mark = "ok  " if ok else "FAIL"
        print(f"[{mark}] {name}{': ' + detail if detail else ''}", file=sys.stderr, flush=True)
        return bool(ok)

    @property
    def failed(self) -> list[str]:
        return [name for name, (ok, _) in self.expectations.items() if not ok]

    def short(self) -> dict[str, Any]:
        """The summary to print: answers cut to 400 characters, no UI text, no file list."""
        seen = dict(self.seen)
        for key in ("answer_1", "answer_2"):
            answer = seen.get(key)
            if isinstance(answer, dict):
                text = answer.get("content") or answer.get("text") or ""
                seen[key] = {
                    "text": text[:400] + ("..." if len(text) > 400 else ""),
                    "chars": len(text),
                    "error": answer.get("error"),
                    "seconds_to_first_text": answer.get("seconds_to_first_text"),
                    "seconds_to_done": answer.get("seconds_to_done"),
                }
        seen["screenshots"] = len(seen.get("screenshots", []))
        return {**self.as_dict(), "seen": seen}

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": not self.failed,
            "failed": self.failed,
            "expectations": {
                k: {"ok": ok, "detail": d} for k, (ok, d) in self.expectations.items()
            },
            "seen": self.seen,
        }


class OpenWebUI:
    """An Open WebUI process on a free loopback port with a throw-away DATA_DIR."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "open-webui.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DATA_DIR": str(self.workdir / "data"),
                "WEBUI_SECRET_KEY": secrets.token_hex(24),
                "OPENAI_API_BASE_URL": self.args.base_url.rstrip("/"),
                "OPENAI_API_KEY": self.args.api_key,
                "ENABLE_OLLAMA_API": "false",
                # offline: no Hugging Face look-ups, no version check, no pip installs
                "OFFLINE_MODE": "true",
                "HF_HUB_OFFLINE": "1",
                "ANONYMIZED_TELEMETRY": "false",
                "DO_NOT_TRACK": "true",
                "SCARF_NO_ANALYTICS": "true",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.args.usage_capability:
            # Opt-in only: tick the "usage" capability on every model, so Open WebUI adds
            # stream_options.include_usage (open_webui/main.py, chat_completion).
            env["DEFAULT_MODEL_METADATA"] = json.dumps({"capabilities": {"usage": True}})
        return env

    def start(self) -> None:
        exe = Path(self.args.venv) / "bin" / "open-webui"
        if not exe.exists():
            raise SystemExit(f"{exe} not found: run tests/openwebui/install.sh first")
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(exe), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.workdir,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # for PR_SET_PDEATHSIG
        )
        log.close()

    def wait_ready(self, timeout: float) -> tuple[bool, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False, f"exited with {self.proc.returncode}; see {self.log_path}"
            with contextlib.suppress(OSError, ValueError):
                if http_json(f"{self.url}/health", timeout=2).get("status"):
                    return True, self.url
            time.sleep(1)
        return False, f"no /health within {timeout:.0f} s; see {self.log_path}"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


class Driver:
    def __init__(self, args: argparse.Namespace, page: Any, webui_url: str) -> None:
        self.args = args
        self.page = page
        self.url = webui_url
        self.out = Path(args.out)
        self.summary = Summary()
        self.shot_no = 0
        self.chat_id = ""

    # -- helpers -------------------------------------------------------------------------
    def shot(self, name: str) -> None:
        self.shot_no += 1
        path = self.out / f"{self.shot_no:02d}-{name}.png"
        with contextlib.suppress(Exception):
            self.page.screenshot(path=str(path))
            self.summary.seen.setdefault("screenshots", []).append(str(path))

    def wait_for(self, what: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                value = what()
                if value:
                    return value
            self.page.wait_for_timeout(int(every * 1000))
        return value

    def messages(self) -> list[dict[str, Any]]:
        return list(self.page.evaluate(READ_MESSAGES_JS))

    def api(self, path: str) -> Any:
        js = """async (path) => {
            const r = await fetch(path, {headers: {Authorization: 'Bearer ' + localStorage.token}});
            return r.ok ? await r.json() : {__status: r.status};
        }"""
        return self.page.evaluate(js, path)

    def title(self) -> str:
        heading = self.page.locator("nav h1, h1").first
        return heading.inner_text(timeout=2000).strip() if heading.count() else ""

    # -- stages --------------------------------------------------------------------------
    def sign_in(self) -> bool:
        page = self.page
        page.goto(self.url + "/auth", wait_until="domcontentloaded")
        start = page.get_by_role("button", name=re.compile("Get started", re.I))
        name_box, email_box = page.locator("#name"), page.locator("#email")
        self.wait_for(lambda: start.is_visible() or email_box.is_visible(), 60)
        if start.is_visible():
            start.click()
        email_box.wait_for(state="visible", timeout=30000)
        if name_box.is_visible():
            name_box.fill(ADMIN["name"])
        email_box.fill(ADMIN["email"])
        page.locator("#password").fill(ADMIN["password"])
        self.shot("sign-up")
        page.locator("button[type=submit]").click()
        chat_input = page.locator("#chat-input")
        ok = bool(self.wait_for(lambda: chat_input.is_visible(), 60))
        lets_go = page.get_by_role("button", name="Okay, Let's Go!")
        if self.wait_for(lambda: lets_go.is_visible(), 5):
            lets_go.click()
        self.shot("signed-in")
        return self.summary.expect("signed_in", ok, "admin account created, chat page open")

    def pick_model(self) -> bool:
        page, model = self.page, self.args.model
        button = page.locator('button[id^="model-selector-"][aria-label^="Selected model"]').first
        if not self.wait_for(lambda: button.is_visible(), 30):
            button = page.locator('button[id^="model-selector-"]').first
        button.click()
        options = page.locator('[role="option"][aria-label^="Select "]')
        self.wait_for(lambda: options.count(), 10)
        listed = [
            (options.nth(i).get_attribute("aria-label") or "")[len("Select ") : -len(" model")]
            for i in range(options.count())
        ]
        self.summary.seen["models_listed"] = listed
        search = page.locator("#model-search-input")
        with contextlib.suppress(Exception):
            search.fill(model, timeout=5000)
        option = page.locator(f'[role="option"][aria-label="Select {model} model"]')
        if self.wait_for(lambda: option.count(), 5):
            option.first.click()
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(300)
        selected = button.get_attribute("aria-label") or ""
        self.shot("model-selected")
        return self.summary.expect(
            "model_selected", selected.endswith(f": {model}"), f"{selected!r}; listed {listed}"
        )

    def send(self, text: str) -> None:
        box = self.page.locator("#chat-input")
        box.click()
        box.fill(text)
        self.page.wait_for_timeout(300)
        send = self.page.locator("#send-message-button")
        if send.count() and send.is_enabled():
            send.click()
        else:
            box.press("Enter")

    def wait_answer(self, n: int) -> dict[str, Any] | None:
        """Wait until the n-th assistant message (1-based) is done or shows an error."""

        def finished() -> dict[str, Any] | None:
            msgs = self.messages()
            if len(msgs) >= n and (msgs[n - 1]["done"] or msgs[n - 1]["error"]):
                return msgs[n - 1]
            return None

        started = time.monotonic()
        first_text_at: list[float] = []

        def progress() -> dict[str, Any] | None:
            msgs = self.messages()
            if not first_text_at and len(msgs) >= n and msgs[n - 1]["text"]:
                first_text_at.append(time.monotonic() - started)
                self.shot(f"answer-{n}-streaming")
            return finished()

        msg = self.wait_for(progress, self.args.answer_timeout)
        if msg:
            msg["seconds_to_first_text"] = round(first_text_at[0], 2) if first_text_at else None
            msg["seconds_to_done"] = round(time.monotonic() - started, 2)
        return msg or None

    def turn(self, n: int, question: str) -> dict[str, Any] | None:
        self.send(question)
        self.page.wait_for_timeout(500)
        self.shot(f"question-{n}-sent")
        msg = self.wait_answer(n)
        self.shot(f"answer-{n}")
        self.summary.seen[f"answer_{n}"] = msg
        ok = bool(msg and msg["done"] and msg["text"] and not msg["error"])
        detail = "no finished answer within timeout"
        if msg:
            detail = (
                f"error shown: {msg['error']!r}" if msg["error"] else f"{len(msg['text'])} chars"
            )
            if msg["done"] and not msg["text"] and not msg["error"]:
                detail = "finished but empty"
        self.summary.expect(f"answer_{n}", ok, detail)
        if n == 1 and msg:
            self.summary.expect(
                "answer_1_code_block", "def " in msg["text"], "answer contains a Python def"
            )
        match = re.search(r"/c/([0-9a-f-]+)", self.page.url)
        self.chat_id = match.group(1) if match else self.chat_id
        return msg

    def chores(self, question: str) -> None:
        """Wait (one shared deadline) for the title, the follow-ups and the tags of answer 1.

        Open WebUI sends the title chore together with turn 1, then follow-ups, then tags, one
        after the other. A title equal to the question is its fallback when the title answer
        did not parse: final, no need to wait longer for it.
        """
        seen: dict[str, Any] = {"title": "", "follow_ups": [], "tags": []}

        def settled() -> bool:
            seen["title"] = self.title()
            if not seen["follow_ups"]:
                msgs = self.messages()
                seen["follow_ups"] = msgs[-1]["follow_ups"] if msgs else []
            if not seen["tags"]:
                seen["tags"] = self.api_tags()
            title_final = seen["title"] not in ("", "New Chat")
            return bool(title_final and seen["follow_ups"] and seen["tags"])

        self.wait_for(settled, self.args.chores_timeout, every=1.0)
        title, follow_ups = seen["title"], seen["follow_ups"]
        self.summary.seen["title"] = title
        self.summary.expect(
            "title",
            bool(title) and title not in ("New Chat", question),
            f"navbar shows {title!r}"
            + (
                " (Open WebUI's fallback: the title answer did not parse)"
                if title == question
                else ""
            ),
        )
        self.summary.seen["follow_ups"] = follow_ups
        self.summary.expect("follow_ups", bool(follow_ups), f"{len(follow_ups)} shown")
        self.shot("title-follow-ups")
        ui_tags = self.menu_tags()
        self.summary.seen["tags"] = ui_tags or seen["tags"]
        self.summary.expect(
            "tags", bool(ui_tags), f"chat menu shows {ui_tags}; API has {seen['tags']}"
        )

    def api_tags(self) -> list[str]:
        if not self.chat_id:
            return []
        tags = self.api(f"/api/v1/chats/{self.chat_id}/tags")
        return [t.get("name", "") for t in tags] if isinstance(tags, list) else []

    def menu_tags(self) -> list[str]:
        """Open the navbar's "Chat actions" menu and read the tag chips it shows."""
        page = self.page
        menu = page.locator("#chat-context-menu-button")
        if not menu.count():
            return []
        # Tag chips (common/Tags/TagItem.svelte): a rounded-full chip holding span.line-clamp-1.
        js = """() => Array.from(document.querySelectorAll('span.line-clamp-1'))
            .filter((s) => (s.parentElement?.className || '').includes('rounded-full'))
            .map((s) => s.innerText.trim()).filter(Boolean)"""
        before = set(page.evaluate(js))
        menu.first.click()
        page.wait_for_timeout(1000)
        self.shot("chat-menu-tags")
        tags = [t for t in page.evaluate(js) if t not in before]
        page.keyboard.press("Escape")
        return tags

    def usage(self) -> None:
        msgs = self.messages()
        shown = [m for m in msgs if m.get("usage")]
        self.summary.seen["usage"] = [m.get("usage") for m in msgs]
        if shown:
            info = self.page.locator(f'[id="info-{shown[-1]["id"]}"]')
            with contextlib.suppress(Exception):
                info.hover(timeout=3000)
                self.page.wait_for_timeout(800)
        self.shot("usage-info")
        detail = (
            f"info button with usage on {len(shown)} of {len(msgs)} answers"
            if shown
            else "no answer shows token usage (the gateway sent no usage/timings, or "
            "Open WebUI did not ask: the model's 'usage' capability is off by default)"
        )
        self.summary.expect("usage_shown", bool(shown), detail)

    def run(self) -> None:
        if not self.sign_in() or not self.pick_model():
            return
        self.shot("new-chat")
        if self.turn(1, self.args.question):
            self.chores(self.args.question)
        self.turn(2, self.args.second_question)
        self.wait_for(lambda: self.messages()[-1]["follow_ups"], min(self.args.chores_timeout, 60))
        self.usage()
        self.shot("final")
        if self.chat_id:
            chat = self.api(f"/api/v1/chats/{self.chat_id}").get("chat") or {}
            self.summary.seen["chat_api_title"] = chat.get("title")
            stored = (chat.get("history") or {}).get("messages") or {}
            for n in (1, 2):  # the answers' Markdown as Open WebUI stored it
                answer = self.summary.seen.get(f"answer_{n}")
                if answer and answer.get("id") in stored:
                    answer["content"] = stored[answer["id"]].get("content")


def check_gateway(args: argparse.Namespace, summary: Summary) -> bool:
    deadline = time.monotonic() + args.gateway_wait
    while True:
        try:
            models = http_json(args.base_url.rstrip("/") + "/models", timeout=10)
            ids = [m.get("id") for m in models.get("data", [])]
            break
        except (OSError, ValueError, AttributeError) as exc:
            if time.monotonic() < deadline:
                time.sleep(1)
                continue
            return summary.expect("gateway_models", False, f"GET {args.base_url}/models: {exc}")
    summary.seen["gateway_models"] = ids
    return summary.expect("gateway_models", args.model in ids, f"{args.model!r} in {ids}")


@contextlib.contextmanager
def browser_page(args: argparse.Namespace, workdir: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright  # the Open WebUI venv has it

    with sync_playwright() as pw:
        # A persistent context on a fresh profile directory = a fresh --user-data-dir.
        context = pw.chromium.launch_persistent_context(
            str(workdir / "chromium-profile"),
            executable_path=args.chromium,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        try:

            def only_loopback(route: Any) -> None:
                url = route.request.url
                if url.startswith(("data:", "blob:")) or is_loopback(url):
                    route.continue_()
                else:
                    route.abort()

            context.route("**/*", only_loopback)
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30000)
            yield page
        finally:
            context.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base_url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8100/v1")
    p.add_argument("--out", default=str(REPO / "docs" / "openwebui"), help="screenshot directory")
    p.add_argument("--model", default="booagent-cluster")
    p.add_argument("--api-key", default=os.environ.get("BOOAGENT_API_KEY", "sk-booagent-e2e"))
    p.add_argument("--venv", default=str(DEFAULT_VENV), help="Open WebUI venv (default $OWUI_VENV)")
    p.add_argument("--chromium", default=CHROMIUM)
    p.add_argument("--question", default=QUESTION_1)
    p.add_argument("--second-question", default=QUESTION_2)
    p.add_argument("--gateway-wait", type=float, default=30, help="seconds to wait for GET /models")
    p.add_argument("--startup-timeout", type=float, default=240)
    p.add_argument("--answer-timeout", type=float, default=300)
    p.add_argument("--chores-timeout", type=float, default=180)
    p.add_argument(
        "--usage-capability",
        action="store_true",
        help="tick the models' 'usage' capability (not the default) so Open WebUI asks for usage",
    )
    p.add_argument("--keep-data", action="store_true", help="keep the temporary DATA_DIR and logs")
    args = p.parse_args(argv)
    if not is_loopback(args.base_url):
        p.error("only loopback base URLs are allowed (127.0.0.0/8, localhost, ::1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for stale in Path(args.out).glob("[0-9][0-9]-*.png"):  # screenshots of an earlier run
        stale.unlink()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)
    workdir = Path(tempfile.mkdtemp(prefix="owui-e2e-"))
    summary = Summary()
    webui = OpenWebUI(args, workdir)
    started = time.monotonic()
    try:
        if check_gateway(args, summary):
            webui.start()
            ok, detail = webui.wait_ready(args.startup_timeout)
            summary.expect("webui_started", ok, detail)
            if ok:
                with browser_page(args, workdir) as page:
                    driver = Driver(args, page, webui.url)
                    driver.summary = summary
                    try:
                        driver.run()
                    except Exception:
                        driver.shot("error")
                        raise
    except Interrupted as exc:
        summary.expect("not_interrupted", False, f"stopped by {exc}")
    except Exception as exc:  # report, clean up, exit non-zero
        summary.expect("driver_ran", False, f"{type(exc).__name__}: {exc}")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        webui.stop()
        summary.seen["seconds"] = round(time.monotonic() - started, 1)
        summary.seen["open_webui_log"] = str(webui.log_path) if args.keep_data else None
        if not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
    result = summary.as_dict()
    (Path(args.out) / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary.short(), indent=2, ensure_ascii=False))
    print(f"screenshots and summary.json in {args.out}", file=sys.stderr)
    if summary.failed:
        print("FAILED: " + ", ".join(summary.failed), file=sys.stderr)
        return 1
    print("all expectations passed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
