/* tls.c - tls:host:port: TLS 1.2/1.3 (OpenSSL 3) over a tcp socket.
 *
 * The bytes inside TLS are exactly ipc-wire(7): this file is one more
 * byte stream (struct ipc__bstream_ops) under the framing layer, frame.c.
 *
 * The SSL object is shared by both directions, so every SSL call runs
 * under ts->lock; no call waits with the lock held (the socket is always
 * non-blocking: read and writev never wait, frame.c waits through .wait).
 * Bytes go through our own BIO, send(MSG_NOSIGNAL) and recv(), so no
 * SIGPIPE can come from OpenSSL writing to a closed socket.
 *
 * Handshakes.  A client's connect returns once the tcp connection is up
 * and its ClientHello sent: the handshake finishes inside its first
 * calls, bounded by connect_timeout_ms (so connect never depends on the
 * peer calling accept, as with every transport).  A listener runs every
 * handshake non-blocking from accept/listener_ready, with at most
 * IPC__TLS_PENDING_MAX in flight (a flood evicts the oldest) and each
 * bounded by the listener's connect_timeout_ms; accept only ever returns
 * connections whose handshake (and client verification) succeeded.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "ipc_impl.h"

#define TLS_REC_MAX 16384       /* plaintext of one TLS record */
#define IPC__TLS_PENDING_MAX 128 /* handshakes in flight per listener */

/* ---- the stream --------------------------------------------------------- */

struct tls_stream {
	int fd;
	SSL *ssl;
	pthread_mutex_t lock; /* every SSL call and the fields below */
	int hs_done;
	int64_t hs_deadline;  /* client: when an unfinished handshake fails */
	int err;              /* sticky: the stream failed with this errno */
	int rd_wants_out;     /* the last SSL_read needs the socket writable */
	int wr_wants_in;      /* the last SSL_write needs the socket readable */
	unsigned char *pend;  /* plaintext of a record OpenSSL has committed */
	size_t pend_len;      /* but not yet written whole (see tls_writev) */
	unsigned char first[4]; /* the first bytes the peer sent */
	size_t nfirst;
	int news;             /* listener: the socket had events since the
	                         last handshake step */
	int half_rtt;         /* server without client certificates: may
	                         write before the client's Finished */
	unsigned char *stage; /* TLS_REC_MAX bytes, gathering small iovecs */
};

/* Our BIO: the socket, without SIGPIPE; remembers the peer's first bytes
 * (a plain libipc peer starts with "LIPC"). */
static int bio_write(BIO *b, const char *buf, int n)
{
	struct tls_stream *ts = BIO_get_data(b);
	ssize_t r;
	BIO_clear_retry_flags(b);
	do
		r = send(ts->fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_write(b);
	return (int)r;
}

static int bio_read(BIO *b, char *buf, int n)
{
	struct tls_stream *ts = BIO_get_data(b);
	ssize_t r;
	BIO_clear_retry_flags(b);
	do
		r = recv(ts->fd, buf, (size_t)n, MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_read(b);
	for (ssize_t i = 0; i < r && ts->nfirst < sizeof ts->first; i++)
		ts->first[ts->nfirst++] = (unsigned char)buf[i];
	return (int)r;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b, (void)num, (void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

/* The BIO method is made once (OpenSSL's own once-only init pattern):
 * read-only after, so no mutable global state is shared. */
static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static void bio_method_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "libipc socket");
	if (m && BIO_meth_set_write(m, bio_write) && BIO_meth_set_read(m, bio_read) &&
	    BIO_meth_set_ctrl(m, bio_ctrl) && BIO_meth_set_create(m, bio_create))
		bio_method = m;
}

/* ---- failures, explained ---------------------------------------------- */

/* Is memory short?  OpenSSL often reports a failed allocation as some
 * other error (a certificate "not for signing", a key "too small"), so a
 * failure is checked against a 1 MiB allocation before it is believed. */
static int memory_short(void)
{
	void *p = malloc((size_t)1 << 20);
	free(p);
	return p == NULL;
}

/* ENOMEM when OpenSSL's error queue says an allocation failed or memory
 * is short, else fallback; clears the queue. */
static int ssl_errno(int fallback)
{
	unsigned long e;
	int err = fallback;
	while ((e = ERR_get_error()) != 0)
		if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE)
			err = ENOMEM;
	return err != ENOMEM && memory_short() ? ENOMEM : err;
}

/* Why a handshake (or a later TLS operation) failed: an errno from the
 * documented set (ipc-tls(7)), with a sentence for ipc_error_detail(). */
static int tls_explain(struct tls_stream *ts, int sslerr, int sys_errno)
{
	long vr = SSL_get_verify_result(ts->ssl);
	unsigned long e = 0, q;
	int nomem = 0;
	char why[160] = "";
	while ((q = ERR_get_error()) != 0) {
		e = q;
		nomem |= ERR_GET_REASON(q) == ERR_R_MALLOC_FAILURE;
	}
	if (e)
		ERR_error_string_n(e, why, sizeof why);
	if (nomem || (e && memory_short()))
		return ENOMEM;
	if (ts->nfirst >= 4 && !memcmp(ts->first, "LIPC", 4)) {
		ipc__detail("tls: the peer speaks plain libipc (a tcp: endpoint), not tls:");
		return EPROTO;
	}
	if (!ts->hs_done && vr != X509_V_OK) {
		const char *vs = X509_verify_cert_error_string(vr);
		switch (vr) {
		case X509_V_ERR_CERT_HAS_EXPIRED:
		case X509_V_ERR_CERT_NOT_YET_VALID:
		case X509_V_ERR_CRL_HAS_EXPIRED:
			ipc__detail("tls: peer certificate not valid now: %s", vs);
			return EKEYEXPIRED;
		case X509_V_ERR_HOSTNAME_MISMATCH:
		case X509_V_ERR_IP_ADDRESS_MISMATCH:
			ipc__detail("tls: peer certificate is for another name: %s (see tls_server_name)", vs);
			return EKEYREJECTED;
		default:
			ipc__detail("tls: peer certificate not trusted: %s (see tls_ca_file)", vs);
			return EKEYREJECTED;
		}
	}
	if (sslerr == SSL_ERROR_SYSCALL || (sslerr == SSL_ERROR_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
		if (!ts->hs_done) {
			ipc__detail("tls: the peer closed the connection during the handshake%s",
				    ts->nfirst ? "" : " (is it a tls: listener? did it refuse our certificate?)");
			return ECONNRESET;
		}
		ipc__detail("tls: the peer ended the connection (%s)", strerror(sys_errno ? sys_errno : ECONNRESET));
		return sys_errno ? sys_errno : ECONNRESET;
	}
	if (ERR_GET_LIB(e) == ERR_LIB_SSL) {
		int reason = ERR_GET_REASON(e);
		switch (reason) {
		case SSL_R_WRONG_VERSION_NUMBER:
		case SSL_R_PACKET_LENGTH_TOO_LONG:
		case SSL_R_HTTP_REQUEST:
		case SSL_R_RECORD_LENGTH_MISMATCH:
			ipc__detail("tls: the peer does not speak TLS (%s)", why);
			return EPROTO;
		case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
		case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
		case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
		case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
		case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
		case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
			ipc__detail("tls: the peer refused our certificate or needs one (%s; see tls_cert_file)", why);
			return EKEYREJECTED;
		case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
			ipc__detail("tls: the peer says our certificate expired (%s)", why);
			return EKEYEXPIRED;
		default:
			break;
		}
	}
	if ((ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_PROTOCOL_IS_SHUTDOWN) ||
	    (ts->hs_done && (SSL_get_shutdown(ts->ssl) & SSL_RECEIVED_SHUTDOWN))) {
		/* the peer's close_notify came first: it closed, no protocol error */
		ipc__detail("tls: the peer closed the connection");
		return EPIPE;
	}
	ipc__detail("tls: %s", why[0] ? why : "protocol failure");
	return EPROTO;
}

/* Record a fatal failure (sticky).  Returns -1 with errno. */
static int tls_fail(struct tls_stream *ts, int err)
{
	if (!ts->err)
		ts->err = err;
	errno = ts->err;
	return -1;
}

/* The outcome of one SSL call that returned ok == 0, under the lock:
 * -1 with EAGAIN (retry once the socket allows; *wants_out set when it
 * needs the socket writable) or the sticky failure. */
static int tls_outcome(struct tls_stream *ts, int ret, int *wants_out)
{
	int sys = errno;
	int se = SSL_get_error(ts->ssl, ret);
	if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE) {
		*wants_out = se == SSL_ERROR_WANT_WRITE;
		errno = EAGAIN;
		return -1;
	}
	return tls_fail(ts, tls_explain(ts, se, sys));
}

/* ---- byte-stream ops -------------------------------------------------- */

static void tls_hs_check(struct tls_stream *ts)
{
	if (!ts->hs_done && SSL_is_init_finished(ts->ssl))
		ts->hs_done = 1;
}

static ssize_t tls_read(void *ctx, void *buf, size_t n, int64_t deadline)
{
	struct tls_stream *ts = ctx;
	size_t got = 0;
	(void)deadline; /* never waits: frame.c waits through .wait */
	pthread_mutex_lock(&ts->lock);
	if (ts->err) {
		pthread_mutex_unlock(&ts->lock);
		errno = ts->err;
		return -1;
	}
	ERR_clear_error();
	errno = 0;
	int ok = SSL_read_ex(ts->ssl, buf, n, &got);
	ssize_t rc = (ssize_t)got;
	if (ok) {
		ts->rd_wants_out = 0;
	} else {
		int se = SSL_get_error(ts->ssl, 0);
		unsigned long e = ERR_peek_error();
		if (se == SSL_ERROR_ZERO_RETURN) {
			rc = 0; /* close_notify: the end of the peer's stream */
		} else if (ts->hs_done && ((se == SSL_ERROR_SYSCALL && !e && !errno) ||
					   (se == SSL_ERROR_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING))) {
			ERR_clear_error();
			rc = 0; /* a tcp end without close_notify: frame.c decides */
		} else {
			rc = tls_outcome(ts, ok, &ts->rd_wants_out);
		}
	}
	tls_hs_check(ts);
	pthread_mutex_unlock(&ts->lock);
	return rc;
}

/* Is iov exactly our hello and the end-of-stream frame?  That is what a
 * connection closed before it carried any message still holds. */
static int only_hello_and_end(const struct iovec *iov, int cnt)
{
	unsigned char h[IPC__HELLO_LEN + IPC__FRAME_HDR];
	if (cnt != 1 || iov[0].iov_len != sizeof h)
		return 0;
	ipc__hello_encode(h, IPC__HELLO_OK);
	memset(h + IPC__HELLO_LEN, 0xff, IPC__FRAME_HDR); /* IPC__EOS_LEN */
	return memcmp(iov[0].iov_base, h, sizeof h) == 0;
}

/*
 * Write.  OpenSSL, once SSL_write has encrypted a record and sent part of
 * it, insists on being called again with the same bytes; those bytes are
 * committed.  So a record that could not leave whole is copied to pend and
 * reported accepted except its last byte: frame.c keeps that byte held,
 * which keeps it writing (and close lingering) until the record is out;
 * the call that finishes the record reports the byte.  Records are filled
 * up to TLS_REC_MAX (small iovecs staged, one record per message).
 */
static ssize_t tls_writev(void *ctx, const struct iovec *iov, int cnt, int64_t deadline)
{
	struct tls_stream *ts = ctx;
	size_t put = 0;
	ssize_t rc;
	(void)deadline;
	pthread_mutex_lock(&ts->lock);
	if (ts->err) {
		pthread_mutex_unlock(&ts->lock);
		errno = ts->err == ECONNRESET ? EPIPE : ts->err;
		return -1;
	}
	ERR_clear_error();
	int wants_out = 0;
	if (ts->pend_len) {
		int ok = ts->half_rtt && !SSL_is_init_finished(ts->ssl)
				 ? SSL_write_early_data(ts->ssl, ts->pend, ts->pend_len, &put)
				 : SSL_write_ex(ts->ssl, ts->pend, ts->pend_len, &put);
		if (ok) {
			ts->pend_len = 0;
			rc = 1;
		} else {
			rc = tls_outcome(ts, 0, &wants_out);
		}
		pthread_mutex_unlock(&ts->lock);
		if (rc < 0 && errno == ECONNRESET)
			errno = EPIPE;
		return rc;
	}
	int half = ts->half_rtt && !SSL_is_init_finished(ts->ssl);
	if (!half && !SSL_is_init_finished(ts->ssl)) { /* no data before the peer is verified */
		int r = SSL_do_handshake(ts->ssl);
		if (r != 1) {
			rc = tls_outcome(ts, r, &wants_out);
			ts->wr_wants_in = !wants_out;
			if (rc < 0 && errno == EAGAIN && ts->nfirst == 0 && only_hello_and_end(iov, cnt)) {
				/* closed before the listener even answered, having
				 * sent nothing: nobody saw this connection (the
				 * listener drops it), there is nothing to linger for */
				rc = (ssize_t)(IPC__HELLO_LEN + IPC__FRAME_HDR);
			}
			pthread_mutex_unlock(&ts->lock);
			if (rc < 0 && errno == ECONNRESET)
				errno = EPIPE;
			return rc;
		}
		tls_hs_check(ts);
	}
	size_t total = 0;
	for (int i = 0; i < cnt; i++)
		total += iov[i].iov_len;
	size_t len = total < TLS_REC_MAX ? total : TLS_REC_MAX;
	if (total > len && total - len < 2)
		len -= 2; /* never leave a one-byte rest (see above) */
	const unsigned char *src = iov[0].iov_base;
	if (iov[0].iov_len < len) { /* gather into one record */
		size_t off = 0;
		if (!ts->stage && !(ts->stage = malloc(TLS_REC_MAX))) {
			rc = tls_fail(ts, ENOMEM);
			pthread_mutex_unlock(&ts->lock);
			return rc;
		}
		for (int i = 0; i < cnt && off < len; i++) {
			size_t k = iov[i].iov_len < len - off ? iov[i].iov_len : len - off;
			if (k) /* an empty iovec may have no base */
				memcpy(ts->stage + off, iov[i].iov_base, k);
			off += k;
		}
		src = ts->stage;
	}
	/* a server that asks no certificate writes before the client's
	 * Finished ("0.5-RTT" data), as a tcp server writes at once */
	if (half ? SSL_write_early_data(ts->ssl, src, len, &put) : SSL_write_ex(ts->ssl, src, len, &put)) {
		rc = (ssize_t)put;
		ts->wr_wants_in = 0;
	} else {
		rc = tls_outcome(ts, 0, &wants_out);
		ts->wr_wants_in = !wants_out;
		if (rc < 0 && errno == EAGAIN && wants_out && SSL_is_init_finished(ts->ssl)) {
			/* the record is committed: keep it, report all but a byte */
			if (!ts->pend && !(ts->pend = malloc(TLS_REC_MAX))) {
				rc = tls_fail(ts, ENOMEM);
			} else {
				if (src != ts->pend)
					memmove(ts->pend, src, len);
				ts->pend_len = len;
				ts->wr_wants_in = 0;
				if (len > 1)
					rc = (ssize_t)len - 1;
			}
		}
	}
	tls_hs_check(ts);
	pthread_mutex_unlock(&ts->lock);
	if (rc < 0 && errno == ECONNRESET)
		errno = EPIPE;
	return rc;
}

/* poll(2) events that let dirs progress (a TLS read may need POLLOUT). */
static short tls_events(struct tls_stream *ts, int dirs)
{
	short ev = 0;
	if (dirs & IPC__BS_READ)
		ev |= ts->rd_wants_out ? POLLOUT : POLLIN;
	if (dirs & IPC__BS_WRITE)
		ev |= ts->wr_wants_in && !ts->pend_len ? POLLIN : POLLOUT;
	return ev;
}

static short tls_poll_events(void *ctx, int dirs)
{
	struct tls_stream *ts = ctx;
	pthread_mutex_lock(&ts->lock);
	short ev = tls_events(ts, dirs);
	pthread_mutex_unlock(&ts->lock);
	return ev;
}

static int tls_wait(void *ctx, int dirs, int64_t deadline)
{
	struct tls_stream *ts = ctx;
	pthread_mutex_lock(&ts->lock);
	if (ts->err || ((dirs & IPC__BS_READ) && SSL_pending(ts->ssl) > 0)) {
		pthread_mutex_unlock(&ts->lock);
		return dirs; /* the next call reports it / reads it (SSL_pending: decrypted bytes; a partial record needs the socket) */
	}
	short ev = tls_events(ts, dirs);
	int64_t hs_dl = ts->hs_done ? IPC__FOREVER : ts->hs_deadline;
	pthread_mutex_unlock(&ts->lock);
	int64_t dl = deadline;
	if (hs_dl != IPC__FOREVER && (dl == IPC__FOREVER || (dl != IPC__NOW && hs_dl < dl)))
		dl = hs_dl;
	int r = ipc__wait_fd(ts->fd, ev, dl);
	if (r < 0) {
		if (errno == ETIMEDOUT && dl != deadline) { /* the handshake's bound */
			pthread_mutex_lock(&ts->lock);
			if (!ts->hs_done) {
				ipc__detail("tls: the handshake did not finish within connect_timeout_ms");
				tls_fail(ts, ECONNABORTED);
			}
			pthread_mutex_unlock(&ts->lock);
			return dirs;
		}
		return -1;
	}
	if (r & (POLLERR | POLLHUP | POLLNVAL))
		return dirs;
	int ready = 0;
	pthread_mutex_lock(&ts->lock);
	if ((dirs & IPC__BS_READ) && (r & (ts->rd_wants_out ? POLLOUT : POLLIN)))
		ready |= IPC__BS_READ;
	if ((dirs & IPC__BS_WRITE) && (r & (ts->wr_wants_in && !ts->pend_len ? POLLIN : POLLOUT)))
		ready |= IPC__BS_WRITE;
	pthread_mutex_unlock(&ts->lock);
	return ready ? ready : dirs; /* a stale want: the next call looks again */
}

static int tls_peer_ended(void *ctx)
{
	struct tls_stream *ts = ctx;
	struct pollfd p = {.fd = ts->fd, .events = POLLRDHUP};
	return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static int tls_shutdown_write(void *ctx)
{
	struct tls_stream *ts = ctx;
	pthread_mutex_lock(&ts->lock);
	if (!ts->err && ts->hs_done && !ts->pend_len) {
		ERR_clear_error();
		SSL_shutdown(ts->ssl); /* our close_notify; the peer's is not awaited */
	}
	pthread_mutex_unlock(&ts->lock);
	return shutdown(ts->fd, SHUT_WR);
}

static int tls_peer_cred(void *ctx, struct ipc_cred *cred)
{
	(void)ctx, (void)cred;
	errno = EOPNOTSUPP;
	return -1;
}

static int tls_fd(void *ctx)
{
	return ((struct tls_stream *)ctx)->fd;
}

static void tls_stream_free(struct tls_stream *ts)
{
	if (!ts)
		return;
	SSL_free(ts->ssl);
	ipc__close_fd(ts->fd);
	pthread_mutex_destroy(&ts->lock);
	free(ts->pend);
	free(ts->stage);
	free(ts);
}

static void tls_close(void *ctx)
{
	tls_stream_free(ctx);
}

/* Over TCP: records reaching our closed socket reset the connection and
 * destroy what the peer has not read (frame.c waits for its hello). */
static int tls_lossy_close(void *ctx)
{
	(void)ctx;
	return 1;
}

static const struct ipc__bstream_ops tls_stream_ops = {
	.read = tls_read,
	.writev = tls_writev,
	.wait = tls_wait,
	.poll_events = tls_poll_events,
	.peer_ended = tls_peer_ended,
	.lossy_close = tls_lossy_close,
	.shutdown_write = tls_shutdown_write,
	.peer_cred = tls_peer_cred,
	.fd = tls_fd,
	.close = tls_close,
};

/* A stream over connected socket fd (non-blocking) with a new SSL of
 * ctx.  Takes fd (closed on failure). */
static struct tls_stream *tls_stream_new(int fd, SSL_CTX *ctx)
{
	struct tls_stream *ts = calloc(1, sizeof *ts);
	BIO *bio = NULL;
	pthread_once(&bio_once, bio_method_init);
	if (!ts || !bio_method || !(ts->ssl = SSL_new(ctx)) || !(bio = BIO_new(bio_method))) {
		if (ts)
			SSL_free(ts->ssl);
		free(ts);
		ipc__close_fd(fd);
		errno = ENOMEM;
		return NULL;
	}
	ts->fd = fd;
	ts->hs_deadline = IPC__FOREVER;
	pthread_mutex_init(&ts->lock, NULL);
	BIO_set_data(bio, ts);
	SSL_set_bio(ts->ssl, bio, bio);
	return ts;
}

/* ---- contexts: certificates, trust, versions -------------------------- */

/* errno for a file option that cannot be used, with the reason. */
static int ctx_file_error(const char *what, const char *path)
{
	int e = EINVAL;
	FILE *f = fopen(path, "re");
	if (!f)
		e = errno; /* ENOENT, EACCES, EMFILE... */
	else
		fclose(f);
	char why[160] = "";
	unsigned long le = ERR_peek_last_error();
	if (le)
		ERR_error_string_n(le, why, sizeof why);
	e = ssl_errno(e);
	ipc__detail("tls: cannot use %s %s: %s", what, path, e != EINVAL ? strerror(e) : why);
	return e;
}

static int ctx_trust(SSL_CTX *ctx, const struct ipc_options *o)
{
	if (o->tls_ca_file || o->tls_ca_dir) {
		if (SSL_CTX_load_verify_locations(ctx, o->tls_ca_file, o->tls_ca_dir) != 1) {
			errno = ctx_file_error("tls_ca_file/tls_ca_dir",
					       o->tls_ca_file ? o->tls_ca_file : o->tls_ca_dir);
			return -1;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		ipc__detail("tls: the system's trusted CAs could not be loaded (set tls_ca_file)");
		errno = ssl_errno(EINVAL);
		return -1;
	}
	return 0;
}

/* A listener's certificate and key: the options, else IPC_TLS_CERT_FILE
 * and IPC_TLS_KEY_FILE from the environment (ipc-tls(7)). */
static const char *opt_or_env(const char *opt, const char *env)
{
	return opt ? opt : secure_getenv(env);
}

static int ctx_identity(SSL_CTX *ctx, const char *cert, const char *key)
{
	if (!key)
		key = cert;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		errno = ctx_file_error("tls_cert_file", cert);
		return -1;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH && !memory_short()) {
			ERR_clear_error();
			ipc__detail("tls: tls_key_file %s is not the key of tls_cert_file %s", key, cert);
			errno = EINVAL;
			return -1;
		}
		errno = ctx_file_error("tls_key_file", key);
		return -1;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		if (ssl_errno(EINVAL) == ENOMEM) {
			errno = ENOMEM;
			return -1;
		}
		ipc__detail("tls: tls_key_file %s is not the key of tls_cert_file %s", key, cert);
		errno = EINVAL;
		return -1;
	}
	return 0;
}

static SSL_CTX *ctx_new(const struct ipc_options *o, int server)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!ctx) {
		ERR_clear_error();
		errno = ENOMEM;
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, o->tls_min_version) != 1) {
		errno = ssl_errno(EINVAL);
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	int verify = o->tls_verify != IPC_TLS_VERIFY_NONE && (!server || o->tls_verify == IPC_TLS_VERIFY_REQUIRE);
	/* a listener's identity may come from the environment, a client's never */
	const char *cert = server ? opt_or_env(o->tls_cert_file, "IPC_TLS_CERT_FILE") : o->tls_cert_file;
	const char *key = o->tls_cert_file || !server ? o->tls_key_file : secure_getenv("IPC_TLS_KEY_FILE");
	if (server && !cert) {
		ipc__detail("tls: a listener needs tls_cert_file (and tls_key_file)");
		errno = EINVAL;
		goto fail;
	}
	if (cert && ctx_identity(ctx, cert, key) < 0)
		goto fail;
	if (verify) {
		if (ctx_trust(ctx, o) < 0)
			goto fail;
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
		if (server && o->tls_ca_file) {
			STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->tls_ca_file);
			if (names)
				SSL_CTX_set_client_CA_list(ctx, names);
			ERR_clear_error();
		}
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* ---- client ------------------------------------------------------------- */

static int is_ip_literal(const char *host)
{
	unsigned char a[16];
	return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* Server name checks and SNI for the client's SSL.  0 or -1. */
static int client_names(SSL *ssl, const char *host, int verify)
{
	if (!is_ip_literal(host) && SSL_set_tlsext_host_name(ssl, host) != 1)
		return -1;
	if (!verify)
		return 0;
	X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
	X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (is_ip_literal(host))
		return X509_VERIFY_PARAM_set1_ip_asc(vp, host) == 1 ? 0 : -1;
	return X509_VERIFY_PARAM_set1_host(vp, host, 0) == 1 ? 0 : -1;
}

static struct ipc_conn *tls_connect(const char *name, const struct ipc_options *o, int64_t deadline)
{
	char host[NI_MAXHOST];
	unsigned port;
	if (ipc__split_hostport(name, host, sizeof host, &port) < 0)
		return NULL;
	const char *sni = o->tls_server_name ? o->tls_server_name : host;
	if (!*sni) {
		errno = EINVAL;
		return NULL;
	}
	if (strlen(sni) > 253 && !o->tls_server_name) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	SSL_CTX *ctx = ctx_new(o, 0);
	if (!ctx)
		return NULL;
	int fd = ipc__tcp_connect_fd(name, deadline);
	if (fd < 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	ipc__tcp_tune(fd, o);
	struct tls_stream *ts = tls_stream_new(fd, ctx);
	SSL_CTX_free(ctx); /* the SSL keeps its own reference */
	if (!ts)
		return NULL;
	if (client_names(ts->ssl, sni, o->tls_verify != IPC_TLS_VERIFY_NONE) < 0) {
		int e = ssl_errno(EINVAL);
		tls_stream_free(ts);
		errno = e;
		return NULL;
	}
	SSL_set_connect_state(ts->ssl);
	ts->hs_deadline = deadline;
	/* send the ClientHello now; the rest happens in the first calls */
	ERR_clear_error();
	int r = SSL_do_handshake(ts->ssl);
	if (r <= 0) {
		int ignored;
		if (tls_outcome(ts, r, &ignored) < 0 && errno != EAGAIN) {
			tls_stream_free(ts);
			return NULL;
		}
		ts->rd_wants_out = ts->wr_wants_in = 0;
	}
	tls_hs_check(ts);
	return ipc__stream_new(&tls_stream_ops, ts, o);
}

/* ---- listener ------------------------------------------------------------ */

struct tls_pending {
	struct tls_stream *ts;
	int64_t deadline;
};

struct tls_listener {
	struct ipc_listener base;
	int fd, epfd;
	SSL_CTX *ctx;
	int npend, nready;
	struct tls_pending pend[IPC__TLS_PENDING_MAX];   /* handshakes in flight */
	struct tls_stream *ready[IPC__TLS_PENDING_MAX];  /* finished: accept's */
	char addr[IPC_ADDR_MAX + 1];
};

/*
 * When accept returns a connection.  The client, too, completes its
 * handshake only in its own calls, and a program may connect and then
 * accept in one thread; so a listener that asks no client certificate
 * hands a connection to accept once the client's hello was good and our
 * whole answer is sent (the client's Finished is processed by the
 * connection's first receive, bounded by the listener's
 * connect_timeout_ms), and such a connection may write at once (TLS 1.3
 * "0.5-RTT" data: the client is anonymous anyway).  A listener that
 * requires client certificates (mutual TLS) returns only connections
 * whose handshake is complete and whose client is verified.
 */
enum hs_step {
	HS_READY, /* finished, or waiting for the client's last flight */
	HS_AGAIN, /* waiting for the client's hello, or sending our answer */
	HS_FAIL,  /* garbage, a refused certificate, a peer gone: drop */
};

static enum hs_step hs_step(struct tls_stream *ts)
{
	ERR_clear_error();
	int r;
	if (ts->half_rtt) { /* processes the hello and sends our answer */
		unsigned char b;
		size_t n;
		r = SSL_read_early_data(ts->ssl, &b, 1, &n);
		if (r == SSL_READ_EARLY_DATA_FINISH)
			return HS_READY;
		if (r == SSL_READ_EARLY_DATA_SUCCESS)
			return HS_FAIL; /* early data is never accepted: cannot be */
		r = 0;
	} else {
		r = SSL_do_handshake(ts->ssl);
	}
	tls_hs_check(ts);
	if (r == 1)
		return HS_READY;
	int se = SSL_get_error(ts->ssl, r);
	ERR_clear_error();
	if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE)
		return HS_AGAIN;
	return HS_FAIL;
}

/* Drop a refused or late handshake: our alert (if any) is sent; end our
 * side and discard what the client sent, so that the close is a FIN the
 * client reads after the alert, not a reset that could destroy it. */
static void tl_abandon(struct tls_listener *l, struct tls_stream *ts)
{
	unsigned char junk[4096];
	/* out of the epoll set first: a forked child may hold a copy of the
	 * socket, and then closing ours would not remove it */
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, ts->fd, NULL);
	shutdown(ts->fd, SHUT_WR);
	for (int k = 0; k < 16 && recv(ts->fd, junk, sizeof junk, MSG_DONTWAIT) > 0; k++)
		;
	tls_stream_free(ts); /* closing removes it from the epoll set */
}

static void tl_drop(struct tls_listener *l, int i)
{
	tl_abandon(l, l->pend[i].ts);
	memmove(l->pend + i, l->pend + i + 1, sizeof l->pend[0] * (size_t)(l->npend - i - 1));
	l->npend--;
}

static void tl_ready(struct tls_listener *l, struct tls_stream *ts)
{
	l->ready[l->nready++] = ts;
}

/* Start the handshake of a freshly accepted socket. */
static void tl_place(struct tls_listener *l, int fd)
{
	ipc__tcp_tune(fd, &l->base.opt);
	struct tls_stream *ts = tls_stream_new(fd, l->ctx);
	if (!ts)
		return;
	SSL_set_accept_state(ts->ssl);
	ts->half_rtt = !(SSL_CTX_get_verify_mode(l->ctx) & SSL_VERIFY_PEER);
	int64_t dl = ipc__deadline(l->base.opt.connect_timeout_ms);
	ts->hs_deadline = dl == IPC__NOW ? IPC__FOREVER : dl;
	switch (hs_step(ts)) {
	case HS_READY:
		tl_ready(l, ts);
		return;
	case HS_FAIL:
		tl_abandon(l, ts);
		return;
	case HS_AGAIN:
		break;
	}
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = ts};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		tls_stream_free(ts);
		return;
	}
	l->pend[l->npend++] = (struct tls_pending){ts, ts->hs_deadline};
}

static int tl_accept_all(struct tls_listener *l)
{
	while (l->nready < IPC__TLS_PENDING_MAX) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd >= 0) {
			if (l->npend + l->nready >= IPC__TLS_PENDING_MAX)
				tl_drop(l, 0); /* a flood: the oldest handshake goes */
			tl_place(l, fd);
			continue;
		}
		if (ipc__accept_transient(errno))
			continue;
		return errno == EAGAIN ? 0 : -1;
	}
	return 0;
}

/* Step the handshakes that have news; drop the failed and the late. */
static void tl_scan(struct tls_listener *l)
{
	struct epoll_event evs[64];
	int n;
	while ((n = epoll_wait(l->epfd, evs, 64, 0)) > 0) {
		for (int k = 0; k < n; k++)
			if (evs[k].data.ptr)
				((struct tls_stream *)evs[k].data.ptr)->news = 1;
		if (n < 64)
			break;
	}
	int64_t now = l->npend ? ipc__now() : 0;
	for (int i = 0; i < l->npend;) {
		struct tls_stream *ts = l->pend[i].ts;
		int news = ts->news;
		ts->news = 0;
		if (!news) {
			int64_t dl = l->pend[i].deadline;
			if (dl != IPC__FOREVER && now >= dl)
				tl_drop(l, i); /* a client that stopped mid-handshake */
			else
				i++;
			continue;
		}
		enum hs_step st = hs_step(ts);
		if (st == HS_AGAIN) {
			i++;
			continue;
		}
		if (st == HS_READY) {
			epoll_ctl(l->epfd, EPOLL_CTL_DEL, ts->fd, NULL);
			tl_ready(l, ts);
			memmove(l->pend + i, l->pend + i + 1, sizeof l->pend[0] * (size_t)(l->npend - i - 1));
			l->npend--;
		} else {
			tl_drop(l, i);
		}
	}
}

static int tl_pump(struct tls_listener *l)
{
	int r = tl_accept_all(l);
	tl_scan(l);
	return l->nready ? 0 : r;
}

static struct tls_stream *tl_take(struct tls_listener *l)
{
	struct tls_stream *ts = l->ready[0];
	memmove(l->ready, l->ready + 1, sizeof l->ready[0] * (size_t)--l->nready);
	return ts;
}

static struct ipc_conn *tls_accept(struct ipc_listener *base, int64_t deadline)
{
	struct tls_listener *l = (struct tls_listener *)base;
	for (;;) {
		if (tl_pump(l) < 0)
			return NULL;
		if (l->nready)
			return ipc__stream_new(&tls_stream_ops, tl_take(l), &base->opt);
		/* wake for news, or in time to drop a late handshake */
		int64_t dl = deadline;
		for (int i = 0; i < l->npend; i++)
			if (l->pend[i].deadline != IPC__FOREVER && (dl == IPC__FOREVER || l->pend[i].deadline < dl))
				dl = l->pend[i].deadline;
		if (ipc__wait_fd(l->epfd, POLLIN, dl) < 0 && (dl == deadline || errno != ETIMEDOUT))
			return NULL;
	}
}

static int tls_listener_ready(struct ipc_listener *base, int events, short *pollev)
{
	struct tls_listener *l = (struct tls_listener *)base;
	*pollev = 0;
	if (!(events & IPC_POLLIN))
		return 0;
	if (tl_pump(l) < 0)
		return IPC_POLLIN | IPC_POLLERR;
	if (l->nready)
		return IPC_POLLIN;
	*pollev = POLLIN;
	return 0;
}

static int tls_listener_addr(const struct ipc_listener *base, char *buf, size_t len)
{
	return ipc__format(buf, len, "%s", ((const struct tls_listener *)base)->addr);
}

static int tls_listener_fd(const struct ipc_listener *base)
{
	return ((const struct tls_listener *)base)->epfd;
}

static void tls_listener_close(struct ipc_listener *base)
{
	struct tls_listener *l = (struct tls_listener *)base;
	for (int i = 0; i < l->npend; i++)
		tls_stream_free(l->pend[i].ts);
	for (int i = 0; i < l->nready; i++)
		tls_stream_free(l->ready[i]);
	ipc__close_fd(l->epfd);
	ipc__close_fd(l->fd);
	SSL_CTX_free(l->ctx);
	free(l);
}

static struct ipc_listener *tls_listen(const char *name, const struct ipc_options *o)
{
	struct tls_listener *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->fd = l->epfd = -1;
	l->base.opt = *o; /* tl_place reads it before the core sets it */
	if (!(l->ctx = ctx_new(o, 1)))
		goto fail;
	if ((l->fd = ipc__tcp_listen_fd(name, "tls", l->addr, sizeof l->addr)) < 0)
		goto fail;
	if ((l->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
		goto fail;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->fd, &ev) < 0)
		goto fail;
	return &l->base;
fail:
	{
		int e = errno;
		tls_listener_close(&l->base);
		errno = e;
	}
	return NULL;
}

/* ---- the peer's certificate --------------------------------------------- */

static int san_append(char *buf, size_t len, size_t *at, const char *kind, const char *v, size_t vl)
{
	int n = snprintf(buf + *at, len - *at, "%s%s:%.*s", *at ? "," : "", kind, (int)vl, v);
	if (n < 0 || (size_t)n >= len - *at) {
		errno = ENOSPC;
		return -1;
	}
	*at += (size_t)n;
	return 0;
}

static int cert_sans(X509 *x, char *buf, size_t len)
{
	GENERAL_NAMES *gns = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	size_t at = 0;
	int rc = 0;
	if (len)
		buf[0] = '\0';
	for (int i = 0; gns && i < sk_GENERAL_NAME_num(gns) && rc == 0; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gns, i);
		const ASN1_STRING *s = NULL;
		const char *kind = NULL;
		char ip[INET6_ADDRSTRLEN];
		switch (g->type) {
		case GEN_DNS:
			kind = "DNS", s = g->d.dNSName;
			break;
		case GEN_EMAIL:
			kind = "email", s = g->d.rfc822Name;
			break;
		case GEN_URI:
			kind = "URI", s = g->d.uniformResourceIdentifier;
			break;
		case GEN_IPADD:
			if (g->d.iPAddress->length == 4 || g->d.iPAddress->length == 16) {
				inet_ntop(g->d.iPAddress->length == 4 ? AF_INET : AF_INET6, g->d.iPAddress->data, ip,
					  sizeof ip);
				rc = san_append(buf, len, &at, "IP", ip, strlen(ip));
			}
			continue;
		default:
			continue;
		}
		rc = san_append(buf, len, &at, kind, (const char *)ASN1_STRING_get0_data(s),
				(size_t)ASN1_STRING_length(s));
	}
	GENERAL_NAMES_free(gns);
	if (rc == 0 && at == 0) {
		errno = ENOENT;
		return -1;
	}
	return rc < 0 ? -1 : (int)at;
}

static int cert_subject(X509 *x, char *buf, size_t len)
{
	BIO *m = BIO_new(BIO_s_mem());
	char *p;
	if (!m) {
		errno = ENOMEM;
		return -1;
	}
	X509_NAME_print_ex(m, X509_get_subject_name(x), 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
	long n = BIO_get_mem_data(m, &p);
	int rc = ipc__format(buf, len, "%.*s", (int)n, p);
	BIO_free(m);
	return rc;
}

static int tls_peer_cert(const struct ipc_conn *c, int what, char *buf, size_t len)
{
	struct tls_stream *ts = ipc__stream_ctx(c);
	int rc;
	pthread_mutex_lock(&ts->lock);
	X509 *x = ts->hs_done ? SSL_get1_peer_certificate(ts->ssl) : NULL;
	pthread_mutex_unlock(&ts->lock);
	if (!x) {
		errno = ts->hs_done ? ENOENT : ENOTCONN;
		return -1;
	}
	rc = what == IPC_CERT_SUBJECT ? cert_subject(x, buf, len) : cert_sans(x, buf, len);
	X509_free(x);
	return rc;
}

const struct ipc__transport ipc__tls_transport = {
	.scheme = "tls",
	.listen = tls_listen,
	.connect = tls_connect,
	.accept = tls_accept,
	.listener_addr = tls_listener_addr,
	.listener_fd = tls_listener_fd,
	.listener_ready = tls_listener_ready,
	.listener_close = tls_listener_close,
	.peer_cert = tls_peer_cert,
	IPC__STREAM_CONN_SLOTS,
};
