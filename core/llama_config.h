/* llama_config.h — the model shape from a Hugging Face config.json.
 *
 * Accepted: "architectures": ["LlamaForCausalLM"] (or model_type "llama") with GQA,
 * tied or untied embeddings, rope_theta (top level or in rope_parameters), rms_norm_eps,
 * head_dim, and rope_scaling/rope_parameters of type "default" or "llama3" (LLaMA-3.1).
 * Anything else is refused naming the architecture / field and what is supported.
 */
#ifndef FQ_LLAMA_CONFIG_H
#define FQ_LLAMA_CONFIG_H

#include <stddef.h>

typedef enum { ROPE_DEFAULT = 0, ROPE_LLAMA3 = 1 } rope_kind;

typedef struct {
    int hidden;        /* d */
    int intermediate;  /* f */
    int n_layers;
    int n_heads;       /* h */
    int n_kv_heads;    /* g */
    int head_dim;      /* dh (config head_dim, else hidden / n_heads) */
    int vocab;
    int max_pos;
    double rms_eps;
    double rope_theta;
    int tie_embeddings;
    int bos_id;        /* -1 when absent */
    int eos_id;        /* -1 when absent */
    rope_kind rope_type;
    /* llama3 scaling (rope_type == ROPE_LLAMA3) */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;
} llama_config;

/* Parse and validate dir/config.json (or a file path ending in .json). */
int llama_config_load(const char *path, llama_config *c);
/* Parse from a JSON string; `label` names the source in errors. */
int llama_config_parse(const char *json, size_t len, const char *label, llama_config *c);

#endif
