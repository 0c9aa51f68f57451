/* inspect.c — `flatq inspect MODEL_DIR`: run the FP model over a few windows of text,
 * capture the inputs of k_proj (= q/v), o_proj, gate_proj (= up) and down_proj in every
 * layer, and report their quantization difficulty before and after smoothing, rotation
 * and smooth-then-rotate (core/difficulty.h).
 *
 * The pass goes layer by layer over all windows at once (one [K·s, d] residual stream),
 * loading one layer's weights at a time, so a model far larger than memory can be
 * inspected as long as one layer and the captured activations fit. The consuming weight
 * of an input shared by several projections is their row-wise concatenation
 * ([Wq; Wk; Wv], [Wgate; Wup]): that is what SmoothQuant takes its maxima over and what a
 * rotation of that input must also be applied to. The rotation seed depends only on the
 * size, so inputs of the same width share one rotation, as QuaRot's residual rotation does.
 */
#include "coordinator/commands.h"
#include "atomic_file.h"
#include "coordinator/inspect.h"
#include "difficulty.h"
#include "error.h"
#include "fileio.h"
#include "llama_capture.h"
#include "llama_model.h"
#include "tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_TEXT "data/text/wiki.test.paper.txt"

enum { IN_ATTN, IN_O, IN_MLP, IN_DOWN, N_INPUTS };
static const char *const input_names[N_INPUTS] = {"k_proj", "o_proj", "gate_proj", "down_proj"};
static const char *const consumer_names[N_INPUTS] = {"q_proj+k_proj+v_proj", "o_proj",
                                                     "gate_proj+up_proj", "down_proj"};

typedef struct {
    const char *model, *text, *html;
    char text_buf[4096];
    long seqlen, windows, bits;
    double alpha;
    int json;
} inspect_args;

static void inspect_usage(FILE *out)
{
    fprintf(out,
            "usage: flatq inspect MODEL_DIR [--text FILE] [--seqlen N] [--windows K]\n"
            "                     [--alpha A] [--bits B] [--html OUT.html] [--json]\n"
            "  Per layer and per linear input (k_proj = q/v input, o_proj, gate_proj = up\n"
            "  input, down_proj): the channel-magnitude difficulty D = std_j ||X_:,j||, the\n"
            "  max/median ratio of per-channel max|x|, the kurtosis, the same for the\n"
            "  consuming weight, and the B-bit RTN layer error with its estimate, before\n"
            "  and after SmoothQuant scaling, a random Hadamard rotation, and both.\n"
            "  --text FILE     text to run (default " DEFAULT_TEXT ")\n"
            "  --seqlen N      tokens per window (default 512)\n"
            "  --windows K     number of windows (default 4)\n"
            "  --alpha A       SmoothQuant migration strength in [0, 1] (default 0.5)\n"
            "  --bits B        bits of the layer-error quantizer, 2..8 (default 4)\n"
            "  --html OUT      also write a self-contained HTML page with charts\n"
            "  --json          print everything as one JSON object instead of tables\n");
}

static int parse_long(const char *flag, const char *v, long lo, long hi, long *out)
{
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || end == v || x < lo || x > hi)
        return fq_error("inspect: %s: expected an integer in %ld..%ld, got '%s'", flag, lo, hi,
                        v ? v : "");
    *out = x;
    return FQ_OK;
}

static int inspect_parse(int argc, char **argv, inspect_args *a)
{
    memset(a, 0, sizeof *a);
    a->seqlen = 512;
    a->windows = 4;
    a->bits = 4;
    a->alpha = 0.5;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(k, "--json") == 0) {
            a->json = 1;
            continue;
        }
        if (k[0] != '-') {
            if (a->model)
                return fq_error("inspect: extra argument '%s' (expected one MODEL_DIR)", k);
            a->model = k;
            continue;
        }
        if (!v)
            return fq_error("inspect: %s needs a value", k);
        if (strcmp(k, "--text") == 0)
            a->text = v;
        else if (strcmp(k, "--html") == 0)
            a->html = v;
        else if (strcmp(k, "--seqlen") == 0) {
            if (parse_long(k, v, 2, 1L << 20, &a->seqlen) != FQ_OK)
                return FQ_ERR;
        } else if (strcmp(k, "--windows") == 0) {
            if (parse_long(k, v, 1, 1L << 20, &a->windows) != FQ_OK)
                return FQ_ERR;
        } else if (strcmp(k, "--bits") == 0) {
            if (parse_long(k, v, 2, 8, &a->bits) != FQ_OK)
                return FQ_ERR;
        } else if (strcmp(k, "--alpha") == 0) {
            char *end;
            a->alpha = strtod(v, &end);
            if (*end || end == v || !(a->alpha >= 0 && a->alpha <= 1))
                return fq_error("inspect: --alpha: expected a number in [0, 1], got '%s'", v);
        } else
            return fq_error("inspect: unknown argument '%s' (expected MODEL_DIR, --text, --seqlen, "
                            "--windows, --alpha, --bits, --html or --json)", k);
        i++;
    }
    if (!a->model)
        return fq_error("inspect: MODEL_DIR is required (see flatq inspect --help)");
    if (a->seqlen * a->windows > (1L << 24))
        return fq_error("inspect: --windows %ld x --seqlen %ld is more than 16M tokens (expected "
                        "a sample, not a corpus)", a->windows, a->seqlen);
    if (!a->text) {
        /* the bundled text from the repository root, else from $FLATQ_DATA */
        const char *data = getenv("FLATQ_DATA");
        a->text = DEFAULT_TEXT;
        if (access(DEFAULT_TEXT, R_OK) != 0 && data && *data) {
            snprintf(a->text_buf, sizeof a->text_buf, "%s/text/wiki.test.paper.txt", data);
            if (access(a->text_buf, R_OK) == 0)
                a->text = a->text_buf;
        }
    }
    return FQ_OK;
}

/* The first `need` tokens (BOS first) of a text, tokenizing a growing prefix so a small
 * sample never pays for a large file. */
static int tokenize_prefix(const tokenizer *tok, const char *path, size_t need, int32_t **ids,
                           size_t *n)
{
    char *buf = NULL;
    size_t len = 0;
    if (fq_read_file(path, &buf, &len) != FQ_OK)
        return fq_error_wrap("inspect: --text");
    size_t bytes = need * 8 + 4096;
    for (;;) {
        if (bytes > len)
            bytes = len;
        while (bytes < len && ((unsigned char)buf[bytes] & 0xC0) == 0x80)
            bytes++; /* never cut a UTF-8 sequence */
        *ids = NULL;
        if (tokenizer_encode(tok, buf, bytes, 1, ids, n) != FQ_OK) {
            free(buf);
            return fq_error_wrap("%s", path);
        }
        if (*n >= need || bytes == len)
            break;
        free(*ids);
        bytes *= 4;
    }
    free(buf);
    if (*n < need) {
        fq_error("%s: the text has %zu tokens (expected at least %zu = --windows x --seqlen)",
                 path, *n, need);
        free(*ids);
        *ids = NULL;
        return FQ_ERR;
    }
    return FQ_OK;
}

static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *stats_json(const difficulty_stats *s)
{
    return json_pack("{s:o, s:o, s:o}", "difficulty", jnum(s->d), "max_median",
                     jnum(s->max_median), "kurtosis", jnum(s->kurtosis));
}

static json_t *report_json(const difficulty_report *r)
{
    json_t *act = json_object(), *w = json_object(), *err = json_object();
    for (int v = 0; v < DIFF_VARIANTS; v++) {
        json_object_set_new(act, difficulty_variant_names[v], stats_json(&r->act[v]));
        json_object_set_new(w, difficulty_variant_names[v], stats_json(&r->weight[v]));
        json_object_set_new(err, difficulty_variant_names[v],
                            json_pack("{s:o, s:o}", "measured", jnum(r->error[v]), "estimate",
                                      jnum(r->estimate[v])));
    }
    return json_pack("{s:o, s:o, s:o}", "activation", act, "weight", w, "error", err);
}

typedef struct {
    llama_config c;
    st_checkpoint ck;
    real *x;                     /* [N, d] residual stream of all windows */
    real *cap[N_INPUTS];         /* captured inputs */
    real *wcat[2];               /* [Wq; Wk; Wv], [Wgate; Wup] */
    rope_table rope;
    llama_scratch w;
    difficulty_report *rep;      /* [layers · N_INPUTS] */
} inspect_state;

static void state_free(inspect_state *s)
{
    free(s->x);
    for (int i = 0; i < N_INPUTS; i++)
        free(s->cap[i]);
    free(s->wcat[0]);
    free(s->wcat[1]);
    rope_table_free(&s->rope);
    llama_scratch_free(&s->w);
    free(s->rep);
    if (s->ck.files)
        st_checkpoint_close(&s->ck);
}

/* One layer: forward all windows with capture, then analyse the four inputs. */
static int inspect_layer(inspect_state *s, const inspect_args *a, int li)
{
    const llama_config *c = &s->c;
    int K = (int)a->windows, S = (int)a->seqlen, N = K * S, d = c->hidden,
        f = c->intermediate, qd = c->n_heads * c->head_dim, kd = c->n_kv_heads * c->head_dim;
    llama_layer l;
    if (llama_layer_load(&s->ck, c, li, &l) != FQ_OK)
        return FQ_ERR;
    llama_layer_inputs cap = {s->cap[IN_ATTN], s->cap[IN_O], s->cap[IN_MLP], s->cap[IN_DOWN]};
    llama_layer_fwd_capture(s->x, &l, c, &s->rope, K, S, &s->w, &cap);
    memcpy(s->wcat[0], l.wq, sizeof(real) * (size_t)qd * d);
    memcpy(s->wcat[0] + (size_t)qd * d, l.wk, sizeof(real) * (size_t)kd * d);
    memcpy(s->wcat[0] + (size_t)(qd + kd) * d, l.wv, sizeof(real) * (size_t)kd * d);
    memcpy(s->wcat[1], l.wgate, sizeof(real) * (size_t)f * d);
    memcpy(s->wcat[1] + (size_t)f * d, l.wup, sizeof(real) * (size_t)f * d);
    const real *wt[N_INPUTS] = {s->wcat[0], l.wo, s->wcat[1], l.wdown};
    int width[N_INPUTS] = {d, qd, d, f}, rows[N_INPUTS] = {qd + 2 * kd, d, 2 * f, d};
    int rc = FQ_OK;
    for (int i = 0; i < N_INPUTS && rc == FQ_OK; i++)
        if (difficulty_analyze(s->cap[i], N, width[i], wt[i], rows[i], a->alpha, (int)a->bits,
                               0x5eed0000ULL + (uint64_t)width[i],
                               &s->rep[(size_t)li * N_INPUTS + i]) != FQ_OK)
            rc = fq_error_wrap("inspect: layer %d %s input", li, input_names[i]);
    llama_layer_free(&l);
    return rc;
}

static int inspect_run(const inspect_args *a, inspect_state *s, size_t *ntok)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", a->model);
    if (llama_config_load(path, &s->c) != FQ_OK || st_checkpoint_open(a->model, &s->ck) != FQ_OK)
        return FQ_ERR;
    const llama_config *c = &s->c;
    if (a->seqlen > c->max_pos)
        return fq_error("inspect: --seqlen %ld is longer than the model's "
                        "max_position_embeddings %d (expected <= %d)", a->seqlen, c->max_pos,
                        c->max_pos);
    size_t N = (size_t)a->windows * a->seqlen;
    tokenizer *tok = NULL;
    int32_t *ids = NULL;
    real *embed = NULL;
    int64_t eshape[2] = {c->vocab, c->hidden};
    int rc = FQ_ERR;
    if (tokenizer_load(a->model, &tok) != FQ_OK ||
        tokenize_prefix(tok, a->text, N, &ids, ntok) != FQ_OK ||
        llama_check_ids(c, ids, N) != FQ_OK ||
        llama_tensor_load(&s->ck, "model.embed_tokens.weight", 2, eshape, &embed) != FQ_OK)
        goto done;
    size_t d = (size_t)c->hidden, f = (size_t)c->intermediate,
           qd = (size_t)c->n_heads * c->head_dim, kd = (size_t)c->n_kv_heads * c->head_dim;
    size_t capw[N_INPUTS] = {d, qd, d, f};
    if (!(s->x = fq_malloc(sizeof(real) * N * d, "residual stream")))
        goto done;
    for (int i = 0; i < N_INPUTS; i++)
        if (!(s->cap[i] = fq_malloc(sizeof(real) * N * capw[i], "captured inputs")))
            goto done;
    if (!(s->wcat[0] = fq_malloc(sizeof(real) * (qd + 2 * kd) * d, "q/k/v weights")) ||
        !(s->wcat[1] = fq_malloc(sizeof(real) * 2 * f * d, "gate/up weights")) ||
        !(s->rep = fq_calloc((size_t)c->n_layers * N_INPUTS, sizeof *s->rep, "results")) ||
        rope_table_init(&s->rope, c, (int)a->seqlen) != FQ_OK ||
        llama_scratch_init(&s->w, c, (int)a->windows, (int)a->seqlen) != FQ_OK)
        goto done;
    llama_embed_fwd(s->x, embed, c->hidden, ids, (int)N);
    for (int li = 0; li < c->n_layers; li++)
        if (inspect_layer(s, a, li) != FQ_OK)
            goto done;
    rc = FQ_OK;
done:
    free(embed);
    free(ids);
    tokenizer_free(tok);
    return rc; /* the loaders' messages already name the file */
}

static json_t *inspect_doc(const inspect_args *a, const inspect_state *s, size_t ntok)
{
    const llama_config *c = &s->c;
    json_t *inputs = json_array(), *consumers = json_object(), *layers = json_array(),
           *diff = json_array();
    for (int i = 0; i < N_INPUTS; i++) {
        json_array_append_new(inputs, json_string(input_names[i]));
        json_object_set_new(consumers, input_names[i], json_string(consumer_names[i]));
    }
    int width[N_INPUTS] = {c->hidden, c->n_heads * c->head_dim, c->hidden, c->intermediate};
    int rows[N_INPUTS] = {(c->n_heads + 2 * c->n_kv_heads) * c->head_dim, c->hidden,
                          2 * c->intermediate, c->hidden};
    for (int li = 0; li < c->n_layers; li++) {
        json_t *arr = json_array();
        for (int i = 0; i < N_INPUTS; i++) {
            const difficulty_report *r = &s->rep[(size_t)li * N_INPUTS + i];
            json_t *o = report_json(r);
            json_object_set_new(o, "input", json_string(input_names[i]));
            json_object_set_new(o, "channels", json_integer(width[i]));
            json_object_set_new(o, "weight_rows", json_integer(rows[i]));
            json_object_set_new(o, "rotation", json_string(r->rotation_is_random
                                                               ? "random-orthogonal"
                                                               : "hadamard"));
            json_array_append_new(arr, o);
            json_t *dr = json_pack("{s:i, s:s}", "layer", li, "input", input_names[i]);
            for (int v = 0; v < DIFF_VARIANTS; v++)
                json_object_set_new(dr, difficulty_variant_names[v], jnum(r->act[v].d));
            json_array_append_new(diff, dr);
        }
        json_array_append_new(layers, json_pack("{s:i, s:o}", "layer", li, "inputs", arr));
    }
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:I, s:{s:i, s:i, s:i, s:i, s:i, s:i}, "
                     "s:o, s:o, s:o, s:o}",
                     "model", a->model, "text", a->text, "seqlen", (json_int_t)a->seqlen,
                     "windows", (json_int_t)a->windows, "tokens", (json_int_t)ntok, "alpha",
                     a->alpha, "bits", (json_int_t)a->bits, "config", "layers", c->n_layers,
                     "hidden", c->hidden, "intermediate", c->intermediate, "heads",
                     c->n_heads, "kv_heads", c->n_kv_heads, "head_dim", c->head_dim,
                     "inputs", inputs, "consumers", consumers, "layers", layers,
                     "difficulty", diff);
}

static void print_num(double v)
{
    if (isfinite(v))
        printf(" %11.4g", v);
    else
        printf(" %11s", "-");
}

/* One block of the terminal table: one metric, rows = layer × input, columns = variants. */
static void print_block(const inspect_state *s, const char *title, int which)
{
    printf("\n%s\n%5s  %-9s %11s %11s %11s %11s\n", title, "layer", "input", "before", "smooth",
           "rotate", "smoothrot");
    for (int li = 0; li < s->c.n_layers; li++)
        for (int i = 0; i < N_INPUTS; i++) {
            const difficulty_report *r = &s->rep[(size_t)li * N_INPUTS + i];
            printf("%5d  %-9s", li, input_names[i]);
            for (int v = 0; v < DIFF_VARIANTS; v++)
                print_num(which == 0   ? r->act[v].d
                          : which == 1 ? r->weight[v].d
                          : which == 2 ? r->act[v].max_median
                          : which == 3 ? r->act[v].kurtosis
                          : which == 4 ? r->error[v]
                                       : r->estimate[v]);
            printf("\n");
        }
}

static void print_tables(const inspect_args *a, const inspect_state *s, size_t ntok)
{
    printf("model      %s\ntext       %s (%zu tokens read; %ld windows x %ld)\n"
           "transforms smooth = SmoothQuant alpha %.2g; rotate = random Hadamard; "
           "smoothrot = both\n", a->model, a->text, ntok, a->windows, a->seqlen, a->alpha);
    print_block(s, "activation difficulty D = std_j ||X_:,j||_2", 0);
    print_block(s, "weight difficulty D = std_j ||W_:,j||_2 (consumers of the input)", 1);
    print_block(s, "activation max/median of per-channel max|x|", 2);
    print_block(s, "activation kurtosis (Pearson; 3 = Gaussian)", 3);
    char t[128];
    snprintf(t, sizeof t, "layer error ||XW^T - Q(X)Q(W)^T||_F^2 (%ld-bit per-row RTN)", a->bits);
    print_block(s, t, 4);
    print_block(s, "estimate (||W||^2 sum_t D_t^2 + ||X||^2 sum_o D_o^2)/12", 5);
}

int inspect_document(const char *model, const char *text, int seqlen, int windows,
                     json_t **doc)
{
    inspect_args a;
    memset(&a, 0, sizeof a);
    a.model = model;
    a.text = text;
    a.seqlen = seqlen;
    a.windows = windows;
    a.bits = 4;
    a.alpha = 0.5;
    inspect_state s;
    memset(&s, 0, sizeof s);
    size_t ntok = 0;
    *doc = NULL;
    int rc = inspect_run(&a, &s, &ntok);
    if (rc == FQ_OK && !(*doc = inspect_doc(&a, &s, ntok)))
        rc = fq_error("inspect: out of memory building the JSON document");
    state_free(&s);
    return rc;
}

int cmd_inspect(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        inspect_usage(stdout);
        return 0;
    }
    inspect_args a;
    if (inspect_parse(argc, argv, &a) != FQ_OK)
        return cli_fail();
    inspect_state s;
    memset(&s, 0, sizeof s);
    size_t ntok = 0;
    json_t *doc = NULL;
    strbuf page = {0};
    int rc = 1;
    if (inspect_run(&a, &s, &ntok) != FQ_OK) {
        cli_fail();
        goto done;
    }
    if (!(doc = inspect_doc(&a, &s, ntok))) {
        fq_error("inspect: out of memory building the JSON document");
        cli_fail();
        goto done;
    }
    if (a.html && (inspect_html_render(doc, &page) != FQ_OK ||
                   atomic_file_put(a.html, page.s, page.len) != FQ_OK)) {
        fq_error_wrap("inspect: --html %s", a.html);
        cli_fail();
        goto done;
    }
    if (a.json) {
        char *txt = json_dumps(doc, JSON_INDENT(1) | JSON_REAL_PRECISION(10));
        if (txt)
            printf("%s\n", txt);
        free(txt);
    } else {
        print_tables(&a, &s, ntok);
        if (a.html)
            printf("\nhtml report: %s\n", a.html);
    }
    rc = 0;
done:
    strbuf_free(&page);
    json_decref(doc);
    state_free(&s);
    return rc;
}
