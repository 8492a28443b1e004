/*
 * demo.c - one message round trip benchmark over every transport built.
 *
 * For each scheme (unix, tcp, shm, mq) a child process listens and echoes;
 * the parent connects and times 1000 ping-pongs of 64 bytes.  A scheme the
 * library was built without fails with EPROTONOSUPPORT and is skipped.
 * This is what `make demo` runs.  Exit status 0 if every built transport
 * worked.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ipc.h>

#define ROUNDS 1000
#define SIZE 64

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Child: listen on addr, tell the parent the bound address (or "!errno")
 * through fd, then echo every message of one connection until it ends. */
static void echo_server(const char *addr, int fd)
{
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = ipc_listen(addr, NULL);
	if (!l || ipc_listener_addr(l, bound, sizeof bound) < 0)
		snprintf(bound, sizeof bound, "!%d", errno);
	if (write(fd, bound, strlen(bound) + 1) < 0 || !l)
		_exit(1);
	close(fd);
	ipc_conn *c = ipc_accept(l, 0);
	ipc_listener_close(l); /* removes the socket file / names */
	if (!c)
		_exit(1);
	char buf[SIZE];
	ssize_t n;
	while ((n = ipc_recv(c, buf, sizeof buf, 0)) >= 0)
		if (ipc_send(c, buf, (size_t)n, 0) < 0)
			break;
	/* EPIPE = the parent closed in order: that is success */
	int ok = n < 0 && errno == EPIPE;
	ipc_close(c);
	_exit(ok ? 0 : 1);
}

/* Returns 0 ok, 1 failed, 2 not built. */
static int run(const char *addr)
{
	int p[2];
	if (pipe(p) < 0)
		return 1;
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the demo */
		close(p[0]);
		echo_server(addr, p[1]);
	}
	close(p[1]);
	char bound[IPC_ADDR_MAX + 1] = "";
	ssize_t got = read(p[0], bound, sizeof bound - 1);
	close(p[0]);
	if (got > 0 && bound[0] == '!') {
		int err = atoi(bound + 1);
		waitpid(pid, NULL, 0);
		if (err == EPROTONOSUPPORT)
			return 2;
		fprintf(stderr, "demo: listen %s: %s\n", addr, strerror(err));
		return 1;
	}

	int rc = 1;
	ipc_conn *c = ipc_connect(bound, NULL);
	if (!c) {
		fprintf(stderr, "demo: connect %s: %s\n", bound, strerror(errno));
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return 1;
	}
	char msg[SIZE], back[SIZE];
	memset(msg, 'x', sizeof msg);
	double t0 = now_us();
	int i;
	for (i = 0; i < ROUNDS; i++) {
		memcpy(msg, &i, sizeof i); /* stamp each message */
		if (ipc_send(c, msg, sizeof msg, 0) < 0 ||
		    ipc_recv(c, back, sizeof back, 0) != SIZE || memcmp(msg, back, SIZE))
			break;
	}
	double us = now_us() - t0;
	ipc_close(c);
	int st;
	waitpid(pid, &st, 0);
	if (i == ROUNDS && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		printf("%-46s %d x %d-byte round trips: %7.1f us each\n", bound, ROUNDS, SIZE,
		       us / ROUNDS);
		rc = 0;
	} else {
		fprintf(stderr, "demo: %s: round trip %d failed: %s\n", bound, i, strerror(errno));
	}
	return rc;
}

int main(void)
{
	char dir[] = "/tmp/ipc-demo.XXXXXX", unix_addr[64], shm_addr[64], mq_addr[64];
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(unix_addr, sizeof unix_addr, "unix:%s/demo.sock", dir);
	snprintf(shm_addr, sizeof shm_addr, "shm:ipc-demo-%d", (int)getpid());
	snprintf(mq_addr, sizeof mq_addr, "mq:/ipc-demo-%d", (int)getpid());
	const char *addrs[] = {unix_addr, "tcp:127.0.0.1:0", shm_addr, mq_addr};
	int failed = 0;
	for (size_t i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
		int r = run(addrs[i]);
		if (r == 2)
			printf("%-46s not built\n", addrs[i]);
		failed += r == 1;
	}
	rmdir(dir);
	return failed ? 1 : 0;
}
