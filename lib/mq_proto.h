/*
 * mq_proto.h - the message protocol inside one POSIX queue of an mq:
 * connection (mq.c): how a message becomes queue messages ("chunks") and
 * how a receiver reassembles them.  Pure code: no descriptor, no lock, no
 * clock, so that a fuzz target can drive it with any bytes a peer could
 * put in a queue (tests/fuzz/fuzz_mq_proto.c).
 *
 * Every chunk of a queue whose message size is ms:
 *   length < ms    one whole message, no header (0 bytes is valid);
 *   length == ms   ms - 8 bytes of payload, then a trailer u32 tag + u32
 *                  total (host order: both ends are on one machine):
 *                  tag FIRST: first chunk of a message of total bytes
 *                  (ms <= total <= the receiver's max_msg_size, else
 *                  EPROTO, checked before any allocation); it is followed
 *                  by chunks of exactly min(ms, rest) raw payload bytes;
 *                  tag CLOSE: orderly end of stream (payload ignored).
 * A message is delivered only once reassembled whole.
 */
#ifndef IPC_MQ_PROTO_H_INCLUDED
#define IPC_MQ_PROTO_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#define IPC__MQ_TRAILER 8
#define IPC__MQ_TAG_FIRST 0x4649514du /* "MQIF" */
#define IPC__MQ_TAG_CLOSE 0x4c43514du /* "MQCL" */
/* Smallest queue message size the protocol works with. */
#define IPC__MQ_MIN_MSGSIZE 64

/* A u32 at p in host order (the hello and the trailers). */
void ipc__mq_put32(unsigned char *p, uint32_t v);
uint32_t ipc__mq_get32(const unsigned char *p);

/* Write the trailer (tag, total) into the last 8 bytes of a chunk of ms. */
void ipc__mq_trailer(unsigned char *chunk, size_t ms, uint32_t tag, uint32_t total);

/* Payload bytes carried by the next chunk of a message of total bytes of
 * which off are already queued; first: no chunk of it is queued yet. */
size_t ipc__mq_chunk_payload(size_t ms, size_t total, size_t off, int first);

/* A message being reassembled from its chunks. */
struct ipc__mq_asm {
	unsigned char *buf; /* total bytes: malloc()ed, or the caller's */
	size_t total, have;
	int on;   /* a FIRST chunk was taken, the message is not delivered */
	int user; /* buf is the caller's buffer (never freed here) */
};

/* What ipc__mq_take made of one chunk. */
enum ipc__mq_took {
	IPC__MQ_PART,  /* consumed; the message is whole once have == total */
	IPC__MQ_WHOLE, /* a whole message of n bytes, still in src */
	IPC__MQ_CLOSE, /* orderly end of stream */
	IPC__MQ_BAD,   /* broken protocol: EPROTO */
	IPC__MQ_NOMEM, /* a FIRST chunk whose buffer could not be allocated:
			  nothing changed, the caller may retry it later */
};

/*
 * Take one chunk of n bytes at src from a queue whose message size is ms,
 * for a receiver whose largest message is max_msg.  A FIRST chunk starts a
 * message in ubuf when it is non-NULL and total <= ulen, else in a
 * malloc()ed buffer of exactly total bytes.  src may already point where
 * the bytes belong (asm->buf + asm->have): then nothing is copied.
 */
enum ipc__mq_took ipc__mq_take(struct ipc__mq_asm *a, const unsigned char *src, size_t n, size_t ms,
			       size_t max_msg, unsigned char *ubuf, size_t ulen);

/* Forget the message in progress (frees a buffer of our own). */
void ipc__mq_asm_reset(struct ipc__mq_asm *a);

#endif /* IPC_MQ_PROTO_H_INCLUDED */
