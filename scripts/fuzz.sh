#!/usr/bin/env bash
# fuzz.sh — build every tests/fuzz/fuzz_*.c as a libFuzzer binary (ASan + UBSan) into
# build-fuzz/ and run each for FUZZ_SECONDS (default 60) on a scratch copy of its seed
# corpus tests/fuzz/seeds/NAME/ (NAME = file name without fuzz_ and .c), so the committed
# seeds never change. Any crash, leak, timeout or out-of-memory fails the run (exit 1);
# a reproducer is left in build-fuzz/artifacts/NAME/. One summary line per target.
#
# The targets link all of core/ (not coordinator/ or worker/, which may need MPI).
# Extra libFuzzer flags may be given in FUZZ_FLAGS (e.g. FUZZ_FLAGS=-jobs=2).
set -u
cd "$(dirname "$0")/.."
SECONDS_EACH="${FUZZ_SECONDS:-60}"
OUT=build-fuzz
CC="${FUZZ_CC:-clang}"
PKGS="jansson libpcre2-8 yaml-0.1 openblas"
if ! command -v "$CC" >/dev/null; then
    echo "fuzz: $CC not found (expected clang with libFuzzer; run make deps)" >&2
    exit 1
fi
shopt -s nullglob
targets=(tests/fuzz/fuzz_*.c)
if [ ${#targets[@]} -eq 0 ]; then
    echo "fuzz: no tests/fuzz/fuzz_*.c targets found" >&2
    exit 1
fi
core_srcs=(core/*.c)
mkdir -p "$OUT/obj" "$OUT/artifacts"
CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Icore -I. $(pkg-config --cflags $PKGS)"
LIBS="$(pkg-config --libs $PKGS) -lm -lpthread"

# core/ compiled once per run and shared by the targets; fuzzer-no-link instruments the
# objects for coverage without pulling libFuzzer's main() into them.
objs=()
for src in "${core_srcs[@]}"; do
    obj="$OUT/obj/$(basename "${src%.c}").o"
    # shellcheck disable=SC2086
    "$CC" ${CFLAGS/-fsanitize=fuzzer,/-fsanitize=fuzzer-no-link,} -c "$src" -o "$obj" || {
        echo "fuzz: cannot compile $src" >&2; exit 1; }
    objs+=("$obj")
done

export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
failed=0
summary=()
for src in "${targets[@]}"; do
    name="$(basename "$src" .c)"; name="${name#fuzz_}"
    bin="$OUT/fuzz_$name"
    # shellcheck disable=SC2086
    if ! "$CC" $CFLAGS "$src" "${objs[@]}" $LIBS -o "$bin"; then
        summary+=("fuzz_$name: BUILD FAILED")
        failed=1
        continue
    fi
    corpus="$OUT/corpus/$name"
    rm -rf "$corpus"
    mkdir -p "$corpus" "$OUT/artifacts/$name"
    if [ -d "tests/fuzz/seeds/$name" ]; then
        cp -r "tests/fuzz/seeds/$name/." "$corpus/"
    else
        echo "!!! fuzz_$name: no seed corpus tests/fuzz/seeds/$name/ (starting from nothing)"
    fi
    nseeds=$(find "$corpus" -type f | wc -l)
    log="$OUT/fuzz_$name.log"
    echo "=== fuzz_$name: ${SECONDS_EACH}s from $nseeds seeds (log: $log)"
    # shellcheck disable=SC2086
    "$bin" "$corpus" -max_total_time="$SECONDS_EACH" -timeout=5 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$name/" ${FUZZ_FLAGS:-} \
        >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    if [ $rc -eq 0 ]; then
        summary+=("fuzz_$name: ok, ${runs:-?} runs in ${SECONDS_EACH}s, ${cov:-cov: ?}, corpus $(find "$corpus" -type f | wc -l) files")
    else
        failed=1
        what=$(grep -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|SUMMARY' "$log")
        summary+=("fuzz_$name: FAILED (exit $rc): ${what:-see $log}; reproducer in $OUT/artifacts/$name/")
        tail -40 "$log"
    fi
done
echo "--- fuzz summary"
printf '%s\n' "${summary[@]}"
exit $failed
