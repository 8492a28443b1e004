/*
 * conformance.c - the behaviour every transport shares, rule by rule, as
 * ipc(7) and the function pages state it.
 *
 * Every CTEST runs once per scheme of the library's scheme table, through
 * the public API only (include/ipc.h), so the same test holds for every
 * transport.  Each test names the ipc(7) section or page it checks.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

/* ---- local helpers --------------------------------------------------- */

static struct ipc_options defopts(void)
{
	struct ipc_options o;
	ipc_options_init(&o);
	return o;
}

/* A new listener on bound (whose old one is gone, why says how) works:
 * a client connects and is accepted. */
static void relisten_works(const char *bound, const char *why)
{
	ipc_listener *l = ipc_listen(bound, NULL);
	CHECKF(l != NULL, "listen on %s %s", bound, why);
	ipc_conn *c = ipc_connect(bound, NULL);
	CHECK(c != NULL);
	ipc_conn *s = t_accept(l);
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
}

/* Fork a child that connects to addr, runs fn, closes and exits 0. */
typedef void (*peer_fn)(ipc_conn *c, void *arg);
static pid_t fork_client(const char *addr, const struct ipc_options *o, peer_fn fn, void *arg)
{
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		ipc_conn *c = ipc_connect(addr, o);
		CHECKF(c != NULL, "child: ipc_connect(%s)", addr);
		fn(c, arg);
		ipc_close(c);
		_exit(0);
	}
	return pid;
}

/* A peer in a child process that runs fn on its connection, closes it and
 * exits 0; *srv gets this process's end.  Over a scheme: a listener, a
 * forked client, the accepted connection (the listener is closed).  Under
 * a pair pseudo-scheme: ipc_pair(3)'s use, a pair split by fork (the child
 * uses pair[1] and closes pair[0]; the parent the opposite). */
static pid_t fork_peer(const char *scheme, peer_fn fn, void *arg, ipc_conn **srv)
{
	if (!t_pair_mode()) {
		char bound[IPC_ADDR_MAX + 1];
		ipc_listener *l = t_listen(scheme, NULL, bound);
		pid_t pid = fork_client(bound, NULL, fn, arg);
		*srv = t_accept(l);
		CHECK_EQ(ipc_listener_close(l), 0);
		return pid;
	}
	ipc_conn *p[2];
	CHECKF(ipc_pair(scheme, NULL, p) == 0, "ipc_pair(%s)", scheme);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		CHECK_EQ(ipc_close(p[0]), 0);
		fn(p[1], arg);
		ipc_close(p[1]);
		_exit(0);
	}
	CHECK_EQ(ipc_close(p[1]), 0);
	*srv = p[0];
	return pid;
}

/* ipc_pair(3): an end that no call has used yet is closed as a copy a
 * forked process inherited (no end of stream: the other process may be
 * using it).  A pair end closed in the process that made the pair, to end
 * the connection, is used first; a no-op over a scheme. */
static void use_end(ipc_conn *c)
{
	short ev;
	CHECK_OK(ipc_conn_ready(c, IPC_POLLOUT, &ev));
}

/* Message i of a test flow: its size and its contents (t_fill(seq i)). */
struct flow {
	ipc_conn *c;
	size_t n;       /* messages */
	size_t minsz;   /* sizes cycle through minsz..maxsz */
	size_t maxsz;
	uint64_t seq0;  /* seq of message 0 */
	int flags;
};

static size_t flow_size(const struct flow *f, size_t i)
{
	size_t span = f->maxsz - f->minsz + 1;
	return f->minsz + (i * 7919u) % span;
}

static void *flow_send(void *arg)
{
	struct flow *f = arg;
	char *buf = malloc(f->maxsz ? f->maxsz : 1);
	CHECK(buf != NULL);
	for (size_t i = 0; i < f->n; i++) {
		size_t len = flow_size(f, i);
		t_fill(buf, len, f->seq0 + i);
		ssize_t r = ipc_send(f->c, buf, len, f->flags);
		CHECKF(r == (ssize_t)len, "flow_send: message %zu of %zu bytes returned %zd", i, len, r);
	}
	free(buf);
	return NULL;
}

static void *flow_recv(void *arg)
{
	struct flow *f = arg;
	size_t cap = f->maxsz ? f->maxsz : 1;
	char *buf = malloc(cap);
	CHECK(buf != NULL);
	for (size_t i = 0; i < f->n; i++) {
		size_t len = flow_size(f, i);
		ssize_t r = ipc_recv(f->c, buf, cap, f->flags);
		CHECKF(r == (ssize_t)len, "flow_recv: message %zu: got %zd, expected %zu", i, r, len);
		CHECKF(t_verify(buf, len, f->seq0 + i), "flow_recv: message %zu: wrong contents (lost, merged or reordered)", i);
	}
	free(buf);
	return NULL;
}

/* Receive one message with a bounded wait, expecting exactly want/len. */
static void recv_expect(ipc_conn *c, const void *want, size_t len)
{
	char buf[4096];
	CHECK(len <= sizeof buf);
	struct ipc_pollitem it = {.conn = c, .events = IPC_POLLIN};
	CHECK(ipc_poll(&it, 1, 10000) == 1);
	ssize_t r = ipc_recv(c, buf, sizeof buf, IPC_DONTWAIT);
	CHECKF(r == (ssize_t)len, "got %zd bytes, expected %zu", r, len);
	CHECK(memcmp(buf, want, len) == 0);
}

static void send_str(ipc_conn *c, const char *s)
{
	CHECK(ipc_send(c, s, strlen(s), 0) == (ssize_t)strlen(s));
}

/* Fill c's send direction with DONTWAIT messages of size sz (seq from
 * *seq, t_fill) until EAGAIN; returns how many were accepted. */
static size_t fill_until_eagain(ipc_conn *c, size_t sz, uint64_t *seq, size_t max_msgs)
{
	char *buf = malloc(sz);
	CHECK(buf != NULL);
	size_t n = 0;
	t_fill(buf, sz, *seq);
	for (;;) {
		CHECKF(n < max_msgs, "no EAGAIN after %zu messages of %zu bytes: capacity unbounded", n, sz);
		ssize_t r = ipc_send(c, buf, sz, IPC_DONTWAIT);
		if (r < 0) {
			CHECKF(errno == EAGAIN, "non-blocking send failed with %s", strerror(errno));
			break;
		}
		CHECK(r == (ssize_t)sz);
		n++;
		++*seq;
		t_fill(buf, sz, *seq);
	}
	free(buf);
	return n;
}

/* Receive messages seq0..seq0+n-1 of size sz on r, pushing out whatever
 * the sender s still holds; then nothing more is queued. */
static void drain_expect(ipc_conn *r, ipc_conn *s, size_t sz, uint64_t seq0, size_t n)
{
	char *buf = malloc(sz + 1);
	CHECK(buf != NULL);
	for (size_t i = 0; i < n; i++) {
		ssize_t got;
		for (int tries = 0;; tries++) {
			if (s && ipc_flush(s, IPC_DONTWAIT) < 0)
				CHECKF(errno == EAGAIN, "ipc_flush: %s", strerror(errno));
			got = ipc_recv(r, buf, sz + 1, IPC_DONTWAIT);
			if (got >= 0 || errno != EAGAIN)
				break;
			CHECKF(tries < 5000, "message %zu of %zu never arrived", i, n);
			struct ipc_pollitem it = {.conn = r, .events = IPC_POLLIN};
			ipc_poll(&it, 1, 2);
		}
		CHECKF(got == (ssize_t)sz, "message %zu: got %zd (%s), expected %zu bytes", i, got,
		       got < 0 ? strerror(errno) : "", sz);
		CHECKF(t_verify(buf, sz, seq0 + i), "message %zu: wrong contents", i);
	}
	if (s)
		ipc_flush(s, IPC_DONTWAIT);
	struct ipc_pollitem it = {.conn = r, .events = IPC_POLLIN};
	ipc_poll(&it, 1, 100);
	CHECK_FAILS(ipc_recv(r, buf, sz + 1, IPC_DONTWAIT), EAGAIN); /* nothing extra, nothing partial */
	free(buf);
}

static int port_of(const char *addr)
{
	const char *c = strrchr(addr, ':');
	return c ? atoi(c + 1) : -1;
}

/* ---- 1. Addresses ---------------------------------------------------- */

/* ipc(7) Addresses: a listener reports the address it bound, in address syntax,
 * and that address connects to it (tcp port 0 becomes the real port). */
CTEST(addr_listener_reports_bound)
{
	const char *a = t_addr(scheme);
	ipc_listener *l = ipc_listen(a, NULL);
	CHECKF(l != NULL, "ipc_listen(%s)", a);
	char bound[IPC_ADDR_MAX + 1];
	int n = ipc_listener_addr(l, bound, sizeof bound);
	CHECK(n > 0 && (size_t)n == strlen(bound));
	size_t sl = strlen(scheme);
	CHECKF(strncmp(bound, scheme, sl) == 0 && bound[sl] == ':', "bound address %s", bound);
	if (t_is_inet(scheme))
		CHECKF(port_of(bound) > 0 && port_of(bound) < 65536, "tcp port 0 not resolved: %s", bound);
	else
		CHECKF(!strcmp(bound, a), "asked %s, reported %s", a, bound);
	/* too small a buffer: ENOSPC, never a truncated address */
	char small[8];
	CHECK_FAILS(ipc_listener_addr(l, small, sizeof small), ENOSPC);
	char *exact = malloc((size_t)n + 1);
	CHECK(exact != NULL);
	CHECK_FAILS(ipc_listener_addr(l, exact, (size_t)n), ENOSPC);
	CHECK(ipc_listener_addr(l, exact, (size_t)n + 1) == n && !strcmp(exact, bound));
	free(exact);

	ipc_conn *c = ipc_connect(bound, NULL);
	CHECKF(c != NULL, "connect to reported address %s", bound);
	ipc_conn *s = t_accept(l);
	CHECK(!strcmp(ipc_conn_scheme(c), scheme) && !strcmp(ipc_conn_scheme(s), scheme));
	send_str(c, "hello");
	recv_expect(s, "hello", 5);
	send_str(s, "back");
	recv_expect(c, "back", 4);
	CHECK(ipc_close(c) == 0);
	CHECK(ipc_close(s) == 0);
	CHECK(ipc_listener_close(l) == 0);
}

/* ipc(7) Addresses: an empty name is refused with EINVAL on every scheme. */
CTEST(addr_empty_name)
{
	char a[64];
	snprintf(a, sizeof a, "%s:", scheme);
	CHECK_FAILS(ipc_listen(a, NULL), EINVAL);
	CHECK_FAILS(ipc_connect(a, NULL), EINVAL);
}

/* ipc(7) Resources and security: a live listener is never stolen from (EADDRINUSE), and it
 * keeps working afterwards. */
CTEST(addr_in_use_not_stolen)
{
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen(scheme, NULL, bound);
	CHECK_FAILS(ipc_listen(bound, NULL), EADDRINUSE);
	CHECK_FAILS(ipc_listen(bound, NULL), EADDRINUSE);
	ipc_conn *c = ipc_connect(bound, NULL);
	CHECK(c != NULL);
	ipc_conn *s = t_accept(l);
	send_str(c, "still mine");
	recv_expect(s, "still mine", 10);
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
}

/* ipc(7) Connections + 8: after the listener closes, connect fails at once with
 * ECONNREFUSED or ENOENT, and the address can be listened on again. */
CTEST(connect_nobody_listens)
{
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen(scheme, NULL, bound);
	CHECK(ipc_listener_close(l) == 0);
	for (int i = 0; i < 3; i++) {
		int64_t t0 = t_now_ms();
		errno = 0;
		ipc_conn *c = ipc_connect(bound, NULL);
		int e = errno;
		int64_t dt = t_now_ms() - t0;
		CHECKF(c == NULL && (e == ECONNREFUSED || e == ENOENT), "connect to closed %s: %s", bound,
		       c ? "succeeded" : strerror(e));
		CHECKF(dt < 3000, "refusal took %lld ms, not at once", (long long)dt);
	}
	relisten_works(bound, "after close");
}

/* ---- 2. Connections -------------------------------------------------- */

/* ipc(7) Connections: many clients per listener at once, each with its own
 * full-duplex channel (10 clients connect before any accept; traffic is
 * interleaved; every reply reaches the right client). */
CTEST(many_clients)
{
	enum { N = 10, ROUNDS = 20 };
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen(scheme, NULL, bound);
	ipc_conn *cli[N], *srv[N];
	int id_of[N];
	for (int i = 0; i < N; i++) {
		cli[i] = ipc_connect(bound, NULL);
		CHECKF(cli[i] != NULL, "client %d", i);
	}
	for (int i = 0; i < N; i++) {
		srv[i] = t_accept(l);
		id_of[i] = -1;
	}
	for (int i = 0; i < N; i++) {
		char m[32];
		int n = snprintf(m, sizeof m, "id %d", i);
		CHECK(ipc_send(cli[i], m, (size_t)n, 0) == n);
	}
	int seen[N] = {0};
	for (int i = 0; i < N; i++) {
		char m[32] = {0};
		CHECK(ipc_recv(srv[i], m, sizeof m - 1, 0) > 0);
		CHECK(sscanf(m, "id %d", &id_of[i]) == 1 && id_of[i] >= 0 && id_of[i] < N);
		CHECKF(!seen[id_of[i]], "two accepted connections carry client %d", id_of[i]);
		seen[id_of[i]] = 1;
	}
	for (int r = 0; r < ROUNDS; r++) {
		for (int i = 0; i < N; i++) {
			char m[32];
			int n = snprintf(m, sizeof m, "%d/%d", i, r);
			CHECK(ipc_send(cli[i], m, (size_t)n, 0) == n);
		}
		for (int k = N - 1; k >= 0; k--) { /* serve in another order */
			char m[32] = {0}, want[32];
			snprintf(want, sizeof want, "%d/%d", id_of[k], r);
			ssize_t n = ipc_recv(srv[k], m, sizeof m - 1, 0);
			CHECKF(n > 0 && !strcmp(m, want), "server got '%s', expected '%s'", m, want);
			char rep[40];
			int rn = snprintf(rep, sizeof rep, "re %s", m);
			CHECK(ipc_send(srv[k], rep, (size_t)rn, 0) == rn);
		}
		for (int i = 0; i < N; i++) {
			char m[40] = {0}, want[40];
			snprintf(want, sizeof want, "re %d/%d", i, r);
			CHECK(ipc_recv(cli[i], m, sizeof m - 1, 0) > 0);
			CHECKF(!strcmp(m, want), "client %d got '%s', expected '%s'", i, m, want);
		}
	}
	for (int i = 0; i < N; i++) {
		CHECK(ipc_close(cli[i]) == 0);
		CHECK(ipc_close(srv[i]) == 0);
	}
	ipc_listener_close(l);
}

/* ipc(7) Blocking (accept): non-blocking accept gives EAGAIN, a timed accept
 * ETIMEDOUT after about its timeout. */
CTEST(accept_nonblock_and_timeout)
{
	struct ipc_options o = defopts();
	o.recv_timeout_ms = 200;
	ipc_listener *l = t_listen(scheme, &o, NULL);
	CHECK_FAILS(ipc_accept(l, IPC_DONTWAIT), EAGAIN);
	int64_t t0 = t_now_ms();
	CHECK_FAILS(ipc_accept(l, 0), ETIMEDOUT);
	int64_t dt = t_now_ms() - t0;
	CHECKF(dt >= 200 && dt < 2200, "timed accept took %lld ms", (long long)dt);
	ipc_listener_close(l);

	o = defopts();
	o.nonblock = 1;
	l = t_listen(scheme, &o, NULL);
	CHECK_FAILS(ipc_accept(l, 0), EAGAIN);
	ipc_listener_close(l);
}

/* ---- 3. Messages ----------------------------------------------------- */

static const size_t sizes[] = {1, 0, 2, 3, 4, 5, 7, 8, 9, 100, 1000, 4095, 4096, 4097, 0, 65536, 1};
#define NSIZES (sizeof sizes / sizeof sizes[0])

struct sized {
	ipc_conn *c;
	uint64_t seq0;
};

/* Send sizes[] back-to-back (seq0 + i). */
static void *send_sizes(void *arg)
{
	struct sized *m = arg;
	char *buf = malloc(70000);
	CHECK(buf != NULL);
	for (size_t i = 0; i < NSIZES; i++) {
		t_fill(buf, sizes[i], m->seq0 + i);
		CHECK(ipc_send(m->c, buf, sizes[i], 0) == (ssize_t)sizes[i]);
	}
	free(buf);
	return NULL;
}

/* ipc(7) Messages: one send is one message, one receive returns exactly that
 * message; no merge or split, order kept, for many sizes. */
CTEST(msg_boundaries)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	struct sized m1 = {.c = c, .seq0 = 0};
	pthread_t th;
	CHECK(pthread_create(&th, NULL, send_sizes, &m1) == 0);
	char *buf = malloc(70000);
	CHECK(buf != NULL);
	for (size_t i = 0; i < NSIZES; i++) {
		memset(buf, 0, 70000);
		ssize_t r = ipc_recv(s, buf, 70000, 0);
		CHECKF(r == (ssize_t)sizes[i], "message %zu: %zd bytes, expected %zu", i, r, sizes[i]);
		CHECK(t_verify(buf, sizes[i], i));
	}
	CHECK(pthread_join(th, NULL) == 0);
	/* the other direction, received with exact-size buffers and recv_alloc */
	struct sized m2 = {.c = s, .seq0 = 100};
	CHECK(pthread_create(&th, NULL, send_sizes, &m2) == 0);
	for (size_t i = 0; i < NSIZES; i++) {
		if (i % 2) {
			void *p = NULL;
			ssize_t r = ipc_recv_alloc(c, &p, 0);
			CHECK(r == (ssize_t)sizes[i] && p != NULL && t_verify(p, sizes[i], 100 + i));
			free(p);
		} else {
			char *exact = malloc(sizes[i] + 1);
			CHECK(exact != NULL);
			ssize_t r = ipc_recv(c, sizes[i] ? exact : NULL, sizes[i], 0);
			CHECKF(r == (ssize_t)sizes[i], "message %zu in an exact buffer: %zd", i, r);
			CHECK(t_verify(exact, sizes[i], 100 + i));
			free(exact);
		}
	}
	CHECK(pthread_join(th, NULL) == 0);
	CHECK_FAILS(ipc_recv(s, buf, 70000, IPC_DONTWAIT), EAGAIN);
	CHECK_FAILS(ipc_recv(c, buf, 70000, IPC_DONTWAIT), EAGAIN);
	free(buf);
	ipc_close(s);
	ipc_close(c);
}

/* ipc(7) Messages + 5: a zero-length message is delivered as length 0 and is
 * distinguishable from end-of-stream (EPIPE, repeatedly). */
CTEST(msg_zero_length_vs_eof)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	CHECK(ipc_send(c, NULL, 0, 0) == 0);
	CHECK(ipc_send(c, "", 0, 0) == 0);
	CHECK(ipc_sendv(c, NULL, 0, 0) == 0);
	char buf[16];
	CHECK(ipc_recv(s, buf, sizeof buf, 0) == 0);
	CHECK(ipc_recv(s, NULL, 0, 0) == 0);
	void *p = NULL;
	CHECK(ipc_recv_alloc(s, &p, 0) == 0);
	CHECK(p != NULL);
	free(p);
	CHECK(ipc_close(c) == 0);
	CHECK_FAILS(ipc_recv(s, buf, sizeof buf, 0), EPIPE);
	CHECK_FAILS(ipc_recv(s, buf, sizeof buf, 0), EPIPE);
	CHECK_FAILS(ipc_recv(s, buf, sizeof buf, IPC_DONTWAIT), EPIPE);
	p = NULL;
	CHECK_FAILS(ipc_recv_alloc(s, &p, 0), EPIPE);
	CHECK(p == NULL);
	ipc_close(s);
}

/* ipc(7) Messages: 1 MiB messages (larger than the capacity) arrive whole. */
CTEST(msg_1mib)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	struct flow f = {.c = c, .n = 4, .minsz = 1 << 20, .maxsz = 1 << 20, .seq0 = 7};
	pthread_t th;
	CHECK(pthread_create(&th, NULL, flow_send, &f) == 0);
	char *buf = malloc(1 << 20);
	CHECK(buf != NULL);
	for (int i = 0; i < 2; i++) {
		CHECK(ipc_recv(s, buf, 1 << 20, 0) == 1 << 20);
		CHECK(t_verify(buf, 1 << 20, 7 + (uint64_t)i));
	}
	for (int i = 2; i < 4; i++) {
		void *p = NULL;
		CHECK(ipc_recv_alloc(s, &p, 0) == 1 << 20);
		CHECK(t_verify(p, 1 << 20, 7 + (uint64_t)i));
		free(p);
	}
	CHECK(pthread_join(th, NULL) == 0);
	free(buf);
	ipc_close(s);
	ipc_close(c);
}

static void send_64mib(ipc_conn *c, void *arg)
{
	(void)arg;
	size_t len = IPC_DEFAULT_MAX_MSG; /* exactly the default limit */
	char *buf = malloc(len);
	CHECK(buf != NULL);
	t_fill(buf, len, 64);
	CHECK(ipc_send(c, buf, len, 0) == (ssize_t)len);
	CHECK(ipc_send(c, "x", 1, 0) == 1);
	free(buf);
}

/* ipc(7) Messages: a 64 MiB message (the default maximum) from another process
 * is received whole while it is being sent. */
CTEST(msg_64mib_from_child)
{
	TEST_TIMEOUT(120);
	ipc_conn *s;
	pid_t pid = fork_peer(scheme, send_64mib, NULL, &s);
	void *p = NULL;
	ssize_t r = ipc_recv_alloc(s, &p, 0);
	CHECKF(r == (ssize_t)IPC_DEFAULT_MAX_MSG, "got %zd", r);
	CHECK(t_verify(p, (size_t)r, 64));
	free(p);
	char b[4];
	CHECK(ipc_recv(s, b, sizeof b, 0) == 1 && b[0] == 'x');
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), EPIPE);
	t_wait_ok(pid);
	ipc_close(s);
}

/* ipc(7) Messages + 6: a message is visible only once complete: while an 8 MiB
 * message flows in, a non-blocking receive gets EAGAIN or the whole
 * message, never part of it; and whenever the handle reports IPC_POLLIN a
 * non-blocking receive does not fail with EAGAIN. */
CTEST(msg_visible_only_when_complete)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	enum { BIG = 8 << 20 };
	struct flow f = {.c = c, .n = 2, .minsz = BIG, .maxsz = BIG, .seq0 = 31};
	pthread_t th;
	CHECK(pthread_create(&th, NULL, flow_send, &f) == 0);
	char *buf = malloc(BIG);
	CHECK(buf != NULL);
	size_t got = 0;
	long eagain = 0;
	int64_t t0 = t_now_ms();
	while (got < 2) {
		CHECKF(t_now_ms() - t0 < 30000, "no progress");
		short ev = 0;
		int ready = ipc_conn_ready(s, IPC_POLLIN, &ev);
		CHECK(ready >= 0);
		ssize_t r = ipc_recv(s, buf, BIG, IPC_DONTWAIT);
		if (r < 0) {
			CHECKF(errno == EAGAIN, "non-blocking recv during a large message: %s", strerror(errno));
			CHECKF(!(ready & IPC_POLLIN), "IPC_POLLIN reported but recv would block");
			eagain++;
			if (!ready) {
				struct pollfd p = {.fd = ipc_conn_fd(s), .events = ev};
				poll(&p, 1, 1000);
			}
			continue;
		}
		CHECKF(r == BIG, "a partial message of %zd bytes became visible", r);
		CHECK(t_verify(buf, BIG, 31 + got));
		got++;
	}
	CHECK(pthread_join(th, NULL) == 0);
	free(buf);
	ipc_close(s);
	ipc_close(c);
}

/* ipc(7) Messages: order kept, nothing lost, duplicated or merged over 100,000
 * messages of varying size. */
CTEST(msg_order_100k)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	struct flow f = {.c = c, .n = 100000, .minsz = 8, .maxsz = 72, .seq0 = 1000};
	pthread_t th;
	CHECK(pthread_create(&th, NULL, flow_send, &f) == 0);
	struct flow g = f;
	g.c = s;
	flow_recv(&g);
	CHECK(pthread_join(th, NULL) == 0);
	char b[8];
	CHECK_FAILS(ipc_recv(s, b, sizeof b, IPC_DONTWAIT), EAGAIN);
	ipc_close(s);
	ipc_close(c);
}

/* ipc(7) Messages: scatter/gather send makes one message of all iovecs. */
CTEST(msg_sendv_one_message)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	char payload[3000];
	t_fill(payload, sizeof payload, 5);
	struct iovec iov[4] = {
		{.iov_base = "HDR:", .iov_len = 4},
		{.iov_base = NULL, .iov_len = 0},
		{.iov_base = payload, .iov_len = sizeof payload},
		{.iov_base = ":END", .iov_len = 4},
	};
	CHECK(ipc_sendv(c, iov, 4, 0) == 3008);
	char many[64];
	struct iovec iv[64];
	for (int i = 0; i < 64; i++) {
		many[i] = (char)('a' + i % 26);
		iv[i].iov_base = &many[i];
		iv[i].iov_len = 1;
	}
	CHECK(ipc_sendv(c, iv, 64, 0) == 64);
	char buf[4000];
	CHECK(ipc_recv(s, buf, sizeof buf, 0) == 3008);
	CHECK(!memcmp(buf, "HDR:", 4) && !memcmp(buf + 4, payload, sizeof payload) && !memcmp(buf + 3004, ":END", 4));
	CHECK(ipc_recv(s, buf, sizeof buf, 0) == 64);
	CHECK(!memcmp(buf, many, 64));
	CHECK_FAILS(ipc_sendv(c, iov, -1, 0), EINVAL);
	ipc_close(s);
	ipc_close(c);
}

/* ipc(7) Messages: a buffer smaller than the next message fails with EMSGSIZE
 * and leaves the message queued; a big enough buffer then gets it whole. */
CTEST(msg_recv_buffer_too_small)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	char m[100];
	t_fill(m, sizeof m, 1);
	CHECK(ipc_send(c, m, sizeof m, 0) == 100);
	CHECK(ipc_send(c, "tail", 4, 0) == 4);
	char buf[200];
	struct ipc_pollitem it = {.conn = s, .events = IPC_POLLIN};
	CHECK(ipc_poll(&it, 1, 10000) == 1);
	CHECK_FAILS(ipc_recv(s, buf, 99, 0), EMSGSIZE);
	CHECK_FAILS(ipc_recv(s, buf, 99, IPC_DONTWAIT), EMSGSIZE);
	CHECK_FAILS(ipc_recv(s, buf, 0, 0), EMSGSIZE);
	CHECK_FAILS(ipc_recv(s, NULL, 0, 0), EMSGSIZE);
	CHECK(ipc_recv(s, buf, 100, 0) == 100);
	CHECK(t_verify(buf, 100, 1));
	CHECK_FAILS(ipc_recv(s, buf, 3, 0), EMSGSIZE);
	void *p = NULL;
	CHECK(ipc_recv_alloc(s, &p, 0) == 4 && !memcmp(p, "tail", 4));
	free(p);
	ipc_close(s);
	ipc_close(c);
}

/* ipc(7) Messages: the sender's max_msg_size: more fails with EMSGSIZE and
 * sends nothing; the next message arrives fine. */
CTEST(msg_max_size_send)
{
	struct ipc_options o = defopts();
	o.max_msg_size = 1000;
	ipc_conn *s, *c;
	t_pair(scheme, &o, &s, &c);
	char buf[2000];
	t_fill(buf, sizeof buf, 3);
	CHECK_FAILS(ipc_send(c, buf, 1001, 0), EMSGSIZE);
	CHECK_FAILS(ipc_send(c, buf, 1001, IPC_DONTWAIT), EMSGSIZE);
	struct iovec iov[2] = {{.iov_base = buf, .iov_len = 600}, {.iov_base = buf + 600, .iov_len = 401}};
	CHECK_FAILS(ipc_sendv(c, iov, 2, 0), EMSGSIZE);
	struct iovec batch[2] = {{.iov_base = buf, .iov_len = 10}, {.iov_base = buf, .iov_len = 1001}};
	CHECK_FAILS(ipc_send_batch(c, batch, 2, 0), EMSGSIZE);
	CHECK_FAILS(ipc_send(s, buf, 1001, 0), EMSGSIZE); /* accepted side inherits the limit */
	CHECK(ipc_send(c, buf, 1000, 0) == 1000);
	char r[2000];
	CHECK(ipc_recv(s, r, sizeof r, 0) == 1000);
	CHECK(!memcmp(r, buf, 1000));
	CHECK_FAILS(ipc_recv(s, r, sizeof r, IPC_DONTWAIT), EAGAIN);
	/* options out of range are refused */
	o.max_msg_size = 0;
	CHECK_FAILS(ipc_listen(t_addr(scheme), &o), EINVAL);
	ipc_close(s);
	ipc_close(c);
}

static void send_huge_then_small(ipc_conn *c, void *arg)
{
	size_t len = *(size_t *)arg;
	char *buf = malloc(len);
	CHECK(buf != NULL);
	memset(buf, 'H', len);
	ssize_t r = ipc_send(c, buf, len, 0);
	free(buf);
	if (r < 0 && errno == EMSGSIZE) {
		/* the transport knew the receiver's limit: nothing was sent */
		CHECK(ipc_send(c, "ok", 2, 0) == 2);
		ipc_close(c);
		_exit(3);
	}
	CHECKF(r == (ssize_t)len || errno == EPIPE || errno == ECONNRESET, "huge send: %s", strerror(errno));
	_exit(0);
}

/* ipc(7) Messages + 8: a peer announcing more than the receiver's max_msg_size
 * is a protocol error (EPROTO, sticky) and nothing of that size is
 * allocated (neither RSS nor peak virtual size jumps by it). */
CTEST(msg_peer_over_receiver_limit)
{
	struct ipc_options o = defopts();
	o.max_msg_size = 64 << 10;
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen(scheme, &o, bound);
	static size_t huge = (size_t)60 << 20;
	pid_t pid = fork_client(bound, NULL, send_huge_then_small, &huge);
	ipc_conn *s = t_accept(l);
	CHECK(ipc_conn_set_timeouts(s, -1, 20000) == 0);
	long rss0 = t_rss_kib(), peak0 = t_vmpeak_kib();
	void *p = NULL;
	errno = 0;
	ssize_t r = ipc_recv_alloc(s, &p, 0);
	int e = errno;
	long rss1 = t_rss_kib(), peak1 = t_vmpeak_kib();
	if (r >= 0) {
		/* allowed: the sender refused with EMSGSIZE and sent "ok" */
		CHECKF(r == 2 && !memcmp(p, "ok", 2), "got a message of %zd bytes over the limit", r);
		free(p);
		int st = t_wait(pid);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3);
	} else {
		CHECKF(e == EPROTO, "receiver limit exceeded: expected EPROTO, got %s", strerror(e));
		CHECK_FAILS(ipc_recv_alloc(s, &p, 0), EPROTO); /* sticky */
		char b[8];
		CHECK_FAILS(ipc_recv(s, b, sizeof b, IPC_DONTWAIT), EPROTO);
		ipc_close(s);
		s = NULL;
		int st = t_wait(pid);
		CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "sender status 0x%x", st);
	}
	CHECKF(rss1 - rss0 < 16 * 1024, "RSS grew by %ld KiB", rss1 - rss0);
	CHECKF(peak1 - peak0 < 16 * 1024, "VmPeak grew by %ld KiB: the announced size was allocated", peak1 - peak0);
	if (s)
		ipc_close(s);
	ipc_listener_close(l);
}

/* ---- 4. Blocking, backpressure, time --------------------------------- */

/* ipc(7) Blocking: with a stopped receiver a non-blocking sender gets EAGAIN
 * and memory stays bounded while it tries to push 256 MiB; every accepted
 * message is delivered whole and nothing else. */
CTEST(backpressure_nonblock_bounded)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	enum { SZ = 64 << 10 };
	char *buf = malloc(SZ);
	CHECK(buf != NULL);
	long rss0 = t_rss_kib();
	uint64_t seq = 0;
	size_t accepted = 0, eagain = 0;
	t_fill(buf, SZ, seq);
	for (size_t attempt = 0; attempt < 4096; attempt++) { /* 4096 * 64 KiB = 256 MiB */
		ssize_t r = ipc_send(c, buf, SZ, IPC_DONTWAIT);
		if (r < 0) {
			CHECKF(errno == EAGAIN, "non-blocking send: %s", strerror(errno));
			eagain++;
			continue;
		}
		CHECK(r == SZ);
		accepted++;
		t_fill(buf, SZ, ++seq);
	}
	long rss1 = t_rss_kib();
	CHECKF(eagain > 0, "never EAGAIN");
	CHECKF(accepted * SZ < ((size_t)64 << 20), "%zu messages (%zu MiB) accepted by a stopped receiver", accepted,
	       accepted * SZ >> 20);
	CHECKF(rss1 - rss0 < 64 * 1024, "RSS grew by %ld KiB", rss1 - rss0);
	drain_expect(s, c, SZ, 0, accepted);
	free(buf);
	ipc_close(s);
	ipc_close(c);
}

/* ipc(7) Blocking: opt.nonblock makes every call non-blocking (EAGAIN). */
CTEST(backpressure_opt_nonblock)
{
	struct ipc_options o = defopts();
	o.nonblock = 1;
	ipc_conn *s, *c;
	t_pair(scheme, &o, &s, &c);
	char b[16];
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), EAGAIN);
	void *p = NULL;
	CHECK_FAILS(ipc_recv_alloc(s, &p, 0), EAGAIN);
	uint64_t seq = 0;
	char *buf = malloc(4096);
	CHECK(buf != NULL);
	size_t n = 0;
	t_fill(buf, 4096, seq);
	for (;;) {
		CHECKF(n < 100000, "no EAGAIN with opt.nonblock");
		ssize_t r = ipc_send(c, buf, 4096, 0);
		if (r < 0) {
			CHECK(errno == EAGAIN);
			break;
		}
		n++;
		t_fill(buf, 4096, ++seq);
	}
	free(buf);
	CHECK(n > 0);
	drain_expect(s, c, 4096, 0, n);
	ipc_close(s);
	ipc_close(c);
}

/* ipc(7) Blocking: a send with a timeout fails with ETIMEDOUT after about the
 * timeout and sends nothing. */
CTEST(send_timeout)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	CHECK(ipc_conn_set_timeouts(c, 300, -1) == 0);
	uint64_t seq = 0;
	size_t n = fill_until_eagain(c, 4096, &seq, 100000);
	char buf[4096];
	int timed_out = 0;
	for (int tries = 0; tries < 20 && !timed_out; tries++) {
		t_fill(buf, sizeof buf, seq);
		int64_t t0 = t_now_ms();
		ssize_t r = ipc_send(c, buf, sizeof buf, 0);
		int64_t dt = t_now_ms() - t0;
		if (r < 0) {
			CHECKF(errno == ETIMEDOUT, "timed send: %s", strerror(errno));
			CHECKF(dt >= 300 && dt < 2300, "timed send (300 ms) took %lld ms", (long long)dt);
			timed_out = 1;
		} else {
			n++; /* room appeared late: fill again */
			seq++;
			n += fill_until_eagain(c, 4096, &seq, 100000);
		}
	}
	CHECK(timed_out);
	drain_expect(s, c, 4096, 0, n);
	ipc_close(s);
	ipc_close(c);
}

struct late_reader {
	int pipefd;
	size_t n, sz;
};

static void late_reader_fn(ipc_conn *c, void *arg)
{
	struct late_reader *lr = arg;
	t_sleep_ms(300);
	int64_t t = t_now_ms();
	CHECK(write(lr->pipefd, &t, sizeof t) == sizeof t);
	struct flow f = {.c = c, .n = lr->n, .minsz = lr->sz, .maxsz = lr->sz, .seq0 = 11};
	flow_recv(&f);
	send_str(c, "done");
}

/* ipc(7) Blocking: a blocking send waits while the capacity is full and
 * completes as the receiver (another process, starting late) drains. */
CTEST(blocking_send_waits_for_reader)
{
	int pfd[2];
	CHECK(pipe(pfd) == 0);
	struct late_reader lr = {.pipefd = pfd[1], .n = 256, .sz = 64 << 10}; /* 16 MiB */
	ipc_conn *s;
	pid_t pid = fork_peer(scheme, late_reader_fn, &lr, &s);
	close(pfd[1]);
	struct flow f = {.c = s, .n = lr.n, .minsz = lr.sz, .maxsz = lr.sz, .seq0 = 11};
	flow_send(&f);
	int64_t done = t_now_ms(), started;
	CHECK(read(pfd[0], &started, sizeof started) == sizeof started);
	CHECKF(done >= started, "16 MiB blocking send finished %lld ms before the reader started",
	       (long long)(started - done));
	recv_expect(s, "done", 4);
	t_wait_ok(pid);
	close(pfd[0]);
	ipc_close(s);
}

/* ipc(7) Blocking: receive blocking / non-blocking (EAGAIN) / timed (ETIMEDOUT),
 * per flag, per option and per ipc_conn_set_timeouts. */
CTEST(recv_nonblock_and_timeout)
{
	struct ipc_options o = defopts();
	o.recv_timeout_ms = 200;
	ipc_conn *s, *c;
	t_pair(scheme, &o, &s, &c);
	char b[16];
	CHECK_FAILS(ipc_recv(s, b, sizeof b, IPC_DONTWAIT), EAGAIN);
	void *p = NULL;
	CHECK_FAILS(ipc_recv_alloc(s, &p, IPC_DONTWAIT), EAGAIN);
	int64_t t0 = t_now_ms();
	CHECK_FAILS(ipc_recv(c, b, sizeof b, 0), ETIMEDOUT); /* option from connect */
	int64_t dt = t_now_ms() - t0;
	CHECKF(dt >= 200 && dt < 2200, "timed recv (200 ms) took %lld ms", (long long)dt);
	t0 = t_now_ms();
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), ETIMEDOUT); /* inherited from the listener */
	dt = t_now_ms() - t0;
	CHECKF(dt >= 200 && dt < 2200, "timed recv (200 ms) took %lld ms", (long long)dt);

	CHECK(ipc_conn_set_timeouts(s, -1, 400) == 0);
	t0 = t_now_ms();
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), ETIMEDOUT);
	dt = t_now_ms() - t0;
	CHECKF(dt >= 400 && dt < 2400, "timed recv (400 ms) took %lld ms", (long long)dt);
	CHECK(ipc_conn_set_timeouts(s, -1, 0) == 0);
	t0 = t_now_ms();
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), EAGAIN);
	CHECK(t_now_ms() - t0 < 1000);
	CHECK_FAILS(ipc_conn_set_timeouts(s, -2, 0), EINVAL);
	CHECK_FAILS(ipc_conn_set_timeouts(s, 0, -5), EINVAL);

	/* blocking again: a message sent later arrives */
	CHECK(ipc_conn_set_timeouts(s, -1, -1) == 0);
	send_str(c, "late");
	CHECK(ipc_recv(s, b, sizeof b, 0) == 4 && !memcmp(b, "late", 4));
	/* the connection is still fine after timeouts */
	send_str(s, "ok");
	CHECK(ipc_conn_set_timeouts(c, -1, 5000) == 0);
	CHECK(ipc_recv(c, b, sizeof b, 0) == 2);
	ipc_close(s);
	ipc_close(c);
}

/* ipc(7) Blocking: a message bigger than the capacity flows through a blocking
 * send; without waiting it is accepted whole while nothing is held (the
 * rest moves on in later calls: here flush and receive). */
CTEST(msg_bigger_than_capacity)
{
	enum { CAP = 64 << 10 };
	struct ipc_options o = defopts();
	o.capacity = CAP;
	ipc_conn *s, *c;
	t_pair(scheme, &o, &s, &c);
	char *buf = malloc(CAP);
	CHECK(buf != NULL);
	t_fill(buf, CAP, 1);
	CHECK(ipc_conn_set_timeouts(c, 0, -1) == 0);
	/* one thread: what is held moves on in its later calls (here flush
	 * and non-blocking receives), never by itself */
	for (int k = 0; k < 3; k++) {
		size_t len = k == 2 ? CAP - 4 : CAP - 3; /* len + 4 == capacity too */
		t_fill(buf, len, (uint64_t)k);
		CHECK_EQ(ipc_send(c, buf, len, k == 1 ? 0 : IPC_DONTWAIT), (ssize_t)len);
		ssize_t r;
		int64_t t0 = t_now_ms();
		while ((r = ipc_recv(s, buf, CAP, IPC_DONTWAIT)) < 0 && errno == EAGAIN && t_now_ms() - t0 < 5000)
			CHECK(ipc_flush(c, IPC_DONTWAIT) == 0 || errno == EAGAIN);
		CHECKF(r == (ssize_t)len, "message %d: recv %zd (%s), expected %zu", k, r, strerror(errno), len);
		CHECK(t_verify(buf, len, (uint64_t)k));
	}
	CHECK(ipc_conn_set_timeouts(c, -1, -1) == 0);
	free(buf);

	/* blocking: 1 MiB messages (16x the capacity) flow as the receiver drains */
	struct flow f = {.c = c, .n = 3, .minsz = 1 << 20, .maxsz = (1 << 20) + 100, .seq0 = 2};
	pthread_t th;
	CHECK(pthread_create(&th, NULL, flow_send, &f) == 0);
	struct flow g = f;
	g.c = s;
	flow_recv(&g);
	CHECK(pthread_join(th, NULL) == 0);
	ipc_close(s);
	ipc_close(c);

	/* non-blocking sends of 2x the capacity: each is accepted whole while
	 * nothing is held; EAGAIN comes only once the transport is full
	 * (kernel buffers included) and something is held, and exactly then
	 * IPC_POLLOUT is not ready; every message arrives whole, in order */
	o.nonblock = 1;
	t_pair(scheme, &o, &s, &c);
	enum { BIG = 2 * CAP, MAXN = 64 };
	buf = malloc(BIG);
	CHECK(buf != NULL);
	int sent = 0, again = 0;
	while (sent < MAXN) {
		t_fill(buf, BIG, (uint64_t)sent);
		errno = 0;
		ssize_t r = ipc_send(c, buf, BIG, 0);
		if (r < 0) {
			CHECKF(errno == EAGAIN, "send %d: errno %d (%s)", sent, errno, strerror(errno));
			short pev;
			CHECK_EQ(ipc_conn_ready(c, IPC_POLLOUT, &pev), 0);
			again = 1;
			break;
		}
		CHECK_EQ(r, (ssize_t)BIG);
		sent++;
	}
	CHECKF(again, "%d non-blocking sends of %d bytes never met EAGAIN", sent, (int)BIG);
	for (int i = 0; i < sent; i++) {
		ssize_t r;
		int64_t t0 = t_now_ms();
		while ((r = ipc_recv(s, buf, BIG, 0)) < 0 && errno == EAGAIN && t_now_ms() - t0 < 10000) {
			struct ipc_pollitem it[2] = {{.conn = s, .events = IPC_POLLIN}, {.conn = c, .events = IPC_POLLOUT}};
			CHECK(ipc_poll(it, 2, 100) >= 0);
		}
		CHECKF(r == (ssize_t)BIG, "message %d of %d: recv %zd (%s)", i, sent, r, strerror(errno));
		CHECKF(t_verify(buf, BIG, (uint64_t)i), "message %d of %d corrupted", i, sent);
	}
	short pev;
	CHECK_EQ(ipc_conn_ready(c, IPC_POLLOUT, &pev), IPC_POLLOUT);
	free(buf);
	ipc_close(s);
	ipc_close(c);

	o = defopts();
	o.capacity = 1000; /* below the minimum */
	CHECK_FAILS(ipc_listen(t_addr(scheme), &o), EINVAL);
}

static volatile sig_atomic_t got_usr1;
static void on_usr1(int sig)
{
	(void)sig;
	got_usr1++;
}

struct pester {
	pthread_t target;
	atomic_int stop;
};

static void *pester_fn(void *arg)
{
	struct pester *p = arg;
	while (!p->stop) {
		pthread_kill(p->target, SIGUSR1);
		t_sleep_ms(3);
	}
	return NULL;
}

struct delayed {
	ipc_conn *c;
	int ms;
	int drain; /* receive this many 4 KiB messages instead of sending */
};

static void *delayed_fn(void *arg)
{
	struct delayed *d = arg;
	t_sleep_ms(d->ms);
	if (!d->drain) {
		CHECK(ipc_send(d->c, "wake", 4, 0) == 4);
		return NULL;
	}
	char buf[4096];
	for (int i = 0; i < d->drain; i++) {
		ssize_t r = ipc_recv(d->c, buf, sizeof buf, 0);
		CHECKF(r == 4096, "drain %d of %d: %zd (%s)", i, d->drain, r, r < 0 ? strerror(errno) : "");
	}
	return NULL;
}

struct dconn {
	const char *addr;
	int ms;
	ipc_conn *c;
};

static void *dconn_fn(void *arg)
{
	struct dconn *d = arg;
	t_sleep_ms(d->ms);
	d->c = ipc_connect(d->addr, NULL);
	return NULL;
}

/* ipc(7) Blocking: interrupted system calls never surface: blocking recv, send
 * and accept, and timed calls, keep waiting through signals (handler
 * without SA_RESTART); a timeout still bounds the whole call. */
CTEST(eintr_never_surfaces)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART */
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	struct pester pst = {.target = pthread_self()};
	pthread_t pt, dt;
	CHECK(pthread_create(&pt, NULL, pester_fn, &pst) == 0);

	/* blocking recv */
	struct delayed d = {.c = c, .ms = 300};
	CHECK(pthread_create(&dt, NULL, delayed_fn, &d) == 0);
	char b[4096];
	ssize_t r = ipc_recv(s, b, sizeof b, 0);
	CHECKF(r == 4, "blocking recv under signals: %zd (%s)", r, strerror(errno));
	CHECK(pthread_join(dt, NULL) == 0);

	/* timed recv: ETIMEDOUT, bounded, never EINTR */
	CHECK(ipc_conn_set_timeouts(s, -1, 300) == 0);
	int64_t t0 = t_now_ms();
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), ETIMEDOUT);
	int64_t el = t_now_ms() - t0;
	CHECKF(el >= 300 && el < 2300, "timed recv under signals took %lld ms", (long long)el);

	/* blocking send on a full connection */
	uint64_t seq = 0;
	size_t n = fill_until_eagain(c, 4096, &seq, 100000);
	struct delayed dd = {.c = s, .ms = 300, .drain = (int)n + 1};
	CHECK(pthread_create(&dt, NULL, delayed_fn, &dd) == 0);
	memset(b, 0, sizeof b);
	r = ipc_send(c, b, sizeof b, 0);
	CHECKF(r == 4096, "blocking send under signals: %zd (%s)", r, strerror(errno));
	CHECKF(ipc_flush(c, 0) == 0, "blocking flush under signals: %s", strerror(errno)); /* after DONTWAIT sends */
	CHECK(pthread_join(dt, NULL) == 0);

	/* blocking accept, and a timed one */
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen(scheme, NULL, bound);
	struct dconn dc = {.addr = bound, .ms = 300};
	CHECK(pthread_create(&dt, NULL, dconn_fn, &dc) == 0);
	ipc_conn *acc = ipc_accept(l, 0);
	CHECKF(acc != NULL, "blocking accept under signals: %s", strerror(errno));
	CHECK(pthread_join(dt, NULL) == 0);
	CHECK(dc.c != NULL);
	ipc_close(dc.c);
	ipc_close(acc);
	struct ipc_options o = defopts();
	o.recv_timeout_ms = 300;
	ipc_listener *l2 = t_listen(scheme, &o, NULL);
	CHECK_FAILS(ipc_accept(l2, 0), ETIMEDOUT);
	ipc_listener_close(l2);
	pst.stop = 1;
	CHECK(pthread_join(pt, NULL) == 0);
	CHECKF(got_usr1 > 10, "only %d signals delivered", (int)got_usr1);
	ipc_listener_close(l);
	ipc_close(s);
	ipc_close(c);
}

/* ---- batch API ------------------------------------------------------- */

struct batch_rx {
	ipc_conn *c;
	size_t n;
	atomic_int done;
};

static void *batch_recv_fn(void *arg)
{
	struct batch_rx *br = arg;
	enum { K = 32, BSZ = 256 };
	static char bufs[K][BSZ];
	size_t got = 0;
	while (got < br->n) {
		struct iovec v[K];
		for (int i = 0; i < K; i++) {
			v[i].iov_base = bufs[i];
			v[i].iov_len = BSZ;
		}
		ssize_t r = ipc_recv_batch(br->c, v, K, 0);
		CHECKF(r >= 1 && r <= K, "recv_batch returned %zd (%s)", r, r < 0 ? strerror(errno) : "");
		for (ssize_t i = 0; i < r; i++, got++) {
			CHECKF(v[i].iov_len == got % 200, "message %zu: %zu bytes", got, v[i].iov_len);
			CHECKF(t_verify(bufs[i], v[i].iov_len, got), "message %zu: contents/order", got);
		}
	}
	br->done = 1;
	return NULL;
}

/* ipc(7) Messages (batch API): ipc_send_batch / ipc_recv_batch move many
 * messages, one message per entry, in order. */
CTEST(batch_send_recv)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	struct iovec one = {.iov_base = (void *)"x", .iov_len = 1};
	CHECK_FAILS(ipc_send_batch(c, &one, 0, 0), EINVAL);
	struct iovec rv[4];
	char rb[4][8];
	for (int i = 0; i < 4; i++) {
		rv[i].iov_base = rb[i];
		rv[i].iov_len = 8;
	}
	CHECK_FAILS(ipc_recv_batch(s, rv, 4, IPC_DONTWAIT), EAGAIN);

	enum { N = 5000 };
	struct batch_rx br = {.c = s, .n = N};
	pthread_t th;
	CHECK(pthread_create(&th, NULL, batch_recv_fn, &br) == 0);
	static char data[N][200];
	static struct iovec msgs[N];
	for (size_t i = 0; i < N; i++) {
		msgs[i].iov_base = data[i];
		msgs[i].iov_len = i % 200;
		t_fill(data[i], i % 200, i);
	}
	size_t sent = 0;
	while (sent < N) {
		size_t k = N - sent < 100 ? N - sent : 100;
		ssize_t r = ipc_send_batch(c, msgs + sent, k, 0);
		CHECKF(r >= 1 && (size_t)r <= k, "send_batch returned %zd (%s)", r, r < 0 ? strerror(errno) : "");
		sent += (size_t)r;
	}
	/* the sender now only waits: what blocking sends accepted must arrive
	 * without further calls on the sending handle */
	for (int ms = 0; !br.done; ms += 10) {
		CHECKF(ms < 15000, "messages accepted by blocking ipc_send_batch never arrived while the sender idled");
		t_sleep_ms(10);
	}
	CHECK(pthread_join(th, NULL) == 0);

	/* a batch receive delivers what is queued, then end-of-stream */
	struct iovec three[3] = {{(void *)"a", 1}, {(void *)"bb", 2}, {(void *)"", 0}};
	size_t done = 0;
	while (done < 3) {
		ssize_t r = ipc_send_batch(c, three + done, 3 - done, 0);
		CHECK(r >= 1);
		done += (size_t)r;
	}
	CHECK(ipc_close(c) == 0);
	size_t got = 0;
	static const char *want[3] = {"a", "bb", ""};
	while (got < 3) {
		for (int i = 0; i < 4; i++)
			rv[i].iov_len = 8;
		ssize_t r = ipc_recv_batch(s, rv, 4, 0);
		CHECK(r >= 1 && got + (size_t)r <= 3);
		for (ssize_t i = 0; i < r; i++, got++)
			CHECK(rv[i].iov_len == strlen(want[got]) && !memcmp(rb[i], want[got], rv[i].iov_len));
	}
	for (int i = 0; i < 4; i++)
		rv[i].iov_len = 8;
	CHECK_FAILS(ipc_recv_batch(s, rv, 4, 0), EPIPE);
	ipc_close(s);
}

/* ---- 5. End of a connection ------------------------------------------ */

/* ipc(7) End of a connection: after an orderly close every message sent before it is
 * delivered, then end-of-stream (EPIPE) repeatedly. */
CTEST(close_delivers_queued)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	for (int i = 0; i < 8; i++) { /* few enough for any backend's queue */
		char m[16];
		int n = snprintf(m, sizeof m, "m%d", i);
		CHECK(ipc_send(c, m, (size_t)n, 0) == n);
	}
	CHECK(ipc_close(c) == 0);
	for (int i = 0; i < 8; i++) {
		char m[16], want[16];
		int n = snprintf(want, sizeof want, "m%d", i);
		CHECKF(ipc_recv(s, m, sizeof m, 0) == n && !memcmp(m, want, (size_t)n), "message %d", i);
	}
	char b[8];
	for (int i = 0; i < 3; i++)
		CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), EPIPE);
	ipc_close(s);
}

static void send_many_then_close(ipc_conn *c, void *arg)
{
	struct flow *f = arg;
	f->c = c;
	flow_send(f);
	CHECKF(ipc_close(c) == 0, "close with data held: %s", strerror(errno));
	_exit(0);
}

/* ipc(7) End of a connection: a peer (another process) that sends far more than the
 * capacity and closes at once still delivers everything (linger). */
CTEST(close_delivers_queued_from_child)
{
	struct flow f = {.n = 2000, .minsz = 1000, .maxsz = 1100, .seq0 = 77};
	ipc_conn *s;
	pid_t pid = fork_peer(scheme, send_many_then_close, &f, &s);
	t_sleep_ms(200);
	f.c = s;
	flow_recv(&f);
	char b[8];
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), EPIPE);
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), EPIPE);
	t_wait_ok(pid);
	ipc_close(s);
}

static void send_64mib_block(ipc_conn *c, void *arg)
{
	int pfd = *(int *)arg;
	size_t len = IPC_DEFAULT_MAX_MSG;
	char *buf = malloc(len);
	CHECK(buf != NULL);
	memset(buf, 'K', len);
	CHECK(write(pfd, "s", 1) == 1);
	ipc_send(c, buf, len, 0); /* blocks: the parent does not read */
	_exit(9);
}

/* ipc(7) End of a connection: a peer SIGKILLed in the middle of a large message is
 * detected: ECONNRESET or EPIPE, never a truncated message, never a hang. */
CTEST(peer_killed_mid_message)
{
	int pfd[2];
	CHECK(pipe(pfd) == 0);
	ipc_conn *s;
	pid_t pid = fork_peer(scheme, send_64mib_block, &pfd[1], &s);
	close(pfd[1]);
	char ch;
	CHECK(read(pfd[0], &ch, 1) == 1);
	close(pfd[0]);
	t_sleep_ms(300); /* let part of the message flow and the sender block */
	CHECK(kill(pid, SIGKILL) == 0);
	int st = t_wait(pid);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	CHECK(ipc_conn_set_timeouts(s, 2000, 20000) == 0);
	int64_t t0 = t_now_ms();
	void *p = NULL;
	errno = 0;
	ssize_t r = ipc_recv_alloc(s, &p, 0);
	int e = errno;
	CHECKF(r < 0, "received a %zd-byte message from a peer killed mid-message", r);
	CHECKF(e == ECONNRESET || e == EPIPE, "expected ECONNRESET or EPIPE, got %s after %lld ms", strerror(e),
	       (long long)(t_now_ms() - t0));
	char b[8];
	errno = 0;
	CHECK(ipc_recv(s, b, sizeof b, IPC_DONTWAIT) < 0 && (errno == ECONNRESET || errno == EPIPE));
	CHECK(ipc_send(s, "x", 1, 0) < 0 || ipc_send(s, "x", 1, 0) < 0 || ipc_send(s, "x", 1, 0) < 0);
	ipc_close(s);
}

static void idle_peer(ipc_conn *c, void *arg)
{
	(void)c;
	int pfd = *(int *)arg;
	CHECK(write(pfd, "r", 1) == 1);
	for (;;)
		pause();
}

struct killer {
	pid_t pid;
	int ms;
};

static void *killer_fn(void *arg)
{
	struct killer *k = arg;
	t_sleep_ms(k->ms);
	kill(k->pid, SIGKILL);
	return NULL;
}

/* ipc(7) End of a connection: a call blocked on a peer that dies returns (ECONNRESET or
 * EPIPE); later sends fail with EPIPE within a bounded number of
 * attempts, and SIGPIPE never reaches the process. */
CTEST(peer_killed_while_blocked)
{
	int pfd[2];
	CHECK(pipe(pfd) == 0);
	ipc_conn *s;
	pid_t pid = fork_peer(scheme, idle_peer, &pfd[1], &s);
	close(pfd[1]);
	char ch;
	CHECK(read(pfd[0], &ch, 1) == 1);
	close(pfd[0]);
	CHECK(ipc_conn_set_timeouts(s, 5000, 20000) == 0);
	struct killer k = {.pid = pid, .ms = 300};
	pthread_t th;
	CHECK(pthread_create(&th, NULL, killer_fn, &k) == 0);
	char b[64];
	errno = 0;
	ssize_t r = ipc_recv(s, b, sizeof b, 0);
	int e = errno;
	CHECK(pthread_join(th, NULL) == 0);
	int st = t_wait(pid);
	CHECK(WIFSIGNALED(st));
	CHECKF(r < 0 && (e == ECONNRESET || e == EPIPE), "blocked recv on a killed peer: %zd, %s", r, strerror(e));
	int epipe = 0;
	for (int i = 0; i < 1000 && !epipe; i++) {
		errno = 0;
		r = ipc_send(s, b, sizeof b, 0);
		if (r < 0) {
			CHECKF(errno == EPIPE, "send to a dead peer: %s", strerror(errno));
			epipe = 1;
		}
	}
	CHECKF(epipe, "1000 sends to a dead peer succeeded");
	CHECK_FAILS(ipc_send(s, b, sizeof b, 0), EPIPE);
	ipc_close(s);
}

/* ipc(7) End of a connection: sending to a peer that closed fails with EPIPE within a
 * bounded number of attempts; no SIGPIPE (the runner leaves SIGPIPE at
 * its default action, which would kill this test). */
CTEST(send_to_closed_peer)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	use_end(s);
	CHECK(ipc_close(s) == 0);
	CHECK(ipc_conn_set_timeouts(c, 3000, 3000) == 0);
	char b[1024];
	memset(b, 1, sizeof b);
	int epipe = 0;
	for (int i = 0; i < 1000 && !epipe; i++) {
		if (ipc_send(c, b, sizeof b, 0) < 0) {
			CHECKF(errno == EPIPE, "send to a closed peer: %s", strerror(errno));
			epipe = 1;
		}
	}
	CHECKF(epipe, "1000 sends to a closed peer succeeded");
	CHECK_FAILS(ipc_send(c, b, 1, IPC_DONTWAIT), EPIPE);
	CHECK_FAILS(ipc_send(c, b, 0, 0), EPIPE);
	CHECK_FAILS(ipc_recv(c, b, sizeof b, 0), EPIPE);
	ipc_close(c);
}

/* ---- 6. Readiness ---------------------------------------------------- */

/* Wait level-triggered on the connection's descriptor until ready reports
 * want; fails if poll(2) times out (a message the library holds without
 * making the descriptor readable would hang an event loop). */
static void wait_ready(ipc_conn *c, int want)
{
	for (int i = 0; i < 100; i++) {
		short ev = 0;
		int r = ipc_conn_ready(c, want, &ev);
		CHECK(r >= 0);
		if (r & want)
			return;
		CHECKF(ev != 0, "ipc_conn_ready returned 0 without poll events");
		struct pollfd p = {.fd = ipc_conn_fd(c), .events = ev};
		int pr = poll(&p, 1, 3000);
		CHECKF(pr > 0, "poll on ipc_conn_fd timed out while the library should be ready");
	}
	CHECKF(0, "never ready");
}

/* ipc(7) Readiness: ipc_conn_fd works with poll(2) using the events that
 * ipc_conn_ready asks for; a fresh connection is writable. */
CTEST(poll_conn_fd)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	int fd = ipc_conn_fd(s);
	CHECK(fd >= 0);
	short ev = 0;
	CHECK(ipc_conn_ready(s, IPC_POLLIN, &ev) == 0);
	CHECK(ev != 0);
	CHECK(ipc_conn_ready(c, IPC_POLLOUT, &ev) & IPC_POLLOUT);
	send_str(c, "ping");
	wait_ready(s, IPC_POLLIN);
	char b[8];
	CHECK(ipc_recv(s, b, sizeof b, IPC_DONTWAIT) == 4);
	CHECK(ipc_conn_ready(s, IPC_POLLIN, &ev) == 0);
	CHECK_FAILS(ipc_conn_ready(s, 0x100, &ev), EINVAL);
	CHECK_FAILS(ipc_conn_ready(NULL, IPC_POLLIN, &ev), EINVAL);
	ipc_close(s);
	ipc_close(c);
}

/* ipc(7) Readiness: messages the library already holds keep the handle ready:
 * after receiving one of several back-to-back messages, a level-triggered
 * wait still wakes for the rest. */
CTEST(poll_buffered_messages)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	send_str(c, "a");
	send_str(c, "b");
	wait_ready(s, IPC_POLLIN);
	char b[8];
	CHECK(ipc_recv(s, b, sizeof b, IPC_DONTWAIT) == 1 && b[0] == 'a');
	wait_ready(s, IPC_POLLIN);
	CHECK(ipc_recv(s, b, sizeof b, IPC_DONTWAIT) == 1 && b[0] == 'b');
	/* small messages in bursts of 5, each received only after a
	 * level-triggered wait */
	for (int round = 0; round < 40; round++) {
		for (int i = round * 5; i < round * 5 + 5; i++) {
			char m[8];
			int n = snprintf(m, sizeof m, "%d", i);
			CHECK(ipc_send(c, m, (size_t)n, 0) == n);
		}
		for (int i = round * 5; i < round * 5 + 5; i++) {
			char m[8], want[8];
			int n = snprintf(want, sizeof want, "%d", i);
			wait_ready(s, IPC_POLLIN);
			CHECK(ipc_recv(s, m, sizeof m, IPC_DONTWAIT) == n && !memcmp(m, want, (size_t)n));
		}
	}
	/* the same through ipc_poll with a long timeout: it must return at once */
	send_str(c, "x");
	send_str(c, "y");
	struct ipc_pollitem it = {.conn = s, .events = IPC_POLLIN};
	CHECK(ipc_poll(&it, 1, 5000) == 1);
	CHECK(ipc_recv(s, b, sizeof b, IPC_DONTWAIT) == 1);
	int64_t t0 = t_now_ms();
	CHECK(ipc_poll(&it, 1, 5000) == 1 && (it.revents & IPC_POLLIN));
	CHECK(t_now_ms() - t0 < 2000);
	CHECK(ipc_recv(s, b, sizeof b, IPC_DONTWAIT) == 1 && b[0] == 'y');
	ipc_close(s);
	ipc_close(c);
}

struct drainer {
	ipc_conn *c;
	size_t n;
	size_t sz;
};

static void *drainer_fn(void *arg)
{
	struct drainer *d = arg;
	char *buf = malloc(d->sz);
	CHECK(buf != NULL);
	for (size_t i = 0; i < d->n; i++)
		CHECKF(ipc_recv(d->c, buf, d->sz, 0) >= 0, "drain %zu: %s", i, strerror(errno));
	free(buf);
	return NULL;
}

/* ipc(7) Readiness: writability: after the sender filled the capacity, a wait
 * for IPC_POLLOUT wakes once the receiver drains, and a small
 * non-blocking send then succeeds. */
CTEST(poll_writable_after_drain)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	uint64_t seq = 0;
	size_t n = fill_until_eagain(c, 4096, &seq, 100000);
	struct drainer d = {.c = s, .n = n + 1, .sz = 4096};
	pthread_t th;
	CHECK(pthread_create(&th, NULL, drainer_fn, &d) == 0);
	struct ipc_pollitem it = {.conn = c, .events = IPC_POLLOUT};
	int r = ipc_poll(&it, 1, 10000);
	CHECKF(r == 1 && (it.revents & IPC_POLLOUT), "POLLOUT never came: %d revents 0x%x", r, it.revents);
	CHECK(ipc_send(c, "z", 1, IPC_DONTWAIT) == 1);
	CHECK(ipc_flush(c, 0) == 0);
	CHECK(pthread_join(th, NULL) == 0);
	ipc_close(s);
	ipc_close(c);
}

/* ipc(7) Readiness: ipc_poll over a listener and several connections reports
 * exactly the ready ones; it times out with 0. */
CTEST(ipc_poll_many)
{
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen(scheme, NULL, bound);
	enum { N = 3 };
	ipc_conn *s[N], *c[N];
	for (int i = 0; i < N; i++) {
		c[i] = ipc_connect(bound, NULL);
		CHECK(c[i] != NULL);
		s[i] = t_accept(l);
	}
	struct ipc_pollitem it[N + 1];
	memset(it, 0, sizeof it);
	for (int i = 0; i < N; i++) {
		it[i].conn = s[i];
		it[i].events = IPC_POLLIN;
	}
	it[N].listener = l;
	it[N].events = IPC_POLLIN;
	CHECK(ipc_poll(it, N + 1, 0) == 0);
	int64_t t0 = t_now_ms();
	CHECK(ipc_poll(it, N + 1, 200) == 0);
	int64_t dt = t_now_ms() - t0;
	CHECKF(dt >= 190 && dt < 2200, "ipc_poll(200 ms) took %lld ms", (long long)dt);

	send_str(c[1], "one");
	CHECK(ipc_poll(it, N + 1, 10000) == 1);
	CHECK(it[1].revents & IPC_POLLIN);
	CHECK(!(it[0].revents & IPC_POLLIN) && !(it[2].revents & IPC_POLLIN) && !it[N].revents);
	char b[8];
	CHECK(ipc_recv(s[1], b, sizeof b, IPC_DONTWAIT) == 3);

	ipc_conn *extra = ipc_connect(bound, NULL);
	CHECK(extra != NULL);
	CHECK(ipc_poll(it, N + 1, 10000) >= 1);
	CHECK(it[N].revents & IPC_POLLIN);
	ipc_conn *sx = ipc_accept(l, IPC_DONTWAIT);
	CHECK(sx != NULL);

	/* the listener is ready only while a client waits */
	short ev = 0;
	CHECK(ipc_listener_ready(l, IPC_POLLIN, &ev) == 0 && ev != 0);
	/* POLLIN on two at once, POLLOUT on a connection */
	send_str(c[0], "a");
	send_str(c[2], "c");
	it[1].events = IPC_POLLIN | IPC_POLLOUT;
	for (int tries = 0; tries < 50; tries++) {
		CHECK(ipc_poll(it, N + 1, 10000) >= 1);
		if ((it[0].revents & IPC_POLLIN) && (it[2].revents & IPC_POLLIN))
			break;
		t_sleep_ms(10);
	}
	CHECK((it[0].revents & IPC_POLLIN) && (it[2].revents & IPC_POLLIN));
	CHECK(it[1].revents == IPC_POLLOUT);
	/* bad items */
	struct ipc_pollitem bad = {.conn = s[0], .listener = l, .events = IPC_POLLIN};
	CHECK_FAILS(ipc_poll(&bad, 1, 0), EINVAL);
	struct ipc_pollitem bad2 = {.listener = l, .events = IPC_POLLOUT};
	CHECK_FAILS(ipc_poll(&bad2, 1, 0), EINVAL);
	for (int i = 0; i < N; i++) {
		ipc_close(s[i]);
		ipc_close(c[i]);
	}
	ipc_close(extra);
	ipc_close(sx);
	ipc_listener_close(l);
}

/* ipc(7) Readiness: a peer's close makes the handle ready (IPC_POLLIN or HUP),
 * and the next receive reports end-of-stream without waiting. */
CTEST(poll_reports_peer_close)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	use_end(c);
	CHECK(ipc_close(c) == 0);
	struct ipc_pollitem it = {.conn = s, .events = IPC_POLLIN};
	CHECK(ipc_poll(&it, 1, 10000) == 1);
	CHECK(it.revents & (IPC_POLLIN | IPC_POLLHUP | IPC_POLLERR));
	char b[8];
	CHECK_FAILS(ipc_recv(s, b, sizeof b, IPC_DONTWAIT), EPIPE);
	ipc_close(s);
}

/* ---- 7. Threads, descriptors ----------------------------------------- */

/* ipc(7) Threads/Fork: one thread sends while another receives on the same
 * connection, both directions at once (100,000 messages each way). */
CTEST(threads_duplex_100k)
{
	TEST_TIMEOUT(120);
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	struct flow cs = {.c = c, .n = 100000, .minsz = 8, .maxsz = 40, .seq0 = 1};
	struct flow sr = cs;
	sr.c = s;
	struct flow ss = {.c = s, .n = 100000, .minsz = 8, .maxsz = 56, .seq0 = 500000};
	struct flow cr = ss;
	cr.c = c;
	pthread_t t1, t2, t3;
	CHECK(pthread_create(&t1, NULL, flow_send, &cs) == 0);
	CHECK(pthread_create(&t2, NULL, flow_send, &ss) == 0);
	CHECK(pthread_create(&t3, NULL, flow_recv, &cr) == 0);
	flow_recv(&sr);
	CHECK(pthread_join(t1, NULL) == 0);
	CHECK(pthread_join(t2, NULL) == 0);
	CHECK(pthread_join(t3, NULL) == 0);
	ipc_close(s);
	ipc_close(c);
}

/* ipc(7) Threads/Fork: every descriptor the library opens is close-on-exec. */
CTEST(descriptors_cloexec)
{
	unsigned char before[T_MAXFD];
	t_fd_snapshot(before);
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen(scheme, NULL, bound);
	int lfd = ipc_listener_fd(l);
	CHECK(lfd >= 0 && (fcntl(lfd, F_GETFD) & FD_CLOEXEC));
	ipc_conn *c = ipc_connect(bound, NULL);
	CHECK(c != NULL);
	ipc_conn *s = t_accept(l);
	send_str(c, "x");
	recv_expect(s, "x", 1);
	send_str(s, "y");
	recv_expect(c, "y", 1);
	CHECK(fcntl(ipc_conn_fd(c), F_GETFD) & FD_CLOEXEC);
	CHECK(fcntl(ipc_conn_fd(s), F_GETFD) & FD_CLOEXEC);
	int bad = t_fd_new_without_cloexec(before);
	CHECKF(bad < 0, "descriptor %d is not close-on-exec", bad);
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
}

/* ipc(7) Threads/Fork: two independent users in one process (two listeners, two
 * connections, interleaved traffic; closing one leaves the other alone). */
CTEST(two_independent_users)
{
	char ba[IPC_ADDR_MAX + 1], bb[IPC_ADDR_MAX + 1];
	ipc_listener *la = t_listen(scheme, NULL, ba);
	ipc_listener *lb = t_listen(scheme, NULL, bb);
	CHECK(strcmp(ba, bb) != 0);
	ipc_conn *ca = ipc_connect(ba, NULL), *cb = ipc_connect(bb, NULL);
	CHECK(ca && cb);
	ipc_conn *sa = t_accept(la), *sb = t_accept(lb);
	for (int i = 0; i < 500; i++) {
		char m[16];
		int n = snprintf(m, sizeof m, "A%d", i);
		CHECK(ipc_send(ca, m, (size_t)n, 0) == n);
		n = snprintf(m, sizeof m, "B%d", i);
		CHECK(ipc_send(cb, m, (size_t)n, 0) == n);
		if (i % 7 == 0) {
			CHECK_FAILS(ipc_accept(la, IPC_DONTWAIT), EAGAIN);
			CHECK_FAILS(ipc_accept(lb, IPC_DONTWAIT), EAGAIN);
		}
		char r[16], want[16];
		n = snprintf(want, sizeof want, "B%d", i);
		CHECK(ipc_recv(sb, r, sizeof r, 0) == n && !memcmp(r, want, (size_t)n));
		n = snprintf(want, sizeof want, "A%d", i);
		CHECK(ipc_recv(sa, r, sizeof r, 0) == n && !memcmp(r, want, (size_t)n));
	}
	CHECK(ipc_close(ca) == 0);
	CHECK(ipc_close(sa) == 0);
	CHECK(ipc_listener_close(la) == 0);
	send_str(cb, "still");
	recv_expect(sb, "still", 5);
	ipc_conn *cb2 = ipc_connect(bb, NULL);
	CHECK(cb2 != NULL);
	ipc_conn *sb2 = t_accept(lb);
	send_str(sb2, "new");
	recv_expect(cb2, "new", 3);
	ipc_close(cb);
	ipc_close(sb);
	ipc_close(cb2);
	ipc_close(sb2);
	ipc_listener_close(lb);
}

/* ---- 8. Resources and security --------------------------------------- */

/* ipc(7) Resources and security: closing connections and listeners releases every
 * descriptor and object: the fd count returns to its baseline (and
 * nothing of ours is left in /dev/shm or /dev/mqueue). */
CTEST(resources_released)
{
	int base = t_fd_count();
	int shm0 = t_token_entries("/dev/shm"), mq0 = t_token_entries("/dev/mqueue");
	CHECK(shm0 == 0 && mq0 == 0);
	for (int i = 0; i < 40; i++) {
		char bound[IPC_ADDR_MAX + 1];
		ipc_listener *l = t_listen(scheme, NULL, bound);
		ipc_conn *c = ipc_connect(bound, NULL);
		CHECK(c != NULL);
		ipc_conn *c2 = ipc_connect(bound, NULL); /* never accepted */
		CHECK(c2 != NULL);
		ipc_conn *s = t_accept(l);
		send_str(c, "x");
		recv_expect(s, "x", 1);
		CHECK_FAILS(ipc_listen(bound, NULL), EADDRINUSE);
		switch (i % 3) {
		case 0:
			ipc_listener_close(l);
			ipc_close(c);
			ipc_close(s);
			break;
		case 1:
			ipc_close(s);
			ipc_close(c);
			ipc_listener_close(l);
			break;
		default:
			ipc_close(c);
			ipc_listener_close(l);
			ipc_close(s);
			break;
		}
		ipc_close(c2);
		if (i % 10 == 0)
			CHECK(ipc_connect(bound, NULL) == NULL);
	}
	int now = t_fd_count();
	CHECKF(now == base, "fd count %d, baseline %d", now, base);
	CHECK(t_token_entries("/dev/shm") == 0);
	CHECK(t_token_entries("/dev/mqueue") == 0);
}

static void hold_and_wait(const char *addr, int pfd, int with_conn)
{
	ipc_listener *l = ipc_listen(addr, NULL);
	CHECK(l != NULL);
	char bound[IPC_ADDR_MAX + 1];
	CHECK(ipc_listener_addr(l, bound, sizeof bound) > 0);
	if (with_conn) {
		ipc_conn *c = ipc_connect(bound, NULL);
		CHECK(c != NULL);
		ipc_conn *s = t_accept(l);
		send_str(c, "held");
		send_str(s, "held");
	}
	CHECK(write(pfd, bound, sizeof bound) == sizeof bound);
	for (;;)
		pause();
}

/* ipc(7) Resources and security: after SIGKILL of a listener its address can be listened on
 * again (a stale unix socket file is reclaimed), and a process killed
 * with open connections leaves nothing in /dev/shm or /dev/mqueue. */
CTEST(killed_process_leaves_nothing)
{
	for (int with_conn = 0; with_conn < 2; with_conn++) {
		const char *a = t_addr(scheme);
		int pfd[2];
		CHECK(pipe(pfd) == 0);
		fflush(NULL);
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			close(pfd[0]);
			hold_and_wait(a, pfd[1], with_conn);
		}
		close(pfd[1]);
		char bound[IPC_ADDR_MAX + 1];
		CHECK(read(pfd[0], bound, sizeof bound) == sizeof bound);
		close(pfd[0]);
		CHECK(kill(pid, SIGKILL) == 0);
		t_wait(pid);
		CHECK(t_token_entries("/dev/shm") == 0);
		CHECK(t_token_entries("/dev/mqueue") == 0);
		if (with_conn)
			continue;
		relisten_works(bound, "after its listener was killed");
	}
}

/* ipc(7) Resources and security: objects created on the file system (unix socket file,
 * /dev/shm, /dev/mqueue) have mode 0600 by default and opt.mode when
 * given (whatever the umask). */
CTEST(created_objects_mode)
{
	static const unsigned modes[] = {0600, 0660, 0604};
	for (int i = 0; i < 3; i++) {
		struct ipc_options o = defopts();
		if (i)
			o.mode = modes[i];
		const char *a = t_addr(scheme);
		ipc_listener *l = ipc_listen(a, i ? &o : NULL);
		CHECK(l != NULL);
		int checked = 0;
		if (!strncmp(a, "unix:", 5) && a[5] != '@') {
			struct stat st;
			CHECK(stat(a + 5, &st) == 0);
			CHECKF((st.st_mode & 0777) == modes[i], "%s has mode %o, expected %o", a + 5,
			       (unsigned)(st.st_mode & 0777), modes[i]);
			checked++;
		}
		static const char *dirs[] = {"/dev/shm", "/dev/mqueue"};
		for (int d = 0; d < 2; d++) {
			char cmd[512];
			snprintf(cmd, sizeof cmd, "for f in %s/*%s*; do [ -e \"$f\" ] || continue; "
			         "m=$(stat -c %%a \"$f\"); [ \"$m\" = %o ] || { echo \"$f mode $m\"; exit 1; }; done",
			         dirs[d], t_token(), modes[i]);
			CHECKF(t_sh("%s", cmd) == 0, "objects in %s with the wrong mode", dirs[d]);
		}
		(void)checked;
		ipc_listener_close(l);
	}
	struct ipc_options o = defopts();
	o.mode = 01777;
	CHECK_FAILS(ipc_listen(t_addr(scheme), &o), EINVAL);
}

static void report_pid(ipc_conn *c, void *arg)
{
	(void)arg;
	char b[8];
	ipc_recv(c, b, sizeof b, 0); /* until the parent closes */
}

/* ipc(7) Resources and security: peer credentials come from the kernel on local transports;
 * tcp documents EOPNOTSUPP. */
CTEST(peer_credentials)
{
	ipc_conn *s, *c;
	t_pair(scheme, NULL, &s, &c);
	struct ipc_cred cr;
	CHECK_FAILS(ipc_conn_peer_cred(s, NULL), EINVAL);
	if (t_is_inet(scheme)) {
		CHECK_FAILS(ipc_conn_peer_cred(s, &cr), EOPNOTSUPP);
		CHECK_FAILS(ipc_conn_peer_cred(c, &cr), EOPNOTSUPP);
		ipc_close(s);
		ipc_close(c);
		return;
	}
	for (int i = 0; i < 2; i++) {
		memset(&cr, 0xff, sizeof cr);
		CHECK(ipc_conn_peer_cred(i ? c : s, &cr) == 0);
		CHECKF(cr.pid == getpid() && cr.uid == getuid() && cr.gid == getgid(), "cred pid %d uid %d gid %d",
		       (int)cr.pid, (int)cr.uid, (int)cr.gid);
	}
	ipc_close(s);
	ipc_close(c);
	/* a peer in another process */
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen(scheme, NULL, bound);
	pid_t pid = fork_client(bound, NULL, report_pid, NULL);
	s = t_accept(l);
	CHECK(ipc_conn_peer_cred(s, &cr) == 0);
	CHECKF(cr.pid == pid && cr.uid == getuid() && cr.gid == getgid(), "cred pid %d (child %d)", (int)cr.pid,
	       (int)pid);
	ipc_close(s);
	t_wait_ok(pid);
	ipc_listener_close(l);
}
