# pgveil build. `make help` lists the targets.
# Every .c under proxy/ and rules/ is compiled; all but proxy/main.c go into
# build/libpgveil.a, which unit tests and fuzz targets link against.

BUILD   ?= build
BIN     ?= bin
CC      ?= cc
PYTHON  ?= /usr/bin/python3
PKGS    := libuv libpq libssl libcrypto libxxhash yaml-0.1
SAN     ?=

# Debian packages `make deps` installs when missing.
DEB_PKGS := build-essential pkg-config clang libclang-rt-14-dev llvm \
            libuv1-dev libpq-dev libssl-dev libxxhash-dev libpg-query-dev \
            libyaml-dev libprotobuf-c-dev postgresql-15 postgresql-client-15 pgbouncer \
            python3-psycopg python3-psycopg2 python3-pytest \
            libpostgresql-jdbc-java default-jdk-headless \
            clang-format clang-tidy

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpg_query

CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
           -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter \
           -fno-omit-frame-pointer -pthread -Iinclude $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -pthread -lm
ifneq ($(SAN),)
CFLAGS  += -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

SRCS      := $(wildcard proxy/*.c rules/*.c)
OBJS      := $(SRCS:%.c=$(BUILD)/obj/%.o)
LIB_OBJS  := $(filter-out $(BUILD)/obj/proxy/main.o,$(OBJS))
LIB       := $(BUILD)/libpgveil.a

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES:= $(FUZZ_SRCS:tests/fuzz/%.c=%)
REPLAY_BINS := $(FUZZ_NAMES:%=$(BUILD)/tests/replay_%)
# What `make format` rewrites and `make format-check` checks.
FORMAT_SRCS := $(SRCS) $(wildcard proxy/*.h rules/*.h include/pgveil/*.h \
                                  tests/unit/*.c tests/fuzz/*.c)

.PHONY: all help deps test test-quick test-unit test-fuzz-replay \
        test-integration test-leakcases asan fuzz demo bench clean \
        format format-check tidy check-static

all: $(BIN)/pgveil

help:
	@echo "make            build bin/pgveil"
	@echo "make deps       install missing Debian packages (apt-get)"
	@echo "make test       every test: unit, fuzz replay, integration, leak cases"
	@echo "make test-quick unit tests and fuzz replay (seconds)"
	@echo "make check-static  clang-tidy (bugprone-*) and clang-format check"
	@echo "make asan       the whole suite under ASan + UBSan"
	@echo "make fuzz       build libFuzzer targets with clang into $(BUILD)/fuzz"
	@echo "make demo       throwaway PostgreSQL with sample CRM data, pgveil in front"
	@echo "make bench      benchmarks vs direct PostgreSQL and pgbouncer"

deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	else echo "all Debian packages present"; fi

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BIN)/pgveil: $(BUILD)/obj/proxy/main.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/test_%: tests/unit/test_%.c tests/unit/check.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

$(BUILD)/tests/replay_%: tests/fuzz/%.c tests/fuzz/replay_main.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< tests/fuzz/replay_main.c $(LIB) $(LDLIBS)

test-unit: $(UNIT_BINS)
	@fail=0; for t in $(UNIT_BINS); do $$t || fail=1; done; exit $$fail

test-fuzz-replay: $(REPLAY_BINS)
	@fail=0; for n in $(FUZZ_NAMES); do \
	  $(BUILD)/tests/replay_$$n tests/fuzz/corpus/$$n || fail=1; done; exit $$fail

test-quick: all test-unit test-fuzz-replay

test-integration: all
	PGVEIL_BIN=$(abspath $(BIN)/pgveil) $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

# check-static takes seconds (measured ~5 s on 2 cores), so every test run
# (and CI, through .ci/run's `make test`) enforces it.
test: check-static test-quick test-integration

asan:
	$(MAKE) BUILD=build-asan BIN=build-asan/bin SAN=1 test

fuzz: $(LIB)
	@mkdir -p $(BUILD)/fuzz
	@for n in $(FUZZ_NAMES); do \
	  echo "clang fuzz target $$n"; \
	  clang -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude $(PKG_CFLAGS) \
	    -fsanitize=fuzzer,address,undefined -o $(BUILD)/fuzz/$$n \
	    tests/fuzz/$$n.c $(filter-out %/main.c,$(SRCS)) $(LDLIBS) || exit 1; \
	done

demo: deps all
	tests/harness/demo.sh

bench: all
	bench/run.sh

format:
	clang-format -i $(FORMAT_SRCS)

format-check:
	clang-format --dry-run -Werror $(FORMAT_SRCS)

# Any bugprone-* finding fails: fix it, or NOLINT(check) with the reason
# on a false positive.
tidy:
	clang-tidy --quiet -checks='-*,bugprone-*,-bugprone-easily-swappable-parameters' \
	  --warnings-as-errors='*' \
	  $(SRCS) -- -std=c11 -D_GNU_SOURCE -Iinclude $(PKG_CFLAGS)

check-static: tidy format-check

clean:
	rm -rf build build-asan bin

-include $(OBJS:.o=.d)
