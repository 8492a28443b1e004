/* tcp.c - tcp:host:port over IPv4 and IPv6. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ipc_impl.h"

/*
 * getaddrinfo bounded by deadline.  A numeric address never waits; a name
 * is resolved by a short-lived detached thread (all signals blocked in
 * it) while the caller waits for it until the deadline (documented in
 * ipc_connect(3)).  A lookup still running then is abandoned: the thread
 * frees its request when the resolver finally answers.  Returns
 * getaddrinfo's codes; EAI_SYSTEM with ETIMEDOUT when the deadline passed.
 */
struct tcp_lookup {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done, abandoned, rc, err;
	struct addrinfo hints, *res;
	char port[12];
	char host[]; /* NUL-terminated */
};

static void lookup_free(struct tcp_lookup *lk)
{
	pthread_cond_destroy(&lk->cv);
	pthread_mutex_destroy(&lk->mu);
	free(lk);
}

static void *lookup_main(void *arg)
{
	struct tcp_lookup *lk = arg;
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(lk->host, lk->port, &lk->hints, &res);
	int err = errno;
	pthread_mutex_lock(&lk->mu);
	if (lk->abandoned) {
		pthread_mutex_unlock(&lk->mu);
		if (rc == 0)
			freeaddrinfo(res);
		lookup_free(lk);
		return NULL;
	}
	lk->rc = rc;
	lk->err = err;
	lk->res = res;
	lk->done = 1;
	pthread_cond_signal(&lk->cv);
	pthread_mutex_unlock(&lk->mu);
	return NULL;
}

static struct tcp_lookup *lookup_new(const char *host, const char *port, const struct addrinfo *hints)
{
	size_t hl = strlen(host);
	struct tcp_lookup *lk = calloc(1, sizeof *lk + hl + 1);
	pthread_condattr_t ca;
	if (!lk)
		return NULL;
	memcpy(lk->host, host, hl + 1);
	snprintf(lk->port, sizeof lk->port, "%s", port);
	lk->hints = *hints;
	pthread_mutex_init(&lk->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&lk->cv, &ca);
	pthread_condattr_destroy(&ca);
	return lk;
}

static int lookup_start(struct tcp_lookup *lk)
{
	pthread_attr_t at;
	pthread_t th;
	sigset_t all, old;
	sigfillset(&all);
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	pthread_sigmask(SIG_SETMASK, &all, &old); /* the thread inherits it */
	int r = pthread_create(&th, &at, lookup_main, lk);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&at);
	return r;
}

static int tcp_getaddrinfo(const char *host, const char *port, const struct addrinfo *hints,
			   struct addrinfo **res, int64_t deadline)
{
	struct addrinfo numeric = *hints;
	numeric.ai_flags |= AI_NUMERICHOST;
	int r = getaddrinfo(host, port, &numeric, res);
	if (r != EAI_NONAME || !host)
		return r;
	struct tcp_lookup *lk = NULL;
	if (deadline == IPC__FOREVER || deadline == IPC__NOW || !(lk = lookup_new(host, port, hints)) ||
	    lookup_start(lk) != 0) {
		if (lk)
			lookup_free(lk);
		return getaddrinfo(host, port, hints, res); /* cannot bound it */
	}
	struct timespec ts = {.tv_sec = deadline / 1000000000, .tv_nsec = deadline % 1000000000};
	pthread_mutex_lock(&lk->mu);
	while (!lk->done)
		if (pthread_cond_timedwait(&lk->cv, &lk->mu, &ts) == ETIMEDOUT && !lk->done) {
			lk->abandoned = 1; /* the thread frees it */
			pthread_mutex_unlock(&lk->mu);
			errno = ETIMEDOUT;
			return EAI_SYSTEM;
		}
	pthread_mutex_unlock(&lk->mu);
	r = lk->rc;
	*res = lk->res;
	errno = lk->err;
	lookup_free(lk);
	return r;
}

/* Resolve host:port by deadline; passive for listen.  EHOSTUNREACH if it
 * does not resolve, ETIMEDOUT if the deadline passes first. */
static struct addrinfo *tcp_resolve(const char *name, int passive, int64_t deadline)
{
	char host[NI_MAXHOST], port[12];
	unsigned p;
	if (ipc__split_hostport(name, host, sizeof host, &p) < 0)
		return NULL;
	if (!passive && (p == 0 || host[0] == '\0')) {
		errno = EINVAL;
		return NULL;
	}
	snprintf(port, sizeof port, "%u", p);
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : AI_ADDRCONFIG),
	};
	struct addrinfo *res = NULL;
	int r = tcp_getaddrinfo(host[0] ? host : NULL, port, &hints, &res, deadline);
	if (r != 0) {
		errno = r == EAI_MEMORY ? ENOMEM : r == EAI_SYSTEM ? errno : EHOSTUNREACH;
		return NULL;
	}
	if (passive && !host[0]) { /* all addresses: prefer one dual-stack socket */
		for (struct addrinfo *a = res; a; a = a->ai_next)
			if (a->ai_family == AF_INET6 && a != res) {
				struct addrinfo tmp = *res;
				struct addrinfo *an = a->ai_next, *rn = res->ai_next;
				*res = *a;
				*a = tmp;
				res->ai_next = rn;
				a->ai_next = an;
				break;
			}
	}
	return res;
}

static int tcp_format(char *buf, size_t len, const char *scheme, const struct sockaddr *sa)
{
	char h[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, h, sizeof h);
		return ipc__format(buf, len, "%s:[%s]:%u", scheme, h, ntohs(s6->sin6_port));
	}
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
	inet_ntop(AF_INET, &s4->sin_addr, h, sizeof h);
	return ipc__format(buf, len, "%s:%s:%u", scheme, h, ntohs(s4->sin_port));
}

int ipc__tcp_listen_fd(const char *name, const char *scheme, char *addr, size_t addrcap)
{
	int fd = -1, one = 1, zero = 0, err = EADDRNOTAVAIL;
	struct addrinfo *res = tcp_resolve(name, 1, IPC__FOREVER);
	if (!res)
		return -1;
	for (struct addrinfo *a = res; a; a = a->ai_next) {
		fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			err = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (a->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
		if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0)
			break;
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		errno = err;
		return -1;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 ||
	    tcp_format(addr, addrcap, scheme, (struct sockaddr *)&ss) < 0) {
		ipc__close_fd(fd);
		return -1;
	}
	return fd;
}

int ipc__tcp_connect_fd(const char *name, int64_t deadline)
{
	int fd = -1, err = ECONNREFUSED;
	struct addrinfo *res = tcp_resolve(name, 0, deadline);
	if (!res)
		return -1;
	for (struct addrinfo *a = res; a; a = a->ai_next) {
		fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			err = errno;
			continue;
		}
		if (ipc__sock_connect(fd, a->ai_addr, a->ai_addrlen, deadline) == 0)
			break;
		err = errno;
		close(fd);
		fd = -1;
		if (err == ETIMEDOUT)
			break; /* the whole call is bounded, not each address */
	}
	freeaddrinfo(res);
	if (fd < 0)
		errno = err;
	return fd;
}

void ipc__tcp_tune(int fd, const struct ipc_options *o)
{
	int one = 1, zero = 0;
	unsigned user_timeout = (unsigned)o->user_timeout_ms;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (o->keepalive_idle_s > 0) {
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &o->keepalive_idle_s, sizeof(int));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &o->keepalive_interval_s, sizeof(int));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &o->keepalive_count, sizeof(int));
	} else {
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &zero, sizeof zero);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
}

static struct ipc_listener *tcp_listen(const char *name, const struct ipc_options *o)
{
	struct ipc__sock_listener *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->epfd = l->tfd = -1;
	l->fd = ipc__tcp_listen_fd(name, "tcp", l->addr, sizeof l->addr);
	if (l->fd < 0 || ipc__sock_listener_init(l) < 0) {
		ipc__close_fd(l->fd);
		free(l);
		return NULL;
	}
	return &l->base;
}

static struct ipc_conn *tcp_connect(const char *name, const struct ipc_options *o, int64_t deadline)
{
	int fd = ipc__tcp_connect_fd(name, deadline);
	if (fd < 0)
		return NULL;
	return ipc__sock_conn_new(fd, o, 0);
}

const struct ipc__transport ipc__tcp_transport = {
	.scheme = "tcp",
	.listen = tcp_listen,
	.connect = tcp_connect,
	IPC__STREAM_SLOTS,
};
