/* fuzz_mq_proto.c - libFuzzer target: the mq: message protocol
 * (lib/mq_proto.c), i.e. what a receiver makes of any sequence of queue
 * messages a peer can put in its queue: whole messages, FIRST chunks with
 * any announced total, continuation chunks of any length, CLOSE markers.
 *
 * Input: byte 0 picks the queue message size ms (64..1024), byte 1 the
 * receiver's max_msg_size (1 << (b % 21)), byte 2 bit 0 a caller's buffer
 * of 4096 bytes (reassembly in place, as a blocking receive does); then
 * records [kind u8][len u16 le][bytes...]: kind % 4 == 0 a chunk of len % (ms
 * + 1) bytes, 1 a full chunk whose trailer is FIRST with the total in the
 * next 4 bytes, 2 a full chunk with a CLOSE trailer, 3 a full raw chunk.
 * Missing bytes are zeros.  Chunks are taken as mq.c takes them (straight
 * into the message buffer when a whole ms of it is still missing); the
 * invariants are checked after each, and ASan/UBSan watch every access. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mq_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct input {
	const uint8_t *p;
	size_t left;
};

static size_t take(struct input *in, void *dst, size_t n)
{
	size_t t = n < in->left ? n : in->left;
	memcpy(dst, in->p, t);
	memset((unsigned char *)dst + t, 0, n - t);
	in->p += t;
	in->left -= t;
	return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	size_t ms = 64 * (size_t)(1 + data[0] % 16);
	size_t max_msg = (size_t)1 << (data[1] % 21);
	int in_place = data[2] & 1;
	struct input in = {data + 3, size - 3};
	static unsigned char ubuf[4096], chunk[1024];
	struct ipc__mq_asm a = {0};
	int delivered = 0;
	while (in.left > 0) {
		uint8_t kind;
		uint16_t len;
		take(&in, &kind, 1);
		take(&in, &len, 2);
		size_t n = ms;
		memset(chunk, 0, sizeof chunk);
		if (kind % 4 == 0) {
			n = len % (ms + 1);
			take(&in, chunk, n);
		} else if (kind % 4 == 1) {
			uint32_t total;
			take(&in, &total, 4);
			take(&in, chunk, ms - IPC__MQ_TRAILER);
			ipc__mq_trailer(chunk, ms, IPC__MQ_TAG_FIRST, total);
		} else if (kind % 4 == 2) {
			ipc__mq_trailer(chunk, ms, IPC__MQ_TAG_CLOSE, len);
		} else {
			take(&in, chunk, ms);
		}
		const unsigned char *src = chunk;
		if (a.on && a.total - a.have >= ms && n <= ms) { /* as mq.c: read in place */
			memcpy(a.buf + a.have, chunk, n);
			src = a.buf + a.have;
		}
		enum ipc__mq_took t = ipc__mq_take(&a, src, n, ms, max_msg, in_place ? ubuf : NULL, sizeof ubuf);
		if (t == IPC__MQ_CLOSE || t == IPC__MQ_BAD || t == IPC__MQ_NOMEM)
			break; /* sticky end of the stream in mq.c */
		if (t == IPC__MQ_WHOLE) {
			if (a.on || n >= ms)
				abort();
			delivered++;
			continue;
		}
		/* IPC__MQ_PART */
		if (!a.on || a.have > a.total || a.total > max_msg || a.total < ms || !a.buf)
			abort();
		if (a.user && (a.buf != ubuf || a.total > sizeof ubuf))
			abort();
		if (a.have == a.total) {
			delivered++;
			ipc__mq_asm_reset(&a);
		}
	}
	ipc__mq_asm_reset(&a);
	(void)delivered;
	return 0;
}
