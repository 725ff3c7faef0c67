# defectnet build. Everything under src/ (except src/cli) goes into libdefectnet.a;
# src/cli/*.c link into the `defectnet` command; tests/test_*.c are one binary each.
#   make            build library + CLI (build/)
#   make test       build and run the whole test suite (prints "N passed, N failed")
#   make SAN=1 test same under AddressSanitizer + UndefinedBehaviorSanitizer (build-san/)
#   make BUILD=dir  build somewhere else (parallel work trees)
#   make install    [PREFIX=/usr/local] [DESTDIR=] binary, libdefectnet.a, libdefectnet.so (SONAME
#                   libdefectnet.so.0, only the DN_API functions exported), defectnet.h, defectnet.pc,
#                   man pages, bash completion, examples; make uninstall removes exactly those
CC      ?= gcc
SAN     ?= 0
ifeq ($(SAN),1)
BUILD   ?= build-san
OPT     ?= -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD   ?= build
OPT     ?= -O3 -g
endif
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter $(OPT) -pthread -Iinclude -Isrc -MMD -MP \
           -fPIC -fvisibility=hidden
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
VERSION  := $(shell sed -n 's/^\#define DN_VERSION "\(.*\)"/\1/p' include/defectnet.h)
SOMAJOR  := 0
LIBSO    := $(BUILD)/libdefectnet.so.$(VERSION)
EXAMPLES := $(BUILD)/examples/classify $(BUILD)/examples/camera_loop
PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
LIBDIR   ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR   ?= $(PREFIX)/share/man
DATADIR  ?= $(PREFIX)/share
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions

all: $(BUILD)/defectnet $(LIBSO) $(EXAMPLES) $(BUILD)/man/defectnet.1
.PHONY: all test tests bench clean install uninstall
.SECONDARY:

# objects are rebuilt when the compile flags change (e.g. -fPIC for the shared library)
FLAGS_STAMP := $(BUILD)/.cflags
$(FLAGS_STAMP): FORCE
	@mkdir -p $(BUILD)
	@echo '$(CC) $(CFLAGS) $(AVX512) $(AVX2)' | cmp -s - $@ || echo '$(CC) $(CFLAGS) $(AVX512) $(AVX2)' > $@
.PHONY: FORCE

$(BUILD)/%_avx512.o: %_avx512.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX512) -c $< -o $@
$(BUILD)/%_avx2.o: %_avx2.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX2) -c $< -o $@
$(BUILD)/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIBA): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/defectnet: $(CLI_OBJ) $(LIBA)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIBA) $(LIBS)

# shared library: every object built -fPIC -fvisibility=hidden; only DN_API is exported
$(LIBSO): $(LIB_OBJ)
	$(CC) $(LDFLAGS) -shared -Wl,-soname,libdefectnet.so.$(SOMAJOR) -Wl,--no-undefined -o $@ $^ $(LIBS)
	ln -sf libdefectnet.so.$(VERSION) $(BUILD)/libdefectnet.so.$(SOMAJOR)
	ln -sf libdefectnet.so.$(SOMAJOR) $(BUILD)/libdefectnet.so

# examples use the public header only (as an installed program would)
$(BUILD)/examples/%: examples/%.c $(LIBA) include/defectnet.h
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -O2 -Iinclude $(filter -fsanitize=%,$(OPT)) -o $@ $< $(LIBA) $(LIBS) $(LDFLAGS)

# pkg-config file for the PREFIX/LIBDIR of this install (written by `make install`)
PC_WRITE = printf 'prefix=%s\nlibdir=%s\nincludedir=%s\n\nName: defectnet\nDescription: ResNet defect classifier: load, classify camera frames, train, evaluate\nVersion: %s\nLibs: -L$${libdir} -ldefectnet\nLibs.private: %s -pthread\nCflags: -I$${includedir}\n' \
	    '$(PREFIX)' '$(LIBDIR)' '$(INCLUDEDIR)' '$(VERSION)' '$(LIBS)'

$(BUILD)/man/defectnet.1: $(BUILD)/defectnet scripts/mkman.sh man/defectnet.1.in src/cli/commands.h
	scripts/mkman.sh $(BUILD)/defectnet $(BUILD)/man

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(MANDIR)/man1 \
	    $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(DATADIR)/doc/defectnet/examples
	install -m 755 $(BUILD)/defectnet $(DESTDIR)$(BINDIR)/defectnet
	install -m 644 $(LIBA) $(DESTDIR)$(LIBDIR)/libdefectnet.a
	install -m 755 $(LIBSO) $(DESTDIR)$(LIBDIR)/libdefectnet.so.$(VERSION)
	ln -sf libdefectnet.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libdefectnet.so.$(SOMAJOR)
	ln -sf libdefectnet.so.$(SOMAJOR) $(DESTDIR)$(LIBDIR)/libdefectnet.so
	install -m 644 include/defectnet.h $(DESTDIR)$(INCLUDEDIR)/defectnet.h
	$(PC_WRITE) > $(DESTDIR)$(LIBDIR)/pkgconfig/defectnet.pc
	install -m 644 $(BUILD)/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 completion/defectnet.bash $(DESTDIR)$(BASHCOMPDIR)/defectnet
	install -m 644 examples/classify.c examples/camera_loop.c examples/rules.json LICENSE $(DESTDIR)$(DATADIR)/doc/defectnet/examples/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/defectnet $(DESTDIR)$(LIBDIR)/libdefectnet.a $(DESTDIR)$(LIBDIR)/libdefectnet.so \
	    $(DESTDIR)$(LIBDIR)/libdefectnet.so.$(SOMAJOR) $(DESTDIR)$(LIBDIR)/libdefectnet.so.$(VERSION) \
	    $(DESTDIR)$(INCLUDEDIR)/defectnet.h $(DESTDIR)$(LIBDIR)/pkgconfig/defectnet.pc \
	    $(DESTDIR)$(MANDIR)/man1/defectnet.1 $(DESTDIR)$(MANDIR)/man1/defectnet-*.1 $(DESTDIR)$(BASHCOMPDIR)/defectnet
	rm -rf $(DESTDIR)$(DATADIR)/doc/defectnet

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(LIBA)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBA) $(LIBS)
$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIBA)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBA) $(LIBS)

tests: $(TEST_BIN) $(BUILD)/defectnet $(EXAMPLES)
bench: $(BENCH_BIN) $(BUILD)/defectnet

# The whole suite: every tests/test_* binary plus the shell tests tests/*.sh.
test: tests
	@BUILD=$(BUILD) tests/run.sh

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
