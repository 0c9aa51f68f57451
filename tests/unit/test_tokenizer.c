/* test_tokenizer.c — the C tokenizer against Hugging Face `tokenizers` 0.23.2.
 *
 * Goldens (tests/golden/tokenizer/MODEL.TEXT.golden, made by tests/reference/tokenizer_golden.mjs)
 * pin, per model and text, the id count, the sha256 of the whole id sequence (int32 LE)
 * and the first 10,000 ids. Texts and models come from $FLATQ_DATA (default
 * ../shared/data); without them those tests print a loud NOT RUN line and skip, and the
 * tests on small hand-made tokenizers (merge order, unk/byte fallback, error messages)
 * still run.
 *
 * The Metaspace goldens use tokenizers derived from stories260K-hf by the same script and
 * committed beside them (tests/golden/tokenizer/stories260K-metaspace*.tokenizer.json);
 * their golden's model line is that file, '@'-prefixed like a repository-relative text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "sha256.h"
#include "tokenizer.h"

#define GOLDEN_DIR "tests/golden/tokenizer"
/* The smallest valid model: a, b and their merge. */
#define MODEL_OK "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}"

static const char *data_dir(void)
{
    const char *d = getenv("FLATQ_DATA");
    return d && *d ? d : "../shared/data";
}

/* 1 when the shared data is there; else prints the loud line for this test. */
static int have_data(const char *test)
{
    char p[1024];
    struct stat st;
    snprintf(p, sizeof p, "%s/models/flatq-llama-16m/tokenizer.json", data_dir());
    if (stat(p, &st) == 0)
        return 1;
    printf("!!! NOT RUN: %s: %s not found (set FLATQ_DATA to the shared data directory)\n",
           test, p);
    return 0;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* A model directory under FLATQ_DATA, or '@' + a repository-relative tokenizer.json. */
static tokenizer *load_model(const char *name)
{
    char p[1024];
    if (name[0] == '@')
        snprintf(p, sizeof p, "%s", name + 1);
    else
        snprintf(p, sizeof p, "%s/models/%s", data_dir(), name);
    tokenizer *t = NULL;
    if (tokenizer_load(p, &t) != FQ_OK)
        fail_msg("load %s: %s", p, fq_errmsg());
    return t;
}

static void ids_sha256_hex(const int32_t *ids, size_t n, char hex[65])
{
    unsigned char *b = malloc(n * 4 + 1);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        b[4 * i] = (unsigned char)v;
        b[4 * i + 1] = (unsigned char)(v >> 8);
        b[4 * i + 2] = (unsigned char)(v >> 16);
        b[4 * i + 3] = (unsigned char)(v >> 24);
    }
    uint8_t d[32];
    sha256(b, n * 4, d);
    sha256_hex(d, hex);
    free(b);
}

/* ---------------- goldens ---------------- */

static const char *golden_names[] = {
    "stories260K-hf.wiki.test.paper",  "stories260K-hf.wiki.test.raw",
    "stories260K-hf.wt2tok.valid",     "stories260K-hf.tinystories",
    "stories260K-hf.hard_cases",       "stories260K-hf.hard_cases.nospecial",
    "flatq-llama-16m.wiki.test.paper", "flatq-llama-16m.wiki.test.raw",
    "flatq-llama-16m.wt2tok.valid",    "flatq-llama-16m.tinystories",
    "flatq-llama-16m.hard_cases",      "flatq-llama-16m.hard_cases.nospecial",
    "stories260K-metaspace.wiki.test.paper",
    "stories260K-metaspace.tinystories",
    "stories260K-metaspace.hard_cases",
    "stories260K-metaspace.hard_cases.nospecial",
    "stories260K-metaspace-split.wiki.test.paper",
    "stories260K-metaspace-split.tinystories",
    "stories260K-metaspace-split.hard_cases",
    "stories260K-metaspace-split.hard_cases.nospecial",
};

/* The Metaspace variants of stories260K, committed with the goldens. */
static const char *metaspace_models[] = {
    "@" GOLDEN_DIR "/stories260K-metaspace.tokenizer.json",
    "@" GOLDEN_DIR "/stories260K-metaspace-split.tokenizer.json",
};

static void check_golden(const char *name)
{
    char path[1024], model[128], text[512], sha[80];
    int add_special;
    size_t count, head;
    snprintf(path, sizeof path, GOLDEN_DIR "/%s.golden", name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[4096];
    assert_non_null(fgets(line, sizeof line, f)); /* comment */
    assert_int_equal(fscanf(f, " model %127s text %511s add_special %d count %zu "
                               "sha256_int32le %79s head %zu",
                            model, text, &add_special, &count, sha, &head),
                     6);
    int32_t *want = malloc((head + 1) * sizeof *want);
    assert_non_null(want);
    for (size_t i = 0; i < head; i++)
        assert_int_equal(fscanf(f, "%d", &want[i]), 1);
    fclose(f);

    char tpath[1024];
    if (text[0] == '@')
        snprintf(tpath, sizeof tpath, "%s", text + 1);
    else
        snprintf(tpath, sizeof tpath, "%s/%s", data_dir(), text);
    tokenizer *t = load_model(model);
    int32_t *ids;
    size_t n;
    if (tokenizer_encode_file(t, tpath, add_special, &ids, &n) != FQ_OK)
        fail_msg("%s: %s", name, fq_errmsg());
    if (n != count)
        fail_msg("%s: %zu ids, HF gives %zu", name, n, count);
    for (size_t i = 0; i < head; i++)
        if (ids[i] != want[i])
            fail_msg("%s: id %zu is %d, HF gives %d", name, i, ids[i], want[i]);
    char got[65];
    ids_sha256_hex(ids, n, got);
    assert_string_equal(got, sha);
    free(ids);
    free(want);
    tokenizer_free(t);
}

static void test_goldens_match_hf(void **state)
{
    (void)state;
    if (!have_data("tokenizer goldens (WikiText-2, tinystories, hard cases)"))
        skip();
    for (size_t i = 0; i < sizeof golden_names / sizeof *golden_names; i++)
        check_golden(golden_names[i]);
}

/* The id lists quoted in shared/data/SOURCES.md (llama2.c's encoder agrees with them). */
static void test_sources_md_examples(void **state)
{
    (void)state;
    if (!have_data("SOURCES.md tokenizer examples"))
        skip();
    static const char *texts[] = {
        "Once upon a time, there was a little girl named Lily.",
        "The cat sat on the mat.\nIt was happy!",
        " Robert Boulter is an English film , television and theatre actor .",
    };
    static const int32_t w0[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315,
                                 421, 395, 317, 426};
    static const int32_t w1[] = {1, 291, 280, 294, 262, 294, 353, 265, 284, 294, 426, 13,
                                 442, 413, 286, 393, 443};
    static const int32_t w2[] = {
        1,   410, 410, 461, 414, 430, 285, 413, 368, 277, 421, 413, 285, 410, 293, 261,
        416, 410, 459, 416, 428, 421, 293, 415, 272, 290, 423, 410, 432, 259, 411, 305,
        435, 293, 417, 289, 269, 265, 294, 276, 261, 429, 413, 304, 410, 426};
    const int32_t *want[] = {w0, w1, w2};
    size_t nwant[] = {sizeof w0 / 4, sizeof w1 / 4, sizeof w2 / 4};
    tokenizer *t = load_model("stories260K-hf");
    for (int k = 0; k < 3; k++) {
        int32_t *ids;
        size_t n;
        assert_int_equal(tokenizer_encode(t, texts[k], strlen(texts[k]), 1, &ids, &n), FQ_OK);
        assert_int_equal(n, nwant[k]);
        assert_memory_equal(ids, want[k], n * sizeof *ids);
        free(ids);
    }
    tokenizer_free(t);
}

static void test_special_ids(void **state)
{
    (void)state;
    if (!have_data("tokenizer special ids"))
        skip();
    tokenizer *s = load_model("stories260K-hf"), *l = load_model("flatq-llama-16m");
    assert_int_equal(tokenizer_vocab_size(s), 512);
    assert_int_equal(tokenizer_bos_id(s), 1);
    assert_int_equal(tokenizer_eos_id(s), 2);
    assert_int_equal(tokenizer_vocab_size(l), 8192);
    assert_int_equal(tokenizer_bos_id(l), 8190);
    assert_int_equal(tokenizer_eos_id(l), 8191);
    /* Empty text: only the template's BOS. */
    int32_t *ids;
    size_t n;
    assert_int_equal(tokenizer_encode(l, "", 0, 1, &ids, &n), FQ_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 8190);
    free(ids);
    assert_int_equal(tokenizer_encode(l, "", 0, 0, &ids, &n), FQ_OK);
    assert_int_equal(n, 0);
    free(ids);
    tokenizer_free(s);
    tokenizer_free(l);
}

/* Decoding the hard cases gives exactly the text HF's decode gives. */
static void test_decode_matches_hf(void **state)
{
    (void)state;
    if (!have_data("tokenizer decode vs HF"))
        skip();
    const char *models[] = {"stories260K-hf", "flatq-llama-16m", metaspace_models[0],
                            metaspace_models[1]};
    const char *golden[] = {"stories260K-hf", "flatq-llama-16m", "stories260K-metaspace",
                            "stories260K-metaspace-split"};
    for (int m = 0; m < 4; m++) {
        tokenizer *t = load_model(models[m]);
        int32_t *ids;
        size_t n, wl, gl;
        assert_int_equal(tokenizer_encode_file(t, GOLDEN_DIR "/hard_cases.txt", 1, &ids, &n),
                         FQ_OK);
        char p[256], *got;
        snprintf(p, sizeof p, GOLDEN_DIR "/%s.hard_cases.decoded.txt", golden[m]);
        char *want = slurp(p, &wl);
        assert_int_equal(tokenizer_decode(t, ids, n, &got, &gl), FQ_OK);
        assert_int_equal(gl, wl);
        assert_memory_equal(got, want, wl);
        free(got);
        free(want);
        free(ids);
        tokenizer_free(t);
    }
}

/* decode(encode(x)) == x where the pipeline is lossless: always for byte-level; for the
 * SentencePiece-style one when x has no '▁' and no special-token strings. */
static void test_round_trip(void **state)
{
    (void)state;
    if (!have_data("tokenizer round trip"))
        skip();
    const char *models[] = {"stories260K-hf", "flatq-llama-16m"};
    char wiki[1024];
    snprintf(wiki, sizeof wiki, "%s/text/wikitext-2-raw/wiki.test.raw", data_dir());
    const char *files[] = {wiki, GOLDEN_DIR "/hard_cases.txt"};
    for (int m = 0; m < 2; m++) {
        tokenizer *t = load_model(models[m]);
        /* hard_cases holds special-token strings: byte-level only. */
        int nfiles = m == 0 ? 1 : 2;
        for (int f = 0; f < nfiles; f++) {
            size_t len, n, gl;
            char *text = slurp(files[f], &len), *got;
            int32_t *ids;
            assert_int_equal(tokenizer_encode(t, text, len, 0, &ids, &n), FQ_OK);
            assert_int_equal(tokenizer_decode(t, ids, n, &got, &gl), FQ_OK);
            assert_int_equal(gl, len);
            assert_memory_equal(got, text, len);
            free(got);
            free(ids);
            free(text);
        }
        /* Emoji, CJK and combining marks go through byte fallback in stories260K. */
        const char *s = "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe4\xbd\xa0\xe5\xa5\xbd e\xcc\x81\tx\r\n";
        int32_t *ids;
        size_t n, gl;
        char *got;
        assert_int_equal(tokenizer_encode(t, s, strlen(s), 0, &ids, &n), FQ_OK);
        assert_int_equal(tokenizer_decode(t, ids, n, &got, &gl), FQ_OK);
        assert_string_equal(got, s);
        free(got);
        free(ids);
        tokenizer_free(t);
    }
}

/* decode(encode(x)) == x for the Metaspace variants where HF's pipeline is lossless: x
 * has no '▁', no special-token strings, and does not start with a space (the decoder
 * drops the first token's '▁', so a leading space is lost; test_metaspace pins that). */
static void test_metaspace_round_trip(void **state)
{
    (void)state;
    if (!have_data("Metaspace tokenizer round trip"))
        skip();
    char wiki[1024], stories[1024];
    snprintf(wiki, sizeof wiki, "%s/text/wikitext-2-raw/wiki.test.raw", data_dir());
    snprintf(stories, sizeof stories, "%s/text/tinystories/tinystories_sample.txt",
             data_dir());
    const char *files[] = {wiki, stories};
    for (int m = 0; m < 2; m++) {
        tokenizer *t = load_model(metaspace_models[m]);
        for (int f = 0; f < 3; f++) {
            size_t len, n, gl;
            char *buf = f < 2 ? slurp(files[f], &len) : NULL, *got;
            const char *text = buf;
            if (f == 2) {
                text = "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe4\xbd\xa0\xe5\xa5\xbd  "
                       "e\xcc\x81\tx\r\n ";
                len = strlen(text);
            }
            while (len && text[0] == ' ') {
                text++;
                len--;
            }
            int32_t *ids;
            assert_int_equal(tokenizer_encode(t, text, len, 0, &ids, &n), FQ_OK);
            assert_int_equal(tokenizer_decode(t, ids, n, &got, &gl), FQ_OK);
            assert_int_equal(gl, len);
            assert_memory_equal(got, text, len);
            free(got);
            free(ids);
            free(buf);
        }
        tokenizer_free(t);
    }
}

/* ---------------- small hand-made tokenizers (no data needed) ---------------- */

/* A SentencePiece-less BPE over the letters a, b, c. Ranks: "a a" 0, "b c" 1, "a b" 2,
 * "aa b" 3. */
static const char tiny_json[] =
    "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":10,\"content\":\"<x>\",\"special\":true,"
    "\"normalized\":false}],\"normalizer\":null,\"pre_tokenizer\":null,"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
    "{\"id\":\"<x>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
    "\"special_tokens\":{\"<x>\":{\"id\":\"<x>\",\"ids\":[10],\"tokens\":[\"<x>\"]}}},"
    "\"decoder\":{\"type\":\"Fuse\"},"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":%s,"
    "\"byte_fallback\":%s,\"vocab\":{\"<unk>\":0,\"a\":1,\"b\":2,\"c\":3,\"aa\":4,\"bc\":5,"
    "\"ab\":6,\"aab\":7,\"<0xC3>\":8,\"<0xA9>\":9},"
    "\"merges\":[\"a a\",\"b c\",[\"a\",\"b\"],\"aa b\"]}}";

static tokenizer *tiny(int fuse_unk, int byte_fallback)
{
    char json[2048];
    snprintf(json, sizeof json, tiny_json, fuse_unk ? "true" : "false",
             byte_fallback ? "true" : "false");
    tokenizer *t = NULL;
    if (tokenizer_load_buffer(json, strlen(json), "tiny.json", &t) != FQ_OK)
        fail_msg("tiny: %s", fq_errmsg());
    return t;
}

static void expect_ids(const tokenizer *t, const char *text, int add_special,
                       const int32_t *want, size_t nwant)
{
    int32_t *ids;
    size_t n;
    if (tokenizer_encode(t, text, strlen(text), add_special, &ids, &n) != FQ_OK)
        fail_msg("%s: %s", text, fq_errmsg());
    if (n != nwant)
        fail_msg("\"%s\": %zu ids, expected %zu", text, n, nwant);
    assert_memory_equal(ids, want, n * sizeof *ids);
    free(ids);
}

static void test_merge_order(void **state)
{
    (void)state;
    tokenizer *t = tiny(0, 0);
    /* "aaa": two overlapping "a a" pairs of equal rank, the leftmost merges: aa a. */
    expect_ids(t, "aaa", 0, (int32_t[]){4, 1}, 2);
    /* "abc": "b c" (rank 1) beats "a b" (rank 2): a bc. */
    expect_ids(t, "abc", 0, (int32_t[]){1, 5}, 2);
    /* "aab": "a a" first, then "aa b" (rank 3): one token. */
    expect_ids(t, "aab", 0, (int32_t[]){7}, 1);
    /* The template puts <x> first; <x> in the text is matched as the added token. */
    expect_ids(t, "a<x>b", 1, (int32_t[]){10, 1, 10, 2}, 4);
    /* Unknown characters without byte fallback: one unk each unless fused. */
    expect_ids(t, "zza", 0, (int32_t[]){0, 0, 1}, 3);
    tokenizer_free(t);
    t = tiny(1, 0);
    expect_ids(t, "zza", 0, (int32_t[]){0, 1}, 2);
    tokenizer_free(t);
    /* Byte fallback: é (C3 A9) has both byte tokens, ü (C3 BC) lacks one → unk. */
    t = tiny(0, 1);
    expect_ids(t, "a\xc3\xa9" "b", 0, (int32_t[]){1, 8, 9, 2}, 4);
    expect_ids(t, "\xc3\xbc" "a", 0, (int32_t[]){0, 1}, 2);
    char *out;
    size_t len;
    assert_int_equal(tokenizer_decode(t, (int32_t[]){10, 7, 5}, 3, &out, &len), FQ_OK);
    assert_string_equal(out, "<x>aabbc");
    free(out);
    assert_int_equal(tokenizer_bos_id(t), 10);
    assert_int_equal(tokenizer_vocab_size(t), 11);
    tokenizer_free(t);
}

/* Hugging Face ignores the ids written in added_tokens and numbers new tokens from the
 * model vocab's size (3 here); a token already in the vocab keeps its vocab id. */
static void test_added_token_ids(void **state)
{
    (void)state;
    const char json[] = "{\"added_tokens\":[{\"id\":77,\"content\":\"<e>\"},"
                        "{\"id\":78,\"content\":\"ab\"},{\"id\":79,\"content\":\"<f>\"}],"
                        MODEL_OK "}";
    tokenizer *t;
    assert_int_equal(tokenizer_load_buffer(json, strlen(json), "ids.json", &t), FQ_OK);
    expect_ids(t, "<f>a<e>ab", 0, (int32_t[]){4, 0, 3, 2}, 4);
    assert_int_equal(tokenizer_vocab_size(t), 5);
    tokenizer_free(t);
}

/* Metaspace on a vocabulary where the scheme and the split change the ids. Every expected
 * id list and decoded string below was printed by Hugging Face tokenizers 0.23.2 (Node)
 * for this exact tokenizer.json. Ranks: "▁ a" 0, "▁ ▁" 1, "a ▁" 2, "a▁ a" 3, "▁▁ a" 4. */
static const char meta_json[] =
    "{\"added_tokens\":[{\"id\":5,\"content\":\"<s>\",\"special\":true,"
    "\"normalized\":false}],"
    "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\u2581\"%s},"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Metaspace\","
    "\"replacement\":\"\u2581\"%s},{\"type\":\"Fuse\"}]},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"\u2581\":1,\"\u2581a\":2,"
    "\"\u2581\u2581\":3,\"a\u2581a\":4,\"<s>\":5,\"b\":6,\"a\u2581\":7,"
    "\"\u2581\u2581a\":8},\"merges\":[\"\u2581 a\",\"\u2581 \u2581\",\"a \u2581\","
    "\"a\u2581 a\",\"\u2581\u2581 a\"]}}";

static tokenizer *meta_tok(const char *opts)
{
    char json[2048];
    snprintf(json, sizeof json, meta_json, opts, opts);
    tokenizer *t = NULL;
    if (tokenizer_load_buffer(json, strlen(json), "meta.json", &t) != FQ_OK)
        fail_msg("meta %s: %s", opts, fq_errmsg());
    return t;
}

static void expect_decoded(const tokenizer *t, const int32_t *ids, size_t n, const char *want)
{
    char *out;
    size_t len;
    if (tokenizer_decode(t, ids, n, &out, &len) != FQ_OK)
        fail_msg("decode: %s", fq_errmsg());
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    free(out);
}

static void test_metaspace(void **state)
{
    (void)state;
    /* "first", split or not: the same ids here. The piece after an added token at the
     * start gets no '▁' ("<s>a a" → a, ▁a); a leading space is the prefix itself. */
    const char *first[] = {",\"prepend_scheme\":\"first\",\"split\":true",
                           ",\"prepend_scheme\":\"first\",\"split\":false",
                           ",\"add_prefix_space\":true,\"prepend_scheme\":\"first\""};
    for (int k = 0; k < 3; k++) {
        tokenizer *t = meta_tok(first[k]);
        expect_ids(t, "a a", 0, (int32_t[]){2, 2}, 2);
        expect_ids(t, "a  a", 0, (int32_t[]){2, 1, 2}, 3);
        expect_ids(t, " a", 0, (int32_t[]){2}, 1);
        expect_ids(t, "aa a", 0, (int32_t[]){2, 0, 2}, 3);
        expect_ids(t, "<s>a a", 0, (int32_t[]){5, 0, 2}, 3);
        expect_ids(t, "<s> a", 0, (int32_t[]){5, 2}, 2);
        expect_ids(t, "", 0, NULL, 0);
        /* Decoding drops every '▁' of the first token, not only a leading one. */
        expect_decoded(t, (int32_t[]){3, 0}, 2, "a");
        expect_decoded(t, (int32_t[]){4, 2}, 2, "aa a");
        expect_decoded(t, (int32_t[]){8}, 1, "a");
        expect_decoded(t, (int32_t[]){5, 2}, 2, "<s> a");
        expect_decoded(t, (int32_t[]){5, 3, 2}, 3, "<s>   a");
        expect_decoded(t, (int32_t[]){1}, 1, "");
        expect_decoded(t, (int32_t[]){0, 1, 0}, 3, "a a");
        tokenizer_free(t);
    }
    /* "always" (also the default): the piece after "<s>" gets its '▁' too. */
    const char *always[] = {",\"prepend_scheme\":\"always\"", "",
                            ",\"add_prefix_space\":true"};
    for (int k = 0; k < 3; k++) {
        tokenizer *t = meta_tok(always[k]);
        expect_ids(t, "<s>a a", 0, (int32_t[]){5, 2, 2}, 3);
        expect_ids(t, "a a", 0, (int32_t[]){2, 2}, 2);
        tokenizer_free(t);
    }
    /* "never": no prefix, every '▁' decodes to a space; without split, "a▁" merges
     * across the word start ("a  a" → a▁, ▁a), with it the cut prevents that. */
    tokenizer *t = meta_tok(",\"prepend_scheme\":\"never\",\"split\":true");
    expect_ids(t, "a a", 0, (int32_t[]){0, 2}, 2);
    expect_ids(t, "a  a", 0, (int32_t[]){0, 1, 2}, 3);
    expect_ids(t, "aa a", 0, (int32_t[]){0, 0, 2}, 3);
    expect_decoded(t, (int32_t[]){3, 0}, 2, "  a");
    expect_decoded(t, (int32_t[]){4, 2}, 2, "a a a");
    expect_decoded(t, (int32_t[]){1}, 1, " ");
    tokenizer_free(t);
    t = meta_tok(",\"add_prefix_space\":false,\"prepend_scheme\":\"never\",\"split\":false");
    expect_ids(t, "a  a", 0, (int32_t[]){7, 2}, 2);
    expect_ids(t, "a a", 0, (int32_t[]){0, 2}, 2);
    tokenizer_free(t);
    /* Sequence[Split "\n" Isolated, Metaspace first]: only the piece at offset 0 of the
     * input gets the prefix, not the one after the "\n" cut ("b é" → b ▁ <0xC3> <0xA9>). */
    assert_int_equal(tokenizer_load("tests/fuzz/seeds/tokenizer/metaspace_small.json", &t),
                     FQ_OK);
    expect_ids(t, "a a\n a", 1, (int32_t[]){5, 2, 2, 10, 2}, 5);
    expect_ids(t, "<s>a  a\nb \xc3\xa9", 1, (int32_t[]){5, 5, 0, 1, 2, 10, 6, 1, 11, 12}, 10);
    tokenizer_free(t);
}

/* ---------------- errors ---------------- */

static void expect_load_error(const char *json, const char *needle1, const char *needle2)
{
    tokenizer *t = (tokenizer *)1;
    assert_int_equal(tokenizer_load_buffer(json, strlen(json), "bad.json", &t), FQ_ERR);
    assert_null(t);
    const char *msg = fq_errmsg();
    if (!strstr(msg, needle1) || (needle2 && !strstr(msg, needle2)))
        fail_msg("message \"%s\" lacks \"%s\"/\"%s\"", msg, needle1, needle2 ? needle2 : "");
    assert_null(strchr(msg, '\n'));
}

static void test_load_errors(void **state)
{
    (void)state;
    tokenizer *t = NULL;
    assert_int_equal(tokenizer_load("/nonexistent/flatq-model", &t), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "/nonexistent/flatq-model: cannot open"));
    expect_load_error("{\"model\": ", "bad.json:1:", "invalid JSON");
    expect_load_error("{\"normalizer\":{\"type\":\"NFKC\"}," MODEL_OK "}", "bad.json",
                      "unknown normalizer type \"NFKC\"");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"Whitespace\"}," MODEL_OK "}",
                      "pre_tokenizer.type", "Whitespace");
    expect_load_error("{\"decoder\":{\"type\":\"WordPiece\"}," MODEL_OK "}", "decoder.type",
                      "WordPiece");
    expect_load_error("{\"post_processor\":{\"type\":\"BertProcessing\"}," MODEL_OK "}",
                      "post_processor.type", "BertProcessing");
    expect_load_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", "model.type",
                      "WordPiece");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},"
                      "\"merges\":[\"a b\",\"a zz\"]}}",
                      "model.merges[1]", "\"zz\" is not in model.vocab");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},"
                      "\"merges\":[[\"a\",\"b\"]]}}",
                      "model.merges[0]", "merged token \"ab\"");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3},\"merges\":[]}}",
                      "model.vocab", "id");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},"
                      "\"behavior\":\"Isolated\",\"invert\":false}," MODEL_OK "}",
                      "pre_tokenizer.pattern", "does not compile");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},"
                      "\"behavior\":\"MergedWithNext\",\"invert\":false}," MODEL_OK "}",
                      "pre_tokenizer.behavior", "MergedWithNext");
    expect_load_error("{\"added_tokens\":[{\"id\":5,\"content\":\"<s>\",\"lstrip\":true}],"
                      MODEL_OK "}", "added_tokens[0]", "lstrip");
    expect_load_error("[1,2]", "bad.json", "not a JSON object");
    /* Metaspace options that Hugging Face 0.23.2 refuses too. */
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"ab\"},"
                      MODEL_OK "}", "pre_tokenizer.replacement", "not a single character");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"Metaspace\"}," MODEL_OK "}",
                      "pre_tokenizer.replacement", "missing");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"_\","
                      "\"prepend_scheme\":\"First\"}," MODEL_OK "}",
                      "pre_tokenizer.prepend_scheme", "\"First\" is not a scheme");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"_\","
                      "\"add_prefix_space\":false}," MODEL_OK "}",
                      "pre_tokenizer.add_prefix_space", "\"never\"");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"_\","
                      "\"split\":0}," MODEL_OK "}", "pre_tokenizer.split", "not a boolean");
    expect_load_error("{\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":"
                      "\"Metaspace\",\"replacement\":\"\"}]}," MODEL_OK "}",
                      "decoder.decoders[0].replacement", "not a single character");
    expect_load_error("{\"normalizer\":{\"type\":\"Prepend\",\"prepend\":\"_\"},"
                      "\"added_tokens\":[{\"id\":5,\"content\":\"<s>\",\"normalized\":true}],"
                      MODEL_OK "}", "added_tokens[0].normalized", "normalizer");
}

static void test_encode_errors(void **state)
{
    (void)state;
    const char json[] = "{" MODEL_OK "}";
    tokenizer *t;
    assert_int_equal(tokenizer_load_buffer(json, strlen(json), "t.json", &t), FQ_OK);
    int32_t *ids;
    size_t n;
    struct {
        const char *s;
        size_t len;
        const char *where;
    } cases[] = {
        {"ab\xff" "cd", 5, "byte offset 2"},      /* never valid */
        {"abc\xe2\x82", 5, "byte offset 3"},      /* truncated at the end */
        {"\xc0\xaf", 2, "byte offset 0"},         /* overlong '/' */
        {"a\xed\xa0\x80z", 5, "byte offset 1"},   /* UTF-16 surrogate */
        {"ab\xf4\x90\x80\x80", 6, "byte offset 2"}, /* above U+10FFFF */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        assert_int_equal(tokenizer_encode(t, cases[i].s, cases[i].len, 1, &ids, &n), FQ_ERR);
        if (!strstr(fq_errmsg(), cases[i].where))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, fq_errmsg(), cases[i].where);
    }
    char path[] = "/tmp/flatq_tok_badXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "ok text \x80", 9), 9);
    close(fd);
    assert_int_equal(tokenizer_encode_file(t, path, 1, &ids, &n), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), path));
    assert_non_null(strstr(fq_errmsg(), "byte offset 8"));
    unlink(path);
    assert_int_equal(tokenizer_encode_file(t, "/nonexistent/text.txt", 1, &ids, &n), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "/nonexistent/text.txt"));
    char *out;
    size_t len;
    assert_int_equal(tokenizer_decode(t, (int32_t[]){0, 7}, 2, &out, &len), FQ_ERR);
    assert_non_null(strstr(fq_errmsg(), "id 7 at position 1"));
    /* No unk token: unknown characters give no ids at all, the first word included. */
    expect_ids(t, "zz", 0, NULL, 0);
    expect_ids(t, "zzab", 0, (int32_t[]){2}, 1);
    /* Without a decoder HF joins tokens with spaces. */
    assert_int_equal(tokenizer_decode(t, (int32_t[]){2, 0}, 2, &out, &len), FQ_OK);
    assert_string_equal(out, "ab a");
    free(out);
    tokenizer_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_order),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_added_token_ids),
        cmocka_unit_test(test_metaspace),
        cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_special_ids),
        cmocka_unit_test(test_sources_md_examples),
        cmocka_unit_test(test_goldens_match_hf),
        cmocka_unit_test(test_decode_matches_hf),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_metaspace_round_trip),
    };
    return cmocka_run_group_tests_name("tokenizer", tests, NULL, NULL);
}
