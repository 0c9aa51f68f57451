/* layer_result.h — finished layers in the output directory, and the resume rules.
 *
 * A layer's result (`layer_%03d.safetensors`; its contents are the writer's business)
 * is committed atomically, then the coordinator, after checking the digest the worker
 * sent, writes a sidecar `layer_%03d.safetensors.sha256` in sha256sum's format. A layer
 * counts as done only when the sidecar exists AND the file's digest matches it: a
 * half-written, corrupted or orphan result is redone, never trusted by existence.
 *
 * OUTPUT/job.fingerprint (JSON: {"recipe": HEX, "model": HEX}) ties the directory to
 * one job. A rerun with the same fingerprints resumes; a different one is refused with
 * a message saying whether the recipe or the model changed, so stale layers are never
 * silently mixed with new ones.
 */
#ifndef FQ_LAYER_RESULT_H
#define FQ_LAYER_RESULT_H

#include <stddef.h>
#include <stdint.h>

/* "OUT/layer_%03d.safetensors". */
int layer_result_path(const char *outdir, int layer, char *out, size_t cap);

/* Atomic write of a whole result file (temp name, fsync, rename, fsync dir). */
int result_file_commit(const char *path, const void *bytes, size_t n);

/* sha256 of a file's contents, streamed, as 64 lowercase hex digits. */
int file_sha256_hex(const char *path, char hex_out[65]);

/* Record layer as done with the digest of its result (writes the sidecar atomically). */
int layer_result_mark_done(const char *outdir, int layer, const char *sha_hex);

/* 1 when the layer's sidecar exists and the result file matches it; 0 otherwise, with
 * the reason in fq_errmsg(). */
int layer_result_verified(const char *outdir, int layer);

/* Remove a layer's sidecar and result (before redoing it); absent is fine. */
int layer_result_forget(const char *outdir, int layer);

/* done[i] = layer_result_verified(outdir, i) for i < nlayers; *ndone = how many. */
int layer_result_scan(const char *outdir, int nlayers, uint8_t *done, int *ndone);

/* Create outdir if needed and check OUTPUT/job.fingerprint: absent → written (refused
 * if the directory already holds layer sidecars of an unknown job); equal → FQ_OK;
 * different → FQ_ERR naming what changed (recipe, model or both). Fingerprints are 64
 * lowercase hex characters. */
int job_fingerprint_check(const char *outdir, const char *recipe_fp, const char *model_fp);

/* The fingerprint of recipe+model together (for the activation cache header). */
void job_fingerprint_combine(const char *recipe_fp, const char *model_fp, char out[65]);

#endif
