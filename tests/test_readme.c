/* test_readme.c - the README's example builds and runs as printed. */
#include "test.h"

TEST(readme_example)
{
	const char *src = t_env("IPC_SRC"), *build = t_env("IPC_BUILD"), *cc = t_env("IPC_CC");
	const char *san = t_env("IPC_SAN");
	if (!*src || !*build)
		SKIP("IPC_SRC / IPC_BUILD not set (run through make check)");
	const char *d = t_tmpdir();
	/* the example's name made unique: other runs of this test may be
	 * listening on it right now */
	CHECK_EQ(t_sh("awk '/^```c/{f=1;next} /^```/{f=0} f' '%s/README.md' | sed 's/unix:@hello/unix:@hello-%s/g' "
		      ">'%s/readme.c'",
		      src, t_token(), d),
		 0);
	CHECK_EQ(t_sh("test -s '%s/readme.c'", d), 0);
	const char *ssl = !strcmp(t_env("IPC_TLS"), "1") ? " -lssl -lcrypto" : ""; /* libipc.a with tls: */
	CHECKF(t_sh("%s %s%s -Wall -Wextra -Werror -I'%s/include' -o '%s/readme' '%s/readme.c' '%s/libipc.a' -pthread -lrt%s",
		    *cc ? cc : "cc", *san ? "-fsanitize=" : "", san, src, d, d, build, ssl) == 0,
	       "the README example does not build");
	CHECKF(t_sh("'%s/readme' | grep -qx ping", d) == 0, "the README example does not print ping");
}
