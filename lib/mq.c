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
 * random names "/libipc-mq.<pid>.<16 hex>" with O_CREAT|O_EXCL and mode
 * 0600 whatever opt.mode says (the queues travel by SCM_RIGHTS: nobody
 * needs to open them by name; who may connect is decided by the
 * rendezvous), opens each a second time (a second open file description,
 * O_NONBLOCK, which the hello carries for compatibility; the data path uses
 * one descriptor per queue) and unlinks the names at once.  A process
 * killed between mq_open and mq_unlink leaves a name: every later connect
 * and listen removes the names of our prefix and uid whose pid is dead
 * (reap_leftovers).  The four descriptors travel to the listener with
 * SCM_RIGHTS in a 16-byte hello: "LIPQ", version 2, status, pad, u32 max
 * message size, u32 0.  connect never waits for accept.  accept (mq_build)
 * validates the hello and the descriptors (mqueue fs, O_RDWR, flags,
 * message size within our own capacity / max_msg_size), the rendezvous
 * enforces opt.mode against the client's SO_PEERCRED (ipc__mode_allows)
 * and answers with the same hello carrying a status (enum
 * ipc__rdv_status), which the client reads lazily; a status that is not
 * one of those codes is EPROTO, and a refused client sees the error on its
 * next calls.
 *
 * Queue shape.  RLIMIT_MSGQUEUE is one budget for every queue of a user
 * (800 KiB by default), charged maxmsg * (msgsize + 96) bytes per queue on
 * 64-bit Linux.  So queues are small: Q_MAXMSG messages of Q_MSGSIZE
 * bytes (within /proc/sys/fs/mqueue/msg_max and msgsize_max), about 12 KiB
 * per connection, so that one user's budget serves about 65 connections;
 * if mq_open fails with EMFILE (budget spent) the queues drop to
 * Q_MAXMSG_LOW x Q_MSGSIZE_LOW once, then connect fails with EMFILE
 * (ENOSPC: queues_max).  Larger messages are chunked (mq_proto.h).  The
 * price is throughput for large messages (a 4 KiB message is 9 queue
 * messages).  Sizing by probing the budget (big queues while it has room)
 * was tried and dropped: the probes themselves spend the budget for a
 * moment, so concurrent connects fail with EMFILE.
 *
 * Never trusting the queue flags.  The peer shares the open file
 * descriptions of both queues and may set or clear O_NONBLOCK on them at
 * any time (mq_setattr).  So no call here depends on that flag: every
 * queue operation is mq_timedsend / mq_timedreceive with an absolute
 * timeout long passed (EAGAIN and ETIMEDOUT both mean "would wait"), and
 * every wait is a poll(2) on the queue descriptor (Linux supports it) and
 * on the connection's unix socket, until the caller's deadline.
 *
 * Liveness.  The unix socket stays open for the life of the connection.
 * An orderly close writes a CLOSE chunk into the queue (if it has room)
 * and one byte 'C' on the socket, then closes; EOF without 'C' means the
 * peer died.  Every wait also watches the socket, so a blocked call sees
 * the peer's close or death at once.  A send looks at the socket when the
 * queue is full and every CHECK_EVERY sends otherwise (so a send into a
 * queue with room costs exactly one mq_timedsend).  Receive delivers
 * everything queued before reporting EPIPE (closed) or ECONNRESET (died).
 *
 * Held data (ipc.7): a send that cannot wait (IPC_DONTWAIT, nonblock,
 * timeout 0) is accepted whole whenever nothing is held: what the queue
 * does not take now is copied into user space (one message at most, at
 * most max_msg_size), and later calls move it on: send, flush, receive
 * (also while it waits), conn_ready and close.  Such a send fails with
 * EAGAIN only while an earlier message is held; IPC_POLLOUT means exactly
 * "nothing is held".  A timed send whose deadline passes after its first
 * chunk went out holds the rest likewise.  No thread is ever started.
 * Close pushes the held message until the linger deadline, reading and
 * discarding what the peer sends meanwhile.
 *
 * Batches: send_batch waits for the first message as a send, then passes
 * single-chunk messages while the queue takes them at once (nothing is
 * held for a batch); recv_batch waits for the first message, then takes
 * what is queued (no socket check).
 *
 * Readiness descriptor: an epoll fd holding the receive queue (EPOLLIN,
 * while IN is asked), the socket (EOF/'C'/hello) and the send queue
 * (EPOLLOUT, while a message is held or OUT is asked and not ready).
 *
 * Threads: send side under smu, receive side under rmu, socket state and
 * epoll registration under kmu; lock order rmu, smu, kmu, and a receive
 * only ever trylocks smu (to move held data).  After fork only one process
 * may use a connection (the queues' open file descriptions are shared).
 */
#define _GNU_SOURCE
#include <dirent.h>
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
#include "mq_proto.h"

#define CHECK_EVERY 256 /* sends between two socket checks while flowing */
#define MQ_VERSION 2
#define HELLO_LEN 16
/* Queue shape (see "Queue shape" above). */
#define Q_MAXMSG 10
#define Q_MSGSIZE 512
#define Q_MAXMSG_LOW 10
#define Q_MSGSIZE_LOW 128
#define Q_DIR "/dev/mqueue"
#define Q_PREFIX "libipc-mq."
#define MQUEUE_MAGIC_FS 0x19800202
#define HELD_KEEP ((size_t)1 << 20) /* a larger held buffer is freed once sent */
#define DRAIN_ROUND 64 /* chunks a lingering close discards per wake-up */

enum { P_OPEN, P_CLOSED, P_DEAD, P_REFUSED };

/* Outcome of putting a chunk into a queue. */
enum q_res {
	Q_DONE, /* queued */
	Q_FULL, /* deadline reached first (errno EAGAIN or ETIMEDOUT) */
	Q_ERR,  /* errno: the peer is gone, or the queue failed */
};

/* The one message a send accepted but the queue has not taken yet. */
struct mq_held {
	unsigned char *buf; /* payload bytes [base, total), never NULL when on */
	size_t cap;
	size_t total, base;
	size_t off; /* payload bytes already queued */
	int on;
	int first; /* no chunk of it is queued yet */
};

struct mq_conn {
	struct ipc_conn base;
	int sock, efd;
	mqd_t sq, rq; /* send queue, receive queue */
	size_t s_msgsize, r_msgsize;
	int is_client;
	struct ipc_cred cred;

	pthread_mutex_t kmu; /* socket state, epoll registration */
	unsigned char hbuf[HELLO_LEN];
	size_t hgot;
	int hello_done, closing, pstate, perr;
	atomic_size_t peer_max;
	atomic_int gone; /* pstate != P_OPEN (read without kmu) */
	unsigned ev_rq, ev_sq;

	pthread_mutex_t smu; /* send side */
	unsigned char *sbuf; /* one chunk being built */
	struct mq_held held;
	atomic_int held_on; /* held.on, read without smu */
	unsigned s_cnt;     /* sends since the last socket check */
	int serr;

	pthread_mutex_t rmu; /* receive side */
	unsigned char *rbuf;
	size_t pend_len;
	int pend;       /* rbuf holds a whole small message of pend_len */
	int first_kept; /* rbuf holds a FIRST chunk whose buffer failed */
	struct ipc__mq_asm as;
	unsigned char *r_ubuf; /* caller's buffer for this call, or NULL */
	size_t r_ulen;
	int rerr;
};

static struct mq_conn *C(struct ipc_conn *c)
{
	return (struct mq_conn *)c;
}

/* ---- small helpers ---------------------------------------------------- */

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

static void hello_encode(unsigned char *h, int status, size_t max_msg)
{
	memset(h, 0, HELLO_LEN);
	memcpy(h, "LIPQ", 4);
	h[4] = MQ_VERSION;
	h[5] = (unsigned char)status;
	ipc__mq_put32(h + 8, (uint32_t)max_msg);
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


/* ---- queue operations that never depend on O_NONBLOCK ---------------- */

/* An absolute time long passed: a timed queue call with it never waits,
 * whatever flag the (shared) open file description carries. */
static const struct timespec q_past = {0, 0};

/* One try to queue a chunk. */
static enum q_res q_put(mqd_t q, const void *buf, size_t n)
{
	for (;;) {
		if (mq_timedsend(q, buf, n, 0, &q_past) == 0)
			return Q_DONE;
		if (errno == EINTR)
			continue;
		return errno == EAGAIN || errno == ETIMEDOUT ? Q_FULL : Q_ERR;
	}
}

/* One try to take a chunk: its length, or -1 (EAGAIN: empty). */
static ssize_t q_get(mqd_t q, void *buf, size_t cap)
{
	for (;;) {
		ssize_t n = mq_timedreceive(q, buf, cap, NULL, &q_past);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno == ETIMEDOUT)
			errno = EAGAIN;
		return -1;
	}
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
					uint32_t m = ipc__mq_get32(c->hbuf + 8);
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

/* Wait until deadline for queue a to be ready for eva (or b for evb; -1:
 * none), or for news on the socket (read at once by peer_check).  0: look
 * again; -1 with errno only if poll itself failed. */
static int q_wait(struct mq_conn *c, mqd_t a, short eva, mqd_t b, short evb, int64_t deadline)
{
	struct pollfd p[3] = {
		{.fd = a, .events = eva},
		{.fd = b, .events = evb},
		{.fd = atomic_load(&c->gone) ? -1 : c->sock, .events = POLLIN},
	};
	int r = poll(p, 3, ipc__remaining_ms(deadline));
	if (r < 0 && errno != EINTR && errno != EAGAIN)
		return -1;
	if (r > 0 && p[2].revents)
		peer_check(c);
	return 0;
}

/* ---- send side (smu held) --------------------------------------------- */

/* The send direction is broken for good: e (sticky). */
static int sq_broken(struct mq_conn *c, int e)
{
	c->serr = e;
	errno = e;
	return -1;
}

/* Put one chunk into the send queue, waiting until deadline. */
static enum q_res sq_put(struct mq_conn *c, const void *buf, size_t n, int64_t deadline)
{
	for (;;) {
		enum q_res r = q_put(c->sq, buf, n);
		if (r != Q_FULL)
			return r;
		/* a wait watches the socket itself (as in rx_chunk) */
		if ((deadline == IPC__NOW || atomic_load(&c->gone)) && peer_check(c) != P_OPEN) {
			errno = peer_err(c, 1);
			return Q_ERR;
		}
		if (ipc__deadline_passed(deadline)) {
			ipc__wouldblock(deadline);
			return Q_FULL;
		}
		if (q_wait(c, c->sq, POLLOUT, -1, 0, deadline) < 0)
			return Q_ERR;
	}
}

static void held_done(struct mq_conn *c)
{
	struct mq_held *h = &c->held;
	h->on = 0;
	atomic_store(&c->held_on, 0);
	if (h->cap > HELD_KEEP) {
		free(h->buf);
		h->buf = NULL;
		h->cap = 0;
	}
}

/* Move the held message into the queue until deadline.  0: nothing is
 * held any more; -1: EAGAIN/ETIMEDOUT (still held) or a sticky error. */
static int held_push(struct mq_conn *c, int64_t deadline)
{
	struct mq_held *h = &c->held;
	size_t ms = c->s_msgsize;
	while (h->on) {
		size_t t = ipc__mq_chunk_payload(ms, h->total, h->off, h->first);
		const unsigned char *src = h->buf + (h->off - h->base);
		size_t len = t;
		if (h->first && h->total >= ms) {
			memcpy(c->sbuf, src, t);
			ipc__mq_trailer(c->sbuf, ms, IPC__MQ_TAG_FIRST, (uint32_t)h->total);
			src = c->sbuf;
			len = ms;
		}
		enum q_res r = sq_put(c, src, len, deadline);
		if (r == Q_FULL)
			return -1;
		if (r == Q_ERR)
			return sq_broken(c, errno);
		h->first = 0;
		h->off += t;
		if (h->off == h->total)
			held_done(c);
	}
	return 0;
}

struct iov_cursor {
	const struct iovec *iov;
	int cnt;
	size_t off;
};

static void iov_copy(struct iov_cursor *k, unsigned char *dst, size_t n)
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
		if (dst) {
			memcpy(dst, (const unsigned char *)k->iov->iov_base + k->off, t);
			dst += t;
		}
		n -= t;
		k->off += t;
	}
}

/* t contiguous bytes at the cursor: in place if possible, else copied. */
static const void *iov_take(struct iov_cursor *k, size_t t, unsigned char *scratch)
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
	iov_copy(k, scratch, t);
	return scratch;
}

/* Hold payload bytes [off, total) of the message in iov (first: none of
 * it is queued yet); later calls move them on. */
static int held_keep(struct mq_conn *c, const struct iovec *iov, int iovcnt, size_t total, size_t off,
		     int first)
{
	struct mq_held *h = &c->held;
	size_t n = total - off;
	if (!h->buf || h->cap < n) {
		unsigned char *p = malloc(n ? n : 1);
		if (!p) {
			errno = ENOMEM;
			/* a message cut after its first chunk breaks the stream */
			return first ? -1 : sq_broken(c, ENOMEM);
		}
		free(h->buf);
		h->buf = p;
		h->cap = n ? n : 1;
	}
	struct iov_cursor k = {iov, iovcnt, 0};
	iov_copy(&k, NULL, off);
	iov_copy(&k, h->buf, n);
	h->total = total;
	h->base = h->off = off;
	h->first = first;
	h->on = 1;
	atomic_store(&c->held_on, 1);
	return 0;
}

/* Is the peer still there?  Checked every CHECK_EVERY sends, and at once
 * once it is known gone (a send that finds the queue full checks anyway). */
static int sq_alive(struct mq_conn *c)
{
	if (atomic_load_explicit(&c->gone, memory_order_relaxed) || ++c->s_cnt >= CHECK_EVERY) {
		c->s_cnt = 0;
		if (peer_check(c) != P_OPEN)
			return sq_broken(c, peer_err(c, 1));
	}
	return 0;
}

static int tx_msg(struct mq_conn *c, const struct iovec *iov, int iovcnt, size_t total, int64_t deadline)
{
	size_t ms = c->s_msgsize, off = 0;
	if (c->serr) {
		errno = c->serr;
		return -1;
	}
	if (total > atomic_load(&c->peer_max)) {
		errno = EMSGSIZE;
		return -1;
	}
	if (sq_alive(c) < 0)
		return -1;
	/* order: behind what is held; EAGAIN while it still is */
	if (c->held.on && held_push(c, deadline) < 0)
		return -1;
	struct iov_cursor k = {iov, iovcnt, 0};
	for (int first = 1;; first = 0) {
		size_t t = ipc__mq_chunk_payload(ms, total, off, first);
		const void *src;
		size_t len = t;
		if (first && total >= ms) {
			iov_copy(&k, c->sbuf, t);
			ipc__mq_trailer(c->sbuf, ms, IPC__MQ_TAG_FIRST, (uint32_t)total);
			src = c->sbuf;
			len = ms;
		} else {
			src = iov_take(&k, t, c->sbuf);
		}
		enum q_res r = sq_put(c, src, len, deadline);
		if (r == Q_ERR)
			return sq_broken(c, errno);
		if (r == Q_FULL) {
			/* without waiting the message is accepted whole; a
			 * timed send holds what is left once it has begun */
			if (first && deadline != IPC__NOW)
				return -1;
			return held_keep(c, iov, iovcnt, total, off, first);
		}
		off += t;
		if (off == total)
			return 0;
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
		    c->held.on || c->serr)
			break;
		if (atomic_load_explicit(&c->gone, memory_order_relaxed) || ++c->s_cnt >= CHECK_EVERY) {
			c->s_cnt = 0;
			if (peer_check(c) != P_OPEN)
				break; /* the next call reports it */
		}
		if (q_put(c->sq, msgs[i].iov_base, msgs[i].iov_len) != Q_DONE)
			break; /* full: done; an error shows on the next call */
	}
	pthread_mutex_unlock(&c->smu);
	return (ssize_t)i;
}

static int mq_flush_slot(struct ipc_conn *cc, int64_t deadline)
{
	struct mq_conn *c = C(cc);
	int r = 0;
	pthread_mutex_lock(&c->smu);
	if (c->serr) {
		errno = c->serr;
		r = -1;
	} else {
		r = held_push(c, deadline);
	}
	pthread_mutex_unlock(&c->smu);
	return r;
}

/* From the receive side or readiness: move held data on without waiting,
 * unless a sender is busy (it moves it itself). */
static void held_nudge(struct mq_conn *c)
{
	if (!atomic_load(&c->held_on) || pthread_mutex_trylock(&c->smu) != 0)
		return;
	int e = errno;
	if (c->held.on && !c->serr)
		held_push(c, IPC__NOW);
	errno = e;
	pthread_mutex_unlock(&c->smu);
}

/* ---- receive side (rmu held) ------------------------------------------ */

/* The receive direction is broken for good: e (sticky). */
static int rq_broken(struct mq_conn *c, int e)
{
	c->rerr = e;
	errno = e;
	return -1;
}

/* Peer gone: what is still queued, then the final error (sticky). */
static ssize_t rq_gone(struct mq_conn *c, void *buf, size_t cap)
{
	ssize_t n = q_get(c->rq, buf, cap);
	if (n >= 0)
		return n;
	return rq_broken(c, peer_err(c, 0));
}

/* Receive one chunk into buf (cap >= r_msgsize) by deadline.  The socket
 * is looked at only when the call would wait (unless quiet: a batch's
 * later messages); while waiting, held send data moves on too. */
static ssize_t rx_chunk(struct mq_conn *c, void *buf, size_t cap, int64_t deadline, int quiet)
{
	for (;;) {
		ssize_t n = q_get(c->rq, buf, cap);
		if (n >= 0)
			return n;
		if (errno != EAGAIN)
			return rq_broken(c, errno);
		if (quiet)
			return -1;
		held_nudge(c);
		/* a wait watches the socket itself: look now only if it will
		 * not wait, or once the peer is known gone */
		if ((deadline == IPC__NOW || atomic_load(&c->gone)) && peer_check(c) != P_OPEN)
			return rq_gone(c, buf, cap);
		if (ipc__deadline_passed(deadline))
			return ipc__wouldblock(deadline);
		int held = atomic_load(&c->held_on);
		if (q_wait(c, c->rq, POLLIN, held ? c->sq : -1, POLLOUT, deadline) < 0)
			return -1;
	}
}

/* Take in one chunk of n bytes now at src (rbuf or the caller's buffer).
 * 1: a whole small message (the caller decides), 0: consumed, -1 error. */
static int rx_take(struct mq_conn *c, const unsigned char *src, size_t n)
{
	switch (ipc__mq_take(&c->as, src, n, c->r_msgsize, c->base.opt.max_msg_size, c->r_ubuf, c->r_ulen)) {
	case IPC__MQ_WHOLE:
		return 1;
	case IPC__MQ_PART:
		c->first_kept = 0;
		return 0;
	case IPC__MQ_CLOSE:
		return rq_broken(c, EPIPE);
	case IPC__MQ_NOMEM: /* keep the chunk: a later call retries */
		if (src != c->rbuf)
			memcpy(c->rbuf, src, n);
		c->first_kept = 1;
		errno = ENOMEM;
		return -1;
	case IPC__MQ_BAD:
		break;
	}
	return rq_broken(c, EPROTO);
}

static int asm_whole(const struct mq_conn *c)
{
	return c->as.on && c->as.have == c->as.total;
}

/* Pull chunks until a message is complete (or error / would block). */
static int rx_fill(struct mq_conn *c, int64_t deadline, int quiet)
{
	if (c->first_kept && rx_take(c, c->rbuf, c->r_msgsize) < 0)
		return -1;
	while (!c->pend && !asm_whole(c)) {
		unsigned char *dst = c->rbuf;
		if (c->as.on && c->as.total - c->as.have >= c->r_msgsize)
			dst = c->as.buf + c->as.have;
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

static ssize_t rq_deliver(struct mq_conn *c, void *buf, size_t len, void **allocp)
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
	size_t n = c->as.total;
	if (c->as.user) {
		/* already in buf */
	} else if (allocp) {
		*allocp = c->as.buf;
		c->as.buf = NULL;
	} else if (n > len) {
		errno = EMSGSIZE;
		return -1;
	} else {
		memcpy(buf, c->as.buf, n);
	}
	ipc__mq_asm_reset(&c->as);
	return (ssize_t)n;
}

static ssize_t rx_msg(struct mq_conn *c, void *buf, size_t len, void **allocp, int64_t deadline, int quiet)
{
	ssize_t r = -1;
	if (!c->pend && !c->as.on && !c->first_kept) {
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
		r = rq_deliver(c, buf, len, allocp);
out:
	c->r_ubuf = NULL;
	if (r < 0 && c->as.user) { /* only after a sticky error */
		int e = errno;
		ipc__mq_asm_reset(&c->as);
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
	int r = 0;
	int e = errno;
	if (events & IPC_POLLIN) {
		if (pthread_mutex_trylock(&c->rmu) == 0) {
			if (c->rerr || c->pend || asm_whole(c))
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
	/* writable means exactly "nothing is held" (held data moves here) */
	int held = atomic_load(&c->held_on);
	if (pthread_mutex_trylock(&c->smu) == 0) {
		if (c->held.on && !c->serr)
			held_push(c, IPC__NOW);
		held = c->held.on && !c->serr;
		if (events & IPC_POLLOUT) {
			if (c->serr)
				r |= IPC_POLLOUT | IPC_POLLERR;
			else if (!held)
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
	ep_set(c, c->rq, &c->ev_rq, (events & IPC_POLLIN) ? EPOLLIN : 0);
	ep_set(c, c->sq, &c->ev_sq, (held || ((events & IPC_POLLOUT) && !(r & IPC_POLLOUT))) ? EPOLLOUT : 0);
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

static void mq_conn_free(struct mq_conn *c)
{
	ipc__close_fd(c->sock);
	ipc__close_fd(c->efd);
	if (c->sq != (mqd_t)-1)
		mq_close(c->sq);
	if (c->rq != (mqd_t)-1)
		mq_close(c->rq);
	free(c->sbuf);
	free(c->rbuf);
	free(c->held.buf);
	ipc__mq_asm_reset(&c->as);
	pthread_mutex_destroy(&c->kmu);
	pthread_mutex_destroy(&c->smu);
	pthread_mutex_destroy(&c->rmu);
	free(c);
}

/* fds: c2s, c2s again (a second description), s2c, s2c again.  Takes
 * ownership of sock and fds (closed on failure); one descriptor per queue
 * is kept. */
static struct mq_conn *mq_conn_new(int sock, const int fds[4], int is_client)
{
	ipc__close_fd(fds[1]);
	ipc__close_fd(fds[3]);
	struct mq_conn *c = calloc(1, sizeof *c);
	if (!c) {
		ipc__close_fd(sock);
		ipc__close_fd(fds[0]);
		ipc__close_fd(fds[2]);
		return NULL;
	}
	pthread_mutex_init(&c->kmu, NULL);
	pthread_mutex_init(&c->smu, NULL);
	pthread_mutex_init(&c->rmu, NULL);
	c->sock = sock;
	c->efd = -1;
	c->is_client = is_client;
	c->sq = is_client ? fds[0] : fds[2];
	c->rq = is_client ? fds[2] : fds[0];
	atomic_init(&c->peer_max, SIZE_MAX);
	atomic_init(&c->held_on, 0);
	atomic_init(&c->gone, 0);
	c->hello_done = !is_client;

	struct mq_attr sa, ra;
	if (mq_getattr(c->sq, &sa) < 0 || mq_getattr(c->rq, &ra) < 0)
		goto fail;
	c->s_msgsize = (size_t)sa.mq_msgsize;
	c->r_msgsize = (size_t)ra.mq_msgsize;
	if (c->s_msgsize < IPC__MQ_MIN_MSGSIZE || c->r_msgsize < IPC__MQ_MIN_MSGSIZE) {
		errno = EPROTO;
		goto fail;
	}
	if (ipc__sock_cred(sock, &c->cred) < 0)
		goto fail;
	c->sbuf = malloc(c->s_msgsize);
	c->rbuf = malloc(c->r_msgsize);
	if (!c->sbuf || !c->rbuf)
		goto fail;
	c->efd = epoll_create1(EPOLL_CLOEXEC);
	if (c->efd < 0)
		goto fail;
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = c->rq};
	if (epoll_ctl(c->efd, EPOLL_CTL_ADD, c->rq, &ev) < 0)
		goto fail;
	c->ev_rq = EPOLLIN;
	ev.events = 0;
	ev.data.fd = c->sq;
	if (epoll_ctl(c->efd, EPOLL_CTL_ADD, c->sq, &ev) < 0)
		goto fail;
	ev.events = EPOLLIN | EPOLLRDHUP;
	ev.data.fd = sock;
	if (epoll_ctl(c->efd, EPOLL_CTL_ADD, sock, &ev) < 0)
		goto fail;
	return c;
fail:
	mq_conn_free(c);
	return NULL;
}

/* Close: push the held message until linger, reading and discarding what
 * the peer sends meanwhile (so two peers closing at once both finish). */
static int held_linger(struct mq_conn *c, int64_t linger)
{
	for (;;) {
		if (held_push(c, IPC__NOW) == 0)
			return 0;
		if (errno != EAGAIN) /* the peer is gone: dropped */
			return peer_check(c) == P_DEAD ? (errno = ECONNRESET, -1) : -1;
		for (int i = 0; i < DRAIN_ROUND && q_get(c->rq, c->rbuf, c->r_msgsize) >= 0; i++)
			;
		if (ipc__deadline_passed(linger)) {
			errno = ETIMEDOUT;
			return -1;
		}
		if (q_wait(c, c->sq, POLLOUT, c->rq, POLLIN, linger) < 0)
			return -1;
	}
}

static int mq_close_slot(struct ipc_conn *cc, int64_t linger)
{
	struct mq_conn *c = C(cc);
	int rc = 0;
	if (c->held.on && !c->serr)
		rc = held_linger(c, linger);
	else if (c->held.on) /* dropped: the send side broke */
		rc = -1, errno = c->serr;
	int err = errno;
	if (rc == 0 && !c->serr && peer_check(c) == P_OPEN) {
		memset(c->sbuf, 0, c->s_msgsize);
		ipc__mq_trailer(c->sbuf, c->s_msgsize, IPC__MQ_TAG_CLOSE, 0);
		q_put(c->sq, c->sbuf, c->s_msgsize); /* full: 'C' and EOF tell */
		while (send(c->sock, "C", 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno == EINTR)
			;
	}
	mq_conn_free(c);
	errno = err;
	return rc;
}

/* ---- queue creation (client) ------------------------------------------ */

/* Remove the queue names a killed process left (it died between mq_open
 * and mq_unlink in make_queue): names "libipc-mq.<pid>.<16 hex>" of our
 * euid whose pid no longer exists.  Only visible where the mqueue file
 * system is mounted on /dev/mqueue. */
static void reap_leftovers(void)
{
	int e = errno;
	DIR *d = opendir(Q_DIR);
	if (!d)
		goto out;
	struct dirent *de;
	while ((de = readdir(d))) {
		const char *p = de->d_name;
		size_t pl = sizeof Q_PREFIX - 1;
		if (strncmp(p, Q_PREFIX, pl) || p[pl] < '1' || p[pl] > '9')
			continue;
		char *end;
		long pid = strtol(p + pl, &end, 10);
		if (*end != '.' || pid <= 0 || pid > INT_MAX || strlen(end + 1) != 16 ||
		    strspn(end + 1, "0123456789abcdef") != 16)
			continue;
		struct stat st;
		if (fstatat(dirfd(d), p, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_uid != geteuid())
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		char name[NAME_MAX + 2];
		if (ipc__format(name, sizeof name, "/%s", p) > 0)
			mq_unlink(name);
	}
	closedir(d);
out:
	errno = e;
}

/* Create one queue, mode 0600 (it is passed by SCM_RIGHTS, never opened
 * by name by anyone else); opens it a second time (*again, O_NONBLOCK)
 * and unlinks the name before returning. */
static int make_queue(long maxmsg, long msgsize, mqd_t *q, mqd_t *again)
{
	unsigned char rnd[8];
	char name[64];
	if (ipc__random(rnd, sizeof rnd) < 0)
		return -1;
	snprintf(name, sizeof name, "/" Q_PREFIX "%d.%02x%02x%02x%02x%02x%02x%02x%02x", (int)getpid(), rnd[0],
		 rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	struct mq_attr a = {.mq_maxmsg = maxmsg, .mq_msgsize = msgsize};
	*q = mq_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)0600, &a);
	if (*q == (mqd_t)-1)
		return -1;
	*again = mq_open(name, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	int e = errno;
	mq_unlink(name);
	if (*again == (mqd_t)-1) {
		mq_close(*q);
		errno = e;
		return -1;
	}
	return 0;
}

/* The two queues of a connection (fds as mq_conn_new takes them), small
 * enough that one user's RLIMIT_MSGQUEUE serves many connections. */
static int make_queues(const struct ipc_options *o, int fds[4])
{
	(void)o;
	reap_leftovers();
	long msg_max = read_proc_long("/proc/sys/fs/mqueue/msg_max", 10);
	long size_max = read_proc_long("/proc/sys/fs/mqueue/msgsize_max", 8192);
	long maxmsg = msg_max < Q_MAXMSG ? msg_max : Q_MAXMSG;
	long msgsize = size_max < Q_MSGSIZE ? size_max : Q_MSGSIZE;
	if (msgsize < IPC__MQ_MIN_MSGSIZE) {
		errno = EINVAL;
		return -1;
	}
	for (int i = 0; i < 4; i++)
		fds[i] = -1;
	for (int q = 0; q < 2;) {
		mqd_t a, b;
		if (make_queue(maxmsg, msgsize, &a, &b) == 0) {
			fds[2 * q] = a;
			fds[2 * q + 1] = b;
			q++;
			continue;
		}
		if (errno == EEXIST)
			continue;
		/* RLIMIT_MSGQUEUE (EMFILE): try the smallest shape once */
		if ((errno == EMFILE || errno == ENOMEM) &&
		    (maxmsg > Q_MAXMSG_LOW || msgsize > Q_MSGSIZE_LOW)) {
			maxmsg = maxmsg < Q_MAXMSG_LOW ? maxmsg : Q_MAXMSG_LOW;
			msgsize = msgsize < Q_MSGSIZE_LOW ? msgsize : Q_MSGSIZE_LOW;
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
	int fds[4] = {-1, -1, -1, -1};
	if (check_name(name) < 0 || rendezvous_addr(name, &sa, &sl) < 0)
		return NULL;
	/* who listens is checked before any queue is made */
	int s = ipc__rdv_connect(&sa, sl, o, deadline, &cr);
	if (s < 0)
		return NULL;
	if (make_queues(o, fds) < 0)
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
	struct mq_conn *c = mq_conn_new(s, fds, 1);
	return c ? &c->base : NULL;
fail:
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
	/* mq_conn_new closes what it is given on failure: give it a duplicate,
	 * so that the candidate survives a resource error of ours */
	int s2 = fcntl(*sock, F_DUPFD_CLOEXEC, 0);
	if (s2 < 0)
		return IPC__RDV_RETRY;
	int mine[4];
	for (int i = 0; i < 4; i++) {
		mine[i] = fds[i];
		fds[i] = -1;
	}
	struct mq_conn *c = mq_conn_new(s2, mine, 0);
	if (!c)
		return errno == EMFILE || errno == ENFILE || errno == ENOMEM ? IPC__RDV_RETRY : IPC__RDV_REFUSE;
	uint32_t m = ipc__mq_get32(h + 8);
	atomic_store(&c->peer_max, m ? (size_t)m : SIZE_MAX);
	ipc__close_fd(*sock);
	*sock = s2;
	*out = c;
	return IPC__RDV_BUILT;
}

static void mq_conn_drop(void *c)
{
	mq_conn_free(c);
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
	reap_leftovers();
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
