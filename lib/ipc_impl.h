/*
 * ipc_impl.h - private interfaces between the libipc core and its transports.
 *
 * Layering:
 *   core.c    public API: argument checks, options, deadlines, dispatch
 *             through the scheme table (the only place that lists
 *             transports).
 *   addr.c    address helpers shared by transports (host:port parsing).
 *   fd.c      clock, deadlines, EINTR-safe waits and descriptor helpers.
 *   frame.c   the stream framing layer: turns any connected byte stream
 *             (struct ipc__bstream_ops, below) into a message connection
 *             (handshake, length prefixes, end of stream, bounded
 *             buffering).
 *   sock.c    the stream-socket byte stream and the listener over one
 *             listening socket; unix.c and tcp.c only make the socket.
 *   rendezvous.c
 *             the local rendezvous shm and mq share (abstract SEQPACKET
 *             socket, descriptor passing, bounded listener queues, the
 *             access rule of access.c applied in both directions).
 *   access.c  the one access rule of the local transports.
 *   compat.c  the 0.1 ABI kept for programs built against it (libipc.map).
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

/* Hints of ipc_poll to conn_ready (beside IPC_POLLIN/IPC_POLLOUT). */
#define IPC__READY_QUIET 0x1000
#define IPC__READY_SEEN 0x2000
#define IPC__READY_PEEK 0x4000

/* ipc_poll's look-again before sleeping over ready_peek connections:
 * each thread keeps a budget between these (ns), doubled when a look
 * found something, halved when it did not. */
#define IPC__POLL_SPIN_MIN_NS ((int64_t)1000)
#define IPC__POLL_SPIN_MAX_NS ((int64_t)50000)
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
 * no thread (the one exception: tcp.c's bounded host-name lookup, see
 * ipc_connect(3)).
 */
struct ipc__transport {
	/* Scheme without the colon: "unix", "tcp", ... */
	const char *scheme;

	/* Nonzero: send/recv/send_batch/recv_batch/flush take IPC__LAZY
	 * deadlines (see above). */
	int lazy_deadline;

	/* Nonzero: conn_ready honours IPC__READY_PEEK without a system call
	 * (readiness in memory), so ipc_poll may look again for a few
	 * microseconds before it sleeps (see ipc_poll in core.c). */
	int ready_peek;

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
	 * 0, *pollev holds the poll(2) events to wait for on conn_fd.
	 * ipc_poll may add one hint to events (a transport may ignore it):
	 * IPC__READY_QUIET, the wait after the last call that returned 0 saw
	 * no event on conn_fd (nothing to read there); IPC__READY_SEEN, it
	 * saw one; IPC__READY_PEEK (only with ready_peek): report what is
	 * ready now, prepare no wait, *pollev unused. */
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

	/* Optional: the peer's verified certificate, as ipc_conn_peer_cert(3)
	 * (what already checked).  Errors: ENOENT, ENOTCONN, ENOSPC. */
	int (*peer_cert)(const struct ipc_conn *c, int what, char *buf, size_t len);
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

/* Has deadline passed?  Always for IPC__NOW, never for IPC__FOREVER (reads
 * the clock only for a timed deadline). */
int ipc__deadline_passed(int64_t deadline);

/* Wait until fd reports any of events (POLLIN/POLLOUT) or an error/hangup,
 * or until deadline.  EINTR is retried with the remaining time.  Returns
 * the revents (> 0), or -1 with EAGAIN/ETIMEDOUT (deadline) or the poll
 * error. */
int ipc__wait_fd(int fd, short events, int64_t deadline);

/* Sleep ms milliseconds (EINTR: sleeps the rest). */
void ipc__sleep_ms(int ms);

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

/* ---- detail.c: why a call failed, for a person ----------------------- */

/* Set this thread's ipc_error_detail(3) sentence (printf format; never
 * fails: a long sentence is cut) / clear it (ipc_listen, ipc_connect and
 * ipc_accept start with it clear). */
void ipc__detail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ipc__detail_clear(void);

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

/* ---- the byte-stream seam (frame.c over any byte stream) ------------- */

/*
 * frame.c turns a connected, reliable, ordered byte stream into a message
 * connection (ipc-wire(7)).  It never touches a descriptor itself: every
 * byte goes through a struct ipc__bstream_ops, called with the opaque ctx
 * the stream's provider gave to ipc__stream_new().  sock.c provides it for
 * a stream socket (unix, tcp, socket pairs); a transport whose bytes pass
 * through a library (tls.c over OpenSSL) provides its own ops and ctx and
 * reuses the framing unchanged: its connect/accept make the ctx and call
 * ipc__stream_new(); its transport struct uses IPC__STREAM_CONN_SLOTS.
 *
 * Deadlines are absolute (IPC__NOW, IPC__FOREVER or a point in time, never
 * IPC__LAZY).  No slot may return EINTR, raise SIGPIPE or block past its
 * deadline.
 *
 * Threads.  A connection has a receive path (recv, recv_batch, the
 * IPC_POLLIN half of conn_ready) and a send path (send, send_batch, flush,
 * the IPC_POLLOUT half of conn_ready), which two threads may run at the
 * same time; frame.c serialises each path with itself (the send path under
 * its send lock).  So:
 *   read            receive path only; never concurrently with itself;
 *   writev,
 *   shutdown_write  send path only (send lock held); never concurrently
 *                   with each other or themselves;
 *   wait, poll_events, peer_ended, peer_cred, fd
 *                   any path, concurrently with anything but close (the
 *                   receive path waits for IPC__BS_WRITE too, to keep held
 *                   output moving while it waits for input);
 *   close           alone, last.
 * A provider whose two directions share state (one TLS session) must
 * guard that state itself: read may run while writev runs.
 */
enum ipc__bs_dir {
	IPC__BS_READ = 1,  /* read would make progress */
	IPC__BS_WRITE = 2, /* writev would make progress */
};

struct ipc__bstream_ops {
	/* Read up to n (> 0) bytes into buf.  Returns the count (> 0); 0 at
	 * the end of the peer's stream (it will never send more); -1 with
	 * EAGAIN when nothing is available (it may first wait until
	 * deadline, never longer; IPC__NOW never waits; it may return EAGAIN
	 * early, the caller then waits with .wait and retries).  Any other
	 * errno means the stream is broken (ECONNRESET, ETIMEDOUT from the
	 * link, ENOMEM...): the caller reports the peer dead. */
	ssize_t (*read)(void *ctx, void *buf, size_t n, int64_t deadline);

	/* Write bytes gathered from iov[0..cnt) (cnt >= 1, total > 0).
	 * Returns the count accepted (> 0, may be less than the total); -1
	 * with EAGAIN when nothing could be accepted (waiting at most until
	 * deadline, as read); any other errno (EPIPE, ECONNRESET...) means
	 * the stream is broken for writing. */
	ssize_t (*writev)(void *ctx, const struct iovec *iov, int cnt, int64_t deadline);

	/* Wait until read or writev (dirs, a mask of enum ipc__bs_dir)
	 * would make progress or fail, or until deadline.  Returns the
	 * subset of dirs that is ready (> 0; an error or hang-up counts as
	 * ready so that the next read/writev reports it), or -1 with EAGAIN
	 * (IPC__NOW) or ETIMEDOUT. */
	int (*wait)(void *ctx, int dirs, int64_t deadline);

	/* poll(2) events to wait for on .fd so that dirs can make progress
	 * (a TLS read may need POLLOUT).  Never fails, never waits. */
	short (*poll_events)(void *ctx, int dirs);

	/* Nonzero if the peer has already ended its direction (a FIN, a
	 * reset), so that a send can fail at once with EPIPE instead of
	 * being accepted by a buffer nobody will read.  Never waits; 0 when
	 * it cannot tell cheaply. */
	int (*peer_ended)(void *ctx);

	/* Optional: nonzero when closing while the peer still sends makes the
	 * peer lose what it has not read yet (a TCP reset): close then waits,
	 * within the linger time, for the peer's hello (frame.c). */
	int (*lossy_close)(void *ctx);

	/* Optional: copy up to n bytes the receive side has not read yet,
	 * without taking them and without waiting.  Returns the count or -1.
	 * Called by the send path only once the peer is gone, to tell a
	 * refusal from a close; it must not disturb a concurrent read. */
	ssize_t (*peek)(void *ctx, void *buf, size_t n);

	/* End our direction after everything written so far (FIN,
	 * close_notify).  0 or -1 (ignored by frame.c). */
	int (*shutdown_write)(void *ctx);

	/* Kernel credentials of the peer; -1 EOPNOTSUPP when the stream has
	 * none (tcp). */
	int (*peer_cred)(void *ctx, struct ipc_cred *cred);

	/* The readiness descriptor (ipc_conn_fd(3)). */
	int (*fd)(void *ctx);

	/* Release the stream and ctx.  Never waits. */
	void (*close)(void *ctx);
};

/*
 * Wrap a connected byte stream in a message connection with options o and
 * queue our hello at once (what the stream does not take now is held and
 * sent by later calls).  Neither side waits for the peer's hello here (so
 * connect never depends on the peer calling accept, and accept never
 * waits on a slow peer): each side checks the peer's hello on its first
 * receive (EPROTO on a mismatch, EACCES on a rejection).  Takes ownership
 * of ctx: ops->close(ctx) on failure.
 */
struct ipc_conn *ipc__stream_new(const struct ipc__bstream_ops *ops, void *ctx, const struct ipc_options *o);

/*
 * ipc_pair ends are made to be split by a fork: ipc__stream_disown() makes
 * an end belong to the first process that sends, receives or polls on it;
 * ipc_close in any other process (one that inherited it unused) only
 * releases that process's memory and descriptors, without the
 * end-of-stream frame or a shutdown that would end the user's connection.
 * Other connections are closed fully by whoever closes them (ipc(7):
 * after fork only one process may use or close a handle).
 */
void ipc__stream_disown(struct ipc_conn *c);

/* The ctx a connection made by ipc__stream_new() was given. */
void *ipc__stream_ctx(const struct ipc_conn *c);

/* Connection slots shared by every transport that uses the framing layer. */
#define IPC__STREAM_CONN_SLOTS                              \
	.send = ipc__stream_send,                           \
	.recv = ipc__stream_recv,                           \
	.send_batch = ipc__stream_send_batch,               \
	.recv_batch = ipc__stream_recv_batch,               \
	.flush = ipc__stream_flush,                         \
	.conn_fd = ipc__stream_conn_fd,                     \
	.conn_ready = ipc__stream_conn_ready,               \
	.peer_cred = ipc__stream_peer_cred,                 \
	.close = ipc__stream_close

/* The slots every transport over one listening stream socket shares: a
 * transport fills .scheme, .listen and .connect and adds these. */
#define IPC__STREAM_SLOTS                                   \
	.accept = ipc__sock_accept,                         \
	.listener_addr = ipc__sock_listener_addr,           \
	.listener_fd = ipc__sock_listener_fd,               \
	.listener_ready = ipc__sock_listener_ready,         \
	.listener_close = ipc__sock_listener_close,         \
	IPC__STREAM_CONN_SLOTS

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
#define IPC__HELLO_LEN 8    /* "LIPC", version, status, 2 zero bytes */
#define IPC__WIRE_VERSION 2
#define IPC__FRAME_HDR 4    /* u32 BE payload length */
#define IPC__EOS_LEN 0xffffffffu /* length field of the end-of-stream frame */

/* Hello status byte (offset 5): the listener's verdict on a client. */
enum ipc__hello_status {
	IPC__HELLO_OK = 0,      /* a peer: messages follow */
	IPC__HELLO_REFUSED = 1, /* access refused (mode): EACCES, then EOF */
};

/* Encode a hello with status; check a peer's: 0, or -1 with EPROTO (not
 * a version 2 hello, unknown status) or EACCES (IPC__HELLO_REFUSED). */
void ipc__hello_encode(unsigned char out[IPC__HELLO_LEN], enum ipc__hello_status status);
int ipc__hello_check(const unsigned char in[IPC__HELLO_LEN]);

/* ---- sock.c: stream sockets (the socket byte stream, listeners) ------- */

/* Wrap a connected stream socket (any blocking mode, CLOEXEC) as a byte
 * stream and a message connection.  is_unix: SO_PEERCRED is meaningful;
 * else tcp options (no delay, keep-alive) are set.  Takes ownership of fd. */
struct ipc_conn *ipc__sock_conn_new(int fd, const struct ipc_options *o, int is_unix);

/* A listener over one listening socket (unix, tcp).  Transports allocate
 * it with calloc, call ipc__sock_listener_init(), and fill fd, is_unix,
 * addr (and path/dev/ino/dirfd for a socket file to remove at close).
 * Accepted sockets wait in a pending set (watched by an epoll descriptor,
 * the listener's readiness descriptor) until the peer's whole hello has
 * arrived: a peer that closes or resets before its hello (a liveness
 * probe) never reaches accept.  On unix the peer's kernel credentials are
 * checked with ipc__mode_allows() first: a refused peer gets a
 * IPC__HELLO_REFUSED hello and is closed.  When the pending set is full,
 * one that has waited IPC__SOCK_HELLO_GRACE_MS is dropped for a newcomer;
 * until then the listener stops accepting (the kernel backlog holds the
 * rest) and a timer in the epoll set wakes it. */
#define IPC__SOCK_PENDING_MAX 256
/* Most new sockets one listener call (accept, listener_ready, one round of
 * a waiting accept) takes from the kernel, on sock and rendezvous
 * listeners alike: peers refused by the mode fill no queue, and a flood of
 * them must not keep a call (or ipc_poll past its timeout) busy.  A call
 * that took a full batch makes the listener's timer expire at once, so the
 * readiness descriptor reports a new event even to an edge-triggered wait. */
#define IPC__ACCEPT_BATCH 64

/* Is err, from accept4(2), about that one client only (it went away, its
 * network is down), so that the next connection may still be taken?  (The
 * errors accept(2) says to treat like EAGAIN on Linux.)  1 or 0. */
int ipc__accept_transient(int err);
#define IPC__SOCK_HELLO_GRACE_MS 250
struct ipc__sock_listener {
	struct ipc_listener base;
	int fd;                   /* listening socket */
	int epfd;                 /* epoll: fd, tfd and the pending sockets */
	int tfd;                  /* timerfd: the oldest pending one expires */
	int is_unix;
	int paused;               /* fd out of the epoll set (pending full) */
	int npend, nready;
	int pend[IPC__SOCK_PENDING_MAX];  /* accepted, hello not yet whole */
	int64_t pend_since[IPC__SOCK_PENDING_MAX]; /* when (ipc__now) */
	int ready[IPC__SOCK_PENDING_MAX]; /* hello whole: accept takes these */
	char addr[IPC_ADDR_MAX + 1]; /* bound address, "scheme:..." */
	char path[108];           /* unix path to unlink at close, or "" */
	dev_t dev;                /* identity of the socket file we made */
	ino_t ino;
	int dirfd;                /* path's directory (O_PATH) when path[0] */
};

/* Make the epoll and timer descriptors (l->fd set and listening; on
 * failure the caller still owns l->fd).  0 or -1.  Transports set epfd
 * and tfd to -1 first.  npend + nready <= the max. */
int ipc__sock_listener_init(struct ipc__sock_listener *l);

struct ipc_conn *ipc__sock_accept(struct ipc_listener *l, int64_t deadline);
int ipc__sock_listener_addr(const struct ipc_listener *l, char *buf, size_t len);
int ipc__sock_listener_fd(const struct ipc_listener *l);
int ipc__sock_listener_ready(struct ipc_listener *l, int events, short *pollev);
void ipc__sock_listener_close(struct ipc_listener *l);

/* ---- tcp.c: tcp sockets for tcp: and tls: ----------------------------- */

/* A listening tcp socket (non-blocking, CLOEXEC) on host:port of name;
 * its bound address, as "scheme:host:port", goes to addr.  fd or -1. */
int ipc__tcp_listen_fd(const char *name, const char *scheme, char *addr, size_t addrcap);

/* A tcp socket connected to host:port of name by deadline (left
 * non-blocking).  fd or -1 (ECONNREFUSED, EHOSTUNREACH, ETIMEDOUT...). */
int ipc__tcp_connect_fd(const char *name, int64_t deadline);

/* No delay; keep-alive and TCP_USER_TIMEOUT per o (ipc_options_init(3)). */
void ipc__tcp_tune(int fd, const struct ipc_options *o);

/* Non-blocking connect of fd to sa, waiting until deadline.  0 or -1. */
int ipc__sock_connect(int fd, const struct sockaddr *sa, socklen_t salen, int64_t deadline);

/* ==== rendezvous.c: the local rendezvous of shm and mq ================
 *
 * shm and mq are not byte streams: a connection is a set of kernel objects
 * (a memfd and wake sockets; two message queues) that the CLIENT makes and
 * hands to the listener over a Linux abstract unix socket (SOCK_SEQPACKET,
 * "\0<prefix><name>") with SCM_RIGHTS.  This section is everything about
 * that exchange the two transports share; what the hello contains, how its
 * descriptors are validated and how a connection is built from them is the
 * transport's, through struct ipc__rdv_ops.
 *
 * The exchange (every packet is one SEQPACKET record):
 *   client                                  listener
 *   connect(\0prefix+name) ----------------> (kernel backlog)
 *   SO_PEERCRED: ipc__listener_trusted,
 *     else EPERM, nothing sent
 *   hello + descriptors  ------------------> accept4; SO_PEERCRED;
 *                                            ipc__mode_allows, else
 *                                            reply(ACCESS), close
 *                                            (pending until the hello
 *                                            comes: bounded set, oldest
 *                                            silent peer dropped)
 *                                            ops->build (validation)
 *   reply (ops->reply, carries a status) <-- OK, or the refusal code
 *
 * connect never waits for accept, except that a client whose listener
 * runs under another uid waits for the reply (the listener's verdict on
 * its mode), so that a refused client's connect fails with EACCES.  The
 * socket then stays open for the life of the connection (peer death,
 * wake-ups, close notices: the transport's business).
 *
 * A name can be squatted: abstract names have no owner, so another user
 * may bind one first.  The squatter's clients are refused by the identity
 * check (EPERM), and the real listener's listen fails with EADDRINUSE.
 */

/* Status codes of a listener's reply.  The wire values are the Linux
 * errno numbers libipc 0.1 sent, but a byte from a peer is never used as
 * an errno: ipc__rdv_status_errno maps the table, anything else is
 * EPROTO. */
enum ipc__rdv_status {
	IPC__RDV_OK = 0,       /* accepted */
	IPC__RDV_ACCESS = 13,  /* refused by the listener's mode -> EACCES */
	IPC__RDV_PROTO = 71,   /* malformed hello or descriptors -> EPROTO */
	IPC__RDV_LIMIT = 90,   /* asks for more memory than the listener's
	                          capacity / max_msg_size allow -> EMSGSIZE */
	IPC__RDV_BUSY = 111,   /* the listener could not take the candidate
	                          (out of descriptors or memory, or too many
	                          waiting) -> ECONNREFUSED */
};

/* 0 for IPC__RDV_OK, the errno of a table code, EPROTO for any other
 * byte. */
int ipc__rdv_status_errno(unsigned byte);

struct sockaddr_un;

/* The abstract address "\0" prefix name.  A name that does not fit in
 * sun_path gets ENAMETOOLONG, unless hashed is non-NULL: then the address
 * is "\0" hashed <two FNV-1a 64 hashes of name in hex>.  0 or -1. */
int ipc__rdv_addr(const char *prefix, const char *hashed, const char *name, struct sockaddr_un *sa,
		  socklen_t *salen);

/* ---- client side ---- */

/* Connect a SEQPACKET socket (non-blocking, CLOEXEC) to sa by deadline
 * (a full backlog is retried), read the listener's kernel credentials into
 * *cr and check them with ipc__listener_trusted (EPERM: closed, nothing
 * was sent).  Returns the socket or -1 (ECONNREFUSED/ENOENT: nobody
 * listens; ETIMEDOUT; EPERM; EMFILE...). */
int ipc__rdv_connect(const struct sockaddr_un *sa, socklen_t salen, const struct ipc_options *o,
		     int64_t deadline, struct ipc_cred *cr);

/* Send the hello (len bytes) with nfds descriptors (<= IPC__RDV_MAX_FDS)
 * in one packet by deadline.  A listener that refused us before reading
 * it: the error of its reply if one came (see ipc__rdv_reply), else
 * ECONNREFUSED.  0 or -1. */
int ipc__rdv_send_hello(int fd, const void *hello, size_t len, const int *fds, int nfds, int64_t deadline);

/* Wait by deadline for the listener's reply, exactly len bytes, and copy
 * it to buf WITHOUT consuming it (MSG_PEEK: the transport's data path
 * reads it again, as it would if connect had not waited).  0, or -1:
 * ECONNREFUSED (closed without a reply), EPROTO (wrong size), ETIMEDOUT. */
int ipc__rdv_peek_reply(int fd, void *buf, size_t len, int64_t deadline);

/* ---- listener side ---- */

#define IPC__RDV_MAX_FDS 8       /* most descriptors any hello carries */
#define IPC__RDV_MAX_HELLO 256   /* largest hello any transport defines */
#define IPC__RDV_MAX_PENDING 128 /* accepted sockets waiting for their hello */
#define IPC__RDV_MAX_READY 64    /* built connections waiting for accept */
#define IPC__RDV_PENDING_NS ((int64_t)50000000) /* how long a silent peer may
                                 hold a slot once the pending set is full */
#define IPC__RDV_RETRY_NS ((int64_t)1000000000) /* how long a candidate the
                                 listener lacks resources for is retried
                                 (each failure reported by accept) before
                                 it is dropped, so it cannot wedge the
                                 queue for the candidates behind it */

/* What ops->build decided. */
enum ipc__rdv_verdict {
	IPC__RDV_BUILT,  /* *conn made; it owns the socket and the fds the
	                    callback set to -1 */
	IPC__RDV_RETRY,  /* resource error (errno): report it from accept,
	                    keep the candidate for a later try */
	IPC__RDV_REFUSE, /* drop the candidate, reply *status */
};

struct ipc__rdv_listener;

/*
 * The transport's part of the rendezvous (listener side), as nng's
 * transport ops: every slot is called by the rendezvous only, from
 * accept/listener_ready/listener_close of the one listener (the core
 * serialises those), never concurrently for one listener.
 */
struct ipc__rdv_ops {
	/* Exact size of a valid hello (<= IPC__RDV_MAX_HELLO) and exact
	 * number of descriptors (<= IPC__RDV_MAX_FDS) that come with it.
	 * Any other size or count is refused with IPC__RDV_PROTO before
	 * build is called. */
	size_t hello_len;
	int nfds;

	/* Validate the hello and the descriptors (kind, flags, seals, sizes
	 * against the listener's own options: a client never chooses the
	 * listener's memory) and build the connection on socket sock.  The
	 * descriptors are private duplicates: the callback sets each one it
	 * keeps to -1, the rendezvous closes the rest.  On IPC__RDV_BUILT
	 * the connection owns *sock (the callback may replace it with a
	 * duplicate it made, closing the original); on any other verdict
	 * *sock is untouched and still the rendezvous'.  cr: the client's kernel credentials
	 * (already allowed by the mode).  Returns an enum ipc__rdv_verdict;
	 * RETRY only for the listener's own lack of resources (EMFILE,
	 * ENFILE, ENOMEM), never for anything the peer sent. */
	int (*build)(struct ipc__rdv_listener *l, int *sock, const unsigned char *hello, int *fds,
		     const struct ipc_cred *cr, void **conn, enum ipc__rdv_status *status);

	/* Send the reply carrying status on sock (one packet, MSG_DONTWAIT,
	 * best effort: a client that went away is not an error). */
	void (*reply)(struct ipc__rdv_listener *l, int sock, enum ipc__rdv_status status);

	/* Free a built connection nobody accepted (listener close); it
	 * closes its socket. */
	void (*conn_drop)(void *conn);
};

/*
 * The listener state shared by shm and mq; a transport's listener embeds
 * it FIRST (so a struct ipc_listener * of shm or mq is one of these).
 * Pending: accepted sockets without a hello yet, in accept order, at most
 * IPC__RDV_MAX_PENDING; when full the listening socket is not polled and a
 * timer fires when the oldest has had IPC__RDV_PENDING_NS, then it is
 * dropped.  Ready: built connections, at most IPC__RDV_MAX_READY; accept
 * order is connect order among those whose hello came.
 */
struct ipc__rdv_pending {
	int fd;
	int64_t since; /* when accepted (CLOCK_MONOTONIC ns) */
};

struct ipc__rdv_listener {
	struct ipc_listener base;
	const struct ipc__rdv_ops *ops;
	int lfd;         /* the listening socket */
	int epfd;        /* readiness: lfd, pending sockets, tfd */
	int tfd;         /* timerfd: the oldest pending peer's time is up */
	int lfd_on;      /* lfd is in epfd's interest set */
	unsigned mode;   /* the listener's opt.mode */
	struct ipc__rdv_pending pend[IPC__RDV_MAX_PENDING];
	int npend;
	void *ready[IPC__RDV_MAX_READY];
	int nready;
	int err;         /* resource error for the next accept to report */
};

/* A listener of size bytes (the transport's struct, which embeds struct
 * ipc__rdv_listener first; zeroed) bound and listening on sa, with ops
 * and the mode of o.  EADDRINUSE when the name is taken (by another
 * listener, or squatted).  NULL on failure. */
struct ipc__rdv_listener *ipc__rdv_listener_new(size_t size, const struct ipc__rdv_ops *ops,
						const struct sockaddr_un *sa, socklen_t salen,
						const struct ipc_options *o);

/* The transport slots accept, listener_fd, listener_ready and
 * listener_close (drops everything pending or ready, frees the listener)
 * for a struct ipc__rdv_listener. */
struct ipc_conn *ipc__rdv_accept(struct ipc_listener *l, int64_t deadline);
int ipc__rdv_listener_fd(const struct ipc_listener *l);
int ipc__rdv_listener_ready(struct ipc_listener *l, int events, short *pollev);
void ipc__rdv_listener_close(struct ipc_listener *l);

/* Internal entry point (fuzz targets, tests compiled with lib/): treat fd,
 * a connected SEQPACKET socket, as if accept4 had just returned it (mode
 * check, pending set, hello), then make progress.  Takes fd. */
void ipc__rdv_offer(struct ipc__rdv_listener *l, int fd);

#endif /* IPC_IMPL_H_INCLUDED */
