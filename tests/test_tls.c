/* test_tls.c - tls: what only tls has: verification and its failures,
 * mutual TLS, the peer's identity, hostile handshakes, a TLS-terminating
 * relay; and the remote-use options of every transport (connect_retry,
 * keep-alive).  The conformance and hostile suites run over tls: too.
 *
 * Certificates are made at run time (tests/util.c t_tls_setup: one CA per
 * run; more here in t_tmpdir()); nothing outside the repository is used. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

/* The run's CA directory, or skip (no tls in this build, no openssl). */
static const char *tls_or_skip(void)
{
	if (strcmp(t_env("IPC_TLS"), "1") != 0)
		SKIP("built without tls (TLS=0)");
	const char *d = t_tls_dir();
	if (!d)
		SKIP("no openssl command to make test certificates");
	return d;
}

static char *path_in(const char *dir, const char *file)
{
	char *p = malloc(512);
	CHECK(p != NULL);
	snprintf(p, 512, "%s/%s", dir, file);
	return p;
}

/* A listener with this certificate (name.pem/.key in dir) and opts. */
static ipc_listener *listen_with(const char *dir, const char *name, struct ipc_options *o, char bound[IPC_ADDR_MAX + 1])
{
	char f[64];
	snprintf(f, sizeof f, "%s.pem", name);
	o->tls_cert_file = path_in(dir, f);
	snprintf(f, sizeof f, "%s.key", name);
	o->tls_key_file = path_in(dir, f);
	ipc_listener *l = ipc_listen("tls:127.0.0.1:0", o);
	CHECKF(l != NULL, "listen with %s/%s: %s", dir, name, ipc_error_detail());
	CHECK(ipc_listener_addr(l, bound, IPC_ADDR_MAX + 1) > 0);
	return l;
}

/* A client (a child process) connects with o and receives; the listener
 * is served meanwhile.  Returns the error of the client's first receive
 * (a client's handshake ends in its first calls), its detail in detail;
 * any connection the listener returns is closed. */
static int client_error(ipc_listener *l, const char *addr, struct ipc_options *o, char detail[256])
{
	int p[2];
	CHECK(pipe(p) == 0);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		char msg[300] = {0}, b[16];
		ipc_conn *c = ipc_connect(addr, o); /* fails at once if the listener was quick */
		int e = c ? 0 : errno;
		snprintf(msg + sizeof e, sizeof msg - sizeof e, "%s", ipc_error_detail());
		if (c) {
			errno = 0;
			ssize_t r = ipc_recv(c, b, sizeof b, 0);
			e = r == -1 ? errno : 0;
			snprintf(msg + sizeof e, sizeof msg - sizeof e, "%s", ipc_error_detail());
			if (ipc_recv(c, b, sizeof b, 0) != -1 || errno != e) /* sticky */
				e = -1;
		}
		memcpy(msg, &e, sizeof e);
		if (write(p[1], msg, sizeof msg) != (ssize_t)sizeof msg)
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	for (;;) {
		struct pollfd pf = {.fd = p[0], .events = POLLIN};
		if (poll(&pf, 1, 0) == 1)
			break;
		struct ipc_pollitem it = {.listener = l, .events = IPC_POLLIN};
		if (ipc_poll(&it, 1, 20) == 1) {
			ipc_conn *s = ipc_accept(l, IPC_DONTWAIT);
			if (s)
				ipc_close(s);
		}
	}
	char msg[300];
	CHECK(read(p[0], msg, sizeof msg) == (ssize_t)sizeof msg);
	close(p[0]);
	t_wait_ok(pid);
	int e;
	memcpy(&e, msg, sizeof e);
	msg[sizeof e + 255] = 0;
	memcpy(detail, msg + sizeof e, 256);
	printf("client: %s: %s\n", e > 0 ? strerror(e) : e ? "not sticky" : "no error", detail);
	CHECKF(e > 0, "the client's receive: %s", e ? "error not sticky" : "no error");
	return e;
}

static struct ipc_options client_opts(void)
{
	struct ipc_options o;
	ipc_options_init(&o);
	o.connect_timeout_ms = 5000;
	o.recv_timeout_ms = 5000;
	o.send_timeout_ms = 5000;
	return o;
}

/* A tls: listener with the test certificate (skips without tls); *o gets
 * client_opts() for the connections of the test. */
static ipc_listener *tls_listener(struct ipc_options *o, char bound[IPC_ADDR_MAX + 1])
{
	tls_or_skip();
	*o = client_opts();
	return t_listen("tls", o, bound);
}

/* A certificate from a CA the client does not trust: EKEYREJECTED, and
 * the detail says why. */
TEST(tls_unknown_ca)
{
	tls_or_skip();
	const char *d = t_tmpdir();
	CHECK(t_tls_make_ca(d) == 0);
	CHECK(t_tls_make_cert(d, "rogue", "localhost", "DNS:localhost,IP:127.0.0.1", "-days 2") == 0);
	struct ipc_options lo = client_opts(), co = client_opts();
	char bound[IPC_ADDR_MAX + 1], why[256];
	ipc_listener *l = listen_with(d, "rogue", &lo, bound);
	int e = client_error(l, bound, &co, why);
	CHECKF(e == EKEYREJECTED, "unknown CA: %s (%s)", strerror(e), why);
	CHECKF(strstr(why, "not trusted"), "detail: %s", why);
	/* the same certificate is fine for a client that trusts that CA */
	co.tls_ca_file = path_in(d, "ca.pem");
	ipc_conn *c = ipc_connect(bound, &co);
	CHECK(c != NULL);
	ipc_conn *s = t_accept(l);
	CHECK(ipc_send(c, "x", 1, 0) == 1);
	char b[4];
	CHECK(ipc_recv(s, b, sizeof b, 0) == 1);
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
}

/* An expired server certificate: EKEYEXPIRED. */
TEST(tls_expired_certificate)
{
	const char *ca = tls_or_skip();
	const char *d = t_tmpdir();
	CHECK(t_sh("cp '%s/ca.pem' '%s/ca.key' '%s/'", ca, ca, d) == 0);
	CHECK(t_tls_make_cert(d, "old", "localhost", "DNS:localhost,IP:127.0.0.1", "-days -1") == 0);
	struct ipc_options lo = client_opts(), co = client_opts();
	char bound[IPC_ADDR_MAX + 1], why[256];
	ipc_listener *l = listen_with(d, "old", &lo, bound);
	int e = client_error(l, bound, &co, why);
	CHECKF(e == EKEYEXPIRED, "expired: %s (%s)", strerror(e), why);
	CHECKF(strstr(why, "expired"), "detail: %s", why);
	ipc_listener_close(l);
}

/* The certificate is for localhost/127.0.0.1: another name is refused
 * (EKEYREJECTED), the name in the address and tls_server_name work. */
TEST(tls_host_name_checked)
{
	tls_or_skip();
	char bound[IPC_ADDR_MAX + 1], why[256], byname[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("tls", NULL, bound);
	struct ipc_options co = client_opts();
	co.tls_server_name = "db.example";
	int e = client_error(l, bound, &co, why);
	CHECKF(e == EKEYREJECTED, "other name: %s (%s)", strerror(e), why);
	CHECKF(strstr(why, "another name"), "detail: %s", why);
	/* by name: tls:localhost:port checks DNS:localhost */
	snprintf(byname, sizeof byname, "tls:localhost:%s", strrchr(bound, ':') + 1);
	co.tls_server_name = NULL;
	ipc_conn *c = ipc_connect(byname, &co);
	CHECK(c != NULL);
	ipc_conn *s = t_accept(l);
	CHECK(ipc_send(s, "hi", 2, 0) == 2);
	char b[4];
	CHECKF(ipc_recv(c, b, sizeof b, 0) == 2, "by name: %s %s", strerror(errno), ipc_error_detail());
	char sub[128];
	CHECK(ipc_conn_peer_cert(c, IPC_CERT_SUBJECT, sub, sizeof sub) > 0);
	CHECKF(!strcmp(sub, "CN=localhost"), "server subject %s", sub);
	CHECK(ipc_conn_peer_cert(c, IPC_CERT_SAN, sub, sizeof sub) > 0);
	CHECKF(strstr(sub, "DNS:localhost") && strstr(sub, "IP:127.0.0.1"), "server SANs %s", sub);
	CHECK_FAILS(ipc_conn_peer_cert(c, IPC_CERT_SUBJECT, sub, 4), ENOSPC);
	CHECK_FAILS(ipc_conn_peer_cert(c, 99, sub, sizeof sub), EINVAL);
	CHECK(ipc_send(c, "!", 1, 0) == 1 && ipc_recv(s, b, sizeof b, 0) == 1); /* ends the server's handshake */
	CHECK_FAILS(ipc_conn_peer_cert(s, IPC_CERT_SUBJECT, sub, sizeof sub), ENOENT); /* no client cert */
	ipc_close(c);
	ipc_close(s);
	/* tls_server_name picks the name checked */
	co.tls_server_name = "localhost";
	c = ipc_connect(bound, &co);
	s = t_accept(l);
	CHECK(ipc_send(c, "ok", 2, 0) == 2 && ipc_recv(s, b, sizeof b, 0) == 2);
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
}

/* Verification off (IPC_TLS_VERIFY_NONE) accepts any certificate. */
TEST(tls_verify_none)
{
	tls_or_skip();
	const char *d = t_tmpdir();
	CHECK(t_tls_make_ca(d) == 0);
	CHECK(t_tls_make_cert(d, "rogue", "elsewhere", "DNS:elsewhere", "-days 2") == 0);
	struct ipc_options lo = client_opts(), co = client_opts();
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = listen_with(d, "rogue", &lo, bound);
	co.tls_verify = IPC_TLS_VERIFY_NONE;
	ipc_conn *c = ipc_connect(bound, &co);
	ipc_conn *s = t_accept(l);
	char b[4];
	CHECK(ipc_send(c, "ok", 2, 0) == 2 && ipc_recv(s, b, sizeof b, 0) == 2);
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
}

/* Mutual TLS: a listener with IPC_TLS_VERIFY_REQUIRE serves only clients
 * with a certificate from its CA, and tells who they are. */
TEST(tls_mutual)
{
	const char *ca = tls_or_skip();
	struct ipc_options lo = client_opts(), co = client_opts();
	lo.tls_verify = IPC_TLS_VERIFY_REQUIRE;
	lo.tls_ca_file = path_in(ca, "ca.pem");
	char bound[IPC_ADDR_MAX + 1], why[256];
	ipc_listener *l = listen_with(ca, "server", &lo, bound);
	/* no certificate: refused (the listener never returns it) */
	int e = client_error(l, bound, &co, why);
	CHECKF(e == EKEYREJECTED || e == ECONNRESET, "no client certificate: %s (%s)", strerror(e), why);
	CHECK_FAILS(ipc_accept(l, IPC_DONTWAIT), EAGAIN);
	/* a certificate from another CA: refused */
	const char *d = t_tmpdir();
	CHECK(t_tls_make_ca(d) == 0);
	CHECK(t_tls_make_cert(d, "rogue", "rogue client", "DNS:rogue.test", "-days 2") == 0);
	co.tls_cert_file = path_in(d, "rogue.pem");
	co.tls_key_file = path_in(d, "rogue.key");
	e = client_error(l, bound, &co, why);
	CHECKF(e == EKEYREJECTED || e == ECONNRESET, "rogue client certificate: %s (%s)", strerror(e), why);
	CHECK_FAILS(ipc_accept(l, IPC_DONTWAIT), EAGAIN);
	/* the run's client certificate: served, and identified */
	co.tls_cert_file = path_in(ca, "client.pem");
	co.tls_key_file = path_in(ca, "client.key");
	ipc_conn *c = ipc_connect(bound, &co);
	CHECK(c != NULL);
	struct ipc_pollitem it = {.listener = l, .events = IPC_POLLIN};
	ipc_conn *s = NULL;
	for (int i = 0; i < 100 && !s; i++) { /* the client's calls move its handshake */
		char b[4];
		ipc_recv(c, b, sizeof b, IPC_DONTWAIT);
		if (ipc_poll(&it, 1, 50) == 1)
			s = ipc_accept(l, IPC_DONTWAIT);
	}
	CHECK(s != NULL);
	char b[8], sub[256];
	CHECK(ipc_send(c, "who", 3, 0) == 3);
	CHECK(ipc_recv(s, b, sizeof b, 0) == 3);
	CHECK(ipc_conn_peer_cert(s, IPC_CERT_SUBJECT, sub, sizeof sub) > 0);
	CHECKF(!strcmp(sub, "CN=libipc test client"), "client subject %s", sub);
	CHECK(ipc_conn_peer_cert(s, IPC_CERT_SAN, sub, sizeof sub) > 0);
	CHECKF(!strcmp(sub, "DNS:client.test,email:client@test"), "client SANs %s", sub);
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
}

/* A plain tcp: libipc client at a tls: listener: never a connection; the
 * client learns EPROTO (or a reset).  The reverse: EPROTO, explained. */
TEST(tls_plain_tcp_peers)
{
	tls_or_skip();
	char bound[IPC_ADDR_MAX + 1], tcpaddr[IPC_ADDR_MAX + 1], why[256];
	ipc_listener *l = t_listen("tls", NULL, bound);
	snprintf(tcpaddr, sizeof tcpaddr, "tcp:%s", bound + 4);
	struct ipc_options co = client_opts();
	ipc_conn *c = ipc_connect(tcpaddr, &co);
	CHECK(c != NULL);
	CHECK(ipc_send(c, "plain", 5, 0) == 5);
	struct ipc_pollitem it = {.listener = l, .events = IPC_POLLIN};
	ipc_poll(&it, 1, 300);
	CHECK_FAILS(ipc_accept(l, IPC_DONTWAIT), EAGAIN);
	char b[16];
	errno = 0;
	CHECK(ipc_recv(c, b, sizeof b, 0) == -1);
	CHECKF(errno == EPROTO || errno == ECONNRESET, "tcp client at a tls listener: %s", strerror(errno));
	ipc_close(c);
	ipc_listener_close(l);

	ipc_listener *tl = t_listen("tcp", NULL, tcpaddr);
	snprintf(bound, sizeof bound, "tls:%s", tcpaddr + 4);
	int e = client_error(tl, bound, &co, why);
	CHECKF(e == EPROTO, "tls client at a tcp listener: %s (%s)", strerror(e), why);
	CHECKF(strstr(why, "plain libipc"), "detail: %s", why);
	ipc_listener_close(tl);
}

/* A listener that never answers the handshake: the client fails within
 * connect_timeout_ms (ECONNABORTED), however long its receive would wait. */
TEST(tls_handshake_timeout)
{
	tls_or_skip();
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in si = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof si;
	CHECK(bind(lfd, (struct sockaddr *)&si, sizeof si) == 0 && listen(lfd, 4) == 0);
	CHECK(getsockname(lfd, (struct sockaddr *)&si, &sl) == 0);
	char addr[64];
	snprintf(addr, sizeof addr, "tls:127.0.0.1:%u", ntohs(si.sin_port));
	struct ipc_options co = client_opts();
	co.connect_timeout_ms = 300;
	co.recv_timeout_ms = -1;
	ipc_conn *c = ipc_connect(addr, &co);
	CHECK(c != NULL);
	int64_t t0 = t_now_ms();
	char b[4];
	CHECK_FAILS(ipc_recv(c, b, sizeof b, 0), ECONNABORTED);
	int64_t dt = t_now_ms() - t0;
	CHECKF(dt >= 250 && dt < 3000, "handshake bound: %lld ms for 300", (long long)dt);
	CHECKF(strstr(ipc_error_detail(), "handshake"), "detail: %s", ipc_error_detail());
	CHECK_FAILS(ipc_send(c, b, 1, 0), ECONNABORTED);
	ipc_close(c);
	close(lfd);
}

/* Clients that stop half way through their TLS hello, and a flood of
 * them, never delay the next real client; the listener's memory stays
 * bounded (128 handshakes in flight, the oldest dropped). */
TEST(tls_stalled_handshakes_do_not_block_accept)
{
	TEST_TIMEOUT(120);
	tls_or_skip();
	char bound[IPC_ADDR_MAX + 1];
	struct ipc_options lo = client_opts();
	lo.connect_timeout_ms = 60000; /* not the timeout: the eviction */
	ipc_listener *l = t_listen("tls", &lo, bound);
	struct sockaddr_in si = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(strrchr(bound, ':') + 1))};
	inet_pton(AF_INET, "127.0.0.1", &si.sin_addr);
	/* a TLS record header announcing a ClientHello, then silence */
	static const unsigned char half[] = {0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00};
	int n = 600, fds[600];
	long rss0 = t_rss_kib();
	for (int i = 0; i < n; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		CHECK(fds[i] >= 0);
		CHECK(connect(fds[i], (struct sockaddr *)&si, sizeof si) == 0);
		CHECK(send(fds[i], half, sizeof half, MSG_NOSIGNAL) == (ssize_t)sizeof half);
		if (i % 50 == 0)
			CHECK_FAILS(ipc_accept(l, IPC_DONTWAIT), EAGAIN);
	}
	CHECK_FAILS(ipc_accept(l, IPC_DONTWAIT), EAGAIN);
	long rss1 = t_rss_kib();
	int64_t t0 = t_now_ms();
	struct ipc_options co = client_opts();
	ipc_conn *c = ipc_connect(bound, &co);
	CHECK(c != NULL);
	ipc_conn *s = t_accept(l);
	CHECK(ipc_send(s, "served", 6, 0) == 6);
	char b[8];
	CHECK(ipc_recv(c, b, sizeof b, 0) == 6);
	int64_t dt = t_now_ms() - t0;
	CHECKF(dt < 3000, "real client served after %lld ms", (long long)dt);
	CHECKF(rss1 - rss0 < 64 * 1024, "RSS grew %ld KiB for %d stalled handshakes", rss1 - rss0, n);
	printf("FIGURE tls_stalled_handshakes: %d half ClientHellos, RSS +%ld KiB, real client served in %lld ms\n",
	       n, rss1 - rss0, (long long)dt);
	for (int i = 0; i < n; i++)
		close(fds[i]);
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
}

/* close_notify misuse: a peer that ends TLS without libipc's
 * end-of-stream frame died (ECONNRESET), one that sends the frame then
 * closes ended in order (EPIPE); bytes after close_notify are never
 * delivered. */
TEST(tls_close_notify_without_end_of_stream)
{
	char bound[IPC_ADDR_MAX + 1];
	struct ipc_options o;
	ipc_listener *l = tls_listener(&o, bound);
	static const unsigned char hello_msg[] = {'L', 'I', 'P', 'C', 2, 0, 0, 0, 0, 0, 0, 2, 'h', 'i'};
	for (int orderly = 0; orderly < 2; orderly++) {
		int fd = t_tls_raw_connect(bound);
		CHECK(write(fd, hello_msg, sizeof hello_msg) == (ssize_t)sizeof hello_msg);
		if (orderly)
			CHECK(write(fd, "\xff\xff\xff\xff", 4) == 4);
		ipc_conn *s = t_accept(l);
		close(fd); /* the relay sends close_notify, then FIN */
		char b[8];
		CHECK(ipc_recv(s, b, sizeof b, 0) == 2);
		CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), orderly ? EPIPE : ECONNRESET);
		ipc_close(s);
	}
	ipc_listener_close(l);
}

/* Options: bad values are EINVAL; a listener needs a certificate. */
TEST(tls_options_checked)
{
	tls_or_skip();
	struct ipc_options o;
	ipc_options_init(&o);
	CHECK(o.tls_verify == IPC_TLS_VERIFY_PEER && o.tls_min_version == IPC_TLS_1_2);
	o.tls_verify = 7;
	CHECK_FAILS(ipc_listen("tls:127.0.0.1:0", &o), EINVAL);
	ipc_options_init(&o);
	o.tls_min_version = 0x0302; /* TLS 1.1: never */
	CHECK_FAILS(ipc_connect("tls:127.0.0.1:1", &o), EINVAL);
	ipc_options_init(&o);
	o.tls_cert_file = "/nonexistent/cert.pem";
	CHECK_FAILS(ipc_listen("tls:127.0.0.1:0", &o), ENOENT);
	CHECKF(strstr(ipc_error_detail(), "/nonexistent/cert.pem"), "detail: %s", ipc_error_detail());
	/* a key that is not the certificate's */
	const char *ca = t_tls_dir();
	o.tls_cert_file = path_in(ca, "server.pem");
	o.tls_key_file = path_in(ca, "client.key");
	CHECK_FAILS(ipc_listen("tls:127.0.0.1:0", &o), EINVAL);
	CHECKF(strstr(ipc_error_detail(), "not the key"), "detail: %s", ipc_error_detail());
	/* TLS 1.3 only, both sides */
	ipc_options_init(&o);
	o.tls_min_version = IPC_TLS_1_3;
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("tls", &o, bound);
	ipc_conn *c = ipc_connect(bound, &o);
	ipc_conn *s = t_accept(l);
	char b[4];
	CHECK(ipc_send(c, "13", 2, 0) == 2 && ipc_recv(s, b, sizeof b, 0) == 2);
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
	CHECK_FAILS(ipc_conn_peer_cert(NULL, IPC_CERT_SUBJECT, b, sizeof b), EINVAL);
}

/* Without tls in the build, tls: is EPROTONOSUPPORT (and nothing else). */
TEST(tls_absent_is_eprotonosupport)
{
	if (!strcmp(t_env("IPC_TLS"), "1"))
		SKIP("built with tls");
	CHECK_FAILS(ipc_listen("tls:127.0.0.1:0", NULL), EPROTONOSUPPORT);
	CHECK_FAILS(ipc_connect("tls:127.0.0.1:1", NULL), EPROTONOSUPPORT);
}

/* A TLS-terminating relay (socat OPENSSL-LISTEN -> UNIX-CONNECT) carries
 * a libipc tls: connection to a unix: listener unchanged: messages both
 * ways, and the orderly end (EPIPE) on both sides. */
TEST(tls_socat_relay_to_unix)
{
	TEST_TIMEOUT(60);
	const char *ca = tls_or_skip();
	if (t_sh("command -v socat >/dev/null 2>&1") != 0)
		SKIP("socat not installed");
	char ubound[IPC_ADDR_MAX + 1];
	ipc_listener *ul = t_listen("unix", NULL, ubound);
	/* a free port for socat */
	int pfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in si = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof si;
	CHECK(bind(pfd, (struct sockaddr *)&si, sizeof si) == 0 && getsockname(pfd, (struct sockaddr *)&si, &sl) == 0);
	unsigned port = ntohs(si.sin_port);
	close(pfd);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		char lst[600], con[600];
		snprintf(lst, sizeof lst, "OPENSSL-LISTEN:%u,bind=127.0.0.1,reuseaddr,cert=%s/server.pem,key=%s/server.key,verify=0",
			 port, ca, ca);
		snprintf(con, sizeof con, "UNIX-CONNECT:%s", ubound + 5);
		execlp("socat", "socat", lst, con, (char *)NULL);
		_exit(127);
	}
	char taddr[64];
	snprintf(taddr, sizeof taddr, "tls:127.0.0.1:%u", port);
	struct ipc_options co = client_opts();
	co.connect_retry = 1; /* socat may not listen yet */
	ipc_conn *c = ipc_connect(taddr, &co);
	CHECKF(c != NULL, "connect through socat: %s", strerror(errno));
	CHECK(ipc_send(c, "through socat", 13, 0) == 13);
	ipc_conn *s = t_accept(ul);
	char b[64];
	CHECK(ipc_recv(s, b, sizeof b, 0) == 13 && !memcmp(b, "through socat", 13));
	static char big[300000];
	t_fill(big, sizeof big, 7);
	CHECK(ipc_send(s, big, sizeof big, 0) == (ssize_t)sizeof big);
	void *m = NULL;
	CHECK(ipc_recv_alloc(c, &m, 0) == (ssize_t)sizeof big && t_verify(m, sizeof big, 7));
	free(m);
	CHECK(ipc_close(s) == 0);
	CHECK_FAILS(ipc_recv(c, b, sizeof b, 0), EPIPE);
	CHECK(ipc_close(c) == 0);
	kill(pid, SIGTERM);
	t_wait(pid);
	ipc_listener_close(ul);
}

/* ---- remote use, every transport ------------------------------------- */

/* connect_retry: a client started before its listener waits for it (a new
 * connection each try) instead of failing at once. */
CTEST(connect_retry_waits_for_listener)
{
	char addr[IPC_ADDR_MAX + 1];
	snprintf(addr, sizeof addr, "%s", t_addr(scheme));
	if (t_is_inet(scheme)) { /* a port nobody listens on yet */
		int pfd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in si = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		socklen_t sl = sizeof si;
		CHECK(bind(pfd, (struct sockaddr *)&si, sizeof si) == 0);
		CHECK(getsockname(pfd, (struct sockaddr *)&si, &sl) == 0);
		snprintf(addr, sizeof addr, "%s:127.0.0.1:%u", scheme, ntohs(si.sin_port));
		close(pfd);
	}
	struct ipc_options o;
	ipc_options_init(&o);
	o.connect_timeout_ms = 300;
	errno = 0;
	CHECK(ipc_connect(addr, &o) == NULL);
	CHECKF(errno == ECONNREFUSED || errno == ENOENT, "without retry: %s", strerror(errno));
	o.connect_retry = 1; /* still nobody: fails after about the bound */
	int64_t t0 = t_now_ms();
	CHECK(ipc_connect(addr, &o) == NULL);
	int64_t dt = t_now_ms() - t0;
	CHECKF(errno == ECONNREFUSED || errno == ENOENT, "retry, nobody: %s", strerror(errno));
	CHECKF(dt >= 250 && dt < 2000, "retry for 300 ms took %lld ms", (long long)dt);
	/* the listener appears 300 ms later */
	int sp[2];
	CHECK(pipe(sp) == 0);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		t_sleep_ms(300);
		ipc_listener *l = ipc_listen(addr, NULL);
		if (!l)
			_exit(1);
		ipc_conn *s = ipc_accept(l, 0);
		char b[8];
		if (!s || ipc_recv(s, b, sizeof b, 0) != 5)
			_exit(2);
		ipc_send(s, "there", 5, 0);
		char x;
		if (read(sp[0], &x, 1) != 1) /* the parent got the reply */
			_exit(3);
		ipc_close(s);
		ipc_listener_close(l);
		_exit(0);
	}
	o.connect_timeout_ms = 10000;
	t0 = t_now_ms();
	ipc_conn *c = ipc_connect(addr, &o);
	CHECKF(c != NULL, "connect_retry: %s", strerror(errno));
	CHECK(ipc_send(c, "hello", 5, 0) == 5);
	char b[8];
	CHECK(ipc_recv(c, b, sizeof b, 0) == 5);
	CHECK(write(sp[1], "x", 1) == 1);
	printf("connected %lld ms after the first try\n", (long long)(t_now_ms() - t0));
	ipc_close(c);
	t_wait_ok(pid);
	close(sp[0]);
	close(sp[1]);
}

/* tcp and tls sockets carry the keep-alive and user-timeout options. */
TEST(remote_keepalive_options)
{
	const char *schemes[] = {"tcp", "tls"};
	for (int k = 0; k < 2; k++) {
		if (k == 1 && (strcmp(t_env("IPC_TLS"), "1") || !t_tls_dir()))
			break;
		struct ipc_options o;
		ipc_options_init(&o);
		CHECK(o.keepalive_idle_s == 30 && o.keepalive_interval_s == 5 && o.keepalive_count == 4 &&
		      o.user_timeout_ms == 60000);
		o.keepalive_idle_s = 7;
		o.keepalive_interval_s = 3;
		o.keepalive_count = 2;
		o.user_timeout_ms = 4500;
		ipc_conn *s, *c;
		t_pair(schemes[k], &o, &s, &c);
		for (int side = 0; side < 2; side++) {
			int fd = ipc_conn_fd(side ? c : s), v = 0, on = 0;
			socklen_t l = sizeof v;
			unsigned ut = 0;
			CHECK(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, &l) == 0 && on == 1);
			CHECK(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &l) == 0);
			CHECKF(v == 7, "%s: TCP_KEEPIDLE %d", schemes[k], v);
			CHECK(getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, &l) == 0 && v == 3);
			CHECK(getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, &l) == 0 && v == 2);
			l = sizeof ut;
			CHECK(getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, &l) == 0);
			CHECKF(ut == 4500, "%s: TCP_USER_TIMEOUT %u", schemes[k], ut);
		}
		ipc_close(c);
		ipc_close(s);
		o.keepalive_count = 0;
		CHECK_FAILS(ipc_listen("tcp:127.0.0.1:0", &o), EINVAL);
	}
}

#ifdef IPC_HAVE_TLS
#include <openssl/ssl.h>
#include <sys/resource.h>

static int64_t cpu_ms(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

/* A peer that sends part of a TLS record and stops: a receive waits in
 * poll (IPC_DONTWAIT returns EAGAIN at once, a timed one ETIMEDOUT
 * without burning the CPU); it once spun, taking a partial record in
 * OpenSSL's buffer for readable data (found by fuzz_tls_listener). */
TEST(tls_partial_record_does_not_spin)
{
	tls_or_skip();
	char bound[IPC_ADDR_MAX + 1];
	ipc_listener *l = t_listen("tls", NULL, bound);
	struct sockaddr_in si = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(strrchr(bound, ':') + 1))};
	inet_pton(AF_INET, "127.0.0.1", &si.sin_addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(connect(fd, (struct sockaddr *)&si, sizeof si) == 0);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) { /* a TLS client: handshake, our hello, 2 bytes of a record */
		SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
		SSL *ssl = SSL_new(ctx);
		static const unsigned char h[8] = {'L', 'I', 'P', 'C', 2, 0, 0, 0};
		if (!SSL_set_fd(ssl, fd) || SSL_connect(ssl) != 1 || SSL_write(ssl, h, sizeof h) != sizeof h ||
		    write(fd, "\x17\x03", 2) != 2)
			_exit(1);
		pause();
		_exit(0);
	}
	ipc_conn *s = t_accept(l);
	char b[16];
	int64_t t0 = t_now_ms();
	for (;;) { /* until the hello is in: then only the partial record is left */
		CHECK_FAILS(ipc_recv(s, b, sizeof b, IPC_DONTWAIT), EAGAIN);
		if (t_now_ms() - t0 > 300)
			break;
		t_sleep_ms(10);
	}
	CHECK(ipc_conn_set_timeouts(s, -1, 500) == 0);
	int64_t c0 = cpu_ms();
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), ETIMEDOUT);
	int64_t used = cpu_ms() - c0;
	CHECKF(used < 200, "a 500 ms receive used %lld ms of CPU", (long long)used);
	kill(pid, SIGKILL);
	t_wait(pid);
	close(fd);
	ipc_close(s);
	ipc_listener_close(l);
}
/* Garbage on the socket after the handshake (not TLS records): the
 * receive fails with EPROTO, explained, and the listener serves others. */
TEST(tls_garbage_after_handshake)
{
	char bound[IPC_ADDR_MAX + 1];
	struct ipc_options o;
	ipc_listener *l = tls_listener(&o, bound);
	struct sockaddr_in si = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(strrchr(bound, ':') + 1))};
	inet_pton(AF_INET, "127.0.0.1", &si.sin_addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(connect(fd, (struct sockaddr *)&si, sizeof si) == 0);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
		SSL *ssl = SSL_new(ctx);
		static const unsigned char m[] = {'L', 'I', 'P', 'C', 2, 0, 0, 0, 0, 0, 0, 1, 'a'};
		static const char junk[] = "\x17\x03\x03\x00\x20 this is not an encrypted record!";
		if (!SSL_set_fd(ssl, fd) || SSL_connect(ssl) != 1 || SSL_write(ssl, m, sizeof m) != sizeof m ||
		    write(fd, junk, sizeof junk) != (ssize_t)sizeof junk)
			_exit(1);
		pause();
		_exit(0);
	}
	ipc_conn *s = t_accept(l);
	char b[16];
	CHECK(ipc_recv(s, b, sizeof b, 0) == 1 && b[0] == 'a');
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), EPROTO);
	CHECKF(strstr(ipc_error_detail(), "tls:"), "detail: %s", ipc_error_detail());
	printf("garbage after the handshake: %s\n", ipc_error_detail());
	CHECK_FAILS(ipc_recv(s, b, sizeof b, 0), EPROTO);
	kill(pid, SIGKILL);
	t_wait(pid);
	close(fd);
	ipc_close(s);
	ipc_conn *c = ipc_connect(bound, &o);
	s = t_accept(l);
	CHECK(ipc_send(c, "next", 4, 0) == 4 && ipc_recv(s, b, sizeof b, 0) == 4);
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
}

/* A TLS 1.2 client asking to renegotiate is refused (the listener has
 * renegotiation off): the client learns it, the connection ends or goes
 * on cleanly, nothing hangs, and the listener serves the next client. */
TEST(tls_renegotiation_refused)
{
	char bound[IPC_ADDR_MAX + 1];
	struct ipc_options o;
	ipc_listener *l = tls_listener(&o, bound);
	struct sockaddr_in si = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(strrchr(bound, ':') + 1))};
	inet_pton(AF_INET, "127.0.0.1", &si.sin_addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(connect(fd, (struct sockaddr *)&si, sizeof si) == 0);
	int p[2];
	CHECK(pipe(p) == 0);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
		SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
		SSL *ssl = SSL_new(ctx);
		static const unsigned char m[] = {'L', 'I', 'P', 'C', 2, 0, 0, 0, 0, 0, 0, 1, 'a'};
		if (!SSL_set_fd(ssl, fd) || SSL_connect(ssl) != 1 || SSL_write(ssl, m, sizeof m) != sizeof m)
			_exit(1);
		char verdict = 'r'; /* refused */
		if (SSL_renegotiate(ssl) == 1 && SSL_do_handshake(ssl) == 1) {
			char b[64];
			SSL_read(ssl, b, sizeof b); /* the server's answer, if any */
			if (SSL_renegotiate_pending(ssl) == 0)
				verdict = 'a'; /* renegotiated */
		}
		if (write(p[1], &verdict, 1) != 1)
			_exit(2);
		_exit(0);
	}
	close(p[1]);
	ipc_conn *s = t_accept(l);
	char b[16];
	CHECK(ipc_recv(s, b, sizeof b, 0) == 1 && b[0] == 'a');
	errno = 0;
	ssize_t r = ipc_recv(s, b, sizeof b, 0); /* the renegotiation, then the end */
	CHECKF(r == -1 && (errno == EPROTO || errno == ECONNRESET || errno == ETIMEDOUT), "after a renegotiation: %zd %s",
	       r, strerror(errno));
	char verdict = 0;
	CHECK(read(p[0], &verdict, 1) == 1);
	CHECKF(verdict == 'r', "the listener renegotiated");
	t_wait_ok(pid);
	ipc_close(s);
	close(fd);
	close(p[0]);
	ipc_conn *c = ipc_connect(bound, &o); /* the listener still serves */
	s = t_accept(l);
	CHECK(ipc_send(c, "next", 4, 0) == 4 && ipc_recv(s, b, sizeof b, 0) == 4);
	ipc_close(c);
	ipc_close(s);
	ipc_listener_close(l);
}
#endif
