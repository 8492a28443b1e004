/*
 * reqrep-bench - the 50-client request/response server workload of issue 11
 * on libipc, any address; the same load as bench/zmq-reqrep.c and
 * bench/nng-reqrep.c (tools/reqrep.h describes it and the JSON line).
 *
 *   reqrep-bench ADDR|SCHEME [--clients N] [--count N] [--max-size BYTES]
 *                            [--timeout SECONDS]
 *
 * ADDR is any libipc address (unix:/path, unix:@name, tcp:host:port, shm:name,
 * mq:/name); a bare SCHEME (unix, tcp, shm, mq) picks a fresh one
 * (unix:@name, tcp:127.0.0.1:0, ...).
 *
 * The server is one thread on ipc_poll(): POLLIN on the listener (until
 * every client came) and on each connection without a reply in hand;
 * POLLOUT on a connection whose reply is held.  A request is read with
 * ipc_recv(IPC_DONTWAIT), answered in place and sent with IPC_DONTWAIT; on
 * EAGAIN the reply is held and sent again when the connection reports
 * IPC_POLLOUT.  A library where a non-blocking send above the capacity
 * fails with EMSGSIZE (0.1) gets a blocking send instead.  The JSON line
 * counts both ("send_waits", "blocking_sends").  The clients use blocking
 * calls with 60 s timeouts.
 */
#define _GNU_SOURCE
#include "reqrep.h"

#include "ipc.h"

enum { IO_TIMEOUT_MS = 60000 };

static int resolve(const char *arg, struct rr_cfg *cfg)
{
	static const char *const schemes[] = {"unix", "tcp", "shm", "mq"};
	size_t k = strcspn(arg, ":");
	uint64_t tag = rr_now_ns() ^ ((uint64_t)getpid() << 32);
	if (arg[k] == ':') {
		snprintf(cfg->transport, sizeof cfg->transport, "%.*s", (int)k, arg);
		return snprintf(cfg->addr, sizeof cfg->addr, "%s", arg) < (int)sizeof cfg->addr ? 0 : -1;
	}
	for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
		if (!strcmp(arg, schemes[i])) {
			snprintf(cfg->transport, sizeof cfg->transport, "%s", arg);
			if (!strcmp(arg, "tcp"))
				snprintf(cfg->addr, sizeof cfg->addr, "tcp:127.0.0.1:0");
			else
				snprintf(cfg->addr, sizeof cfg->addr, "%s:%sreqrep-%d-%08x", arg,
					 !strcmp(arg, "unix") ? "@" : !strcmp(arg, "mq") ? "/" : "", (int)getpid(),
					 (unsigned)(tag & 0xffffffffu));
			return 0;
		}
	return -1;
}

static void fail(const char *who, const char *what)
{
	fprintf(stderr, "reqrep-bench (%s): %s: %s\n", who, what, strerror(errno));
}

/* ---- server ------------------------------------------------------------ */

struct peer {
	ipc_conn *c;
	unsigned char *held; /* a reply ipc_send has not accepted yet, or NULL */
	size_t len;
};

struct server {
	struct peer *peers;
	long n, accepted, done;
	unsigned char *buf;
	size_t cap;
	long send_waits, blocking_sends;
};

enum reply { REPLY_SENT, REPLY_HELD, REPLY_FAILED };

/* Offer p's reply (buf, len) to the library without waiting; hold a copy
 * when it is not accepted now. */
static enum reply send_reply(struct server *s, struct peer *p, const unsigned char *buf, size_t len)
{
	if (ipc_send(p->c, buf, len, IPC_DONTWAIT) >= 0)
		return REPLY_SENT;
	if (errno == EMSGSIZE) { /* 0.1: too big for a non-blocking send */
		s->blocking_sends++;
		return ipc_send(p->c, buf, len, 0) >= 0 ? REPLY_SENT : REPLY_FAILED;
	}
	if (errno != EAGAIN)
		return REPLY_FAILED;
	if (!p->held) {
		if (!(p->held = malloc(len ? len : 1)))
			return REPLY_FAILED;
		memcpy(p->held, buf, len);
		p->len = len;
		s->send_waits++;
	}
	return REPLY_HELD;
}

enum step { STEP_KEEP, STEP_DONE, STEP_FAILED };

static enum step serve_peer(struct server *s, struct peer *p)
{
	if (p->held) {
		enum reply r = send_reply(s, p, p->held, p->len);
		if (r == REPLY_SENT) {
			free(p->held);
			p->held = NULL;
		}
		return r == REPLY_FAILED ? STEP_FAILED : STEP_KEEP;
	}
	ssize_t n = ipc_recv(p->c, s->buf, s->cap, IPC_DONTWAIT);
	if (n < 0)
		return errno == EAGAIN ? STEP_KEEP : errno == EPIPE ? STEP_DONE : STEP_FAILED;
	rr_answer(s->buf, (size_t)n);
	return send_reply(s, p, s->buf, (size_t)n) == REPLY_FAILED ? STEP_FAILED : STEP_KEEP;
}

static int serve(const struct rr_cfg *cfg, int ready_fd, char note[RR_NOTE_MAX])
{
	char bound[IPC_ADDR_MAX + 1];
	struct ipc_options o;
	ipc_options_init(&o);
	if (cfg->max_size > o.max_msg_size)
		o.max_msg_size = cfg->max_size;
	ipc_listener *l = ipc_listen(cfg->addr, &o);
	if (!l || ipc_listener_addr(l, bound, sizeof bound) < 0) {
		fail("server", cfg->addr);
		return -1;
	}
	struct server s = {.cap = cfg->max_size};
	s.peers = calloc((size_t)cfg->clients, sizeof *s.peers);
	s.buf = malloc(s.cap ? s.cap : 1);
	struct ipc_pollitem *it = calloc((size_t)cfg->clients + 1, sizeof *it);
	if (!s.peers || !s.buf || !it || rr_ready(ready_fd, bound) < 0)
		return -1;
	while (s.done < cfg->clients) {
		size_t n = 0;
		if (s.accepted < cfg->clients)
			it[n++] = (struct ipc_pollitem){.listener = l, .events = IPC_POLLIN};
		size_t first = n;
		for (long i = 0; i < s.n; i++)
			it[n++] = (struct ipc_pollitem){.conn = s.peers[i].c,
							.events = s.peers[i].held ? IPC_POLLOUT : IPC_POLLIN};
		int r = ipc_poll(it, n, IO_TIMEOUT_MS);
		if (r <= 0) {
			if (r == 0)
				errno = ETIMEDOUT;
			fail("server", "ipc_poll");
			return -1;
		}
		/* from the back, so that dropping a peer (swap with the last)
		 * never skips one */
		for (size_t j = n; j-- > first;) {
			if (!it[j].revents)
				continue;
			long i = (long)(j - first);
			enum step st = serve_peer(&s, &s.peers[i]);
			if (st == STEP_FAILED) {
				fail("server", "connection");
				return -1;
			}
			if (st == STEP_DONE) {
				ipc_close(s.peers[i].c);
				free(s.peers[i].held);
				s.peers[i] = s.peers[--s.n];
				s.done++;
			}
		}
		if (first && it[0].revents) {
			ipc_conn *c;
			while (s.accepted < cfg->clients && (c = ipc_accept(l, IPC_DONTWAIT)) != NULL) {
				s.peers[s.n++] = (struct peer){.c = c};
				s.accepted++;
			}
			if (s.accepted < cfg->clients && errno != EAGAIN) {
				fail("server", "ipc_accept");
				return -1;
			}
		}
	}
	ipc_listener_close(l);
	snprintf(note, RR_NOTE_MAX, ",\"send_waits\":%ld,\"blocking_sends\":%ld", s.send_waits, s.blocking_sends);
	return 0;
}

/* ---- client ------------------------------------------------------------ */

static void *connect_to(const char *addr, const struct rr_cfg *cfg)
{
	struct ipc_options o;
	ipc_options_init(&o);
	o.send_timeout_ms = IO_TIMEOUT_MS;
	o.recv_timeout_ms = IO_TIMEOUT_MS;
	if (cfg->max_size > o.max_msg_size)
		o.max_msg_size = cfg->max_size;
	ipc_conn *c = ipc_connect(addr, &o);
	if (!c)
		fail("client", addr);
	return c;
}

static long roundtrip(void *c, const void *req, size_t n, void *rep, size_t cap)
{
	ssize_t r;
	if (ipc_send(c, req, n, 0) < 0 || (r = ipc_recv(c, rep, cap, 0)) < 0) {
		fail("client", "round trip");
		return -1;
	}
	return (long)r;
}

static void close_conn(void *c)
{
	ipc_close(c);
}

int main(int argc, char **argv)
{
	static const struct rr_impl libipc = {
		.name = "libipc",
		.resolve = resolve,
		.serve = serve,
		.connect = connect_to,
		.roundtrip = roundtrip,
		.close = close_conn,
	};
	return rr_main(&libipc, argc, argv);
}
