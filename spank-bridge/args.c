#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <slurm/spank.h>

#include "args.h"

#define VSE_TIMEOUT_DEFAULT 30
#define VSE_TIMEOUT_MAX 3600

static int key_is(const char *arg, size_t len, const char *key)
{
	return strlen(key) == len && strncmp(arg, key, len) == 0;
}

static int parse_cli(struct vse_args *args, const char *value)
{
	if (args->cli != NULL) {
		slurm_error("vse: plugstack.conf: vse= given twice; expected it once");
		return (-1);
	}
	if (value == NULL || value[0] != '/') {
		slurm_error("vse: plugstack.conf: vse=%s: expected the absolute path of the vse command; hint: vse=/usr/local/bin/vse",
			    value ? value : "");
		return (-1);
	}
	args->cli = strdup(value);
	if (args->cli == NULL) {
		slurm_error("vse: plugstack.conf: vse=: out of memory");
		return (-1);
	}
	return (0);
}

static int parse_timeout(struct vse_args *args, const char *value, int *seen)
{
	unsigned long n;
	char *end;

	if (*seen) {
		slurm_error("vse: plugstack.conf: timeout= given twice; expected it at most once");
		return (-1);
	}
	*seen = 1;
	if (value == NULL || value[0] < '0' || value[0] > '9')
		goto fail;
	errno = 0;
	n = strtoul(value, &end, 10);
	if (errno != 0 || *end != '\0' || n < 1 || n > VSE_TIMEOUT_MAX)
		goto fail;
	args->timeout = (unsigned int)n;
	return (0);

fail:
	slurm_error("vse: plugstack.conf: timeout=%s: expected a whole number of seconds from 1 to %d",
		    value ? value : "", VSE_TIMEOUT_MAX);
	return (-1);
}

int vse_args_parse(struct vse_args *args, int ac, char **av)
{
	int seen_timeout = 0;
	int i;

	args->cli = NULL;
	args->timeout = VSE_TIMEOUT_DEFAULT;

	for (i = 0; i < ac; i++) {
		const char *arg = av[i];
		const char *eq = strchr(arg, '=');
		const char *value = eq ? eq + 1 : NULL;
		size_t len = eq ? (size_t)(eq - arg) : strlen(arg);

		if (key_is(arg, len, "vse")) {
			if (parse_cli(args, value) < 0)
				goto fail;
		} else if (key_is(arg, len, "timeout")) {
			if (parse_timeout(args, value, &seen_timeout) < 0)
				goto fail;
		} else {
			slurm_error("vse: plugstack.conf: unknown argument \"%.*s\" (in \"%s\"); expected vse=PATH or timeout=SECONDS",
				    (int)len, arg, arg);
			goto fail;
		}
	}

	if (args->cli == NULL) {
		slurm_error("vse: plugstack.conf: missing argument vse=PATH (the absolute path of the vse command); hint: required /usr/local/lib/slurm/vse.so vse=/usr/local/bin/vse");
		goto fail;
	}
	return (0);

fail:
	vse_args_free(args);
	return (-1);
}

void vse_args_free(struct vse_args *args)
{
	free(args->cli);
	args->cli = NULL;
}
