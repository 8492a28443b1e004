/* mq_proto.c - chunking and reassembly of mq: messages (see mq_proto.h). */
#include <stdlib.h>
#include <string.h>

#include "mq_proto.h"

void ipc__mq_put32(unsigned char *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

uint32_t ipc__mq_get32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

void ipc__mq_trailer(unsigned char *chunk, size_t ms, uint32_t tag, uint32_t total)
{
	ipc__mq_put32(chunk + ms - IPC__MQ_TRAILER, tag);
	ipc__mq_put32(chunk + ms - IPC__MQ_TRAILER + 4, total);
}

size_t ipc__mq_chunk_payload(size_t ms, size_t total, size_t off, int first)
{
	if (first)
		return total < ms ? total : ms - IPC__MQ_TRAILER;
	return total - off < ms ? total - off : ms;
}

void ipc__mq_asm_reset(struct ipc__mq_asm *a)
{
	if (!a->user)
		free(a->buf);
	memset(a, 0, sizeof *a);
}

static enum ipc__mq_took take_next(struct ipc__mq_asm *a, const unsigned char *src, size_t n, size_t ms)
{
	if (n != ipc__mq_chunk_payload(ms, a->total, a->have, 0))
		return IPC__MQ_BAD;
	if (src != a->buf + a->have)
		memcpy(a->buf + a->have, src, n);
	a->have += n;
	return IPC__MQ_PART;
}

enum ipc__mq_took ipc__mq_take(struct ipc__mq_asm *a, const unsigned char *src, size_t n, size_t ms,
			       size_t max_msg, unsigned char *ubuf, size_t ulen)
{
	if (ms < IPC__MQ_MIN_MSGSIZE || n > ms)
		return IPC__MQ_BAD;
	if (a->on)
		return take_next(a, src, n, ms);
	if (n < ms)
		return IPC__MQ_WHOLE;
	uint32_t tag = ipc__mq_get32(src + ms - IPC__MQ_TRAILER);
	uint32_t total = ipc__mq_get32(src + ms - IPC__MQ_TRAILER + 4);
	if (tag == IPC__MQ_TAG_CLOSE)
		return IPC__MQ_CLOSE;
	if (tag != IPC__MQ_TAG_FIRST || total < ms || total > max_msg)
		return IPC__MQ_BAD;
	size_t part = ms - IPC__MQ_TRAILER;
	if (ubuf && total <= ulen) {
		a->buf = ubuf;
		a->user = 1;
	} else {
		a->buf = malloc(total);
		if (!a->buf)
			return IPC__MQ_NOMEM;
		a->user = 0;
	}
	if (src != a->buf)
		memmove(a->buf, src, part);
	a->total = total;
	a->have = part;
	a->on = 1;
	return IPC__MQ_PART;
}
