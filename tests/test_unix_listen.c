/* test_unix_listen.c - a unix path listener in a directory another uid can
 * write (no sticky bit): that uid renames the names we create there and
 * puts symlinks in their place, yet we never change the mode of a file we
 * did not create, and a listen that succeeds is a real socket at its path. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

#define NOBODY 65534

/* As nobody: every ".ipc-*" name that appears in dir is renamed away and
 * replaced by a symlink to target.  Writes one byte to ready, then loops
 * until killed. */
static void symlink_racer(const char *dir, const char *target, int ready)
{
	if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
		_exit(2);
	prctl(PR_SET_PDEATHSIG, SIGKILL); /* cleared by setuid: set it after */
	int in = inotify_init1(IN_CLOEXEC);
	if (in < 0 || inotify_add_watch(in, dir, IN_CREATE) < 0)
		_exit(3);
	if (write(ready, "r", 1) != 1)
		_exit(4);
	for (unsigned k = 0;; k++) {
		char buf[4096] __attribute__((aligned(8)));
		ssize_t n = read(in, buf, sizeof buf);
		for (ssize_t off = 0; n > 0 && off < n;) {
			struct inotify_event *ev = (struct inotify_event *)(buf + off);
			if (ev->len && !strncmp(ev->name, ".ipc-", 5)) {
				char src[512], dst[512];
				snprintf(src, sizeof src, "%s/%s", dir, ev->name);
				snprintf(dst, sizeof dst, "%s/moved-%u", dir, k++);
				if (rename(src, dst) == 0)
					(void)symlink(target, src);
			}
			off += (ssize_t)sizeof *ev + ev->len;
		}
	}
}

TEST(unix_listen_symlink_race)
{
	TEST_TIMEOUT(120);
	if (geteuid() != 0)
		SKIP("needs root to race as another uid");
	int rounds = getenv("IPC_SOAK") ? 1000 : 50;
	char dir[256], target[256], path[300], addr[IPC_ADDR_MAX + 1];
	snprintf(dir, sizeof dir, "%s/shared", t_tmpdir());
	snprintf(target, sizeof target, "%s/secret", t_tmpdir());
	snprintf(path, sizeof path, "%s/sock", dir);
	snprintf(addr, sizeof addr, "unix:%s", path);
	CHECK(chmod(t_tmpdir(), 0711) == 0);
	CHECK(mkdir(dir, 0777) == 0 && chmod(dir, 0777) == 0); /* no sticky bit */
	int tfd = open(target, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
	CHECK(tfd >= 0);
	CHECK(write(tfd, "secret\n", 7) == 7);
	close(tfd);

	int ready[2];
	CHECK(pipe(ready) == 0);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		symlink_racer(dir, target, ready[1]);
	char c;
	CHECK(read(ready[0], &c, 1) == 1);

	struct ipc_options o;
	ipc_options_init(&o);
	o.mode = 0666;
	o.connect_timeout_ms = 2000;
	int ok = 0, bad = 0;
	for (int i = 0; i < rounds; i++) {
		ipc_listener *l = ipc_listen(addr, &o);
		struct stat ts, ps;
		int tmode = stat(target, &ts) == 0 ? (int)(ts.st_mode & 0777) : -1;
		int sock = 0, reached = 0;
		if (l) {
			ok++;
			sock = lstat(path, &ps) == 0 && S_ISSOCK(ps.st_mode);
			ipc_conn *k = ipc_connect(addr, &o);
			reached = k != NULL;
			if (k)
				ipc_close(k);
			ipc_listener_close(l);
		}
		if (tmode != 0600 || (l && (!sock || !reached))) {
			bad = 1;
			kill(pid, SIGKILL);
			t_wait(pid);
			CHECKF(tmode == 0600, "round %d: %s has mode %o (listen %s)", i, target, (unsigned)tmode,
			       l ? "succeeded" : "failed");
			CHECKF(sock && reached, "round %d: listen succeeded but %s is %s, connect %s", i, path,
			       sock ? "a socket" : "not a socket", reached ? "ok" : "failed");
		}
		t_sh("find '%s' -mindepth 1 -delete 2>/dev/null", dir);
	}
	kill(pid, SIGKILL);
	t_wait(pid);
	CHECK(!bad);
	printf("# %d of %d listens succeeded under the race\n", ok, rounds);
}
