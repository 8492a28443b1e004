/*
 * server.c - a single-threaded request/response server on ipc_poll(), and
 * the client processes that load it.  Any address: only ADDR changes.
 *
 *   server [-c CLIENTS] [-r ROUNDS] [ADDR]
 *       listen on ADDR (default: a unique unix abstract address), fork
 *       CLIENTS client processes (default 50) doing ROUNDS round trips each
 *       (default 200), serve them all from this one thread, and exit 0 only
 *       if every byte of every reply checked out and every client exited 0
 *   server ... --capacity BYTES
 *       the listener's capacity option (ipc_options_init(3)); a small one makes
 *       replies larger than what fits at once, the case of ipc_send(3)'s
 *       non-blocking sends of any size
 *   server ... --json
 *       instead of the summary, one JSON line in the style of peerbench:
 *       wall time from forking the clients until the
 *       last one is reaped, round trips and payload per second, CPU time
 *       of the server and of all clients, the server's peak RSS
 *   server ... --epoll
 *       the same loop on the application's own epoll instead of
 *       ipc_poll(): ipc_listener_fd()/ipc_conn_fd() registered with epoll,
 *       armed with the poll(2) events ipc_conn_ready() names
 *   server --serve [-c CLIENTS] ADDR
 *       only the server: print "listening on BOUND", stop after CLIENTS
 *       clients have come and gone (0, the default: never)
 *   server --client [-c CLIENTS] [-r ROUNDS] ADDR
 *       only the clients, against a server already listening on ADDR
 *
 * A request is one message of 0..65536 random bytes; the reply is its
 * 64-bit FNV-1a checksum (8 bytes, little-endian) followed by the request's
 * bytes in reverse order.  Each client checks every byte of every reply.
 *
 * The event loop shows the non-blocking send pattern of ipc_send(3):
 * send with IPC_DONTWAIT; on EAGAIN keep the reply and wait for IPC_POLLOUT
 * on that connection, then send it again.  A send of any size up to
 * max_msg_size is accepted whole whenever the library holds nothing unsent
 * for the connection, and IPC_POLLOUT means exactly that, so the loop never
 * spins and never blocks on one slow client.  While a reply waits, its
 * connection is not read (one request at a time per client is all this
 * protocol has).
 *
 * Exit status: 0 ok, 1 usage, 2 listen or connect failure, 3 a check failed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ipc.h>

enum { EXIT_OK = 0, EXIT_USAGE = 1, EXIT_SETUP = 2, EXIT_CHECK = 3 };
enum { MAX_REQUEST = 64 * 1024, CHECKSUM_LEN = 8, IDLE_LIMIT_MS = 30000, SPIN_LIMIT = 10000 };

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
	uint64_t h = 14695981039346656037ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

/* The reply to a request of n bytes: checksum, then the bytes reversed. */
static unsigned char *make_reply(const unsigned char *req, size_t n, size_t *len)
{
	unsigned char *r = malloc(CHECKSUM_LEN + n);
	if (!r)
		return NULL;
	uint64_t h = fnv1a(req, n);
	for (int i = 0; i < CHECKSUM_LEN; i++)
		r[i] = (unsigned char)(h >> (8 * i));
	for (size_t i = 0; i < n; i++)
		r[CHECKSUM_LEN + i] = req[n - 1 - i];
	*len = CHECKSUM_LEN + n;
	return r;
}

/* ---- the server ------------------------------------------------------ */

/* Client processes forked by this process: pid[i] is 0 once reaped. */
struct kids {
	pid_t *pid;
	long n, running, failed;
};

/* Reap the client processes that exited (all of them if wait); how many
 * still run. */
static long reap_kids(struct kids *k, int wait)
{
	for (long i = 0; i < k->n; i++) {
		int st;
		pid_t r;
		if (!k->pid[i])
			continue;
		while ((r = waitpid(k->pid[i], &st, wait ? 0 : WNOHANG)) < 0 && errno == EINTR)
			;
		if (r == 0)
			continue;
		if (r < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			k->failed++;
		k->pid[i] = 0;
		k->running--;
	}
	return k->running;
}

struct peer {
	ipc_conn *c;
	unsigned char *reply; /* a reply not yet accepted by ipc_send, or NULL */
	size_t len;
};

struct server {
	ipc_listener *l;
	struct peer **peers; /* pointers: an epoll registration keeps one */
	size_t npeers, cap;
	int epfd;            /* --epoll: the epoll instance, else -1 */
	long accepted, finished, failed; /* clients */
	long requests, deferred;         /* replies; replies that met EAGAIN */
	unsigned long long bytes;        /* request + reply payload bytes */
	struct kids *kids;               /* our own client processes, or NULL */
};

static void drop_peer(struct server *s, size_t i, int ok)
{
	struct peer *p = s->peers[i];
	if (s->epfd >= 0)
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, ipc_conn_fd(p->c), NULL);
	free(p->reply);
	ipc_close(p->c);
	free(p);
	s->peers[i] = s->peers[--s->npeers];
	s->finished++;
	if (!ok)
		s->failed++;
}

static int add_peer(struct server *s, ipc_conn *c)
{
	if (s->npeers == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		struct peer **np = realloc(s->peers, cap * sizeof *np);
		if (!np)
			return -1;
		s->peers = np, s->cap = cap;
	}
	struct peer *p = calloc(1, sizeof *p);
	if (!p)
		return -1;
	p->c = c;
	if (s->epfd >= 0) {
		struct epoll_event ev = {.events = 0, .data.ptr = p};
		if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, ipc_conn_fd(c), &ev) < 0) {
			free(p);
			return -1;
		}
	}
	s->peers[s->npeers++] = p;
	s->accepted++;
	return 0;
}

/* Offer the held reply to the library.  1 accepted, 0 not yet (EAGAIN:
 * wait for IPC_POLLOUT), -1 the connection failed. */
static int send_reply(struct peer *p)
{
	if (ipc_send(p->c, p->reply, p->len, IPC_DONTWAIT) < 0)
		return errno == EAGAIN ? 0 : -1;
	free(p->reply);
	p->reply = NULL;
	return 1;
}

enum step { STEP_KEEP, STEP_DONE, STEP_FAILED };

/* The connection is ready: move its reply on, or read and answer one
 * request. */
static enum step serve_peer(struct server *s, struct peer *p)
{
	if (p->reply) {
		int r = send_reply(p);
		return r < 0 ? STEP_FAILED : STEP_KEEP;
	}
	void *req;
	ssize_t n = ipc_recv_alloc(p->c, &req, IPC_DONTWAIT);
	if (n < 0) {
		if (errno == EAGAIN)
			return STEP_KEEP;
		return errno == EPIPE ? STEP_DONE : STEP_FAILED; /* EPIPE: orderly end */
	}
	p->reply = make_reply(req, (size_t)n, &p->len);
	free(req);
	if (!p->reply)
		return STEP_FAILED;
	s->requests++;
	s->bytes += (unsigned long long)n + p->len;
	int r = send_reply(p);
	if (r == 0)
		s->deferred++;
	return r < 0 ? STEP_FAILED : STEP_KEEP;
}

static void accept_all(struct server *s)
{
	ipc_conn *c;
	while ((c = ipc_accept(s->l, IPC_DONTWAIT)) != NULL)
		if (add_peer(s, c) < 0) {
			ipc_close(c);
			s->accepted++, s->finished++, s->failed++;
		}
}

static int settle_listener(struct server *s);

/* Nothing happened for tick_ms: 1 to stop serving (our own clients are
 * all gone and nobody is left to serve, or IDLE_LIMIT_MS passed). */
static int idle_tick(struct server *s, int *idle_ms, int tick_ms)
{
	if (s->kids && !reap_kids(s->kids, 0) && !s->npeers) {
		if (s->epfd >= 0)
			settle_listener(s); /* new connections get armed */
		else
			accept_all(s);
		if (!s->npeers)
			return 1;
	}
	if ((*idle_ms += tick_ms) >= IDLE_LIMIT_MS) {
		fprintf(stderr, "server: no progress for %d s\n", IDLE_LIMIT_MS / 1000);
		return 1;
	}
	return 0;
}

/* Close what is left; 0 if `clients` clients were served (or no count). */
static int finish_serving(struct server *s, long clients)
{
	int ok = clients == 0 || s->finished >= clients;
	while (s->npeers)
		drop_peer(s, s->npeers - 1, 0);
	free(s->peers);
	s->peers = NULL;
	return ok ? 0 : -1;
}

/* Serve until `clients` clients have finished (0: forever).  0, or -1 when
 * nothing happened for IDLE_LIMIT_MS while clients were expected, or our
 * own client processes are all gone before that many came. */
static int serve(struct server *s, long clients)
{
	struct ipc_pollitem *items = NULL;
	size_t icap = 0;
	int idle_ms = 0, tick_ms = s->kids ? 1000 : IDLE_LIMIT_MS;
	while (clients == 0 || s->finished < clients) {
		if (icap < s->npeers + 1) {
			icap = 2 * (s->npeers + 1);
			struct ipc_pollitem *it = realloc(items, icap * sizeof *it);
			if (!it)
				break;
			items = it;
		}
		items[0] = (struct ipc_pollitem){.listener = s->l, .events = IPC_POLLIN};
		for (size_t i = 0; i < s->npeers; i++)
			items[i + 1] = (struct ipc_pollitem){
				.conn = s->peers[i]->c,
				.events = s->peers[i]->reply ? IPC_POLLOUT : IPC_POLLIN,
			};
		size_t n = s->npeers + 1;
		int r = ipc_poll(items, n, clients ? tick_ms : -1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fprintf(stderr, "server: ipc_poll: %s\n", strerror(errno));
			break;
		}
		if (r == 0) {
			if (idle_tick(s, &idle_ms, tick_ms))
				break;
			continue;
		}
		idle_ms = 0;
		/* peers from the back, so drop_peer's swap never skips one */
		for (size_t i = n - 1; i >= 1; i--) {
			if (!items[i].revents)
				continue;
			enum step st = serve_peer(s, s->peers[i - 1]);
			if (st != STEP_KEEP) {
				if (st == STEP_FAILED)
					fprintf(stderr, "server: client %zu: %s\n", i - 1, strerror(errno));
				drop_peer(s, i - 1, st == STEP_DONE);
			}
		}
		if (items[0].revents)
			accept_all(s);
	}
	free(items);
	return finish_serving(s, clients);
}

/* ---- the same server on the application's own epoll ------------------ */

/* poll(2) events (from ipc_conn_ready) -> epoll events */
static uint32_t to_epoll(short pev)
{
	return (pev & POLLIN ? EPOLLIN : 0) | (pev & POLLOUT ? EPOLLOUT : 0);
}

static size_t index_of(const struct server *s, const struct peer *p)
{
	size_t i = 0;
	while (s->peers[i] != p)
		i++;
	return i;
}

/* Serve p until ipc_conn_ready() says it must wait, then arm epoll with
 * the poll(2) events it names (the library may need POLLOUT on its
 * descriptor to move a held reply even though we wait for input).
 * STEP_KEEP once armed.  A readiness that moves nothing, again and again,
 * is a spin: reported as a failure. */
static enum step settle_peer(struct server *s, struct peer *p)
{
	int idle_rounds = 0;
	while (idle_rounds < SPIN_LIMIT) {
		long before = s->requests;
		int had_reply = p->reply != NULL;
		enum step st = serve_peer(s, p);
		if (st != STEP_KEEP)
			return st;
		int moved = s->requests != before || (had_reply && !p->reply);
		idle_rounds = moved ? 0 : idle_rounds + 1;
		short pev = 0;
		int r = ipc_conn_ready(p->c, p->reply ? IPC_POLLOUT : IPC_POLLIN, &pev);
		if (r < 0)
			return STEP_FAILED;
		if (r == 0) {
			struct epoll_event ev = {.events = to_epoll(pev), .data.ptr = p};
			return epoll_ctl(s->epfd, EPOLL_CTL_MOD, ipc_conn_fd(p->c), &ev) < 0 ? STEP_FAILED : STEP_KEEP;
		}
	}
	fprintf(stderr, "server: ipc_conn_ready() said ready %d times and nothing moved\n", SPIN_LIMIT);
	errno = EBUSY;
	return STEP_FAILED;
}

/* Accept what is waiting, serve the new connections, re-arm the
 * listener.  -1 on failure. */
static int settle_listener(struct server *s)
{
	for (;;) {
		size_t before = s->npeers;
		accept_all(s);
		for (size_t i = s->npeers; i-- > before;) { /* from the back: see serve() */
			enum step st = settle_peer(s, s->peers[i]);
			if (st != STEP_KEEP)
				drop_peer(s, i, st == STEP_DONE);
		}
		short pev = 0;
		int r = ipc_listener_ready(s->l, IPC_POLLIN, &pev);
		if (r < 0)
			return -1;
		if (r == 0) {
			struct epoll_event ev = {.events = to_epoll(pev), .data.ptr = NULL};
			return epoll_ctl(s->epfd, EPOLL_CTL_MOD, ipc_listener_fd(s->l), &ev);
		}
	}
}

/* As serve(), with epoll_wait() on ipc_listener_fd() and ipc_conn_fd(). */
static int serve_epoll(struct server *s, long clients)
{
	struct epoll_event lev = {.events = 0, .data.ptr = NULL};
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, ipc_listener_fd(s->l), &lev) < 0 || settle_listener(s) < 0) {
		fprintf(stderr, "server: epoll: %s\n", strerror(errno));
		finish_serving(s, clients);
		return -1;
	}
	int idle_ms = 0, tick_ms = s->kids ? 1000 : IDLE_LIMIT_MS;
	while (clients == 0 || s->finished < clients) {
		struct epoll_event evs[64];
		int n = epoll_wait(s->epfd, evs, 64, clients ? tick_ms : -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "server: epoll_wait: %s\n", strerror(errno));
			break;
		}
		if (n == 0) {
			if (idle_tick(s, &idle_ms, tick_ms))
				break;
			continue;
		}
		idle_ms = 0;
		for (int k = 0; k < n; k++) {
			struct peer *p = evs[k].data.ptr;
			if (!p) {
				if (settle_listener(s) < 0) {
					fprintf(stderr, "server: accept: %s\n", strerror(errno));
					finish_serving(s, clients);
					return -1;
				}
				continue;
			}
			enum step st = settle_peer(s, p);
			if (st != STEP_KEEP) {
				if (st == STEP_FAILED)
					fprintf(stderr, "server: client: %s\n", strerror(errno));
				drop_peer(s, index_of(s, p), st == STEP_DONE);
			}
		}
	}
	return finish_serving(s, clients);
}

/* ---- the clients ----------------------------------------------------- */

static uint64_t next_random(uint64_t *x)
{
	*x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
	return *x;
}

/* Does rep answer req? */
static int reply_ok(const unsigned char *req, size_t n, const unsigned char *rep, size_t len)
{
	if (len != CHECKSUM_LEN + n)
		return 0;
	uint64_t h = fnv1a(req, n);
	for (int i = 0; i < CHECKSUM_LEN; i++)
		if (rep[i] != (unsigned char)(h >> (8 * i)))
			return 0;
	for (size_t i = 0; i < n; i++)
		if (rep[CHECKSUM_LEN + i] != req[n - 1 - i])
			return 0;
	return 1;
}

/* One client process: rounds round trips, then an orderly close. */
static int client(const char *addr, long id, long rounds)
{
	struct ipc_options o;
	ipc_options_init(&o);
	o.send_timeout_ms = o.recv_timeout_ms = IDLE_LIMIT_MS;
	ipc_conn *c = ipc_connect(addr, &o);
	if (!c) {
		fprintf(stderr, "client %ld: connect %s: %s\n", id, addr, strerror(errno));
		return EXIT_SETUP;
	}
	uint64_t x = 0x9e3779b97f4a7c15ull ^ ((uint64_t)id << 32) ^ (uint64_t)getpid();
	static unsigned char req[MAX_REQUEST];
	for (long k = 0; k < rounds; k++) {
		/* the extremes first, then random sizes */
		size_t n = k == 0 ? 0 : k == 1 ? MAX_REQUEST : next_random(&x) % (MAX_REQUEST + 1);
		for (size_t i = 0; i < n; i++)
			req[i] = (unsigned char)next_random(&x);
		void *rep = NULL;
		ssize_t got = -1;
		if (ipc_send(c, req, n, 0) != (ssize_t)n || (got = ipc_recv_alloc(c, &rep, 0)) < 0) {
			fprintf(stderr, "client %ld: round %ld (%zu bytes): %s\n", id, k, n, strerror(errno));
			ipc_close(c);
			return EXIT_CHECK;
		}
		int ok = reply_ok(req, n, rep, (size_t)got);
		free(rep);
		if (!ok) {
			fprintf(stderr, "client %ld: round %ld: wrong reply (%zd bytes to %zu)\n", id, k, got, n);
			ipc_close(c);
			return EXIT_CHECK;
		}
	}
	return ipc_close(c) == 0 ? EXIT_OK : EXIT_CHECK;
}

/* Fork k->n client processes. */
static int spawn_clients(const char *addr, long rounds, struct kids *k)
{
	fflush(NULL);
	for (long i = 0; i < k->n; i++) {
		pid_t pid = fork();
		if (pid < 0)
			return -1;
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			_exit(client(addr, i, rounds));
		}
		k->pid[i] = pid;
		k->running++;
	}
	return 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(int who)
{
	struct rusage ru;
	getrusage(who, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void print_json(const char *addr, const struct server *s, long clients, long rounds, double wall)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	int tlen = (int)strcspn(addr, ":");
	printf("{\"impl\":\"libipc\",\"bench\":\"server\",\"transport\":\"%.*s\",\"clients\":%ld,"
	       "\"rounds\":%ld,\"max_size\":%d,\"count\":%ld,\"wall_s\":%.3f,\"rtt_per_s\":%.1f,"
	       "\"mb_per_s\":%.1f,\"server_cpu_s\":%.3f,\"clients_cpu_s\":%.3f,\"server_maxrss_kb\":%ld}\n",
	       tlen, addr, clients, rounds, MAX_REQUEST, s->requests, wall, s->requests / wall,
	       (double)s->bytes / wall / 1e6, cpu_s(RUSAGE_SELF), cpu_s(RUSAGE_CHILDREN), ru.ru_maxrss);
}

static int usage(void)
{
	fprintf(stderr, "usage: server [-c CLIENTS] [-r ROUNDS] [--capacity BYTES] [--json] [--epoll] [ADDR]\n"
			"       server --serve [-c CLIENTS] ADDR\n"
			"       server --client [-c CLIENTS] [-r ROUNDS] ADDR\n");
	return EXIT_USAGE;
}

int main(int argc, char **argv)
{
	enum { MODE_BOTH, MODE_SERVE, MODE_CLIENT } mode = MODE_BOTH;
	long clients = -1, rounds = 200;
	size_t capacity = 0;
	int json = 0, use_epoll = 0;
	static const struct option opts[] = {
		{"serve", no_argument, NULL, 's'},   {"client", no_argument, NULL, 'C'},
		{"clients", required_argument, NULL, 'c'}, {"rounds", required_argument, NULL, 'r'},
		{"capacity", required_argument, NULL, 'b'}, {"json", no_argument, NULL, 'j'},
		{"epoll", no_argument, NULL, 'e'},
		{NULL, 0, NULL, 0},
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "c:r:", opts, NULL)) != -1) {
		switch (ch) {
		case 's': mode = MODE_SERVE; break;
		case 'C': mode = MODE_CLIENT; break;
		case 'c': clients = atol(optarg); break;
		case 'r': rounds = atol(optarg); break;
		case 'b': capacity = (size_t)atol(optarg); break;
		case 'j': json = 1; break;
		case 'e': use_epoll = 1; break;
		default: return usage();
		}
	}
	if (clients < 0)
		clients = mode == MODE_SERVE ? 0 : 50;
	if (argc - optind > 1 || rounds < 0 || (mode != MODE_BOTH && optind == argc) ||
	    (mode != MODE_SERVE && clients == 0))
		return usage();
	char self[64], bound[IPC_ADDR_MAX + 1];
	const char *addr = optind < argc ? argv[optind] : NULL;
	if (!addr) {
		snprintf(self, sizeof self, "unix:@ipc-server-%d", (int)getpid());
		addr = self;
	}
	struct kids kids = {calloc((size_t)clients + 1, sizeof(pid_t)), clients, 0, 0};
	if (!kids.pid)
		return EXIT_SETUP;
	if (mode == MODE_CLIENT) {
		if (spawn_clients(addr, rounds, &kids) < 0)
			return EXIT_SETUP;
		reap_kids(&kids, 1);
		free(kids.pid);
		printf("%ld clients x %ld round trips: %ld failed\n", clients, rounds, kids.failed);
		return kids.failed ? EXIT_CHECK : EXIT_OK;
	}

	struct server s = {.epfd = -1};
	if (use_epoll && (s.epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
		return EXIT_SETUP;
	struct ipc_options lo;
	ipc_options_init(&lo);
	if (capacity)
		lo.capacity = capacity;
	s.l = ipc_listen(addr, &lo);
	if (!s.l || ipc_listener_addr(s.l, bound, sizeof bound) < 0) {
		fprintf(stderr, "server: listen %s: %s\n", addr, strerror(errno));
		return EXIT_SETUP;
	}
	if (!json)
		printf("listening on %s\n", bound);
	fflush(stdout);
	double t0 = now_s();
	if (mode == MODE_BOTH) {
		if (spawn_clients(bound, rounds, &kids) < 0)
			return EXIT_SETUP;
		s.kids = &kids;
	}
	int r = use_epoll ? serve_epoll(&s, clients) : serve(&s, clients);
	if (s.epfd >= 0)
		close(s.epfd);
	ipc_listener_close(s.l);
	reap_kids(&kids, 1);
	free(kids.pid);
	int ok = r == 0 && s.failed == 0 && kids.failed == 0;
	if (json && ok) {
		print_json(bound, &s, clients, rounds, now_s() - t0);
		return EXIT_OK;
	}
	printf("served %ld clients (%ld failed), %ld requests, %ld replies deferred by EAGAIN; "
	       "%ld client processes failed\n",
	       s.finished, s.failed, s.requests, s.deferred, kids.failed);
	return ok ? EXIT_OK : EXIT_CHECK;
}
