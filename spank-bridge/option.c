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

/* What the job's environment calls an inherited --vse (Slurm's name for a SPANK option set by sbatch/salloc). */
#define VSE_OPTION_ENV "SLURM_SPANK__SLURM_SPANK_OPTION_vse_vse"
/* The description an allocation was made with (the job control variable VSE_FILE, as jobs see it). */
#define VSE_ALLOC_FILE_ENV "SLURM_SPANK_VSE_FILE"

enum { OPT_VSE, OPT_BATCH };

static const struct vse_args *option_args;
static char *vse_file; /* absolute path of the validated description */
static char *vse_desc; /* its resolved form, one line of JSON */
static int step_wanted;  /* remote: --vse reached this step */
static int batch_inside; /* --vse-batch=inside */

static int option_cb(int val, const char *optarg, int remote);

static struct spank_option vse_option = {
	"vse", "FILE",
	"[vse] run the job in the virtual machines described by FILE (checked with `vse validate` before the job is queued); its srun steps run in those VMs",
	1, OPT_VSE, option_cb
};

static struct spank_option batch_option = {
	"vse-batch", "host|inside",
	"[vse] where the batch script of a --vse job runs: on the host (default; its srun steps run in the VMs) or inside the first VM of the first node",
	1, OPT_BATCH, option_cb
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

static int batch_cb(const char *optarg, int remote)
{
	if (optarg != NULL && strcmp(optarg, "inside") == 0)
		batch_inside = 1;
	else if (optarg != NULL && strcmp(optarg, "host") == 0)
		batch_inside = 0;
	else if (remote)
		return (0); /* refused on the submit host already */
	else {
		slurm_error("vse: --vse-batch=%s: expected host or inside", optarg ? optarg : "");
		return (-1);
	}
	return (0);
}

/*
 * srun inside an allocation: the job's VMs were booted from the allocation's description when it
 * started, so --vse only says "run this step in them" (sbatch and salloc pass it to every srun).
 * Nothing is validated again (a later edit of the file must not break a running job's steps); a
 * different file, or an allocation without VMs, is refused here rather than by every task.
 */
static int check_allocation(const char *optarg, const char *file)
{
	const char *job = getenv("SLURM_JOB_ID");
	const char *alloc = getenv(VSE_ALLOC_FILE_ENV);
	const char *inherited = getenv(VSE_OPTION_ENV);

	if (alloc == NULL || alloc[0] == '\0') {
		slurm_error("vse: --vse=%s: job %s was allocated without --vse, so its nodes run no VMs; hint: give --vse to sbatch or salloc (their srun steps then run in the VMs), or run srun --vse outside the allocation",
			    optarg, job);
		return (-1);
	}
	if ((inherited != NULL && strcmp(inherited, optarg) == 0) || strcmp(alloc, file) == 0)
		return (0);
	slurm_error("vse: --vse=%s: job %s runs the VMs of %s, booted when it was allocated; a step cannot change them; hint: leave --vse out (the job's steps run in its VMs) or submit a new job with --vse=%s",
		    optarg, job, alloc, optarg);
	return (-1);
}

static int in_allocation(void)
{
	const char *job = getenv("SLURM_JOB_ID");

	return (spank_context() == S_CTX_LOCAL && job != NULL && job[0] != '\0');
}

static int option_cb(int val, const char *optarg, int remote)
{
	char *file = NULL;
	char *desc = NULL;
	int rv = -1;

	if (val == OPT_BATCH)
		return (batch_cb(optarg, remote));
	/* slurmstepd: the description was checked on the submit host; this step runs in the VMs. */
	if (remote) {
		step_wanted = optarg != NULL && optarg[0] != '\0';
		return (0);
	}
	if (option_args == NULL)
		return (0);
	if (optarg == NULL || optarg[0] == '\0') {
		slurm_error("vse: --vse: missing FILE; expected the path of a VM description, e.g. --vse=hello.xml");
		return (-1);
	}
	file = absolute_path(optarg);
	if (file == NULL)
		goto fail;
	if (in_allocation()) {
		rv = check_allocation(optarg, file);
		goto fail;
	}
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
	struct spank_option *opts[] = { &vse_option, &batch_option };
	spank_err_t rc;
	size_t i;

	option_args = args;
	for (i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		rc = spank_option_register(sp, opts[i]);
		if (rc != ESPANK_SUCCESS) {
			slurm_error("vse: cannot register option --%s: %s", opts[i]->name, spank_strerror(rc));
			return (-1);
		}
	}
	return (0);
}

int vse_option_export(spank_t sp)
{
	spank_err_t rc;

	if (batch_inside && vse_desc == NULL && spank_context() == S_CTX_ALLOCATOR) {
		slurm_error("vse: --vse-batch=inside: the job has no --vse=FILE; expected both, e.g. sbatch --vse=app.xml --vse-batch=inside job.sh");
		return (-1);
	}
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

int vse_option_step_wanted(void)
{
	return (step_wanted);
}

int vse_option_batch_inside(void)
{
	return (batch_inside);
}

void vse_option_free(void)
{
	free(vse_file);
	free(vse_desc);
	vse_file = NULL;
	vse_desc = NULL;
	option_args = NULL;
	step_wanted = 0;
	batch_inside = 0;
}
