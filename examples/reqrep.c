/*
 * reqrep.c - request/reply with a receive timeout.
 *
 *   reqrep [ADDR]   (default: a unique unix abstract address)
 *
 * A forked server answers each request "id:work" with "id:done" after
 * sleeping `work` milliseconds.  The client gives every request 200 ms
 * (recv_timeout_ms): a slow request fails with ETIMEDOUT and the client
 * moves on.  Its late reply still arrives later, so replies carry the
 * request id and stale ones are dropped.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ipc.h>

static void server(ipc_listener *l)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	ipc_conn *c = ipc_accept(l, 0);
	ipc_listener_close(l);
	char req[64], rep[80];
	ssize_t n;
	while (c && (n = ipc_recv(c, req, sizeof req - 1, 0)) >= 0) {
		req[n] = 0;
		int id, work;
		if (sscanf(req, "%d:%d", &id, &work) != 2)
			_exit(1);
		struct timespec ts = {0, (long)work * 1000000};
		nanosleep(&ts, NULL);
		int len = snprintf(rep, sizeof rep, "%d:done", id);
		if (ipc_send(c, rep, (size_t)len, 0) < 0)
			break;
	}
	_exit(0);
}

int main(int argc, char **argv)
{
	char self[64], bound[IPC_ADDR_MAX + 1];
	snprintf(self, sizeof self, "unix:@reqrep-%d", (int)getpid());
	const char *addr = argc > 1 ? argv[1] : self;

	static ipc_listener *l; /* after fork() the child's: never closed here */
	l = ipc_listen(addr, NULL);
	if (!l || ipc_listener_addr(l, bound, sizeof bound) < 0) {
		fprintf(stderr, "reqrep: listen %s: %s\n", addr, strerror(errno));
		return 2;
	}
	pid_t pid = fork();
	if (pid == 0)
		server(l); /* from here on only the child uses l */

	struct ipc_options opt;
	ipc_options_init(&opt);
	opt.recv_timeout_ms = 200; /* every ipc_recv() waits at most 200 ms */
	ipc_conn *c = ipc_connect(bound, &opt);
	if (!c) {
		perror("reqrep: connect");
		return 2;
	}

	static const int work[] = {5, 10, 300, 1, 20}; /* request 2 is too slow */
	int answered = 0, timed_out = 0;
	for (int id = 0; id < 5; id++) {
		char req[32], rep[64];
		int len = snprintf(req, sizeof req, "%d:%d", id, work[id]);
		if (ipc_send(c, req, (size_t)len, 0) < 0) {
			perror("reqrep: send");
			return 1;
		}
		for (;;) {
			ssize_t n = ipc_recv(c, rep, sizeof rep - 1, 0);
			if (n < 0 && errno == ETIMEDOUT) {
				printf("request %d: timed out\n", id);
				timed_out++;
				break;
			}
			if (n < 0) {
				perror("reqrep: recv");
				return 1;
			}
			rep[n] = 0;
			if (atoi(rep) != id) { /* a late reply to an earlier request */
				printf("request %d: dropped stale reply \"%s\"\n", id, rep);
				continue;
			}
			printf("request %d: \"%s\"\n", id, rep);
			answered++;
			break;
		}
	}
	ipc_close(c);
	int st;
	waitpid(pid, &st, 0);
	/* expected: 4 answered, 1 timed out */
	return answered == 4 && timed_out == 1 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
