# flatq — one build for the CPU and CUDA backends.
#
#   make            bin/flatq (CUDA backend too when nvcc is found)
#   make test       deps, build, unit + integration tests (SAN=1: ASan+UBSan build)
#   make demo       the bundled demo job (tiny model, CPU, MPI)
#   make bench      CPU benchmarks (bench/)
#   make fuzz       libFuzzer targets, FUZZ_SECONDS each (default 60)
#   make deps       install missing Debian packages (scripts/deps.sh)
#
# Every .c under core/ worker/ coordinator/ runtime/ goes into one static library, so a new
# file needs no Makefile edit; tests/unit/test_*.c each become one cmocka binary.

SAN ?= 0
NO_CUDA ?= 0
ifeq ($(SAN),1)
BUILD ?= build-san
NO_CUDA := 1
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT ?= -O1
else
BUILD ?= build
SANFLAGS :=
OPT ?= -O2
endif
BINDIR ?= $(if $(filter build,$(BUILD)),bin,$(BUILD)/bin)

CC := mpicc
PKGS := jansson libpcre2-8 yaml-0.1 openblas
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS ?= $(OPT) -g
CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -MMD -MP -Icore -I. $(PKG_CFLAGS) $(SANFLAGS)
LDFLAGS += $(SANFLAGS)
LDLIBS := $(PKG_LIBS) -lm -lpthread

# CUDA backend: compiled whenever nvcc exists (CI compiles it without a GPU).
NVCC ?= $(shell command -v nvcc 2>/dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; })
CUDA_ARCH ?= -gencode=arch=compute_90a,code=sm_90a
CU_SRCS := $(wildcard kernels/*.cu runtime/*.cu)
ifeq ($(NO_CUDA),0)
ifneq ($(NVCC),)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
HAVE_CUDA := 1
CFLAGS += -DFLATQ_HAVE_CUDA=1 -I$(CUDA_HOME)/include
NVCCFLAGS ?= -O3 -std=c++17 $(CUDA_ARCH) -Xcompiler -Wall,-Wextra,-Werror -Werror all-warnings -Icore -I. -ccbin gcc
LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lnccl -lcudart -lstdc++
endif
endif

LIB_SRCS := $(filter-out coordinator/main.c,$(wildcard core/*.c worker/*.c coordinator/*.c runtime/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
CU_OBJS := $(if $(HAVE_CUDA),$(CU_SRCS:%.cu=$(BUILD)/%.cu.o))
LIB := $(BUILD)/libflatq.a
FLATQ := $(BINDIR)/flatq

# The same core/ sources compiled with real = double, for float64 finite-difference tests.
LIB64_OBJS := $(patsubst %.c,$(BUILD)/f64/%.o,$(filter core/%,$(LIB_SRCS)))
LIB64 := $(BUILD)/libflatq_f64.a

TEST_SRCS := $(wildcard tests/unit/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)
TEST_LDLIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

.PHONY: all test demo bench fuzz deps clean tests
all: $(FLATQ)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/f64/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DFQ_REAL_F64 -c $< -o $@

$(LIB64): $(LIB64_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJS) $(CU_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(FLATQ): $(BUILD)/coordinator/main.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# *_f64 tests link the float64 build of core/ first, then the rest of the library.
$(BUILD)/tests/%_f64: tests/unit/%_f64.c $(LIB64) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DFQ_REAL_F64 -Itests $< $(LIB64) $(LIB) $(LDFLAGS) $(TEST_LDLIBS) $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $< $(LIB) $(LDFLAGS) $(TEST_LDLIBS) $(LDLIBS) -o $@

$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) $(LDFLAGS) $(LDLIBS) -o $@

tests: $(FLATQ) $(TEST_BINS)

# GPU op tests (tests/gpu/): plain C programs linked with the CUDA backend. Every machine
# with nvcc compiles them; only a machine with a GPU runs them (tests/gpu/run.sh).
GPU_TEST_SRCS := $(wildcard tests/gpu/test_*.c)
GPU_TEST_BINS := $(GPU_TEST_SRCS:tests/gpu/%.c=$(BUILD)/gpu-tests/%)
.PHONY: gpu-tests
ifeq ($(HAVE_CUDA),1)
gpu-tests: $(GPU_TEST_BINS)
# `make test` compiles them too, so CI checks every GPU test program builds (it runs none)
tests: $(GPU_TEST_BINS)
else
gpu-tests:
	@echo "gpu-tests: the CUDA backend is not built here (nvcc not found, or NO_CUDA/SAN set)" >&2; exit 1
endif

# nvcc writes dependency files too (-MMD -MP, included below): a .cu object is rebuilt when
# any header it includes changes (a core/ struct embedded in a kernel file's struct once
# went stale this way and crashed every GPU step).

$(BUILD)/gpu-tests/%: tests/gpu/%.c tests/gpu/gpu_check.h kernels/flatq_cuda.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/gpu $< $(LIB) $(LDFLAGS) -Wl,--as-needed $(LDLIBS) -o $@

deps:
	@scripts/deps.sh

test: deps
	@$(MAKE) --no-print-directory tests
	@BUILD=$(BUILD) FLATQ=$(FLATQ) SAN=$(SAN) scripts/run-tests.sh $(TEST_BINS)

demo: deps
	@$(MAKE) --no-print-directory all
	@FLATQ=$(FLATQ) scripts/demo.sh

bench: $(FLATQ) $(BENCH_BINS)
	@BUILD=$(BUILD) FLATQ=$(FLATQ) scripts/bench.sh

FUZZ_SECONDS ?= 60
fuzz: deps
	@FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

clean:
	rm -rf build build-* bin

-include $(LIB_OBJS:.o=.d) $(LIB64_OBJS:.o=.d) $(BUILD)/coordinator/main.d $(CU_OBJS:.o=.d)
