// tokenizer_npm.mjs — encode throughput of Hugging Face `tokenizers` (Node bindings), the
// baseline for bench/bench_tokenizer.c, which runs this script itself.
// Usage: node bench/tokenizer_npm.mjs TEXT MODEL_DIR REPEAT
// Prints one JSON line: {"tokens": N, "best_s": S, "mean_s": S}. The package is the one
// installed under tests/reference/node_modules (cd tests/reference && npm install).
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(resolve(here, '..', 'tests', 'reference'), 'package.json'));
const { Tokenizer } = require('tokenizers');

const [textPath, modelDir, repeatArg] = process.argv.slice(2);
const text = readFileSync(textPath, 'utf8');
const tok = Tokenizer.fromFile(join(modelDir, 'tokenizer.json'));
const repeat = Number(repeatArg || 5);
// One untimed run, as the C side gets none either way but V8/allocator warm-up is fair.
let n = (await tok.encode(text, null, { addSpecialTokens: true })).getIds().length;
let best = Infinity, total = 0;
for (let i = 0; i < repeat; i++) {
  const t0 = process.hrtime.bigint();
  const enc = await tok.encode(text, null, { addSpecialTokens: true });
  n = enc.getIds().length;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  best = Math.min(best, s);
  total += s;
}
console.log(JSON.stringify({ tokens: n, best_s: best, mean_s: total / repeat }));
