/*
 * ipc-bench - libipc latency / throughput / connection-rate benchmark.
 *
 *   ipc-bench lat|thr|conn ADDR [--size BYTES] [--count N] [--batch N]
 *                               [--capacity BYTES] [--human]
 *
 * Same CLI and JSON line as peerbench's raw-bench/zmq-bench/nng-bench, with
 * "impl":"libipc" and "transport" = the scheme of ADDR (see ipc-bench(1)).
 * The parent is the client and does the timing; a forked child listens on
 * ADDR, reports the bound address through a pipe, and serves (echo for lat
 * and conn, sink + ack for thr).  The child dies with the parent.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"

#define MAGIC 0x72656570u /* "peer" */
#define MAX_SIZE (1ull << 30)
#define DEFAULT_COUNT 100000ull
#define IO_TIMEOUT_MS 60000
#define MAX_BATCH 1024

enum { BENCH_LAT = 1, BENCH_THR = 2, BENCH_CONN = 3 };
static const char *const bnames[] = {"", "lat", "thr", "conn"};

struct hello {
	uint32_t magic, bench;
	uint64_t size, count;
};
struct ack {
	uint64_t msgs, bytes;
};

static struct {
	int bench, human;
	uint64_t size, count, batch, capacity;
	const char *addr;
	char scheme[16];
	const char *cert, *key, *ca, *server_name; /* tls: */
	int tls13, no_verify;
} o;

static const char *g_role = "client";
static volatile sig_atomic_t g_expect_child_exit;
static pid_t g_child = -1;

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "ipc-bench (%s): ", g_role);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}
#define DIE_ERRNO(what) die("%s: %s %s", (what), strerror(errno), ipc_error_detail())

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_sigchld(int sig)
{
	(void)sig;
	int st, saved = errno;
	if (!g_expect_child_exit && g_child > 0 && waitpid(g_child, &st, WNOHANG) == g_child) {
		static const char msg[] = "ipc-bench (client): server process exited unexpectedly\n";
		ssize_t w = write(2, msg, sizeof msg - 1);
		(void)w;
		_exit(1);
	}
	errno = saved;
}

static void usage(int code)
{
	fprintf(code ? stderr : stdout,
		"usage: ipc-bench lat|thr|conn ADDR [--size BYTES] [--count N] [--batch N]\n"
		"                 [--capacity BYTES] [--human]\n"
		"                 [--cert FILE --key FILE --ca FILE --server-name NAME\n"
		"                  --tls13 --no-verify]   (tls:)\n"
		"       ipc-bench --version\n"
		"ADDR: unix:/path, unix:@name, tcp:host:port, tls:host:port, shm:name, mq:/name.\n"
		"Sizes accept K/M/G suffixes; defaults: --size 64 --count 100000.\n"
		"Prints one JSON line (or a table with --human).\n");
	exit(code);
}

static uint64_t parse_num(const char *s, const char *what)
{
	char *end;
	errno = 0;
	if (!s || !*s || *s == '-')
		die("bad %s: '%s'", what, s ? s : "");
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		die("bad %s: '%s'", what, s);
	uint64_t mul = 1;
	switch (*end) {
	case 'k': case 'K': mul = 1ull << 10; end++; break;
	case 'm': case 'M': mul = 1ull << 20; end++; break;
	case 'g': case 'G': mul = 1ull << 30; end++; break;
	default: break;
	}
	if (*end)
		die("bad %s: '%s'", what, s);
	if (v > UINT64_MAX / mul)
		die("%s too large: '%s'", what, s);
	return (uint64_t)v * mul;
}

static void parse_args(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "--version")) {
		printf("ipc-bench: libipc %d.%d.%d\n", IPC_VERSION_MAJOR, IPC_VERSION_MINOR,
		       IPC_VERSION_PATCH);
		exit(0);
	}
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))
		usage(0);
	if (argc < 3)
		usage(2);
	for (int b = BENCH_LAT; b <= BENCH_CONN; b++)
		if (!strcmp(argv[1], bnames[b]))
			o.bench = b;
	if (!o.bench)
		usage(2);
	o.addr = argv[2];
	const char *colon = strchr(o.addr, ':');
	if (!colon || colon == o.addr || (size_t)(colon - o.addr) >= sizeof o.scheme)
		die("bad address '%s' (expected scheme:name)", o.addr);
	memcpy(o.scheme, o.addr, (size_t)(colon - o.addr));
	o.size = 64;
	o.count = DEFAULT_COUNT;
	o.batch = 1;
	o.capacity = IPC_DEFAULT_CAPACITY;
	for (int i = 3; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--size") && i + 1 < argc)
			o.size = parse_num(argv[++i], "size");
		else if (!strncmp(a, "--size=", 7))
			o.size = parse_num(a + 7, "size");
		else if (!strcmp(a, "--count") && i + 1 < argc)
			o.count = parse_num(argv[++i], "count");
		else if (!strncmp(a, "--count=", 8))
			o.count = parse_num(a + 8, "count");
		else if (!strcmp(a, "--batch") && i + 1 < argc)
			o.batch = parse_num(argv[++i], "batch");
		else if (!strncmp(a, "--batch=", 8))
			o.batch = parse_num(a + 8, "batch");
		else if (!strcmp(a, "--capacity") && i + 1 < argc)
			o.capacity = parse_num(argv[++i], "capacity");
		else if (!strncmp(a, "--capacity=", 11))
			o.capacity = parse_num(a + 11, "capacity");
		else if (!strcmp(a, "--human"))
			o.human = 1;
		else if (!strcmp(a, "--cert") && i + 1 < argc)
			o.cert = argv[++i];
		else if (!strcmp(a, "--key") && i + 1 < argc)
			o.key = argv[++i];
		else if (!strcmp(a, "--ca") && i + 1 < argc)
			o.ca = argv[++i];
		else if (!strcmp(a, "--server-name") && i + 1 < argc)
			o.server_name = argv[++i];
		else if (!strcmp(a, "--tls13"))
			o.tls13 = 1;
		else if (!strcmp(a, "--no-verify"))
			o.no_verify = 1;
		else
			usage(2);
	}
	if (o.size > MAX_SIZE)
		die("size must be <= %llu", (unsigned long long)MAX_SIZE);
	if (o.count < 1)
		die("count must be >= 1");
	if (o.bench == BENCH_LAT && o.count > 200000000ull)
		die("count too large for lat");
	if (o.batch < 1 || o.batch > MAX_BATCH)
		die("batch must be 1..%d", MAX_BATCH);
	if (o.capacity < 4096 || o.capacity > (1u << 30))
		die("capacity must be 4K..1G");
}

static void make_options(struct ipc_options *opt)
{
	ipc_options_init(opt);
	opt->send_timeout_ms = IO_TIMEOUT_MS;
	opt->recv_timeout_ms = IO_TIMEOUT_MS;
	opt->capacity = (size_t)o.capacity;
	if (o.size + 64 > opt->max_msg_size)
		opt->max_msg_size = (size_t)o.size + 64;
	opt->tls_cert_file = o.cert; /* tls: the listener's identity ... */
	opt->tls_key_file = o.key;
	opt->tls_ca_file = o.ca;     /* ... and what the client trusts */
	opt->tls_server_name = o.server_name;
	if (o.tls13)
		opt->tls_min_version = IPC_TLS_1_3;
	if (o.no_verify)
		opt->tls_verify = IPC_TLS_VERIFY_NONE;
}

/* ---- small I/O wrappers that die on any error ------------------------ */

static void xsend(ipc_conn *c, const void *buf, size_t len)
{
	if (ipc_send(c, buf, len, 0) != (ssize_t)len)
		DIE_ERRNO("ipc_send");
}

static size_t xrecv(ipc_conn *c, void *buf, size_t cap)
{
	ssize_t n = ipc_recv(c, buf, cap, 0);
	if (n < 0) {
		if (errno == EPIPE)
			die("ipc_recv: peer closed the connection");
		DIE_ERRNO("ipc_recv");
	}
	return (size_t)n;
}

/* Receive until the peer closes (EPIPE); anything else is an error. */
static void wait_close(ipc_conn *c)
{
	char b[64];
	ssize_t n = ipc_recv(c, b, sizeof b, 0);
	if (n >= 0)
		die("unexpected message of %zd bytes", n);
	if (errno != EPIPE)
		DIE_ERRNO("waiting for close");
}

/* ---- progress (--human on a terminal) -------------------------------- */

static uint64_t g_prog_next;

static void progress(uint64_t done, uint64_t total)
{
	if (!o.human || !isatty(2) || (done & 1023))
		return;
	uint64_t t = now_ns();
	if (t < g_prog_next)
		return;
	g_prog_next = t + 250000000ull;
	fprintf(stderr, "\r%s %s: %3d%%", bnames[o.bench], o.scheme, (int)(done * 100 / total));
}

static void progress_end(void)
{
	if (o.human && isatty(2) && g_prog_next)
		fprintf(stderr, "\r%30s\r", "");
}

/* ---- server (child) --------------------------------------------------- */

static void hello_server(ipc_conn *c)
{
	struct hello h;
	if (xrecv(c, &h, sizeof h) != sizeof h)
		die("bad hello length");
	if (h.magic != MAGIC || h.bench != (uint32_t)o.bench || h.size != o.size || h.count != o.count)
		die("hello mismatch");
	xsend(c, &h, sizeof h);
}

static void serve(ipc_listener *l)
{
	size_t cap = o.size ? (size_t)o.size : 1;
	size_t nb = o.bench == BENCH_THR ? (size_t)o.batch : 1;
	unsigned char *buf = malloc(cap * nb);
	struct iovec *iov = calloc(nb, sizeof *iov);
	if (!buf || !iov)
		die("out of memory");
	ipc_conn *c = ipc_accept(l, 0);
	if (!c)
		DIE_ERRNO("ipc_accept");
	hello_server(c);
	if (o.bench == BENCH_LAT) {
		ipc_listener_close(l);
		uint64_t warm = o.count / 10 < 1000 ? o.count / 10 : 1000;
		for (uint64_t i = 0; i < warm + o.count; i++) {
			size_t n = xrecv(c, buf, cap);
			if (n != o.size)
				die("echo: got %zu bytes, expected %" PRIu64, n, o.size);
			xsend(c, buf, n);
		}
	} else if (o.bench == BENCH_THR) {
		ipc_listener_close(l);
		struct ack a = {0, 0};
		while (a.msgs < o.count) {
			if (nb == 1) {
				a.bytes += xrecv(c, buf, cap);
				a.msgs++;
				continue;
			}
			uint64_t want = o.count - a.msgs < nb ? o.count - a.msgs : nb;
			for (size_t k = 0; k < want; k++)
				iov[k] = (struct iovec){buf + k * cap, cap};
			ssize_t n = ipc_recv_batch(c, iov, (size_t)want, 0);
			if (n <= 0)
				DIE_ERRNO("ipc_recv_batch");
			for (ssize_t k = 0; k < n; k++)
				a.bytes += iov[k].iov_len;
			a.msgs += (uint64_t)n;
		}
		xsend(c, &a, sizeof a);
	} else { /* conn: COUNT connections, one echo each */
		wait_close(c);
		ipc_close(c);
		for (uint64_t i = 0; i < o.count; i++) {
			c = ipc_accept(l, 0);
			if (!c)
				DIE_ERRNO("ipc_accept");
			size_t n = xrecv(c, buf, cap);
			xsend(c, buf, n);
			wait_close(c);
			if (ipc_close(c) < 0)
				DIE_ERRNO("ipc_close");
		}
		ipc_listener_close(l);
		free(buf);
		free(iov);
		exit(0);
	}
	wait_close(c);
	if (ipc_close(c) < 0)
		DIE_ERRNO("ipc_close");
	free(buf);
	free(iov);
	exit(0);
}

/* Fork the server; it listens on o.addr and writes the bound address (or
 * "!errno") to a pipe.  Returns the bound address in bound. */
static void start_server(char *bound, size_t len)
{
	int p[2];
	if (pipe(p) < 0)
		DIE_ERRNO("pipe");
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sigchld;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
	g_expect_child_exit = 1; /* setup failures are reported through the pipe */
	pid_t pid = fork();
	if (pid < 0)
		DIE_ERRNO("fork");
	if (pid == 0) {
		g_role = "server";
		signal(SIGCHLD, SIG_DFL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() == 1)
			_exit(1);
		close(p[0]);
		struct ipc_options opt;
		make_options(&opt);
		ipc_listener *l = ipc_listen(o.addr, &opt);
		char msg[IPC_ADDR_MAX + 16];
		if (!l)
			snprintf(msg, sizeof msg, "!%d", errno);
		else if (ipc_listener_addr(l, msg, sizeof msg) < 0)
			snprintf(msg, sizeof msg, "!%d", errno);
		size_t ml = strlen(msg) + 1;
		if (write(p[1], msg, ml) != (ssize_t)ml || msg[0] == '!')
			_exit(1);
		close(p[1]);
		serve(l);
	}
	g_child = pid;
	close(p[1]);
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(p[0], bound + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(p[0]);
	if (!got || bound[got - 1] != '\0')
		die("server failed to start");
	if (bound[0] == '!') {
		errno = atoi(bound + 1);
		die("listen %s: %s %s", o.addr, strerror(errno), ipc_error_detail());
	}
	g_expect_child_exit = 0;
	/* the child may have died between writing and now */
	int st;
	if (waitpid(pid, &st, WNOHANG) == pid)
		die("server process exited unexpectedly");
}

/* ---- client (parent) -------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* nearest-rank percentile of a sorted array */
static uint64_t pct(const uint64_t *v, uint64_t n, unsigned p)
{
	uint64_t rank = (n * p + 99) / 100;
	if (rank < 1)
		rank = 1;
	return v[rank - 1];
}

static void fill_pattern(unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(i * 131u + 7u);
}

static ipc_conn *xconnect(const char *bound)
{
	struct ipc_options opt;
	make_options(&opt);
	ipc_conn *c = ipc_connect(bound, &opt);
	if (!c)
		die("ipc_connect %s: %s %s", bound, strerror(errno), ipc_error_detail());
	return c;
}

static void hello_client(ipc_conn *c)
{
	struct hello h = {MAGIC, (uint32_t)o.bench, o.size, o.count}, r;
	xsend(c, &h, sizeof h);
	if (xrecv(c, &r, sizeof r) != sizeof r || memcmp(&h, &r, sizeof h))
		die("bad hello reply");
}

static void run_lat(ipc_conn *c, unsigned char *sbuf, unsigned char *rbuf, size_t cap)
{
	uint64_t warm = o.count / 10 < 1000 ? o.count / 10 : 1000;
	uint64_t *rtt = malloc(o.count * sizeof *rtt);
	if (!rtt)
		die("out of memory");
	size_t stamp = o.size < 8 ? (size_t)o.size : 8;
	for (uint64_t i = 0; i < warm + o.count; i++) {
		memcpy(sbuf, &i, stamp);
		uint64_t t0 = now_ns();
		xsend(c, sbuf, (size_t)o.size);
		size_t n = xrecv(c, rbuf, cap);
		uint64_t t1 = now_ns();
		if (n != o.size)
			die("echo length %zu != %" PRIu64, n, o.size);
		if (memcmp(sbuf, rbuf, n))
			die("echo payload mismatch at message %" PRIu64, i);
		if (i >= warm)
			rtt[i - warm] = t1 - t0;
		progress(i, warm + o.count);
	}
	progress_end();
	uint64_t n = o.count;
	long double sum = 0;
	for (uint64_t i = 0; i < n; i++)
		sum += rtt[i];
	qsort(rtt, n, sizeof rtt[0], cmp_u64);
	uint64_t p50 = pct(rtt, n, 50), p99 = pct(rtt, n, 99), mean = (uint64_t)(sum / n + 0.5L);
	if (o.human)
		printf("%-5s %-6s %10s %10s %12s %12s %12s\n"
		       "%-5s %-6s %10" PRIu64 " %10" PRIu64 " %12" PRIu64 " %12" PRIu64 " %12" PRIu64 "\n",
		       "bench", "scheme", "size", "count", "p50_ns", "p99_ns", "mean_ns", "lat", o.scheme,
		       o.size, n, p50, p99, mean);
	else
		printf("{\"impl\":\"libipc\",\"bench\":\"lat\",\"transport\":\"%s\",\"size\":%" PRIu64
		       ",\"count\":%" PRIu64 ",\"rtt_p50_ns\":%" PRIu64 ",\"rtt_p99_ns\":%" PRIu64
		       ",\"rtt_mean_ns\":%" PRIu64 "}\n",
		       o.scheme, o.size, n, p50, p99, mean);
	free(rtt);
}

static void run_thr(ipc_conn *c, unsigned char *sbuf, unsigned char *rbuf)
{
	struct iovec iov[MAX_BATCH];
	for (size_t k = 0; k < o.batch; k++)
		iov[k] = (struct iovec){sbuf, (size_t)o.size};
	struct ack a;
	uint64_t t0 = now_ns();
	if (o.batch == 1) {
		for (uint64_t i = 0; i < o.count; i++) {
			xsend(c, sbuf, (size_t)o.size);
			progress(i, o.count);
		}
	} else {
		for (uint64_t i = 0; i < o.count;) {
			uint64_t want = o.count - i < o.batch ? o.count - i : o.batch;
			ssize_t n = ipc_send_batch(c, iov, (size_t)want, 0);
			if (n <= 0)
				DIE_ERRNO("ipc_send_batch");
			progress(i & ~(uint64_t)1023, o.count);
			i += (uint64_t)n;
		}
	}
	if (ipc_flush(c, 0) < 0)
		DIE_ERRNO("ipc_flush");
	if (xrecv(c, rbuf, sizeof a) != sizeof a)
		die("bad ack length");
	uint64_t t1 = now_ns();
	progress_end();
	memcpy(&a, rbuf, sizeof a);
	if (a.msgs != o.count || a.bytes != o.count * o.size)
		die("ack mismatch: server got %" PRIu64 " msgs / %" PRIu64 " bytes, sent %" PRIu64
		    " / %" PRIu64,
		    a.msgs, a.bytes, o.count, o.count * o.size);
	uint64_t el = t1 - t0 ? t1 - t0 : 1;
	double secs = (double)el / 1e9;
	double mps = (double)o.count / secs, mbps = (double)o.count * (double)o.size / secs / 1e6;
	if (o.human)
		printf("%-5s %-6s %10s %10s %14s %12s\n%-5s %-6s %10" PRIu64 " %10" PRIu64
		       " %14.1f %12.1f\n",
		       "bench", "scheme", "size", "count", "msgs/s", "MB/s", "thr", o.scheme, o.size,
		       o.count, mps, mbps);
	else
		printf("{\"impl\":\"libipc\",\"bench\":\"thr\",\"transport\":\"%s\",\"size\":%" PRIu64
		       ",\"count\":%" PRIu64 ",\"msgs_per_s\":%.1f,\"mb_per_s\":%.1f}\n",
		       o.scheme, o.size, o.count, mps, mbps);
}

static void run_conn(const char *bound, unsigned char *sbuf, unsigned char *rbuf, size_t cap)
{
	uint64_t t0 = now_ns();
	for (uint64_t i = 0; i < o.count; i++) {
		ipc_conn *c = xconnect(bound);
		memcpy(sbuf, &i, o.size < 8 ? (size_t)o.size : 8);
		xsend(c, sbuf, (size_t)o.size);
		size_t n = xrecv(c, rbuf, cap);
		if (n != o.size || memcmp(sbuf, rbuf, n))
			die("echo mismatch on connection %" PRIu64, i);
		if (i + 1 == o.count) /* the server exits once this one is closed */
			g_expect_child_exit = 1;
		if (ipc_close(c) < 0)
			DIE_ERRNO("ipc_close");
		progress(i, o.count);
	}
	uint64_t t1 = now_ns();
	progress_end();
	double secs = (double)(t1 - t0 ? t1 - t0 : 1) / 1e9;
	if (o.human)
		printf("%-5s %-6s %10s %14s\n%-5s %-6s %10" PRIu64 " %14.1f\n", "bench", "scheme",
		       "count", "conns/s", "conn", o.scheme, o.count, (double)o.count / secs);
	else
		printf("{\"impl\":\"libipc\",\"bench\":\"conn\",\"transport\":\"%s\",\"count\":%" PRIu64
		       ",\"conns_per_s\":%.1f}\n",
		       o.scheme, o.count, (double)o.count / secs);
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	char bound[IPC_ADDR_MAX + 16];
	start_server(bound, sizeof bound);

	size_t cap = o.size > sizeof(struct ack) ? (size_t)o.size : sizeof(struct ack);
	unsigned char *sbuf = malloc(cap), *rbuf = malloc(cap);
	if (!sbuf || !rbuf)
		die("out of memory");
	fill_pattern(sbuf, cap);
	memset(rbuf, 0, cap);

	ipc_conn *c = xconnect(bound);
	hello_client(c);
	if (o.bench == BENCH_LAT)
		run_lat(c, sbuf, rbuf, cap);
	else if (o.bench == BENCH_THR)
		run_thr(c, sbuf, rbuf);
	if (o.bench == BENCH_CONN) {
		if (ipc_close(c) < 0)
			DIE_ERRNO("ipc_close");
		run_conn(bound, sbuf, rbuf, cap);
	}
	fflush(stdout);
	g_expect_child_exit = 1;
	if (o.bench != BENCH_CONN && ipc_close(c) < 0)
		DIE_ERRNO("ipc_close");
	int st;
	while (waitpid(g_child, &st, 0) < 0) {
		if (errno != EINTR)
			DIE_ERRNO("waitpid");
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		die("server exited with status %d", st);
	free(sbuf);
	free(rbuf);
	return 0;
}
