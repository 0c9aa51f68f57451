/* layer_reparam.h — a trained FlatQuant layer as a quantized layer (ALGORITHM §5).
 *
 * fq_merge (core/, float64) folds the learned transforms, scales and clips into the
 * weights and materialises the online factors; this file then quantizes each merged
 * weight by RTN with its row maximum (which, the row being clipped already, is the learned
 * clip: §5.4), packs the codes (int4 nibbles for ≤ 4 bits) and fills the qlayer that the
 * checkpoint writer and the quantized forward (core/qlayer_fwd.c) read. Bits 16 keeps the
 * merged weight in fp32.
 */
#ifndef FQ_LAYER_REPARAM_H
#define FQ_LAYER_REPARAM_H

#include "fq_layer.h"
#include "qlayer.h"

/* The qconfig a FlatQuant layer trained with P carries (bits, tp_blocks, ...). */
qconfig layer_reparam_qconfig(const fq_params *P);

/* Fill q (allocated here; qlayer_free releases it) from the trained P of layer l. */
int layer_reparam(qlayer *q, const fq_params *P, const llama_layer *l);
/* The same, also handing back the seven merged, clipped, unquantized weights (fp32,
 * [out, in], malloc'ed; the caller frees them) that the GPTQ pass quantizes later. */
int layer_reparam_keep(qlayer *q, const fq_params *P, const llama_layer *l,
                       float *merged[QL_NLINEAR]);
/* The same with the merged weights already computed (wm[lin], malloc'ed fp32 [out, in]: the
 * GPU's, worker/calibrate_layer_cuda.h): only the factors, norms and clips are merged here
 * (fq_merge_parts without weights), then wm is quantized. Takes wm over: each wm[lin] is
 * freed or handed on as merged[lin], and set to NULL, in every case. wm NULL: the float64
 * merge of layer_reparam_keep. */
int layer_reparam_from(qlayer *q, const fq_params *P, const llama_layer *l,
                       float *wm[QL_NLINEAR], float *merged[QL_NLINEAR]);

#endif
