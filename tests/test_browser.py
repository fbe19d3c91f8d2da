"""The explorers in a real JupyterLab, driven by headless Chromium (Playwright).

Starts JupyterLab on 127.0.0.1 with a token on a temporary copy of the notebooks, opens
05_complexity, runs every cell (smoke mode), then moves the resolution slider by keyboard and by
drag and checks that the printed numbers and the figure change, that the figure is not blank and
that no widget error is shown; "measure here" must print measured beside predicted numbers.
The same for notebook 01 (the top-down classifier's top-5; the attention explorer's query
column, row and temperature moved by keyboard) and notebook 03 (the alpha explorer's stage moved
by keyboard, its formulation toggled to legacy_softmax).
A screenshot goes to tests/_artifacts/. Uses Debian's /usr/bin/chromium (never
``playwright install``); every request not to 127.0.0.1 is aborted.

Run: ``pytest -m browser tests/test_browser.py`` (about 30-60 s).
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "_artifacts"
CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = "05_complexity.ipynb"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
WIDGET_ERRORS = ("Error displaying widget", "Failed to load model class",
                 "Could not create a model", "Error creating widget")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a temporary copy of notebooks/: yields (base_url, token)."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: install it with `apt-get install -y chromium`")
    pytest.importorskip("playwright.sync_api", reason="needs the playwright package (dev extra)")
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "notebooks"
    shutil.copytree(REPO / "notebooks", root,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    # the notebooks read ../assets (trained weights, the golden fixture, diagrams): read-only
    (tmp / "assets").symlink_to(REPO / "assets", target_is_directory=True)
    settings = tmp / "settings" / "@jupyterlab"
    for extension, name, values in (
        # no "would you like news?" toast over the page, no update check
        ("apputils-extension", "notification", {"fetchNews": "false", "checkForUpdates": False}),
        # render every cell (no windowing), so that off-screen outputs exist and have text
        ("notebook-extension", "tracker", {"windowingMode": "none"}),
    ):
        (settings / extension).mkdir(parents=True, exist_ok=True)
        (settings / extension / f"{name}.jupyterlab-settings").write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, SWIFTLEARN_SMOKE="1", JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
    log = open(tmp / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=None", "--LabApp.expose_app_in_browser=True"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    tail = (tmp / "lab.log").read_text()[-3000:]
                    pytest.fail(f"JupyterLab did not start:\n{tail}")
                time.sleep(0.5)
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def page(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    base, _ = lab
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1100})
        # offline by construction: only the local server may answer
        context.route("**/*", lambda route: route.continue_()
                      if urlparse(route.request.url).hostname == "127.0.0.1" else route.abort())
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(60_000)
        try:
            yield page
        finally:
            context.close()


def _png_pixels(png: bytes):
    from matplotlib.image import imread

    return imread(io.BytesIO(png), format="png")


def _wait_idle(page, timeout=240_000):
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
        " && window.jupyterapp.shell.currentWidget.sessionContext"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"
        " === 'idle'", timeout=timeout)


def _readout(page) -> str:
    # textContent, not innerText: it does not depend on the element being laid out
    return page.locator(".swiftlearn-readout").text_content()


def _wait_readout_change(page, before: str, timeout=60_000) -> str:
    page.wait_for_function(
        "before => { const e = document.querySelector('.swiftlearn-readout');"
        " return e && e.textContent.trim() && e.textContent !== before; }",
        arg=before, timeout=timeout)
    return _readout(page)


def _figure_png(page) -> bytes:
    img = page.locator("img.swiftlearn-figure")
    page.wait_for_function(
        "() => { const i = document.querySelector('img.swiftlearn-figure');"
        " return i && i.complete && i.naturalWidth > 0; }")
    return img.screenshot()


def _resolution(text: str) -> int:
    match = re.search(r"input (\d+)x\1 px", text)
    assert match, f"no resolution in the readout: {text!r}"
    return int(match.group(1))


def test_complexity_explorer_in_jupyterlab(lab, page):
    from swiftlearn import complexity as cx
    from swiftlearn.widgets import format_flops

    base, token = lab
    t0 = time.monotonic()
    page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    _wait_idle(page)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

    # the widget renders as real widget elements (not "VBox(...)" text) once its cell has run
    handle = page.locator(".swiftlearn-resolution .noUi-handle")
    handle.wait_for(state="attached", timeout=240_000)
    page.wait_for_selector(".swiftlearn-readout pre", timeout=60_000)
    _wait_idle(page)  # every cell, exercises included, has run
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    page.locator(".swiftlearn-readout").scroll_into_view_if_needed()

    text0, png0 = _readout(page), _figure_png(page)
    assert _resolution(text0) == 224 and "196 tokens" in text0
    pixels = _png_pixels(png0)
    assert pixels.shape[1] > 400 and pixels[..., :3].std() > 0.05, "the figure looks blank"

    # 1. keyboard: focus the handle, two steps right (32 px each)
    handle.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    text1 = _wait_readout_change(page, text0)
    if _resolution(text1) != 288:  # a slow kernel may have redrawn after the first press only
        text1 = _wait_readout_change(page, text1)
    assert _resolution(text1) == 288
    n = cx.tokens_at(288, 16)
    assert f"{n} tokens" in text1
    assert format_flops(cx.attention_flops("mhsa", n, 64, 2)) in text1
    png1 = _figure_png(page)
    assert png1 != png0, "the figure did not change after the keyboard move"

    # 2. drag the handle to the right
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 120, y, steps=8)
    page.mouse.up()
    text2 = _wait_readout_change(page, text1)
    assert _resolution(text2) > 288
    png2 = _figure_png(page)
    assert png2 != png1, "the figure did not change after the drag"
    assert _png_pixels(png2)[..., :3].std() > 0.05

    # 3. "measure here": measured beside predicted, within the explorer's time cap
    page.locator(".swiftlearn-measure").click()
    page.wait_for_function(
        "() => { const e = document.querySelector('.swiftlearn-measured');"
        " return e && e.innerText.includes('measured on this machine'); }", timeout=60_000)
    measured = page.locator(".swiftlearn-measured").text_content()
    assert " ms " in measured or "skipped" in measured

    # no widget or callback error anywhere
    assert page.locator(".swiftlearn-error").text_content().strip() == ""
    body = page.locator("body").inner_text()
    for message in WIDGET_ERRORS:
        assert message not in body, message
    assert errors.count() == 0, errors.first.inner_text()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator(".swiftlearn-resolution").evaluate("e => e.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(ARTIFACTS / "05_complexity_explorer.png"))
    print(f"browser test took {time.monotonic() - t0:.1f} s; resolution 224 -> 288 -> "
          f"{_resolution(text2)}")


# ---------------------------------------------------------------- the mechanism explorers (01, 03)


def _text(page, selector: str) -> str:
    return page.locator(selector).first.text_content() or ""


def _wait_text_change(page, selector: str, before: str, timeout=60_000) -> str:
    page.wait_for_function(
        "([sel, before]) => { const e = document.querySelector(sel);"
        " return e && e.textContent.trim() && e.textContent !== before; }",
        arg=[selector, before], timeout=timeout)
    return _text(page, selector)


def _image_png(page, selector: str) -> bytes:
    page.wait_for_function(
        "sel => { const i = document.querySelector(sel);"
        " return i && i.complete && i.naturalWidth > 0; }", arg=selector)
    return page.locator(selector).first.screenshot()


def _open_and_run_all(page, base: str, token: str, notebook: str, ready: str) -> None:
    """Open a notebook, run every cell, wait until ``ready`` exists and the kernel is idle."""
    # a workspace of its own: Lab would otherwise reopen the previous test's notebook, and
    # "run all" could land on that one
    page.goto(f"{base}/lab/workspaces/{Path(notebook).stem}/tree/{notebook}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_function(
        "name => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " return w && w.context && w.context.path === name; }", arg=notebook, timeout=90_000)
    _wait_idle(page)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    try:
        page.locator(ready).first.wait_for(state="attached", timeout=300_000)
        _wait_idle(page, timeout=300_000)
    except Exception:  # say why: a cell's error stops "run all" before the explorer
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{Path(notebook).stem}_failed.png"))
        errors = page.locator(".jp-OutputArea-output[data-mime-type="
                              "'application/vnd.jupyter.stderr']").all_text_contents()
        pytest.fail(f"{notebook}: {ready} did not appear; stderr outputs: "
                    f"{[e[-600:] for e in errors]}")


def _no_errors(page, tags) -> None:
    for tag in tags:
        assert _text(page, f".swiftlearn-{tag}-error").strip() == "", tag
    body = page.locator("body").inner_text()
    for message in WIDGET_ERRORS:
        assert message not in body, message
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert errors.count() == 0, errors.first.inner_text()


def _not_blank(png: bytes) -> None:
    pixels = _png_pixels(png)
    assert pixels.shape[1] > 300 and pixels[..., :3].std() > 0.05, "the figure looks blank"


def _move_slider(page, tag: str, control: str, key: str, expect: str) -> tuple[str, bytes]:
    """Press ``key`` on a slider's handle; wait until the readout holds ``expect``."""
    readout, figure = f".swiftlearn-{tag}-readout", f"img.swiftlearn-{tag}-figure"
    before_text, before_png = _text(page, readout), _image_png(page, figure)
    handle = page.locator(f".swiftlearn-{tag}-{control} .noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.focus()
    page.keyboard.press(key)
    text = _wait_text_change(page, readout, before_text)
    assert expect in text, f"{expect!r} not in the readout after {key}: {text!r}"
    png = _image_png(page, figure)
    assert png != before_png, f"the {tag} figure did not change after {key} on {control}"
    _not_blank(png)
    return text, png


def test_attention_explorer_in_jupyterlab(lab, page):
    """01: the top-down classifier shows a top-5, and the attention explorer redraws when the
    query column and the head move by keyboard."""
    base, token = lab
    t0 = time.monotonic()
    _open_and_run_all(page, base, token, "01_self_attention.ipynb",
                      ".swiftlearn-attention-col .noUi-handle")
    page.locator(".swiftlearn-classify-readout").scroll_into_view_if_needed()
    assert "top-5" in _text(page, ".swiftlearn-classify-readout")
    _not_blank(_image_png(page, "img.swiftlearn-classify-figure"))

    text0 = _text(page, ".swiftlearn-attention-readout")
    assert "query patch (row 7, col 7)" in text0
    _not_blank(_image_png(page, "img.swiftlearn-attention-figure"))
    _move_slider(page, "attention", "col", "ArrowRight", "query patch (row 7, col 8)")
    _move_slider(page, "attention", "row", "ArrowLeft", "query patch (row 6, col 8)")
    _move_slider(page, "attention", "temperature", "ArrowRight", "τ = 1.19")
    _no_errors(page, ("attention", "classify"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator(".swiftlearn-attention-col").evaluate("e => e.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(ARTIFACTS / "01_attention_explorer.png"))
    print(f"01 browser test took {time.monotonic() - t0:.1f} s")


def test_alpha_explorer_in_jupyterlab(lab, page):
    """03: the alpha explorer redraws when the stage moves by keyboard and the formulation
    toggles (legacy_softmax: every weight 1)."""
    base, token = lab
    t0 = time.monotonic()
    _open_and_run_all(page, base, token, "03_additive_attention.ipynb",
                      ".swiftlearn-alpha-stage .noUi-handle")
    text0 = _text(page, ".swiftlearn-alpha-readout")
    assert "stage 4: 7 x 7 = 49 tokens" in text0 and "shown with 'normalize'" in text0
    _not_blank(_image_png(page, "img.swiftlearn-alpha-figure"))
    _move_slider(page, "alpha", "stage", "ArrowLeft", "stage 3: 14 x 14 = 196 tokens")

    readout, figure = ".swiftlearn-alpha-readout", "img.swiftlearn-alpha-figure"
    before_text, before_png = _text(page, readout), _image_png(page, figure)
    page.locator(".swiftlearn-alpha-formulation button", has_text="legacy_softmax").click()
    text = _wait_text_change(page, readout, before_text)
    assert "shown with 'legacy_softmax'" in text and "every α is 1" in text
    png = _image_png(page, figure)
    assert png != before_png
    _not_blank(png)
    _no_errors(page, ("alpha",))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator(".swiftlearn-alpha-stage").evaluate("e => e.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(ARTIFACTS / "03_alpha_explorer.png"))
    print(f"03 browser test took {time.monotonic() - t0:.1f} s")
