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
