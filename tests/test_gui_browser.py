"""The web app in a real browser: Playwright driving Debian's headless Chromium (no browser download).

Load a model, type a prompt and watch the story end; start a tiny training run, watch its progress
and loss curve advance, stop it. Screenshots of every screen go to artifacts/screenshots/, and the
three main screens are copied to docs/img/ for the README (when missing, or always with
NSLM_README_SHOTS=1, so that an ordinary test run leaves the checkout unchanged).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from nslm.generate.api import list_shipped
from nslm.gui import runs as runlib

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "artifacts" / "screenshots"
README_SHOTS = {"models": "gui-models.png", "train": "gui-train.png", "story": "gui-story.png"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install chromium; .ci/run does this)"),
]


@pytest.fixture(scope="module")
def gui(tmp_path_factory, serve_gui):
    with serve_gui(tmp_path_factory.mktemp("browser-gui")) as gui:
        yield gui


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


# How long a wait for the page may last: a loaded 2-core machine can take tens of seconds to build the page or
# answer a click; the tests wait for what the page shows, never for a fixed time.
WAIT_MS = 120_000


def new_page(browser, width: int = 1400, height: int = 900):
    """A page in its own browser context (no shared storage) at `width` x `height` pixels."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(WAIT_MS)
    return context.new_page()


@pytest.fixture
def page(browser, gui):
    page = new_page(browser)
    context = page.context
    outside = []
    page.on("request", lambda request: outside.append(request.url)
            if not request.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
    page.goto(gui.url)
    page.wait_for_selector("#model-table")
    yield page
    context.close()
    assert not outside, f"the page asked the internet for {outside[:3]}"


def screenshot(page, name: str) -> None:
    """Save a screenshot as a test artefact; the README's three screens also go to docs/img/."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)  # let the last update paint
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    if name in README_SHOTS and (os.environ.get("NSLM_README_SHOTS") or not (REPO / "docs" / "img" / README_SHOTS[name]).exists()):
        (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHOTS / f"{name}.png", REPO / "docs" / "img" / README_SHOTS[name])


def pick(page, element_id: str, label: str) -> None:
    """Choose `label` in a Gradio dropdown."""
    page.locator(f"#{element_id} input").click()
    page.locator(f"#{element_id}").get_by_role("option", name=label, exact=True).click()


def set_number(page, element_id: str, value) -> None:
    box = page.locator(f"#{element_id} input")
    box.fill(str(value))
    box.press("Tab")


def test_load_a_model_and_tell_a_story(page, gui):
    table = page.locator("#model-table")
    assert "tiny" in table.inner_text() and "transformer 1L d32 rope" in table.inner_text()
    pick(page, "models-choice", "tiny (run)")
    page.locator("#load-model").click()
    page.wait_for_selector("#load-message:has-text('Loaded')")
    assert "context 64 tokens" in page.locator("#load-message").inner_text()
    screenshot(page, "models")

    page.get_by_role("tab", name="Tell a story").click()
    assert page.locator("#story-model input").input_value() == "tiny (run)"
    teller, label = "tiny", "tiny (run)"
    if list_shipped():  # a trained shipped model tells a nicer story for the README's screenshot
        teller = gui.app.nslm_context.default_model().split(":", 1)[1]
        label = f"{teller} (shipped)"
        pick(page, "story-model", label)
    prompt = page.locator("#story-prompt textarea")
    prompt.fill("Once upon a time, there was a little cat")
    page.locator("#story-generate").click()
    note = page.locator("#story-note")
    page.wait_for_selector("#story-note:has-text('ended by itself'), #story-note:has-text('Stopped at the limit')")
    story = page.locator("#story-text textarea").input_value()
    assert story.startswith("Once upon a time, there was a little cat") and len(story) > 50
    assert "ended by itself" in note.inner_text() or "Stopped at the limit of 300 tokens" in note.inner_text()
    # the closest training story, or (when the model's data folder has no index) how to get one
    page.wait_for_selector("#story-neighbour:has-text('cosine similarity'), #story-neighbour:has-text('No novelty index')",
                           timeout=120_000)
    screenshot(page, "story")

    # the rating goes to the model that told the story, even when the dropdown has moved on since
    if teller != "tiny":
        pick(page, "story-model", "tiny (run)")
        page.wait_for_selector("#story-loaded:has-text('tiny (')")
    page.locator("#rate-comment textarea").fill("a cat story")
    page.locator("#rate-save").click()
    page.wait_for_selector(f"#rate-message:has-text('Saved'):has-text('{teller}')")

    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-generate").click()
    for side in "ab":  # both sides are told at once, so both end
        page.wait_for_selector(f"#compare-note-{side}:has-text('ended by itself'), "
                               f"#compare-note-{side}:has-text('Stopped at')", timeout=180_000)
    screenshot(page, "compare")

    page.get_by_role("tab", name="Evaluate").click()
    pick(page, "eval-model", label)  # the tab follows the dropdown, no button to press
    page.wait_for_selector(f"#eval-ratings:has-text('Human ratings for {teller}:')")
    assert "1 rating(s)" in page.locator("#eval-ratings").inner_text()
    screenshot(page, "evaluate")


def test_empty_prompt_is_a_message_not_a_dead_page(page):
    page.get_by_role("tab", name="Tell a story").click()
    page.locator("#story-prompt textarea").fill("")
    page.locator("#story-generate").click()
    page.wait_for_selector("#story-note:has-text('beginning of a story')")
    page.locator("#story-prompt textarea").fill("Once upon a time")
    page.locator("#story-generate").click()
    page.wait_for_selector("#story-note:has-text('ended by itself'), #story-note:has-text('Stopped at the limit')")


def progress(page) -> tuple[int, str, int]:
    """(step, state, train points) as the live view shows them now."""
    bar = page.locator("#run-progress .nslm-progress")
    stats = page.locator("#run-stats").inner_text()
    points = int(stats.split(" train points")[0].rsplit(" ", 1)[-1]) if " train points" in stats else 0
    return int(bar.get_attribute("data-step") or 0), bar.get_attribute("data-state") or "", points


def test_start_watch_and_stop_a_training_run(page, gui, browser, wait_until, tiny_extra):
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-data textarea, #train-data input").first.fill(str(gui.data))
    set_number(page, "train-width", 30)  # 4 heads cannot split 30
    page.wait_for_selector("#error-width:has-text('n_head')")
    set_number(page, "train-width", 32)
    wait_until(lambda: "n_head" not in page.locator("#error-width").inner_text())
    set_number(page, "train-layers", 1)
    set_number(page, "train-context", 32)
    set_number(page, "train-lr", 0.003)
    set_number(page, "train-batch", 4)
    page.locator("#train-budget-kind").get_by_label("tokens").check()
    set_number(page, "train-budget", 300_000)  # minutes of work: progress shows, the test stops it early
    page.locator("#train-name input, #train-name textarea").first.fill("browser-run")
    page.get_by_text("More settings").click()
    extra = page.locator("#train-extra textarea")
    extra.wait_for(state="visible")
    wait_until(lambda: extra.fill(tiny_extra) or extra.press("Tab") or
               (page.wait_for_timeout(300) or extra.input_value() == tiny_extra))
    wait_until(lambda: "parameters" in page.locator("#train-params").inner_text())
    params_text = page.locator("#train-params").inner_text()
    assert "k parameters" in params_text, params_text
    page.locator("#train-start").click()
    page.wait_for_selector("#train-message:has-text('Started')")
    config = wait_until(lambda: runlib.read_json(gui.runs / "browser-run" / "config.json"))
    assert (config["model"]["d_model"], config["model"]["n_head"], config["train"]["eval_interval"]) == (32, 2, 10)

    step, state, points = wait_until(lambda: (lambda p: p if p[1] == "running" and p[0] > 0 else None)(progress(page)))
    wait_until(lambda: page.locator("#run-plot canvas, #run-plot svg").count() > 0)  # the native plot is drawn
    later = wait_until(lambda: (lambda p: p if p[0] > step and p[2] > points else None)(progress(page)))
    assert later[0] > step  # the progress moved on its own (the page's timer)
    wait_until(lambda: "validation loss" in page.locator("#run-stats").inner_text())
    assert float(page.locator("#run-progress .nslm-progress").get_attribute("data-progress")) > 0
    screenshot(page, "train")

    # a second tab sees the same run, read from the run folder
    other = new_page(browser)
    other.goto(gui.url)
    other.get_by_role("tab", name="Train").click()
    wait_until(lambda: other.locator("#train-run input").input_value() == "browser-run")
    other.context.close()

    page.locator("#train-stop").click()
    page.wait_for_selector("#run-message:has-text('Stopping')")  # the message sits beside the button
    wait_until(lambda: progress(page)[1] == "stopped")
    assert (gui.runs / "browser-run" / "last" / "state.json").is_file()
    screenshot(page, "train-stopped")


def test_stop_a_story_mid_stream_and_compare_streams_both_sides_at_once(page, gui, wait_until):
    page.get_by_role("tab", name="Tell a story").click()
    pick(page, "story-model", "tiny (run)")
    set_number(page, "story-max-tokens", 2000)
    # greedy: the tiny model repeats its likeliest word and never reaches the end-of-story token by itself
    set_number(page, "story-temperature", 0)
    page.locator("#story-generate").click()
    story = page.locator("#story-text textarea")
    wait_until(lambda: len(story.input_value()) > 20)
    assert page.locator("#story-generate").is_disabled()  # busy while it tells
    page.locator("#story-stop").click()
    note = wait_until(lambda: page.locator("#story-note").inner_text(), test=lambda text: "Stopped" in text)
    assert "Stopped: the story is cut where you pressed Stop" in note
    wait_until(lambda: page.locator("#story-generate").is_enabled())
    cut = story.input_value()
    assert cut.startswith("Once upon a time")
    page.wait_for_timeout(1500)
    assert story.input_value() == cut  # nothing more arrives after Stop

    # Side B is a second copy of the tiny run, so both sides tell 2,000 tokens and neither can end before the
    # other has started (a shipped model tells its story in a fraction of a second). A copy, not the same
    # run: one model tells one story at a time.
    twin = gui.runs / "tiny-twin"
    shutil.copytree(gui.runs / "tiny", twin)
    try:
        page.get_by_role("tab", name="Models").click()
        page.locator("#refresh-models").click()
        page.wait_for_selector("#model-table:has-text('tiny-twin')")
        page.get_by_role("tab", name="Compare").click()
        pick(page, "compare-a", "tiny (run)")
        pick(page, "compare-b", "tiny-twin (run)")
        set_number(page, "compare-max-tokens", 2000)
        set_number(page, "compare-temperature", 0)
        page.locator("#compare-generate").click()
        a, b = page.locator("#compare-story-a textarea"), page.locator("#compare-story-b textarea")
        ended = "#compare-note-{}:has-text('ended by itself'), #compare-note-{}:has-text('Stopped')"

        def both_streaming():
            return (a.input_value() and b.input_value() and not page.locator(ended.format("a", "a")).count()
                    and not page.locator(ended.format("b", "b")).count())

        wait_until(both_streaming, 120, every=0.1)  # both sides have text before either has ended
        for side in "ab":
            page.wait_for_selector(ended.format(side, side), timeout=300_000)
            # the tiny model, greedy, never ends by itself: each side ran to the limit
            assert "Stopped at the limit of 2000 tokens" in page.locator(f"#compare-note-{side}").inner_text()
        assert a.input_value() == b.input_value()  # the same weights, prompt and seed tell the same story
        wait_until(lambda: page.locator("#compare-generate").is_enabled())
    finally:
        shutil.rmtree(twin)


def test_evaluate_from_the_page(page, gui):
    page.get_by_role("tab", name="Evaluate").click()
    pick(page, "eval-model", "tiny (run)")
    page.wait_for_selector("#eval-report:has-text('press **Evaluate**'), #eval-report:has-text('press Evaluate')")
    assert "DIR" not in page.locator("#eval-report").inner_text()  # the app's own folders are filled in
    for step in ("generate", "novelty", "blimp", "cola", "hellaswag"):
        page.locator("#eval-steps").get_by_label(step, exact=True).uncheck()
    page.locator("#eval-run").click()
    page.wait_for_selector("#eval-message:has-text('in its own process')")
    page.wait_for_selector("#eval-job [data-state='running'], #eval-job [data-state='finished']")
    page.wait_for_selector("#eval-job [data-state='finished']", timeout=300_000)
    assert "✓ likelihood: done" in page.locator("#eval-job").inner_text()
    page.wait_for_selector("#eval-report:has-text('Report:')")
    screenshot(page, "evaluate-run")


def test_every_tab_fits_a_phone_screen(browser, gui):
    phone = new_page(browser, 390, 844)
    context = phone.context
    phone.goto(gui.url)
    phone.wait_for_selector("#model-table")
    # each tab's main button, which must be on screen; a tab not named here is checked for width only
    shown = {"Models": "#load-model", "Train": "#train-start", "Tell a story": "#story-generate",
             "Compare": "#compare-generate", "Evaluate": "#eval-run"}
    tabs = phone.get_by_role("tab").all_inner_texts()  # every tab's name is on screen, none behind a menu
    assert set(shown) <= set(tabs), tabs
    for tab in tabs:
        phone.get_by_role("tab", name=tab).click()
        button = shown.get(tab)
        if button:
            phone.locator(button).wait_for(state="visible")
        phone.wait_for_timeout(500)
        width = phone.evaluate("Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)")
        assert width <= 390, f"{tab}: the page is {width} px wide on a 390 px screen"
        if button:
            box = phone.locator(button).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, f"{tab}: {button} is off the screen"
        screenshot(phone, f"phone-{tab.lower().replace(' ', '-')}")
    # no tab's timer shows the page an error (the Sweeps tab's, with no sweep to pick, once did every 5 s);
    # its absence can only be seen by waiting past a tick
    phone.wait_for_timeout(5_500)
    assert phone.locator(".toast-body.error").count() == 0, phone.locator(".toast-body").all_inner_texts()
    context.close()


def test_build_the_novelty_index_from_the_page_and_see_the_closest_story(browser, serve_gui, small_data_dir,
                                                                         tmp_path_factory):
    """On a 40-story data folder (its own copy, without an index), so that the whole index builds in seconds."""
    folder = tmp_path_factory.mktemp("index-browser")
    data = shutil.copytree(small_data_dir, folder / "data", ignore=shutil.ignore_patterns("novelty-index"))
    stories = json.loads((data / "meta.json").read_text())["train"]["stories"]
    with serve_gui(folder, data) as served:
        page = new_page(browser)
        page.goto(served.url)
        page.get_by_role("tab", name="Evaluate").click()
        page.wait_for_selector("#index-status:has-text('No novelty index')")
        page.locator("#index-build").click()
        page.wait_for_selector("#index-message:has-text('in its own process')")
        page.wait_for_selector("#eval-job [data-job='index'][data-state='finished']", timeout=300_000)
        page.wait_for_selector(f"#index-status:has-text('covers all {stories:,} training stories')")

        # the tiny run's own data folder has no index, so the panel reads the app's, just built
        page.get_by_role("tab", name="Tell a story").click()
        pick(page, "story-model", "tiny (run)")
        set_number(page, "story-max-tokens", 40)
        page.locator("#story-generate").click()
        page.wait_for_selector("#story-neighbour:has-text('cosine similarity')", timeout=120_000)
        assert f"the closest of all {stories:,} training stories" in page.locator("#story-neighbour").inner_text()
        page.context.close()
