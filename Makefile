# defectnet build. Everything under src/ (except src/cli) goes into libdefectnet.a;
# src/cli/*.c link into the `defectnet` command; tests/test_*.c are one binary each.
#   make            build library + CLI (build/)
#   make test       build and run the whole test suite (prints "N passed, N failed")
#   make SAN=1 test same under AddressSanitizer + UndefinedBehaviorSanitizer (build-san/)
#   make BUILD=dir  build somewhere else (parallel work trees)
CC      ?= gcc
SAN     ?= 0
ifeq ($(SAN),1)
BUILD   ?= build-san
OPT     ?= -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD   ?= build
OPT     ?= -O3 -g
endif
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter $(OPT) -pthread -Iinclude -Isrc -MMD -MP
LDFLAGS += $(filter -fsanitize=%,$(OPT)) -pthread
LIBS    = -ljpeg -lpng -lstb -lz -lsqlite3 -lmicrohttpd -lcurl -lmosquitto -lpq -lcrypto -lprotobuf-c -lrdkafka -lm
AVX512  = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16 -mfma -mavx2 -mf16c
AVX2    = -mavx2 -mfma -mf16c

LIB_SRC  := $(shell find src -name '*.c' -not -path 'src/cli/*' | sort)
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
BENCH_SRC:= $(sort $(wildcard bench/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_BIN:= $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
LIBA     := $(BUILD)/libdefectnet.a

all: $(BUILD)/defectnet
.PHONY: all test tests bench clean
.SECONDARY:

$(BUILD)/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX512) -c $< -o $@
$(BUILD)/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX2) -c $< -o $@
$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIBA): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/defectnet: $(CLI_OBJ) $(LIBA)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIBA) $(LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(LIBA)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBA) $(LIBS)
$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIBA)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBA) $(LIBS)

tests: $(TEST_BIN) $(BUILD)/defectnet
bench: $(BENCH_BIN) $(BUILD)/defectnet

# The whole suite: every tests/test_* binary plus the shell tests tests/*.sh.
test: tests
	@BUILD=$(BUILD) tests/run.sh

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
