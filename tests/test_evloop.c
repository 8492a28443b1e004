/* test_evloop.c - libipc inside an event loop, on every transport (issue
 * 11): writability that does not spin, non-blocking sends of any size,
 * closes that end. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/resource.h>
#include <time.h>

#include <sys/socket.h>

#include "test.h"

enum { CAP = 4096 };

static struct ipc_options evopts(void)
{
	struct ipc_options o;
	ipc_options_init(&o);
	o.capacity = CAP;
	o.max_msg_size = 1 << 20;
	return o;
}

/* CPU time of the calling thread, in microseconds. */
static int64_t thread_cpu_us(void)
{
	struct rusage ru;
	CHECK(getrusage(RUSAGE_THREAD, &ru) == 0);
	return (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec +
	       (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
}

struct slow_reader {
	ipc_conn *c;
	int n;          /* messages to take */
	size_t len;     /* their size */
	int pause_ms;   /* between two receives */
	int got, bad;
};

static void *slow_read(void *p)
{
	struct slow_reader *a = p;
	unsigned char *b = malloc(a->len);
	if (!b)
		return NULL;
	for (int i = 0; i < a->n; i++) {
		t_sleep_ms(a->pause_ms);
		ssize_t r = ipc_recv(a->c, b, a->len, 0);
		if (r != (ssize_t)a->len || !t_verify(b, a->len, (uint64_t)i)) {
			a->bad++;
			break;
		}
		a->got++;
	}
	free(b);
	return NULL;
}

/*
 * The loop of ipc_send(3) EXAMPLES: send with IPC_DONTWAIT, on EAGAIN
 * wait in ipc_poll for IPC_POLLOUT.  The peer reads slowly, so there is
 * usually a little room free but not enough for the next message: the
 * loop must sleep, not spin (it used to make millions of EAGAIN rounds on
 * shm).  Its CPU time stays well under 10% of the wall time.
 */
CTEST(evloop_pollout_no_spin)
{
	struct ipc_options o = evopts();
	o.recv_timeout_ms = 20000;
	ipc_conn *s, *c;
	t_pair(scheme, &o, &s, &c);
	enum { N = 40 };
	size_t len = CAP * 3 / 4;
	/* a socket transport's kernel buffers would take all 40 messages at
	 * once: shrink them so that this loop has to wait there too */
	int small = 4096, type;
	socklen_t tl = sizeof type;
	if (getsockopt(ipc_conn_fd(c), SOL_SOCKET, SO_TYPE, &type, &tl) == 0) {
		CHECK(setsockopt(ipc_conn_fd(c), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
		CHECK(setsockopt(ipc_conn_fd(s), SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
	}
	struct slow_reader rd = {s, N, len, 15, 0, 0};
	pthread_t th;
	CHECK(pthread_create(&th, NULL, slow_read, &rd) == 0);
	unsigned char *b = malloc(len);
	CHECK(b != NULL);
	int64_t cpu0 = thread_cpu_us(), t0 = t_now_ms();
	long rounds = 0;
	for (int i = 0; i < N; i++) {
		t_fill(b, len, (uint64_t)i);
		for (;;) {
			rounds++;
			if (ipc_send(c, b, len, IPC_DONTWAIT) == (ssize_t)len)
				break;
			CHECKF(errno == EAGAIN, "send %d: %s", i, strerror(errno));
			struct ipc_pollitem it = {.conn = c, .events = IPC_POLLOUT};
			CHECK(ipc_poll(&it, 1, 10000) == 1);
		}
	}
	CHECK(ipc_flush(c, 0) == 0);
	int64_t cpu = thread_cpu_us() - cpu0;
	pthread_join(th, NULL); /* the wall time is the reader's pace */
	int64_t wall = t_now_ms() - t0;
	CHECKF(rd.got == N && rd.bad == 0, "reader got %d of %d", rd.got, N);
	CHECKF(rounds > N, "the loop never had to wait (%ld rounds for %d messages): nothing was tested", rounds, N);
	CHECKF(cpu * 10 < wall * 1000, "the sending loop used %lld us of CPU in %lld ms (%ld rounds)",
	       (long long)cpu, (long long)wall, rounds);
	free(b);
	CHECK(ipc_close(c) == 0);
	CHECK(ipc_close(s) == 0);
}

/*
 * A non-blocking send of four times the capacity is accepted whole (the
 * rest is held) and arrives intact while an event loop polls both ends.
 */
CTEST(evloop_big_nonblocking_send)
{
	struct ipc_options o = evopts();
	ipc_conn *s, *c;
	t_pair(scheme, &o, &s, &c);
	size_t len = 4 * CAP;
	unsigned char *b = malloc(len);
	CHECK(b != NULL);
	t_fill(b, len, 7);
	CHECKF(ipc_send(c, b, len, IPC_DONTWAIT) == (ssize_t)len, "%s", strerror(errno));
	memset(b, 0, len); /* the library keeps its own copy */
	void *got = NULL;
	ssize_t r = -1;
	int64_t t0 = t_now_ms();
	while (t_now_ms() - t0 < 10000) {
		struct ipc_pollitem it[2] = {{.conn = s, .events = IPC_POLLIN}, {.conn = c, .events = IPC_POLLOUT}};
		CHECK(ipc_poll(it, 2, 1000) >= 0);
		if (!(it[0].revents & IPC_POLLIN))
			continue;
		r = ipc_recv_alloc(s, &got, IPC_DONTWAIT);
		if (r >= 0 || errno != EAGAIN)
			break;
	}
	CHECKF(r == (ssize_t)len, "recv %zd (%s)", r, strerror(errno));
	CHECK(t_verify(got, len, 7));
	free(got);
	free(b);
	CHECK(ipc_flush(c, IPC_DONTWAIT) == 0);
	CHECK(ipc_close(c) == 0);
	CHECK(ipc_close(s) == 0);
}

/* Send more than any buffer between the two ends holds (the peer does not
 * read): timed sends, until one is refused (the library holds the rest). */
static void hold_data(ipc_conn *c, const void *b, size_t len)
{
	CHECK(ipc_conn_set_timeouts(c, 100, -1) == 0);
	for (int i = 0; i < 8; i++) {
		if (ipc_send(c, b, len, 0) < 0) {
			CHECKF(errno == EAGAIN || errno == ETIMEDOUT, "send %d: %s", i, strerror(errno));
			break;
		}
	}
}

/*
 * Close with data held and a peer that never reads: close gives up at its
 * linger deadline (and says the data was dropped), never later.
 */
CTEST(close_linger_peer_not_reading)
{
	struct ipc_options o = evopts();
	o.linger_ms = 500;
	ipc_conn *s, *c;
	t_pair(scheme, &o, &s, &c);
	size_t len = 1 << 20;
	unsigned char *b = calloc(1, len);
	CHECK(b != NULL);
	hold_data(c, b, len);
	int64_t t0 = t_now_ms();
	int r = ipc_close(c);
	int64_t took = t_now_ms() - t0;
	CHECKF(took < 500 + 1500, "close took %lld ms (linger 500 ms), returned %d", (long long)took, r);
	free(b);
	ipc_close(s);
}

struct closer {
	ipc_conn *c;
	int r, err;
	int64_t took;
};

static void *close_now(void *p)
{
	struct closer *a = p;
	int64_t t0 = t_now_ms();
	a->r = ipc_close(a->c);
	a->err = errno;
	a->took = t_now_ms() - t0;
	return NULL;
}

/*
 * Both ends hold unsent data and close at the same moment with an
 * unbounded linger (-1): each close keeps taking what the other sends, so
 * both finish (they used to wait for each other forever).
 */
CTEST(close_both_sides_holding)
{
	struct ipc_options o = evopts();
	o.linger_ms = -1;
	ipc_conn *s, *c;
	t_pair(scheme, &o, &s, &c);
	size_t len = 1 << 20;
	unsigned char *b = calloc(1, len);
	CHECK(b != NULL);
	ipc_conn *ends[2] = {s, c};
	for (int k = 0; k < 2; k++)
		hold_data(ends[k], b, len);
	struct closer a[2] = {{.c = s}, {.c = c}};
	pthread_t th[2];
	for (int k = 0; k < 2; k++)
		CHECK(pthread_create(&th[k], NULL, close_now, &a[k]) == 0);
	for (int k = 0; k < 2; k++)
		pthread_join(th[k], NULL);
	for (int k = 0; k < 2; k++)
		CHECKF(a[k].took < 10000 && (a[k].r == 0 || a[k].err == EPIPE || a[k].err == ECONNRESET),
		       "close %d: %d (%s) after %lld ms", k, a[k].r, strerror(a[k].err), (long long)a[k].took);
	free(b);
}
