/* llama_config.c — read a Hugging Face config.json into llama_config.
 *
 * The rule is "refuse rather than guess": every field that changes the math of a LLaMA
 * forward pass is either understood or an error. A RoPE scaling type we do not
 * implement (linear, dynamic, yarn, ...), a non-SiLU activation, biases, or another
 * architecture would otherwise run and give plausible but wrong numbers. Fields that do
 * not change the math (dtype, use_cache, initializer_range, ...) are ignored.
 *
 * Two layouts are accepted: transformers 4 (top-level rope_theta, rope_scaling) and
 * transformers 5 (rope_parameters holding rope_theta and the scaling). When both are
 * present they must agree. Optional fields take transformers' LlamaConfig defaults
 * (num_key_value_heads = num_attention_heads, max_position_embeddings 2048,
 * rms_norm_eps 1e-6, rope_theta 10000, untied embeddings); the shape fields
 * (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, vocab_size)
 * are required, since a default there would describe some other model.
 */
#include "llama_config.h"
#include "error.h"
#include "msg_escape.h"

#include <jansson.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CONFIG_MAX_BYTES (16u << 20)

/* A positive int field. `required`: absent/null is an error; else *out is untouched. */
static int get_pos_int(json_t *obj, const char *key, const char *where, const char *label,
                       int required, int *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required)
            return fq_error("%s: missing '%s%s' (expected a positive integer)", label,
                            where, key);
        return FQ_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
        json_integer_value(v) > INT_MAX)
        return fq_error("%s: '%s%s' is not a positive integer (expected an integer in "
                        "1..%d)", label, where, key, INT_MAX);
    *out = (int)json_integer_value(v);
    return FQ_OK;
}

/* A finite positive number field (integer or real); absent leaves *out as is. */
static int get_pos_num(json_t *obj, const char *key, const char *where, const char *label,
                       int required, double *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required)
            return fq_error("%s: missing '%s%s' (expected a finite number > 0)", label,
                            where, key);
        return FQ_OK;
    }
    double d = json_is_number(v) ? json_number_value(v) : NAN;
    if (!json_is_number(v) || !isfinite(d) || d <= 0)
        return fq_error("%s: '%s%s' is not a finite positive number (expected a finite "
                        "number > 0)", label, where, key);
    *out = d;
    return FQ_OK;
}

/* bos/eos: an id, or a list whose first element is the id; -1 when absent. */
static int get_token_id(json_t *root, const char *key, int vocab, const char *label,
                        int *out)
{
    *out = -1;
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return FQ_OK;
    if (json_is_array(v)) {
        if (json_array_size(v) == 0)
            return FQ_OK;
        v = json_array_get(v, 0);
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= vocab)
        return fq_error("%s: '%s' is not a token id (expected an integer in 0..%d, or a "
                        "list of them)", label, key, vocab - 1);
    *out = (int)json_integer_value(v);
    return FQ_OK;
}

static int check_architecture(json_t *root, const char *label)
{
    json_t *arch = json_object_get(root, "architectures");
    json_t *mt = json_object_get(root, "model_type");
    if (arch && !json_is_null(arch)) {
        if (!json_is_array(arch) || json_array_size(arch) == 0)
            return fq_error("%s: 'architectures' is not a non-empty list (expected "
                            "[\"LlamaForCausalLM\"])", label);
        size_t i;
        json_t *a;
        json_array_foreach(arch, i, a) {
            if (!json_is_string(a))
                return fq_error("%s: 'architectures[%zu]' is not a string (expected "
                                "\"LlamaForCausalLM\")", label, i);
            if (strcmp(json_string_value(a), "LlamaForCausalLM") != 0) {
                char shown[96];
                return fq_error("%s: architecture '%s' is not supported (expected one of: "
                                "LlamaForCausalLM)", label,
                                fq_msg_escape(json_string_value(a), shown, sizeof shown));
            }
        }
    }
    if (mt && !json_is_null(mt)) {
        if (!json_is_string(mt))
            return fq_error("%s: 'model_type' is not a string (expected \"llama\")", label);
        if (strcmp(json_string_value(mt), "llama") != 0) {
            char shown[96];
            return fq_error("%s: model_type '%s' is not supported (expected one of: llama)",
                            label, fq_msg_escape(json_string_value(mt), shown, sizeof shown));
        }
    }
    if ((!mt || json_is_null(mt)) && (!arch || json_is_null(arch)))
        return fq_error("%s: neither 'architectures' nor 'model_type' is given (expected "
                        "architectures [\"LlamaForCausalLM\"] or model_type \"llama\")",
                        label);
    return FQ_OK;
}

/* Fields that would change the forward pass if they held anything but the LLaMA value. */
static int check_llama_math(json_t *root, const char *label)
{
    json_t *act = json_object_get(root, "hidden_act");
    if (act && !json_is_null(act) &&
        (!json_is_string(act) || strcmp(json_string_value(act), "silu") != 0))
        return fq_error("%s: 'hidden_act' is not \"silu\" (expected the SwiGLU MLP of "
                        "LLaMA)", label);
    static const char *const no_bias[] = {"attention_bias", "mlp_bias"};
    for (size_t i = 0; i < 2; i++) {
        json_t *b = json_object_get(root, no_bias[i]);
        if (b && !json_is_null(b) && !json_is_false(b))
            return fq_error("%s: '%s' is not false (expected LLaMA layers without biases)",
                            label, no_bias[i]);
    }
    json_t *tie = json_object_get(root, "tie_word_embeddings");
    if (tie && !json_is_null(tie) && !json_is_boolean(tie))
        return fq_error("%s: 'tie_word_embeddings' is not a boolean (expected true or "
                        "false)", label);
    return FQ_OK;
}

/* One RoPE description (rope_scaling or rope_parameters) as read from the file. */
typedef struct {
    int present;
    rope_kind kind;
    double theta; /* 0 when the object has none */
    double factor, low, high;
    int orig_max;
} rope_desc;

static int parse_rope_object(json_t *o, const char *field, const char *label, rope_desc *r)
{
    memset(r, 0, sizeof *r);
    if (!o || json_is_null(o))
        return FQ_OK;
    if (!json_is_object(o))
        return fq_error("%s: '%s' is not an object (expected {\"rope_type\": \"default\" "
                        "or \"llama3\", ...} or null)", label, field);
    r->present = 1;
    char where[64];
    snprintf(where, sizeof where, "%s.", field);
    if (get_pos_num(o, "rope_theta", where, label, 0, &r->theta) != FQ_OK)
        return FQ_ERR;
    json_t *t = json_object_get(o, "rope_type");
    if (!t || json_is_null(t))
        t = json_object_get(o, "type");
    const char *type;
    if (!t || json_is_null(t)) {
        /* Untyped is "default" only when nothing else is in it: an object with scaling
         * fields but no type must not be silently read as unscaled. */
        size_t known = json_object_get(o, "rope_theta") ? 1 : 0;
        if (json_object_size(o) != known)
            return fq_error("%s: '%s' has no rope_type (expected rope_type \"default\" or "
                            "\"llama3\")", label, field);
        type = "default";
    } else if (!json_is_string(t)) {
        return fq_error("%s: '%s.rope_type' is not a string (expected \"default\" or "
                        "\"llama3\")", label, field);
    } else {
        type = json_string_value(t);
    }
    if (strcmp(type, "default") == 0) {
        r->kind = ROPE_DEFAULT;
        return FQ_OK;
    }
    if (strcmp(type, "llama3") != 0) {
        char shown[64];
        return fq_error("%s: %s.rope_type '%s' is not supported (expected one of: default, "
                        "llama3)", label, field, fq_msg_escape(type, shown, sizeof shown));
    }
    r->kind = ROPE_LLAMA3;
    if (get_pos_num(o, "factor", where, label, 1, &r->factor) ||
        get_pos_num(o, "low_freq_factor", where, label, 1, &r->low) ||
        get_pos_num(o, "high_freq_factor", where, label, 1, &r->high) ||
        get_pos_int(o, "original_max_position_embeddings", where, label, 1, &r->orig_max))
        return FQ_ERR;
    if (r->high <= r->low)
        return fq_error("%s: '%shigh_freq_factor' %g is not above low_freq_factor %g "
                        "(expected high_freq_factor > low_freq_factor)", label, where,
                        r->high, r->low);
    return FQ_OK;
}

static int same_rope(const rope_desc *a, const rope_desc *b)
{
    if (a->kind != b->kind)
        return 0;
    return a->kind == ROPE_DEFAULT ||
           (a->factor == b->factor && a->low == b->low && a->high == b->high &&
            a->orig_max == b->orig_max);
}

static int parse_rope(json_t *root, const char *label, llama_config *c)
{
    rope_desc sc, par;
    if (parse_rope_object(json_object_get(root, "rope_scaling"), "rope_scaling", label,
                          &sc) != FQ_OK ||
        parse_rope_object(json_object_get(root, "rope_parameters"), "rope_parameters",
                          label, &par) != FQ_OK)
        return FQ_ERR;
    if (sc.present && par.present && !same_rope(&sc, &par))
        return fq_error("%s: 'rope_scaling' and 'rope_parameters' describe different RoPE "
                        "scaling (expected one, or both equal)", label);
    const rope_desc *r = par.present ? &par : &sc;
    c->rope_type = r->kind;
    if (r->kind == ROPE_LLAMA3) {
        c->rope_factor = r->factor;
        c->rope_low_freq_factor = r->low;
        c->rope_high_freq_factor = r->high;
        c->rope_original_max_pos = r->orig_max;
    }
    double top = 0;
    if (get_pos_num(root, "rope_theta", "", label, 0, &top) != FQ_OK)
        return FQ_ERR;
    double inner = par.theta ? par.theta : sc.theta;
    if (top && inner && top != inner)
        return fq_error("%s: 'rope_theta' %g and 'rope_parameters.rope_theta' %g differ "
                        "(expected equal values)", label, top, inner);
    c->rope_theta = top ? top : inner ? inner : 10000.0;
    return FQ_OK;
}

static int fill_config(json_t *root, const char *label, llama_config *c)
{
    if (!json_is_object(root))
        return fq_error("%s: top level is not a JSON object (expected a config.json "
                        "object)", label);
    if (check_architecture(root, label) != FQ_OK || check_llama_math(root, label) != FQ_OK)
        return FQ_ERR;
    if (get_pos_int(root, "hidden_size", "", label, 1, &c->hidden) ||
        get_pos_int(root, "intermediate_size", "", label, 1, &c->intermediate) ||
        get_pos_int(root, "num_hidden_layers", "", label, 1, &c->n_layers) ||
        get_pos_int(root, "num_attention_heads", "", label, 1, &c->n_heads) ||
        get_pos_int(root, "vocab_size", "", label, 1, &c->vocab))
        return FQ_ERR;
    c->n_kv_heads = c->n_heads;
    c->max_pos = 2048;
    c->rms_eps = 1e-6;
    c->head_dim = 0;
    if (get_pos_int(root, "num_key_value_heads", "", label, 0, &c->n_kv_heads) ||
        get_pos_int(root, "max_position_embeddings", "", label, 0, &c->max_pos) ||
        get_pos_int(root, "head_dim", "", label, 0, &c->head_dim) ||
        get_pos_num(root, "rms_norm_eps", "", label, 0, &c->rms_eps))
        return FQ_ERR;
    if (c->head_dim == 0) {
        if (c->hidden % c->n_heads != 0)
            return fq_error("%s: 'hidden_size' %d is not a multiple of "
                            "'num_attention_heads' %d (expected divisible, or an explicit "
                            "'head_dim')", label, c->hidden, c->n_heads);
        c->head_dim = c->hidden / c->n_heads;
    }
    if (c->n_heads % c->n_kv_heads != 0)
        return fq_error("%s: 'num_attention_heads' %d is not a multiple of "
                        "'num_key_value_heads' %d (expected divisible, for grouped-query "
                        "attention)", label, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0)
        return fq_error("%s: head_dim %d is odd (expected an even head size for RoPE)",
                        label, c->head_dim);
    c->tie_embeddings = json_is_true(json_object_get(root, "tie_word_embeddings"));
    if (parse_rope(root, label, c) != FQ_OK)
        return FQ_ERR;
    if (get_token_id(root, "bos_token_id", c->vocab, label, &c->bos_id) ||
        get_token_id(root, "eos_token_id", c->vocab, label, &c->eos_id))
        return FQ_ERR;
    return FQ_OK;
}

int llama_config_parse(const char *json, size_t len, const char *label, llama_config *c)
{
    if (!c)
        return fq_error("llama_config_parse: output is NULL (expected a llama_config)");
    memset(c, 0, sizeof *c);
    c->bos_id = c->eos_id = -1;
    if (!label)
        label = "config.json";
    if (!json && len)
        return fq_error("%s: text is NULL (expected %zu bytes of JSON)", label, len);
    json_error_t jerr;
    json_t *root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        char why[160];
        return fq_error("%s:%d:%d: invalid JSON: %s (expected valid JSON)", label,
                        jerr.line, jerr.column, fq_msg_escape(jerr.text, why, sizeof why));
    }
    int rc = fill_config(root, label, c);
    json_decref(root);
    if (rc != FQ_OK) {
        memset(c, 0, sizeof *c);
        c->bos_id = c->eos_id = -1;
    }
    return rc;
}

int llama_config_load(const char *path, llama_config *c)
{
    if (!c)
        return fq_error("llama_config_load: output is NULL (expected a llama_config)");
    memset(c, 0, sizeof *c);
    c->bos_id = c->eos_id = -1;
    if (!path || !path[0])
        return fq_error("llama_config_load: path is empty (expected a model directory or "
                        "config.json)");
    size_t n = strlen(path);
    char *file = fq_malloc(n + sizeof "/config.json", "config path");
    if (!file)
        return FQ_ERR;
    struct stat st;
    if (n >= 5 && strcmp(path + n - 5, ".json") == 0)
        memcpy(file, path, n + 1);
    else
        snprintf(file, n + sizeof "/config.json", "%s%sconfig.json", path,
                 path[n - 1] == '/' ? "" : "/");
    FILE *fp = fopen(file, "rb");
    if (!fp) {
        int e = errno;
        fq_error("%s: cannot open: %s (expected a readable config.json)", file, strerror(e));
        free(file);
        return FQ_ERR;
    }
    int rc = FQ_ERR;
    char *text = NULL;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode) ||
        (uint64_t)st.st_size > CONFIG_MAX_BYTES) {
        fq_error("%s: not a regular file of at most %u bytes (expected a config.json)",
                 file, CONFIG_MAX_BYTES);
        goto out;
    }
    text = fq_malloc((size_t)st.st_size + 1, "config.json text");
    if (!text)
        goto out;
    size_t got = fread(text, 1, (size_t)st.st_size, fp);
    if (got != (size_t)st.st_size) {
        fq_error("%s: short read (%zu of %lld bytes) (expected the whole file)", file, got,
                 (long long)st.st_size);
        goto out;
    }
    rc = llama_config_parse(text, got, file, c);
out:
    fclose(fp);
    free(text);
    free(file);
    return rc;
}
