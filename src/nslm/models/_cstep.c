/* The cached decoding step of an nslm Transformer in C, float32: one call feeds one token of one sequence,
 * a short prompt of one sequence, or one token to each row of a batch (each row at its own position).
 *
 * It computes what NumpyDecoder (nslm/models/decode.py) computes, on the same folded weights (norm weights
 * inside the next matrix, the attention scale inside q's columns, the gate halved) and the same key/value
 * cache arrays, so the two mix freely. Python builds the weight table once and then makes one call per
 * step, which is what the NumPy step cannot: it pays 1-3 microseconds for each of its ~110 calls per token,
 * about as long as the arithmetic itself.
 *
 * The weight matrices come packed in blocks of NB columns (matmul_rows): a block's column sums stay in
 * registers while its rows stream past, read front to back with a prefetch ahead, and every sum runs over
 * the rows in order, whatever the number of rows, so a batch row gets the same logits as the sequence alone.
 * The step is bound by memory (4 MB of weights per token at the shipped size), not by the arithmetic.
 * On x86-64 Linux with GCC it is compiled twice, for AVX2 with FMA and for the baseline, and the loader
 * picks one for the CPU at hand.
 *
 * The module is built as a Python extension (so that pip places it beside the package) but its function
 * is called through ctypes, which releases the GIL for the call: stories in other threads run meanwhile.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define NSLM_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define NSLM_CLONES
#endif
#define NSLM_INLINE static inline __attribute__((always_inline))

/* What Python hands over, field for field (nslm.models.decode._CModel mirrors it). A NULL bias is none. */
typedef struct {
    int32_t n_layer, d_model, n_head, head_dim, context, vocab, d_ff;
    int32_t rope, layernorm, gated;
    float eps;
    const float *emb;                /* [vocab, C] */
    const float *pos_rows;           /* [context, C], added to the token's row; NULL with rope */
    const float *cos2, *ssin2;       /* rope: [context, 2C] over q's and k's columns */
    const int64_t *swap_cols;        /* rope: [2C], each head's halves exchanged */
    const float *head_w, *head_b;    /* [C, vocab], [vocab] */
    /* per layer; every matrix packed in column blocks (matmul_rows), its size given as [in, out] */
    const float *const *qkv_w, *const *qkv_b;   /* [C, 3C], [3C] */
    const float *const *proj_w, *const *proj_b; /* [C, C], [C] */
    const float *const *gu_w, *const *gu_b;     /* [C, d_ff] or [C, 2 d_ff] (gated), and its bias */
    const float *const *down_w, *const *down_b; /* [d_ff, C], [C] */
} nslm_model;

/* y[m] = x[n] W[n, m] over the rows of W, each y[j] summed in row order (the attention's weighted sum of V) */
NSLM_INLINE void matvec(const float *restrict x, int n, const float *restrict W, int m, float *restrict y) {
    for (int j = 0; j < m; j++) y[j] = 0.0f;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const float x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];
        const float *w0 = W + (size_t)i * m, *w1 = w0 + m, *w2 = w1 + m, *w3 = w2 + m;
        __builtin_prefetch(w0 + 8 * m);
        for (int j = 0; j < m; j++) y[j] = (((y[j] + x0 * w0[j]) + x1 * w1[j]) + x2 * w2[j]) + x3 * w3[j];
    }
    for (; i < n; i++) {
        const float xi = x[i];
        const float *w = W + (size_t)i * m;
        for (int j = 0; j < m; j++) y[j] += xi * w[j];
    }
}

/* Y[b] = X[b] W for B rows (X [B, n], Y [B, m]), each Y[b, j] summed over i in order, as matvec does.
 * W [n, m] comes packed in blocks of NB columns, block after block, each [n, NB] (the last one padded with
 * zero columns): a block is read front to back, its NB sums stay in registers over all n rows, and it is
 * read from memory once and then from cache for every row b. */
#define NB 64
#define PREFETCH_ROWS 16
int64_t nslm_block_columns(void) { return NB; }

NSLM_INLINE void matmul_rows(const float *restrict X, int B, int n, const float *restrict Wp, int m,
                             float *restrict Y) {
    for (int j0 = 0; j0 < m; j0 += NB) {
        const float *block = Wp + (size_t)j0 * n;
        const int width = m - j0 < NB ? m - j0 : NB;
        for (int b = 0; b < B; b++) {
            const float *x = X + (size_t)b * n;
            float acc[NB];
            for (int k = 0; k < NB; k++) acc[k] = 0.0f;
            for (int i = 0; i < n; i++) {
                const float xi = x[i];
                const float *w = block + (size_t)i * NB;
                /* 4 KB ahead: the hardware's own prefetching leaves this loop waiting on memory (30% slower
                 * at the shipped model's size); past the end it reads the next block, or nothing */
                __builtin_prefetch(w + PREFETCH_ROWS * NB);
                __builtin_prefetch(w + PREFETCH_ROWS * NB + 32);
                for (int k = 0; k < NB; k++) acc[k] += xi * w[k];
            }
            memcpy(Y + (size_t)b * m + j0, acc, sizeof(float) * width);
        }
    }
}

/* a . b in eight running sums (one vector register), added pairwise at the end */
NSLM_INLINE float dot(const float *restrict a, const float *restrict b, int n) {
    float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* exp(x) for x <= 0 (a softmax's shifted scores) within about 2 float32 ulps, as a loop body that
 * vectorises (libm's expf does not): Cody-Waite reduction to r in [-ln2/2, ln2/2], Cephes' polynomial for
 * exp(r), and 2^n put into the exponent bits. Below -87 the result is exp(-87), about 1.6e-38, not 0. */
NSLM_INLINE float exp_nonpositive(float x) {
    x = x > -87.0f ? x : -87.0f;  /* not fmaxf, which is a libm call here */
    const float n = floorf(x * 1.44269504088896341f + 0.5f);
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* norm(x) W + b for B rows x [B, C] with the norm's weight already inside W: y = (centred x) W / rms + b.
 * `tmp` [B, C] takes the centred rows (LayerNorm) and `r` [B] the scales. */
NSLM_INLINE void normed(const nslm_model *m, int B, const float *x, const float *W, const float *b, int out,
                        float *tmp, float *r, float *y) {
    const int C = m->d_model;
    const float *src = x;
    if (m->layernorm) {
        for (int row = 0; row < B; row++) {
            const float *xr = x + (size_t)row * C;
            float *tr = tmp + (size_t)row * C;
            float mean = 0.0f;
            for (int i = 0; i < C; i++) mean += xr[i];
            mean /= (float)C;
            for (int i = 0; i < C; i++) tr[i] = xr[i] - mean;
        }
        src = tmp;
    }
    for (int row = 0; row < B; row++) {
        const float *sr = src + (size_t)row * C;
        r[row] = 1.0f / sqrtf(dot(sr, sr, C) / (float)C + m->eps);
    }
    matmul_rows(src, B, C, W, out, y);
    for (int row = 0; row < B; row++) {
        float *yr = y + (size_t)row * out;
        const float s = r[row];
        if (b) {
            for (int j = 0; j < out; j++) yr[j] = yr[j] * s + b[j];
        } else {
            for (int j = 0; j < out; j++) yr[j] *= s;
        }
    }
}

NSLM_INLINE void add_out(float *restrict x, const float *restrict out, const float *b, int C) {
    if (b) {
        for (int i = 0; i < C; i++) x[i] += out[i] + b[i];
    } else {
        for (int i = 0; i < C; i++) x[i] += out[i];
    }
}

/* Scratch floats a step of B rows needs: per row x, a centred copy, qkv, rotated q and k, the attention's
 * output, the residual branch's output, the MLP's product and hidden units; then the norms' scales and one
 * row of attention scores. */
int64_t nslm_scratch_floats(const nslm_model *m, int64_t B) {
    const int64_t C = m->d_model, gu_out = m->d_ff * (m->gated ? 2 : 1);
    return B * (C + C + 3 * C + 2 * C + C + C + gu_out + m->d_ff) + B + m->context;
}

/* Feed rows b < B their token tokens[b] at position positions[b] (< context): fills that position of the
 * row's cache in every layer and writes the logits [head_rows, vocab] of the last head_rows rows. Row b of
 * layer l caches its keys [heads, context, head_dim] at keys + l * layer_stride + b * row_stride (values
 * alike): one sequence's cache [layers, heads, context, head_dim] has layer_stride = heads * context *
 * head_dim, a batch's [layers, rows, heads, context, head_dim] has row_stride that and layer_stride B times
 * it. Rows are attended in order, each after writing its own keys and values, so row_stride 0 with the
 * positions start, start + 1, ... reads several tokens of one sequence (a prompt) at once.
 * Returns 0, or 1 (and computes nothing) when a token, position or head_rows is out of range. */
NSLM_CLONES int nslm_step(const nslm_model *m, int64_t B, float *keys, float *values, int64_t layer_stride,
                          int64_t row_stride, float *scratch, const int64_t *tokens, const int64_t *positions,
                          int64_t head_rows, float *logits) {
    const int C = m->d_model, H = m->n_head, hd = m->head_dim, ctx = m->context, ff = m->d_ff;
    const int gu_out = m->gated ? 2 * ff : ff;
    if (head_rows < 1 || head_rows > B) return 1;
    for (int64_t b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= m->vocab || positions[b] < 0 || positions[b] >= ctx) return 1;
    float *X = scratch, *TMP = X + B * C, *QKV = TMP + B * C, *QK = QKV + B * 3 * C, *ATT = QK + B * 2 * C;
    float *OUT = ATT + B * C, *GU = OUT + B * C, *HID = GU + B * gu_out, *R = HID + B * ff, *scores = R + B;
    for (int64_t b = 0; b < B; b++) {
        float *x = X + b * C;
        memcpy(x, m->emb + (size_t)tokens[b] * C, sizeof(float) * C);
        if (m->pos_rows) {
            const float *p = m->pos_rows + (size_t)positions[b] * C;
            for (int i = 0; i < C; i++) x[i] += p[i];
        }
    }
    for (int l = 0; l < m->n_layer; l++) {
        normed(m, (int)B, X, m->qkv_w[l], m->qkv_b[l], 3 * C, TMP, R, QKV);
        for (int64_t b = 0; b < B; b++) {
            const int64_t pos = positions[b];
            const int end = (int)pos + 1;
            const float *qkv = QKV + b * 3 * C;
            float *qk = QK + b * 2 * C, *att = ATT + b * C;
            if (m->rope) {
                const float *cs = m->cos2 + (size_t)pos * 2 * C, *sn = m->ssin2 + (size_t)pos * 2 * C;
                for (int j = 0; j < 2 * C; j++) qk[j] = qkv[j] * cs[j] + qkv[m->swap_cols[j]] * sn[j];
            } else {
                memcpy(qk, qkv, sizeof(float) * 2 * C);
            }
            float *K = keys + l * layer_stride + b * row_stride, *V = values + l * layer_stride + b * row_stride;
            for (int h = 0; h < H; h++) {
                float *Kh = K + (size_t)h * ctx * hd, *Vh = V + (size_t)h * ctx * hd;
                memcpy(Kh + (size_t)pos * hd, qk + C + h * hd, sizeof(float) * hd);
                memcpy(Vh + (size_t)pos * hd, qkv + 2 * C + h * hd, sizeof(float) * hd);
                /* softmax(q K^T) V over positions 0..pos: scores, their maximum, exp, then V's rows weighted */
                const float *q = qk + h * hd;
                for (int t = 0; t < end; t++) {
                    __builtin_prefetch(Kh + (size_t)(t + 8) * hd);  /* the cache is read once per step, too */
                    scores[t] = dot(q, Kh + (size_t)t * hd, hd);
                }
                float top = scores[0];
                for (int t = 1; t < end; t++) top = scores[t] > top ? scores[t] : top;
                float total = 0.0f;
#pragma omp simd reduction(+ : total)
                for (int t = 0; t < end; t++) {
                    scores[t] = exp_nonpositive(scores[t] - top);
                    total += scores[t];
                }
                float *y = att + h * hd;
                matvec(scores, end, Vh, hd, y);
                const float inv = 1.0f / total;
                for (int d = 0; d < hd; d++) y[d] *= inv;
            }
        }
        matmul_rows(ATT, (int)B, C, m->proj_w[l], C, OUT);
        for (int64_t b = 0; b < B; b++) add_out(X + b * C, OUT + b * C, m->proj_b[l], C);
        normed(m, (int)B, X, m->gu_w[l], m->gu_b[l], gu_out, TMP, R, GU);
        for (int64_t b = 0; b < B; b++) {
            const float *gu = GU + b * gu_out;
            float *hidden = HID + b * ff;
            if (m->gated) { /* silu(g) * u with the gate halved: h (1 + tanh h) u */
                for (int j = 0; j < ff; j++) hidden[j] = (tanhf(gu[j]) + 1.0f) * gu[j] * gu[ff + j];
            } else { /* the exact GELU, x Phi(x) */
                for (int j = 0; j < ff; j++) hidden[j] = 0.5f * gu[j] * (1.0f + erff(gu[j] * 0.70710678118654752f));
            }
        }
        matmul_rows(HID, (int)B, ff, m->down_w[l], C, OUT);
        for (int64_t b = 0; b < B; b++) add_out(X + b * C, OUT + b * C, m->down_b[l], C);
    }
    normed(m, (int)head_rows, X + (B - head_rows) * C, m->head_w, m->head_b, m->vocab, TMP, R, logits);
    return 0;
}

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_cstep",
    .m_doc = "nslm's C decoding step; called through ctypes (nslm.models.decode).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__cstep(void) { return PyModule_Create(&module); }
