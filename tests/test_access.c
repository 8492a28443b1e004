/* test_access.c - access control: objects made with the default mode (0600)
 * are not reachable by another uid (a forked child switched to nobody when
 * the suite runs as root), while mode 0666 is (so the test can fail); the
 * peer credentials are the kernel's (real pid/uid of the peer).  tcp has no
 * uid-based access control and skips the uid part; unix:@abstract names
 * have no permissions at all (documented in RELIABILITY.md). */
#define _GNU_SOURCE
#include <dirent.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

#define NOBODY 65534

static int local_scheme(const char *s)
{
	return !t_is_inet(s);
}

/* Every object of this test in dir has no group/other permission bits. */
static int check_modes(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	struct dirent *e;
	int n = 0;
	while ((e = readdir(d))) {
		if (!strstr(e->d_name, t_token()))
			continue;
		char p[512];
		struct stat st;
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		if (stat(p, &st) == 0) {
			CHECKF((st.st_mode & 077) == 0, "%s has mode %o", p, (unsigned)(st.st_mode & 0777));
			n++;
		}
	}
	closedir(d);
	return n;
}

/* Fork a child that becomes nobody and connects to bound; it sends its pid
 * when it gets in.  Returns the child's exit: 0 connected, else the errno. */
static pid_t connect_as_nobody(const char *bound)
{
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
			_exit(200);
		struct ipc_options o;
		ipc_options_init(&o);
		o.connect_timeout_ms = 3000;
		o.recv_timeout_ms = 5000;
		ipc_conn *c = ipc_connect(bound, &o);
		if (!c)
			_exit(errno > 0 && errno < 200 ? errno : 201);
		/* a backend may refuse lazily (mq: at accept, seen on the
		 * client's next call): only the server's "ok" means we got in */
		pid_t me = getpid();
		if (ipc_send(c, &me, sizeof me, 0) != (ssize_t)sizeof me)
			_exit(errno > 0 && errno < 200 ? errno : 202);
		char b[8];
		if (ipc_recv(c, b, sizeof b, 0) != 2)
			_exit(errno > 0 && errno < 200 ? errno : 203);
		ipc_close(c);
		_exit(0);
	}
	return pid;
}

static int child_code(pid_t pid)
{
	int st = t_wait(pid);
	CHECKF(WIFEXITED(st), "child killed by signal %d", WTERMSIG(st));
	return WEXITSTATUS(st);
}

CTEST(access_default_mode)
{
	if (!local_scheme(scheme))
		SKIP("tcp has no uid-based access control (any local or remote host may connect)");
	if (geteuid() != 0)
		SKIP("needs root to run a client as another uid (nobody)");
	/* let nobody reach into our private directory, so that only the
	 * object's own mode decides */
	CHECK(chmod(t_tmpdir(), 0711) == 0);
	int fd0 = t_fd_count();

	/* default mode: refused */
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen(scheme, NULL, bound);
	if (!strncmp(bound, "unix:/", 6)) {
		struct stat st;
		CHECK(stat(bound + 5, &st) == 0);
		CHECKF((st.st_mode & 0777) == 0600, "socket file mode %o", (unsigned)(st.st_mode & 0777));
	}
	int n = check_modes("/dev/shm") + check_modes("/dev/mqueue");
	pid_t pid = connect_as_nobody(bound);
	/* a backend may let the connect through and refuse at accept: the
	 * server keeps accepting, and must never get a connection */
	int st, refusals = 0;
	int64_t t0 = t_now_ms();
	while (waitpid(pid, &st, WNOHANG) == 0) {
		CHECKF(t_now_ms() - t0 < 20000, "the nobody client neither got in nor was refused");
		struct ipc_pollitem it = {.listener = l, .events = IPC_POLLIN};
		if (ipc_poll(&it, 1, 50) == 1) {
			ipc_conn *s = ipc_accept(l, IPC_DONTWAIT);
			CHECKF(s == NULL, "a connection from uid %d was accepted on a mode 0600 %s listener", NOBODY,
			       scheme);
			refusals++;
		}
	}
	CHECKF(WIFEXITED(st), "child killed by signal %d", WTERMSIG(st));
	int code = WEXITSTATUS(st);
	CHECKF(code == EACCES || code == EPERM, "nobody's connect to a 0600 %s listener: %s", scheme,
	       code ? strerror(code) : "connected");
	n += check_modes("/dev/shm") + check_modes("/dev/mqueue");
	CHECK(ipc_listener_close(l) == 0);
	printf("%s: nobody refused with %s (%d empty accepts) (%d objects in /dev/shm, /dev/mqueue checked for mode 0600)\n", scheme,
	       strerror(code), refusals, n);

	/* the control: mode 0666 lets nobody in, and the kernel says who it is */
	struct ipc_options o;
	ipc_options_init(&o);
	o.mode = 0666;
	o.recv_timeout_ms = 5000;
	l = t_listen(scheme, &o, bound);
	pid = connect_as_nobody(bound);
	ipc_conn *s = ipc_accept(l, 0);
	CHECKF(s != NULL, "nobody could not connect to a mode 0666 listener");
	pid_t claimed;
	CHECK(ipc_recv(s, &claimed, sizeof claimed, 0) == (ssize_t)sizeof claimed);
	struct ipc_cred cr;
	CHECK(ipc_conn_peer_cred(s, &cr) == 0);
	CHECKF(cr.pid == pid && claimed == pid && cr.uid == NOBODY && cr.gid == NOBODY,
	       "peer cred pid %d uid %d gid %d; child %d", (int)cr.pid, (int)cr.uid, (int)cr.gid, (int)pid);
	CHECK(ipc_send(s, "ok", 2, 0) == 2);
	CHECK(child_code(pid) == 0);
	ipc_close(s);
	CHECK(ipc_listener_close(l) == 0);
	CHECK(t_fd_count() == fd0);
}

/* Credentials come from the kernel, in both directions. */
CTEST(access_peer_cred)
{
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen(scheme, NULL, bound);
	int p[2];
	CHECK(pipe(p) == 0);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		ipc_conn *c = ipc_connect(bound, NULL);
		if (!c)
			_exit(1);
		struct ipc_cred cr = {0};
		int r = ipc_conn_peer_cred(c, &cr);
		int e = errno;
		if (write(p[1], &r, sizeof r) < 0 || write(p[1], &e, sizeof e) < 0 ||
		    write(p[1], &cr, sizeof cr) < 0)
			_exit(2);
		char b[4];
		ipc_recv(c, b, sizeof b, 0);
		ipc_close(c);
		_exit(0);
	}
	close(p[1]);
	ipc_conn *s = ipc_accept(l, 0);
	CHECK(s != NULL);
	struct ipc_cred cr;
	int r = ipc_conn_peer_cred(s, &cr), cr_r, cr_e;
	struct ipc_cred ccr;
	CHECK(read(p[0], &cr_r, sizeof cr_r) == sizeof cr_r && read(p[0], &cr_e, sizeof cr_e) == sizeof cr_e &&
	      read(p[0], &ccr, sizeof ccr) == sizeof ccr);
	if (!local_scheme(scheme)) {
		CHECK(r == -1 && errno == EOPNOTSUPP);
		CHECK(cr_r == -1 && cr_e == EOPNOTSUPP);
	} else {
		CHECK(r == 0);
		CHECKF(cr.pid == pid && cr.uid == getuid() && cr.gid == getgid(), "server sees pid %d uid %d, child %d",
		       (int)cr.pid, (int)cr.uid, (int)pid);
		CHECKF(cr_r == 0 && ccr.pid == getpid() && ccr.uid == getuid(),
		       "client sees pid %d uid %d (r %d), server %d", (int)ccr.pid, (int)ccr.uid, cr_r, (int)getpid());
	}
	CHECK(ipc_send(s, "x", 1, 0) == 1);
	t_wait_ok(pid);
	ipc_close(s);
	close(p[0]);
	ipc_listener_close(l);
}
