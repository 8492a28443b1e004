/* fd.c - clock, deadlines, EINTR-safe waits, small descriptor helpers. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "ipc_impl.h"

int64_t ipc__now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t ipc__deadline(int timeout_ms)
{
	if (timeout_ms < 0)
		return IPC__FOREVER;
	if (timeout_ms == 0)
		return IPC__NOW;
	return ipc__now() + (int64_t)timeout_ms * 1000000;
}

int64_t ipc__anchor(int64_t deadline)
{
	if (deadline == IPC__FOREVER || !(deadline & IPC__LAZY))
		return deadline;
	return ipc__now() + (deadline & ~IPC__LAZY) * 1000000;
}

int ipc__remaining_ms(int64_t deadline)
{
	if (deadline == IPC__FOREVER)
		return -1;
	if (deadline == IPC__NOW)
		return 0;
	int64_t left = deadline - ipc__now();
	if (left <= 0)
		return 0;
	int64_t ms = (left + 999999) / 1000000;
	return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

int ipc__wouldblock(int64_t deadline)
{
	errno = deadline == IPC__NOW ? EAGAIN : ETIMEDOUT;
	return -1;
}

int ipc__deadline_passed(int64_t deadline)
{
	return deadline == IPC__NOW || (deadline != IPC__FOREVER && ipc__now() >= deadline);
}

int ipc__wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = events};
	for (;;) {
		int ms = ipc__remaining_ms(deadline);
		if (ms == 0 && deadline != IPC__NOW && deadline != IPC__FOREVER &&
		    deadline <= ipc__now())
			return ipc__wouldblock(deadline);
		int r = poll(&p, 1, ms);
		if (r > 0)
			return p.revents;
		if (r == 0) {
			if (deadline == IPC__NOW || deadline <= ipc__now())
				return ipc__wouldblock(deadline);
			continue;
		}
		if (errno != EINTR)
			return -1;
	}
}

void ipc__sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

void ipc__close_fd(int fd)
{
	int e = errno;
	if (fd >= 0)
		close(fd);
	errno = e;
}

int ipc__set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
	return fcntl(fd, F_SETFL, fl);
}

int ipc__strlcpy_checked(char *dst, const char *s, size_t cap)
{
	size_t n = strlen(s);
	if (n >= cap) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(dst, s, n + 1);
	return 0;
}

int ipc__format(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len) {
		errno = ENOSPC;
		return -1;
	}
	return n;
}

int ipc__random(void *buf, size_t n)
{
	unsigned char *p = buf;
	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}
