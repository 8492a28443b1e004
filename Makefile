# libipc - build, test, install.  See README.md.
#   make                 library, tools, examples into $(BUILD)
#   make check           run the test suite (SAN=address,undefined or SAN=thread
#                        builds everything with that sanitizer in build-SAN/)
#   make demo            round trip over every transport, timed
#   make bench           benchmarks (BENCHMARKS.md)
#   make install         PREFIX=/usr/local DESTDIR=
#   make CC=clang        any C11 compiler with gcc-style flags

VERSION   = 0.2.0
SOMAJOR   = 0
CC       ?= cc
SAN      ?=
comma    := ,
BUILD    ?= build$(if $(SAN),-$(subst $(comma),-,$(SAN)))
PREFIX   ?= /usr/local
LIBDIR   ?= $(PREFIX)/lib
INCDIR   ?= $(PREFIX)/include
BINDIR   ?= $(PREFIX)/bin
MANDIR   ?= $(PREFIX)/share/man
PCDIR    ?= $(LIBDIR)/pkgconfig

CFLAGS   ?= -O2 -g
WARN      = -Wall -Wextra -Werror -Wno-unused-parameter -Wmissing-prototypes -Wstrict-prototypes
BASE      = -std=c11 -Iinclude -pthread $(WARN)
ifneq ($(SAN),)
SANFLAGS  = -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif
LIBS      = -lrt -pthread

# tls: is built in when OpenSSL 3 is found (pkg-config openssl); TLS=1
# forces it (the build fails without OpenSSL), TLS=0 leaves it out and
# libipc needs nothing but libc.
ifndef TLS
TLS      := $(shell pkg-config --atleast-version=3 openssl 2>/dev/null && echo 1 || echo 0)
endif
ifeq ($(TLS),1)
TLS_CFLAGS := -DIPC_HAVE_TLS=1 $(shell pkg-config --cflags openssl 2>/dev/null)
TLS_LIBS   := $(or $(shell pkg-config --libs openssl 2>/dev/null),-lssl -lcrypto)
TLS_PC     := Requires.private: openssl
LIBS      += $(TLS_LIBS)
endif
# objects follow a change of TLS= (the stamp changes only with the value)
TLS_STAMP := $(BUILD)/.tls-config
$(shell mkdir -p $(BUILD); echo 'TLS=$(TLS)' | cmp -s - $(TLS_STAMP) || echo 'TLS=$(TLS)' > $(TLS_STAMP))

LIB_SRC   = $(filter-out $(if $(filter 1,$(TLS)),,lib/tls.c),$(wildcard lib/*.c))
LIB_OBJ   = $(LIB_SRC:lib/%.c=$(BUILD)/obj/lib/%.o)
TOOL_SRC  = $(wildcard tools/*.c)
TOOLS     = $(TOOL_SRC:tools/%.c=$(BUILD)/%)
EX_SRC    = $(wildcard examples/*.c)
EXAMPLES  = $(EX_SRC:examples/%.c=$(BUILD)/examples/%)
TEST_SRC  = $(wildcard tests/*.c)
TEST_OBJ  = $(TEST_SRC:tests/%.c=$(BUILD)/obj/tests/%.o)
HDRS      = include/ipc.h $(wildcard lib/*.h) $(wildcard tests/*.h)

SONAME    = libipc.so.$(SOMAJOR)
SOLIB     = $(BUILD)/libipc.so.$(VERSION)
ALIB      = $(BUILD)/libipc.a

.PHONY: all lib tools examples check demo bench install uninstall clean
all: lib tools examples

lib: $(ALIB) $(SOLIB)
tools: $(TOOLS)
examples: $(EXAMPLES)

$(BUILD)/obj/lib/%.o: lib/%.c $(HDRS) $(TLS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(BASE) $(TLS_CFLAGS) -fPIC -fvisibility=hidden $(SANFLAGS) $(CFLAGS) -c -o $@ $<

$(ALIB): $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(SOLIB): $(LIB_OBJ) lib/libipc.map
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=lib/libipc.map -Wl,-z,defs -Wl,--as-needed $(SANFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $(LIB_OBJ) $(LIBS)
	ln -sf libipc.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $(BUILD)/libipc.so

$(BUILD)/%: tools/%.c $(ALIB) include/ipc.h
	$(CC) $(BASE) $(TLS_CFLAGS) $(SANFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(ALIB) $(LIBS) -lm

# tools/reqrep.h: the workload of reqrep-bench, bench/ (tests/bench.mk), test_bench
$(BUILD)/reqrep-bench $(BUILD)/obj/tests/test_bench.o: tools/reqrep.h

$(BUILD)/examples/%: examples/%.c $(ALIB) include/ipc.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE) $(SANFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(ALIB) $(LIBS)

$(BUILD)/obj/tests/%.o: tests/%.c $(HDRS) $(TLS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(BASE) $(TLS_CFLAGS) -Ilib $(SANFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/test-ipc: $(TEST_OBJ) $(ALIB)
	$(CC) $(SANFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $(TEST_OBJ) $(ALIB) $(LIBS)

# The runner finds the build, the tree and the compiler through the environment.
check: all $(BUILD)/test-ipc
	IPC_BUILD=$(abspath $(BUILD)) IPC_SRC=$(CURDIR) IPC_CC="$(CC)" IPC_SAN="$(SAN)" IPC_TLS=$(TLS) \
		$(BUILD)/test-ipc $(TESTS)

demo: all
	$(BUILD)/examples/demo

# Benchmarks (peerbench side by side when ../shared is there); see BENCHMARKS.md.
bench: all
	bash tests/bench.sh $(BUILD)

install: lib tools
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(PCDIR)
	install -m 0644 include/ipc.h $(DESTDIR)$(INCDIR)/ipc.h
	install -m 0644 $(ALIB) $(DESTDIR)$(LIBDIR)/libipc.a
	install -m 0755 $(SOLIB) $(DESTDIR)$(LIBDIR)/libipc.so.$(VERSION)
	ln -sf libipc.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libipc.so
	$(if $(TOOLS),install -m 0755 $(TOOLS) $(DESTDIR)$(BINDIR)/)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCDIR@|$(INCDIR)|g' \
		-e 's|@VERSION@|$(VERSION)|g' -e 's|@REQUIRES_PRIVATE@|$(TLS_PC)|' pkgconfig/ipc.pc.in > $(DESTDIR)$(PCDIR)/ipc.pc
	for s in 1 3 7; do \
		set -- man/*.$$s; [ -e "$$1" ] || continue; \
		install -d $(DESTDIR)$(MANDIR)/man$$s && install -m 0644 "$$@" $(DESTDIR)$(MANDIR)/man$$s/; \
	done

uninstall:
	rm -f $(DESTDIR)$(INCDIR)/ipc.h $(DESTDIR)$(LIBDIR)/libipc.* $(DESTDIR)$(PCDIR)/ipc.pc
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(TOOLS)))
	for f in man/*.[137]; do rm -f $(DESTDIR)$(MANDIR)/man$${f##*.}/$${f##*/}; done

clean:
	rm -rf build build-*

# Extra targets (fuzz, soak, bench ...) live next to what they run.
include $(wildcard tests/*.mk)
