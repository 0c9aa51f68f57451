/* test_tp_plan.c — the tensor-parallel slices of runtime/tp_plan.c: every rank's heads, KV
 * heads, intermediate channels, transform blocks and vocabulary rows tile the model exactly
 * once (checked by counting, independently of the plan's arithmetic), and a degree that
 * does not divide a dimension is refused with the rank and the cause named. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "runtime/tp_plan.h"

static llama_config shape(int h, int g, int f, int V)
{
    llama_config c;
    memset(&c, 0, sizeof c);
    c.n_heads = h;
    c.n_kv_heads = g;
    c.intermediate = f;
    c.vocab = V;
    c.head_dim = 128;
    c.hidden = h * 128;
    return c;
}

/* count[i] += 1 for i in [lo, lo + n) */
static void cover(int *count, int size, int lo, int n)
{
    for (int i = lo; i < lo + n; i++) {
        assert_true(i >= 0 && i < size);
        count[i]++;
    }
}

static void check_tiling(const llama_config *c, int tp_blocks, int tp)
{
    int *heads = calloc((size_t)c->n_heads, sizeof(int));
    int *kv = calloc((size_t)c->n_kv_heads, sizeof(int));
    int *ffn = calloc((size_t)c->intermediate, sizeof(int));
    int *voc = calloc((size_t)c->vocab, sizeof(int));
    int *blk = calloc((size_t)(tp_blocks > 0 ? tp_blocks : 1), sizeof(int));
    assert_non_null(heads);
    assert_non_null(kv);
    assert_non_null(ffn);
    assert_non_null(voc);
    assert_non_null(blk);
    int rows = 0;
    for (int r = 0; r < tp; r++) {
        tp_plan p;
        assert_int_equal(tp_plan_make(&p, c, tp_blocks, tp, r), FQ_OK);
        assert_int_equal(p.rank, r);
        cover(heads, c->n_heads, p.head0, p.heads);
        cover(kv, c->n_kv_heads, p.kv_head0, p.kv_heads);
        cover(ffn, c->intermediate, p.ffn0, p.ffn);
        cover(voc, c->vocab, p.vocab0, p.vocab_real);
        if (tp_blocks > 0)
            cover(blk, tp_blocks, p.block0, p.blocks);
        else
            assert_int_equal(p.blocks, 0);
        /* a rank's query heads read only its own KV heads (GQA groups stay whole) */
        int group = c->n_heads / c->n_kv_heads;
        assert_int_equal(p.head0 / group, p.kv_head0);
        assert_int_equal(p.heads, p.kv_heads * group);
        /* the shard width is the same on every rank; padding only at the end */
        assert_true(p.vocab_real <= p.vocab_shard);
        assert_true((long)p.vocab_shard * tp >= c->vocab);
        rows += p.vocab_shard;
    }
    for (int i = 0; i < c->n_heads; i++)
        assert_int_equal(heads[i], 1);
    for (int i = 0; i < c->n_kv_heads; i++)
        assert_int_equal(kv[i], 1);
    for (int i = 0; i < c->intermediate; i++)
        assert_int_equal(ffn[i], 1);
    for (int i = 0; i < c->vocab; i++)
        assert_int_equal(voc[i], 1);
    for (int i = 0; i < tp_blocks; i++)
        assert_int_equal(blk[i], 1);
    assert_true(rows - c->vocab < tp); /* less than one row of padding per rank */
    free(heads);
    free(kv);
    free(ffn);
    free(voc);
    free(blk);
}

static void test_llama3_70b_shapes_tile(void **state)
{
    (void)state;
    llama_config c = shape(64, 8, 28672, 128256);
    for (int tp = 1; tp <= 8; tp *= 2) {
        check_tiling(&c, 0, tp);
        check_tiling(&c, 8, tp);
    }
    tp_plan p;
    assert_int_equal(tp_plan_make(&p, &c, 8, 2, 1), FQ_OK);
    assert_int_equal(p.heads, 32);
    assert_int_equal(p.head0, 32);
    assert_int_equal(p.kv_head0, 4);
    assert_int_equal(p.ffn0, 14336);
    assert_int_equal(p.blocks, 4); /* a rank holds T/T' blocks of T_d and M_o */
    assert_int_equal(p.block0, 4);
}

static void test_vocab_padding(void **state)
{
    (void)state;
    llama_config c = shape(8, 4, 172, 8195);
    check_tiling(&c, 0, 2);
    check_tiling(&c, 4, 4);
    tp_plan p;
    assert_int_equal(tp_plan_make(&p, &c, 0, 2, 1), FQ_OK);
    assert_int_equal(p.vocab_shard, 4098);
    assert_int_equal(p.vocab0, 4098);
    assert_int_equal(p.vocab_real, 4097);
}

static void expect_refusal(const llama_config *c, int tp_blocks, int tp, int rank,
                           const char *cause)
{
    tp_plan p;
    assert_int_equal(tp_plan_make(&p, c, tp_blocks, tp, rank), FQ_ERR);
    char want[64];
    snprintf(want, sizeof want, "rank %d", rank);
    assert_non_null(strstr(fq_errmsg(), want));
    if (!strstr(fq_errmsg(), cause))
        fprintf(stderr, "message: %s\n", fq_errmsg());
    assert_non_null(strstr(fq_errmsg(), cause));
}

static void test_refusals_name_rank_and_cause(void **state)
{
    (void)state;
    llama_config m16 = shape(6, 2, 1024, 8192); /* flatq-llama-16m */
    check_tiling(&m16, 2, 2);
    expect_refusal(&m16, 0, 4, 3, "6 attention heads");
    expect_refusal(&m16, 0, 3, 1, "2 KV heads");
    llama_config odd = shape(16, 16, 1000, 512);
    expect_refusal(&odd, 0, 16, 5, "1000 intermediate channels");
    expect_refusal(&m16, 1, 2, 0, "tp_blocks 1");
    llama_config c70 = shape(64, 8, 28672, 128256);
    expect_refusal(&c70, 2, 4, 2, "tp_blocks 2");
    expect_refusal(&c70, 0, 2, 2, "rank 2 of 2");
    expect_refusal(&c70, -1, 1, 0, "tp_blocks -1");
    llama_config bad = shape(6, 4, 1024, 8192); /* g does not divide h */
    expect_refusal(&bad, 0, 1, 0, "g dividing h");
    tp_plan p;
    assert_int_equal(tp_plan_make(NULL, &c70, 0, 1, 0), FQ_ERR);
    assert_int_equal(tp_plan_make(&p, NULL, 0, 1, 0), FQ_ERR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama3_70b_shapes_tile),
        cmocka_unit_test(test_vocab_padding),
        cmocka_unit_test(test_refusals_name_rank_and_cause),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
