/* llama_model.c — load a Hugging Face LLaMA checkpoint into fp32 and run it (FP).
 *
 * Tensor names follow transformers' LlamaForCausalLM. Every shape is checked against
 * config.json before use, so a checkpoint that disagrees with its config is refused with
 * the tensor named, never read out of bounds.
 */
#include "llama_model.h"
#include "llama_capture.h"
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t off = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (off < n)
        snprintf(buf + off, n - off, "]");
}

int llama_tensor_load(const st_checkpoint *ck, const char *name, int ndim,
                      const int64_t *shape, real **out)
{
    *out = NULL;
    const st_tensor *t = st_checkpoint_find(ck, name);
    if (!t)
        return fq_error("%s: tensor '%s' is missing (expected by config.json)", ck->dir, name);
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == shape[i];
    if (!ok) {
        char got[128], want[128];
        shape_str(got, sizeof got, t->ndim, t->shape);
        shape_str(want, sizeof want, ndim, shape);
        return fq_error("%s: tensor '%s' has shape %s (expected %s from config.json)", ck->dir,
                        name, got, want);
    }
    float *tmp = fq_malloc(sizeof(float) * t->nelem, name);
    if (!tmp)
        return FQ_ERR;
    if (st_tensor_to_f32(t, tmp, t->nelem) != FQ_OK) {
        free(tmp);
        return fq_error_wrap("%s: tensor '%s'", ck->dir, name);
    }
#ifdef FQ_REAL_F64
    real *r = fq_malloc(sizeof(real) * t->nelem, name);
    if (!r) {
        free(tmp);
        return FQ_ERR;
    }
    real_from_f32(tmp, t->nelem, r);
    free(tmp);
    *out = r;
#else
    *out = tmp;
#endif
    return FQ_OK;
}

int llama_layer_load(const st_checkpoint *ck, const llama_config *c, int i, llama_layer *l)
{
    memset(l, 0, sizeof *l);
    int64_t d = c->hidden, f = c->intermediate, qd = (int64_t)c->n_heads * c->head_dim,
            kd = (int64_t)c->n_kv_heads * c->head_dim;
    struct { const char *suffix; real **dst; int ndim; int64_t s0, s1; } parts[] = {
        {"input_layernorm.weight", &l->attn_norm, 1, d, 0},
        {"self_attn.q_proj.weight", &l->wq, 2, qd, d},
        {"self_attn.k_proj.weight", &l->wk, 2, kd, d},
        {"self_attn.v_proj.weight", &l->wv, 2, kd, d},
        {"self_attn.o_proj.weight", &l->wo, 2, d, qd},
        {"post_attention_layernorm.weight", &l->mlp_norm, 1, d, 0},
        {"mlp.gate_proj.weight", &l->wgate, 2, f, d},
        {"mlp.up_proj.weight", &l->wup, 2, f, d},
        {"mlp.down_proj.weight", &l->wdown, 2, d, f},
    };
    for (size_t p = 0; p < sizeof parts / sizeof parts[0]; p++) {
        char name[256];
        snprintf(name, sizeof name, "model.layers.%d.%s", i, parts[p].suffix);
        int64_t shape[2] = {parts[p].s0, parts[p].s1};
        if (llama_tensor_load(ck, name, parts[p].ndim, shape, parts[p].dst) != FQ_OK) {
            llama_layer_free(l);
            return FQ_ERR;
        }
    }
    return FQ_OK;
}

void llama_layer_free(llama_layer *l)
{
    real *ptrs[] = {l->attn_norm, l->wq, l->wk, l->wv, l->wo, l->mlp_norm, l->wgate, l->wup, l->wdown};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        free(ptrs[i]);
    memset(l, 0, sizeof *l);
}

int llama_model_load(const char *dir, llama_model *m)
{
    memset(m, 0, sizeof *m);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (llama_config_load(path, &m->cfg) != FQ_OK)
        return FQ_ERR;
    if (st_checkpoint_open(dir, &m->ck) != FQ_OK)
        return FQ_ERR;
    const llama_config *c = &m->cfg;
    int64_t emb[2] = {c->vocab, c->hidden}, nrm[1] = {c->hidden};
    if (llama_tensor_load(&m->ck, "model.embed_tokens.weight", 2, emb, &m->embed) != FQ_OK ||
        llama_tensor_load(&m->ck, "model.norm.weight", 1, nrm, &m->final_norm) != FQ_OK)
        goto fail;
    if (c->tie_embeddings && !st_checkpoint_find(&m->ck, "lm_head.weight"))
        m->lm_head = m->embed;
    else if (llama_tensor_load(&m->ck, "lm_head.weight", 2, emb, &m->lm_head) != FQ_OK)
        goto fail;
    m->layers = fq_calloc((size_t)c->n_layers, sizeof *m->layers, "layers");
    if (!m->layers)
        goto fail;
    for (int i = 0; i < c->n_layers; i++)
        if (llama_layer_load(&m->ck, c, i, &m->layers[i]) != FQ_OK)
            goto fail;
    return FQ_OK;
fail:
    llama_model_free(m);
    return FQ_ERR;
}

void llama_model_free(llama_model *m)
{
    if (m->layers)
        for (int i = 0; i < m->cfg.n_layers; i++)
            llama_layer_free(&m->layers[i]);
    free(m->layers);
    if (m->lm_head != m->embed)
        free(m->lm_head);
    free(m->embed);
    free(m->final_norm);
    if (m->ck.files)
        st_checkpoint_close(&m->ck);
    memset(m, 0, sizeof *m);
}

int llama_scratch_init(llama_scratch *w, const llama_config *c, int b, int s)
{
    memset(w, 0, sizeof *w);
    size_t n = (size_t)b * s;
    size_t qd = (size_t)c->n_heads * c->head_dim, kd = (size_t)c->n_kv_heads * c->head_dim;
    w->b = b;
    w->s = s;
    w->a = fq_malloc(sizeof(real) * n * (qd > (size_t)c->hidden ? qd : (size_t)c->hidden), "scratch");
    w->q = fq_malloc(sizeof(real) * n * qd, "scratch q");
    w->k = fq_malloc(sizeof(real) * n * kd, "scratch k");
    w->v = fq_malloc(sizeof(real) * n * kd, "scratch v");
    w->att = fq_malloc(sizeof(real) * n * qd, "scratch attention");
    w->gate = fq_malloc(sizeof(real) * n * c->intermediate, "scratch gate");
    w->up = fq_malloc(sizeof(real) * n * c->intermediate, "scratch up");
    w->scores = fq_malloc(sizeof(real) * (size_t)s * s, "scratch scores");
    if (!w->a || !w->q || !w->k || !w->v || !w->att || !w->gate || !w->up || !w->scores) {
        llama_scratch_free(w);
        return FQ_ERR;
    }
    return FQ_OK;
}

void llama_scratch_free(llama_scratch *w)
{
    real *ptrs[] = {w->a, w->q, w->k, w->v, w->att, w->gate, w->up, w->scores};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        free(ptrs[i]);
    memset(w, 0, sizeof *w);
}

void llama_layer_fwd(real *x, const llama_layer *l, const llama_config *c, const rope_table *rope,
                     int b, int s, llama_scratch *w)
{
    llama_layer_fwd_capture(x, l, c, rope, b, s, w, NULL);
}

int llama_check_ids(const llama_config *c, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab)
            return fq_error("token id %d at position %zu is outside the vocabulary (expected 0..%d)",
                            ids[i], i, c->vocab - 1);
    return FQ_OK;
}

void llama_embed_fwd(real *x, const real *embed, int d, const int32_t *ids, int n)
{
    for (int i = 0; i < n; i++)
        memcpy(x + (size_t)i * d, embed + (size_t)ids[i] * d, sizeof(real) * d);
}

void llama_head_fwd(real *logits, real *x, const real *final_norm, const real *lm_head,
                    const llama_config *c, int n)
{
    rmsnorm_fwd(x, NULL, x, final_norm, n, c->hidden, (real)c->rms_eps);
    linear_fwd(logits, x, lm_head, n, c->hidden, c->vocab);
}

int llama_runner_init(llama_runner *r, const llama_model *m, int seqlen)
{
    memset(r, 0, sizeof *r);
    r->m = m;
    if (rope_table_init(&r->rope, &m->cfg, seqlen) != FQ_OK ||
        llama_scratch_init(&r->w, &m->cfg, 1, seqlen) != FQ_OK ||
        !(r->x = fq_malloc(sizeof(real) * (size_t)seqlen * m->cfg.hidden, "activations"))) {
        llama_runner_free(r);
        return FQ_ERR;
    }
    return FQ_OK;
}

void llama_runner_free(llama_runner *r)
{
    rope_table_free(&r->rope);
    llama_scratch_free(&r->w);
    free(r->x);
    memset(r, 0, sizeof *r);
}

int llama_window_logits(void *ctx, const int32_t *ids, int s, real *logits)
{
    llama_runner *r = ctx;
    const llama_model *m = r->m;
    if (s > r->rope.seqlen || s > r->w.s)
        return fq_error("window of %d tokens exceeds the runner's %d", s, r->w.s);
    if (llama_check_ids(&m->cfg, ids, (size_t)s) != FQ_OK)
        return FQ_ERR;
    llama_embed_fwd(r->x, m->embed, m->cfg.hidden, ids, s);
    for (int i = 0; i < m->cfg.n_layers; i++)
        llama_layer_fwd(r->x, &m->layers[i], &m->cfg, &r->rope, 1, s, &r->w);
    llama_head_fwd(logits, r->x, m->final_norm, m->lm_head, &m->cfg, s);
    return FQ_OK;
}
