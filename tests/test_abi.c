/* test_abi.c - a program built against release 0.1 runs unchanged against
 * this library (ABI policy: ipc(7), "ABI"; mechanism: lib/compat.c and
 * lib/libipc.map). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

/* The compiler of the build with its sanitizer (the program links the
 * build's libipc.so, sanitized like it). */
static const char *abi_cc(void)
{
	static char buf[256];
	const char *c = t_env("IPC_CC"), *san = t_env("IPC_SAN");
	snprintf(buf, sizeof buf, "%s%s%s", *c ? c : "cc", *san ? " -fsanitize=" : "", san);
	return buf;
}

/* Build tests/abi/app-0.1.c against the 0.1 header and an unversioned
 * stand-in of libipc.so.0 into t_tmpdir()/app; CHECKs success. */
static void build_old_app(void)
{
	const char *src = t_env("IPC_SRC"), *d = t_tmpdir();
	if (!*src)
		SKIP("IPC_SRC not set (run through make check)");
	int r = t_sh("cd %s && %s -shared -fPIC -Wl,-soname,libipc.so.0 -I%s/tests/abi/0.1 -o libipc.so.0 "
		     "%s/tests/abi/stub-0.1.c && ln -sf libipc.so.0 libipc.so && "
		     "%s -I%s/tests/abi/0.1 -o app %s/tests/abi/app-0.1.c -L. -lipc",
		     d, abi_cc(), src, src, abi_cc(), src, src);
	CHECKF(r == 0, "building the 0.1 program: exit %d", r);
	/* its references must carry no version, as a real 0.1 build's do */
	r = t_sh("cd %s && readelf --dyn-syms -W app | grep -q 'ipc_poll@'", d);
	CHECKF(r != 0, "the 0.1 program's reference to ipc_poll is versioned (readelf exit %d)", r);
}

/* tests/abi/0.1/ipc.h is include/ipc.h as release 0.1 shipped it. */
TEST(abi_old_header_is_release_0_1)
{
	const char *src = t_env("IPC_SRC");
	if (!*src)
		SKIP("IPC_SRC not set (run through make check)");
	if (t_sh("git -C %s cat-file -e 7bc2423 2>/dev/null", src) != 0)
		SKIP("no git history in this tree (the fixture's origin cannot be checked)");
	int r = t_sh("git -C %s show 7bc2423:include/ipc.h | cmp -s - %s/tests/abi/0.1/ipc.h", src, src);
	CHECKF(r == 0, "tests/abi/0.1/ipc.h differs from release 0.1's include/ipc.h (cmp exit %d)", r);
}

/* Every scheme: options, readiness bits and a round trip behave as 0.1. */
CTEST(abi_0_1_program_runs_unchanged)
{
	build_old_app();
	const char *addr = t_addr(scheme);
	int r = t_sh("cd %s && LD_LIBRARY_PATH=%s ./app '%s'", t_tmpdir(), t_env("IPC_BUILD"), addr);
	CHECKF(r == 0, "the 0.1 program on %s against the new library: exit %d", addr, r);
}

/* The run-time version matches the header this test was built with. */
TEST(abi_version)
{
	int ma = -1, mi = -1, pa = -1;
	const char *v = ipc_version(&ma, &mi, &pa);
	char want[32];
	snprintf(want, sizeof want, "%d.%d.%d", IPC_VERSION_MAJOR, IPC_VERSION_MINOR, IPC_VERSION_PATCH);
	CHECKF(v && !strcmp(v, want), "ipc_version() = \"%s\", header says %s", v ? v : "(null)", want);
	CHECKF(ma == IPC_VERSION_MAJOR && mi == IPC_VERSION_MINOR && pa == IPC_VERSION_PATCH,
	       "ipc_version numbers %d.%d.%d", ma, mi, pa);
	CHECK(ipc_version(NULL, NULL, NULL) == v);
}

/* The readiness bits are poll(2)'s own. */
#include <poll.h>
TEST(abi_poll_bits_are_poll2_bits)
{
	CHECKF(IPC_POLLIN == POLLIN && IPC_POLLOUT == POLLOUT && IPC_POLLERR == POLLERR && IPC_POLLHUP == POLLHUP,
	       "IPC_POLL IN/OUT/ERR/HUP = %#x/%#x/%#x/%#x, poll(2) %#x/%#x/%#x/%#x", IPC_POLLIN, IPC_POLLOUT,
	       IPC_POLLERR, IPC_POLLHUP, POLLIN, POLLOUT, POLLERR, POLLHUP);
}
