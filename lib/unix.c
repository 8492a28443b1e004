/* unix.c - unix:/path and unix:@abstract stream sockets. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
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

/* Is somebody listening at path?  The probe connects and closes without a
 * hello, so a libipc listener drops it unseen.  A full backlog (EAGAIN)
 * counts as alive; when we cannot tell, alive: never steal. */
static int unix_alive(const char *path)
{
	struct sockaddr_un sa;
	socklen_t salen;
	if (unix_sockaddr(path, &sa, &salen) < 0)
		return 1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return 1;
	int r = connect(fd, (const struct sockaddr *)&sa, salen);
	int alive = r == 0 || (errno != ECONNREFUSED && errno != ENOENT);
	close(fd);
	return alive;
}

/* A private name in the directory of path: "<dir>/.ipc-<12 hex>". */
static int unix_tmpname(const char *path, char *out, size_t cap)
{
	unsigned char r[6];
	const char *slash = strrchr(path, '/');
	int dirlen = slash ? (int)(slash - path + 1) : 0;
	if (ipc__random(r, sizeof r) < 0)
		return -1;
	return ipc__format(out, cap, "%.*s.ipc-%02x%02x%02x%02x%02x%02x", dirlen, path, r[0], r[1], r[2], r[3],
			   r[4], r[5]);
}

/* Remove a dead listener's socket file at path, whose identity st we saw
 * dead: move it aside, and remove it only if it is still that file (a
 * live listener may have taken the name meanwhile: put that one back). */
static void unix_reclaim(const char *path, const struct stat *st)
{
	char aside[sizeof ((struct sockaddr_un *)0)->sun_path];
	struct stat st2;
	if (unix_tmpname(path, aside, sizeof aside) < 0 || rename(path, aside) < 0)
		return; /* e.g. ENOENT: another listener reclaimed it first */
	if (lstat(aside, &st2) == 0 && st2.st_dev == st->st_dev && st2.st_ino == st->st_ino) {
		unlink(aside);
		return;
	}
	if (link(aside, path) == 0 || errno == EEXIST)
		unlink(aside);
}

enum unix_place {
	PLACE_DONE,  /* the listening socket is at path */
	PLACE_BUSY,  /* a live listener (or another file) is there */
	PLACE_ERROR, /* errno */
};

/* Put the listening socket bound at tmp into place at path with link(2),
 * which never replaces anything: of two listeners racing for one path,
 * exactly one wins.  A stale socket file is reclaimed, a few rounds. */
static enum unix_place unix_place(const char *tmp, const char *path)
{
	for (int round = 0; round < 8; round++) {
		struct stat st;
		if (link(tmp, path) == 0)
			return PLACE_DONE;
		if (errno != EEXIST)
			return PLACE_ERROR;
		if (lstat(path, &st) < 0) {
			if (errno == ENOENT)
				continue; /* gone meanwhile: try again */
			return PLACE_ERROR;
		}
		if (!S_ISSOCK(st.st_mode) || unix_alive(path))
			return PLACE_BUSY;
		unix_reclaim(path, &st);
	}
	return PLACE_BUSY;
}

static int unix_bind_listen(int fd, const char *name, unsigned mode, struct stat *st)
{
	struct sockaddr_un sa;
	socklen_t salen;
	if (unix_sockaddr(name, &sa, &salen) < 0 || bind(fd, (struct sockaddr *)&sa, salen) < 0)
		return -1;
	/* nobody can connect before listen(), so the mode is set in time */
	if (name[0] != '@' && (chmod(name, mode) < 0 || lstat(name, st) < 0)) {
		int e = errno;
		unlink(name);
		errno = e;
		return -1;
	}
	if (listen(fd, SOMAXCONN) < 0) {
		int e = errno;
		if (name[0] != '@')
			unlink(name);
		errno = e;
		return -1;
	}
	return 0;
}

static struct ipc_listener *unix_listen(const char *name, const struct ipc_options *o)
{
	struct sockaddr_un sa;
	socklen_t salen;
	struct stat st;
	char tmp[sizeof sa.sun_path];
	struct ipc__sock_listener *l = NULL;
	int fd = -1;

	if (unix_sockaddr(name, &sa, &salen) < 0)
		return NULL;
	if (!(l = calloc(1, sizeof *l)))
		return NULL;
	l->epfd = l->tfd = -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		goto fail;
	if (name[0] == '@') {
		if (unix_bind_listen(fd, name, o->mode, &st) < 0)
			goto fail;
	} else if (unix_tmpname(name, tmp, sizeof tmp) < 0) {
		/* no room for a private name next to a path this long: bind
		 * in place (an existing file, stale or not, is EADDRINUSE) */
		if (unix_bind_listen(fd, name, o->mode, &st) < 0)
			goto fail;
		memcpy(l->path, name, strlen(name) + 1);
		l->dev = st.st_dev;
		l->ino = st.st_ino;
	} else {
		/* bound, moded and listening at a private name first; then
		 * linked into place in one step */
		if (unix_bind_listen(fd, tmp, o->mode, &st) < 0)
			goto fail;
		enum unix_place p = unix_place(tmp, name);
		int e = errno;
		unlink(tmp);
		if (p != PLACE_DONE) {
			errno = p == PLACE_BUSY ? EADDRINUSE : e;
			goto fail;
		}
		memcpy(l->path, name, strlen(name) + 1);
		l->dev = st.st_dev;
		l->ino = st.st_ino;
	}
	l->fd = fd;
	l->is_unix = 1;
	if (ipc__format(l->addr, sizeof l->addr, "unix:%s", name) < 0 || ipc__sock_listener_init(l) < 0)
		goto fail_unlink;
	return &l->base;
fail_unlink:
	if (l->path[0]) {
		int e = errno;
		unlink(l->path);
		errno = e;
	}
fail:
	ipc__close_fd(fd);
	free(l);
	return NULL;
}

/* The listener's kernel credentials must satisfy o (ipc__listener_trusted)
 * before anything is sent to it. */
static struct ipc_conn *unix_connect(const char *name, const struct ipc_options *o, int64_t deadline)
{
	struct sockaddr_un sa;
	socklen_t salen;
	struct ipc_cred cr;
	if (unix_sockaddr(name, &sa, &salen) < 0)
		return NULL;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return NULL;
	if (ipc__sock_connect(fd, (struct sockaddr *)&sa, salen, deadline) < 0 || ipc__sock_cred(fd, &cr) < 0 ||
	    ipc__listener_trusted(o, &cr) < 0) {
		ipc__close_fd(fd);
		return NULL;
	}
	return ipc__sock_conn_new(fd, o, 1);
}

static int unix_pair(const struct ipc_options *o, struct ipc_conn *out[2])
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	out[0] = ipc__sock_conn_new(sv[0], o, 1);
	if (!out[0]) {
		ipc__close_fd(sv[1]);
		return -1;
	}
	out[1] = ipc__sock_conn_new(sv[1], o, 1);
	if (!out[1]) {
		int e = errno;
		ipc__stream_close(out[0], IPC__NOW);
		errno = e;
		return -1;
	}
	ipc__stream_disown(out[0]);
	ipc__stream_disown(out[1]);
	return 0;
}

const struct ipc__transport ipc__unix_transport = {
	.scheme = "unix",
	.listen = unix_listen,
	.connect = unix_connect,
	.pair = unix_pair,
	IPC__STREAM_SLOTS,
};
