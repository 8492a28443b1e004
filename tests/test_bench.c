/* test_bench.c - tools/reqrep-bench (issue 11's server workload, the libipc
 * side of BENCHMARKS.md) keeps working on every transport, and its checks
 * and its load stay what BENCHMARKS.md says they are. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "../tools/reqrep.h"
#include "test.h"

/* Path of build/reqrep-bench; SKIP when the build directory is unknown. */
static const char *reqrep_bench(void)
{
	static char path[1024];
	const char *b = t_env("IPC_BUILD");
	if (!*b)
		SKIP("IPC_BUILD not set");
	snprintf(path, sizeof path, "%s/reqrep-bench", b);
	if (access(path, X_OK) != 0)
		SKIP("reqrep-bench not built");
	return path;
}

/* The number after "key": in a JSON line, or -1. */
static double json_num(const char *line, const char *key)
{
	char k[64];
	snprintf(k, sizeof k, "\"%s\":", key);
	const char *p = strstr(line, k);
	return p ? strtod(p + strlen(k), NULL) : -1;
}

/* A small run (4 clients x 50 round trips, every byte checked by the
 * program) succeeds and prints one sane JSON line. */
CTEST(bench_reqrep_small_run)
{
	TEST_TIMEOUT(60);
	if (t_pair_mode())
		SKIP("a listener and client processes: the plain scheme's run covers it");
	const char *prog = reqrep_bench();
	char cmd[2048], line[1024] = "", extra[1024];
	snprintf(cmd, sizeof cmd, "%s '%s' --clients 4 --count 50 --timeout 30", prog, t_addr(scheme));
	fflush(NULL);
	FILE *f = popen(cmd, "r");
	CHECK(f != NULL);
	int lines = 0;
	while (fgets(extra, sizeof extra, f))
		if (lines++ == 0)
			snprintf(line, sizeof line, "%s", extra);
	int st = pclose(f);
	CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: status %#x, output: %s", cmd, st, line);
	CHECKF(lines == 1, "%d lines", lines);
	char want[128];
	snprintf(want, sizeof want, "{\"impl\":\"libipc\",\"bench\":\"reqrep\",\"transport\":\"%s\",", scheme);
	CHECKF(!strncmp(line, want, strlen(want)), "line %s, expected it to start with %s", line, want);
	CHECKF(json_num(line, "clients") == 4 && json_num(line, "count") == 50 &&
		       json_num(line, "max_size") == 65536,
	       "%s", line);
	double p50 = json_num(line, "rtt_p50_ns"), p99 = json_num(line, "rtt_p99_ns");
	CHECKF(json_num(line, "rt_per_s") > 0 && p50 > 0 && p50 <= p99, "%s", line);
	CHECKF(json_num(line, "server_rss_kib") > 0 && json_num(line, "cpu_s") >= 0 && json_num(line, "others_cpu_s") >= 0,
	       "%s", line);
	CHECKF(json_num(line, "send_waits") >= 0 && json_num(line, "blocking_sends") >= 0, "%s", line);
}

/* The load is the same for every implementation and every run: pinned
 * sizes for client 1; the reply check catches any wrong byte (an echo
 * too), and accepts the right reply. */
TEST(bench_reqrep_load_and_check)
{
	enum { MAX = 65536 };
	static unsigned char req[MAX + 1], rep[MAX + 1], again[MAX + 1];
	uint64_t seed = 1, seed2 = 1;
	size_t sizes[4];
	for (int i = 0; i < 4; i++) {
		sizes[i] = rr_request(&seed, req, MAX);
		CHECKF(rr_request(&seed2, again, MAX) == sizes[i] && !memcmp(req, again, sizes[i]),
		       "round trip %d differs between two runs", i);
	}
	CHECKF(sizes[0] == 28834 && sizes[1] == 1160 && sizes[2] == 51158 && sizes[3] == 28995,
	       "client 1's sizes are %zu %zu %zu %zu", sizes[0], sizes[1], sizes[2], sizes[3]);

	seed = 1;
	size_t n = rr_request(&seed, req, MAX);
	memcpy(rep, req, n);
	CHECKF(!rr_reply_ok(req, rep, n), "an echo passed as a reply");
	rr_answer(rep, n);
	CHECK(rr_reply_ok(req, rep, n));
	size_t at[] = {0, n / 2, n - 1};
	for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
		rep[at[i]] ^= 0x10;
		CHECKF(!rr_reply_ok(req, rep, n), "byte %zu of %zu changed, the check passed", at[i], n);
		rep[at[i]] ^= 0x10;
	}
	/* sizes stay within 0..max, and max 0 gives empty requests */
	seed = 7;
	for (int i = 0; i < 1000; i++)
		CHECK(rr_request(&seed, req, 100) <= 100);
	CHECK(rr_request(&seed, req, 0) == 0);
}

/* A server that cannot start makes the run fail at once (no hang), and so
 * does a bad command line. */
TEST(bench_reqrep_failures)
{
	TEST_TIMEOUT(30);
	const char *prog = reqrep_bench();
	int64_t t0 = t_now_ms();
	int rc = t_sh("%s 'unix:%s/no/such/dir/s' --clients 4 --count 50 --timeout 20 >/dev/null 2>&1", prog,
		      t_tmpdir());
	CHECKF(rc == RR_FAIL, "exit %d", rc);
	CHECKF(t_now_ms() - t0 < 10000, "took %lld ms", (long long)(t_now_ms() - t0));
	CHECK(t_sh("%s >/dev/null 2>&1", prog) == RR_USAGE);
	CHECK(t_sh("%s bogus >/dev/null 2>&1", prog) == RR_USAGE);
	CHECK(t_sh("%s unix --clients 0 >/dev/null 2>&1", prog) == RR_USAGE);
}
