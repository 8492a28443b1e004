/*
 * test_api.c - API rules that are not per scheme: argument checking,
 * address syntax of the unix and tcp schemes, the wire format spoken by a
 * raw socket peer, and waits over mixed backends.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc_impl.h" /* only for the scheme table (mixed-backend test) */
#include "test.h"

static void roundtrip(ipc_conn *a, ipc_conn *b, const char *msg)
{
	size_t n = strlen(msg);
	CHECK(ipc_send(a, msg, n, 0) == (ssize_t)n);
	char buf[256];
	ssize_t r = ipc_recv(b, buf, sizeof buf, 0);
	CHECKF(r == (ssize_t)n && !memcmp(buf, msg, n), "roundtrip of '%s': %zd", msg, r);
}

/* ---- raw sockets speaking (or breaking) the wire format -------------- */

static const char *stream_schemes[] = {"unix", "tcp"};

/* A raw listening socket; *addr gets its libipc address. */
static int raw_listen(const char *scheme, char addr[IPC_ADDR_MAX + 1], int backlog)
{
	static int n;
	int fd;
	if (!strcmp(scheme, "unix")) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		snprintf(sa.sun_path, sizeof sa.sun_path, "%s/raw%d.sock", t_tmpdir(), ++n);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		CHECK(fd >= 0);
		CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
		snprintf(addr, IPC_ADDR_MAX + 1, "unix:%s", sa.sun_path);
	} else {
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		CHECK(fd >= 0);
		CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
		socklen_t sl = sizeof sa;
		CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
		snprintf(addr, IPC_ADDR_MAX + 1, "tcp:127.0.0.1:%d", ntohs(sa.sin_port));
	}
	CHECK(listen(fd, backlog) == 0);
	return fd;
}

static int raw_accept(int lfd)
{
	struct pollfd p = {.fd = lfd, .events = POLLIN};
	CHECK(poll(&p, 1, 10000) == 1);
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	CHECK(fd >= 0);
	return fd;
}

/* A raw connection to a libipc address (unix:/path or tcp:127.0.0.1:port). */
static int raw_connect(const char *addr)
{
	int fd;
	if (!strncmp(addr, "unix:", 5)) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		CHECK(strlen(addr + 5) < sizeof sa.sun_path);
		strcpy(sa.sun_path, addr + 5);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		CHECK(fd >= 0);
		CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
	} else {
		const char *c = strrchr(addr, ':');
		CHECK(c != NULL);
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
					 .sin_port = htons((uint16_t)atoi(c + 1))};
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		CHECK(fd >= 0);
		CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
	}
	return fd;
}

static void raw_write(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n) {
		ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
		CHECK(r > 0 || (r < 0 && errno == EINTR));
		if (r > 0) {
			p += r;
			n -= (size_t)r;
		}
	}
}

static void raw_read(int fd, void *buf, size_t n)
{
	char *p = buf;
	while (n) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		CHECK(poll(&pf, 1, 10000) == 1);
		ssize_t r = recv(fd, p, n, 0);
		CHECKF(r > 0, "raw read: %zd", r);
		p += r;
		n -= (size_t)r;
	}
}

static void be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static const unsigned char good_hello[8] = {'L', 'I', 'P', 'C', 2, 0, 0, 0};

/* A libipc client connected to a raw server: *rawfd is the server side. */
static ipc_conn *client_to_raw(const char *scheme, const struct ipc_options *o, int *rawfd)
{
	char addr[IPC_ADDR_MAX + 1];
	int lfd = raw_listen(scheme, addr, 8);
	ipc_conn *c = ipc_connect(addr, o);
	CHECKF(c != NULL, "connect to a raw %s server", scheme);
	*rawfd = raw_accept(lfd);
	close(lfd);
	return c;
}

/* ipc(7) Connections + 9: a peer with a wrong magic or version is rejected with
 * EPROTO on the first receive (sticky), not a hang or garbage. */
TEST(wire_bad_hello_rejected)
{
	static const unsigned char bad[][8] = {
		{'X', 'I', 'P', 'C', 2, 0, 0, 0},
		{'L', 'I', 'P', 'C', 1, 0, 0, 0},
		{'L', 'I', 'P', 'C', 0, 0, 0, 0},
		{'H', 'T', 'T', 'P', '/', '1', '.', '1'},
	};
	for (int s = 0; s < 2; s++) {
		for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
			int fd;
			ipc_conn *c = client_to_raw(stream_schemes[s], NULL, &fd);
			unsigned char msg[8 + 4 + 2];
			memcpy(msg, bad[k], 8);
			be32(msg + 8, 2);
			memcpy(msg + 12, "hi", 2);
			raw_write(fd, msg, sizeof msg);
			CHECK(ipc_conn_set_timeouts(c, -1, 5000) == 0);
			char b[16];
			CHECK_FAILS(ipc_recv(c, b, sizeof b, 0), EPROTO);
			CHECK_FAILS(ipc_recv(c, b, sizeof b, IPC_DONTWAIT), EPROTO);
			close(fd);
			ipc_close(c);
		}
	}
}

/* ipc(7) Connections + 8: a raw client sending garbage to a libipc server gets
 * that connection failed with EPROTO; other connections are unaffected. */
TEST(wire_garbage_client_isolated)
{
	for (int s = 0; s < 2; s++) {
		char bound[IPC_ADDR_MAX + 1];
		ipc_listener *l = t_listen(stream_schemes[s], NULL, bound);
		ipc_conn *good = ipc_connect(bound, NULL);
		CHECK(good != NULL);
		ipc_conn *sg = t_accept(l);
		int fd = raw_connect(bound);
		raw_write(fd, "GET / HTTP/1.0\r\n\r\n", 18); /* accepted once 8 bytes are in */
		ipc_conn *sb = t_accept(l);
		CHECK(ipc_conn_set_timeouts(sb, -1, 5000) == 0);
		char b[64];
		CHECK_FAILS(ipc_recv(sb, b, sizeof b, 0), EPROTO);
		roundtrip(good, sg, "unaffected");
		roundtrip(sg, good, "both ways");
		close(fd);
		ipc_close(sb);
		ipc_close(sg);
		ipc_close(good);
		ipc_listener_close(l);
	}
}

/* ipc(7) Wire format: the bytes on the wire: 8-byte hello "LIPC" 2 0 0 0, then
 * frames of a 4-byte big-endian length and the payload; a raw peer
 * writing byte by byte is understood, and a message is visible only once
 * complete. */
TEST(wire_format_exact)
{
	for (int s = 0; s < 2; s++) {
		int fd;
		ipc_conn *c = client_to_raw(stream_schemes[s], NULL, &fd);
		unsigned char hello[8];
		raw_read(fd, hello, 8);
		CHECK(!memcmp(hello, good_hello, 8));
		CHECK(ipc_send(c, "abc", 3, 0) == 3);
		CHECK(ipc_send(c, NULL, 0, 0) == 0);
		unsigned char f[11];
		raw_read(fd, f, sizeof f);
		CHECK(!memcmp(f, "\0\0\0\3abc\0\0\0\0", 11));

		/* partial frame: not visible until complete */
		unsigned char in[8 + 4 + 5 + 4];
		memcpy(in, good_hello, 8);
		be32(in + 8, 5);
		memcpy(in + 12, "hello", 5);
		be32(in + 17, 0);
		raw_write(fd, in, 14); /* hello, header, "he" */
		t_sleep_ms(50);
		char b[16];
		CHECK_FAILS(ipc_recv(c, b, sizeof b, IPC_DONTWAIT), EAGAIN);
		short ev;
		CHECK(ipc_conn_ready(c, IPC_POLLIN, &ev) == 0);
		for (size_t i = 14; i < sizeof in; i++) {
			raw_write(fd, in + i, 1);
			t_sleep_ms(2);
		}
		CHECK(ipc_recv(c, b, sizeof b, 0) == 5 && !memcmp(b, "hello", 5));
		CHECK(ipc_recv(c, b, sizeof b, 0) == 0);
		/* orderly close after whole frames: the end-of-stream frame */
		raw_write(fd, "\xff\xff\xff\xff", 4);
		close(fd);
		CHECK_FAILS(ipc_recv(c, b, sizeof b, 0), EPIPE);
		ipc_close(c);
	}
}

/* ipc(7) Messages + 8: a raw peer announcing a length over the receiver's
 * limit (or 4 GiB - 2) gets EPROTO and nothing of that size allocated. */
TEST(wire_huge_length)
{
	struct ipc_options o;
	ipc_options_init(&o);
	o.max_msg_size = 1000;
	static const uint32_t lens[] = {1001, 0xfffffffeu, 0x80000000u};
	for (int s = 0; s < 2; s++) {
		for (int k = 0; k < 3; k++) {
			int fd;
			ipc_conn *c = client_to_raw(stream_schemes[s], k ? NULL : &o, &fd);
			unsigned char in[12];
			memcpy(in, good_hello, 8);
			be32(in + 8, lens[k]);
			raw_write(fd, in, sizeof in);
			raw_write(fd, "xxxxxxxx", 8);
			long peak0 = t_vmpeak_kib();
			void *p = NULL;
			CHECK(ipc_conn_set_timeouts(c, -1, 5000) == 0);
			CHECK_FAILS(ipc_recv_alloc(c, &p, 0), EPROTO);
			CHECKF(t_vmpeak_kib() - peak0 < 16 * 1024, "VmPeak grew by %ld KiB", t_vmpeak_kib() - peak0);
			close(fd);
			ipc_close(c);
		}
	}
}

/* ipc(7) Resources and security: a truncated hello or frame followed by close is a clean
 * error (ECONNRESET or EPROTO), never a message and never end-of-stream
 * passed off as orderly. */
TEST(wire_truncated)
{
	for (int s = 0; s < 2; s++) {
		for (int k = 0; k < 3; k++) {
			int fd;
			ipc_conn *c = client_to_raw(stream_schemes[s], NULL, &fd);
			unsigned char in[8 + 4 + 10];
			memcpy(in, good_hello, 8);
			be32(in + 8, 100);
			memset(in + 12, 'z', 10);
			size_t n = k == 0 ? 3 : k == 1 ? 10 : sizeof in; /* in hello, in header, in payload */
			raw_write(fd, in, n);
			close(fd);
			char b[200];
			CHECK(ipc_conn_set_timeouts(c, -1, 5000) == 0);
			errno = 0;
			ssize_t r = ipc_recv(c, b, sizeof b, 0);
			int e = errno;
			CHECKF(r < 0 && (e == ECONNRESET || e == EPROTO), "truncated at %zu: %zd (%s)", n, r, strerror(e));
			ipc_close(c);
		}
	}
}

/* ipc(7) Blocking: a receive timeout bounds the whole call, not each wait: a
 * peer trickling one byte every 50 ms does not extend it. */
TEST(wire_timeout_bounds_whole_call)
{
	for (int s = 0; s < 2; s++) {
		int fd;
		ipc_conn *c = client_to_raw(stream_schemes[s], NULL, &fd);
		unsigned char in[12];
		memcpy(in, good_hello, 8);
		be32(in + 8, 1000);
		raw_write(fd, in, sizeof in);
		fflush(NULL);
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			for (int i = 0; i < 100; i++) {
				if (send(fd, "t", 1, MSG_NOSIGNAL) != 1)
					_exit(0);
				t_sleep_ms(50);
			}
			_exit(0);
		}
		CHECK(ipc_conn_set_timeouts(c, -1, 400) == 0);
		char b[2000];
		int64_t t0 = t_now_ms();
		CHECK_FAILS(ipc_recv(c, b, sizeof b, 0), ETIMEDOUT);
		int64_t dt = t_now_ms() - t0;
		CHECKF(dt >= 400 && dt < 1500, "400 ms receive took %lld ms with a trickling peer", (long long)dt);
		kill(pid, SIGKILL);
		t_wait(pid);
		close(fd);
		ipc_close(c);
	}
}

struct relay {
	int tcp_lfd;
	const char *unix_addr;
};

/* Copy bytes both ways between one tcp and one unix connection. */
static void *relay_fn(void *arg)
{
	struct relay *r = arg;
	int a = raw_accept(r->tcp_lfd);
	int b = raw_connect(r->unix_addr);
	struct pollfd p[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
	char buf[65536];
	for (;;) {
		if (poll(p, 2, 10000) <= 0)
			break;
		int done = 0;
		for (int i = 0; i < 2; i++) {
			if (!p[i].revents)
				continue;
			ssize_t n = recv(p[i].fd, buf, sizeof buf, 0);
			if (n <= 0) {
				done = 1;
				break;
			}
			raw_write(p[1 - i].fd, buf, (size_t)n);
		}
		if (done)
			break;
	}
	close(a);
	close(b);
	return NULL;
}

static void *send_big(void *arg)
{
	char *big = malloc(1 << 20);
	CHECK(big != NULL);
	t_fill(big, 1 << 20, 9);
	CHECK(ipc_send(arg, big, 1 << 20, 0) == 1 << 20);
	free(big);
	return NULL;
}

/* ipc(7) Wire format: unix and tcp speak the same wire format: a plain byte relay
 * between a tcp port and a unix socket carries a libipc connection. */
TEST(wire_relay_unix_tcp)
{
	char ubound[IPC_ADDR_MAX + 1], taddr[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("unix", NULL, ubound);
	struct relay r = {.tcp_lfd = raw_listen("tcp", taddr, 4), .unix_addr = ubound};
	pthread_t th;
	CHECK(pthread_create(&th, NULL, relay_fn, &r) == 0);
	ipc_conn *c = ipc_connect(taddr, NULL);
	CHECK(c != NULL);
	ipc_conn *s = t_accept(l);
	roundtrip(c, s, "over tcp, then unix");
	roundtrip(s, c, "and back");
	pthread_t st;
	CHECK(pthread_create(&st, NULL, send_big, c) == 0);
	void *p = NULL;
	CHECK(ipc_recv_alloc(s, &p, 0) == 1 << 20 && t_verify(p, 1 << 20, 9));
	free(p);
	CHECK(pthread_join(st, NULL) == 0);
	CHECK(ipc_close(c) == 0);
	char b[8];
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), EPIPE);
	CHECK(pthread_join(th, NULL) == 0);
	close(r.tcp_lfd);
	ipc_close(s);
	ipc_listener_close(l);
}

/* ---- arguments and address syntax ------------------------------------ */

/* ipc(7) Addresses / error convention: NULL arguments give EINVAL, never a
 * crash. */
TEST(api_null_arguments)
{
	char b[8];
	struct ipc_cred cr;
	struct iovec v = {b, 1};
	CHECK_FAILS(ipc_listen(NULL, NULL), EINVAL);
	CHECK_FAILS(ipc_connect(NULL, NULL), EINVAL);
	CHECK_FAILS(ipc_accept(NULL, 0), EINVAL);
	CHECK_FAILS(ipc_send(NULL, b, 1, 0), EINVAL);
	CHECK_FAILS(ipc_sendv(NULL, &v, 1, 0), EINVAL);
	CHECK_FAILS(ipc_recv(NULL, b, 1, 0), EINVAL);
	CHECK_FAILS(ipc_recv_alloc(NULL, NULL, 0), EINVAL);
	CHECK_FAILS(ipc_send_batch(NULL, &v, 1, 0), EINVAL);
	CHECK_FAILS(ipc_recv_batch(NULL, &v, 1, 0), EINVAL);
	CHECK_FAILS(ipc_flush(NULL, 0), EINVAL);
	CHECK_FAILS(ipc_conn_set_timeouts(NULL, 0, 0), EINVAL);
	CHECK_FAILS(ipc_conn_fd(NULL), EINVAL);
	CHECK_FAILS(ipc_conn_ready(NULL, IPC_POLLIN, NULL), EINVAL);
	CHECK_FAILS(ipc_conn_scheme(NULL), EINVAL);
	CHECK_FAILS(ipc_conn_peer_cred(NULL, &cr), EINVAL);
	CHECK_FAILS(ipc_close(NULL), EINVAL);
	CHECK_FAILS(ipc_listener_fd(NULL), EINVAL);
	CHECK_FAILS(ipc_listener_ready(NULL, IPC_POLLIN, NULL), EINVAL);
	CHECK_FAILS(ipc_listener_addr(NULL, b, sizeof b), EINVAL);
	CHECK_FAILS(ipc_listener_close(NULL), EINVAL);
	CHECK_FAILS(ipc_poll(NULL, 1, 0), EINVAL);
	CHECK(ipc_poll(NULL, 0, 0) == 0);
	struct ipc_pollitem none = {.events = IPC_POLLIN};
	CHECK_FAILS(ipc_poll(&none, 1, 0), EINVAL);
	ipc_options_init(NULL); /* harmless */

	/* NULL buffers on a live connection */
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("unix", NULL, bound);
	CHECK_FAILS(ipc_listener_addr(l, NULL, 10), EINVAL);
	ipc_conn *c = ipc_connect(bound, NULL);
	CHECK(c != NULL);
	ipc_conn *s = t_accept(l);
	CHECK_FAILS(ipc_send(c, NULL, 5, 0), EINVAL);
	CHECK_FAILS(ipc_recv(s, NULL, 5, IPC_DONTWAIT), EINVAL);
	CHECK_FAILS(ipc_recv_alloc(s, NULL, 0), EINVAL);
	CHECK_FAILS(ipc_send(c, b, 1, 0x100), EINVAL); /* unknown flag */
	CHECK_FAILS(ipc_recv(s, b, 1, 0x100), EINVAL);
	roundtrip(c, s, "fine after bad calls");
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
}

/* ipc(7) Addresses: malformed addresses and unknown schemes are refused with a
 * specific errno. */
TEST(api_address_errors)
{
	static const struct {
		const char *a;
		int err;
	} cases[] = {
		{"", EINVAL},
		{"unix", EINVAL},
		{":/tmp/x", EINVAL},
		{"nosuch:thing", EPROTONOSUPPORT},
		{"UNIX:/tmp/x", EPROTONOSUPPORT},
		{"http://example.com", EPROTONOSUPPORT},
		{"unix:", EINVAL},
		{"tcp:", EINVAL},
		{"tcp:127.0.0.1", EINVAL},
		{"tcp:127.0.0.1:", EINVAL},
		{"tcp:127.0.0.1:65536", EINVAL},
		{"tcp:127.0.0.1:99999", EINVAL},
		{"tcp:127.0.0.1:-1", EINVAL},
		{"tcp:127.0.0.1:abc", EINVAL},
		{"tcp:127.0.0.1:12x", EINVAL},
		{"tcp:127.0.0.1: 80", EINVAL},
		{"tcp:[::1", EINVAL},
		{"tcp:[::1]", EINVAL},
		{"tcp:[]:80", EINVAL},
		{"tcp:::1:80", EINVAL},
		{"unix:@", EINVAL},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		errno = 0;
		ipc_listener *l = ipc_listen(cases[i].a, NULL);
		CHECKF(!l && errno == cases[i].err, "ipc_listen(\"%s\"): %s, expected %s", cases[i].a,
		       l ? "success" : strerror(errno), strerror(cases[i].err));
		errno = 0;
		ipc_conn *c = ipc_connect(cases[i].a, NULL);
		CHECKF(!c && errno == cases[i].err, "ipc_connect(\"%s\"): %s, expected %s", cases[i].a,
		       c ? "success" : strerror(errno), strerror(cases[i].err));
	}
	/* longer than IPC_ADDR_MAX */
	char *big = malloc(IPC_ADDR_MAX + 100);
	CHECK(big != NULL);
	memset(big, 'a', IPC_ADDR_MAX + 99);
	memcpy(big, "unix:/", 6);
	big[IPC_ADDR_MAX + 99] = 0;
	CHECK_FAILS(ipc_listen(big, NULL), ENAMETOOLONG);
	CHECK_FAILS(ipc_connect(big, NULL), ENAMETOOLONG);
	free(big);
	CHECK(t_dir_count(t_tmpdir()) == 0);
}

/* Options out of range are refused with EINVAL. */
TEST(api_bad_options)
{
	struct ipc_options o;
	const char *a = t_addr("unix");
	ipc_options_init(&o);
	o.capacity = 4095;
	CHECK_FAILS(ipc_listen(a, &o), EINVAL);
	ipc_options_init(&o);
	o.max_msg_size = 0;
	CHECK_FAILS(ipc_connect(a, &o), EINVAL);
	ipc_options_init(&o);
	o.recv_timeout_ms = -2;
	CHECK_FAILS(ipc_listen(a, &o), EINVAL);
	ipc_options_init(&o);
	o.connect_timeout_ms = -7;
	CHECK_FAILS(ipc_connect(a, &o), EINVAL);
	ipc_options_init(&o);
	o.mode = 010000;
	CHECK_FAILS(ipc_listen(a, &o), EINVAL);
	ipc_options_init(&o);
	CHECK(o.max_msg_size == IPC_DEFAULT_MAX_MSG && o.capacity == IPC_DEFAULT_CAPACITY && o.mode == 0600 &&
	      o.send_timeout_ms == -1 && o.recv_timeout_ms == -1 && o.connect_timeout_ms == IPC_DEFAULT_CONNECT_TIMEOUT_MS &&
	      o.nonblock == 0);
	CHECK(t_dir_count(t_tmpdir()) == 0);
}

/* ---- unix ------------------------------------------------------------ */

/* ipc(7) Addresses: a unix path longer than sun_path allows is ENAMETOOLONG and
 * never truncated (no file appears under a shorter name); the longest
 * path that fits works. */
TEST(unix_path_too_long)
{
	struct sockaddr_un sa;
	size_t maxlen = sizeof sa.sun_path - 1; /* 107 */
	char path[300];
	char addr[400];
	size_t dl = strlen(t_tmpdir());
	CHECK(dl + 10 < maxlen);
	for (size_t len = maxlen + 1; len < maxlen + 60; len += 29) {
		snprintf(path, sizeof path, "%s/", t_tmpdir());
		memset(path + dl + 1, 'p', len - dl - 1);
		path[len] = 0;
		snprintf(addr, sizeof addr, "unix:%s", path);
		CHECK_FAILS(ipc_listen(addr, NULL), ENAMETOOLONG);
		CHECK_FAILS(ipc_connect(addr, NULL), ENAMETOOLONG);
		CHECKF(t_dir_count(t_tmpdir()) == 0, "a file appeared for a path of %zu bytes", len);
	}
	/* exactly 107 bytes fits */
	snprintf(path, sizeof path, "%s/", t_tmpdir());
	memset(path + dl + 1, 'q', maxlen - dl - 1);
	path[maxlen] = 0;
	snprintf(addr, sizeof addr, "unix:%s", path);
	ipc_listener *l = ipc_listen(addr, NULL);
	CHECKF(l != NULL, "a path of %zu bytes", maxlen);
	struct stat st;
	CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode));
	ipc_conn *c = ipc_connect(addr, NULL);
	CHECK(c != NULL);
	ipc_conn *s = t_accept(l);
	roundtrip(c, s, "long path");
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
	/* abstract names: at most 107 bytes after the '@' */
	char ab[200] = "unix:@";
	memset(ab + 6, 'a', 108);
	ab[6 + 108] = 0;
	CHECK_FAILS(ipc_listen(ab, NULL), ENAMETOOLONG);
	CHECK(t_dir_count(t_tmpdir()) == 0);
}

/* ipc(7) Addresses: unix:@name is an abstract socket: no file, reported as
 * given, connectable; taken names give EADDRINUSE. */
TEST(unix_abstract)
{
	char a[128];
	snprintf(a, sizeof a, "unix:@ipct-%d-%s", (int)getpid(), t_token());
	ipc_listener *l = ipc_listen(a, NULL);
	CHECK(l != NULL);
	char bound[IPC_ADDR_MAX + 1];
	CHECK(ipc_listener_addr(l, bound, sizeof bound) > 0);
	CHECKF(!strcmp(bound, a), "reported %s for %s", bound, a);
	CHECK_FAILS(ipc_listen(a, NULL), EADDRINUSE);
	ipc_conn *c = ipc_connect(a, NULL);
	CHECK(c != NULL);
	ipc_conn *s = t_accept(l);
	roundtrip(c, s, "abstract");
	struct ipc_cred cr;
	CHECK(ipc_conn_peer_cred(s, &cr) == 0 && cr.pid == getpid());
	CHECK(t_dir_count(t_tmpdir()) == 0);
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
	errno = 0;
	c = ipc_connect(a, NULL);
	CHECK(c == NULL && (errno == ECONNREFUSED || errno == ENOENT));
	l = ipc_listen(a, NULL); /* the name is free again */
	CHECK(l != NULL);
	ipc_listener_close(l);
}

/* ipc(7) Resources and security: a stale socket file left by a SIGKILLed listener is
 * reclaimed by the next listener at that path. */
TEST(unix_stale_socket_reclaimed)
{
	const char *a = t_addr("unix");
	int pfd[2];
	CHECK(pipe(pfd) == 0);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		ipc_listener *l = ipc_listen(a, NULL);
		CHECK(l != NULL);
		CHECK(write(pfd[1], "r", 1) == 1);
		for (;;)
			pause();
	}
	char ch;
	CHECK(read(pfd[0], &ch, 1) == 1);
	CHECK(kill(pid, SIGKILL) == 0);
	t_wait(pid);
	struct stat st;
	CHECKF(lstat(a + 5, &st) == 0 && S_ISSOCK(st.st_mode), "the killed listener left no socket file");
	ipc_listener *l = ipc_listen(a, NULL);
	CHECKF(l != NULL, "stale socket file not reclaimed");
	ipc_conn *c = ipc_connect(a, NULL);
	CHECK(c != NULL);
	ipc_conn *s = t_accept(l);
	roundtrip(c, s, "reclaimed");
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
	CHECKF(lstat(a + 5, &st) < 0 && errno == ENOENT, "listener close left the socket file");
}

/* ipc(7) Resources and security: a failed listen on a live listener's path neither steals
 * nor disturbs it: the next connection it accepts is a real client. */
TEST(unix_live_listener_undisturbed)
{
	const char *a = t_addr("unix");
	ipc_listener *l = ipc_listen(a, NULL);
	CHECK(l != NULL);
	for (int i = 0; i < 3; i++)
		CHECK_FAILS(ipc_listen(a, NULL), EADDRINUSE);
	short ev;
	CHECKF(ipc_listener_ready(l, IPC_POLLIN, &ev) == 0, "failed listens left connections in the live listener");
	ipc_conn *c = ipc_connect(a, NULL);
	CHECK(c != NULL);
	ipc_conn *s = t_accept(l);
	roundtrip(c, s, "real client");
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
}

/* ipc(7) Resources and security: a file that is not a socket is never removed (EADDRINUSE);
 * listener close only removes its own socket file. */
TEST(unix_never_removes_other_files)
{
	const char *a = t_addr("unix");
	int fd = open(a + 5, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	CHECK(fd >= 0);
	CHECK(write(fd, "data", 4) == 4);
	close(fd);
	CHECK_FAILS(ipc_listen(a, NULL), EADDRINUSE);
	struct stat st;
	CHECK(stat(a + 5, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 4);

	/* the socket file was replaced behind the listener's back: keep it */
	const char *b = t_addr("unix");
	ipc_listener *l = ipc_listen(b, NULL);
	CHECK(l != NULL);
	CHECK(unlink(b + 5) == 0);
	fd = open(b + 5, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	CHECK(fd >= 0);
	close(fd);
	ipc_listener_close(l);
	CHECKF(stat(b + 5, &st) == 0 && S_ISREG(st.st_mode), "listener close removed a file it did not create");
}

/* ipc(7) Resources and security: the socket file gets 0600 by default and opt.mode exactly,
 * whatever the umask. */
TEST(unix_socket_mode)
{
	mode_t old = umask(077);
	struct ipc_options o;
	ipc_options_init(&o);
	o.mode = 0666;
	const char *a = t_addr("unix");
	ipc_listener *l = ipc_listen(a, &o);
	CHECK(l != NULL);
	struct stat st;
	CHECK(stat(a + 5, &st) == 0);
	CHECKF((st.st_mode & 0777) == 0666, "mode %o with opt.mode 0666 and umask 077", (unsigned)(st.st_mode & 0777));
	ipc_listener_close(l);
	umask(0);
	a = t_addr("unix");
	l = ipc_listen(a, NULL);
	CHECK(l != NULL);
	CHECK(stat(a + 5, &st) == 0);
	CHECKF((st.st_mode & 0777) == 0600, "default mode %o with umask 0", (unsigned)(st.st_mode & 0777));
	ipc_listener_close(l);
	umask(old);
}

/* ipc(7) Connections: connect to a unix path where nobody listens fails at once. */
TEST(unix_connect_nobody)
{
	char a[300];
	snprintf(a, sizeof a, "unix:%s/none.sock", t_tmpdir());
	errno = 0;
	CHECK(ipc_connect(a, NULL) == NULL && (errno == ENOENT || errno == ECONNREFUSED));
	snprintf(a, sizeof a, "unix:%s/file", t_tmpdir());
	int fd = open(a + 5, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	close(fd);
	errno = 0;
	CHECK(ipc_connect(a, NULL) == NULL && (errno == ECONNREFUSED || errno == ENOENT));
	char raw[IPC_ADDR_MAX + 1];
	int lfd = raw_listen("unix", raw, 1);
	close(lfd); /* socket file without a listener */
	errno = 0;
	CHECK(ipc_connect(raw, NULL) == NULL && (errno == ECONNREFUSED || errno == ENOENT));
}

/* ---- tcp ------------------------------------------------------------- */

/* ipc(7) Addresses: tcp:[::1]:0 listens on IPv6 and reports [::1]:port. */
TEST(tcp_ipv6_loopback)
{
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		SKIP("no IPv6 loopback");
	close(fd);
	ipc_listener *l = ipc_listen("tcp:[::1]:0", NULL);
	CHECK(l != NULL);
	char bound[IPC_ADDR_MAX + 1];
	CHECK(ipc_listener_addr(l, bound, sizeof bound) > 0);
	CHECKF(!strncmp(bound, "tcp:[::1]:", 10) && atoi(bound + 10) > 0, "reported %s", bound);
	ipc_conn *c = ipc_connect(bound, NULL);
	CHECK(c != NULL);
	ipc_conn *s = t_accept(l);
	roundtrip(c, s, "v6");
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
}

/* ipc(7) Addresses: a host name is resolved (localhost). */
TEST(tcp_host_name)
{
	ipc_listener *l = ipc_listen("tcp:localhost:0", NULL);
	CHECK(l != NULL);
	char bound[IPC_ADDR_MAX + 1], a[64];
	CHECK(ipc_listener_addr(l, bound, sizeof bound) > 0);
	int port = atoi(strrchr(bound, ':') + 1);
	CHECKF(port > 0, "reported %s", bound);
	ipc_conn *c = ipc_connect(bound, NULL);
	CHECKF(c != NULL, "connect to reported %s", bound);
	ipc_conn *s = t_accept(l);
	roundtrip(c, s, "by number");
	ipc_close(c);
	ipc_close(s);
	snprintf(a, sizeof a, "tcp:localhost:%d", port);
	c = ipc_connect(a, NULL);
	CHECKF(c != NULL, "connect to %s", a);
	s = t_accept(l);
	roundtrip(c, s, "by name");
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
}

/* ipc(7) Addresses: "*" or an empty host listens on all addresses. */
TEST(tcp_listen_all)
{
	static const char *forms[] = {"tcp:*:0", "tcp::0"};
	for (int i = 0; i < 2; i++) {
		ipc_listener *l = ipc_listen(forms[i], NULL);
		CHECKF(l != NULL, "ipc_listen(%s)", forms[i]);
		char bound[IPC_ADDR_MAX + 1], a[64];
		CHECK(ipc_listener_addr(l, bound, sizeof bound) > 0);
		int port = atoi(strrchr(bound, ':') + 1);
		CHECKF(!strncmp(bound, "tcp:", 4) && port > 0, "reported %s", bound);
		snprintf(a, sizeof a, "tcp:127.0.0.1:%d", port);
		ipc_conn *c = ipc_connect(a, NULL);
		CHECKF(c != NULL, "connect to %s (listener %s)", a, bound);
		ipc_conn *s = t_accept(l);
		roundtrip(c, s, "any");
		ipc_close(c);
		ipc_close(s);
		ipc_listener_close(l);
	}
}

/* ipc(7) Connections: connect to a closed tcp port fails at once: ECONNREFUSED. */
TEST(tcp_connect_refused)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
	socklen_t sl = sizeof sa;
	CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
	close(fd);
	char a[64];
	snprintf(a, sizeof a, "tcp:127.0.0.1:%d", ntohs(sa.sin_port));
	int64_t t0 = t_now_ms();
	CHECK_FAILS(ipc_connect(a, NULL), ECONNREFUSED);
	CHECK(t_now_ms() - t0 < 3000);
}

/* ipc(7) Connections: connect_timeout_ms bounds a connect to a peer that does not
 * answer (a listener whose accept queue is full drops new SYNs). */
TEST(tcp_connect_timeout)
{
	char a[IPC_ADDR_MAX + 1];
	int lfd = raw_listen("tcp", a, 0);
	const char *c = strrchr(a, ':');
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				 .sin_port = htons((uint16_t)atoi(c + 1))};
	int fill[8], nfill = 0;
	for (; nfill < 8; nfill++) { /* fill the accept queue; never accept */
		fill[nfill] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		CHECK(fill[nfill] >= 0);
		connect(fill[nfill], (struct sockaddr *)&sa, sizeof sa);
	}
	t_sleep_ms(100);
	struct ipc_options o;
	ipc_options_init(&o);
	o.connect_timeout_ms = 300;
	int64_t t0 = t_now_ms();
	errno = 0;
	ipc_conn *cn = ipc_connect(a, &o);
	int e = errno;
	int64_t dt = t_now_ms() - t0;
	for (int i = 0; i < nfill; i++)
		close(fill[i]);
	close(lfd);
	if (cn) {
		ipc_close(cn);
		SKIP("the kernel completed a connect to a full accept queue");
	}
	CHECKF(e == ETIMEDOUT, "connect to a full listener: %s", strerror(e));
	CHECKF(dt >= 300 && dt < 2300, "connect_timeout_ms 300 took %lld ms", (long long)dt);
}

/* ---- mixed backends -------------------------------------------------- */

/* ipc(7) Readiness: ipc_poll waits on connections and listeners of every
 * registered scheme at once and reports exactly the ready ones. */
TEST(poll_mixed_backends)
{
	enum { MAXS = 16 };
	ipc_listener *l[MAXS];
	ipc_conn *s[MAXS], *c[MAXS];
	char bound[MAXS][IPC_ADDR_MAX + 1];
	int n = 0;
	for (const struct ipc__transport *const *tp = ipc__transports; *tp && n < MAXS; tp++, n++) {
		l[n] = t_listen((*tp)->scheme, NULL, bound[n]);
		c[n] = ipc_connect(bound[n], NULL);
		CHECK(c[n] != NULL);
		s[n] = t_accept(l[n]);
		CHECK(!strcmp(ipc_conn_scheme(s[n]), (*tp)->scheme));
	}
	CHECK(n >= 2);
	struct ipc_pollitem it[2 * MAXS];
	for (int i = 0; i < n; i++) {
		memset(&it[2 * i], 0, sizeof it[0] * 2);
		it[2 * i].conn = s[i];
		it[2 * i].events = IPC_POLLIN;
		it[2 * i + 1].listener = l[i];
		it[2 * i + 1].events = IPC_POLLIN;
	}
	CHECK(ipc_poll(it, (size_t)(2 * n), 50) == 0);
	for (int k = n - 1; k >= 0; k--) {
		char m[32];
		snprintf(m, sizeof m, "to %d", k);
		CHECK(ipc_send(c[k], m, strlen(m), 0) == (ssize_t)strlen(m));
		CHECK(ipc_poll(it, (size_t)(2 * n), 10000) == 1);
		for (int i = 0; i < 2 * n; i++)
			CHECKF(!!it[i].revents == (i == 2 * k), "item %d revents 0x%x after a send on %d", i,
			       it[i].revents, k);
		char b[32];
		CHECK(ipc_recv(s[k], b, sizeof b, IPC_DONTWAIT) == (ssize_t)strlen(m));
		/* a new client makes that listener ready */
		ipc_conn *x = ipc_connect(bound[k], NULL);
		CHECK(x != NULL);
		CHECK(ipc_poll(it, (size_t)(2 * n), 10000) == 1);
		CHECK(it[2 * k + 1].revents & IPC_POLLIN);
		ipc_conn *xs = ipc_accept(l[k], IPC_DONTWAIT);
		CHECK(xs != NULL);
		ipc_close(x);
		ipc_close(xs);
	}
	for (int i = 0; i < n; i++) {
		ipc_close(c[i]);
		ipc_close(s[i]);
		ipc_listener_close(l[i]);
	}
}
