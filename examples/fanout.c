/*
 * fanout.c - one publisher, many subscribers over mixed transports.
 *
 *   fanout [COUNT]   (default 1000 messages)
 *
 * The parent listens on one address per transport built (unix, tcp, shm,
 * mq; EPROTONOSUPPORT = not built, skipped), forks two subscribers per
 * listener, accepts them all with one ipc_poll() over every listener, then
 * sends COUNT numbered messages to every subscriber.  It waits with
 * ipc_poll(IPC_POLLOUT) rather than blocking on a slow subscriber, and at
 * the end collects each subscriber's report ("got N") with ipc_poll().
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
#include <unistd.h>

#include <ipc.h>

#define PER_LISTENER 2
#define MAXSUB 16

/* Subscriber: count messages until "end", check their order, report. */
static void subscriber(const char *addr)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	ipc_conn *c = ipc_connect(addr, NULL);
	if (!c)
		_exit(1);
	char buf[64];
	long got = 0;
	ssize_t n;
	while ((n = ipc_recv(c, buf, sizeof buf - 1, 0)) >= 0) {
		buf[n] = 0;
		if (!strcmp(buf, "end"))
			break;
		if (atol(buf) != got) /* messages arrive in order, none lost */
			_exit(1);
		got++;
	}
	int len = snprintf(buf, sizeof buf, "got %ld", got);
	ipc_send(c, buf, (size_t)len, 0);
	_exit(ipc_close(c) == 0 ? 0 : 1);
}

int main(int argc, char **argv)
{
	long count = argc > 1 ? atol(argv[1]) : 1000;
	char dir[] = "/tmp/ipc-fanout.XXXXXX", a[4][64];
	if (!mkdtemp(dir))
		return 2;
	snprintf(a[0], sizeof a[0], "unix:%s/s", dir);
	snprintf(a[1], sizeof a[1], "tcp:127.0.0.1:0");
	snprintf(a[2], sizeof a[2], "shm:fanout-%d", (int)getpid());
	snprintf(a[3], sizeof a[3], "mq:/fanout-%d", (int)getpid());

	struct ipc_pollitem it[MAXSUB];
	ipc_listener *ls[4];
	int nl = 0, nsub = 0;
	pid_t pids[MAXSUB];
	for (int i = 0; i < 4; i++) {
		char bound[IPC_ADDR_MAX + 1];
		ipc_listener *l = ipc_listen(a[i], NULL);
		if (!l) {
			if (errno != EPROTONOSUPPORT) {
				fprintf(stderr, "fanout: listen %s: %s\n", a[i], strerror(errno));
				return 1;
			}
			continue;
		}
		ipc_listener_addr(l, bound, sizeof bound);
		for (int k = 0; k < PER_LISTENER; k++)
			if ((pids[nsub++] = fork()) == 0)
				subscriber(bound); /* the child never touches l */
		ls[nl++] = l;
	}

	/* Accept every subscriber, waiting on all listeners at once. */
	ipc_conn *subs[MAXSUB];
	int nconn = 0;
	while (nconn < nsub) {
		for (int i = 0; i < nl; i++)
			it[i] = (struct ipc_pollitem){.listener = ls[i], .events = IPC_POLLIN};
		if (ipc_poll(it, (size_t)nl, 10000) <= 0) {
			fprintf(stderr, "fanout: subscribers did not connect\n");
			return 1;
		}
		for (int i = 0; i < nl; i++)
			if (it[i].revents & IPC_POLLIN) {
				ipc_conn *c = ipc_accept(ls[i], IPC_DONTWAIT);
				if (c)
					subs[nconn++] = c;
			}
	}
	for (int i = 0; i < nl; i++)
		ipc_listener_close(ls[i]);

	/* Publish: each subscriber gets message `next[i]` when it can take it. */
	long next[MAXSUB] = {0};
	int left = nconn;
	while (left > 0) {
		int n = 0, map[MAXSUB];
		for (int i = 0; i < nconn; i++)
			if (next[i] <= count) {
				it[n] = (struct ipc_pollitem){.conn = subs[i], .events = IPC_POLLOUT};
				map[n++] = i;
			}
		if (ipc_poll(it, (size_t)n, 10000) <= 0) {
			fprintf(stderr, "fanout: publishing stalled\n");
			return 1;
		}
		for (int k = 0; k < n; k++) {
			int i = map[k];
			if (!(it[k].revents & (IPC_POLLOUT | IPC_POLLERR | IPC_POLLHUP)))
				continue;
			char msg[32];
			int len = next[i] < count ? snprintf(msg, sizeof msg, "%ld", next[i])
						  : snprintf(msg, sizeof msg, "end");
			if (ipc_send(subs[i], msg, (size_t)len, IPC_DONTWAIT) < 0) {
				if (errno == EAGAIN)
					continue;
				fprintf(stderr, "fanout: send: %s\n", strerror(errno));
				return 1;
			}
			if (++next[i] > count)
				left--;
		}
	}

	/* Collect the reports. */
	int bad = 0;
	for (int i = 0; i < nconn; i++) {
		char rep[64];
		ssize_t n = ipc_recv(subs[i], rep, sizeof rep - 1, 0);
		rep[n < 0 ? 0 : n] = 0;
		printf("%-5s subscriber %d: %s\n", ipc_conn_scheme(subs[i]), i, rep);
		bad |= n < 0 || atol(rep + 4) != count;
		ipc_close(subs[i]);
	}
	for (int i = 0; i < nsub; i++) {
		int st;
		waitpid(pids[i], &st, 0);
		bad |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
	}
	rmdir(dir);
	return bad;
}
