"""Human ratings: the SQLite store the GUI writes to, and `nslm eval human`."""

from __future__ import annotations

import json
import threading

import pytest

from nslm.cli import main
from nslm.errors import NslmError
from nslm.eval.human import RatingStore, default_db_path


def test_store_adds_and_summarises_per_model(tmp_path):
    store = RatingStore(tmp_path / "r.sqlite")
    store.add("runs/tf", "Once", "Once upon a time.", 8, 6, 7, rater="ana", comment="nice")
    store.add("runs/tf", "Once", "Once upon a time!", 6, 8, 9, rater="bo")
    store.add("runs/lstm", "Tom", "Tom ran.", 3, 2, 4)
    summary = RatingStore(tmp_path / "r.sqlite").summary()  # a new handle sees the same data
    assert summary["runs/tf"] == {"ratings": 2, "raters": 2, "grammar": 7.0, "creativity": 7.0, "consistency": 8.0}
    assert summary["runs/lstm"]["ratings"] == 1 and summary["runs/lstm"]["raters"] == 1
    newest = store.ratings("runs/tf")[0]
    assert newest.rater == "bo" and newest.story == "Once upon a time!" and newest.created_at > 0
    assert store.models() == ["runs/lstm", "runs/tf"]


@pytest.mark.parametrize("bad", [0, 11, 5.5, "7", None, True])
def test_scores_must_be_whole_numbers_from_1_to_10(tmp_path, bad):
    store = RatingStore(tmp_path / "r.sqlite")
    with pytest.raises(NslmError, match="grammar must be"):
        store.add("m", "p", "s", bad, 5, 5)
    assert store.summary() == {}


def test_concurrent_writers(tmp_path):
    store = RatingStore(tmp_path / "r.sqlite")
    threads = [threading.Thread(target=lambda i=i: store.add("m", "p", f"s{i}", 5, 5, 5)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert store.summary()["m"]["ratings"] == 8


def test_default_path_follows_nslm_home(tmp_path, monkeypatch):
    monkeypatch.setenv("NSLM_HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / "ratings.sqlite"
    RatingStore().add("m", "p", "s", 1, 2, 3)
    assert (tmp_path / "home" / "ratings.sqlite").is_file()


def test_cli_summary(tmp_path, capsys):
    db = tmp_path / "r.sqlite"
    RatingStore(db).add("runs/tf", "p", "s", 9, 8, 7, rater="ana", comment="lovely")
    assert main(["eval", "human", "--db", str(db), "--list", "--json", str(tmp_path / "h.json")]) == 0
    out = capsys.readouterr().out
    assert "runs/tf" in out and "9.00" in out and "lovely" in out
    assert json.loads((tmp_path / "h.json").read_text())["runs/tf"]["grammar"] == 9


def test_unusable_database_is_one_sentence(tmp_path, capsys):
    bad = tmp_path / "not.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    assert main(["eval", "human", "--db", str(bad)]) == 2
    assert "cannot open the ratings database" in capsys.readouterr().err


def test_summary_never_creates_a_database(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NSLM_HOME", str(tmp_path / "home"))
    assert main(["eval", "human", "--db", str(tmp_path / "missing" / "dir" / "x.sqlite")]) == 2
    assert "there is no ratings database at" in capsys.readouterr().err
    assert main(["eval", "human"]) == 0  # the default store, not made yet: nothing to summarise
    assert "no ratings yet" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(NslmError, match="no ratings database"):
        RatingStore(tmp_path / "x.sqlite", create=False)


def test_read_only_store_reads_and_cannot_write(tmp_path):
    db = tmp_path / "r.sqlite"
    RatingStore(db).add("runs/tf", "p", "s", 9, 8, 7)
    stamp = db.stat().st_mtime_ns
    reader = RatingStore(db, create=False)
    assert reader.summary()["runs/tf"]["ratings"] == 1
    with pytest.raises(NslmError, match="cannot save"):
        reader.add("runs/tf", "p", "s", 1, 1, 1)
    assert db.stat().st_mtime_ns == stamp and len(RatingStore(db).ratings()) == 1


@pytest.mark.parametrize("field, value, message", [
    ("comment", "x" * 5_000_000, "at most 2,000 characters, not 5,000,000"),
    ("rater", "r" * 101, "at most 100 characters"),
    ("story", "s" * 100_001, "at most 100,000 characters"),
    ("comment", "bad \ud800 surrogate", "not valid text"),
    ("comment", 42, "must be text, not int"),
    ("prompt", b"bytes", "must be text, not bytes"),
])
def test_free_text_fields_are_bounded(tmp_path, field, value, message):
    store = RatingStore(tmp_path / "r.sqlite")
    fields = {"model": "runs/tf", "prompt": "Once", "story": "A story.", "rater": "ana", "comment": ""}
    fields[field] = value
    with pytest.raises(NslmError, match=message):
        store.add(grammar=5, creativity=5, consistency=5, **fields)
    assert store.ratings() == []
    store.add(grammar=5, creativity=5, consistency=5, **(fields | {field: "ok"}))
    assert len(store.ratings()) == 1
