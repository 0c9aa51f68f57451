// tokenizer_golden.mjs — golden token ids from Hugging Face `tokenizers` (Node bindings,
// the Rust crate) for the C tokenizer's tests (tests/unit/test_tokenizer.c).
//
// For each (model, text) pair it writes tests/golden/tokenizer/MODEL.TEXT.golden: the token
// count, the sha256 of the WHOLE id sequence serialized as little-endian int32, and the
// first 10,000 ids. Only the head is stored in full to keep the files small; the hash
// pins the rest. It also checks the example id lists quoted in shared/data/SOURCES.md.
//
// Metaspace variants: newer conversions of LLaMA-2-style tokenizers drop the
// Prepend+Replace normalizer for the Metaspace pre-tokenizer and decoder. No shared model
// ships one, so the script derives two from stories260K-hf (same vocab, merges, added
// tokens and post-processor; normalizer null; pre_tokenizer Metaspace prepend_scheme
// "first" with split false, resp. true; decoder Sequence[Metaspace, ByteFallback, Fuse]),
// has the library load and re-serialize them into tests/golden/tokenizer/NAME.tokenizer.json
// (so the committed file is the library's own form of it), and makes their goldens from
// those files. Their golden's `model` line is that file, '@'-prefixed (repository-relative).
//
// Usage (from the repository root):
//   (cd tests/reference && npm install)      # tokenizers 0.23.2 into node_modules/
//   node tests/reference/tokenizer_golden.mjs
// Data comes from $FLATQ_DATA (default ../shared/data relative to the repository root).
import { Tokenizer } from 'tokenizers';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const data = process.env.FLATQ_DATA || resolve(repo, '..', 'shared', 'data');
const outDir = join(repo, 'tests', 'golden', 'tokenizer');
const version = createRequire(import.meta.url)('tokenizers/package.json').version;
const HEAD = 10000;

const models = ['stories260K-hf', 'flatq-llama-16m'];
// Derived tokenizers: name → split flag of the Metaspace pre-tokenizer.
const metaspaceVariants = { 'stories260K-metaspace': false, 'stories260K-metaspace-split': true };
const metaspaceTexts = ['wiki.test.paper', 'tinystories', 'hard_cases'];
// name → path; '@' means relative to the repository, otherwise to FLATQ_DATA.
const texts = {
  'wiki.test.paper': 'text/wikitext-2-raw/wiki.test.paper.txt',
  'wiki.test.raw': 'text/wikitext-2-raw/wiki.test.raw',
  'wt2tok.valid': 'text/wikitext-2-tokens/valid.txt',
  'tinystories': 'text/tinystories/tinystories_sample.txt',
  'hard_cases': '@tests/golden/tokenizer/hard_cases.txt',
};

function readText(rel) {
  const path = rel.startsWith('@') ? join(repo, rel.slice(1)) : join(data, rel);
  // fatal: a file that is not UTF-8 must stop the script, not be silently repaired.
  return new TextDecoder('utf-8', { fatal: true }).decode(readFileSync(path));
}

function idsSha256(ids) {
  const buf = Buffer.alloc(ids.length * 4);
  ids.forEach((id, i) => buf.writeInt32LE(id, i * 4));
  return createHash('sha256').update(buf).digest('hex');
}

function goldenText(model, name, rel, addSpecial, ids) {
  const lines = [
    `# flatq tokenizer golden, made by tests/reference/tokenizer_golden.mjs with tokenizers ${version} (Node)`,
    `model ${model}`,
    `text ${rel}`,
    `add_special ${addSpecial ? 1 : 0}`,
    `count ${ids.length}`,
    `sha256_int32le ${idsSha256(ids)}`,
    `head ${Math.min(HEAD, ids.length)}`,
  ];
  const head = ids.slice(0, HEAD);
  for (let i = 0; i < head.length; i += 20) lines.push(head.slice(i, i + 20).join(' '));
  return lines.join('\n') + '\n';
}

// Writes tests/golden/tokenizer/NAME.tokenizer.json; returns its '@' path.
function writeMetaspaceVariant(name, split) {
  const j = JSON.parse(readFileSync(join(data, 'models', 'stories260K-hf', 'tokenizer.json'), 'utf8'));
  const meta = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split };
  j.normalizer = null;
  j.pre_tokenizer = meta;
  j.decoder = { type: 'Sequence', decoders: [meta, { type: 'ByteFallback' }, { type: 'Fuse' }] };
  const rel = `tests/golden/tokenizer/${name}.tokenizer.json`;
  Tokenizer.fromString(JSON.stringify(j)).save(join(repo, rel), true);
  // The saved file must load and say what was asked.
  const back = JSON.parse(readFileSync(join(repo, rel), 'utf8'));
  if (JSON.stringify(back.pre_tokenizer) !== JSON.stringify(meta) || back.normalizer !== null)
    throw new Error(`${rel}: the library wrote ${JSON.stringify(back.pre_tokenizer)}`);
  Tokenizer.fromFile(join(repo, rel));
  return '@' + rel;
}

const jobs = models.map((m) => [m, join(data, 'models', m, 'tokenizer.json'), Object.keys(texts)]);
for (const [name, split] of Object.entries(metaspaceVariants)) {
  const at = writeMetaspaceVariant(name, split);
  jobs.push([name, join(repo, at.slice(1)), metaspaceTexts, at]);
}

let failures = 0;
for (const [model, tokFile, textNames, modelRef] of jobs) {
  const tok = Tokenizer.fromFile(tokFile);
  for (const name of textNames) {
    const rel = texts[name];
    const text = readText(rel);
    const variants = name === 'hard_cases' ? [true, false] : [true];
    for (const addSpecial of variants) {
      const enc = await tok.encode(text, null, { addSpecialTokens: addSpecial });
      const ids = Array.from(enc.getIds());
      const file = `${model}.${name}${addSpecial ? '' : '.nospecial'}.golden`;
      writeFileSync(join(outDir, file), goldenText(modelRef || model, name, rel, addSpecial, ids));
      console.log(`${file}: ${ids.length} ids`);
      if (name === 'hard_cases' && addSpecial) {
        // Decoding (special tokens kept) is checked against the library too.
        const decoded = await tok.decode(ids, false);
        writeFileSync(join(outDir, `${model}.hard_cases.decoded.txt`), decoded);
      }
    }
  }
}

// The example id lists that shared/data/SOURCES.md quotes for stories260K-hf.
const examples = [
  ['Once upon a time, there was a little girl named Lily.',
   [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426]],
  ['The cat sat on the mat.\nIt was happy!',
   [1, 291, 280, 294, 262, 294, 353, 265, 284, 294, 426, 13, 442, 413, 286, 393, 443]],
  [' Robert Boulter is an English film , television and theatre actor .',
   [1, 410, 410, 461, 414, 430, 285, 413, 368, 277, 421, 413, 285, 410, 293, 261, 416, 410, 459,
    416, 428, 421, 293, 415, 272, 290, 423, 410, 432, 259, 411, 305, 435, 293, 417, 289, 269, 265,
    294, 276, 261, 429, 413, 304, 410, 426]],
];
const stories = Tokenizer.fromFile(join(data, 'models', 'stories260K-hf', 'tokenizer.json'));
for (const [text, want] of examples) {
  const got = Array.from((await stories.encode(text, null, { addSpecialTokens: true })).getIds());
  const ok = JSON.stringify(got) === JSON.stringify(want);
  if (!ok) failures++;
  console.log(`SOURCES.md example ${JSON.stringify(text.slice(0, 30))}…: ${ok ? 'matches' : 'DIFFERS: ' + JSON.stringify(got)}`);
}
process.exit(failures ? 1 : 0);
