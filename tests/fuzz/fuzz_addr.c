/* fuzz_addr.c - libFuzzer target: the address parser.  Arbitrary strings go
 * through ipc__split_hostport (the tcp host:port syntax) and through the
 * scheme lookup of ipc_listen/ipc_connect.  Only paths that touch nothing
 * outside the process are taken for real: unix:@abstract names (listen,
 * then connect after close) and unknown schemes; tcp names are parsed but
 * never resolved (no DNS), unix paths are never bound, shm/mq not created. */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipc_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char s[IPC_ADDR_MAX + 64];
	if (size >= sizeof s)
		size = sizeof s - 1;
	memcpy(s, data, size);
	s[size] = '\0';

	char host[NI_MAXHOST];
	unsigned port = 70000;
	memset(host, 'Z', sizeof host);
	if (ipc__split_hostport(s, host, sizeof host, &port) == 0) {
		if (port > 65535 || strnlen(host, sizeof host) == sizeof host)
			abort();
	} else if (errno != EINVAL && errno != ENAMETOOLONG) {
		abort();
	}
	/* tiny host buffers: never written past */
	char small[4];
	if (ipc__split_hostport(s, small, sizeof small, &port) == 0 && strnlen(small, sizeof small) == sizeof small)
		abort();

	const char *colon = strchr(s, ':');
	size_t sl = colon ? (size_t)(colon - s) : 0;
	int known = colon && ((sl == 4 && !memcmp(s, "unix", 4)) || (sl == 3 && !memcmp(s, "tcp", 3)) ||
			      (sl == 3 && !memcmp(s, "shm", 3)) || (sl == 2 && !memcmp(s, "mq", 2)) ||
			      (sl == 3 && !memcmp(s, "tls", 3)));
	struct ipc_options o;
	ipc_options_init(&o);
	o.connect_timeout_ms = 0;
	if (!known) {
		if (ipc_listen(s, &o) != NULL || ipc_connect(s, &o) != NULL)
			abort();
		if (errno != EINVAL && errno != EPROTONOSUPPORT && errno != ENAMETOOLONG)
			abort();
	} else if (!strncmp(s, "unix:@", 6)) {
		ipc_listener *l = ipc_listen(s, &o);
		if (l) {
			char b[IPC_ADDR_MAX + 1];
			int n = ipc_listener_addr(l, b, sizeof b);
			if (n < 0 || strcmp(b, s) != 0)
				abort();
			ipc_listener_close(l);
		}
		ipc_conn *c = ipc_connect(s, &o); /* nobody listens any more */
		if (c)
			ipc_close(c);
	} else if (!strncmp(s, "tcp:", 4) || !strncmp(s, "tls:", 4)) {
		if (ipc__split_hostport(s + 4, host, sizeof host, &port) == 0 && port > 65535)
			abort();
	}
	return 0;
}
