"""Tokenizers for stories: byte-level BPE, word-level and char-level, sharing `<|endoftext|>`."""

from nslm.tokenizer.core import KINDS, UNK, Tokenizer, check_kind_and_size, min_vocab_size, tokenizer_file_sha256, train_tokenizer
from nslm.tokenizer.detok import EOT, format_words, learn_casing

__all__ = ["EOT", "UNK", "KINDS", "Tokenizer", "train_tokenizer", "min_vocab_size", "check_kind_and_size", "tokenizer_file_sha256", "format_words",
           "learn_casing"]
