/*
 * ipc_impl.h - private interfaces between the libipc core and its transports.
 *
 * Layering:
 *   core.c    public API: argument checks, options, deadlines, dispatch
 *             through the scheme table (the only place that lists
 *             transports).
 *   addr.c    address helpers shared by transports (host:port parsing).
 *   fd.c      clock, deadlines, EINTR-safe waits and descriptor helpers.
 *   frame.c   the stream framing layer: turns any connected byte-stream
 *             descriptor into a message connection (handshake, length
 *             prefixes, bounded buffering).  unix.c and tcp.c only make the
 *             descriptor and hand it to ipc__stream_new().
 *   unix.c, tcp.c, shm.c, mq.c
 *             one transport each; each exports one struct ipc__transport.
 *
 * Every non-static internal name starts with ipc__ and has hidden
 * visibility (the build uses -fvisibility=hidden); only IPC_API functions
 * are exported.
 */
#ifndef IPC_IMPL_H_INCLUDED
#define IPC_IMPL_H_INCLUDED

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "ipc.h"

/*
 * Deadlines.  Internally every wait takes an absolute CLOCK_MONOTONIC
 * deadline in nanoseconds, so a timeout bounds the whole call however many
 * internal waits it makes.  Two values are special:
 *   IPC__NOW      never wait: a call that would wait fails with EAGAIN;
 *   IPC__FOREVER  wait without bound.
 * Any other value is a point in time; once it has passed a call that would
 * wait fails with ETIMEDOUT.
 */
#define IPC__NOW ((int64_t)0)
#define IPC__FOREVER INT64_MAX

/*
 * Reading the clock on every call costs a fast-path transport (shm) a
 * good share of its time, though most calls never wait.  A transport that
 * sets .lazy_deadline gets timed deadlines from its send/recv slots (and
 * their batch forms) unanchored: IPC__LAZY | timeout_ms, "that long from
 * the first time it is needed".  It must pass any deadline through
 * ipc__anchor() (once per call, before it first waits or compares it with
 * the clock); an anchored deadline, IPC__NOW and IPC__FOREVER pass through
 * unchanged.  No other slot and no other transport ever sees IPC__LAZY.
 */
#define IPC__LAZY ((int64_t)1 << 62)
int64_t ipc__anchor(int64_t deadline);

/* Fields the core keeps for every handle; transports embed it first. */
struct ipc_conn {
	const struct ipc__transport *tp; /* set by the core after creation */
	struct ipc_options opt;          /* effective options */
};

struct ipc_listener {
	const struct ipc__transport *tp;
	struct ipc_options opt;
};

/*
 * A transport.  The core validates arguments before calling a slot: handles
 * are non-NULL, options are complete and in range, message sizes are within
 * opt.max_msg_size, iovec totals do not overflow.  Every slot that can fail
 * returns -1 (or NULL) with errno set; no slot may return EINTR or raise
 * SIGPIPE.  Slots marked optional may be NULL.
 *
 * Concurrency (what the application may do, ipc(7) "Threads"): each
 * connection has a SEND path (send, send_batch, flush, conn_ready with
 * IPC_POLLOUT) and a RECEIVE path (recv, recv_batch, conn_ready with
 * IPC_POLLIN only).  One thread on each path may run at the same time on
 * one connection, so every state both paths touch (a dead-peer flag, the
 * descriptor's blocking mode, a shared wake channel) must be atomic or
 * owned by one path.  Two calls on the same path are never concurrent.
 * conn_fd, peer_cred and the scheme are read-only and may run anywhere.
 * close runs alone (no other call on that connection before or during
 * it).  Listener slots are never concurrent with each other on one
 * listener; listener_close runs alone.  Different handles never share
 * mutable state: a transport keeps no global mutable state and creates
 * no thread.
 */
struct ipc__transport {
	/* Scheme without the colon: "unix", "tcp", ... */
	const char *scheme;

	/* Nonzero: send/recv/send_batch/recv_batch/flush take IPC__LAZY
	 * deadlines (see above). */
	int lazy_deadline;

	/* Bind and listen on name (the address after "scheme:", non-empty,
	 * at most IPC_ADDR_MAX bytes).  Returns a listener whose opt the core
	 * fills in afterwards (transports may read *o).  Errors: EINVAL
	 * (malformed name), ENAMETOOLONG, EADDRINUSE, EACCES, EMFILE,
	 * ENFILE, ENOMEM, and whatever the OS gives for bind/listen. */
	struct ipc_listener *(*listen)(const char *name, const struct ipc_options *o);

	/* Accept one connection, waiting until deadline.  Must not wait on
	 * any single slow peer (a peer that connects and sends nothing must
	 * not block accept of others).  Errors: EAGAIN (IPC__NOW),
	 * ETIMEDOUT, EMFILE, ENFILE, ENOMEM, ECONNABORTED. */
	struct ipc_conn *(*accept)(struct ipc_listener *l, int64_t deadline);

	/* Write the bound address, NUL-terminated, as "scheme:..." into buf.
	 * Returns its length, or -1 ENOSPC if it does not fit. */
	int (*listener_addr)(const struct ipc_listener *l, char *buf, size_t len);

	/* Readiness descriptor of the listener. */
	int (*listener_fd)(const struct ipc_listener *l);

	/* Non-blocking readiness: return the ready subset of events
	 * (IPC_POLLIN), else 0 with *pollev = poll(2) events to wait for on
	 * listener_fd. */
	int (*listener_ready)(struct ipc_listener *l, int events, short *pollev);

	/* Release everything the listener owns; connections already
	 * accepted stay usable. */
	void (*listener_close)(struct ipc_listener *l);

	/* Connect to name and complete the handshake by deadline.  Errors:
	 * EINVAL, ENAMETOOLONG, ECONNREFUSED or ENOENT (nobody listens),
	 * ETIMEDOUT, EPROTO (peer speaks another protocol/version, where the
	 * transport learns it during connect),
	 * EHOSTUNREACH (name did not resolve), EACCES, EMFILE, ENOMEM. */
	struct ipc_conn *(*connect)(const char *name, const struct ipc_options *o, int64_t deadline);

	/* Send one message of total bytes gathered from iov, whole or not at
	 * all.  total <= c->opt.max_msg_size already checked.  Errors:
	 * EAGAIN (IPC__NOW and no room), ETIMEDOUT (deadline passed before
	 * the message was accepted), EMSGSIZE (larger than the peer accepts,
	 * or, with IPC__NOW, larger than the capacity), EPIPE (peer closed or
	 * died), ECONNRESET, EPROTO. */
	int (*send)(struct ipc_conn *c, const struct iovec *iov, int iovcnt, size_t total, int64_t deadline);

	/* Receive one whole message.  If allocp is NULL copy it into buf
	 * (EMSGSIZE and leave it queued when it is longer than len); else
	 * store a malloc()ed copy (non-NULL even for 0 bytes) in *allocp.
	 * Returns the length.  Errors: EAGAIN, ETIMEDOUT, EMSGSIZE, EPIPE
	 * (orderly end-of-stream), ECONNRESET (peer died), EPROTO (peer
	 * broke the protocol, e.g. announced a message over max_msg_size),
	 * ENOMEM. */
	ssize_t (*recv)(struct ipc_conn *c, void *buf, size_t len, void **allocp, int64_t deadline);

	/* Optional: send msgs[0..n) (each already size-checked); waits for
	 * the first until deadline, then accepts only what fits without
	 * waiting.  Returns the count (>= 1) or -1 as send.  The core loops
	 * over send when NULL. */
	ssize_t (*send_batch)(struct ipc_conn *c, const struct iovec *msgs, size_t n, int64_t deadline);

	/* Optional: receive up to n messages as recv_batch(3).  Returns the
	 * count (>= 1) or -1 as recv.  The core loops over recv when NULL. */
	ssize_t (*recv_batch)(struct ipc_conn *c, struct iovec *msgs, size_t n, int64_t deadline);

	/* Optional: push out data held by the library until deadline.
	 * Errors: EAGAIN, ETIMEDOUT, EPIPE, ECONNRESET. */
	int (*flush)(struct ipc_conn *c, int64_t deadline);

	/* Readiness descriptor of the connection. */
	int (*conn_fd)(const struct ipc_conn *c);

	/* Non-blocking readiness, as listener_ready but for IPC_POLLIN and
	 * IPC_POLLOUT; may add IPC_POLLERR/IPC_POLLHUP.  May do non-blocking
	 * I/O (pull bytes in, flush held data) to decide.  When it returns
	 * 0, *pollev holds the poll(2) events to wait for on conn_fd. */
	int (*conn_ready)(struct ipc_conn *c, int events, short *pollev);

	/* Optional: make a connected pair of connections, both ends in this
	 * process, with options o (ipc_pair(3)).  0, or -1 with errno
	 * (EMFILE, ENFILE, ENOMEM).  The core sets tp on both. */
	int (*pair)(const struct ipc_options *o, struct ipc_conn *out[2]);

	/* Kernel credentials of the peer.  Errors: EOPNOTSUPP. */
	int (*peer_cred)(const struct ipc_conn *c, struct ipc_cred *cred);

	/* Flush held data until linger_deadline, then release everything and
	 * free c.  Returns 0, or -1 (errno) if held data was dropped. */
	int (*close)(struct ipc_conn *c, int64_t linger_deadline);
};

/* The scheme table (core.c), NULL-terminated, in registration order. */
extern const struct ipc__transport *const ipc__transports[];

/* ---- fd.c: time, waits, descriptors ---------------------------------- */

/* CLOCK_MONOTONIC now, in nanoseconds. */
int64_t ipc__now(void);

/* Deadline for a timeout in ms: -1 -> IPC__FOREVER, 0 -> IPC__NOW. */
int64_t ipc__deadline(int timeout_ms);

/* Milliseconds left until deadline for poll(2): -1 for IPC__FOREVER, 0 if
 * passed, else rounded up so a wait never ends early. */
int ipc__remaining_ms(int64_t deadline);

/* The error for "would have to wait": EAGAIN for IPC__NOW, else
 * ETIMEDOUT.  Sets errno and returns -1. */
int ipc__wouldblock(int64_t deadline);

/* Wait until fd reports any of events (POLLIN/POLLOUT) or an error/hangup,
 * or until deadline.  EINTR is retried with the remaining time.  Returns
 * the revents (> 0), or -1 with EAGAIN/ETIMEDOUT (deadline) or the poll
 * error. */
int ipc__wait_fd(int fd, short events, int64_t deadline);

/* close(2) that keeps errno. */
void ipc__close_fd(int fd);

/* Set or clear O_NONBLOCK.  0 or -1. */
int ipc__set_nonblock(int fd, int on);

/* Copy s into dst of size cap with NUL; -1 ENAMETOOLONG (never truncates). */
int ipc__strlcpy_checked(char *dst, const char *s, size_t cap);

/* snprintf into buf of len; returns the length or -1 ENOSPC if truncated. */
int ipc__format(char *buf, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Fill buf with n random bytes (getrandom, never blocks once the system
 * pool is initialised).  0 or -1. */
int ipc__random(void *buf, size_t n);

/* ---- access.c: the one access rule of the local transports ---------- */

/*
 * Listener side: may a peer with kernel credentials cr connect to a
 * listener whose options say mode?  Root always may; otherwise the class
 * that applies (owner: cr->uid is our euid; group: cr->gid is our egid;
 * else other) must have the write bit, as the kernel decides for a unix
 * socket file.  Returns 1 or 0.
 */
int ipc__mode_allows(unsigned mode, const struct ipc_cred *cr);

/*
 * Client side: does a client with options o accept a listener whose
 * kernel credentials are cr (o->peer_check, o->peer_uid; root is always
 * accepted)?  0, or -1 with errno EPERM.
 */
int ipc__listener_trusted(const struct ipc_options *o, const struct ipc_cred *cr);

/* SO_PEERCRED of a connected unix socket.  0 or -1. */
int ipc__sock_cred(int fd, struct ipc_cred *cr);

/* ---- addr.c ---------------------------------------------------------- */

/*
 * Split "host:port" or "[v6]:port" into host (without brackets; "" for
 * "*" or empty) and port.  host must hold NI_MAXHOST bytes.  Port must be
 * decimal 0..65535.  Errors: EINVAL, ENAMETOOLONG.
 */
int ipc__split_hostport(const char *name, char *host, size_t hostcap, unsigned *port);

/* ---- frame.c: stream framing ----------------------------------------- */

/*
 * Wrap a connected stream socket (blocking mode, CLOEXEC) in a message
 * connection with options o, and send our hello at once.  Neither side
 * waits for the peer's hello here (so connect never depends on the peer
 * calling accept, and accept never waits on a slow peer): each side checks
 * the peer's hello on its first receive (EPROTO on a mismatch).  Takes
 * ownership of fd (closed on failure).  cred_ok tells whether SO_PEERCRED
 * is meaningful (unix) or not (tcp).
 */
struct ipc_conn *ipc__stream_new(int fd, const struct ipc_options *o, int cred_ok);

/* The slots every transport over one listening stream socket shares: a
 * transport fills .scheme, .listen and .connect and adds these. */
#define IPC__STREAM_SLOTS                                   \
	.accept = ipc__sock_accept,                         \
	.listener_addr = ipc__sock_listener_addr,           \
	.listener_fd = ipc__sock_listener_fd,               \
	.listener_ready = ipc__sock_listener_ready,         \
	.listener_close = ipc__sock_listener_close,         \
	.send = ipc__stream_send,                           \
	.recv = ipc__stream_recv,                           \
	.send_batch = ipc__stream_send_batch,               \
	.recv_batch = ipc__stream_recv_batch,               \
	.flush = ipc__stream_flush,                         \
	.conn_fd = ipc__stream_conn_fd,                     \
	.conn_ready = ipc__stream_conn_ready,               \
	.peer_cred = ipc__stream_peer_cred,                 \
	.close = ipc__stream_close

/* Connection slots shared by every stream transport (unix, tcp). */
int ipc__stream_send(struct ipc_conn *c, const struct iovec *iov, int iovcnt, size_t total,
		     int64_t deadline);
ssize_t ipc__stream_recv(struct ipc_conn *c, void *buf, size_t len, void **allocp, int64_t deadline);
ssize_t ipc__stream_send_batch(struct ipc_conn *c, const struct iovec *msgs, size_t n, int64_t deadline);
ssize_t ipc__stream_recv_batch(struct ipc_conn *c, struct iovec *msgs, size_t n, int64_t deadline);
int ipc__stream_flush(struct ipc_conn *c, int64_t deadline);
int ipc__stream_conn_fd(const struct ipc_conn *c);
int ipc__stream_conn_ready(struct ipc_conn *c, int events, short *pollev);
int ipc__stream_peer_cred(const struct ipc_conn *c, struct ipc_cred *cred);
int ipc__stream_close(struct ipc_conn *c, int64_t linger_deadline);

/* Wire format constants (ipc-wire(7)). */
#define IPC__HELLO_LEN 8    /* "LIPC", version, 3 zero bytes */
#define IPC__WIRE_VERSION 1
#define IPC__FRAME_HDR 4    /* u32 BE payload length */

/* Encode our hello; check a peer's (0, or -1 EPROTO). */
void ipc__hello_encode(unsigned char out[IPC__HELLO_LEN]);
int ipc__hello_check(const unsigned char in[IPC__HELLO_LEN]);

/* ---- socket listener helpers shared by stream transports (frame.c) ---- */

/* A listener over one listening socket (unix, tcp).  Transports allocate
 * it with pending_fd = -1 and fill fd, cred_ok, addr (and path/dev/ino for
 * a socket file to remove at close). */
struct ipc__sock_listener {
	struct ipc_listener base;
	int fd;
	int pending_fd;           /* accepted by listener_ready, or -1 */
	int cred_ok;              /* SO_PEERCRED meaningful on accepted conns */
	char addr[IPC_ADDR_MAX + 1]; /* bound address, "scheme:..." */
	char path[108];           /* unix path to unlink at close, or "" */
	dev_t dev;                /* identity of the socket file we made */
	ino_t ino;
};

struct ipc_conn *ipc__sock_accept(struct ipc_listener *l, int64_t deadline);
int ipc__sock_listener_addr(const struct ipc_listener *l, char *buf, size_t len);
int ipc__sock_listener_fd(const struct ipc_listener *l);
int ipc__sock_listener_ready(struct ipc_listener *l, int events, short *pollev);
void ipc__sock_listener_close(struct ipc_listener *l);

/* Non-blocking connect of fd to sa, waiting until deadline.  0 or -1. */
int ipc__sock_connect(int fd, const struct sockaddr *sa, socklen_t salen, int64_t deadline);

#endif /* IPC_IMPL_H_INCLUDED */
