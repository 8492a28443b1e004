/* test_server.c - examples/server: one ipc_poll loop serving many client
 * processes, every byte of every reply checked, on every transport. */
#include "test.h"

/* Run examples/server with args on a fresh address of scheme; its exit
 * status (output in t_tmpdir()/server.out, printed on failure). */
static int run_server(const char *scheme, const char *args, int64_t *ms)
{
	const char *b = t_env("IPC_BUILD");
	if (!*b)
		SKIP("IPC_BUILD not set (run through make check)");
	char out[512];
	snprintf(out, sizeof out, "%s/server.out", t_tmpdir());
	int64_t t0 = t_now_ms();
	int rc = t_sh("%s/examples/server %s '%s' >'%s' 2>&1", b, args, t_addr(scheme), out);
	*ms = t_now_ms() - t0;
	if (rc != 0)
		t_sh("sort '%s' | uniq -c | sort -rn | head -20", out);
	return rc;
}

/* Issue 11's workload: 50 client processes, request/response round trips
 * of 0..64 KiB (fewer rounds under sanitizers: ASan 100, TSan 40). */
CTEST(server_example_50_clients)
{
	TEST_TIMEOUT(120);
	const char *san = t_env("IPC_SAN");
	int rounds = !*san ? 200 : strstr(san, "thread") ? 40 : 100;
	char args[64];
	snprintf(args, sizeof args, "-c 50 -r %d --json", rounds);
	int64_t ms;
	int rc = run_server(scheme, args, &ms);
	CHECKF(rc == 0, "examples/server %s exited %d after %lld ms", args, rc, (long long)ms);
	/* the server answered every request (its --json line) */
	CHECKF(t_sh("grep -q '^{\"impl\":\"libipc\",\"bench\":\"server\",\"transport\":\"%s\",\"clients\":50,"
		    "\"rounds\":%d,.*\"count\":%d,' '%s/server.out'",
		    scheme, rounds, 50 * rounds, t_tmpdir()) == 0,
	       "no JSON line with count %d", 50 * rounds);
	printf("FIGURE server_example_50_clients[%s]: 50 clients x %d round trips of 0..64 KiB in %lld ms\n",
	       scheme, rounds, (long long)ms);
}

/* Replies up to 16 times the listener's capacity, sent with IPC_DONTWAIT
 * from the event loop: each is accepted whole and moved on by later calls
 * (ipc_send(3)); no EMSGSIZE, no spin, no blocking. */
CTEST(server_example_big_replies)
{
	TEST_TIMEOUT(120);
	int64_t ms;
	int rc = run_server(scheme, "-c 10 -r 30 --capacity 4096", &ms);
	CHECKF(rc == 0, "examples/server --capacity 4096 exited %d after %lld ms", rc, (long long)ms);
}

/* The same server on the application's own epoll (ipc_conn_fd(), armed
 * with the events ipc_conn_ready() names), with replies up to 16 times
 * the capacity: a descriptor that never fires, or a readiness that moves
 * nothing 10,000 times in a row (a spin), fails the run. */
CTEST(server_example_epoll)
{
	TEST_TIMEOUT(120);
	const char *san = t_env("IPC_SAN");
	int rounds = !*san ? 100 : strstr(san, "thread") ? 20 : 50;
	char args[64];
	snprintf(args, sizeof args, "--epoll -c 50 -r %d", rounds);
	int64_t ms;
	int rc = run_server(scheme, args, &ms);
	CHECKF(rc == 0, "examples/server %s exited %d after %lld ms", args, rc, (long long)ms);
	rc = run_server(scheme, "--epoll -c 10 -r 30 --capacity 4096", &ms);
	CHECKF(rc == 0, "examples/server --epoll --capacity 4096 exited %d after %lld ms", rc, (long long)ms);
}
