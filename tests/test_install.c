/* test_install.c - make install, pkg-config, exported symbols, man pages. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

static const char *env_or_skip(const char *name)
{
	const char *v = t_env(name);
	if (!*v)
		SKIP("IPC_BUILD / IPC_SRC not set (run through make check)");
	return v;
}

/* The compiler of the build, with its sanitizer (a program linking a
 * sanitized libipc must be built with the same runtime). */
static const char *cc(void)
{
	static char buf[256];
	const char *c = t_env("IPC_CC"), *san = t_env("IPC_SAN");
	snprintf(buf, sizeof buf, "%s%s%s", *c ? c : "cc", *san ? " -fsanitize=" : "", san);
	return buf;
}

static int have(const char *prog)
{
	return t_sh("command -v %s >/dev/null 2>&1", prog) == 0;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	CHECK(f != NULL);
	CHECK_GE(fputs(text, f), 0);
	CHECK_EQ(fclose(f), 0);
}

/* Names of every IPC_API function in include/ipc.h; returns the count. */
static int api_functions(char names[][64], int max)
{
	char path[1024], line[512];
	snprintf(path, sizeof path, "%s/include/ipc.h", env_or_skip("IPC_SRC"));
	FILE *f = fopen(path, "r");
	CHECK(f != NULL);
	int n = 0;
	while (fgets(line, sizeof line, f)) {
		if (strncmp(line, "IPC_API ", 8))
			continue;
		char *paren = strchr(line, '(');
		CHECK(paren != NULL);
		char *e = paren;
		while (e > line && (isalnum((unsigned char)e[-1]) || e[-1] == '_'))
			e--;
		CHECK(n < max && paren - e < 64 && paren > e);
		memcpy(names[n], e, (size_t)(paren - e));
		names[n][paren - e] = 0;
		n++;
	}
	fclose(f);
	CHECK_GT(n, 10);
	return n;
}

static const char app_c[] =
	"#include <ipc.h>\n"
	"#include <stdio.h>\n"
	"#include <string.h>\n"
	"#include <unistd.h>\n"
	"int main(void)\n"
	"{\n"
	"	char a[64], b[IPC_ADDR_MAX + 1], buf[16];\n"
	"	snprintf(a, sizeof a, \"unix:@ipc-install-%d\", (int)getpid());\n"
	"	ipc_listener *l = ipc_listen(a, NULL);\n"
	"	if (!l || ipc_listener_addr(l, b, sizeof b) < 0) return 1;\n"
	"	ipc_conn *c = ipc_connect(b, NULL);\n"
	"	ipc_conn *s = c ? ipc_accept(l, 0) : NULL;\n"
	"	if (!s || ipc_send(c, \"ping\", 4, 0) != 4) return 2;\n"
	"	if (ipc_recv(s, buf, sizeof buf, 0) != 4 || memcmp(buf, \"ping\", 4)) return 3;\n"
	"	ipc_close(c);\n"
	"	if (ipc_recv(s, buf, sizeof buf, 0) != -1) return 4;\n"
	"	ipc_close(s);\n"
	"	ipc_listener_close(l);\n"
	"	puts(\"installed libipc works\");\n"
	"	return 0;\n"
	"}\n";

/* make install into a prefix, then build and run a program against it
 * through pkg-config, shared and static. */
TEST(install_pkgconfig)
{
	TEST_TIMEOUT(180);
	const char *build = env_or_skip("IPC_BUILD"), *src = env_or_skip("IPC_SRC");
	if (!have("pkg-config") || !have("make"))
		SKIP("pkg-config or make missing");
	const char *d = t_tmpdir();
	char pre[512], app[512], pc[600];
	snprintf(pre, sizeof pre, "%s/prefix", d);
	snprintf(app, sizeof app, "%s/app.c", d);
	snprintf(pc, sizeof pc, "PKG_CONFIG_PATH='%s/lib/pkgconfig' pkg-config", pre);
	char tls[16] = ""; /* the build's TLS= (a make without it would detect OpenSSL) */
	if (*t_env("IPC_TLS"))
		snprintf(tls, sizeof tls, "TLS=%s", t_env("IPC_TLS"));
	int rc = t_sh("make -s -C '%s' BUILD='%s' CC='%s' SAN='%s' %s PREFIX='%s' install >'%s/make.log' 2>&1",
		      src, build, *t_env("IPC_CC") ? t_env("IPC_CC") : "cc", t_env("IPC_SAN"), tls, pre, d);
	if (rc != 0)
		t_sh("cat '%s/make.log'", d);
	CHECKF(rc == 0, "make install exited %d", rc);

	/* the installed tree */
	static const char *const files[] = {
		"include/ipc.h", "lib/libipc.a", "lib/libipc.so", "lib/libipc.so.0",
		"lib/pkgconfig/ipc.pc", "bin/ipc-cat", "bin/ipc-bench", "share/man/man3/ipc_send.3",
		"share/man/man7/ipc.7", "share/man/man7/ipc-wire.7", "share/man/man1/ipc-cat.1",
	};
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
		CHECKF(t_sh("test -e '%s/%s'", pre, files[i]) == 0, "%s not installed", files[i]);
	CHECK_EQ(t_sh("%s --exists ipc", pc), 0);
	CHECK(t_sh("%s --modversion ipc | grep -qx '%d.%d.%d'", pc, IPC_VERSION_MAJOR, IPC_VERSION_MINOR,
		   IPC_VERSION_PATCH) == 0);

	/* shared: built from outside the tree, run with LD_LIBRARY_PATH */
	write_file(app, app_c);
	rc = t_sh("cd '%s' && %s -o app app.c $(%s --cflags --libs ipc)", d, cc(), pc);
	CHECKF(rc == 0, "shared build failed (%d)", rc);
	CHECK(t_sh("cd '%s' && LD_LIBRARY_PATH='%s/lib' ldd ./app | grep -q '%s/lib/libipc.so.0'", d, pre,
		   pre) == 0);
	CHECK(t_sh("cd '%s' && LD_LIBRARY_PATH='%s/lib' ./app | grep -q 'installed libipc works'", d,
		   pre) == 0);
	/* without the library path the program cannot start: it really uses
	 * the shared copy */
	CHECK_NE(t_sh("cd '%s' && ./app >/dev/null 2>&1", d), 0);

	/* static: --static adds the private libraries */
	rc = t_sh("cd '%s' && %s -o app_static app.c $(%s --cflags ipc) "
		  "$(%s --static --libs ipc | sed 's/-lipc\\b/-l:libipc.a/')",
		  d, cc(), pc, pc);
	CHECKF(rc == 0, "static build failed (%d)", rc);
	CHECK_EQ(t_sh("cd '%s' && ! ldd ./app_static 2>/dev/null | grep -q libipc", d), 0);
	CHECK_EQ(t_sh("cd '%s' && ./app_static | grep -q 'installed libipc works'", d), 0);

	/* uninstall removes what install put there */
	rc = t_sh("make -s -C '%s' BUILD='%s' PREFIX='%s' uninstall >/dev/null 2>&1", src, build, pre);
	CHECK_EQ(rc, 0);
	CHECK_NE(t_sh("test -e '%s/include/ipc.h' || test -e '%s/lib/libipc.so.0'", pre, pre), 0);
}

/* The shared library exports exactly the IPC_API functions. */
TEST(install_exports)
{
	const char *build = env_or_skip("IPC_BUILD");
	if (!have("nm"))
		SKIP("nm missing");
	char so[1024], list[1024];
	snprintf(so, sizeof so, "%s/libipc.so.0", build);
	snprintf(list, sizeof list, "%s/syms", t_tmpdir());
	CHECK(access(so, R_OK) == 0);
	CHECK(t_sh("nm -D --defined-only '%s' | awk '$2 ~ /[A-Z]/ && $2 != \"A\" {sub(/@.*/, \"\", $3); print $3}' | sort -u >'%s'", so, list) == 0);
	/* nothing but ipc_* (no ipc__ internals, no stray helpers) */
	int rc = t_sh("grep -v '^ipc_[a-z]' '%s' | grep -v '^_init$\\|^_fini$' >/dev/null || exit 1; "
		      "echo 'unexpected exports:' >&2; grep -v '^ipc_[a-z]' '%s' | grep -v '^_init$\\|^_fini$' >&2; exit 0",
		      list, list);
	CHECKF(rc == 1, "libipc.so exports symbols outside ipc_*");
	CHECK_NE(t_sh("grep -q '^ipc__' '%s'", list), 0);
	/* every IPC_API function is there */
	char names[64][64];
	int n = api_functions(names, 64);
	for (int i = 0; i < n; i++)
		CHECKF(t_sh("grep -qx '%s' '%s'", names[i], list) == 0, "%s not exported", names[i]);
	/* undefined symbols are libc's (versioned GLIBC_*), and OpenSSL's in
	 * a TLS=1 build, nothing else; a SAN= build binds them to the
	 * sanitizer runtime, unversioned */
	const char *ssl = !strcmp(t_env("IPC_TLS"), "1") ? "\\|@OPENSSL_" : "";
	if (!*t_env("IPC_SAN"))
		CHECK(t_sh("nm -D --undefined-only '%s' | grep -v '@GLIBC_\\|@@GLIBC_%s\\| w ' | grep -q .", so, ssl) != 0);
}

/* <ipc.h> coexists with <sys/ipc.h> (SysV) in either order, and is clean
 * under strict C99/C11 and C++ if available. */
TEST(install_header_coexists)
{
	const char *src = env_or_skip("IPC_SRC");
	const char *d = t_tmpdir();
	char f[512];
	snprintf(f, sizeof f, "%s/both.c", d);
	write_file(f, "#include <sys/ipc.h>\n#include <sys/shm.h>\n#include <sys/msg.h>\n#include <ipc.h>\n"
		      "int main(void)\n{\n\tstruct ipc_perm p = {0};\n\tstruct ipc_options o;\n"
		      "\tipc_options_init(&o);\n\t(void)p;\n\treturn IPC_CREAT == IPC_DONTWAIT || "
		      "IPC_NOWAIT == 0 || o.mode != 0600;\n}\n");
	CHECK(t_sh("%s -std=c11 -Wall -Wextra -Werror -pedantic -I'%s/include' -c -o '%s/both.o' '%s'", cc(), src,
		   d, f) == 0);
	snprintf(f, sizeof f, "%s/rev.c", d);
	write_file(f, "#include <ipc.h>\n#include <sys/ipc.h>\n#include <sys/sem.h>\n"
		      "int main(void) { return IPC_POLLIN + IPC_RMID > 0 ? 0 : 1; }\n");
	CHECK(t_sh("%s -std=c99 -Wall -Wextra -Werror -pedantic -I'%s/include' -c -o '%s/rev.o' '%s'", cc(), src, d,
		   f) == 0);
	if (have("c++")) {
		snprintf(f, sizeof f, "%s/cxx.cc", d);
		write_file(f, "#include <sys/ipc.h>\n#include <ipc.h>\nint main() { ipc_options o; "
			      "ipc_options_init(&o); return o.capacity == 0; }\n");
		CHECK_EQ(t_sh("c++ -Wall -Wextra -Werror -I'%s/include' -c -o '%s/cxx.o' '%s'", src, d, f), 0);
	}
}

/* Every man page passes mandoc -Tlint with nothing above style level. */
TEST(install_man_lint)
{
	const char *src = env_or_skip("IPC_SRC");
	if (!have("mandoc"))
		SKIP("mandoc not installed");
	char out[512];
	snprintf(out, sizeof out, "%s/lint", t_tmpdir());
	CHECK_EQ(t_sh("ls '%s'/man/*.[137] >/dev/null 2>&1", src), 0);
	/* .so link pages are resolved relative to man/ */
	int rc = t_sh("cd '%s/man' && mandoc -Tlint -Wwarning *.[137] >'%s' 2>&1", src, out);
	if (rc != 0)
		t_sh("cat '%s'", out);
	CHECKF(rc == 0, "mandoc -Tlint reported warnings or errors");
	CHECK_EQ(t_sh("test ! -s '%s'", out), 0);
	/* and man(1) renders a page without complaints */
	if (have("man"))
		CHECK(t_sh("cd '%s' && MANWIDTH=80 man -l man/ipc_send.3 2>'%s' | grep -q ipc_send && test ! -s '%s'",
			   src, out, out) == 0);
}

/* Every IPC_API function has a man page (a full page or a .so link), and
 * the page names it in NAME. */
TEST(install_man_coverage)
{
	const char *src = env_or_skip("IPC_SRC");
	char names[64][64];
	int n = api_functions(names, 64);
	for (int i = 0; i < n; i++) {
		CHECKF(t_sh("test -s '%s/man/%s.3'", src, names[i]) == 0, "no man/%s.3", names[i]);
		CHECKF(t_sh("cd '%s/man' && { grep -q '^\\.Nm %s\\b' %s.3 || "
			    "{ f=$(sed -n 's|^\\.so man3/||p' %s.3) && grep -q '^\\.Nm %s\\b' \"$f\"; }; }",
			    src, names[i], names[i], names[i], names[i]) == 0,
		       "man/%s.3 does not name %s", names[i], names[i]);
	}
	static const char *const pages[] = {"ipc.7", "ipc-wire.7", "ipc-cat.1", "ipc-bench.1"};
	for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++)
		CHECKF(t_sh("test -s '%s/man/%s'", src, pages[i]) == 0, "no man/%s", pages[i]);
}

/* README, "Using a copy installed under a prefix": its commands, run as
 * printed (with HOME a temporary directory, `make` pointed at this tree
 * and build, `cc` being the build's compiler), give a program that runs
 * without any environment; the LD_LIBRARY_PATH and static forms it names
 * work too, and without either the program cannot start. */
TEST(install_readme_prefix)
{
	TEST_TIMEOUT(180);
	const char *build = env_or_skip("IPC_BUILD"), *src = env_or_skip("IPC_SRC");
	if (!have("pkg-config") || !have("make"))
		SKIP("pkg-config or make missing");
	const char *d = t_tmpdir();
	const char *san = t_env("IPC_SAN");
	char path[600];
	CHECK_EQ(t_sh("mkdir -p '%s/home' '%s/work'", d, d), 0);
	/* the README's example program as app.c (a name unique to this run) */
	CHECK_EQ(t_sh("awk '/^```c/{f=1;next} /^```/{f=0} f' '%s/README.md' | sed 's/unix:@hello/unix:@hello-%s/g' "
		      ">'%s/work/app.c' && test -s '%s/work/app.c'",
		      src, t_token(), d, d),
		 0);
	/* the section's shell block */
	CHECK_EQ(t_sh("awk '/^## Using a copy installed under a prefix/{s=1} s&&/^```sh/{f=1;next} f&&/^```/{exit} f' "
		      "'%s/README.md' >'%s/work/readme.sh'",
		      src, d),
		 0);
	CHECKF(t_sh("grep -q 'make install' '%s/work/readme.sh' && grep -q rpath '%s/work/readme.sh'", d, d) == 0,
	       "no install-and-rpath block under \"Using a copy installed under a prefix\" in README.md");
	snprintf(path, sizeof path, "%s/work/run.sh", d);
	char prelude[4096];
	snprintf(prelude, sizeof prelude,
		 "set -e\n"
		 "make() { command make -s -C '%s' BUILD='%s' SAN='%s' %s%s \"$@\" >make.log 2>&1; }\n"
		 "cc() { command %s \"$@\"; }\n",
		 src, build, san, *t_env("IPC_TLS") ? "TLS=" : "", t_env("IPC_TLS"), cc());
	write_file(path, prelude);
	CHECK_EQ(t_sh("cat '%s/work/readme.sh' >>'%s'", d, path), 0);
	const char *env = "env -u LD_LIBRARY_PATH -u PKG_CONFIG_PATH";
	int rc = t_sh("cd '%s/work' && %s HOME='%s/home' sh ./run.sh >out 2>err", d, env, d);
	if (rc != 0)
		t_sh("cat '%s/work/err' '%s/work/make.log' >&2", d, d);
	CHECKF(rc == 0, "the README's commands exited %d", rc);
	CHECKF(t_sh("grep -qx ping '%s/work/out'", d) == 0, "./app did not print ping");
	/* it runs the installed shared library, found through its rpath */
	CHECK_EQ(t_sh("cd '%s/work' && %s ldd ./app | grep -q '%s/home/opt/libipc/lib/libipc.so.0'", d, env, d), 0);
	CHECK_EQ(t_sh("cd '%s/work' && %s ./app | grep -qx ping", d, env), 0);

	/* the same build without rpath cannot start, but runs with the
	 * README's LD_LIBRARY_PATH */
	char pc[700];
	snprintf(pc, sizeof pc, "PKG_CONFIG_PATH='%s/home/opt/libipc/lib/pkgconfig' pkg-config", d);
	CHECK_EQ(t_sh("cd '%s/work' && %s -o app2 app.c $(%s --cflags --libs ipc)", d, cc(), pc), 0);
	CHECK_NE(t_sh("cd '%s/work' && %s ./app2 >/dev/null 2>&1", d, env), 0);
	CHECK_EQ(t_sh("cd '%s/work' && %s HOME='%s/home' sh -c 'LD_LIBRARY_PATH=\"$HOME/opt/libipc/lib\" ./app2' "
		      "| grep -qx ping",
		      d, env, d),
		 0);
	/* the static form, as printed */
	CHECK_EQ(t_sh("sed -n 's/^`\\(cc -o app .*libipc\\.a.*\\)`\\.$/\\1/p' '%s/README.md' >'%s/work/static.sh' && "
		      "test $(wc -l <'%s/work/static.sh') = 1",
		      src, d, d),
		 0);
	write_file(path, prelude);
	CHECK_EQ(t_sh("{ echo 'export PKG_CONFIG_PATH=\"$HOME/opt/libipc/lib/pkgconfig\"'; cat '%s/work/static.sh'; } "
		      ">>'%s' && cd '%s/work' && rm -f app && %s HOME='%s/home' sh ./run.sh",
		      d, path, d, env, d),
		 0);
	CHECK_NE(t_sh("cd '%s/work' && ldd ./app 2>/dev/null | grep -q libipc", d), 0);
	CHECK_EQ(t_sh("cd '%s/work' && %s ./app | grep -qx ping", d, env), 0);
}
