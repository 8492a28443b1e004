/* frame.c - message framing over any connected byte-stream socket.
 *
 * Wire format (ipc-wire(7)): each side first sends an 8-byte hello, then
 * every message is a 4-byte big-endian length followed by the payload.
 *
 * Receive side (touched only by the receiving thread): bytes are read into
 * a 64 KiB buffer; a message that does not fit is assembled in a buffer of
 * exactly its announced size (checked against max_msg_size first) or, for
 * a blocking receive into a large enough user buffer, read straight into
 * it.  Send side (guarded by slock): messages go straight to the socket;
 * what a non-blocking or timed send could not write is kept in obuf, whose
 * fill is bounded by the capacity, and is flushed before anything else.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ipc_impl.h"

#define IBUF_SIZE (64 * 1024)
#define SMALL_MSG 64 /* "a small message" for POLLOUT readiness */

struct stream {
	struct ipc_conn base;
	int fd;
	int cred_ok;

	/* receive side */
	unsigned char *ib;
	size_t ioff, ilen;
	int hello_ok;
	int have_hdr;
	uint32_t mlen;
	unsigned char *big; /* message being assembled, mlen bytes */
	size_t bhave;
	int rerr;
	int64_t rcvtimeo; /* SO_RCVTIMEO in force (ns), 0 = none */

	/* send side */
	pthread_mutex_t slock;
	unsigned char *ob;
	size_t ocap, ooff, olen;
	unsigned char *stage; /* send_batch packing buffer */
	int64_t sndtimeo;     /* SO_SNDTIMEO in force (ns), 0 = none */
	int serr;
	atomic_size_t pending; /* olen, readable without slock */
};

static struct stream *S(struct ipc_conn *c)
{
	return (struct stream *)c;
}

void ipc__hello_encode(unsigned char out[IPC__HELLO_LEN])
{
	memcpy(out, "LIPC", 4);
	out[4] = IPC__WIRE_VERSION;
	out[5] = out[6] = out[7] = 0;
}

int ipc__hello_check(const unsigned char in[IPC__HELLO_LEN])
{
	if (memcmp(in, "LIPC", 4) != 0 || in[4] != IPC__WIRE_VERSION || in[5] || in[6] || in[7]) {
		errno = EPROTO;
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

struct ipc_conn *ipc__stream_new(int fd, const struct ipc_options *o, int cred_ok)
{
	struct stream *s = calloc(1, sizeof *s);
	if (!s) {
		ipc__close_fd(fd);
		return NULL;
	}
	s->fd = fd;
	s->cred_ok = cred_ok;
	s->base.opt = *o;
	pthread_mutex_init(&s->slock, NULL);
	if (!cred_ok) { /* tcp: no delay; a silently dead link or host is noticed */
		int one = 1, idle = 30, intvl = 5, cnt = 4;
		unsigned user_timeout = 60000;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
		setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
	}
	unsigned char hello[IPC__HELLO_LEN];
	ipc__hello_encode(hello);
	ssize_t n;
	do
		n = send(fd, hello, sizeof hello, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof hello) /* a fresh socket always has room */
		s->serr = EPIPE;
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

/* Wait until the socket is readable (flushing held output meanwhile). */
static int rx_wait(struct stream *s, int64_t deadline)
{
	int sender_busy = 0;
	for (;;) {
		short ev = POLLIN;
		if (!sender_busy && atomic_load_explicit(&s->pending, memory_order_relaxed))
			ev |= POLLOUT;
		int64_t slice = rx_slice(deadline);
		int r = ipc__wait_fd(s->fd, ev, slice);
		if (r < 0) {
			if (errno == ETIMEDOUT && slice != deadline) {
				sender_busy = 0;
				continue;
			}
			return -1;
		}
		if (r & POLLOUT)
			sender_busy = !rx_push_output(s);
		if (r & (POLLIN | POLLHUP | POLLERR))
			return 0;
	}
}

/* Flags for one send(2)/recv(2) by deadline.  A timed call waits in the
 * kernel (one system call, as a blocking one) under an SO_RCVTIMEO or
 * SO_SNDTIMEO (optname) that never exceeds the time left; it is set again
 * only when it would, and then to 3/4 of the time left, so a run of calls
 * with the same timeout costs one setsockopt, not one per call. */
static int kernel_wait_flags(int fd, int optname, int64_t *cache, int64_t deadline)
{
	if (deadline == IPC__NOW)
		return MSG_DONTWAIT;
	if (deadline == IPC__FOREVER)
		return 0; /* an old kernel timeout only adds a harmless loop */
	int64_t left = deadline - ipc__now();
	if (left < 2000)
		return MSG_DONTWAIT;
	if (*cache == 0 || *cache > left) {
		int64_t t = left / 4 * 3;
		struct timeval tv = {.tv_sec = t / 1000000000, .tv_usec = t % 1000000000 / 1000};
		if (setsockopt(fd, SOL_SOCKET, optname, &tv, sizeof tv) < 0)
			return MSG_DONTWAIT;
		*cache = (int64_t)tv.tv_sec * 1000000000 + (int64_t)tv.tv_usec * 1000;
	}
	return 0;
}

static int rx_flags(struct stream *s, int64_t deadline)
{
	if (atomic_load_explicit(&s->pending, memory_order_relaxed))
		return MSG_DONTWAIT; /* held output needs rx_wait's POLLOUT */
	return kernel_wait_flags(s->fd, SO_RCVTIMEO, &s->rcvtimeo, rx_slice(deadline));
}

/* One read into dst (up to n bytes).  Returns bytes read (> 0), or -1:
 * EAGAIN/ETIMEDOUT (nothing there by deadline), EPIPE/ECONNRESET (sticky). */
static ssize_t rx_read(struct stream *s, void *dst, size_t n, int64_t deadline, int midframe)
{
	for (;;) {
		int flags = rx_flags(s, deadline);
		ssize_t r = recv(s->fd, dst, n, flags);
		if (r > 0)
			return r;
		if (r == 0)
			return rx_fail(s, midframe || !s->hello_ok ? ECONNRESET : EPIPE);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) /* a dead link or peer */
			return rx_fail(s, errno == ENOMEM || errno == ENOBUFS ? errno : ECONNRESET);
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
		ssize_t r = rx_read(s, s->ib + s->ioff + s->ilen, room, deadline, s->ilen > 0 || s->have_hdr);
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
		if (ipc__hello_check(s->ib + s->ioff) < 0)
			return rx_fail(s, EPROTO);
		rx_consume(s, IPC__HELLO_LEN);
		s->hello_ok = 1;
	}
	if (!s->have_hdr) {
		if (rx_need(s, IPC__FRAME_HDR, deadline) < 0)
			return -1;
		uint32_t len = be32_get(s->ib + s->ioff);
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
		ssize_t r = rx_read(s, s->big + s->bhave, s->mlen - s->bhave, deadline, 1);
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
		ssize_t r = rx_read(s, dst + have, s->mlen - have, deadline, 1);
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
	struct stream *s = S(c);
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
	struct stream *s = S(c);
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

static int tx_fail(struct stream *s, int err)
{
	if (err == ECONNRESET || err == ENOTCONN || err == ESHUTDOWN || err == ETIMEDOUT || err == EHOSTUNREACH ||
	    err == ENETUNREACH || err == EHOSTDOWN || err == ENETDOWN)
		err = EPIPE; /* the peer or the link is gone */
	if (!s->serr)
		s->serr = err;
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
	while (s->olen) {
		ssize_t r = send(s->fd, s->ob + s->ooff, s->olen, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r > 0) {
			s->ooff += (size_t)r;
			s->olen -= (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		int e = errno;
		atomic_store_explicit(&s->pending, 0, memory_order_relaxed); /* can never move now */
		return tx_fail(s, e);
	}
	if (s->olen == 0) {
		s->ooff = 0;
		if (s->ocap > s->base.opt.capacity) { /* shrink after an oversized hold */
			free(s->ob);
			s->ob = NULL;
			s->ocap = 0;
		}
	}
	tx_set_pending(s);
	return 0;
}

/* Flush until olen + room <= capacity or nothing is held, by deadline. */
static int tx_make_room(struct stream *s, size_t room, int64_t deadline)
{
	for (;;) {
		if (tx_flush_nb(s) < 0)
			return -1;
		if (s->olen == 0 || s->olen + room <= s->base.opt.capacity)
			return 0;
		int r = ipc__wait_fd(s->fd, POLLOUT, deadline);
		if (r < 0)
			return -1;
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
			size_t cap = need > s->base.opt.capacity ? need : s->base.opt.capacity;
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

static ssize_t tx_sendmsg(struct stream *s, struct iovec *iov, int cnt, int flags)
{
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)(cnt > IOV_MAX ? IOV_MAX : cnt)};
	for (;;) {
		ssize_t r = sendmsg(s->fd, &mh, flags | MSG_NOSIGNAL);
		if (r >= 0 || errno != EINTR)
			return r;
	}
}

/* Send one frame (v[0] is the header) with the lock held. */
static int tx_frame(struct stream *s, struct iovec *v, int cnt, size_t frame, int64_t deadline)
{
	size_t cap = s->base.opt.capacity;
	if (s->serr) {
		errno = s->serr;
		return -1;
	}
	if (deadline == IPC__NOW && frame > cap) {
		errno = EMSGSIZE;
		return -1;
	}
	/* a blocking send leaves nothing held: it waits for all to go out */
	if (s->olen && tx_make_room(s, deadline == IPC__FOREVER ? SIZE_MAX / 2 : frame, deadline) < 0)
		return -1;
	if (s->olen) { /* order: behind what is held, and there is room */
		if (tx_hold(s, v, cnt, 0, frame) < 0)
			return -1;
		tx_flush_nb(s); /* a failure shows on the next call */
		return 0;
	}

	/* Straight to the socket.  Without waiting, what the socket does not
	 * take is held (the frame fits the capacity); a blocking or timed
	 * send waits in the kernel, and a timed one that runs out of time
	 * after its first byte holds the rest rather than cut the message. */
	struct iovec *iov = v;
	size_t done = 0;
	while (done < frame) {
		int flags = kernel_wait_flags(s->fd, SO_SNDTIMEO, &s->sndtimeo, deadline);
		ssize_t r = tx_sendmsg(s, iov, cnt, flags);
		if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return tx_fail(s, errno);
		if (r > 0) {
			done += (size_t)r;
			iov_advance(&iov, &cnt, (size_t)r);
			continue;
		}
		if (deadline == IPC__NOW)
			return tx_hold(s, iov, cnt, 0, frame - done);
		if (ipc__wait_fd(s->fd, POLLOUT, deadline) >= 0)
			continue;
		if (errno != ETIMEDOUT && errno != EAGAIN)
			return tx_fail(s, errno);
		if (done == 0)
			return ipc__wouldblock(deadline); /* nothing sent */
		return tx_hold(s, iov, cnt, 0, frame - done); /* started: accepted */
	}
	return 0;
}

int ipc__stream_send(struct ipc_conn *c, const struct iovec *iov, int iovcnt, size_t total, int64_t deadline)
{
	struct stream *s = S(c);
	struct iovec stackv[17], *v = stackv;
	unsigned char hdr[IPC__FRAME_HDR];
	int rc;
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
	struct stream *s = S(c);
	size_t limit = s->base.opt.capacity < STAGE_SIZE ? s->base.opt.capacity : STAGE_SIZE;
	size_t sent = 0;
	pthread_mutex_lock(&s->slock);
	while (sent < n) {
		int64_t dl = sent ? IPC__NOW : deadline;
		size_t len = msgs[sent].iov_len;
		if (IPC__FRAME_HDR + len > limit / 2) {
			unsigned char hdr[IPC__FRAME_HDR];
			struct iovec v[2] = {{hdr, sizeof hdr}, msgs[sent]};
			be32_put(hdr, (uint32_t)len);
			if (tx_frame(s, v, 2, sizeof hdr + len, dl) < 0)
				goto stop;
			sent++;
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
	}
	pthread_mutex_unlock(&s->slock);
	return (ssize_t)sent;
stop:
	pthread_mutex_unlock(&s->slock);
	return sent ? (ssize_t)sent : -1;
}

int ipc__stream_flush(struct ipc_conn *c, int64_t deadline)
{
	struct stream *s = S(c);
	int rc = 0;
	pthread_mutex_lock(&s->slock);
	if (s->serr) {
		errno = s->serr;
		rc = -1;
	}
	while (!rc && s->olen) {
		if (tx_flush_nb(s) < 0 || (s->olen && ipc__wait_fd(s->fd, POLLOUT, deadline) < 0))
			rc = -1;
	}
	pthread_mutex_unlock(&s->slock);
	return rc;
}

/* ---- readiness, credentials, close ------------------------------------ */

int ipc__stream_conn_fd(const struct ipc_conn *c)
{
	return ((const struct stream *)c)->fd;
}

int ipc__stream_conn_ready(struct ipc_conn *c, int events, short *pollev)
{
	struct stream *s = S(c);
	int ready = 0;
	*pollev = 0;
	if (events & IPC_POLLIN) {
		if (rx_complete(s, IPC__NOW) == 0)
			ready |= IPC_POLLIN;
		else if (errno != EAGAIN)
			ready |= IPC_POLLIN | (s->rerr == EPIPE ? IPC_POLLHUP : IPC_POLLERR);
		else
			*pollev |= POLLIN;
	}
	if (pthread_mutex_trylock(&s->slock) == 0) {
		if (s->serr)
			ready |= (events & IPC_POLLOUT) | IPC_POLLERR;
		else if (tx_flush_nb(s) < 0)
			ready |= (events & IPC_POLLOUT) | IPC_POLLERR;
		else if ((events & IPC_POLLOUT) && s->olen + SMALL_MSG + IPC__FRAME_HDR <= s->base.opt.capacity)
			ready |= IPC_POLLOUT;
		if (s->olen || ((events & IPC_POLLOUT) && !(ready & IPC_POLLOUT)))
			*pollev |= POLLOUT;
		pthread_mutex_unlock(&s->slock);
	} else if (events & IPC_POLLOUT) {
		*pollev |= POLLOUT; /* another thread is sending */
	}
	if (ready)
		*pollev = 0;
	return ready;
}

int ipc__stream_peer_cred(const struct ipc_conn *c, struct ipc_cred *cred)
{
	const struct stream *s = (const struct stream *)c;
	struct ucred uc;
	socklen_t len = sizeof uc;
	if (!s->cred_ok) {
		errno = EOPNOTSUPP;
		return -1;
	}
	if (getsockopt(s->fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
		return -1;
	cred->pid = uc.pid;
	cred->uid = uc.uid;
	cred->gid = uc.gid;
	return 0;
}

int ipc__stream_close(struct ipc_conn *c, int64_t linger_deadline)
{
	struct stream *s = S(c);
	int rc = 0, err = 0;
	pthread_mutex_lock(&s->slock);
	while (s->olen && !s->serr) {
		if (tx_flush_nb(s) < 0 || (s->olen && ipc__wait_fd(s->fd, POLLOUT, linger_deadline) < 0))
			break;
	}
	if (s->olen) {
		rc = -1;
		err = s->serr ? s->serr : ETIMEDOUT;
	}
	pthread_mutex_unlock(&s->slock);
	/* end our direction, then discard what is already queued for us so
	 * the kernel does not turn our close into a reset of the peer */
	shutdown(s->fd, SHUT_WR);
	unsigned char junk[4096];
	for (int i = 0; i < 256; i++)
		if (recv(s->fd, junk, sizeof junk, MSG_DONTWAIT) <= 0)
			break;
	close(s->fd);
	pthread_mutex_destroy(&s->slock);
	free(s->ib);
	free(s->big);
	free(s->ob);
	free(s->stage);
	free(s);
	if (rc)
		errno = err;
	return rc;
}

/* ---- listeners over one listening socket ------------------------------ */

/* Accept one live connection without waiting: the fd, or -1 (EAGAIN when
 * none is waiting).  A peer that closed before saying hello (e.g. another
 * listener probing whether this one is alive) is no connection: dropped. */
static int sock_take(struct ipc__sock_listener *sl)
{
	if (sl->pending_fd >= 0) {
		int fd = sl->pending_fd;
		sl->pending_fd = -1;
		return fd;
	}
	for (;;) {
		int fd = accept4(sl->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0) {
			unsigned char b;
			if (recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
				close(fd);
				continue;
			}
			return fd;
		}
		switch (errno) {
		case EINTR:
		case ECONNABORTED:
		case EPROTO:
		case ENETDOWN:
		case ENOPROTOOPT:
		case EHOSTDOWN:
		case ENONET:
		case EHOSTUNREACH:
		case EOPNOTSUPP:
		case ENETUNREACH:
			continue; /* that client is gone; the next may be there */
		default:
			return -1;
		}
	}
}

struct ipc_conn *ipc__sock_accept(struct ipc_listener *l, int64_t deadline)
{
	struct ipc__sock_listener *sl = (struct ipc__sock_listener *)l;
	for (;;) {
		int fd = sock_take(sl);
		if (fd >= 0)
			return ipc__stream_new(fd, &l->opt, sl->cred_ok);
		if (errno != EAGAIN || ipc__wait_fd(sl->fd, POLLIN, deadline) < 0)
			return NULL;
	}
}

int ipc__sock_listener_addr(const struct ipc_listener *l, char *buf, size_t len)
{
	return ipc__format(buf, len, "%s", ((const struct ipc__sock_listener *)l)->addr);
}

int ipc__sock_listener_fd(const struct ipc_listener *l)
{
	return ((const struct ipc__sock_listener *)l)->fd;
}

int ipc__sock_listener_ready(struct ipc_listener *l, int events, short *pollev)
{
	struct ipc__sock_listener *sl = (struct ipc__sock_listener *)l;
	*pollev = 0;
	if (!(events & IPC_POLLIN))
		return 0;
	if (sl->pending_fd < 0) {
		int fd = sock_take(sl);
		if (fd < 0 && errno == EAGAIN) {
			*pollev = POLLIN;
			return 0;
		}
		if (fd < 0) /* e.g. EMFILE: accept reports it */
			return IPC_POLLIN | IPC_POLLERR;
		sl->pending_fd = fd;
	}
	return IPC_POLLIN;
}

void ipc__sock_listener_close(struct ipc_listener *l)
{
	struct ipc__sock_listener *sl = (struct ipc__sock_listener *)l;
	struct stat st;
	/* remove the socket file only if it is still the one we made */
	if (sl->path[0] && lstat(sl->path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == sl->dev &&
	    st.st_ino == sl->ino)
		unlink(sl->path);
	if (sl->pending_fd >= 0)
		close(sl->pending_fd);
	close(sl->fd);
	free(sl);
}

int ipc__sock_connect(int fd, const struct sockaddr *sa, socklen_t salen, int64_t deadline)
{
	if (connect(fd, sa, salen) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EINTR && errno != EAGAIN)
		return -1;
	if (errno == EAGAIN && sa->sa_family == AF_UNIX) {
		/* unix: the backlog is full; retry until the deadline */
		for (;;) {
			int r = ipc__wait_fd(fd, POLLOUT, deadline);
			if (r < 0)
				return -1;
			if (connect(fd, sa, salen) == 0 || errno == EISCONN)
				return 0;
			if (errno != EAGAIN)
				return -1;
			struct timespec ts = {0, 1000000};
			nanosleep(&ts, NULL);
			if (deadline != IPC__FOREVER && ipc__now() >= deadline)
				return ipc__wouldblock(deadline);
		}
	}
	if (ipc__wait_fd(fd, POLLOUT, deadline) < 0)
		return -1;
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return -1;
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}
