"""Token-level decoding: temperature, top-k, top-p, and the cached / uncached generation loops.

Both loops show the model exactly the same tokens, so greedy decoding gives the same ids with and
without the cache. A Transformer sees at most `context_length` tokens: when the window is full it
keeps the last three quarters and continues (the cache is refilled from those).

It sits below both training (its greedy samples at each evaluation) and generation (`nslm.load`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from typing import Iterator

import torch

from nslm.device import one_blas_thread
from nslm.errors import NslmError


MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; one bound for sampling and training


def check_seed(seed, name: str = "seed") -> None:
    """Refuse a seed that is not a whole number in [0, MAX_SEED] (NslmError naming `name`)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise NslmError(f"{name} must be a whole number from 0 to {MAX_SEED}, not {seed!r}")


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the smallest set with probability >= top_p
    (a new tensor; `logits` itself is left as it is)."""
    logits = logits.clone()
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1, None]
        logits[logits < kth] = float("-inf")
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the token that crosses top_p
        sorted_logits[drop] = float("-inf")
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def pick_token(logits: torch.Tensor, temperature: float, top_k=None, top_p=None, generator=None) -> int:
    """The next id from a [V] logit vector; temperature 0 means greedy."""
    return int(next_token(logits, temperature, top_k, top_p, generator))


def next_token(logits: torch.Tensor, temperature: float, top_k=None, top_p=None, generator=None) -> torch.Tensor:
    """The next id from a [V] logit vector as a 1-element tensor on the logits' device (decoding feeds it
    straight back); temperature 0 means greedy."""
    if temperature <= 0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    scaled = logits.float().cpu() / temperature  # a new tensor, so the filter need not copy it again
    if _filters(top_k, top_p, logits.size(-1)):
        scaled = filter_logits(scaled, top_k, top_p)
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).to(logits.device)


def next_tokens(logits: torch.Tensor, temperature: float, top_k, top_p, generators: list,
                q: torch.Tensor | None = None) -> list[int]:
    """`next_token` of each row of [B, V] logits with that row's generator, with the row-wise work done
    once for the batch where it gives the same result (argmax; softmax without top-k/top-p). `q`, where
    given, is what `exponentials(generators, V)` drew for this step beforehand."""
    if temperature <= 0:
        return logits.argmax(dim=-1).tolist()
    if _filters(top_k, top_p, logits.size(-1)):
        return [int(next_token(row, temperature, top_k, top_p, g)) for row, g in zip(logits, generators)]
    probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
    # torch.multinomial draws one sample as argmax(p / q) with q ~ Exp(1) from the generator: here each row's
    # q comes from its own generator, and the division and argmax run once for the batch (the same ids as
    # multinomial row by row, a test holds them to it, in about three quarters of the time)
    if q is None:
        q = exponentials(generators, probs.size(-1))
    return (probs / q).argmax(dim=-1).tolist()


def exponentials(generators: list, n: int) -> torch.Tensor:
    """torch.multinomial's q for one draw over n entries per generator: [len(generators), n] draws of Exp(1),
    row i from generators[i]. It does not depend on the logits, so it can be drawn while they are computed."""
    q = torch.empty(len(generators), n)
    for row, g in zip(q, generators):
        row.exponential_(1, generator=g)
    return q


@contextlib.contextmanager
def _drawing_ahead(temperature: float, top_k, top_p, vocab: int):
    """`draw(generators)`: starts `exponentials(generators, vocab)` for the next step in a helper thread, to
    run while the step computes (the C step, NumPy's BLAS and PyTorch's kernels let go of Python's lock), and
    returns a future; None where picking does not use q (greedy, or top-k/top-p, which draw their own)."""
    if temperature <= 0 or _filters(top_k, top_p, vocab):
        yield lambda generators: None
        return
    with concurrent.futures.ThreadPoolExecutor(1, "nslm-sampling") as pool:
        yield lambda generators: pool.submit(exponentials, generators, vocab)


@contextlib.contextmanager
def one_thread_on_cpu(device: torch.device):
    """Run a batch-1 decoding step on one CPU thread: its tiny matrix products gain nothing from more
    threads, and on a busy machine waiting for the other threads can make each token 100x slower."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.inference_mode()
def generate_ids(model, prompt_ids: list[int], max_new_tokens: int, stop_id: int | None = None,
                 temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None,
                 seed: int | None = None, use_cache: bool = True, engine: str = "auto") -> Iterator[int]:
    """Yield up to `max_new_tokens` new ids after `prompt_ids`, stopping after `stop_id` (not yielded).

    With the cache, `engine` "auto" decodes with the model's decoder (`nslm.models.decode`) where the model
    allows it (a float32 model on the CPU in eval mode): a Transformer's compiled C step where it was built,
    else the NumPy step; else with the model's own cached forward. "torch" always uses the latter, "numpy"
    the NumPy step and "c" the C step, each refusing a model it cannot run.
    """
    if not prompt_ids:
        raise ValueError("generation needs at least one prompt token")
    decoder = numpy_decoder(model, engine) if use_cache else None
    if decoder is not None:
        ctx = model.cfg.context_length if model.windowed else None
        yield from _generate_numpy(decoder, ctx, model.cfg.vocab_size, prompt_ids, max_new_tokens, stop_id,
                                   temperature, top_k, top_p, seed)
        return
    device = next(model.parameters()).device
    generator = _generator(seed)
    ids = list(prompt_ids)
    ctx = model.cfg.context_length
    keep = max(1, ctx - ctx // 4)
    windowed = model.windowed  # a fixed window (Transformer) or a carried state (RNN)
    start = max(0, len(ids) - ctx) if windowed else 0
    cache = model.new_cache(1) if use_cache else None
    fed = start  # with a cache: ids[start:fed] are already in it
    token = None  # the last picked id as a [1, 1] tensor: with a cache, the next input as it is
    for _ in range(max_new_tokens):
        if windowed and len(ids) - start > ctx:
            start = len(ids) - keep
            if cache is not None:
                cache.reset()
                fed = start
        with one_thread_on_cpu(device):
            if cache is None:
                logits, _ = model(torch.tensor([ids[start:]], device=device))
            else:
                step = token.view(1, 1) if token is not None and fed == len(ids) - 1 else torch.tensor([ids[fed:]], device=device)
                logits, _ = model(step, cache=cache)
                fed = len(ids)
            token = next_token(logits[0, -1], temperature, top_k, top_p, generator)
        picked = int(token)
        if picked == stop_id:
            return
        ids.append(picked)
        yield picked


ENGINES = ("auto", "c", "numpy", "torch")


def numpy_decoder(model, engine: str = "auto"):
    """The model's decoder (`model.numpy_decoder()`) for engine "auto", "c" or "numpy" where it has one, else
    None; with "auto" and "c" its one-token steps run in C where the decoder has a C step (`use_c`)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    make = getattr(model, "numpy_decoder", None)
    decoder = make() if engine != "torch" and make is not None else None
    if decoder is None and engine in ("numpy", "c"):
        raise NslmError("the NumPy and C decoding steps run a float32 Transformer, LSTM or GRU on the CPU in eval "
                        "mode; this model is not one")
    use_c = getattr(decoder, "use_c", None)
    on = use_c is not None and use_c(engine != "numpy")
    if engine == "c" and not on:
        raise NslmError("the C decoding step runs a Transformer, and needs nslm installed where a C compiler was "
                        "found (pip install -e . compiles it); use engine 'numpy' or 'auto'")
    return decoder


def _generate_numpy(decoder, ctx: int | None, vocab: int, prompt_ids, max_new_tokens, stop_id, temperature, top_k,
                    top_p, seed):
    """generate_ids' cached loop over a NumPy decoder: the same windows (`ctx`; None for an RNN, which
    carries its state through the whole story), the same picking of tokens (`next_tokens`, whose q for
    sampling without top-k or top-p is drawn while the decoder computes the logits: `_drawing_ahead`)."""
    generator = _generator(seed)
    ids = list(prompt_ids)
    keep = max(1, ctx - ctx // 4) if ctx else 0
    start = max(0, len(ids) - ctx) if ctx else 0
    fed = start
    # one BLAS thread for the whole story (its limit costs 25 us to take and give back: not per token); a
    # consumer that resumes this generator in another thread may leave the limit in place, which only
    # keeps NumPy's BLAS on one thread (the app sets that for its process anyway)
    with one_blas_thread(), _drawing_ahead(temperature, top_k, top_p, vocab) as draw:
        for _ in range(max_new_tokens):
            if ctx and len(ids) - start > ctx:
                start = len(ids) - keep
                decoder.reset()
                fed = start
            q = draw([generator])
            logits = decoder.feed(ids[fed:])
            fed = len(ids)
            if temperature <= 0:  # NumPy's argmax, the first of equal maxima as torch's, without torch's calls
                picked = int(logits.argmax())
            else:
                picked = next_tokens(torch.from_numpy(logits)[None], temperature, top_k, top_p, [generator],
                                     q.result() if q else None)[0]
            if picked == stop_id:
                return
            ids.append(picked)
            yield picked


def _filters(top_k, top_p, vocab: int) -> bool:
    """Whether top-k or top-p leaves out any token of a vocabulary this size."""
    return (top_k is not None and 0 < top_k < vocab) or (top_p is not None and 0 < top_p < 1)


def _generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator(device="cpu")
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    return generator


@torch.inference_mode()
def generate_batch_ids(model, prompts: list[list[int]], max_new_tokens: int, stop_id: int | None = None,
                       temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None,
                       seeds: list[int | None] | None = None, engine: str = "auto") -> list[list[int]]:
    """For each prompt, the ids `generate_ids` yields (prompt i with seeds[i]), decoded as one batch.

    Each row reads its prompt (all but the last id) on its own, exactly as alone; then every step feeds
    one token per unfinished row together, each row at its own position and with its own generator. A
    row whose window is full re-reads its last three quarters alone, as `generate_ids` does. A model
    whose cache cannot be joined (`join`, `keep`; `put` where windowed) decodes the prompts one by one.
    `engine` as in `generate_ids`: "auto" decodes a float32 model on the CPU with its C or NumPy step.
    """
    seeds = list(seeds) if seeds is not None else [None] * len(prompts)
    if len(seeds) != len(prompts):
        raise ValueError("give one seed per prompt")
    if any(not p for p in prompts):
        raise ValueError("generation needs at least one prompt token")
    cache_type = type(model.new_cache(1))
    windowed = model.windowed
    if not prompts or max_new_tokens < 1 or not all(hasattr(cache_type, m) for m in ("join", "keep", *(("put",) if windowed else ()))):
        return [list(generate_ids(model, p, max_new_tokens, stop_id, temperature, top_k, top_p, s, engine=engine))
                for p, s in zip(prompts, seeds)]
    device = next(model.parameters()).device
    ctx = model.cfg.context_length
    keep = max(1, ctx - ctx // 4)
    ids = [list(p) for p in prompts]
    starts = [max(0, len(p) - ctx) if windowed else 0 for p in ids]
    generators = [_generator(seed) for seed in seeds]
    outputs: list[list[int]] = [[] for _ in prompts]
    decoder = numpy_decoder(model, engine)

    if decoder is not None:  # the NumPy step: a decoder per row for its prompt, joined into one for the steps
        def read_alone(i: int):
            row = decoder.fresh()
            if len(ids[i]) - 1 > starts[i]:
                row.feed(ids[i][starts[i] : -1])
            return row

        join = decoder.join

        def step(cache, last: list[int]) -> torch.Tensor:
            return torch.from_numpy(cache.step(last))
    else:
        def read_alone(i: int):
            """A fresh cache holding row i's window but its last id (the batched step feeds that)."""
            cache = model.new_cache(1)
            if len(ids[i]) - 1 > starts[i]:
                model(torch.tensor([ids[i][starts[i] : -1]], device=device), cache=cache)
            return cache

        join = cache_type.join

        def step(cache, last: list[int]) -> torch.Tensor:
            return model(torch.tensor(last, device=device)[:, None], cache=cache)[0][:, -1]

    with (one_thread_on_cpu(device), one_blas_thread(),
          _drawing_ahead(temperature, top_k, top_p, model.cfg.vocab_size) as draw):
        active = list(range(len(prompts)))  # rows of the batch, in order: which prompt each holds
        cache = join([read_alone(i) for i in active])
        while active:
            rows_generators = [generators[i] for i in active]
            q = draw(rows_generators)  # the rows' q, drawn while the step computes
            logits = step(cache, [ids[i][-1] for i in active])
            finished = []
            picked = next_tokens(logits, temperature, top_k, top_p, rows_generators, q.result() if q else None)
            for row, (i, token) in enumerate(zip(active, picked)):
                if token == stop_id:
                    finished.append(row)
                    continue
                ids[i].append(token)
                outputs[i].append(token)
                if len(outputs[i]) == max_new_tokens:
                    finished.append(row)
            if finished:
                rows = [r for r in range(len(active)) if r not in finished]
                active = [active[r] for r in rows]
                if not active:
                    break
                cache = cache.keep(rows)
            for row, i in enumerate(active):
                if windowed and len(ids[i]) - starts[i] > ctx:
                    starts[i] = len(ids[i]) - keep
                    cache.put(row, read_alone(i))
    return outputs
