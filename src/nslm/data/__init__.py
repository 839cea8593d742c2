"""TinyStories data: reading every published layout, cleaning, de-duplication, token files and `DataFolder`."""

from nslm.data.cleaning import Cleaner, CleanConfig, dedup_key, fix_encoding, normalize_quotes, normalize_whitespace
from nslm.data.prepare import PrepareResult, clean_to_folder, prepare, read_cleaned, tokenize_folder, write_stories
from nslm.data.reading import expand_inputs, read_file, read_hub, read_stories
from nslm.data.tokens import DataFolder, TokenSplit, write_tokens

__all__ = ["CleanConfig", "Cleaner", "DataFolder", "PrepareResult", "TokenSplit", "clean_to_folder", "dedup_key",
           "expand_inputs", "fix_encoding", "normalize_quotes", "normalize_whitespace", "prepare", "read_cleaned",
           "read_file", "read_hub", "read_stories", "tokenize_folder", "write_stories", "write_tokens"]
