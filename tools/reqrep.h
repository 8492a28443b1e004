/*
 * reqrep.h - the request/response server workload of issue 11, one harness
 * for every implementation: tools/reqrep-bench.c (libipc) and
 * bench/zmq-reqrep.c, bench/nng-reqrep.c include it, so the three run the
 * same load and print the same JSON line (peerbench's format, bench
 * "reqrep").  libc only; the implementation brings its library.
 *
 *   PROG TRANSPORT [--clients N] [--count N] [--max-size BYTES]
 *                  [--timeout SECONDS]
 *
 * The load: one single-threaded server process and N client processes
 * (default 50).  Each client connects once, does one untimed round trip
 * with an empty request (the connection works: set-up is never timed),
 * waits at a common start line, then does COUNT round trips (default
 * 2000).  A request has a pseudo-random size in 0..MAX_SIZE bytes (default
 * 65536) and pseudo-random content; the reply has the same size and every
 * byte is the complement of the request's, so the server reads and writes
 * every byte.  The client checks every byte of every reply.  Sizes and
 * contents come from splitmix64 seeded with the client's number (1..N):
 * the same sequence for every implementation.
 *
 * Measured: wall time from the start line to the exit of the last client;
 * round trips per second (N * COUNT / wall); each round trip's time
 * (CLOCK_MONOTONIC, send to full reply), p50/p99 by nearest rank over all
 * of them; the server's max RSS and CPU (user + sys, every thread) and the
 * clients' summed CPU, from wait4(2).  How quiet the machine was: the
 * 1-minute load average at start (it still counts the processes of a run
 * that just ended), and, from /proc/stat over the timed part, the CPU time
 * other processes took ("others_cpu_s": busy time of the machine minus
 * ours, so it also holds our own set-up and teardown outside the timed
 * part) and the time the hypervisor stole ("steal_s").
 *
 * Exit status: 0 ok (one JSON line on stdout), 1 a process failed or a
 * check failed (why on stderr), 2 usage.  Every process dies with the
 * parent (PR_SET_PDEATHSIG), and the whole run is bounded by --timeout.
 */
#ifndef REQREP_H_INCLUDED
#define REQREP_H_INCLUDED

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { RR_ADDR_MAX = 512, RR_NOTE_MAX = 256 };

/* Exit statuses of the processes of a run. */
enum rr_exit { RR_OK = 0, RR_FAIL = 1, RR_USAGE = 2, RR_BAD_REPLY = 3 };

struct rr_cfg {
	long clients, count;
	size_t max_size;
	int timeout_s;
	char transport[32];     /* as printed in the JSON line */
	char addr[RR_ADDR_MAX]; /* where the server listens */
};

/* What an implementation provides.  Every hook runs in the process named. */
struct rr_impl {
	const char *name; /* "impl" of the JSON line */
	/* parent: the transport name and a fresh listen address for the
	 * command-line argument (cfg->transport, cfg->addr); -1 if unknown */
	int (*resolve)(const char *arg, struct rr_cfg *cfg);
	/* server: listen on cfg->addr, call rr_ready() with the address clients
	 * connect to, serve cfg->clients * (cfg->count + 1) requests, reply to
	 * each with rr_answer(); may leave a JSON fragment (",\"k\":v") in
	 * note.  Returns 0, or -1 with the reason on stderr */
	int (*serve)(const struct rr_cfg *cfg, int ready_fd, char note[RR_NOTE_MAX]);
	/* client: a connection to addr, or NULL (reason on stderr) */
	void *(*connect)(const char *addr, const struct rr_cfg *cfg);
	/* client: send req[0..n) and receive the reply into rep (cap bytes):
	 * the reply's length, or -1 (reason on stderr) */
	long (*roundtrip)(void *conn, const void *req, size_t n, void *rep, size_t cap);
	void (*close)(void *conn);
	/* parent, after the run: remove what the address left (may be NULL) */
	void (*cleanup)(const struct rr_cfg *cfg);
};

static uint64_t rr_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The peers' addresses (bench/): "tcp" is tcp_any, "ipc" a fresh socket
 * file under /tmp named after lib; -1 for anything else. */
static inline int rr_url_resolve(const char *arg, struct rr_cfg *cfg, const char *lib, const char *tcp_any)
{
	if (!strcmp(arg, "tcp"))
		snprintf(cfg->addr, sizeof cfg->addr, "%s", tcp_any);
	else if (!strcmp(arg, "ipc"))
		snprintf(cfg->addr, sizeof cfg->addr, "ipc:///tmp/reqrep-%s-%d-%08x.sock", lib, (int)getpid(),
			 (unsigned)(rr_now_ns() & 0xffffffffu));
	else
		return -1;
	snprintf(cfg->transport, sizeof cfg->transport, "%s", arg);
	return 0;
}

/* Remove the socket file of an ipc:// address. */
static inline void rr_url_cleanup(const struct rr_cfg *cfg)
{
	if (!strncmp(cfg->addr, "ipc://", 6))
		unlink(cfg->addr + 6);
}

static uint64_t rr_next(uint64_t *s) /* splitmix64 */
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

/* The next request of a client: its size (0..max) and its bytes. */
static size_t rr_request(uint64_t *seed, unsigned char *buf, size_t max)
{
	size_t n = (size_t)(rr_next(seed) % ((uint64_t)max + 1));
	uint64_t v = rr_next(seed);
	size_t i = 0;
	for (; i + 8 <= n; i += 8, v += 0x9e3779b97f4a7c15u)
		memcpy(buf + i, &v, 8);
	for (; i < n; i++, v >>= 8)
		buf[i] = (unsigned char)v;
	return n;
}

/* Server side: turn a request into its reply, in place. */
static void rr_answer(void *buf, size_t n)
{
	unsigned char *p = buf;
	for (size_t i = 0; i < n; i++)
		p[i] ^= 0xff;
}

/* Client side: whether rep[0..n) is the reply to req[0..n). */
static int rr_reply_ok(const unsigned char *req, const unsigned char *rep, size_t n)
{
	unsigned char d = 0;
	for (size_t i = 0; i < n; i++)
		d |= (unsigned char)(req[i] ^ rep[i] ^ 0xff);
	return d == 0;
}

/* Server: tell the parent the address to connect to. */
__attribute__((unused)) static int rr_ready(int fd, const char *addr)
{
	size_t n = strlen(addr) + 1;
	int ok = write(fd, addr, n) == (ssize_t)n;
	close(fd);
	return ok ? 0 : -1;
}

/* ---- the parent ------------------------------------------------------- */

static pid_t *rr_pids; /* [0] server, [1..clients] clients; 0 once reaped */
static long rr_npids;

/* Kill and reap every process still there (async-signal-safe). */
static void rr_kill_all(void)
{
	for (long i = 0; i < rr_npids; i++)
		if (rr_pids[i] > 0)
			kill(rr_pids[i], SIGKILL);
	for (long i = 0; i < rr_npids; i++)
		if (rr_pids[i] > 0) {
			while (waitpid(rr_pids[i], NULL, 0) < 0 && errno == EINTR)
				;
			rr_pids[i] = 0;
		}
}

static void rr_on_alarm(int sig)
{
	static const char msg[] = "reqrep: time limit reached: killing every process\n";
	(void)sig;
	rr_kill_all();
	if (write(2, msg, sizeof msg - 1) < 0)
		_exit(RR_FAIL);
	_exit(RR_FAIL);
}

static double rr_load1(void)
{
	double l = -1;
	FILE *f = fopen("/proc/loadavg", "r");
	if (f) {
		if (fscanf(f, "%lf", &l) != 1)
			l = -1;
		fclose(f);
	}
	return l;
}

/* CPU time the whole machine spent busy (user, nice, system, irq,
 * softirq) and stolen by the hypervisor, in seconds, from /proc/stat. */
static void rr_machine_cpu(double *busy, double *steal)
{
	unsigned long long v[8] = {0};
	FILE *f = fopen("/proc/stat", "r");
	*busy = *steal = 0;
	if (!f)
		return;
	int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		       &v[6], &v[7]);
	fclose(f);
	double tick = (double)sysconf(_SC_CLK_TCK);
	if (n == 8 && tick > 0) {
		*busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / tick;
		*steal = (double)v[7] / tick;
	}
}

static double rr_cpu_s(const struct rusage *ru)
{
	return (double)(ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) +
	       (double)(ru->ru_utime.tv_usec + ru->ru_stime.tv_usec) / 1e6;
}

static int rr_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void rr_child_setup(void)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		_exit(RR_FAIL);
	signal(SIGALRM, SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
}

/* What the processes share: the server's note, then every round trip. */
struct rr_shared {
	char note[RR_NOTE_MAX];
	uint64_t rtt[];
};

static void rr_client(const struct rr_impl *im, const struct rr_cfg *cfg, long k, const char *addr,
		      int ready_fd, int go_fd, uint64_t *rtt)
{
	unsigned char *req = malloc(cfg->max_size + 1), *rep = malloc(cfg->max_size + 1);
	void *c = req && rep ? im->connect(addr, cfg) : NULL;
	if (!c)
		_exit(RR_FAIL);
	char b = 0;
	if (im->roundtrip(c, req, 0, rep, cfg->max_size) != 0 || write(ready_fd, &b, 1) != 1)
		_exit(RR_FAIL);
	while (read(go_fd, &b, 1) < 0 && errno == EINTR) /* EOF: start */
		;
	uint64_t seed = (uint64_t)k + 1;
	for (long i = 0; i < cfg->count; i++) {
		size_t n = rr_request(&seed, req, cfg->max_size);
		uint64_t t0 = rr_now_ns();
		long r = im->roundtrip(c, req, n, rep, cfg->max_size);
		rtt[i] = rr_now_ns() - t0;
		if (r < 0)
			_exit(RR_FAIL);
		if ((size_t)r != n || !rr_reply_ok(req, rep, n)) {
			fprintf(stderr, "reqrep: client %ld, round trip %ld: bad reply (%ld bytes for %zu)\n", k + 1,
				i + 1, r, n);
			_exit(RR_BAD_REPLY);
		}
	}
	im->close(c);
	_exit(RR_OK);
}

static void rr_usage(const char *prog)
{
	fprintf(stderr, "usage: %s TRANSPORT [--clients N] [--count N] [--max-size BYTES] [--timeout SECONDS]\n",
		prog);
	exit(RR_USAGE);
}

static long rr_num(const char *prog, const char *s, long min, long max)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		rr_usage(prog);
	return v;
}

static void rr_parse(const char *prog, int argc, char **argv, struct rr_cfg *cfg, const char **arg)
{
	*cfg = (struct rr_cfg){.clients = 50, .count = 2000, .max_size = 65536, .timeout_s = 600};
	*arg = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (a[0] != '-' && !*arg)
			*arg = a;
		else if (!v)
			rr_usage(prog);
		else if (!strcmp(a, "--clients"))
			cfg->clients = rr_num(prog, v, 1, 10000), i++;
		else if (!strcmp(a, "--count"))
			cfg->count = rr_num(prog, v, 1, 100000000), i++;
		else if (!strcmp(a, "--max-size"))
			cfg->max_size = (size_t)rr_num(prog, v, 0, 1L << 30), i++;
		else if (!strcmp(a, "--timeout"))
			cfg->timeout_s = (int)rr_num(prog, v, 1, 86400), i++;
		else
			rr_usage(prog);
	}
	if (!*arg)
		rr_usage(prog);
}

/* Reap every process; the clients' summed rusage and the server's.  The
 * end time is taken when the last client is reaped.  0, or -1 when a
 * process failed (the rest are killed). */
static int rr_reap(long clients, struct rusage *cli, struct rusage *srv, uint64_t *t_end)
{
	double ucpu = 0;
	long left = clients + 1, clients_left = clients;
	memset(cli, 0, sizeof *cli);
	while (left > 0) {
		int st;
		struct rusage ru;
		pid_t p = wait4(-1, &st, 0, &ru);
		if (p < 0 && errno == EINTR)
			continue;
		if (p < 0)
			return -1;
		long i = 0;
		while (i < rr_npids && rr_pids[i] != p)
			i++;
		if (i == rr_npids)
			continue;
		rr_pids[i] = 0;
		left--;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			if (WIFSIGNALED(st))
				fprintf(stderr, "reqrep: %s %ld killed by signal %d\n", i ? "client" : "server", i,
					WTERMSIG(st));
			else
				fprintf(stderr, "reqrep: %s %ld exited %d\n", i ? "client" : "server", i,
					WEXITSTATUS(st));
			rr_kill_all();
			return -1;
		}
		if (i == 0) {
			*srv = ru;
			continue;
		}
		ucpu += rr_cpu_s(&ru);
		if (--clients_left == 0)
			*t_end = rr_now_ns();
	}
	cli->ru_utime.tv_sec = (time_t)ucpu; /* the sum, as one figure */
	cli->ru_utime.tv_usec = (suseconds_t)((ucpu - (double)(time_t)ucpu) * 1e6);
	return 0;
}

/* Count the clients at the start line; stop early when a process exited
 * (it failed: rr_reap() says which). */
static long rr_wait_ready(int fd, long clients)
{
	long n = 0;
	while (n < clients) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		siginfo_t si = {0};
		char b[64];
		if (poll(&pfd, 1, 100) > 0) {
			ssize_t r = read(fd, b, sizeof b);
			if (r > 0)
				n += r;
			else if (r == 0 || errno != EINTR)
				break;
		} else if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid != 0) {
			break;
		}
	}
	return n;
}

__attribute__((unused)) static int rr_main(const struct rr_impl *im, int argc, char **argv)
{
	struct rr_cfg cfg;
	const char *arg;
	rr_parse(argv[0], argc, argv, &cfg, &arg);
	if (im->resolve(arg, &cfg) < 0) {
		fprintf(stderr, "%s: unknown transport or address '%s'\n", argv[0], arg);
		return RR_USAGE;
	}
	signal(SIGPIPE, SIG_IGN);
	double load1 = rr_load1();
	size_t total = (size_t)cfg.clients * (size_t)cfg.count;
	size_t shsize = sizeof(struct rr_shared) + total * sizeof(uint64_t);
	struct rr_shared *sh = mmap(NULL, shsize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	rr_pids = calloc((size_t)cfg.clients + 1, sizeof *rr_pids);
	int srv_pipe[2], ready[2], go[2];
	if (sh == MAP_FAILED || !rr_pids || pipe(srv_pipe) < 0) {
		perror("reqrep: set-up");
		return RR_FAIL;
	}
	rr_npids = cfg.clients + 1;
	signal(SIGALRM, rr_on_alarm);
	alarm((unsigned)cfg.timeout_s);
	fflush(NULL);

	/* the server, then the address it bound */
	if ((rr_pids[0] = fork()) == 0) {
		rr_child_setup();
		close(srv_pipe[0]);
		_exit(im->serve(&cfg, srv_pipe[1], sh->note) == 0 ? RR_OK : RR_FAIL);
	}
	close(srv_pipe[1]);
	char addr[RR_ADDR_MAX];
	size_t got = 0;
	ssize_t r;
	while (got < sizeof addr && (r = read(srv_pipe[0], addr + got, sizeof addr - got)) != 0)
		if (r > 0)
			got += (size_t)r;
		else if (errno != EINTR)
			break;
	close(srv_pipe[0]);
	if (rr_pids[0] < 0 || got == 0 || addr[got - 1] != 0) {
		fprintf(stderr, "reqrep: the server did not start\n");
		rr_kill_all();
		if (im->cleanup)
			im->cleanup(&cfg);
		return RR_FAIL;
	}

	/* the clients: connected, one round trip done, then all start at once */
	if (pipe(ready) < 0 || pipe(go) < 0) {
		perror("reqrep: pipe");
		rr_kill_all();
		return RR_FAIL;
	}
	for (long k = 0; k < cfg.clients; k++) {
		pid_t p = fork();
		if (p == 0) {
			rr_child_setup();
			close(ready[0]);
			close(go[1]);
			rr_client(im, &cfg, k, addr, ready[1], go[0], sh->rtt + (size_t)k * (size_t)cfg.count);
		}
		if (p < 0) {
			perror("reqrep: fork");
			rr_kill_all();
			return RR_FAIL;
		}
		rr_pids[k + 1] = p;
	}
	close(ready[1]);
	close(go[0]);
	long ready_n = rr_wait_ready(ready[0], cfg.clients);
	double busy0, steal0, busy1, steal1;
	rr_machine_cpu(&busy0, &steal0);
	uint64_t t0 = rr_now_ns(), t1 = t0;
	close(go[1]); /* start */
	close(ready[0]);

	struct rusage cli, srv;
	memset(&srv, 0, sizeof srv);
	int rc = rr_reap(cfg.clients, &cli, &srv, &t1);
	rr_machine_cpu(&busy1, &steal1);
	alarm(0);
	if (im->cleanup)
		im->cleanup(&cfg);
	if (rc < 0 || ready_n < cfg.clients) {
		fprintf(stderr, "reqrep: %s %s: run failed (%ld of %ld clients reached the start line)\n", im->name,
			cfg.transport, ready_n, cfg.clients);
		return RR_FAIL;
	}

	qsort(sh->rtt, total, sizeof sh->rtt[0], rr_cmp_u64);
	double sum = 0, wall = (double)(t1 - t0) / 1e9;
	for (size_t i = 0; i < total; i++)
		sum += (double)sh->rtt[i];
	double scpu = rr_cpu_s(&srv), ccpu = rr_cpu_s(&cli), others = busy1 - busy0 - scpu - ccpu;
	printf("{\"impl\":\"%s\",\"bench\":\"reqrep\",\"transport\":\"%s\",\"clients\":%ld,\"count\":%ld,"
	       "\"max_size\":%zu,\"wall_s\":%.3f,\"rt_per_s\":%.1f,\"rtt_p50_ns\":%llu,\"rtt_p99_ns\":%llu,"
	       "\"rtt_mean_ns\":%.0f,\"server_rss_kib\":%ld,\"server_cpu_s\":%.3f,\"clients_cpu_s\":%.3f,"
	       "\"cpu_s\":%.3f,\"others_cpu_s\":%.2f,\"steal_s\":%.2f,\"load1\":%.2f%s}\n",
	       im->name, cfg.transport, cfg.clients, cfg.count, cfg.max_size, wall, (double)total / wall,
	       (unsigned long long)sh->rtt[(total + 1) / 2 - 1],
	       (unsigned long long)sh->rtt[(total * 99 + 99) / 100 - 1], sum / (double)total, srv.ru_maxrss,
	       scpu, ccpu, scpu + ccpu, others > 0 ? others : 0, steal1 - steal0, load1, sh->note);
	return RR_OK;
}

#endif
