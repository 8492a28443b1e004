/* ipc-scale - many connections on one listener.
 *
 *   ipc-scale ADDR [--conns N] [--count M] [--size BYTES]
 *       N connections from one client process to a forked server that
 *       echoes on all of them through ipc_poll(); every connection keeps one
 *       request in flight, M round trips each.  Prints one JSON line with
 *       aggregate messages/s and p50/p99 round-trip time.
 *   ipc-scale ADDR --idle N
 *       opens N idle connections and prints the memory (RSS) and
 *       descriptors they cost per connection, client and server side.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"

static void die(const char *what)
{
	fprintf(stderr, "ipc-scale: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
			break;
	fclose(f);
	return v;
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Server: accept n connections, then echo on all until every one closes.
 * In idle mode (report >= 0) write the RSS growth per connection to the
 * report pipe instead and wait to be killed. */
static void serve(ipc_listener *l, int n, size_t size, int report)
{
	long rss0 = rss_kib();
	struct ipc_pollitem *it = calloc((size_t)n, sizeof *it);
	char *buf = malloc(size ? size : 1);
	if (!it || !buf)
		die("malloc");
	for (int i = 0; i < n; i++) {
		if (!(it[i].conn = ipc_accept(l, 0)))
			die("accept");
		it[i].events = IPC_POLLIN;
	}
	if (report >= 0) {
		long per = (rss_kib() - rss0) * 1024 / n;
		if (write(report, &per, sizeof per) != sizeof per)
			die("write");
		pause();
	}
	for (int open = n; open > 0;) {
		if (ipc_poll(it, (size_t)n, -1) < 0)
			die("poll");
		for (int i = 0; i < n; i++) {
			if (!it[i].conn || !it[i].revents)
				continue;
			ssize_t r;
			while ((r = ipc_recv(it[i].conn, buf, size, IPC_DONTWAIT)) >= 0)
				if (ipc_send(it[i].conn, buf, (size_t)r, 0) < 0)
					die("server send");
			if (errno != EAGAIN) {
				ipc_close(it[i].conn);
				it[i].conn = NULL;
				it[i].events = 0;
				open--;
			}
		}
		/* closed items are skipped by giving them a placeholder */
		for (int i = 0; i < n; i++)
			if (!it[i].conn) {
				it[i] = it[n - 1];
				n--;
				i--;
			}
	}
	_exit(0);
}

static pid_t fork_server(ipc_listener *l, int n, size_t size, int report)
{
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		serve(l, n, size, report);
	}
	return pid;
}

static const char *scheme_of(const char *addr, char *out, size_t len)
{
	size_t n = strcspn(addr, ":");
	snprintf(out, len, "%.*s", (int)n, addr);
	return out;
}

int main(int argc, char **argv)
{
	int conns = 10, count = 10000, idle = 0;
	size_t size = 64;
	const char *addr = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--conns") && i + 1 < argc)
			conns = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--count") && i + 1 < argc)
			count = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--size") && i + 1 < argc)
			size = (size_t)atol(argv[++i]);
		else if (!strcmp(argv[i], "--idle") && i + 1 < argc)
			idle = atoi(argv[++i]);
		else if (argv[i][0] != '-' && !addr)
			addr = argv[i];
		else {
			fprintf(stderr, "usage: ipc-scale ADDR [--conns N] [--count M] [--size BYTES] | ADDR --idle N\n");
			return 2;
		}
	}
	if (!addr || conns < 1 || count < 1 || idle < 0) {
		fprintf(stderr, "usage: ipc-scale ADDR [--conns N] [--count M] [--size BYTES] | ADDR --idle N\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	char bound[IPC_ADDR_MAX + 1], scheme[16];
	ipc_listener *l = ipc_listen(addr, NULL);
	if (!l || ipc_listener_addr(l, bound, sizeof bound) < 0)
		die("listen");
	scheme_of(bound, scheme, sizeof scheme);

	if (idle) {
		int p[2];
		if (pipe(p) < 0)
			die("pipe");
		long rss0 = rss_kib();
		pid_t pid = fork_server(l, idle, size, p[1]);
		ipc_conn **c = calloc((size_t)idle, sizeof *c);
		int made = 0;
		for (; made < idle; made++)
			if (!(c[made] = ipc_connect(bound, NULL)))
				break;
		if (made < idle) {
			fprintf(stderr, "ipc-scale: connection %d of %d: %s\n", made + 1, idle, strerror(errno));
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			printf("{\"impl\":\"libipc\",\"bench\":\"idle\",\"transport\":\"%s\",\"conns\":%d,"
			       "\"error\":\"%s\"}\n", scheme, made, strerror(errno));
			return 1;
		}
		long cli = (rss_kib() - rss0) * 1024 / idle, srv = 0;
		if (read(p[0], &srv, sizeof srv) != sizeof srv)
			die("server report");
		printf("{\"impl\":\"libipc\",\"bench\":\"idle\",\"transport\":\"%s\",\"conns\":%d,"
		       "\"client_bytes_per_conn\":%ld,\"server_bytes_per_conn\":%ld}\n",
		       scheme, idle, cli, srv);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		for (int i = 0; i < made; i++)
			ipc_close(c[i]);
		ipc_listener_close(l);
		return 0;
	}

	pid_t pid = fork_server(l, conns, size, -1);
	struct ipc_pollitem *it = calloc((size_t)conns, sizeof *it);
	int64_t *sent_at = calloc((size_t)conns, sizeof *sent_at);
	int *left = calloc((size_t)conns, sizeof *left);
	size_t total = (size_t)conns * (size_t)count, nrtt = 0;
	int64_t *rtt = malloc(total * sizeof *rtt);
	char *buf = calloc(1, size ? size : 1), *in = malloc(size ? size : 1);
	if (!it || !sent_at || !left || !rtt || !buf || !in)
		die("malloc");
	for (int i = 0; i < conns; i++) {
		if (!(it[i].conn = ipc_connect(bound, NULL)))
			die("connect");
		it[i].events = IPC_POLLIN;
		left[i] = count;
	}
	int64_t t0 = now_ns();
	for (int i = 0; i < conns; i++) {
		sent_at[i] = now_ns();
		if (ipc_send(it[i].conn, buf, size, 0) < 0)
			die("send");
	}
	for (int active = conns; active > 0;) {
		if (ipc_poll(it, (size_t)conns, 60000) <= 0)
			die("poll (server gone?)");
		for (int i = 0; i < conns; i++) {
			if (!(it[i].revents & IPC_POLLIN) || !left[i])
				continue;
			ssize_t r = ipc_recv(it[i].conn, in, size, IPC_DONTWAIT);
			if (r < 0 && errno == EAGAIN)
				continue;
			if (r != (ssize_t)size)
				die("bad echo");
			rtt[nrtt++] = now_ns() - sent_at[i];
			if (--left[i] == 0) {
				it[i].events = 0;
				active--;
				continue;
			}
			sent_at[i] = now_ns();
			if (ipc_send(it[i].conn, buf, size, 0) < 0)
				die("send");
		}
	}
	double secs = (double)(now_ns() - t0) / 1e9;
	qsort(rtt, nrtt, sizeof *rtt, cmp64);
	printf("{\"impl\":\"libipc\",\"bench\":\"scale\",\"transport\":\"%s\",\"conns\":%d,\"size\":%zu,"
	       "\"count\":%zu,\"msgs_per_s\":%.1f,\"rtt_p50_ns\":%lld,\"rtt_p99_ns\":%lld}\n",
	       scheme, conns, size, total, (double)total / secs, (long long)rtt[(nrtt - 1) / 2],
	       (long long)rtt[(nrtt * 99 + 99) / 100 - 1]);
	for (int i = 0; i < conns; i++)
		ipc_close(it[i].conn);
	int st;
	waitpid(pid, &st, 0);
	ipc_listener_close(l);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
