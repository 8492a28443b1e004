/*
 * nng-reqrep - issue 11's request/response server workload on nng, the same
 * load and JSON line as tools/reqrep-bench (see tools/reqrep.h).
 *
 *   nng-reqrep ipc|tcp [--clients N] [--count N] [--max-size BYTES]
 *                      [--timeout SECONDS]
 *
 * What an nng user writes for a single-threaded server answering one
 * request at a time: a rep0 socket (nng's reqrep demo) listening on
 * ipc:///tmp/... or tcp://127.0.0.1:0, served with nng_recvmsg and
 * nng_sendmsg on the socket (contexts and aio are for servers that keep
 * several requests in flight, which one thread answering in turn does
 * not); one req0 socket per client process, using nng_send/nng_recv on its
 * own buffers.  nng's worker threads in each process do the socket work.
 * The server answers in the received nng_msg (no extra copy).  Options:
 * NNG_OPT_RECVMAXSZ 0 (no limit), send and receive timeouts 60 s,
 * everything else the library's default.  rep0 cannot say when a reply
 * has left, so the server closes only once every client has hung up
 * (NNG_PIPE_EV_REM_POST).  Built only by `make bench` (tests/bench.mk)
 * when libnng is installed.
 */
#define _GNU_SOURCE
#include "../tools/reqrep.h"

#include <stdatomic.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

enum { IO_TIMEOUT_MS = 60000 };

static int resolve(const char *arg, struct rr_cfg *cfg)
{
	return rr_url_resolve(arg, cfg, "nng", "tcp://127.0.0.1:0");
}

static void fail(const char *who, const char *what, int rv)
{
	fprintf(stderr, "nng-reqrep (%s): %s: %s\n", who, what, nng_strerror(rv));
}

/* The socket options above. */
static int set_options(nng_socket s)
{
	int rv;
	if ((rv = nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, 0)) ||
	    (rv = nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, IO_TIMEOUT_MS)) ||
	    (rv = nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, IO_TIMEOUT_MS)))
		return rv;
	return 0;
}

static atomic_long hung_up; /* clients gone (server) */

static void on_pipe_removed(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	(void)p, (void)ev, (void)arg;
	atomic_fetch_add(&hung_up, 1);
}

static int serve(const struct rr_cfg *cfg, int ready_fd, char note[RR_NOTE_MAX])
{
	nng_socket s;
	nng_listener l;
	char bound[RR_ADDR_MAX];
	int rv, port;
	if ((rv = nng_rep0_open(&s)) || (rv = set_options(s)) ||
	    (rv = nng_pipe_notify(s, NNG_PIPE_EV_REM_POST, on_pipe_removed, NULL)) ||
	    (rv = nng_listen(s, cfg->addr, &l, 0))) {
		fail("server", cfg->addr, rv);
		return -1;
	}
	if (!strncmp(cfg->addr, "tcp://", 6)) {
		if ((rv = nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port))) {
			fail("server", "bound port", rv);
			return -1;
		}
		snprintf(bound, sizeof bound, "tcp://127.0.0.1:%d", port);
	} else {
		snprintf(bound, sizeof bound, "%s", cfg->addr);
	}
	if (rr_ready(ready_fd, bound) < 0)
		return -1;
	long total = cfg->clients * (cfg->count + 1);
	for (long i = 0; i < total; i++) {
		nng_msg *m;
		if ((rv = nng_recvmsg(s, &m, 0))) {
			fail("server", "nng_recvmsg", rv);
			return -1;
		}
		rr_answer(nng_msg_body(m), nng_msg_len(m));
		if ((rv = nng_sendmsg(s, m, 0))) {
			nng_msg_free(m);
			fail("server", "nng_sendmsg", rv);
			return -1;
		}
	}
	for (int ms = 0; atomic_load(&hung_up) < cfg->clients; ms++) {
		if (ms >= IO_TIMEOUT_MS) {
			fail("server", "waiting for the clients to hang up", NNG_ETIMEDOUT);
			return -1;
		}
		poll(NULL, 0, 1);
	}
	nng_close(s);
	return 0;
}

static void *connect_to(const char *addr, const struct rr_cfg *cfg)
{
	static nng_socket s; /* one per client process */
	int rv;
	if ((rv = nng_req0_open(&s)) || (rv = set_options(s)) || (rv = nng_dial(s, addr, NULL, 0))) {
		fail("client", addr, rv);
		return NULL;
	}
	return &s;
}

static long roundtrip(void *sp, const void *req, size_t n, void *rep, size_t cap)
{
	nng_socket *s = sp;
	size_t len = cap;
	int rv;
	if ((rv = nng_send(*s, (void *)req, n, 0)) || (rv = nng_recv(*s, rep, &len, 0))) {
		fail("client", "round trip", rv);
		return -1;
	}
	return (long)len;
}

static void close_conn(void *sp)
{
	nng_close(*(nng_socket *)sp);
}

int main(int argc, char **argv)
{
	static const struct rr_impl nng = {
		.name = "nng",
		.resolve = resolve,
		.serve = serve,
		.connect = connect_to,
		.roundtrip = roundtrip,
		.close = close_conn,
		.cleanup = rr_url_cleanup,
	};
	return rr_main(&nng, argc, argv);
}
