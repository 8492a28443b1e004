/* fuzz_tls_listener.c - libFuzzer target: a tls: listener fed arbitrary
 * bytes by a tcp client, as a hostile peer would send before, during or
 * instead of a TLS handshake.  Every input is one new connection to one
 * listener (made once, with a certificate made at start-up by the OpenSSL
 * API in a temporary directory: no file of the tree or the system is
 * needed).  The listener is pumped (listener_ready, accept) until it has
 * answered or dropped the connection; anything it accepts is read until
 * an error.  The first input byte picks the variant: bit 0 sends a real
 * ClientHello first (made by an OpenSSL client over memory BIOs), so the
 * bytes that follow reach the states after it; bit 1 leaves the tcp
 * connection open instead of shutting it down after the bytes. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "ipc_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ipc_listener *listener;
static struct sockaddr_in where;
static unsigned char hello[4096];
static size_t hello_len;

/* A self-signed P-256 certificate for localhost, written to dir. */
static void make_cert(const char *dir, char *cert, char *key)
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	if (!pk || !x)
		abort();
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, pk);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, n);
	if (!X509_sign(x, pk, EVP_sha256()))
		abort();
	sprintf(cert, "%s/cert.pem", dir);
	sprintf(key, "%s/key.pem", dir);
	FILE *f = fopen(cert, "w"), *g = fopen(key, "w");
	if (!f || !g || !PEM_write_X509(f, x) || !PEM_write_PrivateKey(g, pk, NULL, NULL, 0, NULL, NULL))
		abort();
	fclose(f);
	fclose(g);
	X509_free(x);
	EVP_PKEY_free(pk);
}

/* The bytes of a real ClientHello, from a client over memory BIOs. */
static void make_hello(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = SSL_new(ctx);
	BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
	SSL_set_bio(ssl, in, out);
	SSL_set_tlsext_host_name(ssl, "localhost");
	SSL_connect(ssl); /* WANT_READ: the hello is in out */
	int n = BIO_read(out, hello, sizeof hello);
	if (n <= 0)
		abort();
	hello_len = (size_t)n;
	SSL_free(ssl);
	SSL_CTX_free(ctx);
}

static void setup(void)
{
	char dir[] = "/tmp/fuzz-tls.XXXXXX", cert[64], key[64];
	if (!mkdtemp(dir))
		abort();
	make_cert(dir, cert, key);
	make_hello();
	struct ipc_options o;
	ipc_options_init(&o);
	o.tls_cert_file = cert;
	o.tls_key_file = key;
	o.connect_timeout_ms = 2000;
	listener = ipc_listen("tls:127.0.0.1:0", &o);
	unlink(cert);
	unlink(key);
	rmdir(dir);
	char addr[IPC_ADDR_MAX + 1];
	if (!listener || ipc_listener_addr(listener, addr, sizeof addr) < 0)
		abort();
	where.sin_family = AF_INET;
	where.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
	inet_pton(AF_INET, "127.0.0.1", &where.sin_addr);
}

static void put_all(int fd, const void *p, size_t n)
{
	const char *b = p;
	while (n) {
		ssize_t r = send(fd, b, n, MSG_NOSIGNAL);
		if (r <= 0)
			return; /* the listener dropped us: fine */
		b += r;
		n -= (size_t)r;
	}
}

/* Pump the listener; read out anything it accepts. */
static void pump(void)
{
	short pev;
	if (ipc_listener_ready(listener, IPC_POLLIN, &pev) < 0)
		abort();
	ipc_conn *c;
	while ((c = ipc_accept(listener, IPC_DONTWAIT)) != NULL) {
		char buf[256];
		for (int i = 0; i < 64 && ipc_recv(c, buf, sizeof buf, IPC_DONTWAIT) >= 0; i++)
			;
		ipc_close(c);
	}
	if (errno != EAGAIN && errno != ETIMEDOUT)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!listener)
		setup();
	if (size == 0)
		return 0;
	unsigned mode = data[0];
	data++;
	size--;
	if (size > 60000)
		size = 60000; /* stays under the socket buffer */
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&where, sizeof where) < 0)
		abort();
	if (mode & 1)
		put_all(fd, hello, hello_len);
	put_all(fd, data, size);
	if (!(mode & 2))
		shutdown(fd, SHUT_WR);
	/* until the listener answered, dropped us, or 20 ms passed */
	for (int i = 0; i < 20; i++) {
		pump();
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 0) == 1) {
			pump();
			break;
		}
		struct pollfd lp = {.fd = ipc_listener_fd(listener), .events = POLLIN};
		poll(&lp, 1, 1);
	}
	close(fd);
	pump();
	return 0;
}
