/* test_stream.c - the stream transports (unix, tcp) end to end: orderly
 * close against peer death (the end-of-stream frame of ipc-wire(7)
 * version 2), a byte relay carrying a connection unchanged, ipc_pair over
 * a socket pair, and who may talk to whom on unix (kernel credentials on
 * both sides). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <grp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

#define NOBODY 65534

/* A child connects to bound, sends n messages, receives one (so nothing
 * is left unread on its side: a socket closed with unread data would
 * reset the connection and hide the difference), then closes (orderly) or
 * SIGKILLs itself after a pause (so the parent is blocked in recv). */
static pid_t peer_child(const char *bound, int n, int die)
{
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		ipc_conn *c = ipc_connect(bound, NULL);
		if (!c)
			_exit(1);
		for (int i = 0; i < n; i++) {
			char m[100];
			t_fill(m, sizeof m, (uint64_t)i);
			if (ipc_send(c, m, sizeof m, 0) != (ssize_t)sizeof m)
				_exit(2);
		}
		char go[8];
		if (ipc_recv(c, go, sizeof go, 0) != 2)
			_exit(4);
		if (die) {
			t_sleep_ms(200);
			raise(SIGKILL);
		}
		_exit(ipc_close(c) == 0 ? 0 : 3);
	}
	return pid;
}

static void recv_n(ipc_conn *s, int n)
{
	for (int i = 0; i < n; i++) {
		char b[128];
		CHECKF(ipc_recv(s, b, sizeof b, 0) == 100, "message %d: %s", i, strerror(errno));
		CHECK(t_verify(b, 100, (uint64_t)i));
	}
}

/* Issue 11 item 4: a killed peer is ECONNRESET (it used to be EPIPE, as an
 * orderly close), and the first send to it fails with EPIPE (tcp used to
 * accept it); an orderly close is EPIPE after every message. */
STEST(stream_death_vs_close)
{
	for (int die = 0; die < 2; die++) {
		struct ipc_options o;
		ipc_options_init(&o);
		o.recv_timeout_ms = 10000;
		char bound[IPC_ADDR_MAX + 1];
		ipc_listener *l = t_listen(scheme, &o, bound);
		pid_t pid = peer_child(bound, 3, die);
		ipc_conn *s = t_accept(l);
		recv_n(s, 3);
		CHECK(ipc_send(s, "go", 2, 0) == 2);
		char b[16];
		int64_t t0 = t_now_ms();
		ssize_t r = ipc_recv(s, b, sizeof b, 0); /* blocked until the end */
		int e = errno;
		CHECKF(r < 0 && e == (die ? ECONNRESET : EPIPE), "%s peer: recv %zd (%s) after %lld ms",
		       die ? "killed" : "closed", r, strerror(e), (long long)(t_now_ms() - t0));
		CHECK_FAILS(ipc_recv(s, b, sizeof b, IPC_DONTWAIT), e); /* sticky */
		CHECK_FAILS(ipc_send(s, "x", 1, 0), EPIPE);
		int st = t_wait(pid);
		CHECKF(die ? WIFSIGNALED(st) : WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
		ipc_close(s);
		ipc_listener_close(l);
	}
}

/* The first send to a peer that died (nobody has received on this side)
 * fails with EPIPE: on tcp the kernel would take it. */
STEST(stream_send_to_dead_peer)
{
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen(scheme, NULL, bound);
	pid_t pid = peer_child(bound, 0, 1);
	ipc_conn *s = t_accept(l);
	CHECK(ipc_send(s, "go", 2, 0) == 2);
	int st = t_wait(pid);
	CHECK(WIFSIGNALED(st));
	t_sleep_ms(50); /* the kernel's FIN has arrived */
	CHECK_FAILS(ipc_send(s, "x", 1, 0), EPIPE);
	ipc_close(s);
	ipc_listener_close(l);
}

/* A byte relay (socat) between the client and a unix listener carries
 * the connection unchanged: messages both ways, then the client's orderly
 * close reaches the server as EPIPE (the end-of-stream frame passes
 * through), and a killed client as ECONNRESET. */
TEST(stream_socat_relay)
{
	if (t_sh("command -v socat >/dev/null") != 0)
		SKIP("socat is not installed (apt-get install socat)");
	for (int die = 0; die < 2; die++) {
		struct ipc_options o;
		ipc_options_init(&o);
		o.recv_timeout_ms = 10000;
		o.connect_timeout_ms = 10000;
		char bound[IPC_ADDR_MAX + 1], relay[256];
		ipc_listener *l = t_listen("unix", &o, bound);
		snprintf(relay, sizeof relay, "%s/relay%d.sock", t_tmpdir(), die);
		fflush(NULL);
		pid_t sp = fork();
		CHECK(sp >= 0);
		if (sp == 0) {
			char a[600], b[600];
			snprintf(a, sizeof a, "UNIX-LISTEN:%s", relay);
			snprintf(b, sizeof b, "UNIX-CONNECT:%s", bound + 5);
			execlp("socat", "socat", a, b, (char *)NULL);
			_exit(127);
		}
		int64_t t0 = t_now_ms();
		struct stat st;
		while (stat(relay, &st) != 0) {
			CHECKF(t_now_ms() - t0 < 10000, "socat did not listen at %s", relay);
			t_sleep_ms(10);
		}
		char raddr[600];
		snprintf(raddr, sizeof raddr, "unix:%s", relay);
		pid_t pid = peer_child(raddr, 5, die);
		ipc_conn *s = t_accept(l);
		recv_n(s, 5);
		CHECK(ipc_send(s, "go", 2, 0) == 2);
		char b[16];
		ssize_t r = ipc_recv(s, b, sizeof b, 0);
		CHECKF(r < 0 && errno == (die ? ECONNRESET : EPIPE), "%s client through socat: recv %zd (%s)",
		       die ? "killed" : "closed", r, strerror(errno));
		t_wait(pid);
		ipc_close(s);
		int sst = t_wait(sp); /* socat ends with the connection */
		CHECKF(WIFEXITED(sst) && WEXITSTATUS(sst) != 127, "socat status %#x", sst);
		ipc_listener_close(l);
	}
}

/* ipc_pair("unix"): the parent and the child it forks exchange messages;
 * the child's orderly close is EPIPE, its death ECONNRESET. */
TEST(pair_unix_fork)
{
	for (int die = 0; die < 2; die++) {
		ipc_conn *p[2];
		CHECK(ipc_pair("unix", NULL, p) == 0);
		CHECK(strcmp(ipc_conn_scheme(p[0]), "unix") == 0);
		fflush(NULL);
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			ipc_close(p[0]);
			char b[128];
			for (int i = 0; i < 3; i++) {
				ssize_t r = ipc_recv(p[1], b, sizeof b, 0);
				if (r != 100 || !t_verify(b, 100, (uint64_t)i) || ipc_send(p[1], b, 100, 0) != 100)
					_exit(1);
			}
			if (die)
				raise(SIGKILL);
			_exit(ipc_close(p[1]) == 0 ? 0 : 2);
		}
		/* the parent's copy of the child's end must go, or the child's
		 * end stays open in the parent */
		ipc_close(p[1]);
		char m[128];
		for (int i = 0; i < 3; i++) {
			t_fill(m, 100, (uint64_t)i);
			CHECK(ipc_send(p[0], m, 100, 0) == 100);
			CHECK(ipc_recv(p[0], m, sizeof m, 0) == 100);
			CHECK(t_verify(m, 100, (uint64_t)i));
		}
		CHECK(ipc_conn_set_timeouts(p[0], -1, 10000) == 0);
		ssize_t r = ipc_recv(p[0], m, sizeof m, 0);
		CHECKF(r < 0 && errno == (die ? ECONNRESET : EPIPE), "child %s: recv %zd (%s)", die ? "killed" : "closed",
		       r, strerror(errno));
		int st = t_wait(pid);
		CHECKF(die ? WIFSIGNALED(st) : WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
		struct ipc_cred cr;
		CHECK(ipc_conn_peer_cred(p[0], &cr) == 0 && cr.uid == geteuid());
		ipc_close(p[0]);
	}
}

/* ---- who may talk to whom on unix ---------------------------------------- */

static void become_nobody(void)
{
	if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
		_exit(200);
}

/* A child running as nobody listens on each address in addrs (n of them),
 * writes one byte on ready when it is listening, and serves until the
 * parent closes the other end of hold. */
static pid_t nobody_listener(const char *const *addrs, int n, const int rp[2], const int hp[2])
{
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		int ready = rp[1], hold = hp[0];
		close(rp[0]);
		close(hp[1]);
		become_nobody();
		struct ipc_options o;
		ipc_options_init(&o);
		o.mode = 0666;
		ipc_listener *l[4];
		for (int i = 0; i < n; i++)
			if (!(l[i] = ipc_listen(addrs[i], &o)))
				_exit(201);
		if (write(ready, "r", 1) != 1)
			_exit(202);
		char c;
		while (read(hold, &c, 1) > 0)
			;
		_exit(0);
	}
	return pid;
}

/* Issue 10 row 5 on unix: a listener of another uid squats a name (an
 * abstract one, a path in a shared directory); a root client does not
 * talk to it by default (EPERM, before sending anything), and does with
 * IPC_PEER_ANY or IPC_PEER_UID naming the squatter. */
TEST(access_identity_unix)
{
	if (geteuid() != 0)
		SKIP("needs root to run a listener as another uid (nobody)");
	char dir[256], path[300], abs[64];
	snprintf(dir, sizeof dir, "%s/shared", t_tmpdir());
	CHECK(mkdir(dir, 0777) == 0 && chmod(dir, 01777) == 0 && chmod(t_tmpdir(), 0711) == 0);
	snprintf(path, sizeof path, "unix:%s/squat.sock", dir);
	snprintf(abs, sizeof abs, "unix:@libipc-test-squat-%s", t_token());
	const char *addrs[2] = {path, abs};
	int rp[2], hp[2];
	CHECK(pipe(rp) == 0 && pipe(hp) == 0);
	pid_t pid = nobody_listener(addrs, 2, rp, hp);
	close(rp[1]);
	close(hp[0]);
	char c;
	CHECKF(read(rp[0], &c, 1) == 1, "the nobody listener did not start");
	for (int i = 0; i < 2; i++) {
		struct ipc_options o;
		ipc_options_init(&o);
		errno = 0;
		ipc_conn *cn = ipc_connect(addrs[i], &o);
		CHECKF(cn == NULL && errno == EPERM, "root connecting to nobody's %s: %s", addrs[i],
		       cn ? "connected" : strerror(errno));
		o.peer_check = IPC_PEER_ANY;
		cn = ipc_connect(addrs[i], &o);
		CHECKF(cn != NULL, "IPC_PEER_ANY to %s: %s", addrs[i], strerror(errno));
		ipc_close(cn);
		o.peer_check = IPC_PEER_UID;
		o.peer_uid = NOBODY;
		cn = ipc_connect(addrs[i], &o);
		CHECKF(cn != NULL, "IPC_PEER_UID nobody to %s: %s", addrs[i], strerror(errno));
		ipc_close(cn);
		o.peer_uid = 1; /* someone else: still refused */
		cn = ipc_connect(addrs[i], &o);
		CHECKF(cn == NULL && errno == EPERM, "IPC_PEER_UID 1 to %s: %s", addrs[i], cn ? "connected" : strerror(errno));
	}
	close(hp[1]);
	close(rp[0]);
	CHECK(WIFEXITED(t_wait(pid)));
}

/* A child running as nobody connects to bound, sends, and waits for a
 * reply; exits 0 when served, else with the errno of the first failure. */
static pid_t nobody_client(const char *bound)
{
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		become_nobody();
		struct ipc_options o;
		ipc_options_init(&o);
		o.recv_timeout_ms = 10000;
		ipc_conn *c = ipc_connect(bound, &o);
		if (!c)
			_exit(errno);
		char b[8];
		if (ipc_send(c, "hi", 2, 0) != 2 && errno != EPIPE)
			_exit(errno);
		if (ipc_recv(c, b, sizeof b, 0) != 2)
			_exit(errno);
		ipc_close(c);
		_exit(0);
	}
	return pid;
}

/* DESIGN item 1 on abstract unix sockets (no file permissions): the
 * listener checks each peer's kernel credentials against its mode; a
 * refused peer never reaches accept and learns EACCES. */
TEST(access_unix_abstract_mode)
{
	if (geteuid() != 0)
		SKIP("needs root to run a client as another uid (nobody)");
	static const unsigned modes[2] = {0600, 0602};
	for (int k = 0; k < 2; k++) {
		struct ipc_options o;
		ipc_options_init(&o);
		o.mode = modes[k];
		char addr[96];
		snprintf(addr, sizeof addr, "unix:@libipc-test-abs-%s-%d", t_token(), k);
		ipc_listener *l = ipc_listen(addr, &o);
		CHECK(l != NULL);
		pid_t pid = nobody_client(addr);
		int st, served = 0;
		int64_t t0 = t_now_ms();
		while (waitpid(pid, &st, WNOHANG) == 0) {
			CHECKF(t_now_ms() - t0 < 20000, "the nobody client neither got in nor was refused");
			struct ipc_pollitem it = {.listener = l, .events = IPC_POLLIN};
			if (ipc_poll(&it, 1, 50) != 1)
				continue;
			ipc_conn *s = ipc_accept(l, IPC_DONTWAIT);
			if (!s)
				continue;
			CHECKF(modes[k] & 02, "a uid %d peer was accepted on a mode %o abstract listener", NOBODY,
			       modes[k]);
			char b[8];
			CHECK(ipc_recv(s, b, sizeof b, 0) == 2);
			struct ipc_cred cr;
			CHECK(ipc_conn_peer_cred(s, &cr) == 0 && cr.uid == NOBODY);
			CHECK(ipc_send(s, b, 2, 0) == 2);
			ipc_close(s);
			served++;
		}
		CHECKF(WIFEXITED(st), "child killed by signal %d", WTERMSIG(st));
		int code = WEXITSTATUS(st);
		if (modes[k] & 02)
			CHECKF(code == 0 && served == 1, "mode %o: nobody %s", modes[k], code ? strerror(code) : "ok");
		else
			CHECKF(code == EACCES && served == 0, "mode %o: nobody got %s", modes[k],
			       code ? strerror(code) : "in");
		ipc_listener_close(l);
	}
}

/* ipc-wire(7) version 2 from the library's side: a raw unix server sees
 * the hello, a frame, and on ipc_close the end-of-stream frame followed
 * by the end of the byte stream. */
TEST(stream_wire_close_bytes)
{
	char path[256];
	snprintf(path, sizeof path, "%s/raw.sock", t_tmpdir());
	struct sockaddr_un su = {.sun_family = AF_UNIX};
	CHECK(strlen(path) < sizeof su.sun_path);
	memcpy(su.sun_path, path, strlen(path) + 1);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&su, sizeof su) == 0 && listen(lfd, 4) == 0);
	char addr[300];
	snprintf(addr, sizeof addr, "unix:%s", path);
	ipc_conn *c = ipc_connect(addr, NULL);
	CHECK(c != NULL);
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(ipc_send(c, "hi", 2, 0) == 2);
	CHECK(ipc_close(c) == 0);
	static const unsigned char want[] = {'L', 'I', 'P', 'C', 2, 0, 0, 0, 0, 0, 0, 2, 'h', 'i', 0xff, 0xff, 0xff, 0xff};
	unsigned char got[64];
	size_t n = 0;
	for (;;) {
		ssize_t r = recv(fd, got + n, sizeof got - n, 0);
		CHECKF(r >= 0, "raw recv: %s", strerror(errno));
		if (r == 0)
			break;
		n += (size_t)r;
	}
	CHECKF(n == sizeof want && !memcmp(got, want, n), "%zu bytes on the wire, want %zu", n, sizeof want);
	close(fd);
	close(lfd);
}

/* Issue 12: name resolution is bounded by connect_timeout_ms.  In a
 * private network and mount namespace, the resolver is a UDP socket that
 * never answers (glibc would wait 2 x 5 s); connect must give up with
 * ETIMEDOUT at the 300 ms timeout. */
TEST(tcp_resolve_bounded)
{
	TEST_TIMEOUT(60);
	if (geteuid() != 0)
		SKIP("needs root for a private network and mount namespace");
	char conf[300];
	snprintf(conf, sizeof conf, "%s/resolv.conf", t_tmpdir());
	FILE *f = fopen(conf, "w");
	CHECK(f != NULL);
	fprintf(f, "nameserver 127.0.0.1\noptions timeout:5 attempts:2\n");
	fclose(f);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		if (unshare(CLONE_NEWNET | CLONE_NEWNS) < 0)
			_exit(100); /* not allowed here: skipped */
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
		    mount(conf, "/etc/resolv.conf", NULL, MS_BIND, NULL) < 0)
			_exit(101);
		int s = socket(AF_INET, SOCK_DGRAM, 0);
		struct ifreq ifr = {0};
		snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
		if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
			_exit(102);
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
			_exit(103);
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(53)};
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		int dns = socket(AF_INET, SOCK_DGRAM, 0); /* takes queries, never answers */
		if (dns < 0 || bind(dns, (struct sockaddr *)&sa, sizeof sa) < 0)
			_exit(104);
		struct ipc_options o;
		ipc_options_init(&o);
		o.connect_timeout_ms = 300;
		int64_t t0 = t_now_ms();
		ipc_conn *c = ipc_connect("tcp:libipc-test.invalid:80", &o);
		int e = errno;
		int64_t dt = t_now_ms() - t0;
		printf("connect to an unresolvable name: %s after %lld ms\n", c ? "connected" : strerror(e),
		       (long long)dt);
		fflush(NULL);
		if (c)
			_exit(105);
		if (dt >= 2000)
			_exit(106);
		_exit(e == ETIMEDOUT ? 0 : 107);
	}
	int st = t_wait(pid);
	CHECKF(WIFEXITED(st), "child status %#x", st);
	if (WEXITSTATUS(st) == 100)
		SKIP("unshare(CLONE_NEWNET|CLONE_NEWNS) not permitted");
	CHECKF(WEXITSTATUS(st) == 0, "child exit %d (101-104 setup, 105 connected, 106 took >= 2 s, 107 not ETIMEDOUT)",
	       WEXITSTATUS(st));
}
