# mapiproxy build.  `make` builds everything; `make test` runs every test;
# `make run` starts the proxy before the lab.  Both `make run` and `make test`
# first install what is missing (scripts/install-deps.sh, sudo when not root)
# and build everything they use, so either works first on a fresh clone.
CC      ?= gcc
PY      := /usr/bin/python3
CSTD    := -std=c17 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wstrict-prototypes -Wmissing-prototypes
CFLAGS  ?= -O2 -g
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
# GMime 3 (src/content/mime.c): message model -> MIME
GMIME_CFLAGS := $(shell pkg-config --cflags gmime-3.0 2>/dev/null)
GMIME_LIBS   := $(or $(shell pkg-config --libs gmime-3.0 2>/dev/null),-lgmime-3.0 -lgio-2.0 -lgobject-2.0 -lglib-2.0)
INC     := -Isrc -Iinclude -Imodules $(GMIME_CFLAGS)
LIBS    := -lssl -lcrypto -lhttp_parser -ldl -lsystemd $(GMIME_LIBS)

# The built-in modules (modules/NAME/, linked into the daemon, found by name
# before the module dir; src/chain/builtins.c lists them).
BUILTIN_MODS := downgrade rewrite trace
# The security modules (modules/{av,spam,phish,extract}, their shared code
# in modules/sec): shared objects with their own rule (below).
SEC_MODS := av spam phish extract
LIB_SRC := $(filter-out src/core/main.c,$(shell find src -name '*.c' | sort)) \
           $(foreach m,$(BUILTIN_MODS),$(wildcard modules/$(m)/*.c))
# Header dependencies: every compile writes a .d file beside its output
# (-MMD), with an empty rule per header (-MP) so a removed header does not
# stop the build; the .d files are included at the end of this Makefile.
DEP     := -MMD -MP
# The built-ins build like any third-party module: public headers only.
$(B)/obj/modules/%.o $(B)/asan/obj/modules/%.o $(B)/fuzz/obj/modules/%.o: INC := -Iinclude
UNIT    := $(patsubst tests/unit/%.c,%,$(wildcard tests/unit/test_*.c))

B       := build
OBJ     := $(patsubst %.c,$(B)/obj/%.o,$(LIB_SRC))
AOBJ    := $(patsubst %.c,$(B)/asan/obj/%.o,$(LIB_SRC))


.PHONY: asan-modules
.PHONY: all test test-build test-steps unit integration run clean deps fuzz fuzz-replay bench bench-https bench-rpch format check-format soak modules
SHELL := /bin/bash
# The one default target: the daemon, its sanitizer twin, the decoder, and
# the modules.
all: $(B)/mapiproxy $(B)/mapiproxy-asan $(B)/mapiproxy-decode modules

$(B)/obj/%.o: %.c $(B)/obj/%.d
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(DEP) $(CPPFLAGS) $(CFLAGS) $(INC) -c $< -o $@
$(B)/asan/obj/%.o: %.c $(B)/asan/obj/%.d
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(DEP) -O1 -g $(SAN) $(ASAN_DEFS) $(INC) -c $< -o $@
# build/mapiproxy-asan loads build/asan/modules (the modules' sanitizer twins)
$(B)/asan/obj/src/chain/loader.o: ASAN_DEFS := -DMP_BUILD_MODULE_SUBDIR='"asan/modules"'

$(B)/libmp.a: $(OBJ)
	@rm -f $@; ar rcs $@ $^
$(B)/libmp-asan.a: $(AOBJ)
	@rm -f $@; ar rcs $@ $^

$(B)/mapiproxy: src/core/main.c $(B)/libmp.a
	$(CC) $(CSTD) $(WARN) $(DEP) $(CPPFLAGS) $(CFLAGS) $(INC) -rdynamic $< -Wl,--whole-archive $(B)/libmp.a -Wl,--no-whole-archive $(LDFLAGS) $(LIBS) -o $@
# The sanitizer build the integration tests run.
$(B)/mapiproxy-asan: src/core/main.c $(B)/libmp-asan.a
	$(CC) $(CSTD) $(WARN) $(DEP) -O1 -g $(SAN) $(INC) -rdynamic $< -Wl,--whole-archive $(B)/libmp-asan.a -Wl,--no-whole-archive $(LIBS) -o $@

$(B)/unit/%: tests/unit/%.c $(B)/unit/%.d $(B)/libmp-asan.a
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(DEP) -O1 -g $(SAN) $(INC) -Itests/unit $< $(B)/libmp-asan.a $(LIBS) -o $@

# --- modules: shared objects in build/modules (the default module dir) ----
# A module builds as a third-party one would: -Iinclude and nothing else.
# modules/NAME/*.c -> build/modules/mpm_NAME.so for every folder in
# modules/ that is not a built-in; tests/modules/NAME.c -> NAME.so;
# mpm_test_X.so are tests/modules/mpm_test.c under another name.
# MODOUT, MODSAN and SECOUT: the sanitizer twin of every module
# (build/asan/modules, which build/mapiproxy-asan loads by default) is the
# same rules run again by `asan-modules` below with these set.
MODOUT ?= $(B)/modules
SECOUT ?= $(B)/secobj
MODOPT ?= -O2
MODFLAGS = $(CSTD) $(WARN) $(DEP) $(MODOPT) -g $(MODSAN) -fPIC -shared -Iinclude
EXT_MODS := $(filter-out $(BUILTIN_MODS) audit $(SEC_MODS) sec,$(notdir $(patsubst %/,%,$(wildcard modules/*/))))
TEST_MODS := mpm_test_a mpm_test_b mpm_test_c mpm_test_badabi mpm_roptest mpm_fdwatch mpm_objdata mpm_msgtest \
  mpm_msgobs mpm_msgabi4
.SECONDEXPANSION:
$(MODOUT)/mpm_%.so: $$(wildcard modules/$$*/*.c) $(MODOUT)/mpm_%.d
	@mkdir -p $(dir $@)
	$(CC) $(MODFLAGS) $(CPPFLAGS) $(LDFLAGS) $(filter %.c,$^) -o $@
$(MODOUT)/mpm_test_badabi.so: tests/modules/mpm_test.c $(MODOUT)/mpm_test_badabi.d
	@mkdir -p $(dir $@)
	$(CC) $(MODFLAGS) -DMODNAME=mpm_test_badabi -DBAD_ABI $< -o $@
$(MODOUT)/mpm_msgobs.so: tests/modules/mpm_msgtest.c $(MODOUT)/mpm_msgobs.d
	@mkdir -p $(dir $@)
	$(CC) $(MODFLAGS) -DOBSERVES_ONLY $< -o $@
$(MODOUT)/mpm_msgabi4.so: tests/modules/mpm_msgtest.c $(MODOUT)/mpm_msgabi4.d
	@mkdir -p $(dir $@)
	$(CC) $(MODFLAGS) -DABI4 $< -o $@
$(MODOUT)/mpm_roptest.so $(MODOUT)/mpm_fdwatch.so $(MODOUT)/mpm_objdata.so $(MODOUT)/mpm_msgtest.so: $(MODOUT)/%.so: tests/modules/%.c $(MODOUT)/%.d
	@mkdir -p $(dir $@)
	$(CC) $(MODFLAGS) $< -o $@
$(MODOUT)/mpm_test_%.so: tests/modules/mpm_test.c $(MODOUT)/mpm_test_%.d
	@mkdir -p $(dir $@)
	$(CC) $(MODFLAGS) -DMODNAME=mpm_test_$* $< -o $@
# audit (doc/audit.md) keeps its own file name: configurations name it "audit"
$(MODOUT)/audit.so: modules/audit/audit.c $(MODOUT)/audit.d
	@mkdir -p $(dir $@)
	$(CC) $(MODFLAGS) $(CPPFLAGS) $(LDFLAGS) $< -o $@
modules: asan-modules $(MODOUT)/audit.so $(SEC_MODS:%=$(MODOUT)/%.so) $(patsubst %,$(MODOUT)/mpm_%.so,$(EXT_MODS)) $(addprefix $(MODOUT)/,$(addsuffix .so,$(TEST_MODS)))

# The same modules built with the daemon's sanitizers, for
# build/mapiproxy-asan (the integration tests): a module's memory errors show
# in its own code too.  MODSAN is empty in the plain build.
ifeq ($(MODSAN),)
asan-modules:
	@$(MAKE) --no-print-directory MODOUT=$(B)/asan/modules SECOUT=$(B)/asan/secobj MODOPT=-O1 \
	  MODSAN="$(SAN)" CFLAGS="-O1 -g" $(B)/asan/modules/.built
else
asan-modules:
$(MODOUT)/.built: $(MODOUT)/audit.so $(SEC_MODS:%=$(MODOUT)/%.so) $(patsubst %,$(MODOUT)/mpm_%.so,$(EXT_MODS)) \
  $(addprefix $(MODOUT)/,$(addsuffix .so,$(TEST_MODS)))
	@touch $@
endif

deps:
	@scripts/install-deps.sh

unit: $(addprefix $(B)/unit/,$(UNIT))
	@fail=0; for t in $(UNIT); do \
	  echo "== $$t"; ( cd tests/unit && ../../$(B)/unit/$$t ) || fail=1; done; exit $$fail

# Everything the integration tests start (tests/integration, tests/lab), in
# parallel: pytest-xdist, one test file per unit of work (tests/conftest.py,
# doc/internals/testing.md).  make integration TEST_JOBS=0: one process.
# One file by hand: $(PY) -m pytest -q tests/integration/test_X.py
TEST_JOBS ?= $(shell echo $$(( 2 * $$(nproc 2>/dev/null || echo 2) )))
PYTEST_ARGS = -q --timeout=600 --durations=40 $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadgroup)
integration: $(B)/mapiproxy $(B)/mapiproxy-asan $(B)/mapiproxy-decode $(B)/ropdump $(B)/fxdump modules
	@$(PY) -c 'import xdist' 2>/dev/null || { echo "integration: pytest-xdist is missing:" \
	  "run scripts/install-deps.sh (python3-pytest-xdist), or make integration TEST_JOBS=0" >&2; exit 1; }
	$(PY) -m pytest $(PYTEST_ARGS) tests/lab tests/integration

# --- fuzzing: every tests/fuzz/fuzz_*.c is a libFuzzer target -------------
FUZZ       := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_FLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -DMP_LZ77_PARANOID
FOBJ       := $(patsubst %.c,$(B)/fuzz/obj/%.o,$(LIB_SRC))
$(B)/fuzz/obj/%.o: %.c $(B)/fuzz/obj/%.d
	@mkdir -p $(dir $@)
	clang $(CSTD) $(WARN) $(DEP) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link $(INC) -c $< -o $@
	@touch $@ # clang writes the .d after the .o: without this, every make rebuilt them all
$(B)/libmp-fuzz.a: $(FOBJ)
	@rm -f $@; ar rcs $@ $^
$(B)/fuzz/%: tests/fuzz/%.c $(B)/libmp-fuzz.a
	@mkdir -p $(dir $@)
	clang $(CSTD) $(WARN) $(DEP) $(FUZZ_FLAGS) -fsanitize=fuzzer $(INC) -Itests/fuzz $< $(B)/libmp-fuzz.a $(LIBS) -o $@
# make fuzz SECONDS=N: each target for N seconds; new inputs go to build/fuzz/corpus-NAME.
fuzz: $(addprefix $(B)/fuzz/,$(FUZZ))
	@for t in $(FUZZ); do n=$${t#fuzz_}; mkdir -p $(B)/fuzz/corpus-$$n; \
	  echo "== $$t for $(or $(SECONDS),60) s"; \
	  $(B)/fuzz/$$t -max_total_time=$(or $(SECONDS),60) -timeout=10 -max_len=70000 \
	    $(B)/fuzz/corpus-$$n tests/fuzz/corpus/$$n || exit 1; done
# The committed corpora, replayed once each (part of make test).
fuzz-replay: $(addprefix $(B)/fuzz/,$(FUZZ))
	@for t in $(FUZZ); do n=$${t#fuzz_}; \
	  $(B)/fuzz/$$t -runs=0 tests/fuzz/corpus/$$n 2>&1 | tail -1 | sed "s/^/$$t: /"; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; done

# deps first (it may install the compilers), then the steps, which build what
# they use: unit tests, fuzz targets, the proxy, its ASan twin, the decoder,
# ropdump and the modules.
# Everything is built first, on every core, then the steps run one at a time.
JOBS := $(shell nproc 2>/dev/null || echo 2)
TEST_BUILD := $(B)/mapiproxy $(B)/mapiproxy-asan $(B)/mapiproxy-decode $(B)/ropdump $(B)/fxdump modules \
              $(addprefix $(B)/unit/,$(UNIT)) $(addprefix $(B)/fuzz/,$(FUZZ))
test: deps
	@$(MAKE) --no-print-directory -j$(JOBS) test-build
	@$(MAKE) --no-print-directory test-steps
test-build: $(TEST_BUILD)
# The quick checks side by side (their output kept whole per check), then the
# integration tests, which are parallel themselves.
test-steps:
	@$(MAKE) --no-print-directory -j$(JOBS) -O check-format check-gen check-gen-rops unit fuzz-replay
	@$(MAKE) --no-print-directory integration

run: deps
	@$(MAKE) --no-print-directory -j$(JOBS) $(B)/mapiproxy
	@$(PY) scripts/run-foreground.py scripts/run-demo.sh

clean:
	rm -rf $(B)

FMT_FILES = $$(git ls-files 'src/*.[ch]' 'include/*.h' 'tests/*.[ch]' 'bench/*.[ch]' 'tools/*.c' 'modules/*.c')
format:
	clang-format -i $(FMT_FILES)
check-format:
	@clang-format --dry-run -Werror $(FMT_FILES) && echo "check-format: clean"

# --- LZ77 codec (src/xca/lz77.c): benchmark and fuzzer --------------------
# make bench-lz77            -O2 build (no sanitizers) over tests/data/xca-plain
# make fuzz-lz77 SECONDS=N   libFuzzer + ASan + UBSan, seeds in tests/fuzz/corpus/lz77
.PHONY: bench-lz77 fuzz-lz77
LZ77_FUZZ_SECONDS = $(if $(SECONDS),$(SECONDS),60)
$(B)/bench/lz77_bench: bench/lz77_bench.c src/xca/lz77.c src/xca/lz77.h
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) -O2 $(INC) bench/lz77_bench.c src/xca/lz77.c -o $@
bench-lz77: $(B)/bench/lz77_bench
	$(B)/bench/lz77_bench
$(B)/fuzz/fuzz_lz77: tests/fuzz/fuzz_lz77.c src/xca/lz77.c src/xca/lz77.h
	@mkdir -p $(dir $@)
	clang $(CSTD) $(WARN) -O1 -g -DMP_LZ77_PARANOID -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $(INC) tests/fuzz/fuzz_lz77.c src/xca/lz77.c -o $@
# New units go to build/fuzz/corpus-lz77; the committed seeds stay small.
fuzz-lz77: $(B)/fuzz/fuzz_lz77
	@mkdir -p $(B)/fuzz/corpus-lz77
	$(B)/fuzz/fuzz_lz77 -max_total_time=$(LZ77_FUZZ_SECONDS) -max_len=70000 -timeout=10 $(B)/fuzz/corpus-lz77 tests/fuzz/corpus/lz77

# --- relay benchmark (bench/, doc/internals/bench.md) ---------------------
# make bench: calls/s, p50/p99 and relay CPU per call, direct vs HAProxy (TCP
# mode) vs mapiproxy, for 1/16/256 clients; RSS per idle session with 9,000
# sessions; then the LZ77 figures (bench-lz77).  -O2, no sanitizers.  The
# responder and load generator take only the PDU codec, byte queues and LZ77
# codec from src/, so they build even while other parts of src/ are in flux.
BENCH_TOOLS := $(B)/bench/responder $(B)/bench/loadgen
BENCH_SRC   := src/dcerpc/pdu.c src/core/buf.c src/xca/lz77.c
$(B)/bench/responder $(B)/bench/loadgen: $(B)/bench/%: bench/%.c bench/bench_common.h $(BENCH_SRC) src/dcerpc/pdu.h src/core/buf.h src/xca/lz77.h
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) -O2 -g $(INC) -Ibench $< $(BENCH_SRC) -o $@
bench: $(B)/mapiproxy $(BENCH_TOOLS) $(B)/bench/https_peer $(B)/modules/mpm_roptest.so $(B)/bench/fxasm_bench
	@MAKE="$(MAKE)" $(PY) bench/run.py
	@$(PY) bench/https.py
	@$(B)/bench/fxasm_bench
# The HTTPS front's rows alone (bench/https.py, about 70 s): MAPI/HTTP
# Execute through HAProxy (HTTP mode), nginx and the front, TLS on both legs.
$(B)/bench/https_peer: bench/https_peer.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) -O2 -g $< -lssl -lcrypto -o $@
bench-https: $(B)/mapiproxy $(B)/bench/https_peer
	@$(PY) bench/https.py
# RPC over HTTP rows (bench/rpch.py, about 40 s): RfrGetNewDSA over Impacket's
# ncacn_http through HAProxy (HTTP mode) and mapiproxy (both upstreams).
bench-rpch: $(B)/mapiproxy
	@$(PY) bench/rpch.py
# Messages assembled from FastTransfer streams and converted to MIME, per
# second and MB/s, one core (bench/fxasm_bench.c; make bench prints it too).
.PHONY: bench-content mem-fx
$(B)/bench/fxasm_bench: bench/fxasm_bench.c $(B)/libmp.a
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) -O2 -g $(INC) $< $(B)/libmp.a $(LIBS) -o $@
bench-content: $(B)/bench/fxasm_bench
	@$(B)/bench/fxasm_bench
# RSS of mapiproxy (-O2, mime-dump) while 50 sessions sync the lab's 10 MB
# message at once (tests/soak/fx_mem.py, doc/internals/content.md).
mem-fx: $(B)/mapiproxy
	$(PY) tests/soak/fx_mem.py
# make bench-av (bench/av_relay.py, about 40 s): message uploads through
# mapiproxy with and without the av module (clamd), 1 and 16 sessions,
# between loadgen -u and responder -u (C at both ends).  make bench-av-lab
# (bench/av.py, about a minute): the same through the Python lab and client.
.PHONY: bench-av bench-av-lab
bench-av: $(B)/mapiproxy $(B)/modules/av.so $(BENCH_TOOLS)
	@$(PY) bench/av_relay.py
bench-av-lab: $(B)/mapiproxy $(B)/modules/av.so
	@$(PY) bench/av.py
# --- end relay benchmark ---

# --- codecs (src/codec, generated from idl/ by tools/gen_codec.py) --------
# make gen         regenerates src/codec/gen/ from idl/*.idl
# make check-gen   fails when src/codec/gen/ is not what the generator makes
.PHONY: gen check-gen
CODEC_IDL := $(wildcard idl/*.idl)
# (and the public call structures, include/mapiproxy/calls.h and calls/)
gen:
	$(PY) tools/gen_codec.py -o src/codec/gen --public include/mapiproxy $(CODEC_IDL)
check-gen:
	@d=$$(mktemp -d) && $(PY) tools/gen_codec.py -o $$d/gen --public $$d/pub $(CODEC_IDL) && \
	  diff -ru src/codec/gen $$d/gen && diff -ru include/mapiproxy/calls $$d/pub/calls && \
	  diff -u include/mapiproxy/calls.h $$d/pub/calls.h; rc=$$?; rm -rf $$d; \
	  if [ $$rc -ne 0 ]; then echo "src/codec/gen or include/mapiproxy/calls is stale: run make gen"; fi; exit $$rc
$(B)/mapiproxy-decode: tools/decode.c $(B)/libmp.a
	$(CC) $(CSTD) $(WARN) $(DEP) $(CPPFLAGS) $(CFLAGS) $(INC) $< $(B)/libmp.a $(LDFLAGS) $(LIBS) -o $@

# --- ROP codec (src/rop): generated from idl/rops/rops.idl -----------------
# make gen-rops        regenerate src/rop/gen/rop_gen.[ch] and include/mapiproxy/rops.h
# make check-gen-rops  fail if the committed generated files are stale
.PHONY: gen-rops check-gen-rops
gen-rops:
	$(PY) tools/gen_rops.py
check-gen-rops:
	$(PY) tools/gen_rops.py --check
# A small driver for tests/integration/test_rop_wire.py: decode, re-encode,
# print JSON (see tools/ropdump.c).
$(B)/ropdump: tools/ropdump.c $(B)/libmp-asan.a
	$(CC) $(CSTD) $(WARN) $(DEP) -O1 -g $(SAN) $(INC) $< $(B)/libmp-asan.a $(LIBS) -o $@
# The FastTransfer codec's driver (tools/fxdump.c, doc/internals/fasttransfer.md).
$(B)/fxdump: tools/fxdump.c $(B)/libmp-asan.a
	$(CC) $(CSTD) $(WARN) $(DEP) -O1 -g $(SAN) $(INC) $< $(B)/libmp-asan.a $(LIBS) -o $@

# --- soak and fault test (tests/soak, doc/internals/soak.md) ---------------
# make soak [MINUTES=15]: 200 clients through the ASan build, upstream killed
# twice, garbage, a client that never reads; prints a summary, soak: PASS/FAIL.
soak: $(B)/mapiproxy-asan modules
	$(PY) tests/soak/soak.py --minutes $(or $(MINUTES),15)

# --- Kerberos (src/auth/gss.c, spnego.c; doc/internals/kerberos.md) ---------
LIBS += -lgssapi_krb5 -lkrb5
# --- winbind (src/auth/winbind.c; doc/internals/auth.md): libwbclient-dev ---
INC  += -I/usr/include/samba-4.0
LIBS += -lwbclient

# --- install (doc/install.md) ----------------------------------------------
# make install [PREFIX=/usr/local] [DESTDIR=] [SYSCONFDIR=/etc]
# Binaries, the sample module, audit and the security modules (av, spam,
# phish, extract), the public headers (include/mapiproxy: they
# stand alone, so -I$(PREFIX)/include is enough), man pages, the systemd unit, logrotate, and
# $(SYSCONFDIR)/mapiproxy/mapiproxy.conf.sample; an existing
# mapiproxy.conf is never touched.  The installed daemon finds its modules
# in ../lib/mapiproxy/modules beside its sbin/ (src/chain/loader.c).
.PHONY: install uninstall deb
PREFIX     ?= /usr/local
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR    ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
INSTALL    ?= install
D          := $(DESTDIR)$(PREFIX)
MODDIR     := $(D)/lib/mapiproxy/modules
INC_DIR    := $(D)/include/mapiproxy
MAN_PAGES  := doc/man/mapiproxy.8 doc/man/mapiproxy.conf.5 doc/man/mapiproxy-decode.1
install: $(B)/mapiproxy $(B)/mapiproxy-decode $(B)/modules/mpm_sample.so $(B)/modules/audit.so \
  $(SEC_MODS:%=$(B)/modules/%.so)
	$(INSTALL) -d $(D)/sbin $(D)/bin $(MODDIR) $(INC_DIR) $(D)/share/man/man1 \
	  $(D)/share/man/man5 $(D)/share/man/man8 $(D)/share/doc/mapiproxy/examples \
	  $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/logrotate.d $(DESTDIR)$(SYSCONFDIR)/mapiproxy
	$(INSTALL) -m 755 $(B)/mapiproxy $(D)/sbin/mapiproxy
	$(INSTALL) -m 755 $(B)/mapiproxy-decode $(D)/bin/mapiproxy-decode
	$(INSTALL) -m 644 $(B)/modules/mpm_sample.so $(MODDIR)/mpm_sample.so
	$(INSTALL) -m 644 $(B)/modules/audit.so $(MODDIR)/audit.so
	$(INSTALL) -m 644 $(SEC_MODS:%=$(B)/modules/%.so) $(MODDIR)/
	$(INSTALL) -d $(INC_DIR)/calls
	$(INSTALL) -m 644 $(wildcard include/mapiproxy/*.h) $(INC_DIR)/
	$(INSTALL) -m 644 $(wildcard include/mapiproxy/calls/*.h) $(INC_DIR)/calls/
	$(INSTALL) -m 644 doc/man/mapiproxy-decode.1 $(D)/share/man/man1/
	$(INSTALL) -m 644 doc/man/mapiproxy.conf.5 $(D)/share/man/man5/
	$(INSTALL) -m 644 doc/man/mapiproxy.8 $(D)/share/man/man8/
	sed 's|/usr/sbin/mapiproxy|$(PREFIX)/sbin/mapiproxy|; s|/etc/mapiproxy/|$(SYSCONFDIR)/mapiproxy/|g' \
	  deploy/mapiproxy.service > $(DESTDIR)$(UNITDIR)/mapiproxy.service
	chmod 644 $(DESTDIR)$(UNITDIR)/mapiproxy.service
	$(INSTALL) -m 644 deploy/mapiproxy.logrotate $(DESTDIR)$(SYSCONFDIR)/logrotate.d/mapiproxy
	$(INSTALL) -m 644 deploy/mapiproxy.conf.sample $(DESTDIR)$(SYSCONFDIR)/mapiproxy/mapiproxy.conf.sample
	$(INSTALL) -m 644 modules/sample/mpm_sample.c $(D)/share/doc/mapiproxy/examples/
	$(INSTALL) -m 644 README.md doc/configuration.md doc/operations.md doc/modules.md \
	  doc/security.md doc/install.md doc/audit.md doc/security-modules.md \
	  $(SEC_MODS:%=doc/%.md) $(D)/share/doc/mapiproxy/
	@test -e $(DESTDIR)$(SYSCONFDIR)/mapiproxy/mapiproxy.conf || \
	  echo "install: no $(SYSCONFDIR)/mapiproxy/mapiproxy.conf yet; start from mapiproxy.conf.sample there"
uninstall:
	rm -f $(D)/sbin/mapiproxy $(D)/bin/mapiproxy-decode $(MODDIR)/mpm_sample.so $(MODDIR)/audit.so \
	  $(SEC_MODS:%=$(MODDIR)/%.so) \
	  $(D)/share/man/man1/mapiproxy-decode.1 $(D)/share/man/man5/mapiproxy.conf.5 \
	  $(D)/share/man/man8/mapiproxy.8 $(DESTDIR)$(UNITDIR)/mapiproxy.service \
	  $(DESTDIR)$(SYSCONFDIR)/logrotate.d/mapiproxy \
	  $(DESTDIR)$(SYSCONFDIR)/mapiproxy/mapiproxy.conf.sample
	rm -rf $(INC_DIR) $(D)/share/doc/mapiproxy
	-rmdir $(MODDIR) $(D)/lib/mapiproxy $(DESTDIR)$(SYSCONFDIR)/mapiproxy 2>/dev/null
# make deb: the Debian package in build/deb/ (scripts/install-deps.sh --deb
# installs debhelper and lintian first), then lintian on it.
deb:
	@scripts/install-deps.sh && scripts/install-deps.sh --deb
	scripts/build-deb.sh

# --- outside services (src/svc, doc/internals/svc.md) -----------------------
# rspamd's JSON answers are read with json-c; build/svc-probe drives the
# engine against real services in tests/integration/test_svc.py.
LIBS += -ljson-c
$(B)/svc-probe: tools/svc-probe.c $(B)/libmp-asan.a
	$(CC) $(CSTD) $(WARN) $(DEP) -O1 -g $(SAN) $(INC) $< $(B)/libmp-asan.a $(LIBS) -o $@
all: $(B)/svc-probe
integration: $(B)/svc-probe
$(addprefix $(B)/fuzz/,$(filter fuzz_svc_%,$(FUZZ))): tests/fuzz/svc_fuzz.h

# --- security modules (doc/internals/security-modules.md) -------------------
# Shared objects loaded like any third-party module (build/modules/av.so ...).
# Their own code sees the proxy only through -Iinclude; the service clients
# (src/svc) and the RTF decompressor are compiled into each .so with hidden
# visibility and without the proxy-loop adapter (-DMP_SVC_NO_LOOP), so they
# never bind to the daemon's copies of the same functions.  CPPFLAGS, CFLAGS
# and LDFLAGS reach them too (the package's hardening flags).
SEC_LIB := $(wildcard src/svc/*.c) src/core/buf.c src/content/rtf.c
SEC_OBJ := $(patsubst %.c,$(SECOUT)/%.o,$(SEC_LIB))
SEC_CFLAGS = $(CSTD) $(WARN) $(DEP) -O2 -g $(CPPFLAGS) $(CFLAGS) $(MODSAN) -fPIC
$(SECOUT)/%.o: %.c $(SECOUT)/%.d
	@mkdir -p $(dir $@)
	$(CC) $(SEC_CFLAGS) -fvisibility=hidden -DMP_SVC_NO_LOOP -Isrc -c $< -o $@
$(SECOUT)/modules/%.o: modules/%.c $(SECOUT)/modules/%.d
	@mkdir -p $(dir $@)
	$(CC) $(SEC_CFLAGS) -Iinclude -Isrc -Imodules/sec -c $< -o $@
$(SECOUT)/modules/sec/%.o: modules/sec/%.c $(SECOUT)/modules/sec/%.d
	@mkdir -p $(dir $@)
	$(CC) $(SEC_CFLAGS) -fvisibility=hidden -Iinclude -Isrc -Imodules/sec -c $< -o $@
SEC_MOD_OBJ = $(patsubst %.c,$(SECOUT)/%.o,$(wildcard modules/$(1)/*.c) $(wildcard modules/sec/*.c))
$(foreach m,$(SEC_MODS),$(eval $(MODOUT)/$(m).so: $(call SEC_MOD_OBJ,$(m)) $(SEC_OBJ)))
$(SEC_MODS:%=$(MODOUT)/%.so):
	@mkdir -p $(dir $@)
	$(CC) -shared -fPIC $(MODSAN) $(LDFLAGS) $(filter %.o,$^) -ljson-c -lidn2 -o $@
# sec-host: a module host for the message hook without the proxy
# (tests/integration/test_sec_modules.py drives the modules with it).
$(B)/sec-host: tools/sec-host.c
	$(CC) $(CSTD) $(WARN) $(DEP) -O1 -g $(SAN) -Iinclude -rdynamic $< -ldl -o $@
all: $(B)/sec-host
integration: $(B)/sec-host
# Unit tests and fuzz targets of the phish URL code link libidn2.
$(B)/unit/test_phish: LIBS += -lidn2
$(B)/fuzz/fuzz_phish_url: LIBS += -lidn2

# --- header dependencies (-MMD -MP above) ------------------------------------
# Every .d is named here as a target of an empty rule, so a missing one (a
# tree built before -MMD, or a new file) counts as changed and its target is
# rebuilt once, writing it.
DEPFILES := $(OBJ:.o=.d) $(AOBJ:.o=.d) $(FOBJ:.o=.d) $(UNIT:%=$(B)/unit/%.d) \
            $(EXT_MODS:%=$(MODOUT)/mpm_%.d) $(TEST_MODS:%=$(MODOUT)/%.d) $(MODOUT)/audit.d \
            $(SEC_OBJ:.o=.d) $(patsubst %.c,$(SECOUT)/%.d,$(wildcard modules/sec/*.c $(SEC_MODS:%=modules/%/*.c)))
$(DEPFILES):
-include $(wildcard $(DEPFILES) $(B)/*.d $(MODOUT)/*.d $(B)/fuzz/*.d)
