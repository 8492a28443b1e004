/* test_framework.c - the CHECK macros print what they compared. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

/* Run fn in a child whose stderr goes to a file; returns the child's exit
 * status and leaves its stderr in out. */
static int run_captured(void (*fn)(void), char *out, size_t len)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/stderr", t_tmpdir());
	fflush(NULL);
	pid_t pid = fork();
	CHECK_GE(pid, 0);
	if (pid == 0) {
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || dup2(fd, 2) < 0)
			_exit(99);
		fn();
		_exit(0);
	}
	int st = t_wait(pid);
	FILE *f = fopen(path, "r");
	CHECK(f != NULL);
	size_t n = fread(out, 1, len - 1, f);
	out[n] = 0;
	fclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int three(void)
{
	return 3;
}

static void fail_eq(void)
{
	CHECK_EQ(three() + 1, 5);
}

static void fail_lt(void)
{
	long long big = 1LL << 40;
	CHECK_LT(big, -7);
}

static void fail_errno(void)
{
	CHECK_ERRNO(close(-1), EAGAIN);
}

static void fail_ok(void)
{
	CHECK_OK(close(-1));
}

static void pass_all(void)
{
	int calls = 0;
	CHECK_EQ(++calls, 1); /* each operand evaluated once */
	CHECK_EQ(calls, 1);
	CHECK_NE(1, 2);
	CHECK_LE(2, 2);
	CHECK_GE((size_t)3, 2);
	CHECK_GT(-1, -2);
	CHECK_OK(dup(0) >= 0 ? 0 : -1);
	CHECK_ERRNO(close(-1), EBADF);
}

TEST(framework_check_prints_values)
{
	char out[2048];
	CHECK_EQ(run_captured(fail_eq, out, sizeof out), 1);
	CHECKF(strstr(out, "three() + 1 == 5") && strstr(out, ": 4 vs 5"), "got: %s", out);
	CHECK_EQ(run_captured(fail_lt, out, sizeof out), 1);
	CHECKF(strstr(out, "big < -7") && strstr(out, "1099511627776 vs -7"), "got: %s", out);
	CHECK_EQ(run_captured(fail_errno, out, sizeof out), 1);
	CHECKF(strstr(out, "close(-1)") && strstr(out, "EAGAIN") && strstr(out, "errno 9"), "got: %s", out);
	CHECK_EQ(run_captured(fail_ok, out, sizeof out), 1);
	CHECKF(strstr(out, "close(-1)") && strstr(out, "returned -1") && strstr(out, "errno 9"), "got: %s", out);
	CHECK_EQ(run_captured(pass_all, out, sizeof out), 0);
	CHECKF(out[0] == 0, "got: %s", out);
}

/* Which variants the runner makes of CTEST msg_boundaries under
 * IPC_TEST_SCHEMES=schemes: the names it printed, in out. */
static void variants(const char *schemes, char *out, size_t len)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/variants", t_tmpdir());
	CHECK_EQ(t_sh("IPC_TEST_SCHEMES='%s' '%s/test-ipc' msg_boundaries > '%s' 2>&1", schemes, t_env("IPC_BUILD"),
		      path),
		 0);
	FILE *f = fopen(path, "r");
	CHECK(f != NULL);
	size_t n = fread(out, 1, len - 1, f);
	out[n] = 0;
	fclose(f);
}

/* runner.c: conformance tests also run over ipc_pair ends, as pseudo-schemes
 * "<s>-pair" of the schemes that make pairs; IPC_TEST_SCHEMES selects a
 * pseudo-scheme by its own name or its base's. */
TEST(framework_pair_pseudo_schemes)
{
	char out[4096];
	variants("shm", out, sizeof out);
	CHECKF(strstr(out, "msg_boundaries[shm] ") && strstr(out, "msg_boundaries[shm-pair] ") &&
		       !strstr(out, "[unix") && strstr(out, "2 passed, 0 failed"),
	       "got: %s", out);
	variants("unix-pair tcp", out, sizeof out);
	CHECKF(strstr(out, "msg_boundaries[unix-pair] ") && strstr(out, "msg_boundaries[tcp] ") &&
		       !strstr(out, "[unix]") && !strstr(out, "tcp-pair") && strstr(out, "2 passed, 0 failed"),
	       "got: %s", out);
}
