/* fuzz_shm_wake.c - libFuzzer target: an shm connection whose peer lies on
 * the side channels.  An ipc_pair("shm") is made; pair[0] is the peer: it
 * sends real messages through the library AND writes the fuzzer's bytes
 * raw onto its ends of the victim's two wake socketpairs and of the
 * rendezvous socket (status bytes), floods them (also from a thread while
 * the victim is blocked), or shuts them down.  pair[1], the victim, mixes
 * blocking receives (short recv_timeout_ms), timed receives, IPC_DONTWAIT
 * receives and ipc_poll, and timed sends while the peer reads now and
 * then (its send ring's wake socket is hostile too).  Checked: every call returns within its timeout
 * (plus a slack, see SLACK_MS); errors are only documented ones; every message received
 * is the next one sent, intact (none lost, none invented) until the
 * connection fails; no descriptor is left after both ends are closed.
 *
 * The raw descriptors are found without any test hook: the sockets that
 * ipc_pair added to /proc/self/fd, in creation order (lib/shm.c shm_pair:
 * the SEQPACKET rendezvous pair, then the wake pair of the 0->1 ring, then
 * the 1->0 ring's; in each pair the lower descriptor is pair[0]'s end),
 * checked by probing before use.
 *
 * Input: byte 0: victim's recv timeout (1 + b % 4 ms); then ops of two
 * bytes (op, arg), some followed by arg-chosen payload bytes. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A call may overrun its timeout by SLACK_CPU_MS of this thread's CPU
 * time (a loop that drains what a peer floods burns CPU) and by
 * SLACK_MS of wall-clock time (a sleep past the deadline; generous: on a
 * loaded machine a sleeping process may wait hundreds of ms for a CPU). */
enum { SLACK_MS = 2000, SLACK_CPU_MS = 100, MAXQ = 64, MAXFD = 1024, MAX_OPS = 24 };

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

/* Start and end of a timed call: wall-clock and this thread's CPU time. */
struct span {
	int64_t wall, cpu;
};

static struct span span_now(void)
{
	return (struct span){now_ms(), clock_ms(CLOCK_THREAD_CPUTIME_ID)};
}

#define FAIL(...)                                      \
	do {                                           \
		fprintf(stderr, "fuzz_shm_wake: " __VA_ARGS__); \
		fputc('\n', stderr);                   \
		abort();                               \
	} while (0)

static void fd_set_of(unsigned char open[MAXFD])
{
	memset(open, 0, MAXFD);
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		FAIL("opendir /proc/self/fd: %s", strerror(errno));
	int dfd = dirfd(d);
	struct dirent *e;
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] != '.' && fd != dfd && fd < MAXFD)
			open[fd] = 1;
	}
	closedir(d);
}

static int sock_type(int fd)
{
	int t = 0;
	socklen_t l = sizeof t;
	return getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &l) == 0 ? t : -1;
}

/* Whether a byte written on a reaches b (and is taken back). */
static int linked(int a, int b)
{
	char x = 'p';
	if (send(a, &x, 1, MSG_DONTWAIT | MSG_NOSIGNAL) != 1)
		return 0;
	struct pollfd p = {.fd = b, .events = POLLIN};
	int ok = poll(&p, 1, 100) == 1 && recv(b, &x, 1, MSG_DONTWAIT) == 1;
	return ok;
}

/* The hostile peer's raw ends: rendezvous socket, and its ends of the
 * wake pairs of the victim's receive ring and send ring. */
struct raw {
	int sock, wake_rx, wake_tx;
};

static void find_raw(const unsigned char before[MAXFD], struct raw *r)
{
	unsigned char after[MAXFD];
	fd_set_of(after);
	int seq[2], str[4], ns = 0, nt = 0;
	for (int fd = 0; fd < MAXFD; fd++) {
		if (!after[fd] || before[fd])
			continue;
		struct stat st;
		if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
			continue;
		int t = sock_type(fd);
		if (t == SOCK_SEQPACKET && ns < 2)
			seq[ns++] = fd;
		else if (t == SOCK_STREAM && nt < 4)
			str[nt++] = fd;
		else
			FAIL("unexpected socket %d (type %d) from ipc_pair", fd, t);
	}
	if (ns != 2 || nt != 4)
		FAIL("ipc_pair made %d seqpacket and %d stream sockets, expected 2 and 4", ns, nt);
	/* p0 (0->1 ring: the victim's receive ring), then p1 */
	if (!linked(seq[0], seq[1]) || !linked(str[0], str[1]) || !linked(str[2], str[3]))
		FAIL("socket layout of ipc_pair(shm) changed: update find_raw");
	r->sock = seq[0];
	r->wake_rx = str[0];
	r->wake_tx = str[2];
}

/* What the peer sent and the victim must receive next, in order. */
struct queue {
	uint32_t len[MAXQ];
	uint8_t seed[MAXQ];
	unsigned head, tail;
};

static void fill(uint8_t *b, uint32_t len, uint8_t seed)
{
	for (uint32_t i = 0; i < len; i++)
		b[i] = (uint8_t)(seed + i * 31u);
}

static int documented(int e)
{
	return e == EAGAIN || e == ETIMEDOUT || e == EPROTO || e == ECONNRESET || e == EPIPE || e == EACCES;
}

/* A thread flooding one raw descriptor until told to stop (or 3 s). */
struct flood {
	int fd;
	uint8_t byte;
	atomic_int stop;
};

static void *flood_fn(void *arg)
{
	struct flood *f = arg;
	char b[16384]; /* big writes: a drain of small reads never catches up */
	memset(b, f->byte, sizeof b);
	int64_t end = now_ms() + 3000;
	while (!atomic_load(&f->stop) && now_ms() < end)
		if (send(f->fd, b, sizeof b, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno != EAGAIN)
			break;
	return NULL;
}

static void flood_now(int fd, uint8_t byte)
{
	char b[512];
	memset(b, byte, sizeof b);
	for (int i = 0; i < 4096; i++)
		if (send(fd, b, sizeof b, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			break;
}

struct victim {
	ipc_conn *c;
	int timeout; /* ms, its recv_timeout_ms */
	int failed;  /* a receive failed other than EAGAIN/ETIMEDOUT */
	struct queue *q;
	uint8_t *buf;
};

/* Fail if the call that started at t0 overran bound_ms (see SLACK_MS). */
static void check_time(struct span t0, int64_t bound_ms, const char *what)
{
	struct span t1 = span_now();
	if (t1.wall - t0.wall > bound_ms + SLACK_MS || t1.cpu - t0.cpu > bound_ms + SLACK_CPU_MS)
		FAIL("%s took %lld ms, %lld ms of CPU (bound %lld ms)", what, (long long)(t1.wall - t0.wall),
		     (long long)(t1.cpu - t0.cpu), (long long)bound_ms);
}

/* Check one receive result. */
static void check_recv(struct victim *v, ssize_t r, int e, const char *what)
{
	if (r < 0) {
		if (!documented(e))
			FAIL("%s: undocumented errno %d (%s)", what, e, strerror(e));
		if (e != EAGAIN && e != ETIMEDOUT)
			v->failed = 1;
		else if (v->failed)
			FAIL("%s: %s after the connection failed", what, strerror(e));
		return;
	}
	if (v->failed)
		FAIL("%s: a %zd-byte message after the connection failed", what, r);
	if (v->q->head == v->q->tail)
		FAIL("%s: a %zd-byte message nobody sent", what, r);
	unsigned i = v->q->head++ % MAXQ;
	uint8_t want[4096];
	fill(want, v->q->len[i], v->q->seed[i]);
	if ((size_t)r != v->q->len[i] || memcmp(v->buf, want, (size_t)r))
		FAIL("%s: message %u corrupted (%zd bytes, sent %u)", what, v->q->head - 1, r, v->q->len[i]);
}

static void victim_recv(struct victim *v, int flags, int64_t bound, const char *what)
{
	struct span t0 = span_now();
	errno = 0;
	ssize_t r = ipc_recv(v->c, v->buf, 4096, flags);
	int e = errno;
	check_time(t0, bound, what);
	check_recv(v, r, e, what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned char before[MAXFD];
	fd_set_of(before);
	struct ipc_options o;
	ipc_options_init(&o);
	o.capacity = 4096;
	o.max_msg_size = 4096;
	o.linger_ms = 0;
	o.recv_timeout_ms = 1 + data[0] % 4;
	o.send_timeout_ms = 0;
	ipc_conn *p[2];
	if (ipc_pair("shm", &o, p) < 0)
		FAIL("ipc_pair: %s", strerror(errno));
	struct raw raw;
	find_raw(before, &raw);
	static uint8_t buf[4096], msg[4096];
	struct queue q = {0};
	struct victim v = {.c = p[1], .timeout = o.recv_timeout_ms, .q = &q, .buf = buf};
	size_t i = 1;
	for (int nops = 0; i + 1 < size && nops < MAX_OPS; nops++) {
		uint8_t op = data[i], arg = data[i + 1];
		i += 2;
		size_t n = arg % 32;
		if (n > size - i)
			n = size - i;
		int wfd = arg & 0x80 ? raw.wake_tx : raw.wake_rx;
		switch (op % 12) {
		case 0: /* raw bytes on a wake socket */
		case 1:
			if (n)
				(void)send(op % 2 ? raw.wake_tx : raw.wake_rx, data + i, n, MSG_DONTWAIT | MSG_NOSIGNAL);
			i += n;
			break;
		case 2: /* a raw packet (status bytes) on the rendezvous socket */
			(void)send(raw.sock, data + i, n, MSG_DONTWAIT | MSG_NOSIGNAL);
			i += n;
			break;
		case 3: /* fill a wake socket's buffer */
			flood_now(wfd, arg);
			break;
		case 4: { /* a real message from the peer */
			uint32_t len = (uint32_t)(arg * 37u) % 4096u;
			uint8_t seed = (uint8_t)(op ^ nops);
			fill(msg, len, seed);
			errno = 0;
			ssize_t r = ipc_send(p[0], msg, len, IPC_DONTWAIT);
			if (r >= 0 && q.tail - q.head < MAXQ) {
				q.len[q.tail % MAXQ] = len;
				q.seed[q.tail % MAXQ] = seed;
				q.tail++;
			} else if (r >= 0) {
				FAIL("queue of expected messages full");
			} else if (!documented(errno)) {
				FAIL("peer send: undocumented errno %d (%s)", errno, strerror(errno));
			}
			break;
		}
		case 5:
			victim_recv(&v, 0, v.timeout, "blocking recv");
			break;
		case 6:
			victim_recv(&v, IPC_DONTWAIT, 0, "IPC_DONTWAIT recv");
			break;
		case 7: { /* a timed wait in ipc_poll, then a non-blocking receive */
			int t = 1 + arg % 5;
			struct ipc_pollitem it = {.conn = p[1], .events = IPC_POLLIN};
			struct span t0 = span_now();
			int r = ipc_poll(&it, 1, t);
			if (r < 0)
				FAIL("ipc_poll(%d ms): %s", t, strerror(errno));
			check_time(t0, t, "ipc_poll");
			if (r == 1)
				victim_recv(&v, IPC_DONTWAIT, 0, "recv after ipc_poll");
			break;
		}
		case 8: { /* a blocking receive while a thread floods a wake socket */
			struct flood f = {.fd = wfd, .byte = arg};
			atomic_init(&f.stop, 0);
			pthread_t th;
			if (pthread_create(&th, NULL, flood_fn, &f) != 0)
				FAIL("pthread_create");
			int t = 1 + arg % 5;
			if (ipc_conn_set_timeouts(p[1], 0, t) < 0)
				FAIL("ipc_conn_set_timeouts: %s", strerror(errno));
			victim_recv(&v, 0, t, "blocking recv under a flood");
			atomic_store(&f.stop, 1);
			pthread_join(th, NULL);
			ipc_conn_set_timeouts(p[1], 0, v.timeout);
			break;
		}
		case 9: /* the peer shuts a raw socket (rarely) */
			if (arg % 8 == 0)
				shutdown(arg & 0x10 ? raw.sock : wfd, SHUT_RDWR);
			break;
		case 10: { /* the victim's timed send: it waits on its send ring's wake socket */
			int t = 1 + arg % 5;
			uint32_t len = 1 + (uint32_t)(arg * 53u) % 4095u;
			msg[0] = (uint8_t)(op + nops);
			fill(msg + 1, len - 1, msg[0]);
			if (ipc_conn_set_timeouts(p[1], t, v.timeout) < 0)
				FAIL("ipc_conn_set_timeouts: %s", strerror(errno));
			struct span t0 = span_now();
			errno = 0;
			ssize_t r = ipc_send(p[1], msg, len, 0);
			int e = errno;
			check_time(t0, t, "timed send");
			if (r < 0 && !documented(e))
				FAIL("victim send: undocumented errno %d (%s)", e, strerror(e));
			break;
		}
		case 11: { /* the peer takes one: each victim message describes itself */
			errno = 0;
			ssize_t r = ipc_recv(p[0], msg, sizeof msg, IPC_DONTWAIT);
			if (r < 0 && !documented(errno))
				FAIL("peer recv: undocumented errno %d (%s)", errno, strerror(errno));
			if (r == 0)
				FAIL("peer recv: an empty message the victim never sent");
			if (r > 0) {
				uint8_t want[4096];
				fill(want, (uint32_t)r - 1, msg[0]);
				if (memcmp(msg + 1, want, (size_t)r - 1))
					FAIL("peer recv: a %zd-byte message of the victim corrupted", r);
			}
			break;
		}
		}
	}
	/* what is still queued arrives intact, unless the connection failed
	 * (the peer's flush moves a message it holds) */
	for (int k = 0; k < 4 * MAXQ && q.head != q.tail && !v.failed; k++) {
		int fr = ipc_flush(p[0], IPC_DONTWAIT);
		if (fr < 0 && !documented(errno))
			FAIL("peer flush: undocumented errno %d (%s)", errno, strerror(errno));
		victim_recv(&v, 0, v.timeout, "final recv");
	}
	if (q.head != q.tail && !v.failed)
		FAIL("%u messages sent were never received", q.tail - q.head);
	ipc_close(p[0]);
	ipc_close(p[1]);
	unsigned char after[MAXFD];
	fd_set_of(after);
	for (int fd = 0; fd < MAXFD; fd++)
		if (after[fd] && !before[fd])
			FAIL("descriptor %d left open after both ends were closed", fd);
	return 0;
}
