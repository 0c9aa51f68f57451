/* llama_capture.h — one FP decoder layer forward that also hands back the inputs of its
 * linear layers, for the difficulty report (flatq inspect) and anything else that needs
 * to look at what each projection sees.
 *
 * llama_layer_fwd is this function with cap = NULL: one op sequence for both, and the
 * copies cost nothing when nobody asks for them.
 */
#ifndef FQ_LLAMA_CAPTURE_H
#define FQ_LLAMA_CAPTURE_H

#include "llama_model.h"

/* Where the captured inputs go (each [b·s, width], caller-owned; any may be NULL). */
typedef struct {
    real *attn_in; /* RMSNorm(x; γ1): the input of q_proj, k_proj, v_proj   [n, d]    */
    real *o_in;    /* attention output: the input of o_proj                  [n, h·dh] */
    real *mlp_in;  /* RMSNorm(x2; γ2): the input of gate_proj and up_proj    [n, d]    */
    real *down_in; /* silu(gate)·up: the input of down_proj                  [n, f]    */
} llama_layer_inputs;

/* x [b, s, d] ← layer(x) in place, filling cap (may be NULL). */
void llama_layer_fwd_capture(real *x, const llama_layer *l, const llama_config *c,
                             const rope_table *rope, int b, int s, llama_scratch *w,
                             const llama_layer_inputs *cap);

#endif
