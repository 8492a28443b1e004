/* mq.c - the mq:/name transport: POSIX message queues.
 *
 * A POSIX queue is not a connection, so connections are built on top:
 *
 * Rendezvous: lib/rendezvous.c (protocol in ipc_impl.h).  The listener
 * binds the Linux abstract SEQPACKET socket "\0libipc-mq:/name" (names
 * too long for sun_path are hashed).  It has no file and vanishes with the
 * listener, so nothing can be left behind.
 *
 * Connect.  The client connects that socket and checks who listens
 * (ipc__listener_trusted, EPERM) before it makes anything; then it creates
 * the two queues of the connection (client->server, server->client) under
 * random names with O_CREAT|O_EXCL and opt.mode, opens each twice (one
 * blocking, one O_NONBLOCK open file description) and unlinks the names at
 * once.  The four descriptors (mqueue descriptors are real fds on Linux)
 * travel to the listener with SCM_RIGHTS in a 16-byte hello: "LIPQ",
 * version 2, status, pad, u32 max message size, u32 0.  connect waits for
 * accept only when the listener runs under another uid (its verdict on
 * our mode).  accept (mq_build) validates the hello and the descriptors
 * (mqueue fs, O_RDWR, O_NONBLOCK as expected, message size within our own
 * capacity / max_msg_size), the rendezvous enforces opt.mode against the
 * client's SO_PEERCRED (ipc__mode_allows) and answers with the same hello
 * carrying a status (enum ipc__rdv_status), which the client reads lazily
 * (peer_check); a status that is not one of those codes is EPROTO.
 *
 * Queue attributes: msg_max and msgsize_max are read from
 * /proc/sys/fs/mqueue at run time (fallback 10 / 8192).  maxmsg =
 * min(msg_max, 64); msgsize just big enough for maxmsg * msgsize to hold
 * the capacity, within [256, msgsize_max] (8192 by default: a 4 KiB
 * message is one mq message, 1 MiB is 129, as with raw mq).  The queues
 * count against RLIMIT_MSGQUEUE, one budget (800 KiB by default) for every
 * queue of the user, which the kernel charges about 1.25 * maxmsg *
 * msgsize + 1.2 KiB per queue (~100 KiB at 10 x 8192).  So the size also
 * depends on how many connections this process has made and still holds
 * (live_conns, a sizing hint only): the first BIG_CONNS (2) get the full
 * size, the next ones up to MID_CONNS (6) at most 1024 bytes, later ones
 * 256.  When mq_open fails with EMFILE (budget spent) or ENOMEM the queue
 * drops straight to 256 bytes, then maxmsg is halved down to 2, before
 * giving up with that errno; ENOSPC (queues_max) is reported as such.
 *
 * Framing inside a queue (msgsize = that queue's mq_msgsize):
 *   length < msgsize   one whole message, no header (0 bytes is valid)
 *   length == msgsize  msgsize - 8 bytes of payload, then a trailer u32 tag
 *                      + u32 total (the payload sits where it belongs, so a
 *                      receive reassembles in place):
 *                      tag FIRST: first chunk of a message of total bytes
 *                      (msgsize <= total <= receiver's max_msg_size, else
 *                      EPROTO; checked before allocating); it is followed
 *                      by chunks of exactly min(msgsize, rest) raw bytes;
 *                      tag CLOSE: orderly end-of-stream.
 *   A message is delivered only once reassembled whole.  A blocking receive
 *   into a buffer large enough reassembles straight into it (it can only
 *   stop early on a connection error, which is sticky); otherwise into a
 *   buffer of exactly total bytes.
 *
 * Liveness.  The unix socket stays open for the life of the connection.
 * An orderly close writes a CLOSE marker into the queue (if it has room)
 * and one byte 'C' on the socket, then closes; EOF without 'C' means the
 * peer died.  The closing side also fills its receive queue with CLOSE
 * markers, so a peer still sending finds the queue full and looks at the
 * socket.  Blocking and timed calls sleep in mq_timedsend/mq_timedreceive
 * on the blocking descriptors, in slices of IPC_MQ_SLICE_MS (50 ms), and
 * check the socket after each slice: a dead or closed peer is detected by
 * a blocked call within 50 ms (plus scheduling).  The end of the current
 * slice is cached per direction on both clocks (struct slice), so the fast
 * path of a blocking or timed send/receive is exactly one mq_timedsend /
 * mq_timedreceive, with no clock read and no socket check; the cache is
 * renewed only when a wait runs into it.  Besides, a send checks the
 * socket every CHECK_EVERY (256) calls, at once once the peer is known
 * gone, and a non-blocking call checks it when it would have to wait.
 * Receive delivers everything queued before reporting EPIPE (closed) or
 * ECONNRESET (died).
 *
 * Capacity.  The kernel queue holds what the limits allow.  A blocking or
 * timed send waits in the kernel while the queue is full (like a stream
 * socket whose buffer is full: nothing is held in user space; a timed send
 * whose deadline passes after its first chunk went out holds the rest, as
 * ipc_send documents).  A non-blocking send that finds the queue full
 * holds the message in user space (records of u32 length + chunk) while
 * held + len + 4 <= capacity; held data goes out first: a flusher thread
 * (started on the first hold) moves it into the queue whatever the
 * application does next; later sends queue behind it, and flush and close
 * (per linger) wait for it.  So writable readiness (IPC_POLLOUT) means a
 * non-blocking send of a small message would be accepted.
 *
 * Batches: send_batch waits for the first message as a send, then passes
 * single-chunk messages with non-blocking mq_send while the queue takes
 * them (nothing held); recv_batch waits for the first message, then takes
 * what is queued (non-blocking, no socket check).
 *
 * Readiness descriptor: an epoll fd holding the receive queue (EPOLLIN,
 * while IN is asked), the socket (EOF/'C'/hello) and the send queue
 * (EPOLLOUT, while OUT is asked and not ready or data is held).
 *
 * Threads: send side under smu, receive side under rmu, socket state and
 * epoll registration under kmu.  After fork only one process may use a
 * connection (the queues' open file descriptions are shared).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mqueue.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "ipc_impl.h"

#define IPC_MQ_SLICE_MS 50
#define SLICE_NS ((int64_t)IPC_MQ_SLICE_MS * 1000000)
#define CHECK_EVERY 256 /* sends between two socket checks while flowing */
#define MQ_VERSION 2
#define HELLO_LEN 16
#define TAG_FIRST 0x4649514du /* "MQIF" */
#define TAG_CLOSE 0x4c43514du /* "MQCL" */
#define MIN_MSGSIZE 256
/* Message size by how many connections this process already made (and
 * still has): the first BIG_CONNS get the kernel's msgsize_max, the next
 * ones up to MID_MSGSIZE, later ones MIN_MSGSIZE. */
#define BIG_CONNS 2
#define MID_CONNS 6
#define MID_MSGSIZE 1024
#define MQUEUE_MAGIC_FS 0x19800202
#define SMALL_MSG 64

enum { P_OPEN, P_CLOSED, P_DEAD, P_REFUSED };

/* End of a wait slice on both clocks (see slice_end). */
struct slice {
	struct timespec rt; /* CLOCK_REALTIME, for mq_timed* */
	int64_t mono;       /* the same instant on CLOCK_MONOTONIC */
};

struct mq_conn {
	struct ipc_conn base;
	int sock, efd;
	mqd_t sq, sq_nb, rq, rq_nb;
	size_t s_msgsize, r_msgsize;
	long s_maxmsg;
	int is_client;
	int counted; /* counted in live_conns */
	struct ipc_cred cred;

	pthread_mutex_t kmu; /* socket state, epoll registration */
	unsigned char hbuf[HELLO_LEN];
	size_t hgot;
	int hello_done, closing, pstate, perr;
	atomic_size_t peer_max;
	atomic_int gone; /* pstate != P_OPEN (read without kmu) */
	unsigned ev_rq, ev_sq;

	pthread_mutex_t smu; /* send side */
	unsigned char *sbuf;
	unsigned char *hb; /* held records */
	size_t hcap, hoff, hlen;
	atomic_size_t hpend;
	unsigned s_cnt; /* sends since the last socket check */
	struct slice s_sl; /* end of the current wait slice */
	pthread_cond_t room_cv; /* held data shrank (monotonic clock) */
	pthread_cond_t fl_cv;   /* work for the flusher */
	pthread_t fl_th;
	int fl_started;
	atomic_int fl_stop;
	unsigned char *fl_buf;
	int serr;

	pthread_mutex_t rmu; /* receive side */
	unsigned char *rbuf;
	size_t pend_len;
	int pend;
	unsigned char *abuf;
	size_t atotal, ahave;
	int asm_on;
	int first_kept; /* rbuf holds a FIRST chunk whose buffer failed */
	int a_user;     /* abuf is the caller's buffer (blocking recv) */
	unsigned char *r_ubuf; /* caller's buffer for this call, or NULL */
	size_t r_ulen;
	struct slice r_sl; /* end of the current wait slice */
	int rerr;
};

static struct mq_conn *C(struct ipc_conn *c)
{
	return (struct mq_conn *)c;
}

/* ---- small helpers ---------------------------------------------------- */

static int64_t rt_now(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static void ts_add(struct timespec *ts, int64_t ns)
{
	ts->tv_sec += (time_t)(ns / 1000000000);
	ts->tv_nsec += (long)(ns % 1000000000);
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

/* Slice length for a wait until deadline; 0 if it has passed. */
static int64_t slice_for(int64_t deadline)
{
	if (deadline == IPC__FOREVER)
		return SLICE_NS;
	int64_t left = deadline - ipc__now();
	if (left <= 0)
		return 0;
	return left < SLICE_NS ? left : SLICE_NS;
}

/* The CLOCK_REALTIME end of one kernel wait toward deadline; returns 0
 * if the deadline has passed (one last try), else > 0.  With a cache, the
 * end of the current slice is reused without reading any clock as long as
 * it comes before the deadline (an expired one makes a wait that has to
 * block return at once); a wait that runs into it renews it (slice_renew),
 * so a blocked call looks at the socket every IPC_MQ_SLICE_MS, and the
 * fast path costs no clock read. */
static int64_t slice_end(int64_t deadline, const struct slice *cache, struct timespec *ts)
{
	if (cache && cache->mono <= deadline) {
		*ts = cache->rt;
		return SLICE_NS;
	}
	int64_t w = slice_for(deadline);
	rt_now(ts);
	ts_add(ts, w);
	return w;
}

static void slice_renew(struct slice *cache)
{
	if (cache) {
		rt_now(&cache->rt);
		ts_add(&cache->rt, SLICE_NS);
		cache->mono = ipc__now() + SLICE_NS;
	}
}

static long read_proc_long(const char *path, long fallback)
{
	FILE *f = fopen(path, "re");
	long v = fallback;
	if (f) {
		if (fscanf(f, "%ld", &v) != 1 || v <= 0)
			v = fallback;
		fclose(f);
	}
	return v;
}

static void put32(unsigned char *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static uint32_t get32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static void hello_encode(unsigned char *h, int status, size_t max_msg)
{
	memset(h, 0, HELLO_LEN);
	memcpy(h, "LIPQ", 4);
	h[4] = MQ_VERSION;
	h[5] = (unsigned char)status;
	put32(h + 8, (uint32_t)max_msg);
}

/* 0 if h is a compatible hello whose status is one of the rendezvous
 * codes, else -1 EPROTO.  peer_check then uses the status byte as errno:
 * the codes are chosen equal to those errno values (asserted here), so no
 * other byte from a peer can become an errno. */
_Static_assert(IPC__RDV_ACCESS == EACCES && IPC__RDV_PROTO == EPROTO && IPC__RDV_LIMIT == EMSGSIZE &&
		       IPC__RDV_BUSY == ECONNREFUSED,
	       "status codes double as errno values in peer_check");
static int hello_check(const unsigned char *h)
{
	if (memcmp(h, "LIPQ", 4) || h[4] != MQ_VERSION ||
	    (h[5] != IPC__RDV_PROTO && ipc__rdv_status_errno(h[5]) == EPROTO)) {
		errno = EPROTO;
		return -1;
	}
	return 0;
}

/* Name after "mq:": "/x...", no other '/', at most NAME_MAX after '/'. */
static int check_name(const char *name)
{
	size_t n = strlen(name);
	if (name[0] != '/' || n < 2 || strchr(name + 1, '/')) {
		errno = EINVAL;
		return -1;
	}
	if (n - 1 > NAME_MAX) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* The rendezvous socket's abstract address (long names are hashed). */
static int rendezvous_addr(const char *name, struct sockaddr_un *sa, socklen_t *sl)
{
	return ipc__rdv_addr("libipc-mq:", "libipc-mq#", name, sa, sl);
}

static int errno_of_state(int st, int perr, int sending)
{
	if (st == P_REFUSED)
		return perr;
	if (sending)
		return EPIPE;
	return st == P_CLOSED ? EPIPE : ECONNRESET;
}

/* ---- socket state ----------------------------------------------------- */

/* Read what the socket holds (hello reply, 'C', EOF).  Returns pstate. */
static int peer_check(struct mq_conn *c)
{
	unsigned char tmp[64];
	pthread_mutex_lock(&c->kmu);
	while (c->pstate == P_OPEN) {
		ssize_t n;
		int in_hello = c->is_client && !c->hello_done;
		if (in_hello)
			n = recv(c->sock, c->hbuf + c->hgot, HELLO_LEN - c->hgot, MSG_DONTWAIT);
		else
			n = recv(c->sock, tmp, sizeof tmp, MSG_DONTWAIT);
		if (n > 0) {
			if (in_hello) {
				c->hgot += (size_t)n;
				if (c->hgot < HELLO_LEN)
					continue;
				c->hello_done = 1;
				if (hello_check(c->hbuf) < 0) {
					c->pstate = P_REFUSED;
					c->perr = EPROTO;
				} else if (c->hbuf[5]) {
					c->pstate = P_REFUSED;
					c->perr = c->hbuf[5];
				} else {
					uint32_t m = get32(c->hbuf + 8);
					atomic_store(&c->peer_max, m ? (size_t)m : SIZE_MAX);
				}
				continue;
			}
			for (ssize_t i = 0; i < n; i++) {
				if (tmp[i] == 'C') {
					c->closing = 1;
				} else {
					c->pstate = P_REFUSED;
					c->perr = EPROTO;
				}
			}
			if (c->closing && c->pstate == P_OPEN)
				c->pstate = P_CLOSED;
			continue;
		}
		if (n == 0) {
			c->pstate = c->closing ? P_CLOSED : P_DEAD;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			c->pstate = P_DEAD;
		break;
	}
	int st = c->pstate;
	if (st != P_OPEN)
		atomic_store(&c->gone, 1);
	pthread_mutex_unlock(&c->kmu);
	return st;
}

static int peer_err(struct mq_conn *c, int sending)
{
	pthread_mutex_lock(&c->kmu);
	int e = errno_of_state(c->pstate, c->perr, sending);
	pthread_mutex_unlock(&c->kmu);
	return e;
}

/* ---- send side (smu held, except the flusher's kernel waits) ---------- */

static int tx_fail(struct mq_conn *c, int e)
{
	c->serr = e;
	errno = e;
	return -1;
}

/* Peer gone?  Sets serr and returns -1 if so. */
static int tx_peer(struct mq_conn *c)
{
	if (peer_check(c) != P_OPEN)
		return tx_fail(c, peer_err(c, 1));
	return 0;
}

/* Blocking send of one chunk by deadline, in slices with peer checks.
 * Touches no send-side state but *cache (NULL for the flusher). */
static int q_send(struct mq_conn *c, const void *buf, size_t n, int64_t deadline, atomic_int *stop,
		  struct slice *cache)
{
	for (;;) {
		/* a passed deadline still takes room that is there (w == 0) */
		struct timespec ts;
		int64_t w = slice_end(deadline, cache, &ts);
		if (mq_timedsend(c->sq, buf, n, 0, &ts) == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != ETIMEDOUT)
			return -1;
		if (w == 0)
			return -1;
		slice_renew(cache);
		if (peer_check(c) != P_OPEN) {
			errno = peer_err(c, 1);
			return -1;
		}
		if (stop && atomic_load(stop)) {
			errno = ECANCELED;
			return -1;
		}
	}
}

static void held_update(struct mq_conn *c)
{
	if (c->hoff == c->hlen) {
		c->hoff = c->hlen = 0;
		if (c->hcap > ((size_t)1 << 20)) {
			free(c->hb);
			c->hb = NULL;
			c->hcap = 0;
		}
	}
	atomic_store(&c->hpend, c->hlen - c->hoff);
}

/* The flusher thread: moves held records into the queue, so that what a
 * send accepted keeps flowing whatever the application does next. */
static void *flusher(void *arg)
{
	struct mq_conn *c = arg;
	pthread_mutex_lock(&c->smu);
	for (;;) {
		if (c->hoff == c->hlen || c->serr) {
			if (atomic_load(&c->fl_stop))
				break;
			pthread_cond_wait(&c->fl_cv, &c->smu);
			continue;
		}
		uint32_t n = get32(c->hb + c->hoff);
		memcpy(c->fl_buf, c->hb + c->hoff + 4, n);
		pthread_mutex_unlock(&c->smu);
		int r = q_send(c, c->fl_buf, n, IPC__FOREVER, &c->fl_stop, NULL);
		int e = errno;
		pthread_mutex_lock(&c->smu);
		if (r == 0) {
			c->hoff += 4 + (size_t)n;
			held_update(c);
		} else if (e == ECANCELED) {
			break;
		} else {
			c->serr = e == EBADF ? EPIPE : e;
		}
		pthread_cond_broadcast(&c->room_cv);
	}
	pthread_mutex_unlock(&c->smu);
	return NULL;
}

static int fl_ensure(struct mq_conn *c)
{
	if (c->fl_started)
		return 0;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int r = pthread_create(&c->fl_th, NULL, flusher, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		errno = r == EAGAIN ? ENOMEM : r;
		return -1;
	}
	c->fl_started = 1;
	return 0;
}

/* Wait until held + need fits the capacity or nothing is held. */
static int tx_wait_room(struct mq_conn *c, size_t need, int64_t deadline)
{
	while (c->hoff < c->hlen && !c->serr && c->hlen - c->hoff + need > c->base.opt.capacity) {
		if (deadline == IPC__NOW) {
			if (tx_peer(c) < 0)
				return -1;
			errno = EAGAIN;
			return -1;
		}
		if (deadline == IPC__FOREVER) {
			pthread_cond_wait(&c->room_cv, &c->smu);
			continue;
		}
		if (ipc__now() >= deadline) {
			errno = ETIMEDOUT;
			return -1;
		}
		struct timespec ts = {(time_t)(deadline / 1000000000), (long)(deadline % 1000000000)};
		pthread_cond_timedwait(&c->room_cv, &c->smu, &ts);
	}
	if (c->serr) {
		errno = c->serr;
		return -1;
	}
	return 0;
}

struct cursor {
	const struct iovec *iov;
	int cnt;
	size_t off;
};

static void cur_copy(struct cursor *k, unsigned char *dst, size_t n)
{
	while (n > 0) {
		size_t avail = k->iov->iov_len - k->off;
		if (avail == 0) {
			k->iov++;
			k->cnt--;
			k->off = 0;
			continue;
		}
		size_t t = avail < n ? avail : n;
		memcpy(dst, (const unsigned char *)k->iov->iov_base + k->off, t);
		dst += t;
		n -= t;
		k->off += t;
	}
}

/* t contiguous bytes at the cursor: in place if possible, else copied. */
static const void *cur_take(struct cursor *k, size_t t, unsigned char *scratch)
{
	while (k->cnt > 0 && k->off == k->iov->iov_len) {
		k->iov++;
		k->cnt--;
		k->off = 0;
	}
	if (k->cnt > 0 && k->iov->iov_len - k->off >= t) {
		const void *p = (const unsigned char *)k->iov->iov_base + k->off;
		k->off += t;
		return p;
	}
	cur_copy(k, scratch, t);
	return scratch;
}

static int held_reserve(struct mq_conn *c, size_t more)
{
	if (c->hlen + more <= c->hcap)
		return 0;
	if (c->hoff) {
		memmove(c->hb, c->hb + c->hoff, c->hlen - c->hoff);
		c->hlen -= c->hoff;
		c->hoff = 0;
		if (c->hlen + more <= c->hcap)
			return 0;
	}
	size_t cap = c->hcap ? c->hcap : 4096;
	while (cap < c->hlen + more)
		cap *= 2;
	unsigned char *p = realloc(c->hb, cap);
	if (!p)
		return -1;
	c->hb = p;
	c->hcap = cap;
	return 0;
}

/* Hold a chunk (first, n bytes), then rest bytes from the cursor in chunks
 * of msgsize; the flusher sends them. */
static int tx_hold(struct mq_conn *c, const void *first, size_t n, struct cursor *k, size_t rest)
{
	size_t ms = c->s_msgsize;
	size_t nch = (rest + ms - 1) / ms;
	if (fl_ensure(c) < 0 || held_reserve(c, 4 + n + rest + 4 * nch) < 0)
		return -1;
	put32(c->hb + c->hlen, (uint32_t)n);
	memcpy(c->hb + c->hlen + 4, first, n);
	c->hlen += 4 + n;
	while (rest > 0) {
		size_t t = rest < ms ? rest : ms;
		put32(c->hb + c->hlen, (uint32_t)t);
		cur_copy(k, c->hb + c->hlen + 4, t);
		c->hlen += 4 + t;
		rest -= t;
	}
	atomic_store(&c->hpend, c->hlen - c->hoff);
	pthread_cond_signal(&c->fl_cv);
	return 0;
}

/* First chunk of a message: *t bytes at the returned pointer. */
static const void *tx_first(struct mq_conn *c, struct cursor *k, size_t total, size_t *t, size_t *rest)
{
	size_t ms = c->s_msgsize;
	if (total < ms) {
		*t = total;
		*rest = 0;
		return cur_take(k, total, c->sbuf);
	}
	cur_copy(k, c->sbuf, ms - 8);
	put32(c->sbuf + ms - 8, TAG_FIRST);
	put32(c->sbuf + ms - 4, (uint32_t)total);
	*t = ms;
	*rest = total - (ms - 8);
	return c->sbuf;
}

/* Is the peer still there?  Checked for free when a call has to wait,
 * and every CHECK_EVERY sends otherwise (a send into a queue with room
 * costs exactly one mq_timedsend). */
static int tx_alive(struct mq_conn *c)
{
	if (atomic_load_explicit(&c->gone, memory_order_relaxed) || ++c->s_cnt >= CHECK_EVERY) {
		c->s_cnt = 0;
		return tx_peer(c);
	}
	return 0;
}

static int tx_msg(struct mq_conn *c, const struct iovec *iov, int iovcnt, size_t total, int64_t deadline)
{
	size_t ms = c->s_msgsize, t, rest;
	struct cursor k = {iov, iovcnt, 0};
	const void *src;
	if (c->serr) {
		errno = c->serr;
		return -1;
	}
	if (total > atomic_load(&c->peer_max) || (deadline == IPC__NOW && total + 4 > c->base.opt.capacity)) {
		errno = EMSGSIZE;
		return -1;
	}
	if (tx_alive(c) < 0)
		return -1;
	if (c->hoff < c->hlen) { /* order: behind what is held */
		if (tx_wait_room(c, total + 4, deadline) < 0)
			return -1;
		if (c->hoff < c->hlen) {
			src = tx_first(c, &k, total, &t, &rest);
			return tx_hold(c, src, t, &k, rest);
		}
	}
	src = tx_first(c, &k, total, &t, &rest);
	if (deadline == IPC__NOW) {
		/* without waiting: what the queue does not take is held (the
		 * whole message fits the capacity, checked above) */
		for (;;) {
			if (mq_send(c->sq_nb, src, t, 0) < 0) {
				if (errno == EINTR)
					continue;
				if (errno != EAGAIN)
					return tx_fail(c, errno == EBADF ? EPIPE : errno);
				if (tx_peer(c) < 0)
					return -1;
				return tx_hold(c, src, t, &k, rest);
			}
			if (rest == 0)
				return 0;
			t = rest < ms ? rest : ms;
			rest -= t;
			src = cur_take(&k, t, c->sbuf);
		}
	}
	/* blocking or timed: wait in the kernel (one mq_timedsend per chunk
	 * when there is room); a timed send whose deadline passes after the
	 * first chunk went out holds the rest, as ipc_send documents */
	for (int started = 0;; started = 1) {
		if (q_send(c, src, t, deadline, NULL, &c->s_sl) < 0) {
			if (errno == ETIMEDOUT && started)
				return tx_hold(c, src, t, &k, rest);
			if (errno == ETIMEDOUT)
				return -1;
			return tx_fail(c, errno == EBADF ? EPIPE : errno);
		}
		if (rest == 0)
			return 0;
		t = rest < ms ? rest : ms;
		rest -= t;
		src = cur_take(&k, t, c->sbuf);
	}
}

static int mq_send_slot(struct ipc_conn *cc, const struct iovec *iov, int iovcnt, size_t total, int64_t deadline)
{
	struct mq_conn *c = C(cc);
	pthread_mutex_lock(&c->smu);
	int r = tx_msg(c, iov, iovcnt, total, deadline);
	pthread_mutex_unlock(&c->smu);
	return r;
}

/* The first message as a send; then single-chunk messages only while the
 * queue takes them at once (nothing is held for a batch). */
static ssize_t mq_send_batch_slot(struct ipc_conn *cc, const struct iovec *msgs, size_t n, int64_t deadline)
{
	struct mq_conn *c = C(cc);
	size_t i = 1;
	pthread_mutex_lock(&c->smu);
	if (tx_msg(c, &msgs[0], 1, msgs[0].iov_len, deadline) < 0) {
		pthread_mutex_unlock(&c->smu);
		return -1;
	}
	for (; i < n; i++) {
		if (msgs[i].iov_len >= c->s_msgsize || msgs[i].iov_len > atomic_load(&c->peer_max) ||
		    c->hoff < c->hlen || c->serr)
			break;
		if (atomic_load_explicit(&c->gone, memory_order_relaxed) || ++c->s_cnt >= CHECK_EVERY) {
			c->s_cnt = 0;
			if (peer_check(c) != P_OPEN)
				break; /* the next call reports it */
		}
		int r;
		while ((r = mq_send(c->sq_nb, msgs[i].iov_base, msgs[i].iov_len, 0)) < 0 && errno == EINTR)
			;
		if (r < 0)
			break; /* EAGAIN: done; anything else shows on the next call */
	}
	pthread_mutex_unlock(&c->smu);
	return (ssize_t)i;
}

static int mq_flush_slot(struct ipc_conn *cc, int64_t deadline)
{
	struct mq_conn *c = C(cc);
	pthread_mutex_lock(&c->smu);
	int r = tx_wait_room(c, c->base.opt.capacity + 1, deadline);
	pthread_mutex_unlock(&c->smu);
	return r;
}

/* ---- receive side (rmu held) ------------------------------------------ */

static int rx_fail(struct mq_conn *c, int e)
{
	c->rerr = e;
	errno = e;
	return -1;
}

/* Peer gone and nothing queued: the final error (sticky). */
static ssize_t rx_gone(struct mq_conn *c, void *buf, size_t cap)
{
	ssize_t n = mq_receive(c->rq_nb, buf, cap, NULL);
	if (n >= 0)
		return n;
	return rx_fail(c, peer_err(c, 0));
}

/* Receive one mq message into buf (cap >= r_msgsize) by deadline.  The
 * socket is looked at only when the call would wait: at EAGAIN (unless
 * quiet: a batch's later messages) and after each slice spent waiting. */
static ssize_t rx_chunk(struct mq_conn *c, void *buf, size_t cap, int64_t deadline, int quiet)
{
	for (;;) {
		ssize_t n;
		if (deadline == IPC__NOW) {
			n = mq_receive(c->rq_nb, buf, cap, NULL);
			if (n >= 0)
				return n;
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return rx_fail(c, errno);
			if (!quiet && peer_check(c) != P_OPEN)
				return rx_gone(c, buf, cap);
			errno = EAGAIN;
			return -1;
		}
		/* a passed deadline still takes what is there (w == 0) */
		struct timespec ts;
		int64_t w = slice_end(deadline, &c->r_sl, &ts);
		n = mq_timedreceive(c->rq, buf, cap, NULL, &ts);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno != ETIMEDOUT)
			return rx_fail(c, errno);
		slice_renew(&c->r_sl);
		if (peer_check(c) != P_OPEN)
			return rx_gone(c, buf, cap);
		if (w == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
	}
}

/* Take in one mq message of n bytes now in src (rbuf or user buffer).
 * 1: a whole small message (caller decides), 0: consumed, -1 error. */
static int rx_take(struct mq_conn *c, const unsigned char *src, size_t n)
{
	size_t ms = c->r_msgsize;
	if (c->asm_on) {
		size_t want = c->atotal - c->ahave;
		if (want > ms)
			want = ms;
		if (n != want)
			return rx_fail(c, EPROTO);
		if (src != c->abuf + c->ahave)
			memcpy(c->abuf + c->ahave, src, n);
		c->ahave += n;
		return 0;
	}
	if (n < ms)
		return 1;
	uint32_t tag = get32(src + ms - 8), total = get32(src + ms - 4);
	if (tag == TAG_CLOSE)
		return rx_fail(c, EPIPE);
	if (tag != TAG_FIRST || total < ms || total > c->base.opt.max_msg_size)
		return rx_fail(c, EPROTO);
	if (c->r_ubuf && total <= c->r_ulen) { /* reassemble in place */
		c->abuf = c->r_ubuf;
		c->a_user = 1;
		if (src != c->abuf) /* else already in place */
			memcpy(c->abuf, src, ms - 8);
	} else {
		c->abuf = malloc(total);
		if (!c->abuf) { /* keep the chunk: a later call retries */
			if (src != c->rbuf)
				memcpy(c->rbuf, src, n);
			c->first_kept = 1;
			errno = ENOMEM;
			return -1;
		}
		memcpy(c->abuf, src, ms - 8);
	}
	c->first_kept = 0;
	c->atotal = total;
	c->ahave = ms - 8;
	c->asm_on = 1;
	return 0;
}

/* Pull messages until one is complete (or error / would block). */
static int rx_fill(struct mq_conn *c, int64_t deadline, int quiet)
{
	if (c->first_kept && rx_take(c, c->rbuf, c->r_msgsize) < 0)
		return -1;
	while (!c->pend && !(c->asm_on && c->ahave == c->atotal)) {
		unsigned char *dst = c->rbuf;
		if (c->asm_on && c->atotal - c->ahave >= c->r_msgsize)
			dst = c->abuf + c->ahave;
		ssize_t n = rx_chunk(c, dst, c->r_msgsize, deadline, quiet);
		if (n < 0)
			return -1;
		int r = rx_take(c, dst, (size_t)n);
		if (r < 0)
			return -1;
		if (r == 1) {
			c->pend = 1;
			c->pend_len = (size_t)n;
		}
	}
	return 0;
}

static void asm_reset(struct mq_conn *c)
{
	if (!c->a_user)
		free(c->abuf);
	c->abuf = NULL;
	c->asm_on = c->a_user = 0;
	c->atotal = c->ahave = 0;
}

static ssize_t rx_deliver(struct mq_conn *c, void *buf, size_t len, void **allocp)
{
	if (c->pend) {
		size_t n = c->pend_len;
		if (allocp) {
			void *p = malloc(n ? n : 1);
			if (!p)
				return -1;
			memcpy(p, c->rbuf, n);
			*allocp = p;
		} else if (n > len) {
			errno = EMSGSIZE;
			return -1;
		} else if (n) {
			memcpy(buf, c->rbuf, n);
		}
		c->pend = 0;
		return (ssize_t)n;
	}
	size_t n = c->atotal;
	if (c->a_user) {
		c->abuf = NULL; /* already in buf */
		c->a_user = 0;
	} else if (allocp) {
		*allocp = c->abuf;
		c->abuf = NULL;
	} else if (n > len) {
		errno = EMSGSIZE;
		return -1;
	} else {
		memcpy(buf, c->abuf, n);
	}
	asm_reset(c);
	return (ssize_t)n;
}

static ssize_t rx_msg(struct mq_conn *c, void *buf, size_t len, void **allocp, int64_t deadline, int quiet)
{
	ssize_t r = -1;
	if (!c->pend && !c->asm_on && !c->first_kept) {
		if (c->rerr) {
			errno = c->rerr;
			return -1;
		}
		/* a blocking receive into the caller's buffer reassembles in
		 * place: it only stops early on a connection error */
		if (!allocp && deadline == IPC__FOREVER) {
			c->r_ubuf = buf;
			c->r_ulen = len;
		}
		if (!allocp && len >= c->r_msgsize) { /* fast path: straight in */
			ssize_t n = rx_chunk(c, buf, len, deadline, quiet);
			if (n < 0)
				goto out;
			int t = rx_take(c, buf, (size_t)n);
			if (t < 0)
				goto out;
			if (t == 1) {
				c->r_ubuf = NULL;
				return n;
			}
		}
	}
	if (rx_fill(c, deadline, quiet) == 0)
		r = rx_deliver(c, buf, len, allocp);
out:
	c->r_ubuf = NULL;
	if (r < 0 && c->a_user) { /* only after a sticky error */
		int e = errno;
		asm_reset(c);
		if (!c->rerr)
			c->rerr = e;
		errno = e;
	}
	return r;
}

static ssize_t mq_recv_slot(struct ipc_conn *cc, void *buf, size_t len, void **allocp, int64_t deadline)
{
	struct mq_conn *c = C(cc);
	pthread_mutex_lock(&c->rmu);
	ssize_t r = rx_msg(c, buf, len, allocp, deadline, 0);
	pthread_mutex_unlock(&c->rmu);
	return r;
}

/* The first message as a receive; then only what is already queued. */
static ssize_t mq_recv_batch_slot(struct ipc_conn *cc, struct iovec *msgs, size_t n, int64_t deadline)
{
	struct mq_conn *c = C(cc);
	size_t i = 0;
	pthread_mutex_lock(&c->rmu);
	for (; i < n; i++) {
		ssize_t r = rx_msg(c, msgs[i].iov_base, msgs[i].iov_len, NULL, i ? IPC__NOW : deadline, i > 0);
		if (r < 0)
			break; /* after the first: the error shows on the next call */
		msgs[i].iov_len = (size_t)r;
	}
	pthread_mutex_unlock(&c->rmu);
	return i ? (ssize_t)i : -1;
}

/* ---- readiness -------------------------------------------------------- */

static void ep_set(struct mq_conn *c, mqd_t q, unsigned *cur, unsigned want)
{
	if (*cur == want)
		return;
	struct epoll_event ev = {.events = want, .data.fd = q};
	if (epoll_ctl(c->efd, EPOLL_CTL_MOD, q, &ev) == 0)
		*cur = want;
}

static int mq_conn_fd(const struct ipc_conn *cc)
{
	return ((const struct mq_conn *)cc)->efd;
}

static int mq_conn_ready(struct ipc_conn *cc, int events, short *pollev)
{
	struct mq_conn *c = C(cc);
	int r = 0, held = 0;
	int e = errno;
	if (events & IPC_POLLIN) {
		if (pthread_mutex_trylock(&c->rmu) == 0) {
			if (c->rerr || c->pend || (c->asm_on && c->ahave == c->atotal))
				r |= IPC_POLLIN;
			else if (rx_fill(c, IPC__NOW, 0) == 0 || errno != EAGAIN)
				r |= IPC_POLLIN;
			if (c->rerr && c->rerr != EPIPE)
				r |= c->rerr == ECONNRESET ? IPC_POLLHUP : IPC_POLLERR;
			else if (c->rerr == EPIPE)
				r |= IPC_POLLHUP;
			pthread_mutex_unlock(&c->rmu);
		}
	}
	if (pthread_mutex_trylock(&c->smu) == 0) {
		held = 0;
		if (events & IPC_POLLOUT) {
			if (c->serr)
				r |= IPC_POLLOUT | IPC_POLLERR;
			else if (c->hlen - c->hoff + SMALL_MSG + 4 <= c->base.opt.capacity)
				r |= IPC_POLLOUT;
		}
		pthread_mutex_unlock(&c->smu);
	}
	int st = peer_check(c);
	if (st != P_OPEN) {
		r |= IPC_POLLHUP;
		if (events & IPC_POLLOUT)
			r |= IPC_POLLOUT;
		if (events & IPC_POLLIN)
			r |= IPC_POLLIN; /* receive returns at once (data or end) */
		if (st == P_REFUSED)
			r |= IPC_POLLERR;
	}
	pthread_mutex_lock(&c->kmu);
	ep_set(c, c->rq_nb, &c->ev_rq, (events & IPC_POLLIN) ? EPOLLIN : 0);
	ep_set(c, c->sq_nb, &c->ev_sq, (held || ((events & IPC_POLLOUT) && !(r & IPC_POLLOUT))) ? EPOLLOUT : 0);
	pthread_mutex_unlock(&c->kmu);
	*pollev = POLLIN;
	errno = e;
	return r;
}

static int mq_peer_cred(const struct ipc_conn *cc, struct ipc_cred *cred)
{
	*cred = ((const struct mq_conn *)cc)->cred;
	return 0;
}

/* ---- connection life -------------------------------------------------- */

/* Live connections whose queues this process made: a sizing hint only
 * (RLIMIT_MSGQUEUE is one budget for every queue of the user). */
static atomic_int live_conns;

static void conn_free(struct mq_conn *c)
{
	if (c->counted)
		atomic_fetch_sub(&live_conns, 1);
	ipc__close_fd(c->sock);
	ipc__close_fd(c->efd);
	mqd_t q[4] = {c->sq, c->sq_nb, c->rq, c->rq_nb};
	for (int i = 0; i < 4; i++)
		if (q[i] != (mqd_t)-1)
			mq_close(q[i]);
	free(c->sbuf);
	free(c->rbuf);
	free(c->hb);
	free(c->abuf);
	free(c->fl_buf);
	pthread_cond_destroy(&c->room_cv);
	pthread_cond_destroy(&c->fl_cv);
	pthread_mutex_destroy(&c->kmu);
	pthread_mutex_destroy(&c->smu);
	pthread_mutex_destroy(&c->rmu);
	free(c);
}

/* fds: c2s blocking, c2s nonblocking, s2c blocking, s2c nonblocking.
 * Takes ownership of sock and fds (closed on failure). */
static struct mq_conn *conn_new(int sock, const int fds[4], int is_client)
{
	struct mq_conn *c = calloc(1, sizeof *c);
	if (!c) {
		ipc__close_fd(sock);
		for (int i = 0; i < 4; i++)
			ipc__close_fd(fds[i]);
		return NULL;
	}
	pthread_mutex_init(&c->kmu, NULL);
	pthread_mutex_init(&c->smu, NULL);
	pthread_mutex_init(&c->rmu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->room_cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&c->fl_cv, NULL);
	atomic_init(&c->fl_stop, 0);
	c->sock = sock;
	c->efd = -1;
	c->is_client = is_client;
	c->sq = is_client ? fds[0] : fds[2];
	c->sq_nb = is_client ? fds[1] : fds[3];
	c->rq = is_client ? fds[2] : fds[0];
	c->rq_nb = is_client ? fds[3] : fds[1];
	atomic_init(&c->peer_max, SIZE_MAX);
	atomic_init(&c->hpend, 0);
	c->hello_done = !is_client;

	struct mq_attr sa, ra;
	struct ucred uc;
	socklen_t ul = sizeof uc;
	if (mq_getattr(c->sq, &sa) < 0 || mq_getattr(c->rq, &ra) < 0)
		goto fail;
	c->s_msgsize = (size_t)sa.mq_msgsize;
	c->s_maxmsg = sa.mq_maxmsg;
	c->r_msgsize = (size_t)ra.mq_msgsize;
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &uc, &ul) < 0)
		goto fail;
	c->cred.pid = uc.pid;
	c->cred.uid = uc.uid;
	c->cred.gid = uc.gid;
	c->sbuf = malloc(c->s_msgsize);
	c->rbuf = malloc(c->r_msgsize);
	c->fl_buf = malloc(c->s_msgsize);
	if (!c->sbuf || !c->rbuf || !c->fl_buf)
		goto fail;
	c->efd = epoll_create1(EPOLL_CLOEXEC);
	if (c->efd < 0)
		goto fail;
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = c->rq_nb};
	if (epoll_ctl(c->efd, EPOLL_CTL_ADD, c->rq_nb, &ev) < 0)
		goto fail;
	c->ev_rq = EPOLLIN;
	ev.events = 0;
	ev.data.fd = c->sq_nb;
	if (epoll_ctl(c->efd, EPOLL_CTL_ADD, c->sq_nb, &ev) < 0)
		goto fail;
	ev.events = EPOLLIN | EPOLLRDHUP;
	ev.data.fd = sock;
	if (epoll_ctl(c->efd, EPOLL_CTL_ADD, sock, &ev) < 0)
		goto fail;
	return c;
fail:
	conn_free(c);
	return NULL;
}

static int mq_close_slot(struct ipc_conn *cc, int64_t linger)
{
	struct mq_conn *c = C(cc);
	int rc = 0, err = 0;
	pthread_mutex_lock(&c->smu);
	if (c->hoff < c->hlen && tx_wait_room(c, c->base.opt.capacity + 1, linger) < 0) {
		rc = -1;
		err = errno;
	}
	int clean = c->hoff == c->hlen && !c->serr;
	atomic_store(&c->fl_stop, 1);
	pthread_cond_signal(&c->fl_cv);
	pthread_mutex_unlock(&c->smu);
	if (c->fl_started) {
		pthread_join(c->fl_th, NULL);
		c->fl_started = 0;
	}
	if (clean && peer_check(c) == P_OPEN) {
		memset(c->sbuf, 0, c->s_msgsize);
		put32(c->sbuf + c->s_msgsize - 8, TAG_CLOSE);
		while (mq_send(c->sq_nb, (char *)c->sbuf, c->s_msgsize, 0) < 0 && errno == EINTR)
			;
		while (send(c->sock, "C", 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno == EINTR)
			;
	}
	/* make the peer's sends find a full queue, so that they look at the
	 * socket: drain what it sent us, then fill with CLOSE markers */
	memset(c->rbuf, 0, c->r_msgsize);
	for (int i = 0; i < 4096 && mq_receive(c->rq_nb, (char *)c->rbuf, c->r_msgsize, NULL) >= 0; i++)
		;
	memset(c->rbuf, 0, c->r_msgsize);
	put32(c->rbuf + c->r_msgsize - 8, TAG_CLOSE);
	for (int i = 0; i < 4096 && mq_send(c->rq_nb, (char *)c->rbuf, c->r_msgsize, 0) == 0; i++)
		;
	conn_free(c);
	if (rc < 0)
		errno = err;
	return rc;
}

/* ---- queue creation (client) ------------------------------------------ */

/* Create one queue; opens it blocking (*blk) and nonblocking (*nb) and
 * unlinks the name before returning. */
static int make_queue(long maxmsg, long msgsize, unsigned mode, mqd_t *blk, mqd_t *nb)
{
	unsigned char rnd[8];
	char name[64];
	if (ipc__random(rnd, sizeof rnd) < 0)
		return -1;
	snprintf(name, sizeof name, "/libipc-mq.%d.%02x%02x%02x%02x%02x%02x%02x%02x", (int)getpid(), rnd[0], rnd[1],
		 rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	struct mq_attr a = {.mq_maxmsg = maxmsg, .mq_msgsize = msgsize};
	*blk = mq_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode, &a);
	if (*blk == (mqd_t)-1)
		return -1;
	*nb = mq_open(name, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	int e = errno;
	mq_unlink(name);
	if (*nb == (mqd_t)-1) {
		mq_close(*blk);
		errno = e;
		return -1;
	}
	return 0;
}

/* The two queues of a connection, attributes within the kernel limits. */
static int make_queues(const struct ipc_options *o, int fds[4], int nlive)
{
	long msg_max = read_proc_long("/proc/sys/fs/mqueue/msg_max", 10);
	long size_max = read_proc_long("/proc/sys/fs/mqueue/msgsize_max", 8192);
	long maxmsg = msg_max < 64 ? msg_max : 64;
	long msgsize = (long)((o->capacity + 8 + (size_t)maxmsg - 1) / (size_t)maxmsg);
	msgsize = (msgsize + 7) & ~7L;
	if (msgsize < MIN_MSGSIZE)
		msgsize = MIN_MSGSIZE;
	if (msgsize > size_max)
		msgsize = size_max;
	if (nlive >= MID_CONNS)
		msgsize = MIN_MSGSIZE;
	else if (nlive >= BIG_CONNS && msgsize > MID_MSGSIZE)
		msgsize = MID_MSGSIZE;
	if (msgsize < 64) {
		errno = EINVAL;
		return -1;
	}
	for (int i = 0; i < 4; i++)
		fds[i] = -1;
	for (int q = 0; q < 2;) {
		mqd_t b, n;
		if (make_queue(maxmsg, msgsize, o->mode, &b, &n) == 0) {
			fds[2 * q] = b;
			fds[2 * q + 1] = n;
			q++;
			continue;
		}
		if (errno == EEXIST)
			continue;
		/* RLIMIT_MSGQUEUE (EMFILE) is a budget shared by every queue of
		 * the user: once it runs short, drop straight to the smallest
		 * queues, so that what is left serves many connections */
		if ((errno == EMFILE || errno == ENOMEM) && msgsize > MIN_MSGSIZE) {
			msgsize = MIN_MSGSIZE;
			continue;
		}
		if ((errno == EMFILE || errno == ENOMEM) && maxmsg > 2) {
			maxmsg /= 2;
			continue;
		}
		if (errno == EINVAL && (maxmsg > 10 || msgsize > 8192)) {
			maxmsg = maxmsg > 10 ? 10 : maxmsg;
			msgsize = msgsize > 8192 ? 8192 : msgsize;
			continue;
		}
		int e = errno;
		for (int i = 0; i < 4; i++)
			if (fds[i] >= 0)
				mq_close(fds[i]);
		errno = e;
		return -1;
	}
	return 0;
}

/* ---- connect (the shared rendezvous is lib/rendezvous.c) -------------- */

/* The listener's verdict as errno (0: accepted), waiting until deadline.
 * The reply stays queued: peer_check reads it again. */
static int mq_verdict(int sock, int64_t deadline)
{
	unsigned char h[HELLO_LEN];
	if (ipc__rdv_peek_reply(sock, h, HELLO_LEN, deadline) < 0)
		return errno;
	if (hello_check(h) < 0)
		return EPROTO;
	return ipc__rdv_status_errno(h[5]);
}

static struct ipc_conn *mq_connect(const char *name, const struct ipc_options *o, int64_t deadline)
{
	struct sockaddr_un sa;
	socklen_t sl;
	struct ipc_cred cr;
	int fds[4] = {-1, -1, -1, -1}, counted = 0;
	if (check_name(name) < 0 || rendezvous_addr(name, &sa, &sl) < 0)
		return NULL;
	/* who listens is checked before any queue is made */
	int s = ipc__rdv_connect(&sa, sl, o, deadline, &cr);
	if (s < 0)
		return NULL;
	int nlive = atomic_fetch_add(&live_conns, 1);
	counted = 1;
	if (make_queues(o, fds, nlive) < 0)
		goto fail;
	unsigned char h[HELLO_LEN];
	hello_encode(h, 0, o->max_msg_size);
	if (ipc__rdv_send_hello(s, h, HELLO_LEN, fds, 4, deadline) < 0) {
		if (errno == ECONNREFUSED) { /* refused early: its reason, if it gave one */
			int v = mq_verdict(s, IPC__NOW);
			errno = v && v != EAGAIN ? v : ECONNREFUSED;
		}
		goto fail;
	}
	/* connect never waits for the listener's accept (ipc_connect(3)): a
	 * refusal (its mode) reaches the data path in the listener's hello */
	struct mq_conn *c = conn_new(s, fds, 1);
	if (!c) {
		atomic_fetch_sub(&live_conns, 1);
		return NULL;
	}
	c->counted = 1;
	return &c->base;
fail:
	if (counted)
		atomic_fetch_sub(&live_conns, 1);
	ipc__close_fd(s);
	for (int i = 0; i < 4; i++)
		if (fds[i] >= 0) {
			int e = errno;
			mq_close(fds[i]);
			errno = e;
		}
	return NULL;
}

/* ---- listener --------------------------------------------------------- */

struct mq_listener {
	struct ipc__rdv_listener rdv; /* first: the shared listener */
	size_t max_msg;               /* our max_msg_size, sent in the reply */
	long msgsize_max;             /* largest queue message a client may
	                                 make us buffer: capacity or
	                                 max_msg_size + 8, at most 16 MiB */
	char name[NAME_MAX + 2];
};

/* The listener's reply: a hello carrying the status. */
static void mq_reply(struct ipc__rdv_listener *rl, int sock, enum ipc__rdv_status status)
{
	struct mq_listener *l = (struct mq_listener *)rl;
	unsigned char h[HELLO_LEN];
	hello_encode(h, (int)status, status == IPC__RDV_OK ? l->max_msg : 0);
	ssize_t r = send(sock, h, HELLO_LEN, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)r;
}

/* Is fd a POSIX queue opened read-write with the O_NONBLOCK flag we
 * expect and attributes within what we accept? */
static int mq_fd_ok(int fd, int nonblock, long msgsize_max, struct stat *st)
{
	struct statfs sf;
	struct mq_attr a;
	if (fstatfs(fd, &sf) < 0 || sf.f_type != MQUEUE_MAGIC_FS || fstat(fd, st) < 0 || mq_getattr(fd, &a) < 0)
		return 0;
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_ACCMODE) != O_RDWR)
		return 0;
	if (a.mq_msgsize < 64 || a.mq_msgsize > msgsize_max || a.mq_maxmsg < 1)
		return 0;
	return !!(a.mq_flags & O_NONBLOCK) == !!nonblock;
}

/* Validate a client's hello and queues and build the connection
 * (ipc__rdv_ops.build). */
static int mq_build(struct ipc__rdv_listener *rl, int *sock, const unsigned char *h, int *fds,
		    const struct ipc_cred *cr, void **out, enum ipc__rdv_status *status)
{
	struct mq_listener *l = (struct mq_listener *)rl;
	struct stat st[4];
	*status = IPC__RDV_PROTO;
	if (hello_check(h) < 0 || h[5] != IPC__RDV_OK)
		return IPC__RDV_REFUSE;
	for (int i = 0; i < 4; i++)
		if (!mq_fd_ok(fds[i], i & 1, l->msgsize_max, &st[i])) {
			struct mq_attr a;
			if (mq_getattr(fds[i], &a) == 0 && a.mq_msgsize > l->msgsize_max)
				*status = IPC__RDV_LIMIT;
			return IPC__RDV_REFUSE;
		}
	if (st[0].st_ino != st[1].st_ino || st[2].st_ino != st[3].st_ino || st[0].st_ino == st[2].st_ino)
		return IPC__RDV_REFUSE;
	/* conn_new closes what it is given on failure: give it a duplicate,
	 * so that the candidate survives a resource error of ours */
	int s2 = fcntl(*sock, F_DUPFD_CLOEXEC, 0);
	if (s2 < 0)
		return IPC__RDV_RETRY;
	int mine[4];
	for (int i = 0; i < 4; i++) {
		mine[i] = fds[i];
		fds[i] = -1;
	}
	struct mq_conn *c = conn_new(s2, mine, 0);
	if (!c)
		return errno == EMFILE || errno == ENFILE || errno == ENOMEM ? IPC__RDV_RETRY : IPC__RDV_REFUSE;
	uint32_t m = get32(h + 8);
	atomic_store(&c->peer_max, m ? (size_t)m : SIZE_MAX);
	ipc__close_fd(*sock);
	*sock = s2;
	*out = c;
	return IPC__RDV_BUILT;
}

static void mq_conn_drop(void *c)
{
	conn_free(c);
}

static const struct ipc__rdv_ops mq_rdv_ops = {
	.hello_len = HELLO_LEN,
	.nfds = 4,
	.build = mq_build,
	.reply = mq_reply,
	.conn_drop = mq_conn_drop,
};

static struct ipc_listener *mq_listen(const char *name, const struct ipc_options *o)
{
	struct sockaddr_un sa;
	socklen_t sl;
	if (check_name(name) < 0 || rendezvous_addr(name, &sa, &sl) < 0)
		return NULL;
	struct mq_listener *l = (struct mq_listener *)ipc__rdv_listener_new(sizeof *l, &mq_rdv_ops, &sa, sl, o);
	if (!l)
		return NULL;
	l->max_msg = o->max_msg_size;
	size_t big = o->max_msg_size + 8 > o->capacity ? o->max_msg_size + 8 : o->capacity;
	l->msgsize_max = big > ((size_t)16 << 20) ? (16L << 20) : (long)big;
	memcpy(l->name, name, strlen(name) + 1);
	return &l->rdv.base;
}

static int mq_listener_addr(const struct ipc_listener *ll, char *buf, size_t len)
{
	return ipc__format(buf, len, "mq:%s", ((const struct mq_listener *)ll)->name);
}

const struct ipc__transport ipc__mq_transport = {
	.scheme = "mq",
	.listen = mq_listen,
	.accept = ipc__rdv_accept,
	.listener_addr = mq_listener_addr,
	.listener_fd = ipc__rdv_listener_fd,
	.listener_ready = ipc__rdv_listener_ready,
	.listener_close = ipc__rdv_listener_close,
	.connect = mq_connect,
	.send = mq_send_slot,
	.recv = mq_recv_slot,
	.send_batch = mq_send_batch_slot,
	.recv_batch = mq_recv_batch_slot,
	.flush = mq_flush_slot,
	.conn_fd = mq_conn_fd,
	.conn_ready = mq_conn_ready,
	.peer_cred = mq_peer_cred,
	.close = mq_close_slot,
};
