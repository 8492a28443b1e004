/*
 * zmq-reqrep - issue 11's request/response server workload on ZeroMQ, the
 * same load and JSON line as tools/reqrep-bench (see tools/reqrep.h).
 *
 *   zmq-reqrep ipc|tcp [--clients N] [--count N] [--max-size BYTES]
 *                      [--timeout SECONDS]
 *
 * What a ZeroMQ user writes for a single-threaded server that answers one
 * request at a time: a REP socket (the zguide's "hello world" server) bound
 * to ipc:///tmp/... or tcp://127.0.0.1:*, and one REQ socket per client
 * process.  REP fair-queues the requests of every client and routes each
 * reply back; libzmq's I/O thread in each process does the socket work.
 * The server answers in the received zmq_msg_t (no extra copy); clients use
 * zmq_send/zmq_recv on their own buffers.  Options: ZMQ_LINGER 1 s, send
 * and receive timeouts 60 s, everything else the library's default.
 * Built only by `make bench` (tests/bench.mk) when libzmq is installed.
 */
#define _GNU_SOURCE
#include "../tools/reqrep.h"

#include <zmq.h>

enum { IO_TIMEOUT_MS = 60000, LINGER_MS = 1000 };

static int resolve(const char *arg, struct rr_cfg *cfg)
{
	return rr_url_resolve(arg, cfg, "zmq", "tcp://127.0.0.1:*");
}

static void fail(const char *who, const char *what)
{
	fprintf(stderr, "zmq-reqrep (%s): %s: %s\n", who, what, zmq_strerror(zmq_errno()));
}

/* A socket of type with the options above; NULL on failure. */
static void *open_socket(void *ctx, int type)
{
	int linger = LINGER_MS, tmo = IO_TIMEOUT_MS;
	void *s = zmq_socket(ctx, type);
	if (!s || zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) || zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof tmo) ||
	    zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof tmo))
		return NULL;
	return s;
}

static int serve(const struct rr_cfg *cfg, int ready_fd, char note[RR_NOTE_MAX])
{
	char bound[RR_ADDR_MAX];
	size_t blen = sizeof bound;
	void *ctx = zmq_ctx_new();
	void *s = ctx ? open_socket(ctx, ZMQ_REP) : NULL;
	if (!s || zmq_bind(s, cfg->addr) || zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, bound, &blen) ||
	    rr_ready(ready_fd, bound) < 0) {
		fail("server", cfg->addr);
		return -1;
	}
	long total = cfg->clients * (cfg->count + 1);
	for (long i = 0; i < total; i++) {
		zmq_msg_t m;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, s, 0) < 0) {
			fail("server", "zmq_msg_recv");
			return -1;
		}
		rr_answer(zmq_msg_data(&m), zmq_msg_size(&m));
		if (zmq_msg_send(&m, s, 0) < 0) {
			fail("server", "zmq_msg_send");
			return -1;
		}
	}
	zmq_close(s);
	zmq_ctx_term(ctx);
	return 0;
}

struct client {
	void *ctx, *s;
};

static void *connect_to(const char *addr, const struct rr_cfg *cfg)
{
	static struct client c; /* one per client process */
	c.ctx = zmq_ctx_new();
	c.s = c.ctx ? open_socket(c.ctx, ZMQ_REQ) : NULL;
	if (!c.s || zmq_connect(c.s, addr)) {
		fail("client", addr);
		return NULL;
	}
	return &c;
}

static long roundtrip(void *cp, const void *req, size_t n, void *rep, size_t cap)
{
	struct client *c = cp;
	int r;
	if (zmq_send(c->s, req, n, 0) < 0 || (r = zmq_recv(c->s, rep, cap, 0)) < 0) {
		fail("client", "round trip");
		return -1;
	}
	return r; /* may exceed cap: the caller sees a bad length */
}

static void close_conn(void *cp)
{
	struct client *c = cp;
	zmq_close(c->s);
	zmq_ctx_term(c->ctx);
}

int main(int argc, char **argv)
{
	static const struct rr_impl zmq = {
		.name = "zmq",
		.resolve = resolve,
		.serve = serve,
		.connect = connect_to,
		.roundtrip = roundtrip,
		.close = close_conn,
		.cleanup = rr_url_cleanup,
	};
	return rr_main(&zmq, argc, argv);
}
