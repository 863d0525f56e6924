#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include <slurm/spank.h>

#include "option.h"
#include "run.h"

/* Cap on what `vse validate` may print; anything longer is cut and refused. */
#define VSE_OUTPUT_MAX (1024 * 1024)
/* Linux refuses to exec with one environment string over 128 KiB (MAX_ARG_STRLEN). */
#define VSE_DESC_MAX (128 * 1024 - 64)

static const struct vse_args *option_args;
static char *vse_file; /* absolute path of the validated description */
static char *vse_desc; /* its resolved form, one line of JSON */

static int option_cb(int val, const char *optarg, int remote);

static struct spank_option vse_option = {
	"vse", "FILE",
	"[vse] run the job in the virtual machines described by FILE (checked with `vse validate` before the job is queued)",
	1, 0, option_cb
};

static char *absolute_path(const char *file)
{
	char *cwd = NULL;
	char *abs = NULL;

	if (file[0] == '/') {
		abs = strdup(file);
		if (abs == NULL)
			slurm_error("vse: --vse=%s: out of memory", file);
		return (abs);
	}
	cwd = getcwd(NULL, 0);
	if (cwd == NULL) {
		slurm_error("vse: --vse=%s: cannot resolve the relative path: getcwd: %s", file, strerror(errno));
		goto fail;
	}
	while (file[0] == '.' && file[1] == '/')
		file += 2 + strspn(file + 2, "/");
	if (asprintf(&abs, "%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, file) < 0) {
		abs = NULL;
		slurm_error("vse: --vse=%s: out of memory", file);
	}

fail:
	free(cwd);
	return (abs);
}

/* Replay each stderr line of the CLI to the user. */
static void forward_lines(char *text, int truncated)
{
	char *line;

	while ((line = strsep(&text, "\n")) != NULL)
		if (line[0] != '\0')
			slurm_error("vse: %s", line);
	if (truncated)
		slurm_error("vse: (further output cut at %d bytes)", VSE_OUTPUT_MAX);
}

static int check_failure(const char *file, struct vse_run_result *res)
{
	const char *cli = option_args->cli;

	if (res->exec_errno != 0) {
		slurm_error("vse: cannot execute %s (vse= in plugstack.conf): %s", cli, strerror(res->exec_errno));
		return (-1);
	}
	if (res->timed_out) {
		forward_lines(res->err, res->err_truncated);
		slurm_error("vse: `%s validate --emit %s` did not finish within %u s (timeout= in plugstack.conf); killed it",
			    cli, file, option_args->timeout);
		return (-1);
	}
	if (WIFEXITED(res->status) && WEXITSTATUS(res->status) == 0)
		return (0);
	forward_lines(res->err, res->err_truncated);
	if (WIFSIGNALED(res->status))
		slurm_error("vse: `%s validate --emit %s` was killed by signal %d; job refused",
			    cli, file, WTERMSIG(res->status));
	else if (WEXITSTATUS(res->status) == 2)
		slurm_error("vse: --vse=%s: the description is invalid (see above); job refused", file);
	else
		slurm_error("vse: `%s validate --emit %s` failed with exit code %d; job refused",
			    cli, file, WEXITSTATUS(res->status));
	return (-1);
}

/* Run `vse validate --emit FILE`; on success *desc is its one line of JSON. */
static int validate(const char *file, char **desc)
{
	char *argv[] = { option_args->cli, "validate", "--emit", (char *)file, NULL };
	struct vse_run_result res;
	size_t len;
	int rv = -1;

	if (vse_run(argv, option_args->timeout, VSE_OUTPUT_MAX, &res) < 0)
		return (-1);
	if (check_failure(file, &res) < 0)
		goto fail;

	len = res.out_len;
	while (len > 0 && (res.out[len - 1] == '\n' || res.out[len - 1] == '\r'))
		res.out[--len] = '\0';
	if (len == 0 || strlen(res.out) != len || strchr(res.out, '\n') != NULL) {
		slurm_error("vse: `%s validate --emit %s` printed %s; expected one line of JSON",
			    option_args->cli, file, len == 0 ? "nothing" : "more than one line");
		goto fail;
	}
	if (res.out_truncated || len > VSE_DESC_MAX) {
		slurm_error("vse: --vse=%s: the resolved description is over %d bytes, too big for the job environment; hint: use fewer or smaller elements",
			    file, VSE_DESC_MAX);
		goto fail;
	}
	*desc = res.out;
	res.out = NULL;
	rv = 0;

fail:
	vse_run_result_free(&res);
	return (rv);
}

static int option_cb(int val, const char *optarg, int remote)
{
	char *file = NULL;
	char *desc = NULL;
	int rv = -1;

	(void)val;
	/* The description was checked on the submit host; slurmstepd has nothing to do yet. */
	if (remote || option_args == NULL)
		return (0);
	if (optarg == NULL || optarg[0] == '\0') {
		slurm_error("vse: --vse: missing FILE; expected the path of a VM description, e.g. --vse=hello.xml");
		return (-1);
	}
	file = absolute_path(optarg);
	if (file == NULL)
		goto fail;
	/* sbatch calls option callbacks more than once with the same value. */
	if (vse_file != NULL && strcmp(vse_file, file) == 0) {
		rv = 0;
		goto fail;
	}
	if (validate(file, &desc) < 0)
		goto fail;

	free(vse_file);
	free(vse_desc);
	vse_file = file;
	vse_desc = desc;
	file = NULL;
	desc = NULL;
	rv = 0;

fail:
	free(file);
	free(desc);
	return (rv);
}

int vse_option_register(spank_t sp, const struct vse_args *args)
{
	spank_err_t rc;

	option_args = args;
	rc = spank_option_register(sp, &vse_option);
	if (rc != ESPANK_SUCCESS) {
		slurm_error("vse: cannot register option --vse: %s", spank_strerror(rc));
		return (-1);
	}
	return (0);
}

int vse_option_export(spank_t sp)
{
	spank_err_t rc;

	if (vse_desc == NULL)
		return (0);
	rc = spank_job_control_setenv(sp, "VSE_DESC", vse_desc, 1);
	if (rc != ESPANK_SUCCESS) {
		slurm_error("vse: cannot pass the description to the prolog: spank_job_control_setenv(VSE_DESC): %s",
			    spank_strerror(rc));
		return (-1);
	}
	rc = spank_job_control_setenv(sp, "VSE_FILE", vse_file, 1);
	if (rc != ESPANK_SUCCESS) {
		slurm_error("vse: cannot pass the description to the prolog: spank_job_control_setenv(VSE_FILE): %s",
			    spank_strerror(rc));
		return (-1);
	}
	return (0);
}

void vse_option_free(void)
{
	free(vse_file);
	free(vse_desc);
	vse_file = NULL;
	vse_desc = NULL;
	option_args = NULL;
}
