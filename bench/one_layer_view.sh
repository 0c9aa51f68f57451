#!/usr/bin/env bash
# one_layer_view.sh SRC DST — DST sees SRC's checkpoint (symbolic links to its files) with
# config.json saying 1 decoder layer: the benchmarks time t(all layers) − t(1 layer) on the
# same shards to get one layer's cost.
set -eu
src=$1 dst=$2
mkdir -p "$dst"
for f in "$src"/*; do [ "$(basename "$f")" = config.json ] || ln -sf "$(readlink -f "$f")" "$dst/"; done
python3 - "$src/config.json" "$dst/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["num_hidden_layers"] = 1
json.dump(c, open(sys.argv[2], "w"))
PY
