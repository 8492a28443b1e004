/*
 * epoll_loop.c - an echo server driven by an application's own epoll loop.
 *
 *   epoll_loop [ADDR]   (default: a unique unix abstract address)
 *
 * Integration rules shown here (see ipc(7), ipc_conn_fd(3)):
 *   - register ipc_listener_fd() / ipc_conn_fd() with epoll, but ask
 *     ipc_conn_ready() which poll(2) events to wait for: the library may
 *     need POLLOUT to make progress even when you only want to receive;
 *   - when a descriptor fires, drain with IPC_DONTWAIT until EAGAIN: a
 *     wakeup may stand for several messages, and a message already held
 *     inside the library makes ipc_conn_ready() report it at once;
 *   - re-arm with the events ipc_conn_ready() returned.
 * Three forked clients send 200 messages each and check the echoes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ipc.h>

#define CLIENTS 3
#define MSGS 200

static void client(const char *addr, int id)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	ipc_conn *c = ipc_connect(addr, NULL);
	char out[32], in[32];
	for (int i = 0; c && i < MSGS; i++) {
		int len = snprintf(out, sizeof out, "client %d msg %d", id, i);
		if (ipc_send(c, out, (size_t)len, 0) != len || ipc_recv(c, in, sizeof in, 0) != len ||
		    memcmp(in, out, (size_t)len))
			_exit(1);
	}
	_exit(c && ipc_close(c) == 0 ? 0 : 1);
}

/* poll(2) events -> epoll events */
static uint32_t to_epoll(short pev)
{
	return (pev & POLLIN ? EPOLLIN : 0) | (pev & POLLOUT ? EPOLLOUT : 0);
}

/* Drain one connection; returns 1 while it stays open, 0 when done.  On 1
 * *pev holds the events to wait for next. */
static int service(ipc_conn *c, short *pev)
{
	for (;;) {
		char buf[256];
		ssize_t n = ipc_recv(c, buf, sizeof buf, IPC_DONTWAIT);
		if (n >= 0) {
			/* a blocking send is fine here: echoes are small and the
			 * client reads each one before it sends the next */
			if (ipc_send(c, buf, (size_t)n, 0) < 0)
				return 0;
			continue;
		}
		if (errno != EAGAIN)
			return 0; /* EPIPE: client closed; anything else: error */
		/* 0 = not ready: *pev says what to wait for.  Anything else
		 * means a message (or an error) is waiting now: drain again. */
		int r = ipc_conn_ready(c, IPC_POLLIN, pev);
		if (r == 0)
			return 1;
		if (r < 0)
			return 0;
	}
}

int main(int argc, char **argv)
{
	char self[64], bound[IPC_ADDR_MAX + 1];
	snprintf(self, sizeof self, "unix:@epoll-loop-%d", (int)getpid());
	const char *addr = argc > 1 ? argv[1] : self;
	ipc_listener *l = ipc_listen(addr, NULL);
	if (!l || ipc_listener_addr(l, bound, sizeof bound) < 0) {
		fprintf(stderr, "epoll_loop: listen %s: %s\n", addr, strerror(errno));
		return 2;
	}
	pid_t pids[CLIENTS];
	for (int i = 0; i < CLIENTS; i++)
		if ((pids[i] = fork()) == 0)
			client(bound, i);

	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL = listener */
	epoll_ctl(ep, EPOLL_CTL_ADD, ipc_listener_fd(l), &ev);

	int accepted = 0, open = 0;
	while (accepted < CLIENTS || open > 0) {
		struct epoll_event evs[8];
		int n = epoll_wait(ep, evs, 8, 10000);
		if (n <= 0) {
			fprintf(stderr, "epoll_loop: stalled\n");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			ipc_conn *c = evs[i].data.ptr;
			short pev = POLLIN;
			if (!c) { /* listener: accept everything pending */
				while ((c = ipc_accept(l, IPC_DONTWAIT))) {
					accepted++, open++;
					/* serve at once: data may already be held */
					if (!service(c, &pev)) {
						ipc_close(c);
						open--;
						continue;
					}
					struct epoll_event ce = {.events = to_epoll(pev), .data.ptr = c};
					epoll_ctl(ep, EPOLL_CTL_ADD, ipc_conn_fd(c), &ce);
				}
				continue;
			}
			if (!service(c, &pev)) {
				epoll_ctl(ep, EPOLL_CTL_DEL, ipc_conn_fd(c), NULL);
				ipc_close(c);
				open--;
				continue;
			}
			struct epoll_event ce = {.events = to_epoll(pev), .data.ptr = c};
			epoll_ctl(ep, EPOLL_CTL_MOD, ipc_conn_fd(c), &ce);
		}
	}
	close(ep);
	ipc_listener_close(l);
	int bad = 0;
	for (int i = 0; i < CLIENTS; i++) {
		int st;
		waitpid(pids[i], &st, 0);
		bad |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
	}
	printf("epoll_loop: served %d clients x %d messages: %s\n", CLIENTS, MSGS, bad ? "FAILED" : "ok");
	return bad;
}
