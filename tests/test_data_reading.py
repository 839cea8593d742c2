"""Reading every TinyStories layout, and one clear error for each kind of bad input."""

import json
import sys
import types
from pathlib import Path

import pytest

from nslm.cli import main
from nslm.data import read_hub, read_stories
from nslm.errors import NslmError
from nslm.sample_data import shared_data_dir
from nslm.tokenizer import EOT

STORIES = ["Once upon a time, there was a cat.\n\nThe cat was happy.", "Tom had a red ball. He liked it!",
           'Sue said, "Hello!" and smiled.']


def test_eot_text_layout_keeps_paragraphs(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("".join(f"{s}\n{EOT}\n" for s in STORIES), encoding="utf-8")
    assert list(read_stories([path])) == STORIES


def test_separator_inside_a_line_and_missing_final_separator(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(f"{STORIES[0]}{EOT}{STORIES[1]}\n{EOT}\n{STORIES[2]}\n", encoding="utf-8")
    assert list(read_stories([path])) == STORIES


def test_json_jsonl_folder_and_glob(tmp_path):
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"story": s}) for s in STORIES) + "\n")
    (tmp_path / "c.json").write_text(json.dumps([{"text": s} for s in STORIES]))
    (tmp_path / "d.json").write_text(json.dumps({"data": STORIES}))
    assert list(read_stories([tmp_path / "b.jsonl"])) == STORIES
    assert list(read_stories([tmp_path / "c.json"])) == STORIES
    assert list(read_stories([tmp_path / "d.json"])) == STORIES
    assert list(read_stories([tmp_path])) == STORIES * 3
    assert list(read_stories([str(tmp_path / "*.json")])) == STORIES * 2


def test_blank_lines_and_lines_modes(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("First story here.\n\nSecond story here.\nStill second.\n")
    with pytest.raises(NslmError, match="no <\\|endoftext\\|> story separators.*--split-on"):
        list(read_stories([path]))
    assert list(read_stories([path], split_on="blank-lines")) == ["First story here.",
                                                                   "Second story here.\nStill second."]
    assert len(list(read_stories([path], split_on="lines"))) == 3


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"\n  \n", "is empty"),
    (bytes(range(256)) * 40, "binary"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00\xff" * 500, "binary"),
])
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(NslmError, match=message):
        list(read_stories([path]))


def test_missing_paths_and_empty_folder(tmp_path):
    with pytest.raises(NslmError, match="does not exist"):
        list(read_stories([tmp_path / "nope.txt"]))
    with pytest.raises(NslmError, match="matches no files"):
        list(read_stories([str(tmp_path / "*.txt")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NslmError, match="holds no .txt"):
        list(read_stories([tmp_path / "empty"]))


def test_json_without_story_field(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"title": "no story"}) + "\n")
    with pytest.raises(NslmError, match="line 1 has no 'story' or 'text' field"):
        list(read_stories([path]))


def test_real_std_file_count(story_files):
    _, valid = story_files
    stories = list(read_stories([valid]))
    assert len(stories) == 220
    assert all(EOT not in s and s == s.strip() for s in stories)


def test_raw_hf_export_is_refused_without_separators():
    root = shared_data_dir()
    if root is None:
        pytest.skip("shared data absent")
    raw = root / "tinystories" / "valid-partial-hf-export-blankline-joined.txt"
    with pytest.raises(NslmError, match="no <\\|endoftext\\|> story separators"):
        next(iter(read_stories([raw])))
    first = next(iter(read_stories([raw], split_on="blank-lines")))
    assert first.startswith("Spot. Spot saw the shiny car")


def test_hub_download_through_huggingface_hub(tmp_path, monkeypatch):
    """Without `datasets`, the published text file is fetched with hf_hub_download (mocked here)."""
    local = tmp_path / "TinyStories-valid.txt"
    local.write_text("".join(f"{s}\n{EOT}\n" for s in STORIES))
    calls = []

    def fake_download(repo_id, filename, repo_type):
        calls.append((repo_id, filename, repo_type))
        return str(local)

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    monkeypatch.setattr("nslm.hub.host_resolves", lambda: True)
    assert list(read_hub("valid")) == STORIES
    assert calls == [("roneneldan/TinyStories", "TinyStories-valid.txt", "dataset")]


def test_hub_through_datasets_streaming(monkeypatch):
    seen = {}

    def load_dataset(name, split, streaming):
        seen.update(name=name, split=split, streaming=streaming)
        return iter([{"text": s} for s in STORIES])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert list(read_hub("valid")) == STORIES
    assert seen == {"name": "roneneldan/TinyStories", "split": "validation", "streaming": True}


def test_hub_failure_is_one_sentence(monkeypatch, tmp_path, capsys):
    def offline(**kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setitem(sys.modules, "datasets", None)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", offline)
    monkeypatch.setattr("nslm.hub.host_resolves", lambda: True)  # reachable, and the download fails
    code = main(["data", "prepare", "--source", "hf", "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "could not download roneneldan/TinyStories" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_offline_the_hub_is_not_retried_and_the_cache_is_used(monkeypatch, tmp_path, capsys):
    """When the hub's host does not resolve, hf_hub_download is asked for the cached file only (no retries,
    no retry lines); a file not in the cache is one sentence saying so."""
    local = tmp_path / "cached-valid.txt"
    local.write_text("".join(f"{s}\n{EOT}\n" for s in STORIES))
    asked = []

    def cache_only(repo_id, filename, repo_type, local_files_only=False):
        asked.append(local_files_only)
        if filename == "TinyStories-valid.txt":
            return str(local)
        from huggingface_hub.errors import LocalEntryNotFoundError
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setitem(sys.modules, "datasets", None)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", cache_only)
    monkeypatch.setattr("socket.getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(OSError("no DNS")))
    assert list(read_hub("valid")) == STORIES
    code = main(["data", "prepare", "--source", "hf", "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(asked) >= 2 and all(asked) and err.count("\n") == 1, err
    assert "its host name does not resolve" in err and "TinyStories-train.txt" in err and "Retrying" not in err
    assert not (tmp_path / "out").exists()


def test_prepare_from_hub_mocked(monkeypatch, tmp_path, story_files):
    train, valid = story_files
    files = {"TinyStories-train.txt": train[0], "TinyStories-valid.txt": valid}
    monkeypatch.setitem(sys.modules, "datasets", None)
    monkeypatch.setattr("huggingface_hub.hf_hub_download",
                        lambda repo_id, filename, repo_type: str(files[filename]))
    monkeypatch.setattr("nslm.hub.host_resolves", lambda: True)
    out = tmp_path / "hub"
    assert main(["data", "prepare", "--source", "hf", "--out", str(out), "--vocab-size", "300",
                 "--max-stories", "200", "--quiet"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["train"]["stories"] > 150 and meta["valid"]["stories"] > 150
    assert json.loads((out / "report.json").read_text())["inputs"]["source"] == "hf"


def test_path_helpers_are_paths(story_files):
    train, valid = story_files
    assert all(isinstance(p, Path) and p.is_file() for p in [*train, valid])


def test_split_on_applies_only_to_files_without_separators(tmp_path):
    eot = tmp_path / "a.txt"
    eot.write_text("".join(f"{s}\n{EOT}\n" for s in STORIES))
    plain = tmp_path / "b.txt"
    plain.write_text("One line story.\nAnother line story.\n")
    assert list(read_stories([eot, plain], split_on="lines")) == STORIES + ["One line story.", "Another line story."]
