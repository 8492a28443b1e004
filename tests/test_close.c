/* test_close.c - an orderly close loses nothing (ipc(7), "End of a
 * connection"; issue 11): whatever a peer sent before ipc_close is
 * delivered, then EPIPE, whether or not the server had accepted yet. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

enum { BIG = 200000 };

/* The client: three messages (the middle one far above the capacity, sent
 * without waiting so the library holds most of it), then close and exit. */
static void sender(const char *bound)
{
	struct ipc_options o;
	ipc_options_init(&o);
	o.capacity = 8192;
	ipc_conn *c = ipc_connect(bound, &o);
	if (!c)
		_exit(2);
	unsigned char *big = malloc(BIG);
	if (!big)
		_exit(3);
	t_fill(big, BIG, 1);
	if (ipc_send(c, "first", 5, 0) != 5)
		_exit(4);
	while (ipc_send(c, big, BIG, IPC_DONTWAIT) < 0) {
		if (errno != EAGAIN)
			_exit(5);
		struct ipc_pollitem it = {.conn = c, .events = IPC_POLLOUT};
		if (ipc_poll(&it, 1, -1) < 0)
			_exit(6);
	}
	if (ipc_send(c, "last", 4, 0) != 4) /* waits for the big one to leave */
		_exit(7);
	_exit(ipc_close(c) == 0 ? 0 : 8);
}

CTEST(close_before_accept_delivers)
{
	TEST_TIMEOUT(120);
	char bound[IPC_ADDR_MAX + 1];
	struct ipc_options o;
	ipc_options_init(&o);
	o.recv_timeout_ms = 10000;
	ipc_listener *l = t_listen(scheme, &o, bound);
	for (int round = 0; round < 12; round++) {
		fflush(NULL);
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0)
			sender(bound);
		/* accept late: the client has sent, closed (or is closing) */
		t_sleep_ms(round % 3 == 0 ? 0 : 60);
		ipc_conn *s = t_accept(l);
		char small[16];
		ssize_t r = ipc_recv(s, small, sizeof small, 0);
		CHECKF(r == 5, "round %d: first message: %zd (%s)", round, r, strerror(errno));
		void *m = NULL;
		r = ipc_recv_alloc(s, &m, 0);
		CHECKF(r == BIG && t_verify(m, BIG, 1), "round %d: big message: %zd (%s)", round, r, strerror(errno));
		free(m);
		r = ipc_recv(s, small, sizeof small, 0);
		CHECKF(r == 4, "round %d: last message: %zd (%s)", round, r, strerror(errno));
		r = ipc_recv(s, small, sizeof small, 0);
		CHECKF(r < 0 && errno == EPIPE, "round %d: after the last message: %zd (%s), expected EPIPE", round, r,
		       strerror(errno));
		int st = t_wait(pid);
		CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "round %d: sender status %#x", round, st);
		ipc_close(s);
	}
	ipc_listener_close(l);
}

/* ipc(7) "Fork and exec": the parent accepts and forks a worker that uses
 * the connection and closes it; the parent forgets its copy.  The worker's
 * close ends the connection: the client sees EPIPE at once.  (shm ignored
 * the worker's close when its receive had not needed to wait.) */
CTEST(fork_worker_close_ends_connection)
{
	TEST_TIMEOUT(30);
	ipc_conn *s, *c;
	struct ipc_options o;
	ipc_options_init(&o);
	o.recv_timeout_ms = 5000;
	t_pair(scheme, &o, &s, &c);
	CHECK_EQ(ipc_send(c, "job", 3, 0), 3);
	t_sleep_ms(20); /* queued before the worker looks: no wait there */
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		char b[8];
		if (ipc_recv(s, b, sizeof b, 0) != 3)
			_exit(2);
		_exit(ipc_close(s) == 0 ? 0 : 3);
	}
	t_wait_ok(pid); /* the parent never touches s again */
	int64_t t0 = t_now_ms();
	char b[8];
	errno = 0;
	ssize_t r = ipc_recv(c, b, sizeof b, 0);
	int e = errno;
	int64_t took = t_now_ms() - t0;
	CHECKF(r < 0 && e == EPIPE, "client after the worker's close: %zd, errno %d (%s) after %lld ms", r, e,
	       strerror(e), (long long)took);
	CHECK_LT(took, 2000);
	ipc_close(c);
}
