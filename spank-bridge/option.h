#ifndef VSE_OPTION_H
#define VSE_OPTION_H

#include <slurm/spank.h>

#include "args.h"

/* Register --vse=FILE; args is NULL where the option must be known but never acted on (remote). */
int vse_option_register(spank_t sp, const struct vse_args *args);

/* Hand the validated description to the prolog/epilog via the job control environment. */
int vse_option_export(spank_t sp);

/* Forget the validated description. */
void vse_option_free(void);

#endif
