/*
 * vse SPANK plugin: entry points only. --vse=FILE is validated on the submit
 * host and handed to the prolog/epilog as SPANK_VSE_DESC / SPANK_VSE_FILE;
 * on the nodes, each task of a step that got --vse becomes `vse exec --task`,
 * which runs it in the job's VMs.
 */
#include <stddef.h>

#include <slurm/spank.h>

#include "args.h"
#include "option.h"
#include "step.h"

SPANK_PLUGIN(vse, 1)

static struct vse_args vse_args;

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	switch (spank_context()) {
	case S_CTX_ALLOCATOR:
	case S_CTX_LOCAL:
		if (vse_args_parse(&vse_args, ac, av) < 0)
			return (-1);
		return (vse_option_register(sp, &vse_args));
	case S_CTX_REMOTE:
		/* Registered so slurmstepd learns the forwarded options; task_init acts on them. */
		if (vse_args_parse(&vse_args, ac, av) < 0)
			return (-1);
		return (vse_option_register(sp, NULL));
	default:
		return (0);
	}
}

int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	(void)ac;
	(void)av;
	switch (spank_context()) {
	case S_CTX_ALLOCATOR:
	case S_CTX_LOCAL:
		return (vse_option_export(sp));
	default:
		return (0);
	}
}

int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	(void)ac;
	(void)av;
	if (spank_context() != S_CTX_REMOTE)
		return (0);
	return (vse_step_task_init(sp, &vse_args));
}

int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	(void)sp;
	(void)ac;
	(void)av;
	vse_option_free();
	vse_args_free(&vse_args);
	return (0);
}
