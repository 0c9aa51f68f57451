/* yaml_tree.h — a YAML document as a small tree whose every node remembers where it
 * was written (file, line, column), so that job validation can point at the exact spot.
 *
 * Built from libyaml's event API rather than its document API: the events give the
 * marks directly, let us refuse what job files never need (aliases, several documents,
 * non-scalar keys, duplicate keys, absurd nesting) before any work, and avoid the
 * alias expansion blow-up of a naive tree walk. Trees from several files merge
 * (include: the later one overrides), and nodes keep a pointer to their source so that
 * relative paths can be resolved against the file they were written in.
 */
#ifndef FQ_YAML_TREE_H
#define FQ_YAML_TREE_H

#include <stddef.h>

/* Where nodes came from. `label` is what errors print ("jobs/x.yaml" or
 * "--set 'a.b=1'"); `dir` is the directory relative paths in it resolve against
 * (NULL: the current directory). Owned by a yt_sources list that outlives the tree. */
typedef struct yt_source {
    char *label;
    char *dir;
    int has_marks;            /* 1: nodes carry line:column; 0: the label says it all */
    struct yt_source *next;
} yt_source;

typedef enum { YT_SCALAR, YT_SEQ, YT_MAP } yt_kind;

typedef struct yt_node {
    yt_kind kind;
    const yt_source *src;
    int line, col;            /* 1-based */
    char *text;               /* scalars: the value (NUL-terminated) */
    int quoted;               /* scalars: written in quotes (so never null/number/bool) */
    struct yt_node **items;   /* seq: elements; map: key0, value0, key1, value1, ... */
    size_t n, cap;            /* n counts entries of items (2 per map pair) */
} yt_node;

/* Add a source to a list (the list owns it). Returns NULL after setting an error. */
yt_source *yt_source_add(yt_source **list, const char *label, const char *dir, int has_marks);
void yt_sources_free(yt_source *list);

/* Parse one YAML document; *out is its root (NULL for an empty document). */
int yt_parse(const char *text, size_t len, const yt_source *src, yt_node **out);
void yt_free(yt_node *n);

/* A new scalar / empty map node (NULL on allocation failure, error set). */
yt_node *yt_new(yt_kind kind, const yt_source *src, int line, int col, const char *text);
/* Append to a sequence, or a key/value pair to a map (takes ownership). */
int yt_append(yt_node *container, yt_node *item);

/* The value under `key` in a map (NULL if absent); *key_node gets the key if wanted. */
yt_node *yt_map_get(const yt_node *map, const char *key, yt_node **key_node);
/* Remove `key` from a map, handing its value to the caller (NULL if absent). */
yt_node *yt_map_take(yt_node *map, const char *key);
/* Overlay `over` onto `base` (both maps): mappings merge key by key, anything else in
 * `over` replaces what `base` had. Consumes `over`. */
int yt_merge(yt_node *base, yt_node *over);

/* "FILE:LINE:COL" for sources with marks, else the source label. */
void yt_where(const yt_node *n, char *buf, size_t cap);
/* A node's kind in words, for "expected X, got Y" messages. */
const char *yt_kind_name(const yt_node *n);
/* True for a plain scalar meaning null (empty, ~, null). */
int yt_is_null(const yt_node *n);

#endif
