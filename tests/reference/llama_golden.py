#!/usr/bin/env python3
"""llama_golden.py — golden perplexities and logits from PyTorch/transformers (fp32).

Run on the GPU machine (it has torch, transformers and tokenizers):
    python3 tests/reference/llama_golden.py --data DATA_DIR --out tests/golden/reference
DATA_DIR holds models/{stories260K-hf,flatq-llama-16m} and text/... as ../shared/data does.

Protocol (the one `flatq eval` implements): tokenize the whole text once with the
tokenizer's special tokens (BOS first), cut into non-overlapping windows of SEQ tokens,
drop the last partial window, score each window on its own (its first token is context
only), mean NLL over all predicted positions, ppl = exp(mean NLL). float32 weights and
math, eager attention, TF32 off, on CPU by default so that nothing but fp32 is involved.
"""
import argparse, hashlib, json, math, os, struct, sys, time

import torch
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM

CASES = [
    # (model, text file, first N characters or None, seqlen)
    ("stories260K-hf", "text/tinystories/tinystories_sample.txt", None, 512),
    ("stories260K-hf", "text/wikitext-2-raw/wiki.test.raw", 20000, 512),
    ("flatq-llama-16m", "text/wikitext-2-raw/wiki.test.paper.txt", None, 2048),
    ("flatq-llama-16m", "text/wikitext-2-raw/wiki.test.paper.txt", None, 1024),
]
PROMPTS = {
    "stories260K-hf": "Once upon a time, there was a little girl named Lily.",
    "flatq-llama-16m": "The history of the city begins with the",
}


def ids_sha256(ids):
    return hashlib.sha256(struct.pack("<%di" % len(ids), *ids)).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(args.out, exist_ok=True)
    models, toks = {}, {}
    result = {"software": {"torch": torch.__version__}, "ppl": [], "logits": {}}
    import transformers, tokenizers
    result["software"]["transformers"] = transformers.__version__
    result["software"]["tokenizers"] = tokenizers.__version__
    for name in sorted({c[0] for c in CASES}):
        d = os.path.join(args.data, "models", name)
        models[name] = LlamaForCausalLM.from_pretrained(
            d, dtype=torch.float32, attn_implementation="eager").to(args.device).eval()
        toks[name] = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    with torch.no_grad():
        for name, path, nchars, seq in CASES:
            text = open(os.path.join(args.data, path), encoding="utf-8").read()
            if nchars is not None:
                text = text[:nchars]
            ids = toks[name].encode(text, add_special_tokens=True).ids
            nwin = len(ids) // seq
            t0 = time.time()
            total, count = 0.0, 0
            for w in range(nwin):
                x = torch.tensor([ids[w * seq:(w + 1) * seq]], device=args.device)
                logits = models[name](x).logits.float()[0]
                lp = torch.log_softmax(logits.double(), dim=-1)
                tgt = x[0, 1:]
                nll = -lp[:-1].gather(1, tgt[:, None]).sum().item()
                total += nll
                count += seq - 1
            mean = total / count
            row = {"model": name, "text": path, "chars": nchars, "seqlen": seq,
                   "tokens": len(ids), "ids_sha256": ids_sha256(ids), "windows": nwin,
                   "predicted": count, "nll": mean, "ppl": math.exp(mean),
                   "seconds": time.time() - t0}
            print(json.dumps(row), flush=True)
            result["ppl"].append(row)
        for name, prompt in PROMPTS.items():
            ids = toks[name].encode(prompt, add_special_tokens=True).ids
            logits = models[name](torch.tensor([ids], device=args.device)).logits.float()[0]
            # Every position's first 512 logits and the whole last row keep the file small.
            rows = logits.cpu()
            result["logits"][name] = {"prompt": prompt, "ids": ids,
                                      "head": [[float(v) for v in r[:512]] for r in rows],
                                      "last": [float(v) for v in rows[-1]]}
    with open(os.path.join(args.out, "llama_golden.json"), "w") as f:
        json.dump(result, f)
    print("wrote", os.path.join(args.out, "llama_golden.json"))


if __name__ == "__main__":
    sys.exit(main())
