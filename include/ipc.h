/*
 * ipc.h - libipc: one message API over unix, tcp, shm and mq transports.
 *
 * An address string chooses the transport:
 *
 *   unix:/path/to/sock    Unix domain stream socket at a file path
 *   unix:@name            Linux abstract-namespace socket (no file)
 *   tcp:host:port         TCP over IPv4/IPv6; host may be a name, "*" or
 *   tcp:[v6addr]:port     empty (listen on all); port 0 on listen = any
 *   tls:host:port         TCP with TLS 1.2/1.3 (when built with OpenSSL)
 *   shm:name              shared-memory rings between local processes
 *   mq:/name              POSIX message queues between local processes
 *
 * A connection carries whole messages, in order, in both directions.  Every
 * transport shows the same behaviour: framing, limits, blocking, timeouts,
 * backpressure, end-of-stream and errors are identical (see ipc(7)).
 *
 * ERROR CONVENTION (every function):
 *   - functions returning a pointer return NULL and set errno on failure;
 *   - functions returning int or ssize_t return -1 and set errno;
 *   - no function ever raises SIGPIPE or returns EINTR from a blocking wait.
 *   Receive reports end-of-stream (peer closed in order, every message it
 *   sent already delivered) as -1 with errno EPIPE; a peer that died or
 *   broke the connection gives ECONNRESET; a peer that violates the wire
 *   protocol gives EPROTO.  These errors are sticky for that direction.
 *
 * THREADS: one thread may send while another receives on the same
 * connection.  Anything else on one handle (two concurrent senders, close
 * while another thread uses the handle) must be serialised by the caller.
 * Different handles are independent; the library has no global mutable
 * state.  Descriptors are close-on-exec; after fork() only one of the two
 * processes may keep using a handle (see ipc(7)).
 *
 * Names: every public identifier starts with ipc_ or IPC_ and none collides
 * with <sys/ipc.h> (IPC_CREAT, IPC_NOWAIT, struct ipc_perm, ...).
 */
#ifndef IPC_H_INCLUDED
#define IPC_H_INCLUDED

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define IPC_API __attribute__((visibility("default")))
#else
#define IPC_API
#endif

/* Version of this header: 0.2.0 (ipc_version() gives the library's). */
#define IPC_VERSION_MAJOR 0
#define IPC_VERSION_MINOR 2
#define IPC_VERSION_PATCH 0

/* Longest address string accepted, including the scheme, without the NUL. */
#define IPC_ADDR_MAX 512

/* Default largest message a connection sends or accepts: 64 MiB. */
#define IPC_DEFAULT_MAX_MSG ((size_t)64 << 20)

/* Largest max_msg_size that may be configured: 4 GiB - 1 (wire limit). */
#define IPC_MAX_MSG_LIMIT ((size_t)0xffffffffu)

/* Default per-direction capacity of a connection: 1 MiB. */
#define IPC_DEFAULT_CAPACITY ((size_t)1 << 20)

/* Default bound on connect + handshake: 10 seconds. */
#define IPC_DEFAULT_CONNECT_TIMEOUT_MS 10000

/* Per-call flag: do not wait; fail with EAGAIN instead. */
#define IPC_DONTWAIT 0x1

/* Default bound on how long ipc_close() delivers data still held: 10 s. */
#define IPC_DEFAULT_LINGER_MS 10000

/* Readiness bits for ipc_poll() and ipc_conn_ready()/ipc_listener_ready().
 * Since 0.2 they equal poll(2)'s POLLIN, POLLOUT, POLLERR and POLLHUP on
 * Linux, so the two can never be confused. */
#define IPC_POLLIN  0x001 /* receive (or accept) would not block */
#define IPC_POLLOUT 0x004 /* a send of any size would be accepted now */
#define IPC_POLLERR 0x008 /* the connection failed: the next call reports why */
#define IPC_POLLHUP 0x010 /* the peer is gone: receive reports end or error */

typedef struct ipc_listener ipc_listener; /* opaque listening endpoint */
typedef struct ipc_conn ipc_conn;         /* opaque connection */

/*
 * Options for ipc_listen() and ipc_connect().  Always start from
 * ipc_options_init(); pass NULL to use every default.  A listener hands its
 * options to every connection it accepts.  Timeouts are in milliseconds:
 * -1 waits forever, 0 never waits (same as IPC_DONTWAIT), > 0 bounds the
 * whole call.
 */
struct ipc_options {
	int connect_timeout_ms; /* connect + handshake (default 10000) */
	int send_timeout_ms;    /* default for sends (default -1) */
	int recv_timeout_ms;    /* default for receives and accept (default -1) */
	int linger_ms;          /* close: how long to deliver data still held
	                           by the library (default 10000; -1: until
	                           handed to the peer or the peer is gone) */
	int nonblock;           /* nonzero: every call behaves as IPC_DONTWAIT */
	size_t max_msg_size;    /* largest message either way (default 64 MiB,
	                           1 .. IPC_MAX_MSG_LIMIT) */
	size_t capacity;        /* per-direction buffering bound, bytes
	                           (default 1 MiB, at least 4096) */
	unsigned mode;          /* who may connect to a listener (and the
	                           permission bits of a socket file): a peer
	                           may connect when the class that applies to
	                           it (owner, group, other) has the write bit;
	                           root always may.  Default 0600 (see ipc(7)) */
	/* ---- since 0.2 ---- */
	int peer_check;         /* connect on local transports: which listener
	                           the client accepts, by its kernel uid:
	                           IPC_PEER_SAME (default: our own euid or
	                           root), IPC_PEER_UID (peer_uid or root),
	                           IPC_PEER_ANY (no check).  EPERM otherwise */
	uid_t peer_uid;         /* the uid for IPC_PEER_UID */
	/* tls: (ipc-tls(7)).  Strings are read by ipc_listen() and
	 * ipc_connect() only: the library keeps no pointer to them. */
	const char *tls_cert_file;   /* PEM certificate chain (leaf first):
	                                required to listen; a client sends it
	                                when the listener asks (mutual TLS) */
	const char *tls_key_file;    /* PEM private key (default: in
	                                tls_cert_file) */
	const char *tls_ca_file;     /* PEM file of CAs trusted to sign the
	                                peer's certificate; with tls_ca_dir
	                                NULL too: the system store */
	const char *tls_ca_dir;      /* directory of hashed CA certificates */
	const char *tls_server_name; /* client: the name the server's
	                                certificate must carry, sent as SNI
	                                (default: the host of the address) */
	int tls_verify;              /* IPC_TLS_VERIFY_* (default PEER) */
	int tls_min_version;         /* IPC_TLS_1_2 (default) or IPC_TLS_1_3 */
	/* Remote use: every transport, then tcp: and tls: sockets. */
	int connect_retry;           /* nonzero: while nobody listens
	                                (ECONNREFUSED, ENOENT) connect tries
	                                again, a new connection each time,
	                                until connect_timeout_ms */
	int keepalive_idle_s;        /* idle seconds before the first probe
	                                (default 30; 0: no keep-alive) */
	int keepalive_interval_s;    /* seconds between probes (default 5) */
	int keepalive_count;         /* unanswered probes that end the
	                                connection (default 4) */
	int user_timeout_ms;         /* TCP_USER_TIMEOUT: unacknowledged data
	                                this old ends the connection (default
	                                60000; 0: the kernel's default) */
	/* Room for options of later 0.x releases: the size of this struct
	 * never changes within libipc.so.0 (ABI policy: ipc(7)).  Set by
	 * ipc_options_init(); never touch it. */
	long long ipc_reserved_[16];
};

/* Values of ipc_options.peer_check. */
#define IPC_PEER_SAME 0
#define IPC_PEER_UID  1
#define IPC_PEER_ANY  2

/* Values of ipc_options.tls_verify (ipc-tls(7)). */
#define IPC_TLS_VERIFY_PEER    0 /* client: verify the server's chain and
                                    name; listener: ask no certificate */
#define IPC_TLS_VERIFY_REQUIRE 1 /* as PEER, and a listener requires and
                                    verifies a client certificate */
#define IPC_TLS_VERIFY_NONE    2 /* verify nothing (tests only: anyone on
                                    the path can read and change data) */

/* Values of ipc_options.tls_min_version. */
#define IPC_TLS_1_2 0x0303
#define IPC_TLS_1_3 0x0304

/* What ipc_conn_peer_cert() reports of the peer's verified certificate. */
#define IPC_CERT_SUBJECT 1 /* subject, RFC 2253 ("CN=host,O=org") */
#define IPC_CERT_SAN     2 /* subject alternative names, comma-separated
                              ("DNS:a.example,IP:192.0.2.1,email:x@y") */

/* Peer credentials, from the kernel (never from what the peer claims). */
struct ipc_cred {
	pid_t pid;
	uid_t uid;
	gid_t gid;
};

/* One entry of ipc_poll(): set exactly one of conn or listener. */
struct ipc_pollitem {
	ipc_conn *conn;         /* connection to watch, or NULL */
	ipc_listener *listener; /* listener to watch, or NULL */
	short events;           /* IPC_POLLIN and/or IPC_POLLOUT */
	short revents;          /* out: ready bits, plus IPC_POLLERR/HUP */
};

/* The library's version as "MAJOR.MINOR.PATCH" (static storage); the
 * numbers also go to any non-NULL pointer.  Compare with IPC_VERSION_*. */
IPC_API const char *ipc_version(int *major, int *minor, int *patch);

/* Fill *opts with the defaults. */
IPC_API void ipc_options_init(struct ipc_options *opts);

/* Listen on addr; NULL opts = defaults.  Returns NULL and sets errno. */
IPC_API ipc_listener *ipc_listen(const char *addr, const struct ipc_options *opts);

/* Accept one connection (waits per recv_timeout_ms unless IPC_DONTWAIT). */
IPC_API ipc_conn *ipc_accept(ipc_listener *l, int flags);

/* Connect to addr and complete the handshake; NULL opts = defaults. */
IPC_API ipc_conn *ipc_connect(const char *addr, const struct ipc_options *opts);

/*
 * Send one message of len bytes, whole or not at all.  Returns len.
 * A blocking or timed send waits while the connection's capacity is full
 * (per send_timeout_ms): ETIMEDOUT and nothing sent.  A send that does not
 * wait (IPC_DONTWAIT, nonblock, timeout 0) of any size is accepted whole
 * whenever nothing is held: what the transport does not take now is held
 * (one message per connection) and moved on by later calls on the
 * connection; EAGAIN (nothing sent) only while a message is still held,
 * which is exactly when IPC_POLLOUT is not ready.  A timed send whose
 * message has started flowing when its deadline passes is held likewise.
 * EMSGSIZE: len > max_msg_size.
 * EPIPE: the peer closed or died.
 */
IPC_API ssize_t ipc_send(ipc_conn *c, const void *buf, size_t len, int flags);

/* Send one message gathered from iovcnt buffers.  Returns its length. */
IPC_API ssize_t ipc_sendv(ipc_conn *c, const struct iovec *iov, int iovcnt, int flags);

/* Receive one message into buf.  Returns its length; EMSGSIZE (message
 * left queued) if it is longer than len. */
IPC_API ssize_t ipc_recv(ipc_conn *c, void *buf, size_t len, int flags);

/* Receive one message into a malloc()ed buffer stored in *bufp (caller
 * frees; non-NULL even for a zero-length message).  Returns its length. */
IPC_API ssize_t ipc_recv_alloc(ipc_conn *c, void **bufp, int flags);

/* Send n messages, msgs[i] being one message each.  Waits (per flags and
 * timeout) for the first; returns how many were accepted, in order. */
IPC_API ssize_t ipc_send_batch(ipc_conn *c, const struct iovec *msgs, size_t n, int flags);

/* Receive up to n messages; msgs[i].iov_len is the buffer size on entry and
 * the message length on return.  Waits for the first (per flags and
 * timeout), then takes only what is already there.  Returns the count. */
IPC_API ssize_t ipc_recv_batch(ipc_conn *c, struct iovec *msgs, size_t n, int flags);

/* Push out data the library still holds for this connection (after
 * non-blocking or timed sends).  0 when nothing is left. */
IPC_API int ipc_flush(ipc_conn *c, int flags);

/* Change the send and receive timeouts of a connection (ms, -1, 0). */
IPC_API int ipc_conn_set_timeouts(ipc_conn *c, int send_timeout_ms, int recv_timeout_ms);

/* The connection's readiness descriptor (owned by the library). */
IPC_API int ipc_conn_fd(const ipc_conn *c);

/* Which of events (IPC_POLLIN/OUT) are ready now (may return ERR/HUP
 * bits too).  When it returns 0, *pollevents gets the poll(2) events to
 * wait for on ipc_conn_fd() before asking again.  -1 on bad arguments. */
IPC_API int ipc_conn_ready(ipc_conn *c, int events, short *pollevents);

/* A connected pair of connections with no name, for a process and the
 * child it forks: scheme "unix" (a socket pair) or "shm".  Both ends get
 * opts (NULL: defaults).  0, or -1 with errno (EPROTONOSUPPORT for a
 * scheme without pairs). */
IPC_API int ipc_pair(const char *scheme, const struct ipc_options *opts, ipc_conn *pair[2]);

/* The transport scheme of a connection: "unix", "tcp", "tls", "shm" or "mq". */
IPC_API const char *ipc_conn_scheme(const ipc_conn *c);

/* Kernel credentials of the peer (local transports; EOPNOTSUPP on tcp). */
IPC_API int ipc_conn_peer_cred(const ipc_conn *c, struct ipc_cred *cred);

/* The peer's verified certificate (tls: only): what is IPC_CERT_SUBJECT
 * or IPC_CERT_SAN, written NUL-terminated into buf.  Returns the length;
 * -1 with EOPNOTSUPP (not tls), ENOENT (the peer sent no certificate, or
 * no SAN), ENOTCONN (handshake not finished yet), ENOSPC (too small). */
IPC_API int ipc_conn_peer_cert(const ipc_conn *c, int what, char *buf, size_t len);

/* A sentence on why the last failing libipc call of this thread failed,
 * when errno alone does not say (a certificate not trusted, expired, for
 * another name; a peer that does not speak TLS ...); "" when there is
 * none.  Static per-thread storage, valid until the thread's next call. */
IPC_API const char *ipc_error_detail(void);

/* Close the connection: flush per linger_ms, release everything.  Returns
 * 0, or -1 if held data could not be delivered (the handle is freed). */
IPC_API int ipc_close(ipc_conn *c);

/* The listener's readiness descriptor: readable when accept would not block. */
IPC_API int ipc_listener_fd(const ipc_listener *l);

/* As ipc_conn_ready(), for IPC_POLLIN (accept) on a listener. */
IPC_API int ipc_listener_ready(ipc_listener *l, int events, short *pollevents);

/* The address actually bound, in address syntax (e.g. tcp:127.0.0.1:41873).
 * Returns its length; ENOSPC if it does not fit in len bytes with its NUL. */
IPC_API int ipc_listener_addr(const ipc_listener *l, char *buf, size_t len);

/* Stop listening and release everything (socket file, names). */
IPC_API int ipc_listener_close(ipc_listener *l);

/* Wait until some items are ready or timeout_ms passes (-1 = forever).
 * Returns how many items have revents set, 0 on timeout. */
IPC_API int ipc_poll(struct ipc_pollitem *items, size_t n, int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* IPC_H_INCLUDED */
