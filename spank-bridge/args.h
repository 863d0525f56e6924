#ifndef VSE_ARGS_H
#define VSE_ARGS_H

/* Settings from the plugin's plugstack.conf line. */
struct vse_args {
	char *cli;            /* absolute path of the vse command (vse=) */
	unsigned int timeout; /* seconds allowed for `vse validate` (timeout=) */
};

/* Parse the plugstack.conf arguments; logs and returns -1 on any bad one. */
int vse_args_parse(struct vse_args *args, int ac, char **av);

/* Release what vse_args_parse allocated; safe to call twice. */
void vse_args_free(struct vse_args *args);

#endif
