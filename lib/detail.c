/* detail.c - ipc_error_detail(3): a sentence on why a call failed.
 *
 * The one piece of per-thread state of the library: a thread's own
 * buffer, never shared, so no lock and no global mutable state. */
#include <stdarg.h>
#include <stdio.h>

#include "ipc_impl.h"

static _Thread_local char detail[256];

void ipc__detail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
}

void ipc__detail_clear(void)
{
	detail[0] = '\0';
}

const char *ipc_error_detail(void)
{
	return detail;
}
