/* rendezvous.c - the local rendezvous shared by shm and mq: abstract
 * socket names, connect with a deadline and the listener identity check,
 * the hello with its descriptors, the listener's reply, and the listener's
 * bounded pending/ready queues with the mode check.  The protocol and its
 * rules are described in ipc_impl.h ("rendezvous.c"). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ipc_impl.h"

/* ---- status codes -------------------------------------------------------- */

int ipc__rdv_status_errno(unsigned byte)
{
	switch (byte) {
	case IPC__RDV_OK: return 0;
	case IPC__RDV_ACCESS: return EACCES;
	case IPC__RDV_LIMIT: return EMSGSIZE;
	case IPC__RDV_BUSY: return ECONNREFUSED;
	default: return EPROTO;
	}
}

/* ---- names ------------------------------------------------------------- */

int ipc__rdv_addr(const char *prefix, const char *hashed, const char *name, struct sockaddr_un *sa,
		  socklen_t *salen)
{
	size_t n = strlen(name), pl = strlen(prefix);
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	if (1 + pl + n <= sizeof sa->sun_path) {
		memcpy(sa->sun_path + 1, prefix, pl);
		memcpy(sa->sun_path + 1 + pl, name, n);
		*salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + pl + n);
		return 0;
	}
	if (!hashed) {
		errno = ENAMETOOLONG;
		return -1;
	}
	uint64_t h1 = 0xcbf29ce484222325ULL, h2 = 0x84222325cbf29ce4ULL;
	for (size_t i = 0; i < n; i++) {
		h1 = (h1 ^ (unsigned char)name[i]) * 0x100000001b3ULL;
		h2 = (h2 ^ (unsigned char)name[i]) * 0x100000001b3ULL;
		h2 ^= h2 >> 29;
	}
	int k = ipc__format(sa->sun_path + 1, sizeof sa->sun_path - 1, "%s%016llx%016llx", hashed,
			    (unsigned long long)h1, (unsigned long long)h2);
	if (k < 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	*salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)k);
	return 0;
}

/* ---- client side -------------------------------------------------------- */

int ipc__rdv_connect(const struct sockaddr_un *sa, socklen_t salen, const struct ipc_options *o,
		     int64_t deadline, struct ipc_cred *cr)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	for (;;) {
		if (connect(fd, (const struct sockaddr *)sa, salen) == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			goto fail;
		/* backlog full: retry until the deadline */
		if (ipc__remaining_ms(deadline) == 0) {
			errno = ETIMEDOUT;
			goto fail;
		}
		usleep(1000);
	}
	if (ipc__sock_cred(fd, cr) < 0 || ipc__listener_trusted(o, cr) < 0)
		goto fail;
	return fd;
fail:
	ipc__close_fd(fd);
	return -1;
}

/* One packet with descriptors, MSG_DONTWAIT; waits for room by deadline. */
static int rdv_sendmsg(int fd, const void *buf, size_t len, const int *fds, int nfds, int64_t deadline)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * IPC__RDV_MAX_FDS)];
	} u;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
	if (nfds < 0 || nfds > IPC__RDV_MAX_FDS) {
		errno = EINVAL;
		return -1;
	}
	if (nfds) {
		memset(&u, 0, sizeof u);
		m.msg_control = u.b;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	for (;;) {
		ssize_t r = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (r == (ssize_t)len)
			return 0;
		if (r >= 0) {
			errno = EPROTO;
			return -1;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -1;
		if (ipc__wait_fd(fd, POLLOUT, deadline) < 0)
			return -1;
	}
}

int ipc__rdv_send_hello(int fd, const void *hello, size_t len, const int *fds, int nfds, int64_t deadline)
{
	if (rdv_sendmsg(fd, hello, len, fds, nfds, deadline) == 0)
		return 0;
	if (errno == EPIPE || errno == ECONNRESET)
		errno = ECONNREFUSED; /* refused before our hello went out */
	return -1;
}

int ipc__rdv_peek_reply(int fd, void *buf, size_t len, int64_t deadline)
{
	unsigned char tmp[IPC__RDV_MAX_HELLO + 1];
	int reset = 0;
	if (len > IPC__RDV_MAX_HELLO) {
		errno = EINVAL;
		return -1;
	}
	for (;;) {
		ssize_t r = recv(fd, tmp, len + 1, MSG_PEEK | MSG_DONTWAIT);
		if (r > 0) {
			if ((size_t)r != len) {
				errno = EPROTO;
				return -1;
			}
			memcpy(buf, tmp, len);
			return 0;
		}
		if (r == 0) {
			errno = ECONNREFUSED;
			return -1;
		}
		if (errno == EINTR)
			continue;
		/* a listener that closes with our hello unread makes the kernel
		 * report ECONNRESET once before the queued reply */
		if (errno == ECONNRESET && !reset) {
			reset = 1;
			continue;
		}
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			errno = errno == ECONNRESET ? ECONNREFUSED : errno;
			return -1;
		}
		if (reset) {
			errno = ECONNREFUSED;
			return -1;
		}
		if (ipc__wait_fd(fd, POLLIN, deadline) < 0)
			return -1;
	}
}

/* ---- listener side ------------------------------------------------------ */

enum take_result { TAKE_WAIT, TAKE_READY, TAKE_DROPPED, TAKE_RETRY };

static int resource_err(int e)
{
	return e == EMFILE || e == ENFILE || e == ENOMEM || e == ENOBUFS;
}

/* Can we still open n descriptors?  (Tells our own fd exhaustion from a
 * peer that sent too many descriptors, when the kernel truncates them.) */
static int fds_available(int n, int fd)
{
	int d[IPC__RDV_MAX_FDS + 2], k = 0, ok = 1;
	for (; k < n && k < (int)(sizeof d / sizeof d[0]); k++) {
		d[k] = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (d[k] < 0) {
			ok = 0;
			break;
		}
	}
	while (k-- > 0)
		close(d[k]);
	return ok;
}

static void ep_add(struct ipc__rdv_listener *l, int fd)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
	epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void ep_del(struct ipc__rdv_listener *l, int fd)
{
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
}

/* Throw away the packet at the head of fd (with its descriptors). */
static void packet_discard(int fd)
{
	unsigned char junk;
	while (recv(fd, &junk, 1, MSG_DONTWAIT) < 0 && errno == EINTR)
		;
}

/* Refuse a candidate: take what it sent (a socket closed with unread data
 * makes the peer read ECONNRESET before our reply), reply status, close. */
static void refuse(struct ipc__rdv_listener *l, int fd, enum ipc__rdv_status status)
{
	unsigned char junk;
	for (int i = 0; i < 16; i++) {
		ssize_t r = recv(fd, &junk, 1, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
	}
	l->ops->reply(l, fd, status);
	ipc__close_fd(fd);
}

/*
 * Look at candidate fd's hello without consuming it (MSG_PEEK), build the
 * connection, and only then take the packet: a resource failure of ours
 * leaves the candidate queued for a later accept.  fd is in epfd on entry;
 * on TAKE_READY and TAKE_DROPPED it is no longer (and dropped ones are
 * closed).
 */
static int take(struct ipc__rdv_listener *l, int fd)
{
	const struct ipc__rdv_ops *ops = l->ops;
	unsigned char raw[IPC__RDV_MAX_HELLO + 1];
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * (IPC__RDV_MAX_FDS + 8))];
	} u;
	struct iovec iov = {.iov_base = raw, .iov_len = ops->hello_len + 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b};
	int fds[IPC__RDV_MAX_FDS + 8], nfds = 0, ret;
	enum ipc__rdv_status status = IPC__RDV_PROTO;
	void *conn = NULL;
	ssize_t r;
	while ((r = recvmsg(fd, &m, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return TAKE_WAIT;
	if (r < 0) { /* the peer is gone */
		ep_del(l, fd);
		ipc__close_fd(fd);
		return TAKE_DROPPED;
	}
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int f;
			memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof f);
			if (nfds < (int)(sizeof fds / sizeof fds[0]))
				fds[nfds++] = f;
			else
				ipc__close_fd(f);
		}
	}
	if ((m.msg_flags & MSG_CTRUNC) && (size_t)r == ops->hello_len && !fds_available(ops->nfds + 2, fd)) {
		errno = EMFILE; /* ours, not the peer's fault: keep it */
		ret = TAKE_RETRY;
		goto out;
	}
	struct ipc_cred cr;
	if ((size_t)r != ops->hello_len || (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || nfds != ops->nfds ||
	    ipc__sock_cred(fd, &cr) < 0) {
		ep_del(l, fd);
		refuse(l, fd, IPC__RDV_PROTO);
		ret = TAKE_DROPPED;
		goto out;
	}
	ep_del(l, fd);
	switch (ops->build(l, &fd, raw, fds, &cr, &conn, &status)) {
	case IPC__RDV_BUILT:
		packet_discard(fd); /* its descriptors are released by the kernel */
		ops->reply(l, fd, IPC__RDV_OK);
		l->ready[l->nready++] = conn;
		ret = TAKE_READY;
		break;
	case IPC__RDV_RETRY:
		ep_add(l, fd);
		ret = TAKE_RETRY;
		break;
	default:
		refuse(l, fd, status);
		ret = TAKE_DROPPED;
		break;
	}
out:;
	int e = errno;
	for (int i = 0; i < nfds; i++)
		ipc__close_fd(fds[i]);
	errno = e;
	return ret;
}

static void pend_remove(struct ipc__rdv_listener *l, int i)
{
	memmove(&l->pend[i], &l->pend[i + 1], sizeof l->pend[0] * (size_t)(l->npend - i - 1));
	l->npend--;
}

/* Try every pending candidate, in accept order.  Stops at a resource
 * error of ours (kept in l->err) or when the ready queue is full. */
static void pend_scan(struct ipc__rdv_listener *l)
{
	for (int i = 0; i < l->npend && l->nready < IPC__RDV_MAX_READY;) {
		int r = take(l, l->pend[i].fd);
		if (r == TAKE_WAIT) {
			i++;
			continue;
		}
		if (r == TAKE_RETRY) {
			l->err = errno ? errno : ENOMEM;
			if (ipc__now() - l->pend[i].since < IPC__RDV_RETRY_NS)
				return;
			ep_del(l, l->pend[i].fd);
			refuse(l, l->pend[i].fd, IPC__RDV_BUSY);
		}
		pend_remove(l, i);
	}
}

/* A new socket from accept4 (or ipc__rdv_offer): the mode check, then the
 * pending set (the caller made room), then a first look at its hello,
 * which an honest client has usually sent already. */
static void admit(struct ipc__rdv_listener *l, int fd)
{
	struct ipc_cred cr;
	if (ipc__sock_cred(fd, &cr) < 0) {
		ipc__close_fd(fd);
		return;
	}
	if (!ipc__mode_allows(l->mode, &cr)) {
		refuse(l, fd, IPC__RDV_ACCESS);
		return;
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		l->err = errno;
		l->ops->reply(l, fd, IPC__RDV_BUSY);
		ipc__close_fd(fd);
		return;
	}
	l->pend[l->npend].fd = fd;
	l->pend[l->npend++].since = ipc__now();
	if (l->nready < IPC__RDV_MAX_READY) {
		int r = take(l, fd);
		if (r == TAKE_READY || r == TAKE_DROPPED)
			l->npend--;
		else if (r == TAKE_RETRY)
			l->err = errno ? errno : ENOMEM;
	}
}

/* Room for one more pending socket?  When the set is full, the oldest goes
 * once it had IPC__RDV_PENDING_NS to send its hello. */
static int pend_room(struct ipc__rdv_listener *l)
{
	if (l->npend < IPC__RDV_MAX_PENDING)
		return 1;
	if (ipc__now() - l->pend[0].since < IPC__RDV_PENDING_NS)
		return 0;
	ep_del(l, l->pend[0].fd);
	refuse(l, l->pend[0].fd, IPC__RDV_BUSY);
	pend_remove(l, 0);
	return 1;
}

/* While the pending set is full, the listening socket is left out of the
 * readiness set (it would stay readable and make every wait spin) and the
 * timer fires when the oldest pending peer's time is up. */
static void watch_update(struct ipc__rdv_listener *l)
{
	int full = l->npend == IPC__RDV_MAX_PENDING || l->nready == IPC__RDV_MAX_READY;
	struct itimerspec its;
	uint64_t ticks; /* clear an old expiry first: reading after arming
	                   could swallow the new one, and no wait would end */
	while (read(l->tfd, &ticks, sizeof ticks) < 0 && errno == EINTR)
		;
	memset(&its, 0, sizeof its);
	if (full && l->npend == IPC__RDV_MAX_PENDING && l->nready < IPC__RDV_MAX_READY) {
		int64_t at = l->pend[0].since + IPC__RDV_PENDING_NS;
		its.it_value.tv_sec = (time_t)(at / 1000000000);
		its.it_value.tv_nsec = (long)(at % 1000000000);
		if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
			its.it_value.tv_nsec = 1;
	}
	timerfd_settime(l->tfd, TFD_TIMER_ABSTIME, &its, NULL);
	if (full == !l->lfd_on)
		return;
	struct epoll_event ev = {.events = full ? 0 : EPOLLIN, .data.fd = l->lfd};
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, l->lfd, &ev) == 0)
		l->lfd_on = !full;
}

/* Non-blocking progress: hellos that have come, new sockets. */
static void step(struct ipc__rdv_listener *l)
{
	pend_scan(l);
	while (l->nready < IPC__RDV_MAX_READY && !l->err && pend_room(l)) {
		int fd = accept4(l->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (resource_err(errno))
				l->err = errno;
			break;
		}
		admit(l, fd);
	}
	watch_update(l);
}

void ipc__rdv_offer(struct ipc__rdv_listener *l, int fd)
{
	if (pend_room(l))
		admit(l, fd);
	else
		refuse(l, fd, IPC__RDV_BUSY);
	step(l);
}

struct ipc__rdv_listener *ipc__rdv_listener_new(size_t size, const struct ipc__rdv_ops *ops,
						const struct sockaddr_un *sa, socklen_t salen,
						const struct ipc_options *o)
{
	struct ipc__rdv_listener *l = calloc(1, size);
	if (!l)
		return NULL;
	l->ops = ops;
	l->mode = o->mode;
	l->epfd = l->tfd = -1;
	l->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (l->lfd < 0)
		goto fail;
	if (bind(l->lfd, (const struct sockaddr *)sa, salen) < 0 || listen(l->lfd, SOMAXCONN) < 0)
		goto fail;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		goto fail;
	l->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (l->tfd < 0)
		goto fail;
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = l->lfd};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->lfd, &ev) < 0)
		goto fail;
	ev.data.fd = l->tfd;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->tfd, &ev) < 0)
		goto fail;
	l->lfd_on = 1;
	return l;
fail:;
	int e = errno;
	ipc__close_fd(l->lfd);
	ipc__close_fd(l->epfd);
	ipc__close_fd(l->tfd);
	free(l);
	errno = e;
	return NULL;
}

struct ipc_conn *ipc__rdv_accept(struct ipc_listener *ll, int64_t deadline)
{
	struct ipc__rdv_listener *l = (struct ipc__rdv_listener *)ll;
	for (;;) {
		step(l);
		if (l->nready) {
			void *c = l->ready[0];
			memmove(l->ready, l->ready + 1, sizeof l->ready[0] * (size_t)--l->nready);
			l->err = 0;
			watch_update(l);
			return c;
		}
		if (l->err) {
			errno = l->err;
			l->err = 0;
			return NULL;
		}
		if (ipc__wait_fd(l->epfd, POLLIN, deadline) < 0)
			return NULL;
	}
}

int ipc__rdv_listener_fd(const struct ipc_listener *ll)
{
	return ((const struct ipc__rdv_listener *)ll)->epfd;
}

int ipc__rdv_listener_ready(struct ipc_listener *ll, int events, short *pollev)
{
	struct ipc__rdv_listener *l = (struct ipc__rdv_listener *)ll;
	int e = errno;
	step(l);
	errno = e;
	if ((l->nready || l->err) && (events & IPC_POLLIN))
		return IPC_POLLIN;
	*pollev = POLLIN;
	return 0;
}

void ipc__rdv_listener_close(struct ipc_listener *ll)
{
	struct ipc__rdv_listener *l = (struct ipc__rdv_listener *)ll;
	while (l->npend)
		ipc__close_fd(l->pend[--l->npend].fd);
	while (l->nready)
		l->ops->conn_drop(l->ready[--l->nready]);
	ipc__close_fd(l->lfd);
	ipc__close_fd(l->epfd);
	ipc__close_fd(l->tfd);
	free(l);
}
