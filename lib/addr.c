/* addr.c - address helpers shared by transports. */
#include <errno.h>
#include <string.h>

#include "ipc_impl.h"

int ipc__split_hostport(const char *name, char *host, size_t hostcap, unsigned *port)
{
	const char *colon, *hs;
	size_t hl;

	if (name[0] == '[') {
		const char *close = strchr(name, ']');
		if (!close || close[1] != ':') {
			errno = EINVAL;
			return -1;
		}
		hs = name + 1;
		hl = (size_t)(close - hs);
		colon = close + 1;
		if (hl == 0) {
			errno = EINVAL;
			return -1;
		}
	} else {
		colon = strrchr(name, ':');
		if (!colon) {
			errno = EINVAL;
			return -1;
		}
		hs = name;
		hl = (size_t)(colon - name);
		if (memchr(hs, ':', hl)) { /* bare v6 needs brackets */
			errno = EINVAL;
			return -1;
		}
	}
	if (hl == 1 && hs[0] == '*')
		hl = 0;
	if (hl >= hostcap) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(host, hs, hl);
	host[hl] = '\0';

	const char *p = colon + 1;
	unsigned long v = 0;
	if (*p == '\0' || strlen(p) > 5) {
		errno = EINVAL;
		return -1;
	}
	for (; *p; p++) {
		if (*p < '0' || *p > '9') {
			errno = EINVAL;
			return -1;
		}
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (v > 65535) {
		errno = EINVAL;
		return -1;
	}
	*port = (unsigned)v;
	return 0;
}
