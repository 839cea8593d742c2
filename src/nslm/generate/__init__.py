"""Generation: sampling, StoryModel / Story (`nslm.load`), story formatting, `nslm generate`."""

from nslm.generate.api import Story, StoryModel, list_shipped, load

__all__ = ["Story", "StoryModel", "list_shipped", "load"]
