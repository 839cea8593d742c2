"""Every tokenizer kind gives the cleaned story back: exactly for bpe/char, up to <unk> for word-level."""

import re

import pytest

from nslm.data import read_cleaned
from nslm.errors import NslmError
from nslm.tokenizer import EOT, Tokenizer, format_words, learn_casing, train_tokenizer


@pytest.fixture(scope="module")
def valid_stories(data_dir):
    return list(read_cleaned(data_dir / "valid.txt"))


@pytest.mark.parametrize("kind, vocab_size", [("bpe", 1024), ("char", None)])
def test_exact_round_trip(make_data_dir, valid_stories, kind, vocab_size):
    tok = Tokenizer.load(make_data_dir(kind, vocab_size) / "tokenizer.json")
    assert tok.kind == kind and tok.unk_id is None and tok.eot_id == 0
    for story in valid_stories:
        assert tok.decode(tok.encode(story)) == story
    joined = f"{valid_stories[0]}\n{EOT}\n{valid_stories[1]}"
    ids = tok.encode(joined)
    assert ids.count(tok.eot_id) == 1 and tok.decode(ids) == joined
    assert "Ġ" not in tok.decode(tok.encode(valid_stories[0]))


def test_char_tokenizer_falls_back_to_bytes(make_data_dir):
    tok = Tokenizer.load(make_data_dir("char", None) / "tokenizer.json")
    text = "Zoë saw a 🦊 — wow!"
    assert tok.decode(tok.encode(text)) == text


def _pattern(decoded: str, flags=re.IGNORECASE) -> re.Pattern:
    """A regex for the original text: `<unk>` stands for any one word."""
    parts = [r"[^\s.,!?;:\"']+" if p == "<unk>" else re.escape(p) for p in re.split(r"(<unk>)", decoded)]
    return re.compile("".join(parts), flags)


def test_word_round_trip_up_to_unk(make_data_dir, valid_stories):
    tok = Tokenizer.load(make_data_dir("word", 2048) / "tokenizer.json")
    assert tok.kind == "word" and tok.unk_id == 1 and tok.casing["i"] == "I"
    exact = 0
    for story in valid_stories:
        decoded = tok.decode(tok.encode(story))
        # the tokens cannot tell a spaced dash from a hyphen: both come back as "a-b"
        flat = re.sub(r"\s*-\s*", "-", " ".join(story.split()))
        assert _pattern(decoded).fullmatch(flat), (story, decoded)
        exact += bool(_pattern(decoded, 0).fullmatch(flat))
    # re-casing gets most whole stories right, names included (case-sensitive, up to <unk>)
    assert exact / len(valid_stories) > 0.7
    unk_free = [s for s in valid_stories if tok.unk_id not in tok.encode(s)]
    same = sum(tok.decode(tok.encode(s)) == re.sub(r"\s*-\s*", "-", " ".join(s.split())) for s in unk_free)
    assert unk_free and same / len(unk_free) > 0.5


@pytest.mark.parametrize("words, text", [
    ('lily said , " i don \' t know ! " tom laughed .', 'Lily said, "I don\'t know!" Tom laughed.'),
    ("once upon a time , there was a cat . it was happy .", "Once upon a time, there was a cat. It was happy."),
    ("i ' m here ! we ' re there ? they ' ll go ; you ' ve got it : yes .",
     "I'm here! We're there? They'll go; you've got it: yes."),
    ("he ate ice - cream ... then he slept .", "He ate ice-cream... then he slept."),
    ('mom said , " come here . " lily ran .', 'Mom said, "Come here." Lily ran.'),
    ("the dog ' s ball is red .", "The dog's ball is red."),
    (f"the end . {EOT} once upon a time .", f"The end.\n{EOT}\nOnce upon a time."),
])
def test_format_words(words, text):
    assert format_words(words, {"lily": "Lily", "tom": "Tom", "mom": "Mom"}) == text


def test_learn_casing_finds_names_not_sentence_starts():
    texts = ["Once upon a time, Lily met Tom. Then Lily and I played.", 'She said, "Lily is here." Once more, Tom ran.']
    casing = learn_casing(texts, min_count=1)
    assert casing == {"lily": "Lily", "tom": "Tom", "i": "I"}


def test_save_load_keeps_everything(tmp_path, valid_stories):
    tok = train_tokenizer("word", valid_stories, 500)
    tok.save(tmp_path)
    again = Tokenizer.load(tmp_path / "tokenizer.json")
    assert again.kind == "word" and again.casing == tok.casing and again.sha256 == tok.sha256
    assert again.encode(valid_stories[0]) == tok.encode(valid_stories[0])
    assert again.vocab_size == tok.vocab_size <= 500


@pytest.mark.parametrize("kind, size, message", [
    ("bpe", 256, "too small for a bpe tokenizer: it needs at least 257"),
    ("word", 2, "too small for a word tokenizer"),
    ("char", 200, "too small for a char tokenizer"),
    ("sentencepiece", 1000, "unknown tokenizer kind 'sentencepiece'"),
])
def test_bad_kind_and_size(kind, size, message):
    with pytest.raises(NslmError, match=message):
        train_tokenizer(kind, ["A story."], size)


def test_empty_corpus_and_bad_file(tmp_path):
    with pytest.raises(NslmError, match="no stories to train"):
        train_tokenizer("bpe", [], 300)
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"not": "a tokenizer"')
    with pytest.raises(NslmError, match="is not a valid tokenizer.json"):
        Tokenizer.load(bad)
    with pytest.raises(NslmError, match="does not exist"):
        Tokenizer.load(tmp_path / "nope.json")


def test_sha256_is_that_of_the_file_bytes(data_dir, tmp_path):
    import hashlib
    import json

    compact = tmp_path / "tokenizer.json"
    compact.write_text(json.dumps(json.loads((data_dir / "tokenizer.json").read_text())))
    tok = Tokenizer.load(compact)
    assert tok.sha256 == hashlib.sha256(compact.read_bytes()).hexdigest()
    assert tok.encode("Once upon a time.") == Tokenizer.load(data_dir).encode("Once upon a time.")


@pytest.mark.parametrize("content", ["[" * 200_000, '["Lily"]', '{"lily": 3}', "\udcff"])
def test_a_broken_casing_file_is_one_sentence(make_data_dir, tmp_path, content):
    folder = tmp_path / "tok"
    folder.mkdir()
    source = make_data_dir("word", 2048)
    (folder / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
    (folder / "casing.json").write_text(content, encoding="utf-8", errors="surrogateescape")
    with pytest.raises(NslmError, match="casing.json is not a JSON object of words"):
        Tokenizer.load(folder / "tokenizer.json")
