/* unix.c - unix:/path and unix:@abstract stream sockets. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ipc_impl.h"

/* Build the sockaddr for name; never truncates (ENAMETOOLONG). */
static int unix_sockaddr(const char *name, struct sockaddr_un *sa, socklen_t *len)
{
	size_t n = strlen(name);
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	if (name[0] == '@') { /* abstract: no NUL terminator, length counts */
		if (n < 2) {
			errno = EINVAL;
			return -1;
		}
		if (n > sizeof sa->sun_path) {
			errno = ENAMETOOLONG;
			return -1;
		}
		memcpy(sa->sun_path + 1, name + 1, n - 1);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
		return 0;
	}
	if (ipc__strlcpy_checked(sa->sun_path, name, sizeof sa->sun_path) < 0)
		return -1;
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return 0;
}

/* Is somebody accepting at sa?  Used before reclaiming a stale file. */
static int unix_alive(const struct sockaddr_un *sa, socklen_t len)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 1; /* cannot tell: assume alive, never steal */
	int r = connect(fd, (const struct sockaddr *)sa, len);
	int alive = r == 0 || (errno != ECONNREFUSED && errno != ENOENT);
	close(fd);
	return alive;
}

static struct ipc_listener *unix_listen(const char *name, const struct ipc_options *o)
{
	struct sockaddr_un sa;
	socklen_t salen;
	struct stat st;
	struct ipc__sock_listener *l = NULL;
	int fd = -1;

	if (unix_sockaddr(name, &sa, &salen) < 0)
		return NULL;
	if (!(l = calloc(1, sizeof *l)))
		return NULL;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		goto fail;
	if (bind(fd, (struct sockaddr *)&sa, salen) < 0) {
		/* a stale socket file of a dead listener may be reclaimed, a
		 * live listener or any other kind of file never */
		int e = errno;
		if (e != EADDRINUSE || name[0] == '@' || lstat(name, &st) < 0 || !S_ISSOCK(st.st_mode) ||
		    unix_alive(&sa, salen)) {
			errno = e;
			goto fail;
		}
		if (unlink(name) < 0 || bind(fd, (struct sockaddr *)&sa, salen) < 0)
			goto fail;
	}
	if (name[0] != '@') {
		/* nobody can connect before listen(), so the mode is set in time */
		if (chmod(name, o->mode) < 0 || lstat(name, &st) < 0)
			goto fail_unlink;
		memcpy(l->path, name, strlen(name) + 1);
		l->dev = st.st_dev;
		l->ino = st.st_ino;
	}
	if (listen(fd, SOMAXCONN) < 0)
		goto fail_unlink;
	l->fd = fd;
	l->pending_fd = -1;
	l->cred_ok = 1;
	if (ipc__format(l->addr, sizeof l->addr, "unix:%s", name) < 0)
		goto fail_unlink;
	return &l->base;
fail_unlink:
	if (name[0] != '@') {
		int e = errno;
		unlink(name);
		errno = e;
	}
fail:
	ipc__close_fd(fd);
	free(l);
	return NULL;
}

static struct ipc_conn *unix_connect(const char *name, const struct ipc_options *o, int64_t deadline)
{
	struct sockaddr_un sa;
	socklen_t salen;
	if (unix_sockaddr(name, &sa, &salen) < 0)
		return NULL;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return NULL;
	if (ipc__sock_connect(fd, (struct sockaddr *)&sa, salen, deadline) < 0 || ipc__set_nonblock(fd, 0) < 0) {
		ipc__close_fd(fd);
		return NULL;
	}
	return ipc__stream_new(fd, o, 1);
}

const struct ipc__transport ipc__unix_transport = {
	.scheme = "unix",
	.listen = unix_listen,
	.connect = unix_connect,
	IPC__STREAM_SLOTS,
};
