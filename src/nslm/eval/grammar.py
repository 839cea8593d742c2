"""Grammar: BLiMP minimal pairs zero-shot, and a CoLA acceptability probe on the model's features.

BLiMP: a pair counts as correct only when the grammatical sentence gets a strictly higher total
log-probability (end-of-story token as the start context) than the ungrammatical one. Ties count as
wrong, so a model that cannot tell the sentences apart (identical scores, or a word-level model that
maps both sentences to the same `<unk>`s) scores 0% on them, not 50% or 100%: identical token
sequences are scored once (`Scorer.token_logprobs`), so they tie whatever batch they land in.

CoLA: the language model stays frozen; its `features()` (final hidden states), mean-pooled over the
sentence's tokens, feed a logistic-regression head trained on `in_domain_train` (class-balanced, L2);
Matthews correlation is measured on `in_domain_dev` and `out_of_domain_dev`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nslm.errors import NslmError
from nslm.eval.datasets import check_file, read_jsonl, read_lines, text_field
from nslm.eval.sampling import binomial_se, bootstrap_se, per_stratum_sample, sample_record, stratified_sample
from nslm.eval.scoring import Scorer


# ---------------------------------------------------------------- BLiMP
def load_blimp(folder: str | Path, limit: int | None = None, seed: int = 1234) -> list[dict]:
    """Minimal pairs from BLiMP's `*.jsonl` files (a folder, or its `data/` subfolder).

    With `limit`, a seeded random sample of that many pairs from each paradigm (file), in file order.
    """
    folder = Path(folder)
    if (folder / "data").is_dir():
        folder = folder / "data"
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        raise NslmError(f"no BLiMP files (*.jsonl) in {folder}; give the BLiMP data folder with --blimp.")
    pairs = []
    for path in files:
        if not path.is_file():
            raise NslmError(f"BLiMP file {path} is a folder, not a file; give the BLiMP data folder with --blimp.")
        row = 0
        for n, rec in read_jsonl(path, "BLiMP"):
            if "sentence_good" not in rec or "sentence_bad" not in rec:
                raise NslmError(f"{path} line {n} lacks sentence_good/sentence_bad; "
                                "give the BLiMP data folder with --blimp.")
            good, bad = (text_field(rec, key, path, n, "BLiMP") for key in ("sentence_good", "sentence_bad"))
            pairs.append({
                "good": good, "bad": bad,
                "uid": text_field(rec, "UID", path, n, "BLiMP", default=path.stem),
                "term": text_field(rec, "linguistics_term", path, n, "BLiMP", default="?"),
                "field": text_field(rec, "field", path, n, "BLiMP", default="?"), "file": path.stem, "row": row,
            })
            row += 1
        if row == 0:
            raise NslmError(f"BLiMP file {path} holds no pairs; give the BLiMP data folder with --blimp.")
    if limit is not None:
        pairs = [pairs[i] for i in per_stratum_sample([p["file"] for p in pairs], limit, seed)]
    return pairs


def blimp_accuracy(scorer: Scorer, tokenizer, pairs: Sequence[dict], progress=None) -> dict:
    """Accuracy overall, per phenomenon (`linguistics_term`) and per paradigm (`UID`); ties are wrong."""
    sentences = [p["good"] for p in pairs] + [p["bad"] for p in pairs]
    ids = [tokenizer.encode(s) for s in sentences]
    scores = scorer.total_logprobs(ids, progress)
    good, bad = scores[: len(pairs)], scores[len(pairs):]
    correct = good > bad
    ties = int((good == bad).sum())
    by_term, by_uid = defaultdict(list), defaultdict(list)
    for p, ok in zip(pairs, correct):
        by_term[p["term"]].append(bool(ok))
        by_uid[p["uid"]].append(bool(ok))
    accuracy = float(correct.mean()) if len(pairs) else None
    result = {
        "accuracy": accuracy,
        "accuracy_se": binomial_se(accuracy, len(pairs)),
        "pairs": len(pairs),
        "ties": ties,
        "by_phenomenon": {k: float(np.mean(v)) for k, v in sorted(by_term.items())},
        "by_paradigm": {k: float(np.mean(v)) for k, v in sorted(by_uid.items())},
        "chance": 0.5,
        "method": "total log-probability of each sentence after the end-of-story token; ties count as wrong",
    }
    unk = getattr(tokenizer, "unk_id", None)
    if unk is not None:
        result["sentences_with_unk"] = int(sum(unk in s for s in ids))
    return result


def evaluate_blimp(story_model, folder: str | Path, limit: int | None = None, batch_size: int = 64,
                   seed: int = 1234) -> dict:
    """BLiMP accuracy of a loaded `StoryModel` on all pairs, or a seeded sample of `limit` per paradigm."""
    from tqdm import tqdm

    pairs = load_blimp(folder, limit, seed)
    scorer = Scorer.for_story_model(story_model, batch_size)
    with tqdm(total=2 * len(pairs), desc="blimp", unit="sent", leave=False) as bar:
        result = blimp_accuracy(scorer, story_model.tokenizer, pairs, bar)
    result["limit_per_paradigm"] = limit
    if limit is not None:
        rows: dict[str, list[int]] = defaultdict(list)
        for p in pairs:
            rows[p["file"]].append(p["row"])
        result["sample"] = {"seed": seed, "method": f"seeded random sample of {limit} pairs per paradigm",
                            "rows_drawn": len(pairs), "rows": dict(rows)}
    return result


# ---------------------------------------------------------------- CoLA
def read_cola(path: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Sentences, 0/1 labels and source codes of a CoLA raw `.tsv` (source, label, mark, sentence)."""
    path = check_file(Path(path), "CoLA", "give the CoLA folder with --cola.")
    sentences, labels, sources = [], [], []
    for n, line in read_lines(path, "CoLA"):
        parts = line.split("\t")
        if len(parts) < 4:
            raise NslmError(f"{path} line {n} does not have 4 tab-separated columns.")
        if parts[1].strip() not in ("0", "1"):
            raise NslmError(f"{path} line {n}: the label (column 2) must be 0 or 1, not {parts[1][:20]!r}.")
        sources.append(parts[0])
        labels.append(int(parts[1]))
        sentences.append(parts[3])
    if not sentences:
        raise NslmError(f"CoLA file {path} holds no rows; give the CoLA folder with --cola.")
    return sentences, np.array(labels, dtype=np.int64), sources


def load_cola(path: str | Path, limit: int | None = None, seed: int = 1234) -> tuple[list[str], np.ndarray]:
    """Sentences and labels of a CoLA `.tsv`: all rows, or a seeded sample of `limit` stratified by source."""
    sentences, labels, sources = read_cola(path)
    if limit is None or limit >= len(sentences):
        return sentences, labels
    rows = stratified_sample(sources, limit, seed)
    return [sentences[i] for i in rows], labels[rows]


@torch.no_grad()
def pooled_features(model: torch.nn.Module, tokenizer, sentences: Sequence[str], context_length: int,
                    device="cpu", batch_size: int = 64, progress=None) -> np.ndarray:
    """Mean over each sentence's token positions of `model.features(EOT + sentence)` -> [N, D] float32."""
    eot = tokenizer.eot_id
    seqs = [([eot] + tokenizer.encode(s))[:context_length] for s in sentences]
    out: list[np.ndarray | None] = [None] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    model.eval()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(seqs[i]) for i in chunk)
        idx = torch.full((len(chunk), width), eot, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.float32)
        for row, i in enumerate(chunk):
            idx[row, : len(seqs[i])] = torch.tensor(seqs[i])
            # Position 0 only saw EOT, the same for every sentence; pool the states after sentence tokens.
            mask[row, 1 if len(seqs[i]) > 1 else 0 : len(seqs[i])] = 1.0
        feats = model.features(idx.to(device)).float().cpu()
        pooled = (feats * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        for row, i in enumerate(chunk):
            out[i] = pooled[row].numpy()
        if progress is not None:
            progress.update(len(chunk))
    return np.stack(out).astype(np.float32)


def matthews_corrcoef(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Matthews correlation coefficient of binary labels (0 when a row or column of the table is empty)."""
    y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    tp = float(np.sum(y_true & y_pred))
    tn = float(np.sum(~y_true & ~y_pred))
    fp = float(np.sum(~y_true & y_pred))
    fn = float(np.sum(y_true & ~y_pred))
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denom if denom else 0.0


class LinearProbe:
    """Logistic regression on standardised features: class-balanced loss, L2 penalty, full-batch L-BFGS."""

    def __init__(self, l2: float = 1e-2, steps: int = 200, seed: int = 0):
        self.l2, self.steps, self.seed = l2, steps, seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> "LinearProbe":
        torch.manual_seed(self.seed)
        self.mean = x.mean(0)
        self.std = x.std(0) + 1e-6
        xt = torch.tensor((x - self.mean) / self.std, dtype=torch.float32)
        yt = torch.tensor(y, dtype=torch.float32)
        pos = float(yt.mean()) if len(yt) else 0.5
        pos = min(max(pos, 1e-3), 1 - 1e-3)
        weights = torch.where(yt > 0.5, 0.5 / pos, 0.5 / (1 - pos))
        self.w = torch.zeros(xt.shape[1], requires_grad=True)
        self.b = torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([self.w, self.b], max_iter=self.steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            logits = xt @ self.w + self.b
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt, weight=weights)
            loss = loss + self.l2 * (self.w ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        xt = torch.tensor((x - self.mean) / self.std, dtype=torch.float32)
        with torch.no_grad():
            return ((xt @ self.w + self.b) > 0).numpy().astype(np.int64)


def cola_probe(featurize, train: tuple[list[str], np.ndarray], devs: dict[str, tuple[list[str], np.ndarray]],
               l2: float = 1e-2, seed: int = 1234) -> dict:
    """Train the probe on `train` and report MCC (with a bootstrap standard error) and accuracy on each dev set.

    `featurize(sentences) -> [N, D]` is any frozen feature extractor.
    """
    x_train = featurize(train[0])
    probe = LinearProbe(l2=l2).fit(x_train, train[1])
    result = {"train_rows": len(train[0]), "head": "logistic regression on mean-pooled frozen features "
              "(standardised, class-balanced, L2 %g, L-BFGS)" % l2}
    for name, (sentences, labels) in devs.items():
        pred = probe.predict(featurize(sentences))
        result[name] = {"rows": len(sentences), "mcc": matthews_corrcoef(labels, pred),
                        "mcc_se": bootstrap_se(lambda rows: matthews_corrcoef(labels[rows], pred[rows]),
                                               len(labels), seed),
                        "accuracy": float((pred == labels).mean()),
                        "majority_accuracy": float(max(labels.mean(), 1 - labels.mean()))}
    first = next(iter(devs))
    result["mcc"], result["mcc_se"] = result[first]["mcc"], result[first]["mcc_se"]
    return result


def evaluate_cola(story_model, folder: str | Path, limit: int | None = None, batch_size: int = 64,
                  seed: int = 1234) -> dict:
    """CoLA MCC of a linear probe on a loaded `StoryModel`'s features.

    `limit` trains the probe on a seeded sample of that many training rows, stratified by source
    (the file is ordered by source, so its first rows come mostly from one book).
    """
    from tqdm import tqdm

    folder = Path(folder)
    if not folder.is_dir():
        raise NslmError(f"CoLA path {folder} is not a folder; give the folder of the raw .tsv files with --cola.")
    sentences, labels, sources = read_cola(folder / "in_domain_train.tsv")
    rows = list(range(len(sentences)))
    if limit is not None and limit < len(rows):
        rows = stratified_sample(sources, limit, seed)
    train = ([sentences[i] for i in rows], labels[rows])
    devs = {"in_domain_dev": load_cola(folder / "in_domain_dev.tsv")}
    if (folder / "out_of_domain_dev.tsv").exists():  # optional, but read (and checked) when it is there
        devs["out_of_domain_dev"] = load_cola(folder / "out_of_domain_dev.tsv")
    total = len(train[0]) + sum(len(d[0]) for d in devs.values())
    with tqdm(total=total, desc="cola", unit="sent", leave=False) as bar:
        def featurize(batch):
            return pooled_features(story_model.model, story_model.tokenizer, batch,
                                   story_model.context_length, story_model.device, batch_size, bar)
        result = cola_probe(featurize, train, devs, seed=seed)
    result["limit_train_rows"] = limit
    if limit is not None:
        result["sample"] = sample_record(sources, rows, seed, len(sources),
                                         "seeded random sample of training rows, stratified by source (proportional)")
    return result
