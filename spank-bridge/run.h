#ifndef VSE_RUN_H
#define VSE_RUN_H

#include <stddef.h>

/* What became of a child process started by vse_run. */
struct vse_run_result {
	int status;        /* waitpid(2) status */
	int timed_out;     /* killed with SIGKILL at the timeout */
	int exec_errno;    /* errno of a failed execv, 0 when the program started */
	char *out;         /* captured stdout, NUL-terminated */
	size_t out_len;
	int out_truncated; /* stdout went past the cap */
	char *err;         /* captured stderr, NUL-terminated */
	size_t err_len;
	int err_truncated;
};

/*
 * Run argv[0] (an absolute path, no shell) with stdin from /dev/null and no
 * other inherited fds, capturing up to cap bytes of stdout and of stderr.
 * Returns -1 only when the child could not be run or watched.
 */
int vse_run(char *const argv[], unsigned int timeout, size_t cap, struct vse_run_result *res);

/* Release the captured output; safe to call twice. */
void vse_run_result_free(struct vse_run_result *res);

#endif
