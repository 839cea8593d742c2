"""Human ratings of generated stories, kept in an embedded SQLite database.

    store = RatingStore()                      # $NSLM_HOME/ratings.sqlite (NSLM_HOME defaults to ~/.nslm)
    store.add(model="runs/tf1m", prompt="Once upon a time", story="...", grammar=8, creativity=6,
              consistency=7, rater="ana", comment="ends well")
    store.summary()   # {"runs/tf1m": {"ratings": 1, "raters": 1, "grammar": 8.0, "creativity": 6.0, ...}}
    store.ratings(model="runs/tf1m")           # list of Rating, newest first
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from nslm.errors import NslmError

CRITERIA = ("grammar", "creativity", "consistency")
# Longest text each field may hold: a rating is a few words about a story, never a dump of a file.
TEXT_LIMITS = {"model": 1_000, "rater": 100, "comment": 2_000, "prompt": 20_000, "story": 100_000}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at  REAL    NOT NULL,
    rater       TEXT    NOT NULL,
    model       TEXT    NOT NULL,
    prompt      TEXT    NOT NULL,
    story       TEXT    NOT NULL,
    grammar     INTEGER NOT NULL CHECK (grammar BETWEEN 1 AND 10),
    creativity  INTEGER NOT NULL CHECK (creativity BETWEEN 1 AND 10),
    consistency INTEGER NOT NULL CHECK (consistency BETWEEN 1 AND 10),
    comment     TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS ratings_model ON ratings (model);
"""


def default_db_path() -> Path:
    """`$NSLM_HOME/ratings.sqlite`, with NSLM_HOME defaulting to `~/.nslm`."""
    home = os.environ.get("NSLM_HOME") or os.path.join(os.path.expanduser("~"), ".nslm")
    return Path(home) / "ratings.sqlite"


def check_score(name: str, value) -> int:
    """`value` as a whole score from 1 to 10; NslmError naming the criterion otherwise (NaN included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or not 1 <= value <= 10:
        raise NslmError(f"{name} must be a whole number from 1 to 10, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class Rating:
    id: int
    created_at: float
    rater: str
    model: str
    prompt: str
    story: str
    grammar: int
    creativity: int
    consistency: int
    comment: str


def _check_text(name: str, value, limit: int) -> str:
    """`value` as storable text of at most `limit` characters; NslmError naming the field otherwise."""
    if not isinstance(value, (str, os.PathLike)):
        raise NslmError(f"the {name} of a rating must be text, not {type(value).__name__}.")
    text = str(value)
    if len(text) > limit:
        raise NslmError(f"the {name} of a rating may hold at most {limit:,} characters, not {len(text):,}.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NslmError(f"the {name} of a rating holds characters that are not valid text (a lone surrogate).") from None
    return text


class RatingStore:
    """Ratings of stories: `add(...) -> id`, `ratings(model=None)`, `summary()`, `models()`.

    Each call opens its own short connection, so the GUI's worker threads can share one store.
    `create=False` only reads: a missing database is an error and nothing is ever created or written.
    """

    def __init__(self, path: str | Path | None = None, *, create: bool = True):
        self.path = Path(path) if path else default_db_path()
        self.read_only = not create
        if self.read_only and not self.path.is_file():
            raise NslmError(f"there is no ratings database at {self.path}; ratings are saved there by the GUI's "
                            "rating panel (nslm gui --db PATH), or give the right file with --db.")
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                if create:
                    db.executescript(_SCHEMA)
                else:  # a file that is not a ratings database fails here, not halfway through a listing
                    db.execute("SELECT model, rater, grammar, creativity, consistency, comment FROM ratings LIMIT 1")
        except (OSError, sqlite3.DatabaseError) as exc:
            raise NslmError(f"cannot open the ratings database {self.path} ({exc}); give another path with --db.") from exc

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True, timeout=10)
        else:
            db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        return db

    def add(self, model: str, prompt: str, story: str, grammar: int, creativity: int, consistency: int,
            rater: str = "anonymous", comment: str = "") -> int:
        """Store one rating (scores are whole numbers 1-10) and return its id; NslmError for a bad value."""
        scores = {"grammar": grammar, "creativity": creativity, "consistency": consistency}
        for name, value in scores.items():
            check_score(name, value)
        if not str(model).strip() or not str(story).strip():
            raise NslmError("a rating needs the model name and the story it rates.")
        texts = {"model": model, "prompt": prompt, "story": story, "rater": rater or "anonymous",
                 "comment": comment or ""}
        model, prompt, story, rater, comment = (_check_text(k, v, TEXT_LIMITS[k]) for k, v in texts.items())
        if self.read_only:
            raise NslmError(f"cannot save a rating: the ratings database {self.path} was opened read-only.")
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO ratings (created_at, rater, model, prompt, story, grammar, creativity, consistency, comment)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), rater, model, prompt, story, int(grammar), int(creativity), int(consistency), comment))
            return int(cur.lastrowid)

    def ratings(self, model: str | None = None) -> list[Rating]:
        """All ratings (of one model when given), newest first."""
        query = "SELECT * FROM ratings" + (" WHERE model = ?" if model else "") + " ORDER BY created_at DESC, id DESC"
        with self._connect() as db:
            rows = db.execute(query, (model,) if model else ()).fetchall()
        return [Rating(**dict(row)) for row in rows]

    def models(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT model FROM ratings ORDER BY model")]

    def summary(self) -> dict[str, dict]:
        """Per model: number of ratings and raters, and the mean of each criterion."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT model, COUNT(*), COUNT(DISTINCT rater), AVG(grammar), AVG(creativity), AVG(consistency)"
                " FROM ratings GROUP BY model ORDER BY model").fetchall()
        return {r[0]: {"ratings": r[1], "raters": r[2], "grammar": r[3], "creativity": r[4], "consistency": r[5]}
                for r in rows}
