"""Likelihood, BLiMP, CoLA and HellaSwag on hand-made models whose right answers are known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nslm.errors import NslmError
from nslm.eval import grammar, hellaswag, likelihood
from nslm.eval.scoring import Scorer
from nslm.sample_data import shared_data_dir, synthetic_stories


class ByteTokenizer:
    """Bytes as tokens 0-255 and the end-of-story token 256 (a stand-in with the Tokenizer interface)."""

    kind, eot_id, vocab_size, unk_id = "byte", 256, 257, None

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class UniformModel(torch.nn.Module):
    """Every next token equally likely; `context_length` is enforced like a learned-position Transformer."""

    def __init__(self, vocab, context_length=32, dim=4):
        super().__init__()
        self.vocab, self.context_length, self.dim = vocab, context_length, dim

    def forward(self, idx, targets=None):
        assert idx.shape[1] <= self.context_length, "window longer than the context"
        return torch.zeros(*idx.shape, self.vocab), None

    def features(self, idx):
        return torch.zeros(*idx.shape, self.dim)


class NextByteModel(UniformModel):
    """Certain that token t is followed by t + 1: tests that targets line up with their contexts."""

    def forward(self, idx, targets=None):
        assert idx.shape[1] <= self.context_length
        logits = torch.full((*idx.shape, self.vocab), -30.0)
        logits.scatter_(-1, ((idx + 1) % self.vocab).unsqueeze(-1), 30.0)
        return logits, None


def write_data_dir(folder: Path, stories: list[str]) -> tuple[np.ndarray, int]:
    tok = ByteTokenizer()
    ids = []
    for s in stories:
        ids += tok.encode(s) + [tok.eot_id]
    arr = np.array(ids, dtype="<u2")
    folder.mkdir(parents=True, exist_ok=True)
    arr.tofile(folder / "valid.bin")
    (folder / "valid.txt").write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    n_bytes = sum(len(s.encode()) for s in stories)
    meta = {"format": "nslm-tokens", "version": 1, "dtype": "uint16", "vocab_size": 257, "eot_id": 256,
            "tokenizer_kind": "byte", "tokenizer_sha256": "x",
            "valid": {"file": "valid.bin", "tokens": len(arr), "stories": len(stories), "bytes": n_bytes}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return arr, n_bytes


class FakeStoryModel:
    def __init__(self, model, context_length=32):
        self.model, self.tokenizer, self.context_length = model, ByteTokenizer(), context_length
        self.device, self.config, self.name = "cpu", {"tokenizer_sha256": "x"}, "fake"


def test_uniform_model_bits_per_byte_is_log2_vocab_over_bytes_per_token(tmp_path):
    stories = synthetic_stories(6)
    tokens, n_bytes = write_data_dir(tmp_path, stories)
    result = likelihood.evaluate_likelihood(FakeStoryModel(UniformModel(257, 32)), tmp_path)
    assert result["tokens"] == len(tokens) and result["bytes"] == n_bytes
    assert result["bits_per_byte"] == pytest.approx(math.log2(257) * len(tokens) / n_bytes, rel=1e-9)
    assert result["bits_per_byte"] == pytest.approx(math.log2(257) / result["bytes_per_token"], rel=1e-9)
    assert result["perplexity"] == pytest.approx(257, rel=1e-6)
    assert result["loss"] == pytest.approx(math.log(257), rel=1e-9)
    # Story i costs (bytes_i + 1) * log2(257) bits: the ratio estimator's standard error over stories.
    x = np.array([len(s.encode()) for s in stories], dtype=float)
    y = (x + 1) * math.log2(257)
    r = y.sum() / x.sum()
    se = math.sqrt(((y - r * x) ** 2).sum() / (len(x) * (len(x) - 1))) / x.mean()
    assert result["bits_per_byte_se"] == pytest.approx(se, rel=1e-6) and se > 0


def test_windows_score_every_token_once_with_its_own_context():
    tokens = np.arange(1, 200) % 250
    for ctx, stride in [(16, 8), (16, 16), (16, 1), (7, 3), (300, None)]:
        lp = Scorer(NextByteModel(257, ctx), 256, ctx).stream_logprobs(tokens, stride=stride)
        assert len(lp) == len(tokens)
        # Only the first token (after EOT) is unpredictable; every other is certain given the one before.
        assert lp[0] < -50 and np.all(lp[1:] > -1e-6)


def test_quick_likelihood_keeps_whole_stories_and_their_bytes(tmp_path):
    stories = synthetic_stories(6)
    write_data_dir(tmp_path, stories)
    first = len(stories[0].encode()) + len(stories[1].encode())
    result = likelihood.evaluate_likelihood(FakeStoryModel(UniformModel(257, 32)), tmp_path, max_tokens=first + 5)
    assert result["stories"] == 2 and result["tokens"] == first + 2 and result["bytes"] == first


def test_unk_targets_are_counted():
    tokens = np.array([5, 3, 5, 5, 256])
    scorer = Scorer(UniformModel(257), 256, 8)
    result = likelihood.evaluate_tokens(scorer, tokens, 10, unk_id=5)
    assert result["unk"]["tokens"] == 3 and result["unk"]["rate"] == pytest.approx(0.6)


def test_likelihood_rejects_a_folder_without_meta(tmp_path):
    with pytest.raises(NslmError, match="not a data folder"):
        likelihood.evaluate_likelihood(FakeStoryModel(UniformModel(257)), tmp_path)


def test_mismatched_tokenizer_is_an_error(tmp_path):
    write_data_dir(tmp_path, synthetic_stories(2))
    fake = FakeStoryModel(UniformModel(257))
    fake.config = {"tokenizer_sha256": "other"}
    with pytest.raises(NslmError, match="another tokenizer"):
        likelihood.evaluate_likelihood(fake, tmp_path)


# ---------------------------------------------------------------- BLiMP
def blimp_folder(tmp_path) -> Path:
    root = shared_data_dir()
    if root and (root / "blimp" / "data").is_dir():
        return root / "blimp"
    folder = tmp_path / "blimp"
    folder.mkdir()
    rows = [
        {"sentence_good": "The cat sleeps.", "sentence_bad": "The cat sleep.", "UID": "agr", "linguistics_term": "s-v_agreement"},
        {"sentence_good": "Who did Sue see?", "sentence_bad": "Who did Sue see Tom?", "UID": "isl", "linguistics_term": "island_effects"},
        {"sentence_good": "Dogs bark loudly.", "sentence_bad": "Dogs barks loudly.", "UID": "agr", "linguistics_term": "s-v_agreement"},
    ]
    (folder / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


class OneTokenTokenizer(ByteTokenizer):
    """Vocabulary of one: every token has probability 1, so every sentence scores exactly 0."""

    eot_id, vocab_size = 0, 1

    def encode(self, text):
        return [0] * len(text)


def test_identical_scores_get_zero_on_blimp(tmp_path):
    pairs = grammar.load_blimp(blimp_folder(tmp_path), limit=5)
    result = grammar.blimp_accuracy(Scorer(UniformModel(1, 64), 0, 64), OneTokenTokenizer(), pairs)
    assert result["accuracy"] == 0.0 and result["ties"] == len(pairs)
    assert all(v == 0.0 for v in result["by_phenomenon"].values())


def test_uniform_byte_model_prefers_the_shorter_sentence(tmp_path):
    pairs = grammar.load_blimp(blimp_folder(tmp_path), limit=5)
    result = grammar.blimp_accuracy(Scorer(UniformModel(257, 128), 256, 128), ByteTokenizer(), pairs)
    expected = np.mean([len(p["good"].encode()) < len(p["bad"].encode()) for p in pairs])
    assert result["accuracy"] == pytest.approx(expected)
    if shared_data_dir():
        assert result["pairs"] == 67 * 5 and len(result["by_paradigm"]) == 67


def test_blimp_missing_folder_is_an_error(tmp_path):
    with pytest.raises(NslmError, match="BLiMP"):
        grammar.load_blimp(tmp_path / "nothing")


# ---------------------------------------------------------------- CoLA
def test_matthews_correlation_known_values():
    assert grammar.matthews_corrcoef([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert grammar.matthews_corrcoef([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    assert grammar.matthews_corrcoef([1, 1, 0, 0], [1, 1, 1, 1]) == 0.0
    # tp=2 tn=1 fp=1 fn=1: (2 - 1) / sqrt(3 * 3 * 2 * 2)
    assert grammar.matthews_corrcoef([1, 1, 1, 0, 0], [1, 1, 0, 1, 0]) == pytest.approx(1 / 6)


def test_cola_probe_separates_separable_features_and_not_noise():
    rng = np.random.default_rng(0)
    sentences = [f"s{i}" for i in range(400)]
    labels = (rng.random(400) < 0.7).astype(np.int64)
    signal = {s: np.r_[y * 2.0 - 1.0 + rng.normal(0, 0.3), rng.normal(0, 1, 7)] for s, y in zip(sentences, labels)}
    noise = {s: rng.normal(0, 1, 8) for s in sentences}
    split = (sentences[:300], labels[:300]), {"dev": (sentences[300:], labels[300:])}
    good = grammar.cola_probe(lambda ss: np.stack([signal[s] for s in ss]), *split)
    bad = grammar.cola_probe(lambda ss: np.stack([noise[s] for s in ss]), *split)
    assert good["mcc"] > 0.9 and abs(bad["mcc"]) < 0.3


def test_cola_on_a_model_runs_on_real_rows(tmp_path):
    root = shared_data_dir()
    folder = root / "cola" if root else tmp_path
    if not root:
        for name in ("in_domain_train.tsv", "in_domain_dev.tsv"):
            # more rows than the limit, so that the limit is what picks them
            (tmp_path / name).write_text("".join(f"x\t{i % 2}\t\tThe cat sat {i}.\n" for i in range(100)))
    result = grammar.evaluate_cola(FakeStoryModel(UniformModel(257, 64)), folder, limit=60)
    assert result["train_rows"] == 60
    # Zero features carry no signal: the probe predicts one class and MCC is exactly 0.
    assert result["in_domain_dev"]["mcc"] == 0.0 and result["mcc"] == 0.0


# ---------------------------------------------------------------- HellaSwag
def hellaswag_file(tmp_path) -> Path:
    root = shared_data_dir()
    if root and (root / "hellaswag" / hellaswag.DEFAULT_FILE).is_file():
        return root / "hellaswag" / hellaswag.DEFAULT_FILE
    path = tmp_path / "hs.jsonl"
    rows = [{"ctx": "A man sits.", "endings": ["He stands up.", "He eats a big red apple.", "No.", "He is."], "label": i % 4}
            for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_hellaswag_uniform_model_picks_by_bytes_per_character(tmp_path):
    items = hellaswag.load_hellaswag(hellaswag_file(tmp_path), limit=20)
    scorer = Scorer(UniformModel(257, 512), 256, 512)
    result = hellaswag.hellaswag_accuracy(scorer, ByteTokenizer(), items)
    # Every byte of " " + ending costs log(257); divided by the ending's characters, the ending with the
    # fewest bytes of " " + ending per character of the ending wins.
    cost = [[(1 + len(e.encode())) / len(e) for e in it["endings"]] for it in items]
    expected = np.mean([min(c) == c[it["label"]] and c.count(min(c)) == 1 for c, it in zip(cost, items)])
    assert result["accuracy"] == pytest.approx(expected) and result["chance"] == 0.25 and result["items"] == len(items)
    lengths = [[len((" " + e).encode()) for e in it["endings"]] for it in items]
    shortest_unique = [min(l) == l[it["label"]] and l.count(min(l)) == 1 for l, it in zip(lengths, items)]
    assert result["accuracy_unnormalised"] == pytest.approx(np.mean(shortest_unique))


def test_hellaswag_divides_by_the_characters_of_the_ending_without_its_space():
    """lm-eval-harness's acc_norm divides by len(ending): characters, not bytes, and no leading space."""
    # Uniform model: " " + ending costs (1 + bytes) * log(257). Per character of the ending:
    # "ab" 1.5, "éé" 2.5, "abc" 1.33, "x" 2.0 -> "abc" (the label) wins. Per byte of the ending "éé"
    # would win (1.25); per byte of " " + ending all four would tie (and a tie counts as wrong).
    item = {"ctx": "A man sits.", "endings": ["ab", "éé", "abc", "x"], "label": 2}
    result = hellaswag.hellaswag_accuracy(Scorer(UniformModel(257, 64), 256, 64), ByteTokenizer(), [item])
    assert result["accuracy"] == 1.0


def test_hellaswag_original_format_is_preprocessed_like_the_harness(tmp_path):
    row = {"ctx_a": "A man is in a kitchen.", "ctx_b": "he", "ctx": "x", "label": 0, "activity_label": "Cooking",
           "endings": ["[header] Cut  the bread.", "eats [title] a cake", "sits.", "runs."],
           "source_id": "wikihow~123"}
    path = tmp_path / "orig.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (item,) = hellaswag.load_hellaswag(path)
    assert item["ctx"] == "A man is in a kitchen. He" and item["source"] == "wikihow"
    assert item["endings"][:2] == [" Cut the bread.", "eats. a cake"]


def test_hellaswag_quick_slice_is_a_seeded_sample_from_every_source(tmp_path):
    rows = [{"val_index": i, "ctx": f"c{i}", "endings": ["a", "b", "c", "d"], "label": 0}
            for i in range(0, 10042, 7)]
    path = tmp_path / "hs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = hellaswag.load_hellaswag(path, limit=200, seed=5)
    sources = [it["source"] for it in items]
    # The file lists ActivityNet first: the first 200 rows are all ActivityNet, a sample keeps both shares.
    share = sum(r["val_index"] < hellaswag.ACTIVITYNET_ITEMS for r in rows) / len(rows)
    assert sources.count("activitynet") == round(200 * share) and sources.count("wikihow") == 200 - round(200 * share)
    assert [it["row"] for it in items] == sorted(it["row"] for it in items) != list(range(200))
    assert items == hellaswag.load_hellaswag(path, limit=200, seed=5)
    assert items != hellaswag.load_hellaswag(path, limit=200, seed=6)


def test_hellaswag_long_context_is_cut_from_the_left():
    scorer = Scorer(NextByteModel(257, 8), 256, 8)
    context, ending = list(range(20)), [20, 21, 22]
    (lp,) = scorer.continuation_logprobs([(context, ending)])
    assert len(lp) == 3 and np.all(lp > -1e-6)


def test_hellaswag_full_file_has_all_items():
    root = shared_data_dir()
    if not root:
        pytest.skip("shared data not on this machine")
    items = hellaswag.load_hellaswag(root / "hellaswag")
    assert len(items) == 10042 and all(len(i["endings"]) == 4 for i in items)


@pytest.mark.parametrize("kind, vocab", [("word", 2048), ("char", None)])
def test_uniform_model_on_real_data_folders(make_data_dir, kind, vocab):
    """The contract's data folder: bits per byte = log2(V) / bytes-per-token, `<unk>` targets counted."""
    from nslm.tokenizer import Tokenizer

    folder = make_data_dir(kind, vocab)
    meta = json.loads((folder / "meta.json").read_text())
    fake = FakeStoryModel(UniformModel(meta["vocab_size"], 64), 64)
    fake.tokenizer = Tokenizer.load(folder / "tokenizer.json")
    fake.config = {"tokenizer_sha256": meta["tokenizer_sha256"]}
    result = likelihood.evaluate_likelihood(fake, folder)
    assert result["tokens"] == meta["valid"]["tokens"] and result["bytes"] == meta["valid"]["bytes"]
    assert result["bits_per_byte"] == pytest.approx(
        math.log2(meta["vocab_size"]) * meta["valid"]["tokens"] / meta["valid"]["bytes"], rel=1e-6)  # float32 logits
    tokens = np.fromfile(folder / "valid.bin", dtype=meta["dtype"])
    if kind == "word":
        assert result["unk"]["tokens"] == int((tokens == fake.tokenizer.unk_id).sum()) > 0
    else:
        assert "unk" not in result


@pytest.mark.parametrize("arch", ["transformer", "lstm", "gru"])
def test_identical_blimp_pairs_tie_whatever_batch_they_land_in(arch):
    """A sentence's score must not depend on the padded width of its batch: identical pairs always tie."""
    from nslm.models import ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, vocab_size=257, context_length=96, d_model=32, n_layer=2, n_head=2, d_ff=64)
    model = build_model(cfg).eval()
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "dogs", "bark", "loudly", "who", "did", "Sue", "see"]
    sentences = [" ".join(rng.choice(words, size=n)) + "." for n in range(1, 21) for _ in range(3)]
    pairs = [{"good": s, "bad": s, "uid": f"p{len(s) % 5}", "term": "same"} for s in sentences]
    for batch_size in (4, 7):
        result = grammar.blimp_accuracy(Scorer(model, 256, 96, batch_size=batch_size), ByteTokenizer(), pairs)
        assert result["ties"] == len(pairs) and result["accuracy"] == 0.0, (arch, batch_size)


def test_cola_quick_slice_draws_from_every_source(tmp_path):
    # Like the real file: ordered by source, the first rows all from one book.
    sources = ["bc01"] * 70 + ["cj99"] * 20 + ["gj04"] * 10
    (tmp_path / "in_domain_train.tsv").write_text(
        "".join(f"{s}\t{i % 2}\t\tThe cat sat {i}.\n" for i, s in enumerate(sources)))
    (tmp_path / "in_domain_dev.tsv").write_text("".join(f"x\t{i % 2}\t\tA dog ran {i}.\n" for i in range(12)))
    result = grammar.evaluate_cola(FakeStoryModel(UniformModel(257, 64)), tmp_path, limit=20, seed=3)
    sample = result["sample"]
    assert result["train_rows"] == 20 and sample["by_stratum"] == {"bc01": 14, "cj99": 4, "gj04": 2}
    assert sample["rows"] != list(range(20))
    assert result["in_domain_dev"]["mcc_se"] == 0.0  # one predicted class: MCC is 0 in every resample


def test_blimp_quick_slice_is_a_seeded_sample_of_each_paradigm(tmp_path):
    folder = tmp_path / "blimp"
    folder.mkdir()
    for uid in ("a", "b"):
        (folder / f"{uid}.jsonl").write_text("".join(json.dumps(
            {"sentence_good": f"{uid} {i} good.", "sentence_bad": f"{uid} {i} bad.", "UID": uid}) + "\n" for i in range(50)))
    pairs = grammar.load_blimp(folder, limit=5, seed=1)
    assert [p["uid"] for p in pairs] == ["a"] * 5 + ["b"] * 5
    assert [p["row"] for p in pairs[:5]] != list(range(5)) and pairs == grammar.load_blimp(folder, limit=5, seed=1)
    assert all(p["good"] == f"{p['uid']} {p['row']} good." for p in pairs)


def test_raw_published_text_is_scored_uncleaned_beside_the_cleaned_split(tmp_path):
    stories = synthetic_stories(5)
    tokens, n_bytes = write_data_dir(tmp_path / "data", stories)
    # the published file: the same stories with trailing spaces on their lines, which cleaning strips
    raw = [s.replace(".", ".  ") for s in stories]
    raw_file = tmp_path / "valid-raw.txt"
    raw_file.write_text("".join(s + "\n<|endoftext|>\n" for s in raw), encoding="utf-8")
    result = likelihood.evaluate_likelihood(FakeStoryModel(UniformModel(257, 32)), tmp_path / "data", raw_valid=raw_file)
    raw_bytes = sum(len(s.strip().encode()) for s in raw)
    section = result["raw_text"]
    assert section["stories"] == 5 and section["bytes"] == raw_bytes > n_bytes
    # a byte-level uniform model pays log2(257) bits per token: bytes + one end-of-story per story
    assert section["bits_per_byte"] == pytest.approx(math.log2(257) * (raw_bytes + 5) / raw_bytes, rel=1e-9)
    assert section["bits_per_byte_excl_eos"] == pytest.approx(math.log2(257), rel=1e-9)
    assert result["bits_per_byte"] == pytest.approx(math.log2(257) * len(tokens) / n_bytes, rel=1e-9)


def test_raw_text_without_stories_is_one_sentence(tmp_path):
    write_data_dir(tmp_path / "data", synthetic_stories(2))
    empty = tmp_path / "blank.txt"
    empty.write_text("\n<|endoftext|>\n", encoding="utf-8")
    with pytest.raises(NslmError, match="blank.txt"):
        likelihood.evaluate_likelihood(FakeStoryModel(UniformModel(257, 32)), tmp_path / "data", raw_valid=empty)
