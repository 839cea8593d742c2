"""TinyStories data: reading every published layout, cleaning, de-duplication and token files."""

from nslm.data.cleaning import Cleaner, CleanConfig, dedup_key, fix_encoding, normalize_quotes, normalize_whitespace
from nslm.data.prepare import PrepareResult, clean_to_folder, prepare, read_cleaned, tokenize_folder, write_stories
from nslm.data.reading import expand_inputs, read_file, read_hub, read_stories
from nslm.data.tokens import TokenFile, load_token_split, read_meta, write_tokens

__all__ = ["CleanConfig", "Cleaner", "PrepareResult", "TokenFile", "clean_to_folder", "dedup_key", "expand_inputs",
           "fix_encoding", "load_token_split", "normalize_quotes", "normalize_whitespace", "prepare", "read_cleaned",
           "read_file", "read_hub", "read_meta", "read_stories", "tokenize_folder", "write_stories", "write_tokens"]
