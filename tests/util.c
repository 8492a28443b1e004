/* util.c - helpers for tests: addresses, pairs, resource counts. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

extern char test__tmpdir[256];
extern int test__pair_mode;

int t_pair_mode(void)
{
	return test__pair_mode;
}

const char *t_tmpdir(void)
{
	return test__tmpdir;
}

const char *t_addr(const char *scheme)
{
	static unsigned counter;
	char *a = malloc(IPC_ADDR_MAX + 1);
	CHECK(a != NULL);
	unsigned n = ++counter;
	if (!strcmp(scheme, "unix"))
		snprintf(a, IPC_ADDR_MAX + 1, "unix:%s/s%u.sock", t_tmpdir(), n);
	else if (!strcmp(scheme, "tcp") || !strcmp(scheme, "tls"))
		snprintf(a, IPC_ADDR_MAX + 1, "%s:127.0.0.1:0", scheme);
	else if (!strcmp(scheme, "mq"))
		snprintf(a, IPC_ADDR_MAX + 1, "mq:/ipct-%d-%u-%s", (int)getpid(), n, strrchr(t_tmpdir(), '.') + 1);
	else
		snprintf(a, IPC_ADDR_MAX + 1, "%s:ipct-%d-%u-%s", scheme, (int)getpid(), n,
			 strrchr(t_tmpdir(), '.') + 1);
	return a;
}

ipc_listener *t_listen(const char *scheme, const struct ipc_options *opts, char bound[IPC_ADDR_MAX + 1])
{
	const char *a = t_addr(scheme);
	ipc_listener *l = ipc_listen(a, opts);
	CHECKF(l != NULL, "ipc_listen(%s)", a);
	if (bound)
		CHECK_GT(ipc_listener_addr(l, bound, IPC_ADDR_MAX + 1), 0);
	return l;
}

void t_pair(const char *scheme, const struct ipc_options *opts, ipc_conn **srv, ipc_conn **cli)
{
	if (t_pair_mode()) {
		ipc_conn *p[2];
		CHECKF(ipc_pair(scheme, opts, p) == 0, "ipc_pair(%s)", scheme);
		for (int i = 0; i < 2; i++)
			CHECKF(!strcmp(ipc_conn_scheme(p[i]), scheme), "pair[%d] scheme %s", i, ipc_conn_scheme(p[i]));
		*srv = p[0];
		*cli = p[1];
		return;
	}
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen(scheme, opts, bound);
	*cli = ipc_connect(bound, opts);
	CHECKF(*cli != NULL, "ipc_connect(%s)", bound);
	*srv = t_accept(l); /* through ipc_poll: non-blocking options work too */
	CHECK_EQ(ipc_listener_close(l), 0);
}

int t_fd_count(void)
{
	return t_dir_count("/proc/self/fd") - 1; /* the DIR's own descriptor */
}

int t_dir_count(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

void t_fill(void *buf, size_t len, uint64_t seq)
{
	unsigned char *p = buf;
	uint64_t s = mix(seq + 1);
	for (size_t i = 0; i < len; i++) {
		if ((i & 7) == 0)
			s = mix(s + i);
		p[i] = (unsigned char)(s >> ((i & 7) * 8));
	}
}

int t_verify(const void *buf, size_t len, uint64_t seq)
{
	const unsigned char *p = buf;
	uint64_t s = mix(seq + 1);
	for (size_t i = 0; i < len; i++) {
		if ((i & 7) == 0)
			s = mix(s + i);
		if (p[i] != (unsigned char)(s >> ((i & 7) * 8)))
			return 0;
	}
	return 1;
}

long t_status_kib(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return -1;
	char line[256], fmt[64];
	long v = -1;
	snprintf(fmt, sizeof fmt, "%s: %%ld kB", field);
	while (fgets(line, sizeof line, f))
		if (sscanf(line, fmt, &v) == 1)
			break;
	fclose(f);
	return v;
}

long t_rss_kib(void)
{
	return t_status_kib("VmRSS");
}

int64_t t_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *t_env(const char *name)
{
	const char *v = getenv(name);
	return v ? v : "";
}

int t_sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	CHECK(n > 0 && (size_t)n < sizeof cmd);
	fflush(NULL);
	int st = system(cmd);
	if (st == -1)
		return -1;
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return WEXITSTATUS(st);
}

long t_vmpeak_kib(void)
{
	return t_status_kib("VmPeak");
}

int t_wait(pid_t pid)
{
	int st;
	while (waitpid(pid, &st, 0) < 0)
		CHECK_EQ(errno, EINTR);
	return st;
}

void t_wait_ok(pid_t pid)
{
	int st = t_wait(pid);
	CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: %s %d", (int)pid,
	       WIFEXITED(st) ? "exit status" : "killed by signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

const char *t_token(void)
{
	const char *dot = strrchr(t_tmpdir(), '.');
	return dot ? dot + 1 : t_tmpdir();
}

int t_token_entries(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (strstr(e->d_name, t_token()))
			n++;
	closedir(d);
	return n;
}

void t_fd_snapshot(unsigned char before[T_MAXFD])
{
	memset(before, 0, T_MAXFD);
	DIR *d = opendir("/proc/self/fd");
	CHECK(d != NULL);
	struct dirent *e;
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] != '.' && fd >= 0 && fd < T_MAXFD && fd != dirfd(d))
			before[fd] = 1;
	}
	closedir(d);
}

int t_fd_new_without_cloexec(const unsigned char before[T_MAXFD])
{
	unsigned char now[T_MAXFD];
	t_fd_snapshot(now);
	for (int fd = 0; fd < T_MAXFD; fd++) {
		if (!now[fd] || before[fd])
			continue;
		int fl = fcntl(fd, F_GETFD);
		if (fl >= 0 && !(fl & FD_CLOEXEC))
			return fd;
	}
	return -1;
}

void t_sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int t_is_inet(const char *scheme)
{
	return !strcmp(scheme, "tcp") || !strcmp(scheme, "tls");
}

ipc_conn *t_accept(ipc_listener *l)
{
	struct ipc_pollitem it = {.listener = l, .events = IPC_POLLIN};
	CHECK_EQ(ipc_poll(&it, 1, 10000), 1);
	CHECK(it.revents & IPC_POLLIN);
	ipc_conn *c = ipc_accept(l, IPC_DONTWAIT);
	CHECK(c != NULL);
	return c;
}

void t_need_mqdir(void)
{
	if (t_dir_count("/dev/mqueue") >= 0)
		return;
	if (geteuid() != 0)
		SKIP("/dev/mqueue absent and not root");
	mkdir("/dev/mqueue", 0755);
	if (mount("none", "/dev/mqueue", "mqueue", 0, NULL) < 0 && t_dir_count("/dev/mqueue") < 0)
		SKIP("cannot mount the mqueue filesystem");
}

/* ---- tls: a test CA for the whole run --------------------------------- */

int t_tls_make_cert(const char *dir, const char *name, const char *cn, const char *san, const char *days)
{
	return t_sh("cd '%s' && printf 'subjectAltName=%s\\nbasicConstraints=CA:FALSE\\n' >%s.ext && "
		    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s.key -out %s.csr "
		    "-subj '/CN=%s' >/dev/null 2>&1 && "
		    "openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out %s.pem %s "
		    "-extfile %s.ext >/dev/null 2>&1",
		    dir, san, name, name, name, cn, name, name, days, name);
}

int t_tls_make_ca(const char *dir)
{
	return t_sh("cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
		    "-keyout ca.key -out ca.pem -days 2 -subj '/CN=libipc test CA' "
		    "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign "
		    ">/dev/null 2>&1",
		    dir);
}

static char tls_dir[64];

void t_tls_setup(void)
{
	snprintf(tls_dir, sizeof tls_dir, "/tmp/ipct-tls.XXXXXX");
	if (!mkdtemp(tls_dir) || t_tls_make_ca(tls_dir) != 0 ||
	    t_tls_make_cert(tls_dir, "server", "localhost", "DNS:localhost,IP:127.0.0.1,IP:::1", "-days 2") != 0 ||
	    t_tls_make_cert(tls_dir, "client", "libipc test client", "DNS:client.test,email:client@test",
			    "-days 2") != 0) {
		fprintf(stderr, "note: no openssl command: the tls tests will be skipped\n");
		t_sh("rm -rf '%s'", tls_dir);
		tls_dir[0] = '\0';
		return;
	}
	char p[128];
	setenv("IPC_TEST_TLS_DIR", tls_dir, 1);
	snprintf(p, sizeof p, "%s/ca.pem", tls_dir);
	setenv("SSL_CERT_FILE", p, 1); /* the clients' default trust */
	snprintf(p, sizeof p, "%s/server.pem", tls_dir);
	setenv("IPC_TLS_CERT_FILE", p, 1); /* the listeners' default identity */
	snprintf(p, sizeof p, "%s/server.key", tls_dir);
	setenv("IPC_TLS_KEY_FILE", p, 1);
}

void t_tls_cleanup(void)
{
	if (tls_dir[0])
		t_sh("rm -rf '%s'", tls_dir);
}

const char *t_tls_dir(void)
{
	const char *d = getenv("IPC_TEST_TLS_DIR");
	return d && *d ? d : NULL;
}
