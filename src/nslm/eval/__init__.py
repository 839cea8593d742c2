"""Evaluation: likelihood (bits per byte), generation sets, novelty, grammar (BLiMP, CoLA), HellaSwag,
LLM grading, human ratings, and the side-by-side report (`nslm eval ...`)."""
