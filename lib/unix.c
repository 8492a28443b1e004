/* unix.c - unix:/path and unix:@abstract stream sockets. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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

/* A fresh random name "<prefix><12 hex>" (a basename). */
static int unix_randname(const char *prefix, char *out, size_t cap)
{
	unsigned char r[6];
	if (ipc__random(r, sizeof r) < 0)
		return -1;
	return ipc__format(out, cap, "%s%02x%02x%02x%02x%02x%02x", prefix, r[0], r[1], r[2], r[3], r[4], r[5]);
}

/*
 * A path socket is created where nobody else can touch it: in a private
 * directory we make next to the target (mode 0700, checked by fstat on our
 * own descriptor: nobody else can make a directory owned by us), bound,
 * moded and listening there through /proc/self/fd/<dirfd>/s, then linked
 * into place with linkat(2), which never replaces anything.  Every
 * operation goes through descriptors of the parent and private directories:
 * a local attacker who can write the parent can rename or replace names in
 * it, but can never make us chmod or link a file that is not ours, nor
 * unlink a name it could not unlink itself (at worst our emptied private
 * directory is left behind, or an empty one of its own is removed).
 */
struct unix_spot {
	int pfd;          /* the target's directory (O_PATH) */
	const char *base; /* the target's name in it */
	int dfd;          /* our private directory, or -1 */
	char dname[32];   /* its name in pfd */
};

/* Open the parent of path and make our private directory in it. */
static int unix_spot_open(struct unix_spot *s, const char *path)
{
	char dir[sizeof ((struct sockaddr_un *)0)->sun_path];
	const char *slash = strrchr(path, '/');
	struct stat st;
	s->dfd = -1;
	s->base = slash ? slash + 1 : path;
	if (ipc__format(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".") < 0)
		return -1;
	s->pfd = open(dir[0] ? dir : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (s->pfd < 0)
		return -1;
	for (int tries = 0;; tries++) {
		if (unix_randname(".ipc-", s->dname, sizeof s->dname) < 0)
			goto fail;
		if (mkdirat(s->pfd, s->dname, 0700) == 0)
			break;
		if (errno != EEXIST || tries == 8)
			goto fail;
	}
	s->dfd = openat(s->pfd, s->dname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (s->dfd < 0 || fstat(s->dfd, &st) < 0)
		goto fail_dir;
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077)) {
		errno = EPERM; /* replaced under us */
		goto fail_dir;
	}
	return 0;
fail_dir:
	if (s->dfd >= 0) {
		ipc__close_fd(s->dfd);
		s->dfd = -1;
	}
	{
		int e = errno;
		unlinkat(s->pfd, s->dname, AT_REMOVEDIR); /* empty only: never data */
		errno = e;
	}
fail:
	ipc__close_fd(s->pfd);
	return -1;
}

/* Remove our socket name and private directory (s->pfd stays open);
 * keeps errno. */
static void unix_spot_drop(struct unix_spot *s)
{
	int e = errno;
	unlinkat(s->dfd, "s", 0);
	ipc__close_fd(s->dfd);
	unlinkat(s->pfd, s->dname, AT_REMOVEDIR);
	errno = e;
}

/* Remove a dead listener's socket file base in pfd, whose identity st we
 * saw dead: move it aside, and remove it only if it is still that file (a
 * live listener may have taken the name meanwhile: put that one back).
 * unlinkat only ever removes a name in pfd, which follows no link. */
static void unix_reclaim(int pfd, const char *base, const struct stat *st)
{
	char aside[32];
	struct stat st2;
	if (unix_randname(".ipc-", aside, sizeof aside) < 0 || renameat2(pfd, base, pfd, aside, RENAME_NOREPLACE) < 0)
		return; /* e.g. ENOENT: another listener reclaimed it first */
	if (fstatat(pfd, aside, &st2, AT_SYMLINK_NOFOLLOW) == 0 && st2.st_dev == st->st_dev &&
	    st2.st_ino == st->st_ino) {
		unlinkat(pfd, aside, 0);
		return;
	}
	if (linkat(pfd, aside, pfd, base, 0) == 0 || errno == EEXIST)
		unlinkat(pfd, aside, 0);
}

enum unix_place {
	PLACE_DONE,  /* the listening socket is at path */
	PLACE_BUSY,  /* a live listener (or another file) is there */
	PLACE_ERROR, /* errno */
};

/* Put the listening socket "s" of s->dfd into place at path with linkat(2),
 * which never replaces anything: of two listeners racing for one path,
 * exactly one wins.  A stale socket file is reclaimed, a few rounds. */
static enum unix_place unix_place(struct unix_spot *s, const char *path)
{
	for (int round = 0; round < 8; round++) {
		struct stat st;
		if (linkat(s->dfd, "s", s->pfd, s->base, 0) == 0)
			return PLACE_DONE;
		if (errno != EEXIST)
			return PLACE_ERROR;
		if (fstatat(s->pfd, s->base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue; /* gone meanwhile: try again */
			return PLACE_ERROR;
		}
		if (!S_ISSOCK(st.st_mode) || unix_alive(path))
			return PLACE_BUSY;
		unix_reclaim(s->pfd, s->base, &st);
	}
	return PLACE_BUSY;
}

/* Bind fd as "s" in our private directory, set its mode (nobody can
 * connect before listen(), and nobody else can write the directory, so
 * "s" is our socket), record its identity and listen. */
static int unix_spot_listen(int fd, struct unix_spot *s, unsigned mode, struct stat *st)
{
	struct sockaddr_un sa;
	socklen_t salen;
	char via[64];
	if (ipc__format(via, sizeof via, "/proc/self/fd/%d/s", s->dfd) < 0 || unix_sockaddr(via, &sa, &salen) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, salen) < 0)
		return -1;
	if (fchmodat(s->dfd, "s", mode, 0) < 0 || fstatat(s->dfd, "s", st, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	return listen(fd, SOMAXCONN);
}

/* An abstract name: no file, no mode (access is checked on accept). */
static int unix_abstract_listen(int fd, const char *name)
{
	struct sockaddr_un sa;
	socklen_t salen;
	if (unix_sockaddr(name, &sa, &salen) < 0 || bind(fd, (struct sockaddr *)&sa, salen) < 0)
		return -1;
	return listen(fd, SOMAXCONN);
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
	l->epfd = l->tfd = -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		goto fail;
	if (name[0] == '@') {
		if (unix_abstract_listen(fd, name) < 0)
			goto fail;
	} else {
		struct unix_spot s;
		if (unix_spot_open(&s, name) < 0)
			goto fail;
		enum unix_place p = PLACE_ERROR;
		if (unix_spot_listen(fd, &s, o->mode, &st) == 0)
			p = unix_place(&s, name);
		unix_spot_drop(&s);
		if (p != PLACE_DONE) {
			if (p == PLACE_BUSY)
				errno = EADDRINUSE;
			ipc__close_fd(s.pfd);
			goto fail;
		}
		l->dirfd = s.pfd;
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
		const char *base = strrchr(l->path, '/') ? strrchr(l->path, '/') + 1 : l->path;
		struct stat now;
		if (fstatat(l->dirfd, base, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_dev == l->dev &&
		    now.st_ino == l->ino)
			unlinkat(l->dirfd, base, 0);
		ipc__close_fd(l->dirfd);
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
