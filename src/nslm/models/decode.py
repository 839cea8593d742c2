"""Cached decoding in NumPy, and in C where the install compiled it: the CPU generation path.

`NumpyDecoder` decodes one Transformer sequence in NumPy and `NumpyBatchDecoder` several at once (its `join`);
`NumpyRNNDecoder` decodes an LSTM or GRU, one sequence or a batch. Where the install compiled the C step
(nslm/models/_cstep.c), `c_library()` loads it and `_CStep` hands a Transformer decoder's folded weights and
cache to it, one call per step. What follows is about the Transformer's NumPy step.

At a million parameters a decoding step's arithmetic is a few microseconds per matrix, and what costs
is the number of calls from Python: PyTorch spends about 8 microseconds dispatching each of a step's
~160 tensor operations on a 2-core CPU, NumPy one to three. So this step is written for few calls:

- every norm's weight is folded into the matrix that follows it (norm(x) @ W = r * (x @ (w * W)) for
  RMSNorm, the same plus a bias row for LayerNorm), leaving one dot product per norm;
- q, k and v come from one matrix product, with the attention scale 1/sqrt(head_dim) folded into q's
  columns; rotary positions are then x * cos + swapped(x) * signed sin over q and k together, where
  swapped(x) exchanges each head's halves with one indexed read;
- the gate and up projections of the gated MLP are one matrix, with the gate's columns halved so that
  silu(g) = h * (1 + tanh(h)) for h = g / 2 (no overflow for any g, unlike 1 / (1 + exp(-g)));
- weights are stored [in, out] and contiguous, the layout a row-vector product reads fastest.

It computes what `Transformer.forward` does in eval mode, in float32, up to rounding (tests hold its
logits to the model's and its greedy stories to the PyTorch path's). A model's `numpy_decoder()` gives one
where it can: a float32 Transformer, LSTM or GRU on the CPU in eval mode; others decode with PyTorch.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import importlib.util
import math
from typing import NamedTuple

import numpy as np
import torch


def _cpu_float32_eval(model) -> bool:
    p = model.tok_emb.weight
    return not model.training and p.device.type == "cpu" and p.dtype == torch.float32


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy()


# Abramowitz and Stegun 7.1.26: erf(z) = 1 - poly(t) exp(-z^2), t = 1 / (1 + p z), for z >= 0, with an
# absolute error under 1.5e-7, about float32's own rounding near 1
_ERF_P = 0.3275911
_ERF_A = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)


def gelu(x: np.ndarray) -> np.ndarray:
    """x * Phi(x), the exact (erf) GELU of torch's F.gelu, to within float32 rounding."""
    z = np.minimum(np.abs(x) * np.float32(1 / math.sqrt(2)), 10.0)  # erf(10) is 1 in float32; z*z cannot overflow
    t = 1.0 / (1.0 + _ERF_P * z)
    poly = _ERF_A[0]
    for a in _ERF_A[1:]:
        poly = poly * t + a
    erf_abs = 1.0 - poly * t * np.exp(-z * z)
    return 0.5 * x * (1.0 + np.copysign(erf_abs, x))


class FoldedBlock(NamedTuple):
    """One Transformer block's weights as the decoders read them: [in, out] matrices with the norms folded in
    (`NumpyDecoder._fold_block`), biases or None, and the MLP's hidden width."""

    qkv_w: np.ndarray
    qkv_b: np.ndarray | None
    proj_w: np.ndarray
    proj_b: np.ndarray | None
    gu_w: np.ndarray
    gu_b: np.ndarray | None
    d_ff: int
    down_w: np.ndarray
    down_b: np.ndarray | None


# the per-layer arrays the C step reads, in the order of its struct (`nslm_model` in _cstep.c)
_C_LAYER_ARRAYS = ("qkv_w", "qkv_b", "proj_w", "proj_b", "gu_w", "gu_b", "down_w", "down_b")


class _CModel(ctypes.Structure):
    """The C step's weight table (`nslm_model` in _cstep.c, field for field): sizes, then pointers."""

    _fields_ = ([(name, ctypes.c_int32) for name in
                 ("n_layer", "d_model", "n_head", "head_dim", "context", "vocab", "d_ff", "rope", "layernorm", "gated")]
                + [("eps", ctypes.c_float)]
                + [(name, ctypes.c_void_p) for name in ("emb", "pos_rows", "cos2", "ssin2", "swap_cols", "head_w", "head_b")]
                + [(name, ctypes.POINTER(ctypes.c_void_p)) for name in _C_LAYER_ARRAYS])


@functools.cache
def c_library() -> ctypes.CDLL | None:
    """The compiled C step (the `nslm.models._cstep` extension, built at install where a C compiler is
    found), or None where it was not built: decoding then stays in NumPy."""
    try:
        spec = importlib.util.find_spec("nslm.models._cstep")
    except ImportError:
        return None
    if spec is None or not spec.origin or not spec.origin.endswith((".so", ".pyd", ".dylib")):
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError:
        return None
    lib.nslm_step.argtypes = [ctypes.POINTER(_CModel), ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                              ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                              ctypes.c_int64, ctypes.c_void_p]
    lib.nslm_step.restype = ctypes.c_int
    lib.nslm_scratch_floats.argtypes = [ctypes.POINTER(_CModel), ctypes.c_int64]
    lib.nslm_scratch_floats.restype = ctypes.c_int64
    lib.nslm_block_columns.restype = ctypes.c_int64
    return lib


def _pack_columns(w: np.ndarray, block: int) -> np.ndarray:
    """A matrix [in, out] as the C step reads it: blocks of `block` columns one after another, each [in, block]
    (the last padded with zero columns)."""
    n, m = w.shape
    width = -(-m // block) * block
    padded = np.zeros((n, width), np.float32)
    padded[:, :m] = w
    return np.ascontiguousarray(padded.reshape(n, width // block, block).transpose(1, 0, 2))


class _CStep:
    """A NumpyDecoder's weights as the C step's table. `step(keys, values, tokens, positions)` is one call into
    C for rows of a batch (a cache [layers, rows, heads, context, head_dim]; logits [rows, vocab]) or for
    tokens of one sequence (a cache [layers, heads, context, head_dim]; the logits [1, vocab] after the last
    token). It fills the cache at each position. It keeps every array it points to; a table serves one thread
    at a time (its buffers), so `fresh()` decoders take a copy of their own."""

    def __init__(self, lib: ctypes.CDLL, d: "NumpyDecoder"):
        cfg = d.cfg
        self._keep: list = []
        ptr = self._ptr
        tables = {}
        block = int(lib.nslm_block_columns())
        pack = functools.partial(_pack_columns, block=block)
        for name in _C_LAYER_ARRAYS:  # one table of pointers per kind of array, a pointer per layer
            arrays = [getattr(layer, name) for layer in d.layers]
            table = (ctypes.c_void_p * len(arrays))(*[ptr(pack(a) if name.endswith("_w") else a) for a in arrays])
            self._keep.append(table)
            tables[name] = table
        self.model = _CModel(
            n_layer=cfg.n_layer, d_model=cfg.d_model, n_head=d.n_head, head_dim=d.head_dim,
            context=cfg.context_length, vocab=d.emb.shape[0], d_ff=d.layers[0].d_ff, rope=d.rope,
            layernorm=d.layernorm, gated=d.gated, eps=d.eps, emb=ptr(d.emb), pos_rows=ptr(d.pos_rows),
            cos2=ptr(d.cos2) if d.rope else None, ssin2=ptr(d.ssin2) if d.rope else None,
            swap_cols=ptr(d.swap_cols, np.int64) if d.rope else None, head_w=ptr(pack(d.head_w)), head_b=ptr(d.head_b),
            **tables)
        self.vocab = d.emb.shape[0]
        self.cache_floats = d.n_head * cfg.context_length * d.head_dim  # one layer of one sequence
        self.cache_shape = (cfg.n_head, cfg.context_length, d.head_dim)  # [heads, context, head_dim]
        self.n_layer = cfg.n_layer
        self._lib = lib
        self._ref = ctypes.byref(self.model)
        self._rows = 0  # the rows the buffers below hold
        self._cache = None  # the last caches stepped, with their addresses (numpy's .ctypes costs 3 us)

    def _ptr(self, a: np.ndarray | None, dtype=np.float32) -> int | None:
        if a is None:
            return None
        a = np.ascontiguousarray(a, dtype=dtype)
        self._keep.append(a)
        return a.ctypes.data

    def copy(self) -> "_CStep":
        """The same table with buffers of its own (for a decoder in another thread)."""
        other = copy.copy(self)
        other._rows, other._cache = 0, None
        return other

    def step(self, keys: np.ndarray, values: np.ndarray, tokens, positions) -> np.ndarray:
        rows = len(tokens)
        batch = keys.ndim == 5  # [layers, rows, ...]
        if self._cache is None or self._cache[0] is not keys or self._cache[1] is not values:
            # C reads and writes where these say: a cache of another shape is refused, never indexed
            for a in (keys, values):
                if (not a.flags.c_contiguous or a.dtype != np.float32 or a.ndim not in (4, 5)
                        or a.shape[0] != self.n_layer or a.shape[-3:] != self.cache_shape or a.shape != keys.shape):
                    raise ValueError("the C step needs contiguous float32 caches of this model")
            self._cache = (keys, values, keys.ctypes.data, values.ctypes.data)
        if len(positions) != rows or (batch and keys.shape[1] != rows):
            raise ValueError(f"{rows} tokens for {len(positions)} positions and a cache of {keys.shape[1] if batch else 1} rows")
        if rows > self._rows:
            self._rows = rows
            self._scratch = np.empty(int(self._lib.nslm_scratch_floats(self._ref, rows)), np.float32)
            self._ids = np.empty((2, rows), np.int64)  # tokens, positions
            self._logits = np.empty((rows, self.vocab), np.float32)
            self._buffers = (self._scratch.ctypes.data, self._ids.ctypes.data, self._ids.ctypes.data + 8 * rows,
                             self._logits.ctypes.data)
        self._ids[0, :rows] = tokens
        self._ids[1, :rows] = positions
        scratch, ids, pos, logits = self._buffers
        head_rows = rows if batch else 1
        if self._lib.nslm_step(self._ref, rows, self._cache[2], self._cache[3],
                               self.cache_floats * (rows if batch else 1), self.cache_floats if batch else 0,
                               scratch, ids, pos, head_rows, logits):
            raise ValueError(f"a token or position is outside the model's vocabulary or context: {tokens}, {positions}")
        return self._logits[:head_rows].copy()


# Batches of up to this many rows (and prompts of up to this many tokens) go through C, larger ones through
# NumPy, whose BLAS matrix products pay off once there are rows enough to amortise its calls: on the 2-core
# Zen 1 machine, the shipped Transformer's rows at position 100 decoded 4,494 / 3,955 tokens/s (C / NumPy)
# at 8 rows, 5,083 / 5,406 at 16, 5,379 / 6,696 at 44
C_BATCH_ROWS = 8


class NumpyDecoder:
    """`feed(ids)` appends tokens to the cache and returns the logits [vocab] after the last one;
    `reset()` empties the cache. The weights are a snapshot taken at construction."""

    @staticmethod
    def supports(model) -> bool:
        return model.cfg.arch == "transformer" and _cpu_float32_eval(model)

    @torch.no_grad()
    def __init__(self, model):
        cfg = model.cfg
        self.cfg = cfg
        C, H = cfg.d_model, cfg.n_head
        hd = C // H
        self.n_head, self.head_dim = H, hd
        self.rope = cfg.pos_encoding == "rope"
        self.layernorm = cfg.norm == "layernorm"
        self.gated = cfg.mlp == "swiglu"
        self.eps = float(model.norm_f.eps)
        self.pos = 0
        self.emb = np.ascontiguousarray(_np(model.tok_emb.weight))
        self.pos_rows = None  # added to the token embedding when positions are absolute
        if cfg.pos_encoding == "learned":
            self.pos_rows = np.ascontiguousarray(_np(model.pos_emb.weight))
        elif cfg.pos_encoding == "sinusoidal":
            self.pos_rows = np.ascontiguousarray(_np(model.pos_table))
        if self.rope:
            half = hd // 2
            cos, sin = _np(model.rope_cos), _np(model.rope_sin)
            ssin = np.concatenate([-sin[:, :half], sin[:, half:]], axis=1)
            # one row per position over q's and k's columns (all heads): [context, 2 * C]
            self.cos2 = np.ascontiguousarray(np.tile(cos, (1, 2 * H)))
            self.ssin2 = np.ascontiguousarray(np.tile(ssin, (1, 2 * H)))
            swap = np.concatenate([np.arange(half, hd), np.arange(half)])
            self.swap_cols = (np.arange(2 * H)[:, None] * hd + swap[None, :]).reshape(-1)
        self.layers = [self._fold_block(block) for block in model.blocks]
        self.head_w, self.head_b = self._fold_norm(model.norm_f, _np(model.tok_emb.weight).T, None)
        self.keys = np.zeros((cfg.n_layer, H, cfg.context_length, hd), np.float32)
        self.values = np.zeros((cfg.n_layer, H, cfg.context_length, hd), np.float32)
        lib = c_library()
        self._c_table = _CStep(lib, self) if lib is not None else None  # shared by fresh() decoders
        self.c_step = None  # this decoder's use of it, once `use_c` turns it on

    def use_c(self, on: bool = True) -> bool:
        """Decode (this sequence, and batches joined from it) with the compiled C step, the same arithmetic in
        one call per step, where it was built; or (on=False) with NumPy. Whether the C step is on now."""
        if not on or self._c_table is None:
            self.c_step = None
            return False
        if self.c_step is None:
            self.c_step = self._c_table.copy()
        return True

    def _fold_norm(self, norm, w_in_out: np.ndarray, bias: np.ndarray | None):
        """(matrix, bias) such that norm(x) @ w_in_out + bias == r(x) * (centred(x) @ matrix) + bias'."""
        w = _np(norm.weight)[:, None]
        out_bias = bias
        if self.layernorm and norm.bias is not None:
            extra = _np(norm.bias) @ w_in_out
            out_bias = extra if out_bias is None else out_bias + extra
        return np.ascontiguousarray(w * w_in_out, dtype=np.float32), out_bias

    def _fold_block(self, block) -> FoldedBlock:
        C = self.cfg.d_model
        attn, mlp = block.attn, block.mlp
        qkv_w = _np(attn.qkv.weight).T.copy()  # [C, 3C]
        qkv_b = _np(attn.qkv.bias).copy() if attn.qkv.bias is not None else None
        scale = 1.0 / math.sqrt(self.head_dim)
        qkv_w[:, :C] *= scale
        if qkv_b is not None:
            qkv_b[:C] *= scale
        qkv_w, qkv_b = self._fold_norm(block.norm1, qkv_w, qkv_b)
        d_ff = mlp.up.weight.shape[0]
        if self.gated:
            gu_w = np.concatenate([0.5 * _np(mlp.gate.weight).T, _np(mlp.up.weight).T], axis=1)
            gu_b = None
            if mlp.up.bias is not None:
                gu_b = np.concatenate([0.5 * _np(mlp.gate.bias), _np(mlp.up.bias)]).astype(np.float32)
        else:
            gu_w = _np(mlp.up.weight).T
            gu_b = _np(mlp.up.bias) if mlp.up.bias is not None else None
        gu_w, gu_b = self._fold_norm(block.norm2, gu_w, gu_b)
        proj_b = _np(attn.proj.bias) if attn.proj.bias is not None else None
        down_b = _np(mlp.down.bias) if mlp.down.bias is not None else None
        return FoldedBlock(qkv_w=qkv_w, qkv_b=qkv_b, proj_w=np.ascontiguousarray(_np(attn.proj.weight).T),
                           proj_b=proj_b, gu_w=gu_w, gu_b=gu_b, d_ff=d_ff,
                           down_w=np.ascontiguousarray(_np(mlp.down.weight).T), down_b=down_b)

    def reset(self) -> None:
        self.pos = 0

    def feed(self, ids: list[int]) -> np.ndarray:
        """Append `ids` at the next positions; the logits [vocab] after the last of them."""
        T = len(ids)
        if T == 0:
            raise ValueError("feed needs at least one id")
        if self.pos + T > self.cfg.context_length:
            raise ValueError(f"{self.pos + T} positions exceed the context length {self.cfg.context_length}")
        if self.c_step is not None and T <= C_BATCH_ROWS:  # one call into C for all of them (more: NumPy's BLAS)
            logits = self.c_step.step(self.keys, self.values, ids, range(self.pos, self.pos + T))[0]
            self.pos += T
            return logits
        return self._step(ids[0]) if T == 1 else self._feed_many(ids)

    def _normed1(self, x: np.ndarray, w: np.ndarray, b) -> np.ndarray:
        """norm(x) @ W (+ b) of one row x [C], the norm's weight already in W; its scale in Python floats
        (numpy's mean is several times slower than a dot product)."""
        if self.layernorm:
            x = x - float(x.sum()) / x.shape[0]
        y = np.dot(x, w) * (1.0 / math.sqrt(float(np.dot(x, x)) / x.shape[0] + self.eps))  # stays float32
        return y if b is None else y + b

    def _step(self, token: int) -> np.ndarray:
        """feed([token]): the arithmetic of _feed_many, on 1-d rows with as few calls as it takes."""
        pos = self.pos
        end = pos + 1
        C, H, hd = self.cfg.d_model, self.n_head, self.head_dim
        x = self.emb[token].copy()
        if self.pos_rows is not None:
            x += self.pos_rows[pos]
        if self.rope:
            cos, ssin = self.cos2[pos], self.ssin2[pos]
        for (qkv_w, qkv_b, proj_w, proj_b, gu_w, gu_b, d_ff, down_w, down_b), keys, values in zip(
                self.layers, self.keys, self.values):
            qkv = self._normed1(x, qkv_w, qkv_b)
            qk = qkv[: 2 * C] * cos + qkv[self.swap_cols] * ssin if self.rope else qkv[: 2 * C]
            keys[:, pos] = qk[C:].reshape(H, hd)
            values[:, pos] = qkv[2 * C : 3 * C].reshape(H, hd)
            scores = np.matmul(keys[:, :end], qk[:C].reshape(H, hd, 1)).reshape(H, end)
            scores = np.exp(scores - scores.max(1, keepdims=True))
            y = np.matmul(scores.reshape(H, 1, end), values[:, :end]).reshape(H, hd)  # unnormalised
            out = np.dot((y / scores.sum(1, keepdims=True)).reshape(C), proj_w)
            x += out if proj_b is None else out + proj_b
            out = self._hidden(self._normed1(x, gu_w, gu_b), d_ff) @ down_w
            x += out if down_b is None else out + down_b
        self.pos = end
        return self._normed1(x, self.head_w, self.head_b)

    def _normed(self, x: np.ndarray, w: np.ndarray, b) -> np.ndarray:
        """norm(x) @ W (+ b) of rows x [N, C], the norm's weight already in W: [N, out]."""
        if self.layernorm:
            x = x - x.mean(-1, keepdims=True)
        r = 1.0 / np.sqrt(np.einsum("ij,ij->i", x, x)[:, None] / x.shape[-1] + self.eps)
        y = (x @ w) * r.astype(np.float32)
        return y if b is None else y + b

    def _hidden(self, gu: np.ndarray, d_ff: int) -> np.ndarray:
        """The MLP's hidden activations from the normed up product of one row [out] or of rows [N, out]: the gated
        silu(gate) * up, the halved gate's silu as h * (1 + tanh(h)), or the GELU."""
        if not self.gated:
            return gelu(gu)
        half_gate = gu[..., :d_ff]
        return (np.tanh(half_gate) + 1.0) * half_gate * gu[..., d_ff:]

    def _blocks(self, x: np.ndarray, cos: np.ndarray | None, ssin: np.ndarray | None, attend) -> np.ndarray:
        """The blocks over rows x [N, C] (rope's cos and signed sin [N, 2C] per row); attend(layer, q, k, v),
        each [N, C], stores k and v in that layer's cache and returns the attention output [N, C]."""
        C = self.cfg.d_model
        for i, (qkv_w, qkv_b, proj_w, proj_b, gu_w, gu_b, d_ff, down_w, down_b) in enumerate(self.layers):
            qkv = self._normed(x, qkv_w, qkv_b)
            qk = qkv[:, : 2 * C] * cos + qkv[:, self.swap_cols] * ssin if self.rope else qkv[:, : 2 * C]
            out = attend(i, qk[:, :C], qk[:, C:], qkv[:, 2 * C : 3 * C]) @ proj_w
            x += out if proj_b is None else out + proj_b
            out = self._hidden(self._normed(x, gu_w, gu_b), d_ff) @ down_w
            x += out if down_b is None else out + down_b
        return x

    def _embed(self, ids, positions) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Token embeddings [N, C] (plus absolute positions), and rope's per-row tables (or None)."""
        x = self.emb[ids]  # a copy
        if self.pos_rows is not None:
            x += self.pos_rows[positions]
        if self.rope:
            return x, self.cos2[positions], self.ssin2[positions]
        return x, None, None

    def _feed_many(self, ids: list[int]) -> np.ndarray:
        """feed() of several ids: all positions at once, token i seeing the cache and ids[:i + 1]."""
        T, start = len(ids), self.pos
        end = start + T
        C, H, hd = self.cfg.d_model, self.n_head, self.head_dim
        later = np.arange(end)[None, :] > np.arange(start, end)[:, None]  # [T, end]: positions a token may not see

        def attend(i, q, k, v):
            keys, values = self.keys[i], self.values[i]
            keys[:, start:end] = k.reshape(T, H, hd).transpose(1, 0, 2)
            values[:, start:end] = v.reshape(T, H, hd).transpose(1, 0, 2)
            scores = np.matmul(q.reshape(T, H, hd).transpose(1, 0, 2), keys[:, :end].transpose(0, 2, 1))  # [H, T, end]
            scores[:, later] = -np.inf
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            y = np.matmul(scores, values[:, :end])  # [H, T, hd]
            y /= scores.sum(-1, keepdims=True)
            return y.transpose(1, 0, 2).reshape(T, C)

        x = self._blocks(*self._embed(ids, np.arange(start, end)), attend)
        self.pos = end
        return self._normed(x[-1:], self.head_w, self.head_b)[0]

    def join(self, decoders: list["NumpyDecoder"]) -> "NumpyBatchDecoder":
        """One batch decoder whose row i continues decoders[i] (each of one sequence, of these weights)."""
        return NumpyBatchDecoder(decoders)

    def fresh(self) -> "NumpyDecoder":
        """A decoder of the same weights (shared, not copied) with an empty cache of its own."""
        other = copy.copy(self)
        other.keys, other.values = np.zeros_like(self.keys), np.zeros_like(self.values)
        other.c_step = None if self.c_step is None else self._c_table.copy()
        other.pos = 0
        return other


class NumpyBatchDecoder:
    """Several sequences decoded together: `step(tokens)` takes one new token per row, each row at its own
    position, and returns the logits [rows, vocab]. Built from single-sequence decoders of the same weights
    (each after its own prompt); `keep` drops rows, `put` replaces one (a window refilled alone)."""

    def __init__(self, decoders: list[NumpyDecoder]):
        self.w = decoders[0]
        self.keys = np.stack([d.keys for d in decoders], axis=1)  # [layers, rows, H, context, hd]
        self.values = np.stack([d.values for d in decoders], axis=1)
        self.pos = np.array([d.pos for d in decoders])

    def keep(self, rows: list[int]) -> "NumpyBatchDecoder":
        # np.take gives C-contiguous caches (indexing the middle axis would not, and the C step refuses those)
        self.keys, self.values = np.take(self.keys, rows, axis=1), np.take(self.values, rows, axis=1)
        self.pos = self.pos[rows]
        return self

    def put(self, row: int, decoder: NumpyDecoder) -> None:
        self.keys[:, row], self.values[:, row], self.pos[row] = decoder.keys, decoder.values, decoder.pos

    def step(self, tokens: list[int]) -> np.ndarray:
        w, pos = self.w, self.pos
        B, end = len(tokens), int(pos.max()) + 1
        if end > w.cfg.context_length:
            raise ValueError(f"{end} positions exceed the context length {w.cfg.context_length}")
        if w.c_step is not None and B <= C_BATCH_ROWS:
            logits = w.c_step.step(self.keys, self.values, tokens, pos)
        else:
            logits = self._numpy_step(tokens, end)
        self.pos = pos + 1
        return logits

    def _numpy_step(self, tokens: list[int], end: int) -> np.ndarray:
        w, pos = self.w, self.pos
        B, C, H, hd = len(tokens), w.cfg.d_model, w.n_head, w.head_dim
        rows = np.arange(B)
        # row r sees positions up to its own: -inf beyond, [rows, 1, 1, end]
        mask = np.where(np.arange(end)[None, :] > pos[:, None], -np.inf, 0.0).astype(np.float32)[:, None, None, :]

        def attend(i, q, k, v):
            keys, values = self.keys[i], self.values[i]  # [rows, H, context, hd]
            keys[rows, :, pos] = k.reshape(B, H, hd)
            values[rows, :, pos] = v.reshape(B, H, hd)
            scores = np.matmul(q.reshape(B, H, 1, hd), keys[:, :, :end].transpose(0, 1, 3, 2)) + mask
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            y = np.matmul(scores, values[:, :, :end])  # [rows, H, 1, hd]
            y /= scores.sum(-1, keepdims=True)
            return y.reshape(B, C)

        return w._normed(w._blocks(*w._embed(tokens, pos), attend), w.head_w, w.head_b)


class NumpyRNNDecoder:
    """An LSTM or GRU language model's decoding in NumPy, for one sequence (`feed`) or several rows at once
    (`join`, then `step`/`keep`): the state is [layers, rows, hidden] (and the LSTM's cells alike).

    The input-side and hidden-side products are one matrix each per layer with the gates side by side, the
    biases that only add are summed, and every sigmoid gate is 0.5 * (1 + tanh(x / 2)) with the halving
    folded into its weights, so one tanh serves all gates of a layer.
    """

    @staticmethod
    def supports(model) -> bool:
        return model.cfg.arch in ("lstm", "gru") and _cpu_float32_eval(model)

    @torch.no_grad()
    def __init__(self, model):
        cfg = model.cfg
        self.cfg = cfg
        self.lstm = cfg.arch == "lstm"
        rnn = model.rnn
        H = rnn.hidden_size
        self.hidden = H
        self.emb = np.ascontiguousarray(_np(model.tok_emb.weight))
        # gate order: LSTM i, f, g, o; GRU r, z, n. Sigmoid gates take the halving; the LSTM's g is a tanh.
        half = np.full(4 * H if self.lstm else 3 * H, 0.5, np.float32)
        if self.lstm:
            half[2 * H : 3 * H] = 1.0
        else:
            half[2 * H :] = 1.0  # n = tanh(...) of its own, outside the sigmoid pair
        self.layers = []
        for k in range(rnn.num_layers):
            w_ih = _np(getattr(rnn, f"weight_ih_l{k}")).T * half
            w_hh = _np(getattr(rnn, f"weight_hh_l{k}")).T * half
            b_ih = _np(getattr(rnn, f"bias_ih_l{k}")) * half if rnn.bias else np.zeros(w_ih.shape[1], np.float32)
            b_hh = _np(getattr(rnn, f"bias_hh_l{k}")) * half if rnn.bias else np.zeros(w_hh.shape[1], np.float32)
            if self.lstm:
                b_in, b_h = b_ih + b_hh, None
            else:  # the GRU's n gate multiplies (W_hn h + b_hn) by r, so b_hn stays on the hidden side
                b_in = b_ih.copy()
                b_in[: 2 * H] += b_hh[: 2 * H]
                b_h = np.zeros_like(b_hh)
                b_h[2 * H :] = b_hh[2 * H :]
            self.layers.append((np.ascontiguousarray(w_ih, dtype=np.float32), b_in.astype(np.float32),
                                np.ascontiguousarray(w_hh, dtype=np.float32),
                                None if b_h is None else b_h.astype(np.float32)))
        self.proj = np.ascontiguousarray(_np(model.proj.weight).T) if model.proj is not None else None
        self.head = np.ascontiguousarray(_np(model.tok_emb.weight).T)
        self._zero(1)

    def _zero(self, rows: int) -> None:
        shape = (len(self.layers), rows, self.hidden)
        self.h = np.zeros(shape, np.float32)
        self.c = np.zeros(shape, np.float32) if self.lstm else None
        self.pos = 0

    def reset(self) -> None:
        self._zero(self.h.shape[1])

    def fresh(self) -> "NumpyRNNDecoder":
        """A decoder of the same weights (shared) with a zero state of one row."""
        other = copy.copy(self)
        other._zero(1)
        return other

    def join(self, decoders: list["NumpyRNNDecoder"]) -> "NumpyRNNDecoder":
        """One decoder whose row i holds decoders[i]'s state (each of one row)."""
        joined = copy.copy(self)
        joined.h = np.concatenate([d.h for d in decoders], axis=1)
        joined.c = np.concatenate([d.c for d in decoders], axis=1) if self.lstm else None
        joined.pos = max(d.pos for d in decoders)
        return joined

    def keep(self, rows: list[int]) -> "NumpyRNNDecoder":
        self.h = self.h[:, rows]
        if self.lstm:
            self.c = self.c[:, rows]
        return self

    def feed(self, ids: list[int]) -> np.ndarray:
        """Append `ids` (one row); the logits [vocab] after the last of them."""
        if not ids:
            raise ValueError("feed needs at least one id")
        for token in ids:
            logits = self.step([token])
        return logits[0]

    def step(self, tokens: list[int]) -> np.ndarray:
        """One new token per row: the logits [rows, vocab]."""
        H = self.hidden
        x = self.emb[tokens]
        for k, (w_ih, b_in, w_hh, b_h) in enumerate(self.layers):
            h = self.h[k]
            gates = x @ w_ih + b_in
            hidden_side = h @ w_hh
            if self.lstm:
                t = np.tanh(gates + hidden_side)
                i, f, g, o = t[:, :H] + 1.0, t[:, H : 2 * H] + 1.0, t[:, 2 * H : 3 * H], t[:, 3 * H :] + 1.0
                c = 0.5 * (f * self.c[k] + i * g)  # i and f are 2 * sigmoid: the halves come out here
                self.c[k] = c
                x = 0.5 * o * np.tanh(c)
            else:
                hidden_side += b_h
                t = np.tanh(gates[:, : 2 * H] + hidden_side[:, : 2 * H])
                r, z = 0.5 * (t[:, :H] + 1.0), 0.5 * (t[:, H:] + 1.0)
                n = np.tanh(gates[:, 2 * H :] + r * hidden_side[:, 2 * H :])
                x = n + z * (h - n)
            self.h[k] = x
        self.pos += 1
        if self.proj is not None:
            x = x @ self.proj
        return x @ self.head
