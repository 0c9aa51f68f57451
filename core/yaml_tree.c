/* yaml_tree.c — libyaml events → yt_node tree with marks (see yaml_tree.h).
 *
 * The builder keeps an explicit stack of open containers (no recursion while parsing),
 * so a hostile file can only make it fail, not overflow the C stack. Freeing and
 * merging recurse, but only as deep as the parser allowed (YT_MAX_DEPTH).
 */
#include "yaml_tree.h"

#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define YT_MAX_DEPTH 32

yt_source *yt_source_add(yt_source **list, const char *label, const char *dir, int has_marks)
{
    yt_source *s = fq_calloc(1, sizeof *s, "yaml source");
    if (!s)
        return NULL;
    s->label = fq_strdup(label);
    s->dir = dir ? fq_strdup(dir) : NULL;
    if (!s->label || (dir && !s->dir)) {
        free(s->label);
        free(s->dir);
        free(s);
        return NULL;
    }
    s->has_marks = has_marks;
    s->next = *list;
    *list = s;
    return s;
}

void yt_sources_free(yt_source *list)
{
    while (list) {
        yt_source *next = list->next;
        free(list->label);
        free(list->dir);
        free(list);
        list = next;
    }
}

yt_node *yt_new(yt_kind kind, const yt_source *src, int line, int col, const char *text)
{
    yt_node *n = fq_calloc(1, sizeof *n, "yaml node");
    if (!n)
        return NULL;
    n->kind = kind;
    n->src = src;
    n->line = line;
    n->col = col;
    if (kind == YT_SCALAR) {
        n->text = fq_strdup(text ? text : "");
        if (!n->text) {
            free(n);
            return NULL;
        }
    }
    return n;
}

void yt_free(yt_node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n; i++)
        yt_free(n->items[i]);
    free(n->items);
    free(n->text);
    free(n);
}

int yt_append(yt_node *c, yt_node *item)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 8;
        yt_node **items = realloc(c->items, cap * sizeof *items);
        if (!items)
            return fq_error("out of memory growing a YAML container");
        c->items = items;
        c->cap = cap;
    }
    c->items[c->n++] = item;
    return FQ_OK;
}

void yt_where(const yt_node *n, char *buf, size_t cap)
{
    if (n && n->src && n->src->has_marks)
        snprintf(buf, cap, "%s:%d:%d", n->src->label, n->line, n->col);
    else
        snprintf(buf, cap, "%s", n && n->src ? n->src->label : "?");
}

const char *yt_kind_name(const yt_node *n)
{
    if (!n)
        return "nothing";
    switch (n->kind) {
    case YT_MAP: return "a mapping";
    case YT_SEQ: return "a list";
    default: return yt_is_null(n) ? "null" : "a scalar";
    }
}

int yt_is_null(const yt_node *n)
{
    if (!n || n->kind != YT_SCALAR || n->quoted)
        return 0;
    const char *t = n->text;
    return !*t || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") ||
           !strcmp(t, "NULL");
}

yt_node *yt_map_get(const yt_node *map, const char *key, yt_node **key_node)
{
    if (!map || map->kind != YT_MAP)
        return NULL;
    for (size_t i = 0; i + 1 < map->n; i += 2)
        if (strcmp(map->items[i]->text, key) == 0) {
            if (key_node)
                *key_node = map->items[i];
            return map->items[i + 1];
        }
    return NULL;
}

yt_node *yt_map_take(yt_node *map, const char *key)
{
    if (!map || map->kind != YT_MAP)
        return NULL;
    for (size_t i = 0; i + 1 < map->n; i += 2)
        if (strcmp(map->items[i]->text, key) == 0) {
            yt_node *v = map->items[i + 1];
            yt_free(map->items[i]);
            memmove(map->items + i, map->items + i + 2, (map->n - i - 2) * sizeof *map->items);
            map->n -= 2;
            return v;
        }
    return NULL;
}

int yt_merge(yt_node *base, yt_node *over)
{
    int rc = FQ_OK;
    size_t i = 0;
    for (; i + 1 < over->n && rc == FQ_OK; i += 2) {
        yt_node *k = over->items[i], *v = over->items[i + 1];
        over->items[i] = over->items[i + 1] = NULL;
        size_t j = 0;
        while (j + 1 < base->n && strcmp(base->items[j]->text, k->text) != 0)
            j += 2;
        if (j + 1 >= base->n) {
            if (yt_append(base, k) != FQ_OK) {
                yt_free(k);
                yt_free(v);
                rc = FQ_ERR;
            } else if (yt_append(base, v) != FQ_OK) {
                yt_free(base->items[--base->n]);
                yt_free(v);
                rc = FQ_ERR;
            }
        } else if (base->items[j + 1]->kind == YT_MAP && v->kind == YT_MAP) {
            yt_free(k);
            rc = yt_merge(base->items[j + 1], v);
        } else {
            /* the overriding key's position is where the value now comes from */
            yt_free(base->items[j]);
            yt_free(base->items[j + 1]);
            base->items[j] = k;
            base->items[j + 1] = v;
        }
    }
    yt_free(over);
    return rc;
}

/* ---- building from events ---- */

typedef struct {
    yt_node *node;
    yt_node *pending_key; /* maps: key read, value not yet */
} yt_frame;

typedef struct {
    const yt_source *src;
    yt_node *root;
    yt_frame stack[YT_MAX_DEPTH];
    int depth;
    int docs;
} yt_builder;

/* "FILE:LINE:COL: what", or for sources without marks (--set values)
 * "LABEL: what (at character C of the value)". */
static int yt_errf(const yt_source *src, yaml_mark_t m, const char *what)
{
    if (!src->has_marks)
        return fq_error("%s: %s (at character %zu of the value)", src->label, what,
                        m.index + 1);
    return fq_error("%s:%zu:%zu: %s", src->label, m.line + 1, m.column + 1, what);
}

static int yt_attach(yt_builder *b, yt_node *n, yaml_mark_t m)
{
    if (b->depth == 0) {
        b->root = n;
        return FQ_OK;
    }
    yt_frame *f = &b->stack[b->depth - 1];
    if (f->node->kind == YT_SEQ)
        return yt_append(f->node, n) == FQ_OK ? FQ_OK : (yt_free(n), FQ_ERR);
    if (!f->pending_key) {
        if (n->kind != YT_SCALAR) {
            yt_free(n);
            return yt_errf(b->src, m, "expected a plain key, got a list or mapping as a key");
        }
        yt_node *prev_key = NULL;
        if (yt_map_get(f->node, n->text, &prev_key)) {
            char what[400];
            snprintf(what, sizeof what, "duplicate key '%.200s' (first at line %d, column %d; "
                     "expected each key once)", n->text, prev_key->line, prev_key->col);
            int rc = yt_errf(b->src, m, what);
            yt_free(n);
            return rc;
        }
        f->pending_key = n;
        return FQ_OK;
    }
    yt_node *k = f->pending_key;
    f->pending_key = NULL;
    if (yt_append(f->node, k) != FQ_OK) {
        yt_free(k);
        yt_free(n);
        return FQ_ERR;
    }
    if (yt_append(f->node, n) != FQ_OK) {
        yt_free(f->node->items[--f->node->n]);
        yt_free(n);
        return FQ_ERR;
    }
    return FQ_OK;
}

static int yt_on_event(yt_builder *b, const yaml_event_t *ev)
{
    yaml_mark_t m = ev->start_mark;
    int line = (int)m.line + 1, col = (int)m.column + 1;
    yt_node *n;
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++b->docs > 1)
            return yt_errf(b->src, m, "a second YAML document (expected exactly one)");
        return FQ_OK;
    case YAML_ALIAS_EVENT:
        return yt_errf(b->src, m, "alias (*name) in a job file (expected plain values; "
                                  "anchors and aliases are not supported)");
    case YAML_SCALAR_EVENT:
        if (memchr(ev->data.scalar.value, 0, ev->data.scalar.length))
            return yt_errf(b->src, m, "NUL character in a value (expected text)");
        n = yt_new(YT_SCALAR, b->src, line, col, (const char *)ev->data.scalar.value);
        if (!n)
            return FQ_ERR;
        n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE &&
                    ev->data.scalar.style != YAML_ANY_SCALAR_STYLE;
        return yt_attach(b, n, m);
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        if (b->depth == YT_MAX_DEPTH)
            return yt_errf(b->src, m, "nesting too deep (expected at most 32 levels)");
        n = yt_new(ev->type == YAML_MAPPING_START_EVENT ? YT_MAP : YT_SEQ, b->src, line, col,
                   NULL);
        if (!n || yt_attach(b, n, m) != FQ_OK)
            return FQ_ERR;
        b->stack[b->depth].node = n;
        b->stack[b->depth].pending_key = NULL;
        b->depth++;
        return FQ_OK;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        if (b->depth > 0)
            b->depth--;
        return FQ_OK;
    default:
        return FQ_OK;
    }
}

int yt_parse(const char *text, size_t len, const yt_source *src, yt_node **out)
{
    if (!text || !src || !out)
        return fq_error("yt_parse: NULL argument (expected text, source and output)");
    *out = NULL;
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return fq_error("%s: cannot initialise the YAML parser (out of memory?)", src->label);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    yt_builder b;
    memset(&b, 0, sizeof b);
    b.src = src;
    int rc = FQ_OK, done = 0;
    while (!done && rc == FQ_OK) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            char what[600];
            snprintf(what, sizeof what, "malformed YAML: %s%s%s (expected valid YAML)",
                     p.problem ? p.problem : "parse error", p.context ? " " : "",
                     p.context ? p.context : "");
            rc = yt_errf(src, p.problem_mark, what);
            break;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        rc = yt_on_event(&b, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    for (int i = 0; i < YT_MAX_DEPTH; i++)
        yt_free(b.stack[i].pending_key); /* a key whose value never came (error paths) */
    if (rc != FQ_OK) {
        yt_free(b.root);
        return rc;
    }
    *out = b.root;
    return FQ_OK;
}
