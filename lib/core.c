/* core.c - public API: argument checks, options, deadlines, dispatch. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc_impl.h"

extern const struct ipc__transport ipc__unix_transport;
extern const struct ipc__transport ipc__tcp_transport;
extern const struct ipc__transport ipc__shm_transport;
extern const struct ipc__transport ipc__mq_transport;
#ifdef IPC_HAVE_TLS
extern const struct ipc__transport ipc__tls_transport;
#endif

/* The scheme table: the one place that lists transports. */
const struct ipc__transport *const ipc__transports[] = {
	&ipc__unix_transport,
	&ipc__tcp_transport,
	&ipc__shm_transport,
	&ipc__mq_transport,
#ifdef IPC_HAVE_TLS
	&ipc__tls_transport,
#endif
	NULL,
};

/* The six functions whose 0.1 behaviour lib/compat.c keeps under IPC_0.1:
 * these definitions are the default version, IPC_0.2. */
#ifndef IPC__NO_SYMVER
#define IPC__DEFAULT_V02(fn) __asm__(".symver " #fn ", " #fn "@@@IPC_0.2")
#else /* the fuzz build: clang's coverage instrumentation would define
       * both fn and fn@@IPC_0.2, a duplicate in a static link */
#define IPC__DEFAULT_V02(fn) struct ipc__no_symver_##fn
#endif
IPC__DEFAULT_V02(ipc_options_init);
IPC__DEFAULT_V02(ipc_listen);
IPC__DEFAULT_V02(ipc_connect);
IPC__DEFAULT_V02(ipc_conn_ready);
IPC__DEFAULT_V02(ipc_listener_ready);
IPC__DEFAULT_V02(ipc_poll);

const char *ipc_version(int *major, int *minor, int *patch)
{
#define IPC__STR2(x) #x
#define IPC__STR(x) IPC__STR2(x)
	if (major)
		*major = IPC_VERSION_MAJOR;
	if (minor)
		*minor = IPC_VERSION_MINOR;
	if (patch)
		*patch = IPC_VERSION_PATCH;
	return IPC__STR(IPC_VERSION_MAJOR) "." IPC__STR(IPC_VERSION_MINOR) "." IPC__STR(IPC_VERSION_PATCH);
}

void ipc_options_init(struct ipc_options *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof *o);
	o->connect_timeout_ms = IPC_DEFAULT_CONNECT_TIMEOUT_MS;
	o->send_timeout_ms = -1;
	o->recv_timeout_ms = -1;
	o->linger_ms = IPC_DEFAULT_LINGER_MS;
	o->nonblock = 0;
	o->max_msg_size = IPC_DEFAULT_MAX_MSG;
	o->capacity = IPC_DEFAULT_CAPACITY;
	o->mode = 0600;
	o->peer_check = IPC_PEER_SAME;
	o->peer_uid = 0;
	o->tls_verify = IPC_TLS_VERIFY_PEER;
	o->tls_min_version = IPC_TLS_1_2;
	o->keepalive_idle_s = 30;
	o->keepalive_interval_s = 5;
	o->keepalive_count = 4;
	o->user_timeout_ms = 60000;
}

/* The option strings are read by listen/connect only: a handle keeps none. */
static void opts_forget_strings(struct ipc_options *o)
{
	o->tls_cert_file = o->tls_key_file = o->tls_ca_file = o->tls_ca_dir = o->tls_server_name = NULL;
}

static int opts_resolve(const struct ipc_options *in, struct ipc_options *out)
{
	if (!in)
		ipc_options_init(out);
	else
		*out = *in;
	if (out->connect_timeout_ms < -1 || out->send_timeout_ms < -1 || out->recv_timeout_ms < -1 ||
	    out->linger_ms < -1 || out->max_msg_size == 0 || out->max_msg_size > IPC_MAX_MSG_LIMIT ||
	    out->capacity < 4096 || out->capacity > ((size_t)1 << 30) || (out->mode & ~0777u) ||
	    out->peer_check < IPC_PEER_SAME || out->peer_check > IPC_PEER_ANY ||
	    out->tls_verify < IPC_TLS_VERIFY_PEER || out->tls_verify > IPC_TLS_VERIFY_NONE ||
	    (out->tls_min_version != IPC_TLS_1_2 && out->tls_min_version != IPC_TLS_1_3) ||
	    out->keepalive_idle_s < 0 || out->keepalive_idle_s > 32767 || out->keepalive_interval_s < 1 ||
	    out->keepalive_interval_s > 32767 || out->keepalive_count < 1 || out->keepalive_count > 127 ||
	    out->user_timeout_ms < 0) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

/* Find the transport of addr; *name gets the part after "scheme:". */
static const struct ipc__transport *lookup(const char *addr, const char **name)
{
	if (!addr) {
		errno = EINVAL;
		return NULL;
	}
	if (strnlen(addr, IPC_ADDR_MAX + 1) > IPC_ADDR_MAX) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	const char *colon = strchr(addr, ':');
	if (!colon || colon == addr) {
		errno = EINVAL;
		return NULL;
	}
	size_t sl = (size_t)(colon - addr);
	for (const struct ipc__transport *const *t = ipc__transports; *t; t++) {
		if (strlen((*t)->scheme) == sl && memcmp((*t)->scheme, addr, sl) == 0) {
			if (colon[1] == '\0') {
				errno = EINVAL;
				return NULL;
			}
			*name = colon + 1;
			return *t;
		}
	}
	errno = EPROTONOSUPPORT;
	return NULL;
}

ipc_listener *ipc_listen(const char *addr, const struct ipc_options *opts)
{
	struct ipc_options o;
	const char *name;
	ipc__detail_clear();
	const struct ipc__transport *tp = lookup(addr, &name);
	if (!tp || opts_resolve(opts, &o) < 0)
		return NULL;
	struct ipc_listener *l = tp->listen(name, &o);
	if (!l)
		return NULL;
	l->tp = tp;
	l->opt = o;
	opts_forget_strings(&l->opt);
	return l;
}

static int64_t call_deadline(int nonblock, int timeout_ms, int flags)
{
	if ((flags & IPC_DONTWAIT) || nonblock)
		return IPC__NOW;
	return ipc__deadline(timeout_ms);
}

/* The deadline of a send or receive on c; unanchored for a transport
 * that asked for it (ipc_impl.h, IPC__LAZY). */
static int64_t conn_deadline(const ipc_conn *c, int timeout_ms, int flags)
{
	if (c->tp->lazy_deadline && timeout_ms > 0 && !(flags & IPC_DONTWAIT) && !c->opt.nonblock)
		return IPC__LAZY | timeout_ms;
	return call_deadline(c->opt.nonblock, timeout_ms, flags);
}

static int check_flags(int flags)
{
	if (flags & ~IPC_DONTWAIT) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

ipc_conn *ipc_accept(ipc_listener *l, int flags)
{
	if (!l || check_flags(flags) < 0) {
		errno = EINVAL;
		return NULL;
	}
	ipc__detail_clear();
	int64_t dl = call_deadline(l->opt.nonblock, l->opt.recv_timeout_ms, flags);
	struct ipc_conn *c = l->tp->accept(l, dl);
	if (!c)
		return NULL;
	c->tp = l->tp;
	c->opt = l->opt;
	return c;
}

ipc_conn *ipc_connect(const char *addr, const struct ipc_options *opts)
{
	struct ipc_options o;
	const char *name;
	ipc__detail_clear();
	const struct ipc__transport *tp = lookup(addr, &name);
	if (!tp || opts_resolve(opts, &o) < 0)
		return NULL;
	int64_t dl = ipc__deadline(o.connect_timeout_ms);
	if (dl == IPC__NOW) /* a connect always gets to try once */
		dl = ipc__now();
	struct ipc_conn *c;
	int pause_ms = 10, refused = 0;
	while (!(c = tp->connect(name, &o, dl))) {
		/* connect_retry: nobody listens yet; try again, a new
		 * connection each time, until the deadline */
		if (refused && (errno == ETIMEDOUT || errno == EAGAIN))
			errno = refused; /* out of time while nobody listened */
		if (!o.connect_retry || (errno != ECONNREFUSED && errno != ENOENT))
			return NULL;
		int left = ipc__remaining_ms(dl);
		if (left == 0)
			return NULL;
		refused = errno;
		ipc__sleep_ms(left < 0 || left > pause_ms ? pause_ms : left);
		errno = refused;
		if (pause_ms < 200)
			pause_ms *= 2;
	}
	c->tp = tp;
	c->opt = o;
	opts_forget_strings(&c->opt);
	return c;
}

int ipc_pair(const char *scheme, const struct ipc_options *opts, ipc_conn *pair[2])
{
	struct ipc_options o;
	const struct ipc__transport *tp = NULL;
	if (!scheme || !pair) {
		errno = EINVAL;
		return -1;
	}
	pair[0] = pair[1] = NULL;
	size_t n = strcspn(scheme, ":");
	if (scheme[n] == ':' && scheme[n + 1]) {
		errno = EINVAL;
		return -1;
	}
	for (size_t i = 0; ipc__transports[i]; i++)
		if (strlen(ipc__transports[i]->scheme) == n && !strncmp(ipc__transports[i]->scheme, scheme, n))
			tp = ipc__transports[i];
	if (!tp || !tp->pair) {
		errno = EPROTONOSUPPORT;
		return -1;
	}
	if (opts_resolve(opts, &o) < 0)
		return -1;
	struct ipc_conn *c[2];
	if (tp->pair(&o, c) < 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		c[i]->tp = tp;
		c[i]->opt = o;
		opts_forget_strings(&c[i]->opt);
		pair[i] = c[i];
	}
	return 0;
}

/* Sum iov lengths; EINVAL on bad vectors, EMSGSIZE over the limit. */
static int iov_total(const struct iovec *iov, int iovcnt, size_t max, size_t *total)
{
	if (iovcnt < 0 || iovcnt > IOV_MAX || (iovcnt > 0 && !iov)) {
		errno = EINVAL;
		return -1;
	}
	size_t t = 0;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len && !iov[i].iov_base) {
			errno = EINVAL;
			return -1;
		}
		if (iov[i].iov_len > max - t) {
			errno = EMSGSIZE;
			return -1;
		}
		t += iov[i].iov_len;
	}
	*total = t;
	return 0;
}

ssize_t ipc_sendv(ipc_conn *c, const struct iovec *iov, int iovcnt, int flags)
{
	size_t total;
	if (!c || check_flags(flags) < 0) {
		errno = EINVAL;
		return -1;
	}
	if (iov_total(iov, iovcnt, c->opt.max_msg_size, &total) < 0)
		return -1;
	int64_t dl = conn_deadline(c, c->opt.send_timeout_ms, flags);
	if (c->tp->send(c, iov, iovcnt, total, dl) < 0)
		return -1;
	return (ssize_t)total;
}

ssize_t ipc_send(ipc_conn *c, const void *buf, size_t len, int flags)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	return ipc_sendv(c, &iov, 1, flags);
}

static ssize_t recv_common(ipc_conn *c, void *buf, size_t len, void **allocp, int flags)
{
	if (!c || check_flags(flags) < 0 || (!allocp && !buf && len)) {
		errno = EINVAL;
		return -1;
	}
	int64_t dl = conn_deadline(c, c->opt.recv_timeout_ms, flags);
	return c->tp->recv(c, buf, len, allocp, dl);
}

ssize_t ipc_recv(ipc_conn *c, void *buf, size_t len, int flags)
{
	return recv_common(c, buf, len, NULL, flags);
}

ssize_t ipc_recv_alloc(ipc_conn *c, void **bufp, int flags)
{
	if (!bufp) {
		errno = EINVAL;
		return -1;
	}
	*bufp = NULL;
	return recv_common(c, NULL, 0, bufp, flags);
}

ssize_t ipc_send_batch(ipc_conn *c, const struct iovec *msgs, size_t n, int flags)
{
	if (!c || check_flags(flags) < 0 || n == 0 || !msgs) {
		errno = EINVAL;
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (msgs[i].iov_len && !msgs[i].iov_base) {
			errno = EINVAL;
			return -1;
		}
		if (msgs[i].iov_len > c->opt.max_msg_size) {
			errno = EMSGSIZE;
			return -1;
		}
	}
	int64_t dl = conn_deadline(c, c->opt.send_timeout_ms, flags);
	if (c->tp->send_batch)
		return c->tp->send_batch(c, msgs, n, dl);
	size_t i = 0;
	for (; i < n; i++) {
		if (c->tp->send(c, &msgs[i], 1, msgs[i].iov_len, i ? IPC__NOW : dl) < 0) {
			if (i && (errno == EAGAIN))
				break;
			return i ? (ssize_t)i : -1;
		}
	}
	return (ssize_t)i;
}

ssize_t ipc_recv_batch(ipc_conn *c, struct iovec *msgs, size_t n, int flags)
{
	if (!c || check_flags(flags) < 0 || n == 0 || !msgs) {
		errno = EINVAL;
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (msgs[i].iov_len && !msgs[i].iov_base) {
			errno = EINVAL;
			return -1;
		}
	}
	int64_t dl = conn_deadline(c, c->opt.recv_timeout_ms, flags);
	if (c->tp->recv_batch)
		return c->tp->recv_batch(c, msgs, n, dl);
	size_t i = 0;
	for (; i < n; i++) {
		ssize_t r = c->tp->recv(c, msgs[i].iov_base, msgs[i].iov_len, NULL, i ? IPC__NOW : dl);
		if (r < 0) {
			if (i)
				break; /* the error shows again on the next call */
			return -1;
		}
		msgs[i].iov_len = (size_t)r;
	}
	return (ssize_t)i;
}

int ipc_flush(ipc_conn *c, int flags)
{
	if (!c || check_flags(flags) < 0) {
		errno = EINVAL;
		return -1;
	}
	if (!c->tp->flush)
		return 0;
	return c->tp->flush(c, conn_deadline(c, c->opt.send_timeout_ms, flags));
}

int ipc_conn_set_timeouts(ipc_conn *c, int send_timeout_ms, int recv_timeout_ms)
{
	if (!c || send_timeout_ms < -1 || recv_timeout_ms < -1) {
		errno = EINVAL;
		return -1;
	}
	c->opt.send_timeout_ms = send_timeout_ms;
	c->opt.recv_timeout_ms = recv_timeout_ms;
	return 0;
}

int ipc_conn_fd(const ipc_conn *c)
{
	if (!c) {
		errno = EINVAL;
		return -1;
	}
	return c->tp->conn_fd(c);
}

int ipc_conn_ready(ipc_conn *c, int events, short *pollevents)
{
	short dummy;
	if (!c || (events & ~(IPC_POLLIN | IPC_POLLOUT))) {
		errno = EINVAL;
		return -1;
	}
	return c->tp->conn_ready(c, events, pollevents ? pollevents : &dummy);
}

const char *ipc_conn_scheme(const ipc_conn *c)
{
	if (!c) {
		errno = EINVAL;
		return NULL;
	}
	return c->tp->scheme;
}

int ipc_conn_peer_cred(const ipc_conn *c, struct ipc_cred *cred)
{
	if (!c || !cred) {
		errno = EINVAL;
		return -1;
	}
	return c->tp->peer_cred(c, cred);
}

int ipc_conn_peer_cert(const ipc_conn *c, int what, char *buf, size_t len)
{
	if (!c || !buf || (what != IPC_CERT_SUBJECT && what != IPC_CERT_SAN)) {
		errno = EINVAL;
		return -1;
	}
	if (!c->tp->peer_cert) {
		errno = EOPNOTSUPP;
		return -1;
	}
	return c->tp->peer_cert(c, what, buf, len);
}

int ipc_close(ipc_conn *c)
{
	if (!c) {
		errno = EINVAL;
		return -1;
	}
	return c->tp->close(c, ipc__deadline(c->opt.linger_ms));
}

int ipc_listener_fd(const ipc_listener *l)
{
	if (!l) {
		errno = EINVAL;
		return -1;
	}
	return l->tp->listener_fd(l);
}

int ipc_listener_ready(ipc_listener *l, int events, short *pollevents)
{
	short dummy;
	if (!l || (events & ~IPC_POLLIN)) {
		errno = EINVAL;
		return -1;
	}
	return l->tp->listener_ready(l, events, pollevents ? pollevents : &dummy);
}

int ipc_listener_addr(const ipc_listener *l, char *buf, size_t len)
{
	if (!l || !buf) {
		errno = EINVAL;
		return -1;
	}
	return l->tp->listener_addr(l, buf, len);
}

int ipc_listener_close(ipc_listener *l)
{
	if (!l) {
		errno = EINVAL;
		return -1;
	}
	l->tp->listener_close(l);
	return 0;
}

/* Readiness of one item now; fills pfd for the wait when not ready. */
static int item_ready(struct ipc_pollitem *it, struct pollfd *pfd, int hint)
{
	short pev = 0;
	int r;
	if (it->conn) {
		r = it->conn->tp->conn_ready(it->conn, (it->events & (IPC_POLLIN | IPC_POLLOUT)) | hint, &pev);
		pfd->fd = ipc_conn_fd(it->conn);
	} else {
		r = ipc_listener_ready(it->listener, it->events & IPC_POLLIN, &pev);
		pfd->fd = ipc_listener_fd(it->listener);
	}
	pfd->events = pev;
	pfd->revents = 0;
	if (!pev)
		pfd->fd = -1; /* nothing to wait for: a hangup must not wake us */
	return r;
}

/*
 * Before the first wait of an ipc_poll over connections whose readiness
 * is in memory (ready_peek: shm), look again for a few microseconds: with
 * a busy peer on another CPU the answer often comes within that time, and
 * a sleep costs both sides system calls (a wake-up byte per connection).
 * Each thread keeps its budget (spin_ns): doubled when a look paid off,
 * halved when it did not; none on one CPU.
 */
static _Thread_local int64_t spin_ns = IPC__POLL_SPIN_MAX_NS;

static int poll_may_spin(const struct ipc_pollitem *items, size_t n, int64_t dl)
{
	static _Atomic int cpus; /* 0: not yet known */
	int ncpu = atomic_load_explicit(&cpus, memory_order_relaxed);
	if (!ncpu) {
		long v = sysconf(_SC_NPROCESSORS_ONLN);
		ncpu = v > 0 && v < INT_MAX ? (int)v : 1;
		atomic_store_explicit(&cpus, ncpu, memory_order_relaxed);
	}
	if (ncpu < 2 || dl == IPC__NOW || n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!items[i].conn || !items[i].conn->tp->ready_peek)
			return 0;
	return 1;
}

/* Look at every item without preparing a wait until one is ready or the
 * budget is spent; the count of ready items (revents set), or 0. */
static int poll_spin(struct ipc_pollitem *items, size_t n, int64_t dl)
{
	int64_t end = ipc__now() + spin_ns;
	if (dl != IPC__FOREVER && dl < end)
		end = dl;
	do {
		int ready = 0;
		for (size_t i = 0; i < n; i++) {
			int ev = items[i].events & (IPC_POLLIN | IPC_POLLOUT);
			short pev;
			int r = items[i].conn->tp->conn_ready(items[i].conn, ev | IPC__READY_PEEK, &pev);
			items[i].revents = (short)r;
			ready += r != 0;
		}
		if (ready) {
			spin_ns = spin_ns * 2 > IPC__POLL_SPIN_MAX_NS ? IPC__POLL_SPIN_MAX_NS : spin_ns * 2;
			return ready;
		}
	} while (ipc__now() < end);
	spin_ns = spin_ns / 2 < IPC__POLL_SPIN_MIN_NS ? IPC__POLL_SPIN_MIN_NS : spin_ns / 2;
	return 0;
}

int ipc_poll(struct ipc_pollitem *items, size_t n, int timeout_ms)
{
	if ((n && !items) || n > (size_t)INT_MAX || timeout_ms < -1) {
		errno = EINVAL;
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (!items[i].conn == !items[i].listener ||
		    (items[i].events & ~(IPC_POLLIN | IPC_POLLOUT)) ||
		    (items[i].listener && (items[i].events & IPC_POLLOUT))) {
			errno = EINVAL;
			return -1;
		}
	}
	struct pollfd stackp[16];
	struct pollfd *pfds = n <= 16 ? stackp : calloc(n, sizeof *pfds);
	if (!pfds)
		return -1;
	int64_t dl = ipc__deadline(timeout_ms);
	int ready = poll_may_spin(items, n, dl) ? poll_spin(items, n, dl) : 0, waited = 0;
	while (!ready) {
		for (size_t i = 0; i < n; i++) {
			int hint = !waited || pfds[i].fd < 0 ? 0 : pfds[i].revents ? IPC__READY_SEEN : IPC__READY_QUIET;
			int r = item_ready(&items[i], &pfds[i], hint);
			if (r < 0) {
				ready = -1;
				goto out;
			}
			items[i].revents = (short)r;
			if (r) {
				ready++;
				pfds[i].fd = -1; /* not waited on */
			}
		}
		if (ready)
			break;
		int ms = ipc__remaining_ms(dl);
		if (dl != IPC__FOREVER && (dl == IPC__NOW || dl <= ipc__now()))
			break;
		int pr = poll(pfds, (nfds_t)n, ms);
		if (pr < 0 && errno != EINTR) {
			ready = -1;
			break;
		}
		waited = pr >= 0; /* revents are valid */
	}
out:
	if (pfds != stackp) {
		int e = errno;
		free(pfds);
		errno = e;
	}
	return ready;
}
