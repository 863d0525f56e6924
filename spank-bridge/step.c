#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

#include "option.h"
#include "step.h"

/* Which mode of `vse exec` a step's task needs, or NULL when it stays on the host. */
static const char *step_mode(uint32_t step)
{
	switch (step) {
	case SLURM_BATCH_SCRIPT:
		return (vse_option_batch_inside() ? "--batch" : NULL);
	case SLURM_EXTERN_CONT:
	case SLURM_INTERACTIVE_STEP:
	case SLURM_PENDING_STEP:
		return (NULL);
	default:
		return ("--task");
	}
}

/* Say it where the user looks (the task's stderr reaches srun) and where the admin looks. */
static void report(const char *what, const char *cli, int err)
{
	dprintf(STDERR_FILENO, "vse: cannot run the task in the job's VMs: %s %s: %s\n", what, cli, strerror(err));
	slurm_error("vse: cannot run the task in the job's VMs: %s %s: %s", what, cli, strerror(err));
}

int vse_step_task_init(spank_t sp, const struct vse_args *args)
{
	const char *mode;
	struct rlimit core;
	char **argv = NULL, **env = NULL, **nargv;
	uint32_t step;
	spank_err_t rc;
	int argc = 0, i;

	if (!vse_option_step_wanted())
		return (0);
	rc = spank_get_item(sp, S_JOB_STEPID, &step);
	if (rc != ESPANK_SUCCESS) {
		slurm_error("vse: cannot tell the step of this task: spank_get_item(S_JOB_STEPID): %s", spank_strerror(rc));
		return (-1);
	}
	mode = step_mode(step);
	if (mode == NULL)
		return (0);
	rc = spank_get_item(sp, S_JOB_ARGV, &argc, &argv);
	if (rc == ESPANK_SUCCESS)
		rc = spank_get_item(sp, S_JOB_ENV, &env);
	if (rc != ESPANK_SUCCESS || argc < 1 || argv == NULL || env == NULL) {
		slurm_error("vse: cannot read the task's command line and environment: %s", spank_strerror(rc));
		return (-1);
	}
	nargv = calloc((size_t)argc + 5, sizeof(*nargv));
	if (nargv == NULL) {
		report("out of memory before starting", args->cli, ENOMEM);
		return (-1);
	}
	nargv[0] = args->cli;
	nargv[1] = "exec";
	nargv[2] = (char *)mode;
	nargv[3] = "--";
	for (i = 0; i < argc; i++)
		nargv[4 + i] = argv[i];
	/* A crash of the relay itself leaves no core file in the user's directory. */
	if (getrlimit(RLIMIT_CORE, &core) == 0) {
		core.rlim_cur = 0;
		setrlimit(RLIMIT_CORE, &core);
	}
	execve(args->cli, nargv, env);
	report("execve", args->cli, errno);
	free(nargv);
	return (-1);
}
