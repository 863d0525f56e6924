#ifndef VSE_STEP_H
#define VSE_STEP_H

#include <slurm/spank.h>

#include "args.h"

/*
 * slurm_spank_task_init (remote, as the job's user, just before the task's exec): when the step
 * runs in the job's VMs, become `vse exec --task -- ARGV...` (the batch step with
 * --vse-batch=inside: `vse exec --batch -- SCRIPT...`). Returns 0 when the task stays on the host;
 * does not return when it was handed over; -1 (the task fails) when the hand-over failed.
 */
int vse_step_task_init(spank_t sp, const struct vse_args *args);

#endif
