"""Novelty: a copied training story is found with cosine ~1 and full n-gram overlap; the index is reused."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest

from nslm.errors import NslmError
from nslm.eval import novelty
from nslm.sample_data import std_files, synthetic_stories


def real_stories(n: int) -> list[str]:
    std = std_files()
    if std is None:
        return [f"{s} It was day {i}." for i, s in enumerate(synthetic_stories(n, seed=3))]
    return [s for _, _, s in novelty.iter_stories(std[0][0], limit=n)]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("novelty-data")
    stories = real_stories(40)
    (folder / "train.txt").write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return novelty.NoveltyIndex.build(folder, batch_size=16, ngram_chunk=500), stories


def test_copied_story_has_cosine_one_and_full_ngram_overlap(index):
    idx, stories = index
    copied = stories[17]
    found, cos = idx.nearest(copied)
    assert found == copied and cos == pytest.approx(1.0, abs=2e-3)
    assert idx.ngram_overlap(copied, 4) == 1.0 and idx.ngram_overlap(copied, 5) == 1.0


def test_new_story_is_less_similar_and_has_low_overlap(index):
    idx, _ = index
    text = "The robot counted seven purple volcanoes while the accountant sang opera about taxes on Mars."
    _, cos = idx.nearest(text)
    assert cos < 0.6
    assert idx.ngram_overlap(text, 4) < 0.2


def test_report_on_generated_records(index):
    idx, stories = index
    prompt, rest = stories[3][:40], stories[3][40:]
    records = [
        {"prompt": prompt, "completion": rest, "text": stories[3]},
        {"prompt": "Once upon a time", "completion": " a zebra flew a kite over the sea of pudding.",
         "text": "Once upon a time a zebra flew a kite over the sea of pudding."},
    ]
    report = novelty.novelty_report(idx, records, top=1)
    first = report["items"][0]
    assert first["nearest_story"] == stories[3] and first["ngram4_overlap"] == 1.0
    assert first["lcs_chars"] == len(rest.rstrip()) or first["lcs_chars"] >= len(rest) - 1
    assert report["most_similar"][0]["completion"] == rest
    assert report["stories"] == 2 and report["index_stories"] == 40
    assert 0 < report["mean_max_cosine"] <= 1.0


def test_index_is_saved_and_reused(index):
    idx, _ = index
    data_dir = idx.train_path.parent
    assert (data_dir / "novelty-index" / "meta.json").is_file()
    again = novelty.NoveltyIndex.load_or_build(data_dir, limit=10)
    assert len(again) == 40  # the full index covers a smaller request: nothing rebuilt
    assert np.array_equal(np.asarray(again.embeddings), np.asarray(idx.embeddings))


def test_ngram_set_chunks_agree_with_a_python_set():
    texts = real_stories(12)
    hashes = [novelty.ngram_hashes(t, 4) for t in texts]
    chunks = [np.unique(np.concatenate(hashes[:6])), np.unique(np.concatenate(hashes[6:]))]
    store = novelty.NgramSet(chunks)
    probe = np.concatenate([hashes[0][:5], hashes[11][:5], novelty.ngram_hashes("zebra pudding kite sea flew high", 4)])
    expected = np.isin(probe, np.concatenate(hashes))
    assert np.array_equal(store.contains(probe), expected) and expected[:10].all() and not expected[10:].any()


def test_ngram_hashes_are_stable_words_not_punctuation():
    assert np.array_equal(novelty.ngram_hashes("The cat, sat on the mat!", 4), novelty.ngram_hashes("the cat sat on THE mat", 4))
    assert len(novelty.ngram_hashes("too short", 4)) == 0


def test_missing_train_file_is_an_error(tmp_path):
    with pytest.raises(NslmError, match="train.txt"):
        novelty.NoveltyIndex.build(tmp_path)


def test_limited_index_embeds_some_stories_but_counts_ngrams_of_all(tmp_path):
    stories = real_stories(30)
    (tmp_path / "train.txt").write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    idx = novelty.NoveltyIndex.build(tmp_path, limit=10, folder=tmp_path / "ix", batch_size=4)
    assert len(idx) == 10 and idx.meta["ngram_stories"] == 30
    assert idx.ngram_overlap(stories[25], 4) == 1.0
    found, cos = idx.nearest(stories[5])
    assert found == stories[5] and cos == pytest.approx(1.0, abs=2e-3)
    # A request for more stories than the saved index holds rebuilds it.
    assert len(novelty.NoveltyIndex.load_or_build(tmp_path, limit=20, folder=tmp_path / "ix", batch_size=8)) == 20


def test_ngrams_that_straddle_the_prompt_are_not_counted(index):
    idx, stories = index
    tokens = stories[5].split()
    prompt = " ".join(tokens[:10])
    # The completion goes on as the training story for three words, then says something new.
    completion = " " + " ".join(tokens[10:13]) + " zebra quantum pudding flew xylophone marmalade galaxy orbit."
    text = prompt + completion
    (item,) = novelty.novelty_report(idx, [{"prompt": prompt, "completion": completion, "text": text}])["items"]
    # Counting n-grams that merely end in the completion would find the training story's own words.
    skip = len(novelty.words(prompt))
    assert idx.ngram_overlap(text, 4, skip - 3) > 0
    assert item["ngram4_overlap"] == 0.0 and item["ngram5_overlap"] == 0.0


def test_overlap_is_the_mean_of_per_story_shares_and_repeats_count(index):
    idx, stories = index
    seen = " ".join(stories[7].split()[:4])  # one 4-gram seen in training
    new = "purple zebra quantum pudding"
    records = [{"prompt": "", "completion": f"{seen}. {new}. {new}.", "text": f"{seen}. {new}. {new}."},
               {"prompt": "", "completion": seen, "text": seen}]
    report = novelty.novelty_report(idx, records)
    first = report["items"][0]["ngram4_overlap"]
    # 12 words, 9 four-grams: the seen one and 8 unseen (the repeated new words count every time).
    assert first == pytest.approx(1 / 9) and report["items"][1]["ngram4_overlap"] == 1.0
    assert report["ngram4_overlap"] == pytest.approx((1 / 9 + 1.0) / 2)


class _Stopping:
    """The real embedder, counting the stories it embeds and failing on call `fail_on` (as a killed build)."""

    def __init__(self, embedder, fail_on: int | None = None, delay: float = 0.0):
        self.embedder, self.fail_on, self.delay, self.calls, self.stories = embedder, fail_on, delay, 0, 0

    def get_embedding_dimension(self):
        return novelty.NoveltyIndex.embedding_dimension(self.embedder)

    def encode(self, texts, **kwargs):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt
        self.stories += len(texts)
        time.sleep(self.delay)
        return self.embedder.encode(texts, **kwargs)


@pytest.fixture
def copy(tmp_path, index):
    """(a data folder holding the module index's train.txt and no index, the index's embedder)."""
    full, _ = index
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_bytes(full.train_path.read_bytes())
    return data, full.embedder or novelty.load_embedder()


def test_a_stopped_build_is_read_as_a_partial_index_and_resumes_where_it_stopped(copy, index):
    full, stories = index  # the same 40 stories, built in one go
    data, embedder = copy
    stopped = _Stopping(embedder, fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        novelty.NoveltyIndex.build(data, embedder=stopped, embed_chunk=16)
    assert not (data / "novelty-index").exists()
    partial = novelty.NoveltyIndex.load(data)  # the 32 stories of the two chunks saved before the stop
    assert partial.meta["partial"] and len(partial) == 32 and partial.meta["planned"] == 40
    assert partial.meta["ngram_stories"] == 40 and partial.ngram_overlap(stories[39], 4) == 1.0
    found, cos = partial.nearest(partial.story(20))
    assert cos == pytest.approx(1.0, abs=2e-3) and found == partial.story(20)
    from types import SimpleNamespace

    from nslm.gui.storytelling import NeighbourFinder

    finder = NeighbourFinder(data)  # the GUI reads it meanwhile
    assert "the first 32 of 40 training stories (a partial index)" in finder.html(SimpleNamespace(config={}), "A dog.")
    finder.build_progress = lambda folder: 0.8 if folder == data else None
    assert "the first 32 of 40 training stories (a partial index, 80% built)" in finder.html(SimpleNamespace(config={}),
                                                                                             "A dog.")
    more = _Stopping(embedder)  # fewer stories asked than the stopped build planned: it goes on only that far
    assert len(novelty.NoveltyIndex.load_or_build(data, limit=36, embedder=more, embed_chunk=16)) == 36
    assert more.stories == 4 and novelty.NoveltyIndex.load(data).meta["partial"]
    resumed = _Stopping(embedder)
    done = novelty.NoveltyIndex.load_or_build(data, embedder=resumed, embed_chunk=16)
    assert resumed.stories == 4  # only the stories no build had embedded
    assert len(done) == 40 and "partial" not in done.meta and done.folder == data / "novelty-index"
    assert not novelty.NoveltyIndex.partial_folder(done.folder).exists()
    assert np.abs(np.asarray(done.embeddings, np.float32) - np.asarray(full.embeddings, np.float32)).max() < 2e-3
    assert np.array_equal(np.asarray(done.offsets), np.asarray(full.offsets))


def test_a_partial_build_of_another_train_file_is_started_again(copy, index):
    _, stories = index
    data, embedder = copy
    with pytest.raises(KeyboardInterrupt):
        novelty.NoveltyIndex.build(data, embedder=_Stopping(embedder, fail_on=2), embed_chunk=8)
    (data / "train.txt").write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories[:12]), encoding="utf-8")
    with pytest.raises(NslmError, match="no novelty index"):
        novelty.NoveltyIndex.load(data)  # the saved part is of the old file: not read
    fresh = _Stopping(embedder)
    assert len(novelty.NoveltyIndex.build(data, embedder=fresh, embed_chunk=8)) == 12 and fresh.stories == 12


def test_a_stopped_build_of_fewer_stories_lends_its_rows_to_a_build_of_all(copy, index):
    full, _ = index
    data, embedder = copy
    with pytest.raises(KeyboardInterrupt):
        novelty.NoveltyIndex.build(data, limit=24, embedder=_Stopping(embedder, fail_on=3), embed_chunk=8)
    assert len(novelty.NoveltyIndex.load(data)) == 16
    rest = _Stopping(embedder)
    done = novelty.NoveltyIndex.load_or_build(data, embedder=rest, embed_chunk=8)
    assert rest.stories == 24 and len(done) == 40 and done.meta["limit"] is None
    assert np.abs(np.asarray(done.embeddings, np.float32) - np.asarray(full.embeddings, np.float32)).max() < 2e-3


def _building_in_a_thread(data, embedder, delay: float):
    """A whole build of `data` started in a thread, returned once it holds the lock (it embeds), slowed by
    `delay` seconds a chunk of 8: (its counting embedder, the thread)."""
    first = _Stopping(embedder, delay=delay)
    builder = threading.Thread(target=novelty.NoveltyIndex.build, args=(data,),
                               kwargs={"embedder": first, "embed_chunk": 8})
    builder.start()
    deadline = time.time() + 30
    while first.calls == 0 and time.time() < deadline:
        time.sleep(0.02)
    return first, builder


def test_a_second_build_of_the_same_index_waits_for_the_first_and_uses_it(copy, capfd):
    data, embedder = copy
    first, builder = _building_in_a_thread(data, embedder, delay=0.3)
    second = _Stopping(embedder)
    waited = novelty.NoveltyIndex.build(data, embedder=second, embed_chunk=8)
    builder.join()
    assert first.stories == 40 and second.stories == 0  # nothing embedded twice
    assert len(waited) == 40 and "partial" not in waited.meta
    assert "another process is building the novelty index" in capfd.readouterr().err


def test_a_build_that_waits_for_a_larger_one_uses_its_first_stories_without_waiting_for_the_rest(copy):
    data, embedder = copy
    first, builder = _building_in_a_thread(data, embedder, delay=0.5)
    second = _Stopping(embedder)
    early = novelty.NoveltyIndex.build(data, limit=10, embedder=second, embed_chunk=8)
    assert second.stories == 0 and 10 <= len(early) < 40 and early.meta["partial"]  # found before the end
    builder.join()
    done = novelty.NoveltyIndex.load(data)
    assert len(done) == 40 and "partial" not in done.meta  # the larger index is not replaced by a smaller one


def test_kills_while_finishing_or_starting_a_larger_build_lose_nothing_embedded(copy, monkeypatch):
    data, embedder = copy
    with pytest.raises(KeyboardInterrupt):  # killed before anything is embedded: nothing to read yet
        novelty.NoveltyIndex.build(data, limit=24, embedder=_Stopping(embedder, fail_on=1), embed_chunk=8)
    assert novelty.NoveltyIndex.current_meta(data) is None
    with pytest.raises(NslmError, match="no novelty index"):
        novelty.NoveltyIndex.load(data)
    with pytest.raises(KeyboardInterrupt):
        novelty.NoveltyIndex.build(data, limit=24, embedder=_Stopping(embedder, fail_on=3), embed_chunk=8)
    hashed, real_hashes = [], novelty.ngram_hashes

    def killed_while_hashing(text, n):
        hashed.append(text)
        if len(hashed) > 30:
            raise KeyboardInterrupt
        return real_hashes(text, n)

    monkeypatch.setattr(novelty, "ngram_hashes", killed_while_hashing)
    with pytest.raises(KeyboardInterrupt):  # a build of all 40 stops while it prepares its larger folder
        novelty.NoveltyIndex.build(data, embedder=_Stopping(embedder), embed_chunk=8)
    monkeypatch.undo()
    assert len(novelty.NoveltyIndex.load(data)) == 16  # the smaller build's rows are still there
    real_install = novelty.install_dir

    def killed_while_installing(finished, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(novelty, "install_dir", killed_while_installing)
    rest = _Stopping(embedder)
    with pytest.raises(KeyboardInterrupt):  # every story embedded, killed before the folder becomes the index
        novelty.NoveltyIndex.build(data, embedder=rest, embed_chunk=8)
    assert rest.stories == 24
    monkeypatch.setattr(novelty, "install_dir", real_install)
    again = _Stopping(embedder)
    done = novelty.NoveltyIndex.load_or_build(data, embedder=again, embed_chunk=8)
    assert again.stories == 0 and len(done) == 40 and "partial" not in done.meta


def _damage_meta(key, value):
    def damage(folder):
        meta = json.loads((folder / "meta.json").read_text())
        meta[key] = value
        (folder / "meta.json").write_text(json.dumps(meta))
    return damage


def _damage_array(name, change):
    def damage(folder):
        array = np.load(folder / name)
        np.save(folder / name, change(array))
    return damage


@pytest.mark.parametrize("damage, says", [
    (_damage_meta("stories", 10**9), "not (1000000000, 384)"), (_damage_meta("stories", "lots"), "stories: 'lots'"),
    (_damage_meta("ngram_sizes", [99]), "ngram_sizes: [99]"), (_damage_meta("dim", -3), "dim: -3"),
    (_damage_array("embeddings.npy", lambda a: a[:, :10]), "embeddings.npy is (40, 10)"),
    (_damage_array("embeddings.npy", lambda a: a[:10]), "embeddings.npy is (10, 384)"),
    (_damage_array("offsets.npy", lambda a: a + 10**15), "points outside train.txt"),
    (_damage_array("offsets.npy", lambda a: a[:5]), "offsets.npy is (5, 2)"),
    (_damage_array("embeddings.npy", lambda a: np.where(np.arange(len(a))[:, None] == 3, np.nan, a).astype(a.dtype)),
     "not finite near row 0"),
], ids=["stories-huge", "stories-text", "ngram-sizes", "dim", "columns-cut", "rows-cut", "offsets-out", "offsets-cut",
        "nan"])
def test_a_damaged_index_is_one_sentence_naming_it(index, tmp_path, damage, says):
    full, stories = index
    data = tmp_path / "data"
    shutil.copytree(full.train_path.parent, data)
    damage(data / "novelty-index")
    with pytest.raises(NslmError, match="damaged") as caught:
        loaded = novelty.NoveltyIndex.load(data)
        loaded.embedder = full.embedder
        loaded.nearest(stories[0])
    assert says in str(caught.value), str(caught.value)


def test_an_index_folder_that_cannot_be_written_is_refused_before_the_embedder_loads(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text("".join(f"{s}\n<|endoftext|>\n" for s in synthetic_stories(3)), encoding="utf-8")
    (tmp_path / "a-file").write_text("not a folder")

    def no_loading():
        raise AssertionError("the embedder was loaded before the index folder was checked")

    monkeypatch.setattr(novelty, "load_embedder", no_loading)
    with pytest.raises(NslmError, match="cannot write --index-dir .*a-file/index: .*a-file is a file"):
        novelty.NoveltyIndex.build(data, folder=tmp_path / "a-file" / "index")
