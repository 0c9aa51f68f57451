/* llama_capture.h — one FP decoder layer forward that also hands back the inputs of its
 * linear layers, for the difficulty report (flatq inspect) and anything else that needs
 * to look at what each projection sees.
 *
 * It runs exactly the op sequence of llama_layer_fwd (same calls, same order, so the
 * output is bitwise identical; a unit test holds it to that) and copies four matrices out
 * on the way. A separate function rather than a flag on llama_layer_fwd keeps the hot
 * evaluation path free of copies and of a branch per op.
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

/* x [b, s, d] ← layer(x) in place, as llama_layer_fwd, filling cap. */
void llama_layer_fwd_capture(real *x, const llama_layer *l, const llama_config *c,
                             const rope_table *rope, int b, int s, llama_scratch *w,
                             const llama_layer_inputs *cap);

#endif
