# sched_common.bash — sourced by tests/integration/sched_*.sh (not a test itself):
# locate the scheduler test driver, make a scratch directory, run jobs under mpirun.
BUILD="${BUILD:-build}"
DRIVER="$BUILD/tests/test_scheduler_mpi"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 FLATQ_PROGRESS=plain
if [ ! -x "$DRIVER" ]; then
    echo "!!! $DRIVER is not built (run make tests first)"; exit 77
fi
if ! command -v mpirun >/dev/null; then
    echo "!!! mpirun not found (apt-get install openmpi-bin)"; exit 77
fi
SCRATCH=$(mktemp -d /tmp/fq_sched.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$SCRATCH"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# job NP NAME [driver options...]: a job with cache $SCRATCH/NAME.cache, output
# $SCRATCH/NAME.out, invocation log $SCRATCH/NAME.log; stdout/stderr to NAME.stdout/err.
job() {
    local np=$1 name=$2; shift 2
    mkdir -p "$SCRATCH/$name.cache"
    timeout 120 mpirun --oversubscribe -np "$np" "$DRIVER" --job "$SCRATCH/$name.cache" \
        "$SCRATCH/$name.out" "$SCRATCH/$name.log" "$@" \
        >"$SCRATCH/$name.stdout" 2>"$SCRATCH/$name.stderr"
}
show() { echo "--- $1.stdout"; cat "$SCRATCH/$1.stdout"; echo "--- $1.stderr"; cat "$SCRATCH/$1.stderr"; }
