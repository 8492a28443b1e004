/* sock.c - stream sockets: the socket byte stream under frame.c, and the
 * listener over one listening socket (unix, tcp). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "ipc_impl.h"

/* ---- the socket byte stream (struct ipc__bstream_ops) ----------------- */

struct sock_stream {
	int fd;       /* connected, blocking */
	int is_unix;
	int64_t rcvtimeo; /* SO_RCVTIMEO in force (ns), 0 = none */
	int64_t sndtimeo; /* SO_SNDTIMEO in force (ns), 0 = none */
};

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

static ssize_t ss_read(void *ctx, void *buf, size_t n, int64_t deadline)
{
	struct sock_stream *ss = ctx;
	for (;;) { /* the kernel timeout is checked again after a signal */
		int flags = kernel_wait_flags(ss->fd, SO_RCVTIMEO, &ss->rcvtimeo, deadline);
		ssize_t r = recv(ss->fd, buf, n, flags);
		if (r >= 0 || errno != EINTR) {
			if (r < 0 && errno == EWOULDBLOCK)
				errno = EAGAIN;
			return r;
		}
	}
}

static ssize_t ss_writev(void *ctx, const struct iovec *iov, int cnt, int64_t deadline)
{
	struct sock_stream *ss = ctx;
	struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt};
	for (;;) {
		int flags = kernel_wait_flags(ss->fd, SO_SNDTIMEO, &ss->sndtimeo, deadline) | MSG_NOSIGNAL;
		ssize_t r = sendmsg(ss->fd, &mh, flags);
		if (r > 0)
			return r;
		if (r == 0 || errno == EWOULDBLOCK) {
			errno = EAGAIN;
			return -1;
		}
		if (errno != EINTR)
			return -1;
	}
}

static short ss_poll_events(void *ctx, int dirs)
{
	(void)ctx;
	return (short)((dirs & IPC__BS_READ ? POLLIN : 0) | (dirs & IPC__BS_WRITE ? POLLOUT : 0));
}

static int ss_wait(void *ctx, int dirs, int64_t deadline)
{
	struct sock_stream *ss = ctx;
	int r = ipc__wait_fd(ss->fd, ss_poll_events(ctx, dirs), deadline);
	if (r < 0)
		return -1;
	int ready = 0;
	if (r & (POLLERR | POLLHUP | POLLNVAL))
		ready = dirs; /* the next read/write reports it */
	if (r & POLLIN)
		ready |= IPC__BS_READ;
	if (r & POLLOUT)
		ready |= IPC__BS_WRITE;
	return ready & dirs;
}

/* tcp: a FIN or reset already received.  unix needs no look: the kernel
 * fails a send to a closed unix peer with EPIPE itself. */
static int ss_peer_ended(void *ctx)
{
	struct sock_stream *ss = ctx;
	if (ss->is_unix)
		return 0;
	struct pollfd p = {.fd = ss->fd, .events = POLLRDHUP};
	return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* tcp: data reaching a closed socket is answered with a reset, which
 * destroys what the peer has not read. */
static int ss_lossy_close(void *ctx)
{
	return !((struct sock_stream *)ctx)->is_unix;
}

static ssize_t ss_peek(void *ctx, void *buf, size_t n)
{
	ssize_t r;
	do
		r = recv(((struct sock_stream *)ctx)->fd, buf, n, MSG_PEEK | MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	return r;
}

static int ss_shutdown_write(void *ctx)
{
	return shutdown(((struct sock_stream *)ctx)->fd, SHUT_WR);
}

static int ss_peer_cred(void *ctx, struct ipc_cred *cred)
{
	struct sock_stream *ss = ctx;
	if (!ss->is_unix) {
		errno = EOPNOTSUPP;
		return -1;
	}
	return ipc__sock_cred(ss->fd, cred);
}

static int ss_fd(void *ctx)
{
	return ((struct sock_stream *)ctx)->fd;
}

static void ss_close(void *ctx)
{
	struct sock_stream *ss = ctx;
	ipc__close_fd(ss->fd);
	free(ss);
}

static const struct ipc__bstream_ops sock_stream_ops = {
	.read = ss_read,
	.writev = ss_writev,
	.wait = ss_wait,
	.poll_events = ss_poll_events,
	.peer_ended = ss_peer_ended,
	.peek = ss_peek,
	.lossy_close = ss_lossy_close,
	.shutdown_write = ss_shutdown_write,
	.peer_cred = ss_peer_cred,
	.fd = ss_fd,
	.close = ss_close,
};

struct ipc_conn *ipc__sock_conn_new(int fd, const struct ipc_options *o, int is_unix)
{
	struct sock_stream *ss = malloc(sizeof *ss);
	if (!ss || ipc__set_nonblock(fd, 0) < 0) {
		free(ss);
		ipc__close_fd(fd);
		return NULL;
	}
	if (!is_unix)
		ipc__tcp_tune(fd, o); /* a silently dead link or host is noticed */
	*ss = (struct sock_stream){.fd = fd, .is_unix = is_unix};
	return ipc__stream_new(&sock_stream_ops, ss, o);
}

/* ---- listeners over one listening socket ------------------------------ */

/*
 * Accepted sockets wait in pend[] (in the edge-triggered epoll set) until
 * their whole hello has arrived, then move to the ready queue that accept
 * takes from.  The listening socket is in the set level-triggered.
 */
enum sock_peek {
	PEEK_HELLO,   /* the whole hello is there */
	PEEK_WAIT,    /* not yet: keep waiting */
	PEEK_GONE,    /* closed or reset before its hello: drop silently */
};

static enum sock_peek sock_peek_hello(int fd)
{
	unsigned char h[IPC__HELLO_LEN];
	ssize_t r;
	do
		r = recv(fd, h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	if (r == (ssize_t)sizeof h)
		return PEEK_HELLO;
	if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
		return PEEK_GONE;
	struct pollfd p = {.fd = fd, .events = POLLRDHUP};
	if (r > 0 && poll(&p, 1, 0) > 0 && p.revents)
		return PEEK_GONE; /* part of a hello, then the end */
	return PEEK_WAIT;
}

/* Remove pend[i] from the set (the caller owns its descriptor now). */
static int sl_unpend(struct ipc__sock_listener *l, int i)
{
	int fd = l->pend[i];
	size_t tail = (size_t)(l->npend - i - 1);
	memmove(l->pend + i, l->pend + i + 1, sizeof l->pend[0] * tail);
	memmove(l->pend_since + i, l->pend_since + i + 1, sizeof l->pend_since[0] * tail);
	l->npend--;
	return fd;
}

static void sl_drop_pending(struct ipc__sock_listener *l, int i)
{
	close(sl_unpend(l, i)); /* closing removes it from the epoll set */
}

/* Take the listening socket out of the epoll set (pending set full: wake
 * when the oldest pending peer's grace ends) or put it back. */
static void sl_pause(struct ipc__sock_listener *l, int pause)
{
	if (pause == l->paused)
		return;
	struct epoll_event ev = {.events = pause ? 0 : EPOLLIN, .data.fd = l->fd};
	epoll_ctl(l->epfd, EPOLL_CTL_MOD, l->fd, &ev);
	l->paused = pause;
	struct itimerspec it = {{0, 0}, {0, 0}};
	if (pause) {
		int64_t at = l->pend_since[0] + (int64_t)IPC__SOCK_HELLO_GRACE_MS * 1000000;
		it.it_value.tv_sec = at / 1000000000;
		it.it_value.tv_nsec = at % 1000000000;
	}
	timerfd_settime(l->tfd, pause ? TFD_TIMER_ABSTIME : 0, &it, NULL);
}

/* Refuse a unix peer the mode does not allow: a refusal hello, then EOF. */
static int sl_admit(struct ipc__sock_listener *l, int fd)
{
	struct ipc_cred cr;
	if (!l->is_unix)
		return 1;
	if (ipc__sock_cred(fd, &cr) == 0 && ipc__mode_allows(l->base.opt.mode, &cr))
		return 1;
	unsigned char h[IPC__HELLO_LEN];
	ipc__hello_encode(h, IPC__HELLO_REFUSED);
	(void)!send(fd, h, sizeof h, MSG_DONTWAIT | MSG_NOSIGNAL);
	shutdown(fd, SHUT_WR);
	return 0;
}

/* Place a freshly accepted socket: refused, ready, or pending. */
static void sl_place(struct ipc__sock_listener *l, int fd)
{
	if (!sl_admit(l, fd)) {
		close(fd);
		return;
	}
	switch (sock_peek_hello(fd)) {
	case PEEK_HELLO:
		l->ready[l->nready++] = fd;
		return;
	case PEEK_GONE:
		close(fd);
		return;
	case PEEK_WAIT:
		break;
	}
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = fd};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		close(fd);
		return;
	}
	l->pend_since[l->npend] = ipc__now();
	l->pend[l->npend++] = fd;
}

/* A batch ended with sockets perhaps left in the kernel: the timer, expired
 * at once, is a new event in the readiness set, so that a waiter on an
 * edge-triggered epoll comes back too (the next sl_scan clears it). */
static void sl_kick(struct ipc__sock_listener *l)
{
	struct itimerspec it = {{0, 0}, {0, 1}};
	timerfd_settime(l->tfd, 0, &it, NULL);
}

int ipc__accept_transient(int err)
{
	switch (err) {
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
		return 1;
	default:
		return 0;
	}
}

/* Accept what the kernel has, at most IPC__ACCEPT_BATCH sockets a call:
 * refused peers fill neither queue, so a flood of them must not keep one
 * call busy (the listening socket stays readable for the next call).  0, or
 * -1 with errno (EMFILE...) when nothing could be taken. */
static int sl_accept_all(struct ipc__sock_listener *l)
{
	int n;
	for (n = 0; n < IPC__ACCEPT_BATCH && l->nready < IPC__SOCK_PENDING_MAX; n++) {
		/* nready at the max: accept takes some first */
		if (l->npend + l->nready >= IPC__SOCK_PENDING_MAX) {
			/* full of peers yet to say hello: the oldest goes once
			 * its grace has passed; until then, wait for it */
			if (ipc__now() - l->pend_since[0] < (int64_t)IPC__SOCK_HELLO_GRACE_MS * 1000000) {
				sl_pause(l, 1);
				return 0;
			}
			sl_drop_pending(l, 0);
		}
		int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd >= 0) {
			sl_place(l, fd);
			continue;
		}
		if (ipc__accept_transient(errno))
			continue; /* that client is gone; the next may be there */
		return errno == EAGAIN ? 0 : -1;
	}
	if (n == IPC__ACCEPT_BATCH)
		sl_kick(l);
	return 0;
}

/* Move pending sockets whose hello completed (or that went away). */
static void sl_scan(struct ipc__sock_listener *l)
{
	struct epoll_event evs[64];
	uint64_t ticks;
	int n;
	while ((n = epoll_wait(l->epfd, evs, 64, 0)) > 0) { /* harvest edges */
		if (n < 64)
			break;
	}
	(void)!read(l->tfd, &ticks, sizeof ticks);
	for (int i = 0; i < l->npend;) {
		enum sock_peek p = sock_peek_hello(l->pend[i]);
		if (p == PEEK_WAIT) {
			i++;
			continue;
		}
		if (p == PEEK_HELLO) {
			int fd = sl_unpend(l, i);
			epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
			l->ready[l->nready++] = fd;
		} else {
			sl_drop_pending(l, i);
		}
	}
	sl_pause(l, 0); /* sl_accept_all pauses again if still full */
}

static int sl_pump(struct ipc__sock_listener *l)
{
	sl_scan(l);
	int r = sl_accept_all(l);
	return l->nready ? 0 : r;
}

int ipc__sock_listener_init(struct ipc__sock_listener *l)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = l->fd};
	struct epoll_event tev = {.events = EPOLLIN, .data.fd = -1};
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (l->epfd < 0 || l->tfd < 0 || epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->fd, &ev) < 0 ||
	    epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->tfd, &tev) < 0) {
		ipc__close_fd(l->epfd);
		ipc__close_fd(l->tfd);
		l->epfd = l->tfd = -1;
		return -1;
	}
	return 0;
}

static int sl_take_ready(struct ipc__sock_listener *l)
{
	int fd = l->ready[0];
	memmove(l->ready, l->ready + 1, sizeof l->ready[0] * (size_t)--l->nready);
	return fd;
}

struct ipc_conn *ipc__sock_accept(struct ipc_listener *base, int64_t deadline)
{
	struct ipc__sock_listener *l = (struct ipc__sock_listener *)base;
	for (;;) {
		if (sl_pump(l) < 0)
			return NULL;
		if (l->nready)
			return ipc__sock_conn_new(sl_take_ready(l), &base->opt, l->is_unix);
		if (ipc__deadline_passed(deadline)) { /* epfd may stay readable */
			ipc__wouldblock(deadline);
			return NULL;
		}
		if (ipc__wait_fd(l->epfd, POLLIN, deadline) < 0)
			return NULL;
	}
}

int ipc__sock_listener_addr(const struct ipc_listener *l, char *buf, size_t len)
{
	return ipc__format(buf, len, "%s", ((const struct ipc__sock_listener *)l)->addr);
}

int ipc__sock_listener_fd(const struct ipc_listener *l)
{
	return ((const struct ipc__sock_listener *)l)->epfd;
}

int ipc__sock_listener_ready(struct ipc_listener *base, int events, short *pollev)
{
	struct ipc__sock_listener *l = (struct ipc__sock_listener *)base;
	*pollev = 0;
	if (!(events & IPC_POLLIN))
		return 0;
	if (sl_pump(l) < 0) /* e.g. EMFILE: accept reports it */
		return IPC_POLLIN | IPC_POLLERR;
	if (l->nready)
		return IPC_POLLIN;
	*pollev = POLLIN;
	return 0;
}

void ipc__sock_listener_close(struct ipc_listener *base)
{
	struct ipc__sock_listener *l = (struct ipc__sock_listener *)base;
	struct stat st;
	/* remove the socket file only if it is still the one we made, by
	 * name in the directory we made it in (never a path resolved anew) */
	if (l->path[0]) {
		const char *slash = strrchr(l->path, '/');
		const char *base = slash ? slash + 1 : l->path;
		if (fstatat(l->dirfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode) &&
		    st.st_dev == l->dev && st.st_ino == l->ino)
			unlinkat(l->dirfd, base, 0);
		close(l->dirfd);
	}
	for (int i = 0; i < l->npend; i++)
		close(l->pend[i]);
	for (int i = 0; i < l->nready; i++)
		close(l->ready[i]);
	if (l->epfd >= 0)
		close(l->epfd);
	if (l->tfd >= 0)
		close(l->tfd);
	close(l->fd);
	free(l);
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
