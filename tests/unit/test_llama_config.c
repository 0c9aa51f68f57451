/* test_llama_config.c — config.json parsing: the two bundled models (values from
 * shared/data/SOURCES.md), LLaMA-3.1 rope scaling in both transformers layouts, and
 * configs that must be refused with a one-line message naming the file and field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "llama_config.h"
#include "st_test_util.h"

static int parse(const char *json, llama_config *c)
{
    fq_error_clear();
    return llama_config_parse(json, strlen(json), "config.json", c);
}

static void assert_msg_has(const char *needle)
{
    const char *m = fq_errmsg();
    if (!strstr(m, needle))
        fail_msg("error message \"%s\" lacks \"%s\"", m, needle);
    assert_null(strchr(m, '\n'));
    assert_true(strncmp(m, "config.json", 11) == 0);
}

static void test_stories260k_config(void **state)
{
    (void)state;
    const char *dir = tu_data("models/stories260K-hf", "stories260K config test");
    if (!dir)
        skip();
    llama_config c;
    assert_int_equal(llama_config_load(dir, &c), FQ_OK);
    assert_int_equal(c.hidden, 64);
    assert_int_equal(c.intermediate, 172);
    assert_int_equal(c.n_layers, 5);
    assert_int_equal(c.n_heads, 8);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.head_dim, 8);
    assert_int_equal(c.vocab, 512);
    assert_int_equal(c.max_pos, 512);
    assert_true(c.rms_eps == 1e-5);
    assert_true(c.rope_theta == 10000.0);
    assert_int_equal(c.tie_embeddings, 1);
    assert_int_equal(c.bos_id, 1);
    assert_int_equal(c.eos_id, 2);
    assert_int_equal(c.rope_type, ROPE_DEFAULT);
}

static void test_flatq16m_config_by_file_path(void **state)
{
    (void)state;
    const char *p = tu_data("models/flatq-llama-16m/config.json", "flatq-llama-16m config test");
    if (!p)
        skip();
    llama_config c;
    assert_int_equal(llama_config_load(p, &c), FQ_OK);
    assert_int_equal(c.hidden, 384);
    assert_int_equal(c.intermediate, 1024);
    assert_int_equal(c.n_layers, 6);
    assert_int_equal(c.n_heads, 6);
    assert_int_equal(c.n_kv_heads, 2);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.vocab, 8192);
    assert_int_equal(c.max_pos, 2048);
    assert_true(c.rms_eps == 1e-5);
    assert_true(c.rope_theta == 500000.0);
    assert_int_equal(c.tie_embeddings, 0);
    assert_int_equal(c.bos_id, 8190);
    assert_int_equal(c.eos_id, 8191);
    assert_int_equal(c.rope_type, ROPE_DEFAULT);
}

/* The shape of a LLaMA-3.1-8B config (transformers 4 layout). */
#define L31_HEAD                                                                        \
    "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\","               \
    "\"hidden_size\":4096,\"intermediate_size\":14336,\"num_hidden_layers\":32,"        \
    "\"num_attention_heads\":32,\"num_key_value_heads\":8,\"vocab_size\":128256,"       \
    "\"max_position_embeddings\":131072,\"rms_norm_eps\":1e-05,"                        \
    "\"bos_token_id\":128000,\"eos_token_id\":[128001,128008,128009],"
#define L31_SCALING                                                                     \
    "{\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"                 \
    "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"}"

static void assert_llama31(const llama_config *c)
{
    assert_int_equal(c->head_dim, 128); /* hidden / heads: no head_dim given */
    assert_int_equal(c->n_kv_heads, 8);
    assert_int_equal(c->bos_id, 128000);
    assert_int_equal(c->eos_id, 128001); /* first of the list */
    assert_int_equal(c->tie_embeddings, 0);
    assert_true(c->rope_theta == 500000.0);
    assert_int_equal(c->rope_type, ROPE_LLAMA3);
    assert_true(c->rope_factor == 8.0);
    assert_true(c->rope_low_freq_factor == 1.0);
    assert_true(c->rope_high_freq_factor == 4.0);
    assert_int_equal(c->rope_original_max_pos, 8192);
}

static void test_llama31_rope_scaling_both_layouts(void **state)
{
    (void)state;
    llama_config c;
    assert_int_equal(parse(L31_HEAD "\"rope_theta\":500000.0,\"rope_scaling\":" L31_SCALING "}",
                           &c), FQ_OK);
    assert_llama31(&c);
    /* transformers 5: everything in rope_parameters. */
    assert_int_equal(parse(L31_HEAD "\"rope_parameters\":{\"rope_theta\":500000,\"factor\":8,"
                           "\"low_freq_factor\":1,\"high_freq_factor\":4,"
                           "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"}}",
                           &c), FQ_OK);
    assert_llama31(&c);
    /* Old spelling "type", and defaults when optional fields are absent. */
    assert_int_equal(parse("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":"
                           "128,\"num_hidden_layers\":1,\"num_attention_heads\":4,\"vocab_size\":"
                           "10,\"rope_scaling\":{\"type\":\"default\"}}", &c), FQ_OK);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.head_dim, 16);
    assert_int_equal(c.max_pos, 2048);
    assert_true(c.rms_eps == 1e-6);
    assert_true(c.rope_theta == 10000.0);
    assert_int_equal(c.bos_id, -1);
    assert_int_equal(c.eos_id, -1);
    assert_int_equal(c.rope_type, ROPE_DEFAULT);
    /* An explicit head_dim lifts the divisibility rule (hidden 60 over 8 heads). */
    assert_int_equal(parse("{\"model_type\":\"llama\",\"hidden_size\":60,\"intermediate_size\":"
                           "128,\"num_hidden_layers\":1,\"num_attention_heads\":8,\"head_dim\":"
                           "16,\"vocab_size\":10}", &c), FQ_OK);
    assert_int_equal(c.head_dim, 16);
}

/* A valid small config; bad cases override its keys (a null override deletes one). */
static const char base_config[] =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,"
    "\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
    "\"num_key_value_heads\":2,\"vocab_size\":100}";

typedef struct { const char *what; int raw; const char *json, *msg1, *msg2; } bad_config;

static const bad_config bad_configs[] = {
    {"NaN", 1, "{\n  \"hidden_size\": 64,\n  \"rms_norm_eps\": NaN\n}", "config.json:3:",
     "invalid JSON"},
    {"huge number", 1, "{\"rope_theta\":1e999}", "config.json:1:", "invalid JSON"},
    {"duplicate key", 1, "{\"hidden_size\":64,\"hidden_size\":32}", "config.json:1:",
     "duplicate"},
    {"empty", 1, "", "config.json:", "invalid JSON"},
    {"newline inside a bad token (found by fuzzing)", 1,
     "{\"architectures\": [\nnull \"LlamaForCausalLM\\\n  ]}", "config.json:", "\\x0a"},
    {"top level array", 1, "[1]", "top level is not a JSON object", NULL},
    {"unknown architecture", 0, "{\"architectures\":[\"MistralForCausalLM\"]}",
     "architecture 'MistralForCausalLM' is not supported", NULL},
    {"control bytes in an architecture", 0, "{\"architectures\":[\"Evil\\nLine\"]}",
     "architecture 'Evil\\x0aLine'", NULL},
    {"rope_scaling yarn", 0, "{\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0}}",
     "config.json: rope_scaling.rope_type 'yarn' is not supported",
     "(expected one of: default, llama3)"},
    {"rope_parameters linear", 0, "{\"rope_parameters\":{\"rope_type\":\"linear\","
     "\"factor\":2.0,\"rope_theta\":10000}}", "rope_parameters.rope_type 'linear' is not "
     "supported", NULL},
    {"dynamic via old 'type'", 0, "{\"rope_scaling\":{\"type\":\"dynamic\",\"factor\":2}}",
     "rope_type 'dynamic' is not supported", NULL},
    {"scaling without a type", 0, "{\"rope_scaling\":{\"factor\":8.0}}",
     "'rope_scaling' has no rope_type", "expected rope_type"},
    {"rope_scaling not an object", 0, "{\"rope_scaling\":\"llama3\"}",
     "'rope_scaling' is not an object", NULL},
    {"llama3 missing factor", 0, "{\"rope_scaling\":{\"rope_type\":\"llama3\","
     "\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":8192}}",
     "missing 'rope_scaling.factor'", "expected a finite number > 0"},
    {"llama3 high <= low", 0, "{\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,"
     "\"low_freq_factor\":4,\"high_freq_factor\":1,\"original_max_position_embeddings\":8192}}",
     "high_freq_factor' 1 is not above low_freq_factor 4", NULL},
    {"scaling disagreement", 0, "{\"rope_scaling\":" L31_SCALING
     ",\"rope_parameters\":{\"rope_type\":\"default\"}}", "describe different RoPE", NULL},
    {"missing hidden_size", 0, "{\"hidden_size\":null}",
     "config.json: missing 'hidden_size' (expected a positive integer)", NULL},
    {"missing vocab_size", 0, "{\"vocab_size\":null}", "missing 'vocab_size'", NULL},
    {"hidden_size a string", 0, "{\"hidden_size\":\"64\"}", NULL, NULL},
    {"zero layers", 0, "{\"num_hidden_layers\":0}",
     "'num_hidden_layers' is not a positive integer", NULL},
    {"int overflow", 0, "{\"vocab_size\":4294967296}", "'vocab_size' is not a positive", NULL},
    {"hidden not a multiple of heads", 0, "{\"hidden_size\":66}",
     "'hidden_size' 66 is not a multiple of 'num_attention_heads' 4", "head_dim"},
    {"heads not a multiple of kv heads", 0, "{\"num_key_value_heads\":3}",
     "'num_attention_heads' 4 is not a multiple of 'num_key_value_heads' 3", NULL},
    {"eps zero", 0, "{\"rms_norm_eps\":0}", "'rms_norm_eps' is not a finite positive", NULL},
    {"eps string", 0, "{\"rms_norm_eps\":\"1e-5\"}", "'rms_norm_eps'", NULL},
    {"theta negative", 0, "{\"rope_theta\":-1}", "'rope_theta' is not a finite positive", NULL},
    {"theta in rope_parameters zero", 0, "{\"rope_parameters\":{\"rope_type\":\"default\","
     "\"rope_theta\":0}}", "'rope_parameters.rope_theta' is not a finite positive", NULL},
    {"theta disagreement", 0, "{\"rope_theta\":10000,\"rope_parameters\":{\"rope_type\":"
     "\"default\",\"rope_theta\":500000}}", "'rope_theta' 10000 and "
     "'rope_parameters.rope_theta' 500000 differ", NULL},
    {"model_type mistral", 0, "{\"architectures\":null,\"model_type\":\"mistral\"}",
     "model_type 'mistral' is not supported (expected one of: llama)", NULL},
    {"no architecture at all", 0, "{\"architectures\":null}",
     "neither 'architectures' nor 'model_type'", NULL},
    {"gelu", 0, "{\"hidden_act\":\"gelu\"}", "'hidden_act' is not \"silu\"", NULL},
    {"biases", 0, "{\"attention_bias\":true}", "'attention_bias' is not false", NULL},
    {"odd head_dim", 0, "{\"head_dim\":15}", "head_dim 15 is odd", NULL},
    {"tie not a bool", 0, "{\"tie_word_embeddings\":1}", "'tie_word_embeddings' is not a boolean",
     NULL},
    {"bos out of range", 0, "{\"bos_token_id\":100}", "'bos_token_id' is not a token id",
     "0..99"},
    {"eos list of strings", 0, "{\"eos_token_id\":[\"x\"]}", "'eos_token_id'", NULL},
};

/* base_config with the keys of `override` replaced (null deletes), as JSON text. */
static char *with_override(const char *override)
{
    json_t *base = json_loads(base_config, 0, NULL), *ov = json_loads(override, 0, NULL);
    assert_non_null(base);
    assert_non_null(ov);
    const char *k;
    json_t *v;
    json_object_foreach(ov, k, v) {
        if (json_is_null(v))
            json_object_del(base, k);
        else
            json_object_set(base, k, v);
    }
    char *txt = json_dumps(base, JSON_COMPACT);
    json_decref(base);
    json_decref(ov);
    return txt;
}

static void test_bad_configs(void **state)
{
    (void)state;
    llama_config c;
    assert_int_equal(parse(base_config, &c), FQ_OK); /* the base itself is fine */
    for (size_t i = 0; i < sizeof bad_configs / sizeof bad_configs[0]; i++) {
        const bad_config *b = &bad_configs[i];
        char *txt = b->raw ? strdup(b->json) : with_override(b->json);
        int rc = parse(txt, &c);
        free(txt);
        if (rc != FQ_ERR)
            fail_msg("config '%s' was accepted", b->what);
        assert_int_equal(c.hidden, 0); /* nothing half-filled */
        assert_msg_has("(expected");
        if (b->msg1)
            assert_msg_has(b->msg1);
        if (b->msg2)
            assert_msg_has(b->msg2);
    }
    /* The exact wording users see for another architecture and a mistyped field. */
    char *txt = with_override("{\"architectures\":[\"MistralForCausalLM\"]}");
    assert_int_equal(parse(txt, &c), FQ_ERR);
    free(txt);
    assert_string_equal(fq_errmsg(), "config.json: architecture 'MistralForCausalLM' is not "
                                     "supported (expected one of: LlamaForCausalLM)");
    txt = with_override("{\"hidden_size\":\"64\"}");
    assert_int_equal(parse(txt, &c), FQ_ERR);
    free(txt);
    assert_string_equal(fq_errmsg(), "config.json: 'hidden_size' is not a positive integer "
                                     "(expected an integer in 1..2147483647)");
}

static void test_load_errors_name_the_file(void **state)
{
    (void)state;
    llama_config c;
    const char *missing = tu_path("nomodel");
    assert_int_equal(llama_config_load(missing, &c), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "nomodel/config.json: cannot open"));
    const char *p = tu_path("bad.json");
    tu_write_bytes(p, "{\"a\":\n nan}", 11);
    assert_int_equal(llama_config_load(p, &c), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "bad.json:2:"));
    assert_int_equal(llama_config_parse(NULL, 3, "x", &c), FQ_ERR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k_config),
        cmocka_unit_test(test_flatq16m_config_by_file_path),
        cmocka_unit_test(test_llama31_rope_scaling_both_layouts),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_load_errors_name_the_file),
    };
    return cmocka_run_group_tests_name("llama_config", tests, tu_setup, tu_teardown);
}
