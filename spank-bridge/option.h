#ifndef VSE_OPTION_H
#define VSE_OPTION_H

#include <slurm/spank.h>

#include "args.h"

/* Register --vse=FILE and --vse-batch=host|inside; args is NULL where they are only recorded (remote). */
int vse_option_register(spank_t sp, const struct vse_args *args);

/* Hand the validated description to the prolog/epilog via the job control environment. */
int vse_option_export(spank_t sp);

/* Remote: whether --vse reached this step (its tasks then run in the job's VMs). */
int vse_option_step_wanted(void);

/* Whether --vse-batch=inside was given (the batch script then runs in the first VM). */
int vse_option_batch_inside(void);

/* Forget the validated description and what the options said. */
void vse_option_free(void);

#endif
