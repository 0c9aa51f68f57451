/* gpu_model.c — load a checkpoint as one rank's GPU shard, and the whole-model forward
 * (see gpu_model.h). The per-layer math lives in gpu_fp_layer.c and gpu_q_layer.c.
 *
 * Tensors are sliced on the host while converting, so only this rank's bytes cross PCIe
 * and the host never holds more than one tensor in fp32. lm_head is vocab-parallel: the
 * GEMM over the whole vocabulary is the largest of a decode step for small models and
 * would be repeated on every rank if replicated; an all-gather of [rows, V/T] fp32 logits
 * is a few hundred KB per decode step.
 */
#include "runtime/gpu_model.h"
#include "error.h"
#include "kernels/w4a4.h"
#include "llama_model.h"
#include "qformat.h"
#include "runtime/rt_ops.h"

#include <stdlib.h>
#include <string.h>

#define F "runtime/gpu_model.c"

#ifdef FLATQ_HAVE_CUDA

int gpu_model_alloc(gpu_model *m, void **p, size_t bytes, int is_kv, const char *what)
{
    if (rt_alloc(p, bytes, what) != FQ_OK)
        return fq_error_wrap("rank %d", m->plan.rank);
    if (is_kv)
        m->kv_bytes += bytes;
    else
        m->weight_bytes += bytes;
    return FQ_OK;
}

int gpu_model_upload_f32(gpu_model *m, float **dst, const float *src, size_t n,
                         const char *what)
{
    if (gpu_model_alloc(m, (void **)dst, sizeof(float) * n, 0, what) != FQ_OK)
        return FQ_ERR;
    return rt_upload(m->ctx, *dst, src, sizeof(float) * n);
}

/* dst (new, device bf16 [nr, nc]) ← rows r0.. and columns c0.. of the checkpoint's 2-D
 * tensor `name`, whose shape must be [rows, cols]. */
static int upload_bf16_slice(gpu_model *m, const st_checkpoint *ck, const char *name, int64_t rows,
                             int64_t cols, int64_t r0, int64_t nr, int64_t c0, int64_t nc,
                             int64_t pad_rows, uint16_t **dst)
{
    const st_tensor *t = st_checkpoint_find(ck, name);
    if (!t)
        return fq_error("%s: tensor '%s' is missing (expected by config.json)", ck->dir, name);
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
        return fq_error("%s: tensor '%s' has the wrong shape (expected [%lld, %lld] from "
                        "config.json)", ck->dir, name, (long long)rows, (long long)cols);
    if (t->dtype != FQ_BF16 && t->dtype != FQ_F16 && t->dtype != FQ_F32)
        return fq_error("%s: tensor '%s' has dtype %s (expected BF16, F16 or F32)", ck->dir,
                        name, fq_dtype_name(t->dtype));
    size_t total = (size_t)(nr + pad_rows) * nc, esz = fq_dtype_size(t->dtype);
    uint16_t *host = fq_calloc(total, sizeof(uint16_t), name);
    float *row = fq_malloc(sizeof(float) * (size_t)nc, name);
    if (!host || !row) {
        free(host);
        free(row);
        return FQ_ERR;
    }
    for (int64_t r = 0; r < nr; r++) {
        const uint8_t *src = t->data + ((size_t)(r0 + r) * cols + c0) * esz;
        uint16_t *out = host + (size_t)r * nc;
        if (t->dtype == FQ_BF16) {
            memcpy(out, src, sizeof(uint16_t) * (size_t)nc);
            continue;
        }
        fq_convert_to_f32(src, t->dtype, (size_t)nc, row);
        for (int64_t c = 0; c < nc; c++)
            out[c] = fq_f32_to_bf16(row[c]);
    }
    free(row);
    int rc = gpu_model_alloc(m, (void **)dst, total * sizeof(uint16_t), 0, name);
    if (rc == FQ_OK)
        rc = rt_upload(m->ctx, *dst, host, total * sizeof(uint16_t));
    free(host);
    return rc;
}

static int upload_f32_vec(gpu_model *m, const st_checkpoint *ck, const char *name, int64_t n,
                          float **dst)
{
    real *h = NULL;
    int64_t shape[1] = {n};
    if (llama_tensor_load(ck, name, 1, shape, &h) != FQ_OK)
        return FQ_ERR;
    int rc = gpu_model_upload_f32(m, dst, h, (size_t)n, name);
    free(h);
    return rc;
}

static int fp_layer_load(gpu_model *m, const st_checkpoint *ck, int i)
{
    const llama_config *c = &m->cfg;
    const tp_plan *p = &m->plan;
    gpu_fp_layer *l = &m->fp[i];
    int64_t d = c->hidden, f = c->intermediate, dh = c->head_dim;
    int64_t qd = (int64_t)c->n_heads * dh, kd = (int64_t)c->n_kv_heads * dh;
    int64_t hl = (int64_t)p->heads * dh, gl = (int64_t)p->kv_heads * dh;
    char name[256];
#define NAME(s) (snprintf(name, sizeof name, "model.layers.%d.%s", i, s), name)
    if (upload_f32_vec(m, ck, NAME("input_layernorm.weight"), d, &l->attn_norm) != FQ_OK ||
        upload_f32_vec(m, ck, NAME("post_attention_layernorm.weight"), d, &l->mlp_norm) != FQ_OK ||
        upload_bf16_slice(m, ck, NAME("self_attn.q_proj.weight"), qd, d, p->head0 * dh, hl, 0, d,
                          0, &l->wq) != FQ_OK ||
        upload_bf16_slice(m, ck, NAME("self_attn.k_proj.weight"), kd, d, p->kv_head0 * dh, gl, 0,
                          d, 0, &l->wk) != FQ_OK ||
        upload_bf16_slice(m, ck, NAME("self_attn.v_proj.weight"), kd, d, p->kv_head0 * dh, gl, 0,
                          d, 0, &l->wv) != FQ_OK ||
        upload_bf16_slice(m, ck, NAME("self_attn.o_proj.weight"), d, qd, 0, d, p->head0 * dh, hl,
                          0, &l->wo) != FQ_OK ||
        upload_bf16_slice(m, ck, NAME("mlp.gate_proj.weight"), f, d, p->ffn0, p->ffn, 0, d, 0,
                          &l->wgate) != FQ_OK ||
        upload_bf16_slice(m, ck, NAME("mlp.up_proj.weight"), f, d, p->ffn0, p->ffn, 0, d, 0,
                          &l->wup) != FQ_OK ||
        upload_bf16_slice(m, ck, NAME("mlp.down_proj.weight"), d, f, 0, d, p->ffn0, p->ffn, 0,
                          &l->wdown) != FQ_OK)
        return FQ_ERR;
#undef NAME
    size_t kv = sizeof(uint16_t) * (size_t)m->max_batch * p->kv_heads * m->max_ctx * dh;
    if (gpu_model_alloc(m, (void **)&l->kc, kv, 1, "K cache") != FQ_OK ||
        gpu_model_alloc(m, (void **)&l->vc, kv, 1, "V cache") != FQ_OK)
        return FQ_ERR;
    return FQ_OK;
}

static void fp_layer_free(gpu_fp_layer *l)
{
    void *p[] = {l->attn_norm, l->mlp_norm, l->wq, l->wk, l->wv, l->wo, l->wgate, l->wup,
                 l->wdown, l->kc, l->vc};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        fq_cuda_free(p[i]);
    memset(l, 0, sizeof *l);
}

static int scratch_alloc(gpu_model *m)
{
    const llama_config *c = &m->cfg;
    const tp_plan *p = &m->plan;
    size_t N = (size_t)m->max_tokens, dh = (size_t)c->head_dim;
    size_t hl = (size_t)p->heads * dh, gl = (size_t)p->kv_heads * dh, fl = (size_t)p->ffn;
    size_t wide = (size_t)c->hidden;
    wide = wide > hl ? wide : hl;
    wide = wide > fl ? wide : fl;
    struct { void **ptr; size_t bytes; const char *what; } s[] = {
        {(void **)&m->x, N * c->hidden * 2, "hidden state"},
        {(void **)&m->a, N * wide * 2, "normed activations"},
        {(void **)&m->qb, N * hl * 2, "queries"},
        {(void **)&m->kb, N * gl * 2, "keys"},
        {(void **)&m->vb, N * gl * 2, "values"},
        {(void **)&m->att, N * hl * 2, "attention output"},
        {(void **)&m->gate, N * fl * 2, "gate"},
        {(void **)&m->up, N * fl * 2, "up"},
        {(void **)&m->logits_part, (size_t)m->max_logit_rows * p->vocab_shard * 4, "logits"},
        {(void **)&m->logits, (size_t)m->max_logit_rows * c->vocab * 4, "logits"},
        {(void **)&m->ids_d, N * 4, "token ids"},
        {(void **)&m->pos0_d, (size_t)m->max_batch * 4, "positions"},
        {(void **)&m->nll_d, (size_t)m->max_logit_rows * 8, "per-token NLL"},
    };
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        if (rt_alloc(s[i].ptr, s[i].bytes, s[i].what) != FQ_OK)
            return fq_error_wrap("rank %d", p->rank);
        m->scratch_bytes += s[i].bytes;
    }
    if (p->tp > 1) {
        size_t g = (size_t)p->tp * m->max_logit_rows * p->vocab_shard * 4;
        if (rt_alloc((void **)&m->gathered, g, "gathered logits") != FQ_OK)
            return fq_error_wrap("rank %d", p->rank);
        m->scratch_bytes += g;
    }
    if (m->quantized)
        for (int i = 0; i < 3; i++) {
            size_t cb = N * (size_t)fq_w4a4_padded_k((int)wide) / 2, sb = N * (size_t)(p->blocks > 1 ? p->blocks : 1) * 4;
            if (rt_alloc((void **)&m->codes[i], cb, "activation codes") != FQ_OK ||
                rt_alloc((void **)&m->ascale[i], sb, "activation scales") != FQ_OK)
                return fq_error_wrap("rank %d", p->rank);
            m->scratch_bytes += cb + sb;
        }
    return FQ_OK;
}

static int check_sizes(const char *dir, int rank, int max_batch, int max_ctx, int max_tokens,
                       int max_logit_rows, const llama_config *c)
{
    if (max_batch < 1 || max_ctx < 1 || max_tokens < 1 || max_logit_rows < 1)
        return fq_error(F ":gpu_model_load: rank %d: batch %d, context %d, tokens %d, logit "
                        "rows %d (expected all >= 1)", rank, max_batch, max_ctx, max_tokens,
                        max_logit_rows);
    if (max_ctx > c->max_pos)
        return fq_error("%s/config.json: max_position_embeddings %d is less than the context "
                        "of %d asked for (expected a shorter prompt + generation)", dir,
                        c->max_pos, max_ctx);
    if (c->head_dim % 2 != 0)
        return fq_error("%s/config.json: head_dim %d (expected even for RoPE)", dir,
                        c->head_dim);
    return FQ_OK;
}

int gpu_model_load(gpu_model *m, const char *dir, fq_cuda_ctx *ctx, tp_comm *comm,
                   int max_batch, int max_ctx, int max_tokens, int max_logit_rows)
{
    if (!m || !dir || !ctx || !comm)
        return fq_error(F ":gpu_model_load: NULL argument (expected model, dir, context and "
                        "communicator)");
    memset(m, 0, sizeof *m);
    m->ctx = ctx;
    m->comm = comm;
    m->max_batch = max_batch;
    m->max_ctx = max_ctx;
    m->max_tokens = max_tokens;
    m->max_logit_rows = max_logit_rows;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    st_checkpoint ck = {0};
    rope_table rope = {0};
    int has = qconfig_load(dir, &m->qc);
    if (has < 0 || llama_config_load(path, &m->cfg) != FQ_OK)
        return FQ_ERR;
    m->quantized = has == 1;
    const llama_config *c = &m->cfg;
    if (check_sizes(dir, comm->rank, max_batch, max_ctx, max_tokens, max_logit_rows, c) != FQ_OK)
        return FQ_ERR;
    if (m->quantized && (m->qc.w_bits != 4 || m->qc.a_bits != 4 || m->qc.kv_bits != 4))
        return fq_error("%s/config.json: quantization_config has w_bits %d, a_bits %d, "
                        "kv_bits %d (expected 4/4/4: the GPU runtime runs W4A4KV4; evaluate "
                        "other settings with --device cpu)", dir, m->qc.w_bits, m->qc.a_bits,
                        m->qc.kv_bits);
    if (tp_plan_make(&m->plan, c, m->quantized ? (m->qc.tp_blocks > 0 ? m->qc.tp_blocks : 1) : 0,
                     comm->tp, comm->rank) != FQ_OK)
        return fq_error_wrap("%s", dir);
    if (st_checkpoint_open(dir, &ck) != FQ_OK)
        return FQ_ERR;
    const tp_plan *p = &m->plan;
    int64_t V = c->vocab, d = c->hidden;
    const char *head = st_checkpoint_find(&ck, "lm_head.weight") ? "lm_head.weight"
                       : c->tie_embeddings                       ? "model.embed_tokens.weight"
                                                                 : "lm_head.weight";
    if (upload_bf16_slice(m, &ck, "model.embed_tokens.weight", V, d, 0, V, 0, d, 0, &m->embed) !=
            FQ_OK ||
        upload_f32_vec(m, &ck, "model.norm.weight", d, &m->final_norm) != FQ_OK ||
        upload_bf16_slice(m, &ck, head, V, d, p->vocab0 < V ? p->vocab0 : 0, p->vocab_real, 0, d,
                          p->vocab_shard - p->vocab_real, &m->lm_head) != FQ_OK)
        goto fail;
    if (m->quantized) {
        m->q = fq_calloc((size_t)c->n_layers, sizeof *m->q, "quantized layers");
        if (!m->q)
            goto fail;
        for (int i = 0; i < c->n_layers; i++)
            if (gpu_q_layer_load(m, &ck, i) != FQ_OK)
                goto fail;
    } else {
        m->fp = fq_calloc((size_t)c->n_layers, sizeof *m->fp, "layers");
        if (!m->fp)
            goto fail;
        for (int i = 0; i < c->n_layers; i++)
            if (fp_layer_load(m, &ck, i) != FQ_OK)
                goto fail;
    }
    if (rope_table_init(&rope, c, max_ctx) != FQ_OK ||
        gpu_model_upload_f32(m, &m->rope_cos, rope.cos, (size_t)max_ctx * (c->head_dim / 2),
                             "RoPE cos") != FQ_OK ||
        gpu_model_upload_f32(m, &m->rope_sin, rope.sin, (size_t)max_ctx * (c->head_dim / 2),
                             "RoPE sin") != FQ_OK ||
        scratch_alloc(m) != FQ_OK)
        goto fail;
    rope_table_free(&rope);
    st_checkpoint_close(&ck);
    return FQ_OK;
fail:
    rope_table_free(&rope);
    if (ck.files)
        st_checkpoint_close(&ck);
    gpu_model_free(m);
    return FQ_ERR;
}

void gpu_model_free(gpu_model *m)
{
    if (!m)
        return;
    if (m->fp)
        for (int i = 0; i < m->cfg.n_layers; i++)
            fp_layer_free(&m->fp[i]);
    if (m->q)
        for (int i = 0; i < m->cfg.n_layers; i++)
            gpu_q_layer_free(&m->q[i]);
    free(m->fp);
    free(m->q);
    void *p[] = {m->embed, m->final_norm, m->lm_head, m->rope_cos, m->rope_sin, m->x, m->a,
                 m->qb, m->kb, m->vb, m->att, m->gate, m->up, m->codes[0], m->codes[1],
                 m->codes[2], m->ascale[0], m->ascale[1], m->ascale[2], m->logits_part,
                 m->gathered, m->logits, m->ids_d, m->pos0_d, m->nll_d};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        fq_cuda_free(p[i]);
    memset(m, 0, sizeof *m);
}

int gpu_model_forward(gpu_model *m, const int32_t *ids, int B, int n, const int *pos0,
                      int all_logits, const float **logits)
{
    const llama_config *c = &m->cfg;
    const tp_plan *p = &m->plan;
    if (!ids || !pos0 || !logits || B < 1 || n < 1 || B > m->max_batch ||
        (size_t)B * n > (size_t)m->max_tokens)
        return fq_error(F ":gpu_model_forward: rank %d: batch %d of %d tokens (expected 1..%d "
                        "sequences and at most %d tokens per forward)", p->rank, B, n,
                        m->max_batch, m->max_tokens);
    for (int b = 0; b < B; b++)
        if (pos0[b] < 0 || pos0[b] + n > m->max_ctx)
            return fq_error(F ":gpu_model_forward: rank %d: sequence %d reaches position %d "
                            "(expected at most the context of %d)", p->rank, b, pos0[b] + n,
                            m->max_ctx);
    int N = B * n, rows = all_logits ? N : B;
    if (rows > m->max_logit_rows)
        return fq_error(F ":gpu_model_forward: rank %d: %d rows of logits (expected at most "
                        "%d)", p->rank, rows, m->max_logit_rows);
    if (llama_check_ids(c, ids, (size_t)N) != FQ_OK)
        return FQ_ERR;
    int32_t pos32[4096];
    if (B > 4096)
        return fq_error(F ":gpu_model_forward: batch %d (expected at most 4096)", B);
    for (int b = 0; b < B; b++)
        pos32[b] = pos0[b];
    fq_cuda_ctx *ctx = m->ctx;
    int d = c->hidden;
    if (rt_prof_mark(m->prof, RTP_START) != FQ_OK ||
        rt_upload(ctx, m->ids_d, ids, sizeof(int32_t) * (size_t)N) != FQ_OK ||
        rt_upload(ctx, m->pos0_d, pos32, sizeof(int32_t) * (size_t)B) != FQ_OK ||
        rt_embed_bf16(ctx, m->x, m->embed, m->ids_d, N, d) != FQ_OK ||
        rt_prof_mark(m->prof, RTP_EMBED) != FQ_OK)
        return FQ_ERR;
    for (int i = 0; i < c->n_layers; i++) {
        int rc = m->quantized ? gpu_q_layer_fwd(m, i, B, n, pos0)
                             : gpu_fp_layer_fwd(m, i, B, n, pos0);
        if (rc != FQ_OK)
            return fq_error_wrap("rank %d: layer %d", p->rank, i);
    }
    /* the rows whose logits are wanted: all tokens, or each sequence's last */
    if (all_logits || n == 1) { /* the wanted rows are all of x */
        if (rt_rmsnorm_bf16(ctx, m->a, m->x, m->final_norm, N, d, (float)c->rms_eps) != FQ_OK)
            return FQ_ERR;
    } else {
        for (int b = 0; b < B; b++)
            if (rt_rmsnorm_bf16(ctx, m->a + (size_t)b * d, m->x + ((size_t)b * n + n - 1) * d,
                                m->final_norm, 1, d, (float)c->rms_eps) != FQ_OK)
                return FQ_ERR;
    }
    int Vs = p->vocab_shard;
    if (rt_linear_bf16_f32(ctx, p->tp == 1 ? m->logits : m->logits_part, m->a, m->lm_head, rows,
                           d, Vs) != FQ_OK)
        return FQ_ERR;
    if (p->tp > 1) {
        if (tp_allgather_f32(m->comm, ctx, m->logits_part, m->gathered, (size_t)rows * Vs) !=
                FQ_OK ||
            rt_gather_vocab(ctx, m->logits, m->gathered, p->tp, rows, Vs, c->vocab) != FQ_OK)
            return FQ_ERR;
    }
    *logits = m->logits;
    return rt_prof_mark(m->prof, RTP_HEAD);
}

#else /* built without CUDA */

int gpu_model_load(gpu_model *m, const char *dir, fq_cuda_ctx *ctx, tp_comm *comm,
                   int max_batch, int max_ctx, int max_tokens, int max_logit_rows)
{
    (void)dir, (void)ctx, (void)comm, (void)max_batch, (void)max_ctx, (void)max_tokens;
    (void)max_logit_rows;
    if (m)
        memset(m, 0, sizeof *m);
    return fq_error(F ":gpu_model_load: flatq was built without the CUDA backend (expected a "
                    "build with nvcc for --device cuda)");
}

void gpu_model_free(gpu_model *m)
{
    (void)m;
}

int gpu_model_forward(gpu_model *m, const int32_t *ids, int B, int n, const int *pos0,
                      int all_logits, const float **logits)
{
    (void)m, (void)ids, (void)B, (void)n, (void)pos0, (void)all_logits, (void)logits;
    return fq_error(F ":gpu_model_forward: flatq was built without the CUDA backend");
}

#endif
