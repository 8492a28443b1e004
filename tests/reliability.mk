# reliability.mk - fuzzing, soak, valgrind (see RELIABILITY.md).
#   make fuzz FUZZ_SECONDS=N   build every tests/fuzz/*.c as a libFuzzer
#                              target (clang, ASan+UBSan, own object dir),
#                              run each N seconds on a copy of its corpus,
#                              print "<target>: N execs", replay the corpus;
#                              non-zero on any finding
#   make fuzz-build            only build them
#   make fuzz-replay FUZZ_SAN=thread FUZZ_BUILD=build-fuzz-tsan
#                              build them with another sanitizer and replay
#                              every committed corpus once (TSan: races)
#   make soak                  the hostile/fault/load tests scaled up
#                              (IPC_SOAK=1: 200 x 10,000 messages, 1000
#                              kills per backend, ...)
#   make valgrind              the suite under valgrind memcheck (leaks and
#                              invalid accesses fail it)

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_BUILD   ?= build-fuzz
FUZZ_SAN     ?= address,undefined
FUZZ_SRC      = $(filter-out $(if $(filter 1,$(TLS)),,tests/fuzz/fuzz_tls_listener.c),$(wildcard tests/fuzz/*.c))
FUZZ_BINS     = $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_BUILD)/%)
FUZZ_LIBOBJ   = $(LIB_SRC:lib/%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_FLAGS    = -std=c11 -Iinclude -Ilib -pthread -g -O1 -fno-omit-frame-pointer \
		-fsanitize=$(FUZZ_SAN) -fno-sanitize-recover=all $(WARN) $(TLS_CFLAGS)

.PHONY: fuzz fuzz-build fuzz-replay soak valgrind

$(FUZZ_LIBOBJ): $(FUZZ_BUILD)/obj/%.o: lib/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -DIPC__NO_SYMVER -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_BINS): $(FUZZ_BUILD)/%: tests/fuzz/%.c $(FUZZ_LIBOBJ)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIBOBJ) -lrt $(TLS_LIBS)

fuzz-build: $(FUZZ_BINS)

fuzz: $(FUZZ_BINS)
	sh tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_BINS)

fuzz-replay: $(FUZZ_BINS)
	@for b in $(FUZZ_BINS); do t=$$(basename $$b); \
		TSAN_OPTIONS=halt_on_error=1 $$b -runs=1 tests/fuzz/corpus/$$t/* >$(FUZZ_BUILD)/$$t.replay 2>&1 \
		&& echo "$$t: corpus replay ok ($$(ls tests/fuzz/corpus/$$t | wc -l) inputs, $(FUZZ_SAN))" \
		|| { echo "$$t: corpus replay FAILED ($(FUZZ_SAN)); log $(FUZZ_BUILD)/$$t.replay"; \
		     grep -E 'WARNING|ERROR|SUMMARY' $(FUZZ_BUILD)/$$t.replay | head -n 10; exit 1; }; \
	done

# Scaled-up forms of the reliability tests (hours are fine here, not in CI).
SOAK_TESTS ?= hostile_ faults_ load_ netns_
soak: all $(BUILD)/test-ipc
	IPC_SOAK=1 IPC_BUILD=$(abspath $(BUILD)) IPC_SRC=$(CURDIR) IPC_CC="$(CC)" IPC_SAN="$(SAN)" \
		$(BUILD)/test-ipc -v $(SOAK_TESTS) | grep -E '^(ok|FAIL|skip|FIGURE|[0-9]+ passed)|CHECK|skip:'

# The suite under valgrind memcheck, one test at a time (the runner forks;
# --trace-children follows each test).  VALGRIND_TESTS narrows it; the
# netns test and the RLIMIT_AS one do not make sense under valgrind.
# The suppressions cover the test framework's by-design allocations (t_addr
# strings live until the test ends; the runner's job list), never the
# library.
VALGRIND_TESTS ?=
valgrind: all $(BUILD)/test-ipc
	printf '%s\n' '{' ' t_addr' ' Memcheck:Leak' ' match-leak-kinds: definite' ' fun:malloc' ' fun:t_addr' '}' \
		'{' ' runner_main' ' Memcheck:Leak' ' match-leak-kinds: definite' ' fun:*alloc' ' fun:main' '}' \
		> $(BUILD)/valgrind.supp
	IPC_BUILD=$(abspath $(BUILD)) IPC_SRC=$(CURDIR) IPC_CC="$(CC)" IPC_SAN=valgrind IPC_TEST_JOBS=2 \
		valgrind -q --trace-children=yes --trace-children-skip='*/sh,*/bash,*/ip,*/rm,*/mkdir' \
		--child-silent-after-fork=no --leak-check=full --show-leak-kinds=definite,indirect \
		--errors-for-leak-kinds=definite,indirect --error-exitcode=99 --suppressions=$(BUILD)/valgrind.supp \
		$(BUILD)/test-ipc $(VALGRIND_TESTS)
