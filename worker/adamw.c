/* adamw.c — AdamW over parameter groups and the cosine schedule (adamw.h). */
#include "adamw.h"

#include <math.h>

#include "error.h"

adamw_config adamw_defaults(void)
{
    adamw_config c = {0.9, 0.999, 1e-8, 0.01};
    return c;
}

int adamw_step(adamw_group *groups, int ngroups, const adamw_config *cfg, long step,
               const real *lr)
{
    if (!groups || !cfg || !lr || ngroups <= 0)
        return fq_error("worker/adamw.c:adamw_step: no groups or NULL config/lr (expected "
                        "at least one group and a config)");
    if (!(cfg->beta1 >= 0 && cfg->beta1 < 1) || !(cfg->beta2 >= 0 && cfg->beta2 < 1) ||
        !(cfg->eps > 0) || !(cfg->weight_decay >= 0))
        return fq_error("worker/adamw.c:adamw_step: config beta1 %g, beta2 %g, eps %g, weight "
                        "decay %g (expected betas in [0, 1), eps > 0, decay >= 0)", cfg->beta1,
                        cfg->beta2, cfg->eps, cfg->weight_decay);
    if (step < 1)
        return fq_error("worker/adamw.c:adamw_step: step %ld (expected 1, 2, ...)", step);
    for (int g = 0; g < ngroups; g++) {
        const adamw_group *G = &groups[g];
        const char *name = G->name ? G->name : "?";
        if (!G->param || !G->grad || !G->m || !G->v)
            return fq_error("worker/adamw.c:adamw_step: group %d (%s) has a NULL array "
                            "(expected param, grad, m and v)", g, name);
        if (!isfinite(lr[g]) || lr[g] < 0)
            return fq_error("worker/adamw.c:adamw_step: group %d (%s) learning rate %g "
                            "(expected finite and >= 0)", g, name, (double)lr[g]);
        for (size_t i = 0; i < G->n; i++)
            if (!isfinite(G->grad[i]))
                return fq_error("worker/adamw.c:adamw_step: group %s element %zu has "
                                "gradient %g at step %ld (expected finite)", name, i,
                                (double)G->grad[i], step);
    }
    /* Bias corrections in double: β^k for large k is where fp32 would lose digits. */
    const double bc1 = 1.0 - pow(cfg->beta1, (double)step);
    const double bc2 = 1.0 - pow(cfg->beta2, (double)step);
    const real sqrt_bc2 = (real)sqrt(bc2);
    const real b1 = (real)cfg->beta1, b2 = (real)cfg->beta2, eps = (real)cfg->eps;
    const real one_b1 = (real)(1.0 - cfg->beta1), one_b2 = (real)(1.0 - cfg->beta2);
    for (int g = 0; g < ngroups; g++) {
        adamw_group *G = &groups[g];
        const real eta = lr[g];
        const real step_size = (real)((double)eta / bc1);
        const real decay = (real)(1.0 - (double)eta * cfg->weight_decay);
        for (size_t i = 0; i < G->n; i++) {
            real gr = G->grad[i];
            G->param[i] *= decay;
            G->m[i] = b1 * G->m[i] + one_b1 * gr;
            G->v[i] = b2 * G->v[i] + one_b2 * gr * gr;
            real denom = sqrt(G->v[i]) / sqrt_bc2 + eps;
            G->param[i] -= step_size * G->m[i] / denom;
        }
    }
    return FQ_OK;
}

real lr_cosine(real lr0, real lr_min, long t, long total, long warmup, real warmup_start)
{
    if (total <= 0)
        return lr0;
    if (t < 0)
        t = 0;
    if (t > total)
        t = total;
    const double pi = 3.14159265358979323846;
    double eta = (double)lr_min +
                 ((double)lr0 - (double)lr_min) * (1.0 + cos(pi * (double)t / (double)total)) / 2.0;
    if (warmup > 0) {
        double frac = t < warmup ? (double)t / (double)warmup : 1.0;
        eta *= (double)warmup_start + (1.0 - (double)warmup_start) * frac;
    }
    return (real)eta;
}
