/* tokenizer.h — Hugging Face tokenizer.json (BPE) in C: load, encode, decode.
 *
 * Ids are byte-identical to Hugging Face `tokenizers` 0.23.2 for the two BPE families
 * LLaMA checkpoints use: SentencePiece-style (Prepend/Replace normalizer, byte_fallback,
 * as LLaMA-2 and stories260K) and byte-level (Split regex + ByteLevel, as LLaMA-3).
 * Components the file names but flatq does not implement are refused at load time with
 * an error naming the component and the file, never silently ignored.
 *
 * A loaded tokenizer is read-only: encode/decode may run on several threads at once.
 */
#ifndef FQ_TOKENIZER_H
#define FQ_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tokenizer tokenizer;

/* A directory means DIR/tokenizer.json (and DIR/tokenizer_config.json for eos_token). */
int tokenizer_load(const char *path_or_model_dir, tokenizer **out);
/* Load from JSON text in memory; label names it in error messages. */
int tokenizer_load_buffer(const char *json, size_t len, const char *label, tokenizer **out);
void tokenizer_free(tokenizer *t);

/* Encode UTF-8 text; add_special → post-processor (BOS) applied. *ids malloc'ed.
 * Added/special token strings in the text are always matched, as Hugging Face does. */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int add_special,
                     int32_t **ids, size_t *n_ids);
/* ids → UTF-8 text through the tokenizer.json decoder; special tokens are kept. *text is
 * malloc'ed and NUL-terminated; *len excludes the NUL. */
int tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len);
/* Model vocabulary plus added tokens (ids are < this). */
int tokenizer_vocab_size(const tokenizer *t);
int tokenizer_bos_id(const tokenizer *t); /* -1 if none */
int tokenizer_eos_id(const tokenizer *t); /* -1 if none */

/* Read a whole file and encode it (used by eval and calibration). */
int tokenizer_encode_file(const tokenizer *t, const char *path, int add_special,
                          int32_t **ids, size_t *n_ids);

#endif
