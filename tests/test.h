/*
 * test.h - the libipc test framework (libc only).
 *
 *   TEST(name)  { ... }                 runs once
 *   CTEST(name) { ... uses `scheme` }   conformance: runs once per scheme in
 *                                       the library's scheme table
 *   STEST(name) { ... uses `scheme` }   stream wire format: runs once per
 *                                       scheme whose transport uses the
 *                                       stream framing layer (unix, tcp)
 *
 * Every test runs in its own forked process with its own temporary
 * directory (t_tmpdir()), removed by the runner even if the test crashes,
 * and a time limit (default 60 s; TEST_TIMEOUT(s) inside the body raises
 * it).  A test passes by returning, fails on the first failed CHECK (which
 * prints file, line, the expression and strerror(errno); CHECKF, CHECK_EQ
 * and the other CHECK_* below also print the values compared), and is
 * skipped by SKIP("why").  Output of a passing test is discarded; a
 * failing test's is printed.  The runner ends with "N passed, N failed[, N skipped]".
 */
#ifndef IPC_TEST_H
#define IPC_TEST_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipc.h"

struct test {
	const char *name;
	void (*fn)(const char *scheme);
	int per_scheme; /* 0 once, 1 every scheme, 2 stream-framed schemes */
	const char *file;
	int line;
	struct test *next;
};

void test__register(struct test *t);
void test__fail(const char *file, int line, const char *expr, int err, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 5, 6)));
void test__skip(const char *why) __attribute__((noreturn));
void test__timeout(unsigned seconds);

#define TEST__DEFINE(nm, per)                                                        \
	static void test_##nm(const char *scheme);                                   \
	static struct test test__t_##nm = {#nm, test_##nm, per, __FILE__, __LINE__, 0}; \
	__attribute__((constructor)) static void test__reg_##nm(void)                \
	{                                                                            \
		test__register(&test__t_##nm);                                       \
	}                                                                            \
	static void test_##nm(const char *scheme __attribute__((unused)))

#define TEST(nm) TEST__DEFINE(nm, 0)
#define CTEST(nm) TEST__DEFINE(nm, 1)
#define STEST(nm) TEST__DEFINE(nm, 2)

/* Fail unless cond holds; prints errno as cond left it. */
#define CHECK(cond)                                                              \
	do {                                                                     \
		int ok__ = !!(cond);                                             \
		int e__ = errno;                                                 \
		if (!ok__)                                                       \
			test__fail(__FILE__, __LINE__, #cond, e__, NULL);        \
	} while (0)

/* As CHECK, with a printf-style explanation. */
#define CHECKF(cond, ...)                                                        \
	do {                                                                     \
		int ok__ = !!(cond);                                             \
		int e__ = errno;                                                 \
		if (!ok__)                                                       \
			test__fail(__FILE__, __LINE__, #cond, e__, __VA_ARGS__); \
	} while (0)

/* expr must fail (return -1 or NULL) with errno == err. */
#define CHECK_FAILS(expr, err)                                                          \
	do {                                                                            \
		errno = 0;                                                              \
		long long r__ = (long long)(intptr_t)(expr);                            \
		int e__ = errno;                                                        \
		if (!((r__ == -1 || r__ == 0) && e__ == (err)))                          \
			test__fail(__FILE__, __LINE__, #expr, e__,                      \
				   "expected failure with %s (%d), got %lld", #err, err, r__); \
	} while (0)

/* Comparisons that print both operands (as long long) and both
 * expressions: CHECK_EQ(ipc_recv(c, buf, n, 0), 5) fails with
 * "ipc_recv(c, buf, n, 0) == 5: -1 vs 5 (errno ...)".  Each operand is
 * evaluated once; errno is the one the operands left.  For integers that
 * fit in long long (not pointers, not uint64_t above LLONG_MAX: use
 * CHECKF there). */
#define CHECK__CMP(a, op, b)                                                           \
	do {                                                                           \
		long long a__ = (long long)(a);                                        \
		long long b__ = (long long)(b);                                        \
		int e__ = errno;                                                       \
		if (!(a__ op b__))                                                     \
			test__fail(__FILE__, __LINE__, #a " " #op " " #b, e__,         \
				   "%lld vs %lld", a__, b__);                          \
	} while (0)
#define CHECK_EQ(a, b) CHECK__CMP(a, ==, b)
#define CHECK_NE(a, b) CHECK__CMP(a, !=, b)
#define CHECK_LT(a, b) CHECK__CMP(a, <, b)
#define CHECK_LE(a, b) CHECK__CMP(a, <=, b)
#define CHECK_GT(a, b) CHECK__CMP(a, >, b)
#define CHECK_GE(a, b) CHECK__CMP(a, >=, b)

/* A call in the -1-and-errno convention must succeed (return anything but
 * -1); prints what it returned and errno. */
#define CHECK_OK(expr)                                                                 \
	do {                                                                           \
		errno = 0;                                                             \
		long long r__ = (long long)(expr);                                     \
		int e__ = errno;                                                       \
		if (r__ == -1)                                                         \
			test__fail(__FILE__, __LINE__, #expr, e__, "returned %lld", r__); \
	} while (0)

/* expr must return -1 with errno == err (CHECK_FAILS also accepts NULL). */
#define CHECK_ERRNO(expr, err)                                                         \
	do {                                                                           \
		errno = 0;                                                             \
		long long r__ = (long long)(expr);                                     \
		int e__ = errno;                                                       \
		if (!(r__ == -1 && e__ == (err)))                                      \
			test__fail(__FILE__, __LINE__, #expr, e__,                     \
				   "expected -1 with %s (%d: %s), got %lld with errno %d", \
				   #err, err, strerror(err), r__, e__);                \
	} while (0)

#define SKIP(why) test__skip(why)
#define TEST_TIMEOUT(s) test__timeout(s)

/* ---- helpers (tests/util.c) ---- */

/* This test's private temporary directory (created by the runner). */
const char *t_tmpdir(void);

/* A fresh, unique listen address for scheme (unix: a path in t_tmpdir();
 * tcp: 127.0.0.1 port 0; shm/mq: a unique name).  Static storage per call
 * is not reused: the string lives until the test ends. */
const char *t_addr(const char *scheme);

/* Listen on a fresh address of scheme with opts (NULL: defaults); CHECKs
 * success.  If bound is non-NULL it receives the address to connect to. */
ipc_listener *t_listen(const char *scheme, const struct ipc_options *opts, char bound[IPC_ADDR_MAX + 1]);

/* A connected pair over scheme: *srv accepted, *cli connected (both with
 * opts for the listener and the client).  The listener is closed.  Under a
 * pair pseudo-scheme (t_pair_mode(), see runner.c): the ends of
 * ipc_pair(scheme, opts), *srv = pair[0] and *cli = pair[1]. */
void t_pair(const char *scheme, const struct ipc_options *opts, ipc_conn **srv, ipc_conn **cli);

/* Whether this run is a pair pseudo-scheme ("unix-pair", "shm-pair"). */
int t_pair_mode(void);

/* Sleep ms milliseconds (EINTR resumed). */
void t_sleep_ms(int ms);

/* Accept one connection on l, waiting up to 10 s through ipc_poll
 * (works for non-blocking listeners too); CHECKs success. */
ipc_conn *t_accept(ipc_listener *l);

/* Number of open descriptors of this process. */
int t_fd_count(void);

/* Number of entries in dir (e.g. /dev/shm, /dev/mqueue); -1 if absent. */
int t_dir_count(const char *dir);

/* Deterministic test pattern: fill / verify len bytes for message seq. */
void t_fill(void *buf, size_t len, uint64_t seq);
int t_verify(const void *buf, size_t len, uint64_t seq);

/* Current resident set size of this process in KiB. */
long t_rss_kib(void);

/* A "Vm...: N kB" field of /proc/self/status (VmHWM, VmPeak...), or -1. */
long t_status_kib(const char *field);

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t t_now_ms(void);

/* Environment the Makefile passes: build dir, source dir, compiler. */
const char *t_env(const char *name);

/* Run a shell command, returning its exit status (or 128+signal). */
int t_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));


/* ---- more helpers (tests/util.c) ---- */

/* Peak virtual memory size (VmPeak) of this process in KiB: grows with any
 * large allocation, even one whose pages were never touched. */
long t_vmpeak_kib(void);

/* waitpid(pid) retrying EINTR; returns the wait status. */
int t_wait(pid_t pid);

/* Fail unless child pid exited with status 0. */
void t_wait_ok(pid_t pid);

/* A short token unique to this test run (it appears in every t_addr()
 * name); entries of dir (e.g. /dev/shm) whose names contain it. */
const char *t_token(void);
int t_token_entries(const char *dir);

/* Whether every descriptor of this process not set in before[] (indexed by
 * fd, T_MAXFD entries, from t_fd_snapshot) has FD_CLOEXEC; returns the
 * first offending fd or -1 if all are fine. */
#define T_MAXFD 4096
void t_fd_snapshot(unsigned char before[T_MAXFD]);
int t_fd_new_without_cloexec(const unsigned char before[T_MAXFD]);

/* Make /dev/mqueue visible (mounting it as root if needed) or SKIP. */
void t_need_mqdir(void);

/* tls: one test CA per run (the runner calls t_tls_setup before the
 * first test and t_tls_cleanup after the last).  It makes ca.pem/key,
 * server.pem/key (localhost, 127.0.0.1, ::1) and client.pem/key in a
 * directory, and sets SSL_CERT_FILE (the clients' default trust) and
 * IPC_TLS_CERT_FILE/IPC_TLS_KEY_FILE (the listeners' default identity),
 * so tls: runs every test with default options.  t_tls_dir(): that
 * directory, NULL when openssl is missing.  t_tls_make_cert: one more
 * certificate name.pem/key signed by dir's CA (days: openssl x509 args
 * such as "-days 2"); 0 on success. */
void t_tls_setup(void);
/* tcp: or tls: (no kernel credentials, ports, no socket file) */
int t_is_inet(const char *scheme);
/* A raw byte stream to the framing layer of a tls: listener at bound: a
 * socket whose bytes a child process carries inside TLS (tls_util.c). */
int t_tls_raw_connect(const char *bound);
void t_tls_cleanup(void);
const char *t_tls_dir(void);
int t_tls_make_ca(const char *dir);
int t_tls_make_cert(const char *dir, const char *name, const char *cn, const char *san, const char *days);

#endif
