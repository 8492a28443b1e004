/* frame.c - message framing over any connected byte stream.
 *
 * Wire format (ipc-wire(7)): each side first sends an 8-byte hello, then
 * every message is a 4-byte big-endian length followed by the payload; an
 * orderly close ends with the end-of-stream frame (length 0xffffffff).
 * Every byte goes through the stream's ops (struct ipc__bstream_ops in
 * ipc_impl.h): this file never touches a descriptor.
 *
 * Receive side (touched only by the receiving thread): bytes are read into
 * a 64 KiB buffer; a message that does not fit is assembled in a buffer of
 * exactly its announced size (checked against max_msg_size first) or, for
 * a blocking receive into a large enough user buffer, read straight into
 * it.  Send side (guarded by slock): messages go straight to the stream;
 * what a non-blocking or timed send could not write is kept in obuf, whose
 * fill is bounded by the capacity, and is flushed before anything else.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc_impl.h"

#define IBUF_SIZE (64 * 1024)
#define SMALL_MSG 64 /* "a small message" for POLLOUT readiness */

struct stream {
	struct ipc_conn base;
	const struct ipc__bstream_ops *ops;
	void *ctx;
	atomic_int owner; /* ipc_pair end: the process using it (0: none yet);
			   * -1: any process (ipc(7), "Fork and exec") */

	/* receive side */
	unsigned char *ib;
	size_t ioff, ilen;
	int hello_ok;
	atomic_int hello_seen; /* the peer's hello was read: 1 ok, 2 refused */
	int have_hdr;
	uint32_t mlen;
	unsigned char *big; /* message being assembled, mlen bytes */
	size_t bhave;
	int rerr;
	atomic_int peer_gone; /* the receive side saw the peer's end */

	/* send side */
	pthread_mutex_t slock;
	unsigned char *ob;
	size_t ocap, ooff, olen;
	unsigned char *stage; /* send_batch packing buffer */
	int serr;
	int sent_any;          /* a message was accepted (close_wait_hello) */
	atomic_size_t pending; /* olen, readable without slock */
};

static struct stream *S(struct ipc_conn *c)
{
	return (struct stream *)c;
}

/* A connection made before a fork (ipc_pair) belongs to the first process
 * that uses it. */
static struct stream *U(struct ipc_conn *c)
{
	struct stream *s = S(c);
	if (atomic_load_explicit(&s->owner, memory_order_relaxed) == 0)
		atomic_store_explicit(&s->owner, (int)getpid(), memory_order_relaxed);
	return s;
}

void ipc__stream_disown(struct ipc_conn *c)
{
	atomic_store_explicit(&S(c)->owner, 0, memory_order_relaxed);
}

void ipc__hello_encode(unsigned char out[IPC__HELLO_LEN], enum ipc__hello_status status)
{
	memcpy(out, "LIPC", 4);
	out[4] = IPC__WIRE_VERSION;
	out[5] = (unsigned char)status;
	out[6] = out[7] = 0;
}

int ipc__hello_check(const unsigned char in[IPC__HELLO_LEN])
{
	if (memcmp(in, "LIPC", 4) != 0 || in[4] != IPC__WIRE_VERSION || in[6] || in[7] ||
	    (in[5] != IPC__HELLO_OK && in[5] != IPC__HELLO_REFUSED)) {
		errno = EPROTO;
		return -1;
	}
	if (in[5] == IPC__HELLO_REFUSED) {
		errno = EACCES;
		return -1;
	}
	return 0;
}

static void be32_put(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t be32_get(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int tx_hold(struct stream *s, const struct iovec *iov, int iovcnt, size_t skip, size_t rest);
static int tx_flush_nb(struct stream *s);

struct ipc_conn *ipc__stream_new(const struct ipc__bstream_ops *ops, void *ctx, const struct ipc_options *o)
{
	struct stream *s = calloc(1, sizeof *s);
	if (!s) {
		ops->close(ctx);
		return NULL;
	}
	s->ops = ops;
	s->ctx = ctx;
	s->base.opt = *o;
	atomic_init(&s->owner, -1);
	pthread_mutex_init(&s->slock, NULL);
	unsigned char hello[IPC__HELLO_LEN];
	ipc__hello_encode(hello, IPC__HELLO_OK);
	struct iovec v = {hello, sizeof hello};
	if (tx_hold(s, &v, 1, 0, sizeof hello) < 0) {
		ops->close(ctx);
		pthread_mutex_destroy(&s->slock);
		free(s);
		return NULL;
	}
	tx_flush_nb(s); /* a failure shows on the first call */
	return &s->base;
}

/* ---- receive ---------------------------------------------------------- */

/* Sticky receive failure. */
static int rx_fail(struct stream *s, int err)
{
	if (!s->rerr)
		s->rerr = err;
	errno = s->rerr;
	return -1;
}

static int tx_flush_nb(struct stream *s);

/* While a receive waits, held output must keep moving or a request/reply
 * peer would wait for a request still sitting in obuf.  Output can start
 * being held by another thread while this one waits, so no receive wait
 * is longer than RX_SLICE before it looks again. */
#define RX_SLICE ((int64_t)100000000) /* 100 ms */

static int64_t rx_slice(int64_t deadline)
{
	if (deadline == IPC__NOW)
		return deadline;
	int64_t soon = ipc__now() + RX_SLICE;
	return deadline < soon ? deadline : soon;
}

/* Flush held output if the sending thread is not at it.  0 if it was busy. */
static int rx_push_output(struct stream *s)
{
	if (pthread_mutex_trylock(&s->slock) != 0)
		return 0;
	tx_flush_nb(s);
	pthread_mutex_unlock(&s->slock);
	return 1;
}

/* Wait until the stream is readable (flushing held output meanwhile). */
static int rx_wait(struct stream *s, int64_t deadline)
{
	int sender_busy = 0;
	for (;;) {
		int dirs = IPC__BS_READ;
		if (!sender_busy && atomic_load_explicit(&s->pending, memory_order_relaxed))
			dirs |= IPC__BS_WRITE;
		int64_t slice = rx_slice(deadline);
		int r = s->ops->wait(s->ctx, dirs, slice);
		if (r < 0) {
			if (errno == ETIMEDOUT && slice != deadline) {
				sender_busy = 0;
				continue;
			}
			return -1;
		}
		if (r & IPC__BS_WRITE)
			sender_busy = !rx_push_output(s);
		if (r & IPC__BS_READ)
			return 0;
	}
}

/* The end of the peer's stream: EPIPE after its end-of-stream frame, else
 * the peer died (ECONNRESET).  Sticky; sends fail with EPIPE from now on. */
static int rx_end(struct stream *s, int err)
{
	atomic_store_explicit(&s->peer_gone, 1, memory_order_relaxed);
	return rx_fail(s, err);
}

/* The receive error for a broken stream: the peer died (ECONNRESET),
 * unless the stream says more: no memory, or a secure stream's own
 * verdict (ipc-tls(7): EPROTO, EKEYREJECTED, EKEYEXPIRED, ECONNABORTED). */
static int rx_stream_errno(int e)
{
	switch (e) {
	case ENOMEM:
	case ENOBUFS:
	case EPROTO:
	case EKEYREJECTED:
	case EKEYEXPIRED:
	case ECONNABORTED:
		return e;
	default:
		return ECONNRESET;
	}
}

/* One read into dst (up to n bytes).  Returns bytes read (> 0), or -1:
 * EAGAIN/ETIMEDOUT (nothing there by deadline), ECONNRESET (sticky). */
static ssize_t rx_read(struct stream *s, void *dst, size_t n, int64_t deadline)
{
	for (;;) {
		/* held output needs rx_wait's IPC__BS_WRITE: do not sleep in read */
		int64_t dl = atomic_load_explicit(&s->pending, memory_order_relaxed) ? IPC__NOW : rx_slice(deadline);
		ssize_t r = s->ops->read(s->ctx, dst, n, dl);
		if (r > 0)
			return r;
		if (r == 0) /* no end-of-stream frame: the peer died */
			return rx_end(s, ECONNRESET);
		if (errno != EAGAIN)
			return rx_end(s, rx_stream_errno(errno));
		if (rx_wait(s, deadline) < 0)
			return -1;
	}
}

/* Make at least need bytes available in ib (need <= IBUF_SIZE). */
static int rx_need(struct stream *s, size_t need, int64_t deadline)
{
	if (!s->ib && !(s->ib = malloc(IBUF_SIZE)))
		return -1;
	while (s->ilen < need) {
		if (s->ioff + need > IBUF_SIZE) {
			memmove(s->ib, s->ib + s->ioff, s->ilen);
			s->ioff = 0;
		}
		size_t room = IBUF_SIZE - s->ioff - s->ilen;
		ssize_t r = rx_read(s, s->ib + s->ioff + s->ilen, room, deadline);
		if (r < 0)
			return -1;
		s->ilen += (size_t)r;
	}
	return 0;
}

static void rx_consume(struct stream *s, size_t n)
{
	s->ioff += n;
	s->ilen -= n;
	if (s->ilen == 0)
		s->ioff = 0;
}

/* Parse the hello (once) and the next message header.  Sets mlen. */
static int rx_header(struct stream *s, int64_t deadline)
{
	if (s->rerr) {
		errno = s->rerr;
		return -1;
	}
	if (!s->hello_ok) {
		if (rx_need(s, IPC__HELLO_LEN, deadline) < 0)
			return -1;
		if (ipc__hello_check(s->ib + s->ioff) < 0) {
			if (errno == EACCES)
				atomic_store_explicit(&s->hello_seen, 2, memory_order_relaxed);
			return rx_end(s, errno); /* EPROTO, or EACCES: refused */
		}
		atomic_store_explicit(&s->hello_seen, 1, memory_order_relaxed);
		rx_consume(s, IPC__HELLO_LEN);
		s->hello_ok = 1;
	}
	if (!s->have_hdr) {
		if (rx_need(s, IPC__FRAME_HDR, deadline) < 0)
			return -1;
		uint32_t len = be32_get(s->ib + s->ioff);
		if (len == IPC__EOS_LEN) /* orderly close: every message is in */
			return rx_end(s, EPIPE);
		if (len > s->base.opt.max_msg_size)
			return rx_fail(s, EPROTO); /* nothing of that size is allocated */
		rx_consume(s, IPC__FRAME_HDR);
		s->mlen = len;
		s->have_hdr = 1;
	}
	return 0;
}

static int is_small(const struct stream *s)
{
	return s->mlen <= IBUF_SIZE;
}

/* Bring the whole current message into ib (small) or big (large). */
static int rx_complete(struct stream *s, int64_t deadline)
{
	if (rx_header(s, deadline) < 0)
		return -1;
	if (is_small(s))
		return rx_need(s, s->mlen, deadline);
	if (!s->big) {
		if (!(s->big = malloc(s->mlen)))
			return -1;
		s->bhave = s->ilen < s->mlen ? s->ilen : s->mlen;
		memcpy(s->big, s->ib + s->ioff, s->bhave);
		rx_consume(s, s->bhave);
	}
	while (s->bhave < s->mlen) {
		ssize_t r = rx_read(s, s->big + s->bhave, s->mlen - s->bhave, deadline);
		if (r < 0)
			return -1;
		s->bhave += (size_t)r;
	}
	return 0;
}

/* Receive a large message straight into the caller's buffer.  If the
 * deadline passes half way, what arrived moves to big so that the next call
 * goes on from there (the caller's buffer holds nothing on error). */
static ssize_t rx_direct(struct stream *s, unsigned char *dst, int64_t deadline)
{
	size_t have = s->ilen < s->mlen ? s->ilen : s->mlen;
	memcpy(dst, s->ib + s->ioff, have);
	rx_consume(s, have);
	while (have < s->mlen) {
		ssize_t r = rx_read(s, dst + have, s->mlen - have, deadline);
		if (r < 0) {
			if (s->rerr)
				return -1;
			int e = errno;
			if (!(s->big = malloc(s->mlen)))
				return rx_fail(s, ENOMEM);
			memcpy(s->big, dst, have);
			s->bhave = have;
			errno = e;
			return -1;
		}
		have += (size_t)r;
	}
	s->have_hdr = 0;
	return (ssize_t)s->mlen;
}

/* Hand the completed current message to the caller. */
static ssize_t rx_deliver(struct stream *s, void *buf, void **allocp)
{
	size_t len = s->mlen;
	if (s->big) {
		if (allocp) {
			*allocp = s->big;
		} else {
			memcpy(buf, s->big, len);
			free(s->big);
		}
		s->big = NULL;
		s->bhave = 0;
	} else {
		if (allocp) {
			if (!(*allocp = malloc(len ? len : 1)))
				return -1;
			memcpy(*allocp, s->ib + s->ioff, len);
		} else if (len) {
			memcpy(buf, s->ib + s->ioff, len);
		}
		rx_consume(s, len);
	}
	s->have_hdr = 0;
	return (ssize_t)len;
}

ssize_t ipc__stream_recv(struct ipc_conn *c, void *buf, size_t len, void **allocp, int64_t deadline)
{
	struct stream *s = U(c);
	if (rx_header(s, deadline) < 0)
		return -1;
	if (!allocp && len < s->mlen) { /* reported once the message is whole */
		if (rx_complete(s, deadline) < 0)
			return -1;
		errno = EMSGSIZE;
		return -1;
	}
	if (!allocp && !is_small(s) && !s->big)
		return rx_direct(s, buf, deadline);
	if (rx_complete(s, deadline) < 0)
		return -1;
	return rx_deliver(s, buf, allocp);
}

/* Is a whole small message already in ib (no system call needed)? */
static int rx_buffered(const struct stream *s)
{
	if (s->rerr || !s->hello_ok)
		return 0;
	if (s->have_hdr)
		return is_small(s) && s->ilen >= s->mlen;
	if (s->ilen < IPC__FRAME_HDR)
		return 0;
	uint32_t len = be32_get(s->ib + s->ioff);
	return len <= IBUF_SIZE && len <= s->base.opt.max_msg_size && s->ilen >= IPC__FRAME_HDR + len;
}

ssize_t ipc__stream_recv_batch(struct ipc_conn *c, struct iovec *msgs, size_t n, int64_t deadline)
{
	struct stream *s = U(c);
	size_t i;
	for (i = 0; i < n; i++) {
		if (i && !rx_buffered(s))
			break;
		ssize_t r = ipc__stream_recv(c, msgs[i].iov_base, msgs[i].iov_len, NULL, i ? IPC__NOW : deadline);
		if (r < 0) {
			if (i) /* e.g. EMSGSIZE: it shows again on the next call */
				break;
			return -1;
		}
		msgs[i].iov_len = (size_t)r;
	}
	return (ssize_t)i;
}

/* ---- send ------------------------------------------------------------- */

/* A peer gone before we read its hello may have refused us (ipc-wire(7)):
 * its refusal hello is still queued for the receive side, which this
 * looks at without taking it. */
static int tx_refused(struct stream *s)
{
	int seen = atomic_load_explicit(&s->hello_seen, memory_order_relaxed);
	if (seen || !s->ops->peek)
		return seen == 2;
	unsigned char h[IPC__HELLO_LEN];
	return s->ops->peek(s->ctx, h, sizeof h) == (ssize_t)sizeof h && ipc__hello_check(h) < 0 && errno == EACCES;
}

static int tx_fail(struct stream *s, int err)
{
	if (err == ECONNRESET || err == ENOTCONN || err == ESHUTDOWN || err == ETIMEDOUT || err == EHOSTUNREACH ||
	    err == ENETUNREACH || err == EHOSTDOWN || err == ENETDOWN)
		err = EPIPE; /* the peer or the link is gone */
	if (err == EPIPE && !s->serr && tx_refused(s))
		err = EACCES;
	if (!s->serr)
		s->serr = err;
	atomic_store_explicit(&s->pending, 0, memory_order_relaxed); /* can never move now */
	errno = s->serr;
	return -1;
}

static void tx_set_pending(struct stream *s)
{
	atomic_store_explicit(&s->pending, s->olen, memory_order_relaxed);
}

/* Write held output without waiting.  0 (some may remain) or -1 (fatal). */
static int tx_flush_nb(struct stream *s)
{
	if (s->serr) {
		errno = s->serr;
		return -1;
	}
	while (s->olen) {
		struct iovec v = {s->ob + s->ooff, s->olen};
		ssize_t r = s->ops->writev(s->ctx, &v, 1, IPC__NOW);
		if (r > 0) {
			s->ooff += (size_t)r;
			s->olen -= (size_t)r;
			continue;
		}
		if (errno == EAGAIN)
			break;
		return tx_fail(s, errno);
	}
	if (s->olen == 0) {
		s->ooff = 0;
		if (s->ocap > IBUF_SIZE) { /* keep no large buffer while idle */
			free(s->ob);
			s->ob = NULL;
			s->ocap = 0;
		}
	}
	tx_set_pending(s);
	return 0;
}

/* Flush until nothing is held, by deadline; input that arrives meanwhile
 * is discarded when discard is set (closing), else left for the receive
 * path. */
static int tx_drain(struct stream *s, int64_t deadline, int discard)
{
	int reading = discard;
	for (;;) {
		if (tx_flush_nb(s) < 0)
			return -1;
		if (s->olen == 0)
			return 0;
		int r = s->ops->wait(s->ctx, IPC__BS_WRITE | (reading ? IPC__BS_READ : 0), deadline);
		if (r < 0)
			return -1;
		if (r & IPC__BS_READ) {
			unsigned char junk[4096];
			ssize_t n;
			while ((n = s->ops->read(s->ctx, junk, sizeof junk, IPC__NOW)) > 0)
				;
			if (n == 0 || errno != EAGAIN)
				reading = 0; /* the peer's stream ended: only write now */
		}
	}
}

/* Append the rest of a frame (iov from offset skip) to obuf. */
static int tx_hold(struct stream *s, const struct iovec *iov, int iovcnt, size_t skip, size_t rest)
{
	size_t need = s->ooff + s->olen + rest;
	if (need > s->ocap) {
		if (s->ooff) {
			memmove(s->ob, s->ob + s->ooff, s->olen);
			s->ooff = 0;
			need = s->olen + rest;
		}
		if (need > s->ocap) {
			size_t cap = need < 4096 ? 4096 : need;
			unsigned char *nb = realloc(s->ob, cap);
			if (!nb)
				return -1;
			s->ob = nb;
			s->ocap = cap;
		}
	}
	unsigned char *p = s->ob + s->ooff + s->olen;
	for (int i = 0; i < iovcnt; i++) {
		size_t l = iov[i].iov_len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		memcpy(p, (const char *)iov[i].iov_base + skip, l - skip);
		p += l - skip;
		skip = 0;
	}
	s->olen += rest;
	tx_set_pending(s);
	return 0;
}

/* Advance an iovec array past n written bytes. */
static void iov_advance(struct iovec **iovp, int *cntp, size_t n)
{
	struct iovec *iov = *iovp;
	int cnt = *cntp;
	while (cnt > 0 && n >= iov->iov_len) {
		n -= iov->iov_len;
		iov++;
		cnt--;
	}
	if (cnt > 0) {
		iov->iov_base = (char *)iov->iov_base + n;
		iov->iov_len -= n;
	}
	*iovp = iov;
	*cntp = cnt;
}

/* Has the peer ended its stream (closed or died)?  Then a send fails. */
static int tx_peer_gone(struct stream *s)
{
	if (atomic_load_explicit(&s->peer_gone, memory_order_relaxed) || s->ops->peer_ended(s->ctx))
		return tx_fail(s, EPIPE);
	return 0;
}

/* Send one frame (v[0] is the header) with the lock held.  The frame is
 * accepted whole or not at all: without waiting it is accepted whenever
 * nothing is held, and what the stream does not take now is held (one
 * frame, at most max_msg_size + 4 bytes); with a deadline it waits for
 * held output to go first. */
static int tx_frame(struct stream *s, struct iovec *v, int cnt, size_t frame, int64_t deadline)
{
	if (s->serr) {
		errno = s->serr;
		return -1;
	}
	if (tx_peer_gone(s) < 0)
		return -1;
	if (s->olen) {
		if (deadline == IPC__NOW) {
			if (tx_flush_nb(s) < 0)
				return -1;
			if (s->olen)
				return ipc__wouldblock(deadline);
		} else if (tx_drain(s, deadline, 0) < 0) {
			return -1;
		}
	}

	/* Straight to the stream.  A blocking or timed send waits in the
	 * stream; one that runs out of time after its first byte holds the
	 * rest rather than cut the message. */
	struct iovec *iov = v;
	size_t done = 0;
	while (done < frame) {
		ssize_t r = s->ops->writev(s->ctx, iov, cnt > IOV_MAX ? IOV_MAX : cnt, deadline);
		if (r > 0) {
			done += (size_t)r;
			iov_advance(&iov, &cnt, (size_t)r);
			continue;
		}
		if (errno != EAGAIN)
			return tx_fail(s, errno);
		if (deadline == IPC__NOW)
			break;
		if (s->ops->wait(s->ctx, IPC__BS_WRITE, deadline) >= 0)
			continue;
		if (errno != ETIMEDOUT && errno != EAGAIN)
			return tx_fail(s, errno);
		if (done == 0)
			return ipc__wouldblock(deadline); /* nothing sent */
		break;
	}
	if (done < frame && tx_hold(s, iov, cnt, 0, frame - done) < 0)
		return tx_fail(s, ENOMEM); /* the stream holds half a frame */
	s->sent_any = 1;
	return 0;
}

int ipc__stream_send(struct ipc_conn *c, const struct iovec *iov, int iovcnt, size_t total, int64_t deadline)
{
	struct stream *s = U(c);
	struct iovec stackv[17], *v = stackv;
	unsigned char hdr[IPC__FRAME_HDR];
	int rc;
	if (total >= IPC__EOS_LEN) { /* that length is the end-of-stream frame */
		errno = EMSGSIZE;
		return -1;
	}
	if (iovcnt + 1 > (int)(sizeof stackv / sizeof stackv[0]) &&
	    !(v = malloc(sizeof *v * (size_t)(iovcnt + 1))))
		return -1;
	be32_put(hdr, (uint32_t)total);
	v[0].iov_base = hdr;
	v[0].iov_len = sizeof hdr;
	if (iovcnt)
		memcpy(v + 1, iov, sizeof *v * (size_t)iovcnt);
	pthread_mutex_lock(&s->slock);
	rc = tx_frame(s, v, iovcnt + 1, total + IPC__FRAME_HDR, deadline);
	pthread_mutex_unlock(&s->slock);
	if (v != stackv) {
		int e = errno;
		free(v);
		errno = e;
	}
	return rc;
}

/* A batch is written in groups: small messages are packed (header and
 * payload copied) into a staging buffer that goes out in one write and is
 * accepted whole or not at all; a large message goes alone, uncopied. */
#define STAGE_SIZE (64 * 1024)
ssize_t ipc__stream_send_batch(struct ipc_conn *c, const struct iovec *msgs, size_t n, int64_t deadline)
{
	struct stream *s = U(c);
	size_t limit = s->base.opt.capacity < STAGE_SIZE ? s->base.opt.capacity : STAGE_SIZE;
	size_t sent = 0;
	pthread_mutex_lock(&s->slock);
	while (sent < n) {
		int64_t dl = sent ? IPC__NOW : deadline;
		size_t len = msgs[sent].iov_len;
		if (len >= IPC__EOS_LEN) {
			errno = EMSGSIZE;
			goto stop;
		}
		if (IPC__FRAME_HDR + len > limit / 2) {
			unsigned char hdr[IPC__FRAME_HDR];
			struct iovec v[2] = {{hdr, sizeof hdr}, msgs[sent]};
			be32_put(hdr, (uint32_t)len);
			if (tx_frame(s, v, 2, sizeof hdr + len, dl) < 0)
				goto stop;
			sent++;
			if (s->olen)
				break; /* held: the next would fail with EAGAIN */
			continue;
		}
		if (!s->stage && !(s->stage = malloc(STAGE_SIZE)))
			goto stop;
		size_t used = 0, k = 0;
		while (sent + k < n) {
			len = msgs[sent + k].iov_len;
			if (IPC__FRAME_HDR + len > limit / 2 || used + IPC__FRAME_HDR + len > limit)
				break;
			be32_put(s->stage + used, (uint32_t)len);
			if (len)
				memcpy(s->stage + used + IPC__FRAME_HDR, msgs[sent + k].iov_base, len);
			used += IPC__FRAME_HDR + len;
			k++;
		}
		struct iovec v = {s->stage, used};
		if (tx_frame(s, &v, 1, used, dl) < 0)
			goto stop;
		sent += k;
		if (s->olen)
			break;
	}
	pthread_mutex_unlock(&s->slock);
	return (ssize_t)sent;
stop:
	pthread_mutex_unlock(&s->slock);
	return sent ? (ssize_t)sent : -1;
}

int ipc__stream_flush(struct ipc_conn *c, int64_t deadline)
{
	struct stream *s = U(c);
	pthread_mutex_lock(&s->slock);
	int rc = tx_drain(s, deadline, 0);
	pthread_mutex_unlock(&s->slock);
	return rc;
}

/* ---- readiness, credentials, close ------------------------------------ */

int ipc__stream_conn_fd(const struct ipc_conn *c)
{
	const struct stream *s = (const struct stream *)c;
	return s->ops->fd(s->ctx);
}

int ipc__stream_conn_ready(struct ipc_conn *c, int events, short *pollev)
{
	struct stream *s = U(c);
	int ready = 0, wait_dirs = 0;
	*pollev = 0;
	if (events & IPC_POLLIN) {
		if (rx_complete(s, IPC__NOW) == 0)
			ready |= IPC_POLLIN;
		else if (errno != EAGAIN)
			ready |= IPC_POLLIN | (s->rerr == EPIPE ? IPC_POLLHUP : IPC_POLLERR);
		else
			wait_dirs |= IPC__BS_READ;
	}
	/* IPC_POLLOUT: nothing held, so the next send of any size is taken */
	if (pthread_mutex_trylock(&s->slock) == 0) {
		if (tx_flush_nb(s) < 0)
			ready |= (events & IPC_POLLOUT) | IPC_POLLERR;
		else if ((events & IPC_POLLOUT) && s->olen == 0)
			ready |= IPC_POLLOUT;
		if (s->olen && !s->serr)
			wait_dirs |= IPC__BS_WRITE;
		pthread_mutex_unlock(&s->slock);
	} else if (events & IPC_POLLOUT) {
		wait_dirs |= IPC__BS_WRITE; /* another thread is sending */
	}
	if (!ready && wait_dirs)
		*pollev = s->ops->poll_events(s->ctx, wait_dirs);
	return ready;
}

void *ipc__stream_ctx(const struct ipc_conn *c)
{
	return ((const struct stream *)c)->ctx;
}

int ipc__stream_peer_cred(const struct ipc_conn *c, struct ipc_cred *cred)
{
	const struct stream *s = (const struct stream *)c;
	return s->ops->peer_cred(s->ctx, cred);
}

/* Release our memory and descriptors only: the connection belongs to
 * another process (a copy inherited through fork, ipc(7)). */
static void stream_forget(struct stream *s)
{
	s->ops->close(s->ctx);
	pthread_mutex_destroy(&s->slock);
	free(s->ib);
	free(s->big);
	free(s->ob);
	free(s->stage);
	free(s);
}

/* Bytes of the peer's hello still to come before we may close.  On a
 * transport whose close turns bytes arriving later into a reset that
 * destroys what the peer has not read yet (TCP), a peer that has not
 * accepted us yet would lose every message we sent when its hello hits
 * our closed socket: close waits for that hello (within the linger time).
 * Other transports, a hello already in, or nothing ever sent: 0. */
static size_t close_wait_hello(struct stream *s)
{
	if (!s->sent_any || !s->ops->lossy_close || !s->ops->lossy_close(s->ctx) ||
	    atomic_load_explicit(&s->hello_seen, memory_order_relaxed))
		return 0;
	return s->ilen >= IPC__HELLO_LEN ? 0 : IPC__HELLO_LEN - s->ilen;
}

int ipc__stream_close(struct ipc_conn *c, int64_t linger_deadline)
{
	struct stream *s = S(c);
	int rc = 0, err = 0;
	int owner = atomic_load_explicit(&s->owner, memory_order_relaxed);
	if (owner != -1 && owner != (int)getpid()) {
		stream_forget(s); /* no end-of-stream, no shutdown: not ours */
		return 0;
	}
	pthread_mutex_lock(&s->slock);
	if (!s->serr) { /* the end-of-stream frame goes after everything held */
		unsigned char eos[IPC__FRAME_HDR];
		be32_put(eos, IPC__EOS_LEN);
		struct iovec v = {eos, sizeof eos};
		size_t held = s->olen;
		if (tx_hold(s, &v, 1, 0, sizeof eos) < 0 || tx_drain(s, linger_deadline, 1) < 0) {
			if ((s->olen > sizeof eos || held) && s->sent_any) { /* messages were dropped */
				rc = -1;
				err = s->serr ? s->serr : errno == EAGAIN ? ETIMEDOUT : errno;
			}
		}
	} else if (s->olen && s->sent_any) { /* (our own hello is no loss) */
		rc = -1;
		err = s->serr;
	}
	pthread_mutex_unlock(&s->slock);
	/* end our direction, then discard what is already queued for us so
	 * the kernel does not turn our close into a reset of the peer */
	s->ops->shutdown_write(s->ctx);
	unsigned char junk[4096];
	size_t need = close_wait_hello(s);
	for (int i = 0; i < 256; i++) {
		ssize_t r = s->ops->read(s->ctx, junk, sizeof junk, IPC__NOW);
		if (r < 0 && errno == EAGAIN && need && s->ops->wait(s->ctx, IPC__BS_READ, linger_deadline) >= 0)
			continue;
		if (r <= 0)
			break;
		need = (size_t)r >= need ? 0 : need - (size_t)r;
	}
	stream_forget(s);
	if (rc)
		errno = err;
	return rc;
}
