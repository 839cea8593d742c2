"""Every action of the web app through its own API client (gradio_client), on a tiny trained model.

The app runs in this process on a free 127.0.0.1 port; training runs it starts are real `nslm train`
processes with the tiniest settings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def gui(tmp_path_factory, serve_gui):
    with serve_gui(tmp_path_factory.mktemp("gui")) as gui:
        yield gui


@pytest.fixture(scope="module")
def client(gui):
    from gradio_client import Client

    return Client(gui.url, verbose=False)


def tell(client, prompt="Once upon a time", model="run:tiny", temperature=0.8, top_k=0, top_p=1.0,
         max_tokens=40, seed=7):
    """(story, note, closest-story panel) as the page shows them at the end."""
    return client.predict(model, prompt, temperature, top_k, top_p, max_tokens, seed, api_name="/tell")[:3]


def raw_call(client, api: str, data: list) -> list:
    """Call an endpoint through Gradio's HTTP API with JSON as a browser may send it (lone surrogates and
    NaN included, which gradio_client refuses to encode); returns the last outputs."""
    body = json.dumps({"data": data}, ensure_ascii=True, allow_nan=True).encode()
    request = urllib.request.Request(f"{client.src}gradio_api/call/{api}", body,
                                     {"Content-Type": "application/json"})
    event = json.loads(urllib.request.urlopen(request).read())["event_id"]
    lines = urllib.request.urlopen(f"{client.src}gradio_api/call/{api}/{event}").read().decode().splitlines()
    results = [json.loads(line[len("data:"):]) for line in lines if line.startswith("data:")]
    return [r for r in results if isinstance(r, list)][-1]


# ----- Models ------------------------------------------------------------------------------------------


def test_model_list_shows_runs_with_their_figures(client, gui):
    (gui.runs / "foreign").mkdir()
    (gui.runs / "foreign" / "weights.pt").write_bytes(b"\x80\x04not really")
    table = client.predict(api_name="/refresh_models")[0]
    rows = {row[0]: dict(zip(table["headers"], row)) for row in table["data"]}
    tiny = rows["tiny"]
    config = json.loads((gui.runs / "tiny" / "config.json").read_text())
    assert tiny["architecture"] == "transformer 1L d32 rope"
    assert tiny["params"].endswith("k") and abs(float(tiny["params"][:-1]) * 1e3 - config["params"]["total"]) < 10
    assert tiny["tokenizer"] == "bpe-1024"
    assert tiny["state"] == "finished" and float(tiny["val bits/byte"]) > 0
    assert "not a run folder" in rows["foreign"]["state"]


def test_loading_a_model_and_loading_errors_are_messages(client, gui):
    message, story_model, _ = client.predict("run:tiny", api_name="/load_model")
    assert message.startswith("✓ Loaded **tiny**") and "context 64 tokens" in message
    assert story_model["value"] == "run:tiny"
    message, _, _ = client.predict("run:foreign", api_name="/load_model")
    assert message.startswith("⚠") and "not a run folder" in message
    corrupt = gui.runs / "corrupt"
    shutil.copytree(gui.runs / "tiny", corrupt)
    (corrupt / "model.safetensors").write_bytes(b"garbage" * 10)
    client.predict(api_name="/refresh_models")
    message, _, _ = client.predict("run:corrupt", api_name="/load_model")
    assert message.startswith("⚠") and "corrupt" in message
    for bad in ["run:../tiny", "run:..", "shipped:../../etc", "/etc/passwd"]:
        message, _, _ = client.predict(bad, api_name="/load_model")
        assert message.startswith("⚠"), bad
    assert client.predict("run:tiny", api_name="/load_model")[0].startswith("✓")  # still serving


def test_no_file_outside_the_served_folders_can_be_fetched(gui):
    secret = gui.runs.parent / "secret.txt"
    secret.write_text("do not serve")
    for path in ["/etc/passwd", str(secret), f"{gui.runs}/../secret.txt", str(gui.db)]:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{gui.url}gradio_api/file={path}")
        assert err.value.code in (403, 404), path


def test_binds_to_localhost_by_default(gui):
    assert gui.url.startswith("http://127.0.0.1:")


# ----- Tell a story --------------------------------------------------------------------------------------


def test_story_streams_and_says_how_it_ended(client):
    job = client.submit("run:tiny", "Once upon a time", 0.8, 0, 1.0, 30, 11, api_name="/tell")
    updates = list(job)
    stories = [u[0] for u in updates if u[0]]
    # the page gets at most ten updates a second, so a fast tiny model's 30 tokens come in a few pieces
    assert len(stories) >= 2, "the story should arrive in pieces"
    assert all(later.startswith(earlier) for earlier, later in zip(stories, stories[1:]))
    story, note, neighbour = updates[-1][:3]
    assert story.startswith("Once upon a time")
    assert "ended by itself" in note or "Stopped at the limit of 30 tokens" in note
    assert "novelty index" in neighbour  # none built for this data folder
    assert tell(client, max_tokens=30, seed=11)[0] == story  # the same seed tells the same story


def test_greedy_story_equals_the_python_api(client, gui):
    import nslm

    expected = nslm.load(str(gui.runs / "tiny")).generate("Once upon a time", max_tokens=25, temperature=0)
    story, note, _ = tell(client, temperature=0, max_tokens=25)
    assert story == expected.text
    assert ("ended by itself" in note) == expected.ended


def test_bad_prompts_and_absurd_sampling_values_get_a_clear_message(client):

    assert "beginning of a story" in tell(client, prompt="   ")[1]
    story, note, _ = tell(client, prompt="Once upon a time there was a dog. " * 20, max_tokens=10)
    assert "longer than this model's context window (64 tokens)" in note and story
    # generation's sentences, naming the page's fields
    assert "Top-k must be a positive whole number" in tell(client, top_k=-5)[1]
    assert "Seed must be a whole number" in tell(client, seed=1e30)[1]
    assert "Temperature must be 0 (greedy) or a positive number" in tell(client, temperature=-1)[1]
    # what a browser can send but gradio_client cannot encode: a lone surrogate (half an emoji)
    story, note, _ = raw_call(client, "tell", ["run:tiny", "Once \ud800 upon a time", 0.8, 0, 1.0, 40, 7])[:3]
    assert "broken character at position 6" in note and not story
    assert "no longer exists" in tell(client, model="run:ghost")[1]
    assert tell(client)[0].startswith("Once upon a time")  # and the app still serves


def test_two_users_generating_at_once_both_get_their_story(client, gui):
    from gradio_client import Client

    other = Client(gui.url, verbose=False)
    jobs = [c.submit("run:tiny", "Once upon a time", 0.8, 0, 1.0, 60, seed, api_name="/tell")
            for c, seed in ((client, 1), (other, 2))]
    results = [job.result(timeout=120) for job in jobs]
    for story, note, *_ in results:
        assert story.startswith("Once upon a time")
        assert "ended by itself" in note or "Stopped at the limit" in note


def test_compare_runs_the_same_prompt_and_seed_on_two_models(client, gui):
    shutil.copytree(gui.runs / "tiny", gui.runs / "twin")
    story_a, note_a, story_b, note_b = client.predict("run:tiny", "run:twin", "Once upon a time", 0.8, 0, 1.0,
                                                      30, 5, api_name="/compare")[:4]
    assert story_a.startswith("Once upon a time") and story_a == story_b  # same weights, same seed
    assert note_a and note_b
    assert "Pick two models" in client.predict("run:tiny", "", "Once", 0.8, 0, 1.0, 30, 5, api_name="/compare")[1]


def test_a_run_folder_deleted_while_the_app_is_open(client, gui):
    shutil.copytree(gui.runs / "tiny", gui.runs / "doomed")
    client.predict(api_name="/refresh_models")
    assert client.predict("run:doomed", api_name="/load_model")[0].startswith("✓")
    shutil.rmtree(gui.runs / "doomed")
    assert "no longer exists" in tell(client, model="run:doomed")[1]
    assert "no longer" in client.predict("run:doomed", api_name="/load_model")[0]
    assert "doomed" not in [r[0] for r in client.predict(api_name="/refresh_models")[0]["data"]]
    assert "no longer exists" in client.predict("doomed", api_name="/watch_run")[0]
    assert "no longer exists" in client.predict("run:doomed", api_name="/show_report")[1] + \
        client.predict("run:doomed", api_name="/show_report")[0]


# ----- Rate and evaluate ------------------------------------------------------------------------------------


def test_ratings_are_saved_to_the_shared_store(client, gui):
    from nslm.eval.human import RatingStore

    story = tell(client)[0]
    message = client.predict("run:tiny", "Once upon a time", story, 7, 4, 6, "short but sweet", "ana",
                             api_name="/rate")
    assert message.startswith("✓ Saved")
    saved = RatingStore(gui.db).ratings("tiny")[0]
    assert (saved.grammar, saved.creativity, saved.consistency, saved.rater, saved.story) == (7, 4, 6, "ana", story)
    assert "Generate a story first" in client.predict("run:tiny", "x", "", 5, 5, 5, "", "", api_name="/rate")
    nan = raw_call(client, "rate", ["run:tiny", "x", story, float("nan"), 5, 5, "", ""])[0]
    assert "grammar must be a whole number from 1 to 10" in nan  # the rating store's own sentence
    ratings, _, _ = client.predict("run:tiny", api_name="/show_report")
    assert "Human ratings for tiny:** 1 rating(s) from 1 rater(s)" in ratings and "grammar 7.0" in ratings


def test_evaluation_tab_shows_the_latest_report(client, gui):
    from matplotlib.figure import Figure

    assert "No evaluation report for **tiny**" in client.predict("run:tiny", api_name="/show_report")[1]
    report = gui.reports / "tiny-report"
    report.mkdir(parents=True)
    (report / "results.json").write_text(json.dumps({"models": {str(gui.runs / "tiny"): {"bits_per_byte": 2.5}}}))
    (report / "report.md").write_text("# Evaluation\n\n| model | bits per byte |\n|---|---|\n| tiny | 2.500 |\n\n"
                                      "![bpb](bpb.png)\n")
    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([1, 2], [2, 1])
    fig.savefig(report / "bpb.png")
    _, markdown, plots = client.predict("run:tiny", api_name="/show_report")
    assert "| tiny | 2.500 |" in markdown and "![bpb]" not in markdown
    plots = plots["value"] if isinstance(plots, dict) else plots
    assert len(plots) == 1 and Path(plots[0]["image"]).read_bytes()[:4] == b"\x89PNG"


# ----- Train ------------------------------------------------------------------------------------------------


def form(gui, extra, **changes):
    values = dict(preset="transformer-1m", data=str(gui.data), width=32, layers=1, context=32, lr=0.003, batch=4,
                  budget_kind="tokens", budget=50_000_000, name="live", extra=extra)
    values.update(changes)
    return list(values.values())


def test_train_form_reasons_and_live_parameter_count(client, gui, tiny_extra):
    from nslm.gui.train_form import FIELDS

    out = client.predict(*form(gui, tiny_extra), api_name="/check_train_form")
    errors, params, data_info = dict(zip(FIELDS, out[:len(FIELDS)])), out[-2], out[-1]
    assert not any(errors.values()), errors
    assert "parameters" in params and "bpe" in data_info
    out = client.predict(*form(gui, tiny_extra, width=30, lr=-1, data="/nowhere", batch=0), api_name="/check_train_form")
    errors = dict(zip(FIELDS, out[:len(FIELDS)]))
    assert "n_head" in errors["width"] and "Learning rate" in errors["lr"]
    assert "does not exist" in errors["data"] and "Batch" in errors["batch"]
    message, *_ = client.predict(*form(gui, tiny_extra, width=30), api_name="/start_training")
    assert "Fix the marked fields" in message
    assert not (gui.runs / "live").exists()


def run_view(client, name):
    header, bar, stats, _plot, sample, _log = client.predict(name, api_name="/watch_run")[:6]
    step = int(bar.split("data-step='")[1].split("'")[0])
    state = bar.split("data-state='")[1].split("'")[0]
    return SimpleNamespace(header=header, step=step, state=state, stats=stats, sample=sample)


def test_training_starts_stops_and_resumes_in_its_own_process(client, gui, tiny_extra, wait_until):
    message, run = client.predict(*form(gui, tiny_extra, name="api-run"), api_name="/start_training")[:2]
    assert "Started **api-run**" in message and run["value"] == "api-run"
    view = wait_until(lambda: run_view(client, "api-run"), every=0.5, test=lambda v: v.state == "running" and v.step >= 4)
    second = client.predict(*form(gui, tiny_extra, name="second"), api_name="/start_training")[0]
    assert "'api-run' is still training" in second and not (gui.runs / "second").exists()
    assert "stopping" in client.predict("api-run", api_name="/stop_training").lower()
    stopped = wait_until(lambda: run_view(client, "api-run"), every=0.5, test=lambda v: v.state == "stopped")
    assert stopped.step >= view.step
    assert (gui.runs / "api-run" / "last" / "state.json").is_file()
    assert "Resuming" in client.predict("api-run", api_name="/resume_training")
    wait_until(lambda: run_view(client, "api-run"), every=0.5, test=lambda v: v.state == "running" and v.step > stopped.step)
    client.predict("api-run", api_name="/stop_training")
    wait_until(lambda: run_view(client, "api-run"), every=0.5, test=lambda v: v.state == "stopped")
    assert "not training" in client.predict("api-run", api_name="/stop_training")
    table = client.predict(api_name="/refresh_models")[0]
    assert "api-run" in [row[0] for row in table["data"]]  # listed without restarting the app


def test_nslm_gui_command_prints_its_address_and_serves(tmp_path, free_port, wait_until):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nslm", "gui", "--runs-dir", str(tmp_path / "runs"),
                             "--port", str(port), "--db", str(tmp_path / "r.sqlite")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        address = f"http://127.0.0.1:{port}/"
        wait_until(lambda: "".join(lines), test=lambda text: address in text or proc.poll() is not None,
                   every=0.5, timeout=300)
        assert address in "".join(lines), "".join(lines)
        page = urllib.request.urlopen(address).read().decode()
        assert "<title>nslm" in page or "gradio" in page.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ----- Evaluate and the novelty index, each as its own process ------------------------------------------------


def job_watcher(client):
    """A function giving (markdown of the evaluation job, its state) as the Evaluate tab's timer shows it;
    the timer sends the markdown only when it changed, so the last one sent is kept."""
    shown = {"markdown": ""}

    def view() -> tuple[str, str]:
        markdown = client.predict("run:tiny", api_name="/evaluation_job")[0]
        if isinstance(markdown, str):
            shown["markdown"] = markdown
        markdown = shown["markdown"]
        return markdown, markdown.split("data-state='")[1].split("'")[0] if "data-state='" in markdown else "none"

    return view


def test_evaluate_runs_as_its_own_process_with_progress_per_step(client, gui, wait_until):
    message = client.predict("run:tiny", "quick", ["likelihood", "generate"], api_name="/evaluate")
    assert "Evaluating **tiny** (quick) in its own process" in message
    again = client.predict("run:tiny", "quick", ["likelihood"], api_name="/evaluate")
    assert "one evaluation job runs at a time" in again  # one at a time
    job_view = job_watcher(client)
    markdown, state = wait_until(job_view, test=lambda v: v[1] not in ("running", "none"), timeout=600)
    assert state == "finished", markdown
    assert "✓ likelihood: done" in markdown and "✓ generate: done" in markdown and "novelty" not in markdown
    results = json.loads((gui.reports / "tiny" / "results.json").read_text())
    assert results["quick"] and results["models"]["tiny"]["likelihood"]["bits_per_byte"] > 0
    _, report, _ = client.predict("run:tiny", api_name="/show_report")
    assert f"Report: `{gui.reports / 'tiny'}`" in report and "bits per byte" in report
    assert "Tick at least one measure" in client.predict("run:tiny", "quick", [], api_name="/evaluate")


def test_building_the_novelty_index_from_the_page(tmp_path_factory, small_data_dir, serve_gui, wait_until):
    """A small data folder, so that embedding every story takes seconds."""
    from gradio_client import Client

    small = small_data_dir
    with serve_gui(tmp_path_factory.mktemp("index-gui"), small) as served:
        small_client = Client(served.url, verbose=False)
        assert "No novelty index" in small_client.predict("run:tiny", api_name="/evaluation_job")[1]
        assert "Building the novelty index" in small_client.predict(api_name="/build_index")
        markdown, state = wait_until(job_watcher(small_client), test=lambda v: v[1] not in ("running", "none"),
                                   timeout=600)
        assert state == "finished", markdown
        total = json.loads((small / "meta.json").read_text())["train"]["stories"]
        fresh = Client(served.url, verbose=False)  # a new page: its first look shows the index panel
        index = fresh.predict("run:tiny", api_name="/evaluation_job")[1]
        assert f"covers all **{total:,}** training stories" in index
