/*
 * Unit-test harness for vse.so: plays Slurm's part (the spank_* and slurm_*
 * symbols the plugin leaves undefined; built with -rdynamic so dlopen binds
 * them here) and drives the callbacks the way sbatch, srun and slurmstepd do.
 * Each test runs in its own forked process with a fresh copy of the plugin.
 * Fake `vse` CLIs live in test/fixtures/.
 *
 * usage: harness /abs/build/vse.so /abs/test/fixtures
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

/* ---- Slurm, as the plugin sees it ---------------------------------------- */

#define MAX_OPTS 4
#define MAX_ENV 8
#define MAX_LOG 256

static spank_context_t fake_ctx;
static struct spank_option fake_opts[MAX_OPTS];
static int fake_nopts;
static struct {
	char *name;
	char *value;
	int overwrite;
} fake_env[MAX_ENV];
static int fake_nenv;
static char *fake_log[MAX_LOG];
static int fake_nlog;

static void fake_log_add(const char *fmt, va_list ap)
{
	char *line;

	if (vasprintf(&line, fmt, ap) < 0)
		return;
	if (fake_nlog < MAX_LOG)
		fake_log[fake_nlog++] = line;
	else
		free(line);
}

#define FAKE_LOGGER(fn)                          \
	void fn(const char *fmt, ...)            \
	{                                        \
		va_list ap;                      \
		va_start(ap, fmt);               \
		fake_log_add(fmt, ap);           \
		va_end(ap);                      \
	}

FAKE_LOGGER(slurm_error)
FAKE_LOGGER(slurm_info)
FAKE_LOGGER(slurm_verbose)
FAKE_LOGGER(slurm_debug)
FAKE_LOGGER(slurm_debug2)
FAKE_LOGGER(slurm_debug3)
FAKE_LOGGER(slurm_spank_log)

spank_context_t spank_context(void)
{
	return (fake_ctx);
}

int spank_remote(spank_t sp)
{
	(void)sp;
	return (fake_ctx == S_CTX_REMOTE);
}

const char *spank_strerror(spank_err_t err)
{
	static char buf[32];

	snprintf(buf, sizeof(buf), "spank error %d", (int)err);
	return (buf);
}

spank_err_t spank_option_register(spank_t sp, struct spank_option *opt)
{
	(void)sp;
	if (fake_nopts == MAX_OPTS)
		return (ESPANK_ERROR);
	fake_opts[fake_nopts++] = *opt;
	return (ESPANK_SUCCESS);
}

/* What slurmstepd knows about the task (remote context). */
static uint32_t fake_step;
static int fake_argc;
static char **fake_argv;
static char **fake_task_env;

spank_err_t spank_get_item(spank_t sp, spank_item_t item, ...)
{
	va_list ap;
	spank_err_t rc = ESPANK_SUCCESS;

	(void)sp;
	if (fake_ctx != S_CTX_REMOTE)
		return (ESPANK_NOT_REMOTE);
	va_start(ap, item);
	switch (item) {
	case S_JOB_STEPID:
		*va_arg(ap, uint32_t *) = fake_step;
		break;
	case S_JOB_ARGV:
		*va_arg(ap, int *) = fake_argc;
		*va_arg(ap, char ***) = fake_argv;
		break;
	case S_JOB_ENV:
		*va_arg(ap, char ***) = fake_task_env;
		break;
	default:
		rc = ESPANK_BAD_ARG;
	}
	va_end(ap);
	return (rc);
}

spank_err_t spank_job_control_setenv(spank_t sp, const char *name, const char *value, int overwrite)
{
	int i;

	(void)sp;
	if (fake_ctx != S_CTX_ALLOCATOR && fake_ctx != S_CTX_LOCAL)
		return (ESPANK_NOT_LOCAL);
	for (i = 0; i < fake_nenv; i++)
		if (strcmp(fake_env[i].name, name) == 0)
			break;
	if (i == MAX_ENV)
		return (ESPANK_ERROR);
	if (i < fake_nenv && !overwrite)
		return (ESPANK_ENV_EXISTS);
	if (i == fake_nenv)
		fake_env[fake_nenv++].name = strdup(name);
	free(fake_env[i].value);
	fake_env[i].value = strdup(value);
	fake_env[i].overwrite = overwrite;
	return (ESPANK_SUCCESS);
}

/* ---- test helpers ---------------------------------------------------------- */

static const char *plugin_path;
static const char *fixtures;
static char tmpdir[] = "/tmp/vse-spank-test-XXXXXX";
static char marker[PATH_MAX];
static int failed;
static spank_f *p_init, *p_post_opt, *p_exit, *p_task_init;
static int dummy_handle;
#define SP ((spank_t)&dummy_handle)

#define CHECK(cond)                                                                      \
	do {                                                                             \
		if (!(cond)) {                                                           \
			printf("#   check failed (harness.c:%d): %s\n", __LINE__, #cond);    \
			failed = 1;                                                      \
		}                                                                        \
	} while (0)

static int load_plugin(void)
{
	void *h = dlopen(plugin_path, RTLD_NOW | RTLD_LOCAL);

	if (h == NULL) {
		printf("#   dlopen: %s\n", dlerror());
		return (-1);
	}
	p_init = (spank_f *)dlsym(h, "slurm_spank_init");
	p_post_opt = (spank_f *)dlsym(h, "slurm_spank_init_post_opt");
	p_exit = (spank_f *)dlsym(h, "slurm_spank_exit");
	p_task_init = (spank_f *)dlsym(h, "slurm_spank_task_init");
	if (p_init == NULL || p_post_opt == NULL || p_exit == NULL || p_task_init == NULL) {
		printf("#   missing slurm_spank_init/init_post_opt/task_init/exit\n");
		return (-1);
	}
	return (0);
}

static char *fixture_arg(const char *fixture)
{
	static char buf[PATH_MAX + 8];

	snprintf(buf, sizeof(buf), "vse=%s/%s", fixtures, fixture);
	return (buf);
}

/* slurm_spank_init in context ctx with plugstack args vse=<fixture> and extra (either may be NULL). */
static int init_with(spank_context_t ctx, const char *fixture, const char *extra)
{
	char *av[2];
	int ac = 0;

	fake_ctx = ctx;
	if (fixture != NULL)
		av[ac++] = fixture_arg(fixture);
	if (extra != NULL)
		av[ac++] = (char *)extra;
	return (p_init(SP, ac, av));
}

static int post_opt(void)
{
	return (p_post_opt(SP, 0, NULL));
}

/* What sbatch/srun (remote 0) or slurmstepd (remote 1) do with --NAME=arg. */
static int give(const char *name, const char *arg, int remote)
{
	int i;

	for (i = 0; i < fake_nopts; i++)
		if (strcmp(fake_opts[i].name, name) == 0 && fake_opts[i].cb != NULL)
			return (fake_opts[i].cb(fake_opts[i].val, arg, remote));
	printf("#   --%s was not registered\n", name);
	failed = 1;
	return (-99);
}

static int give_option(const char *arg, int remote)
{
	return (give("vse", arg, remote));
}

static const char *env_get(const char *name)
{
	int i;

	for (i = 0; i < fake_nenv; i++)
		if (strcmp(fake_env[i].name, name) == 0)
			return (fake_env[i].value);
	return (NULL);
}

static int env_is(const char *name, const char *want)
{
	const char *got = env_get(name);

	if (got != NULL && strcmp(got, want) == 0)
		return (1);
	printf("#   %s: got %s, want %s\n", name, got ? got : "(unset)", want);
	return (0);
}

static int log_has(const char *needle)
{
	int i;

	for (i = 0; i < fake_nlog; i++)
		if (strstr(fake_log[i], needle) != NULL)
			return (1);
	return (0);
}

static int log_line_is(int i, const char *want)
{
	if (i < fake_nlog && strcmp(fake_log[i], want) == 0)
		return (1);
	printf("#   log line %d: got %s\n#   want %s\n", i, i < fake_nlog ? fake_log[i] : "(none)", want);
	return (0);
}

/* How many times a fixture CLI ran (each run appends a line to the marker file). */
static int cli_runs(void)
{
	FILE *f = fopen(marker, "r");
	int c, n = 0;

	if (f == NULL)
		return (0);
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return (n);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* Gone, or a zombie waiting for whichever process inherited it. */
static int is_dead(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (f == NULL)
		return (1);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return (p != NULL && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'));
}

/* ---- tests ----------------------------------------------------------------- */

static void t_exports_only_spank_and_plugin_symbols(void)
{
	char cmd[PATH_MAX + 64], line[512], name[256];
	int found = 0, bad = 0;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "nm -D --defined-only '%s'", plugin_path);
	p = popen(cmd, "r");
	CHECK(p != NULL);
	if (p == NULL)
		return;
	while (fgets(line, sizeof(line), p) != NULL) {
		if (sscanf(line, "%*s %*s %255s", name) != 1)
			continue;
		if (strncmp(name, "slurm_spank_", 12) != 0 && strncmp(name, "plugin_", 7) != 0) {
			printf("#   unexpected export: %s\n", name);
			bad++;
		}
		found += strcmp(name, "plugin_name") == 0 || strcmp(name, "plugin_type") == 0 ||
			 strcmp(name, "plugin_version") == 0 || strcmp(name, "slurm_spank_init") == 0;
	}
	CHECK(pclose(p) == 0);
	CHECK(bad == 0);
	CHECK(found == 4);

	snprintf(cmd, sizeof(cmd), "readelf -d '%s'", plugin_path);
	p = popen(cmd, "r");
	CHECK(p != NULL);
	if (p == NULL)
		return;
	while (fgets(line, sizeof(line), p) != NULL)
		if (strstr(line, "NEEDED") != NULL && strstr(line, "libslurm") != NULL)
			bad++;
	CHECK(pclose(p) == 0);
	CHECK(bad == 0);
}

static void check_registers(spank_context_t ctx)
{
	CHECK(init_with(ctx, "vse-ok", NULL) == 0);
	CHECK(fake_nopts == 2);
	if (fake_nopts != 2)
		return;
	CHECK(strcmp(fake_opts[0].name, "vse") == 0);
	CHECK(fake_opts[0].arginfo != NULL && strcmp(fake_opts[0].arginfo, "FILE") == 0);
	CHECK(fake_opts[0].has_arg == 1);
	CHECK(fake_opts[0].cb != NULL);
	CHECK(strcmp(fake_opts[1].name, "vse-batch") == 0);
	CHECK(fake_opts[1].has_arg == 1);
	CHECK(fake_opts[1].cb != NULL);
	CHECK(fake_nlog == 0);
}

static void t_init_registers_option_in_sbatch(void)
{
	check_registers(S_CTX_ALLOCATOR);
}

static void t_init_registers_option_in_srun(void)
{
	check_registers(S_CTX_LOCAL);
}

static void t_valid_file_is_exported_to_prolog(void)
{
	CHECK(init_with(S_CTX_ALLOCATOR, "vse-ok", NULL) == 0);
	CHECK(give_option("/data/hello.xml", 0) == 0);
	CHECK(cli_runs() == 1);
	CHECK(fake_nenv == 0);
	CHECK(post_opt() == 0);
	CHECK(fake_nenv == 2);
	CHECK(env_is("VSE_DESC", "{\"name\":\"hello\",\"file\":\"/data/hello.xml\"}"));
	CHECK(env_is("VSE_FILE", "/data/hello.xml"));
	CHECK(fake_nenv == 2 && fake_env[0].overwrite == 1 && fake_env[1].overwrite == 1);
	CHECK(fake_nlog == 0);
}

static void t_relative_file_resolves_against_cwd(void)
{
	char want[PATH_MAX + 32];

	CHECK(chdir(tmpdir) == 0);
	CHECK(init_with(S_CTX_LOCAL, "vse-ok", NULL) == 0);
	CHECK(give_option("sub/hello.xml", 0) == 0);
	CHECK(post_opt() == 0);
	snprintf(want, sizeof(want), "%s/sub/hello.xml", tmpdir);
	CHECK(env_is("VSE_FILE", want));
	CHECK(env_get("VSE_DESC") != NULL && strstr(env_get("VSE_DESC"), want) != NULL);

	/* A later, different value wins (sbatch: #SBATCH line, then the command line). */
	CHECK(give_option("./other.xml", 0) == 0);
	CHECK(post_opt() == 0);
	snprintf(want, sizeof(want), "%s/other.xml", tmpdir);
	CHECK(env_is("VSE_FILE", want));
	CHECK(cli_runs() == 2);
}

static void t_cli_gets_devnull_stdin_and_no_inherited_fds(void)
{
	int p[2], fd;

	/* stdin a pipe and fd 9 open without close-on-exec: the CLI must see neither. */
	CHECK(pipe(p) == 0);
	CHECK(dup2(p[0], STDIN_FILENO) == STDIN_FILENO);
	fd = open("/dev/null", O_RDONLY);
	CHECK(fd >= 0 && dup2(fd, 9) == 9);
	CHECK(init_with(S_CTX_ALLOCATOR, "vse-ok", NULL) == 0);
	CHECK(give_option("/data/hello.xml", 0) == 0);
	CHECK(fake_nlog == 0);
}

static void t_invalid_file_forwards_cli_errors(void)
{
	CHECK(init_with(S_CTX_ALLOCATOR, "vse-invalid", NULL) == 0);
	CHECK(give_option("/data/bad.xml", 0) == -1);
	CHECK(log_line_is(0, "vse: /data/bad.xml:3:15: /vse/vm/@memory: \"lots\" is not a size; "
			     "expected a number with K, M or G; hint: memory=\"128M\""));
	CHECK(log_line_is(1, "vse: /data/bad.xml:4:3: /vse/disk: unknown element; expected one of os, vm; "
			     "hint: check the spelling"));
	CHECK(log_has("job refused"));
	CHECK(post_opt() == 0);
	CHECK(fake_nenv == 0);
}

static void t_unknown_plugstack_arg_fails_naming_key(void)
{
	CHECK(init_with(S_CTX_ALLOCATOR, "vse-ok", "colour=blue") == -1);
	CHECK(log_has("\"colour\""));
	CHECK(fake_nopts == 0);
}

static void t_bare_plugstack_word_fails_naming_it(void)
{
	CHECK(init_with(S_CTX_LOCAL, "vse-ok", "debug") == -1);
	CHECK(log_has("\"debug\""));
}

static void t_missing_vse_arg_fails(void)
{
	CHECK(init_with(S_CTX_ALLOCATOR, NULL, "timeout=5") == -1);
	CHECK(log_has("missing argument vse="));
	CHECK(fake_nopts == 0);
}

static void t_relative_vse_arg_fails(void)
{
	CHECK(init_with(S_CTX_ALLOCATOR, NULL, "vse=bin/vse") == -1);
	CHECK(log_has("vse=bin/vse: expected the absolute path"));
}

static void t_bad_timeout_fails_naming_value(void)
{
	CHECK(init_with(S_CTX_ALLOCATOR, "vse-ok", "timeout=abc") == -1);
	CHECK(log_has("timeout=abc: expected a whole number"));
	CHECK(init_with(S_CTX_ALLOCATOR, "vse-ok", "timeout=0") == -1);
	CHECK(log_has("timeout=0: expected a whole number"));
}

static void t_hanging_cli_is_killed_at_timeout(void)
{
	char pidfile[PATH_MAX + 8];
	int64_t start, elapsed;
	FILE *f;
	int pid = 0, i;

	snprintf(pidfile, sizeof(pidfile), "%s.pid", marker);
	setenv("VSE_TEST_PIDFILE", pidfile, 1);
	CHECK(init_with(S_CTX_ALLOCATOR, "vse-hang", "timeout=1") == 0);
	start = now_ms();
	CHECK(give_option("/data/hello.xml", 0) == -1);
	elapsed = now_ms() - start;
	printf("#   returned after %lld ms\n", (long long)elapsed);
	CHECK(elapsed >= 900 && elapsed < 3000);
	CHECK(log_has("did not finish within 1 s"));
	CHECK(log_has("vse: vse-hang: waiting forever"));

	/* Its background sleep shared the process group and must be gone too. */
	f = fopen(pidfile, "r");
	CHECK(f != NULL && fscanf(f, "%d", &pid) == 1 && pid > 0);
	if (f != NULL)
		fclose(f);
	for (i = 0; pid > 0 && i < 100 && !is_dead(pid); i++)
		usleep(10000);
	CHECK(pid > 0 && is_dead(pid));
	CHECK(post_opt() == 0);
	CHECK(fake_nenv == 0);
}

static void t_missing_cli_is_reported(void)
{
	CHECK(init_with(S_CTX_ALLOCATOR, NULL, "vse=/nonexistent/bin/vse") == 0);
	CHECK(give_option("/data/hello.xml", 0) == -1);
	CHECK(log_has("cannot execute /nonexistent/bin/vse"));
	CHECK(log_has("No such file or directory"));
}

static void t_cli_printing_two_lines_is_refused(void)
{
	CHECK(init_with(S_CTX_ALLOCATOR, "vse-twolines", NULL) == 0);
	CHECK(give_option("/data/hello.xml", 0) == -1);
	CHECK(log_has("printed more than one line; expected one line of JSON"));
}

static void t_empty_file_argument_is_refused(void)
{
	CHECK(init_with(S_CTX_ALLOCATOR, "vse-ok", NULL) == 0);
	CHECK(give_option("", 0) == -1);
	CHECK(log_has("--vse: missing FILE"));
	CHECK(cli_runs() == 0);
}

static void t_same_value_twice_runs_cli_once(void)
{
	CHECK(init_with(S_CTX_ALLOCATOR, "vse-ok", NULL) == 0);
	CHECK(give_option("/data/hello.xml", 0) == 0);
	CHECK(give_option("/data/hello.xml", 0) == 0);
	CHECK(cli_runs() == 1);
}

static void t_remote_context_does_nothing(void)
{
	CHECK(init_with(S_CTX_REMOTE, "vse-ok", NULL) == 0);
	CHECK(fake_nopts == 2);
	CHECK(give_option("/data/hello.xml", 1) == 0);
	CHECK(post_opt() == 0);
	CHECK(fake_nenv == 0);
	CHECK(cli_runs() == 0);
	CHECK(fake_nlog == 0);
}

static void t_no_option_no_setenv(void)
{
	CHECK(init_with(S_CTX_ALLOCATOR, "vse-ok", NULL) == 0);
	CHECK(post_opt() == 0);
	CHECK(fake_nenv == 0);
	CHECK(cli_runs() == 0);
	CHECK(fake_nlog == 0);
}

static void t_slurmd_and_job_script_contexts_do_nothing(void)
{
	CHECK(init_with(S_CTX_SLURMD, NULL, "bogus") == 0);
	CHECK(init_with(S_CTX_JOB_SCRIPT, NULL, "bogus") == 0);
	CHECK(post_opt() == 0);
	CHECK(fake_nopts == 0);
	CHECK(fake_nenv == 0);
	CHECK(fake_nlog == 0);
}


/* ---- srun inside an allocation --------------------------------------------- */

static void in_allocation_of(const char *file, const char *inherited)
{
	setenv("SLURM_JOB_ID", "7", 1);
	if (file != NULL)
		setenv("SLURM_SPANK_VSE_FILE", file, 1);
	if (inherited != NULL)
		setenv("SLURM_SPANK__SLURM_SPANK_OPTION_vse_vse", inherited, 1);
}

static void t_srun_in_allocation_takes_the_inherited_option_without_validating(void)
{
	CHECK(chdir(tmpdir) == 0);
	in_allocation_of("/data/hello.xml", "hello.xml");
	CHECK(init_with(S_CTX_LOCAL, "vse-ok", NULL) == 0);
	CHECK(give_option("hello.xml", 0) == 0);
	CHECK(cli_runs() == 0);
	CHECK(post_opt() == 0);
	CHECK(fake_nenv == 0);
	CHECK(fake_nlog == 0);
}

static void t_srun_in_allocation_takes_the_same_file_given_again(void)
{
	in_allocation_of("/data/hello.xml", NULL);
	CHECK(init_with(S_CTX_LOCAL, "vse-ok", NULL) == 0);
	CHECK(give_option("/data/hello.xml", 0) == 0);
	CHECK(cli_runs() == 0);
	CHECK(fake_nlog == 0);
}

static void t_srun_in_allocation_refuses_another_file(void)
{
	in_allocation_of("/data/hello.xml", "/data/hello.xml");
	CHECK(init_with(S_CTX_LOCAL, "vse-ok", NULL) == 0);
	CHECK(give_option("/data/other.xml", 0) == -1);
	CHECK(cli_runs() == 0);
	CHECK(log_has("vse: --vse=/data/other.xml: job 7 runs the VMs of /data/hello.xml"));
	CHECK(log_has("a step cannot change them"));
}

static void t_srun_in_allocation_without_vms_is_refused(void)
{
	in_allocation_of(NULL, NULL);
	CHECK(init_with(S_CTX_LOCAL, "vse-ok", NULL) == 0);
	CHECK(give_option("/data/hello.xml", 0) == -1);
	CHECK(cli_runs() == 0);
	CHECK(log_has("job 7 was allocated without --vse"));
}

static void t_sbatch_in_a_job_validates_as_usual(void)
{
	/* an allocator makes a new job: it validates, whatever job it was started from */
	in_allocation_of("/data/old.xml", "old.xml");
	CHECK(init_with(S_CTX_ALLOCATOR, "vse-ok", NULL) == 0);
	CHECK(give_option("/data/hello.xml", 0) == 0);
	CHECK(cli_runs() == 1);
	CHECK(post_opt() == 0);
	CHECK(env_is("VSE_FILE", "/data/hello.xml"));
}

/* ---- --vse-batch ------------------------------------------------------------ */

static void t_batch_option_takes_host_or_inside(void)
{
	CHECK(init_with(S_CTX_ALLOCATOR, "vse-ok", NULL) == 0);
	CHECK(give("vse-batch", "inside", 0) == 0);
	CHECK(give("vse-batch", "host", 0) == 0);
	CHECK(fake_nlog == 0);
	CHECK(give("vse-batch", "elsewhere", 0) == -1);
	CHECK(log_has("vse: --vse-batch=elsewhere: expected host or inside"));
}

static void t_batch_inside_needs_vse(void)
{
	CHECK(init_with(S_CTX_ALLOCATOR, "vse-ok", NULL) == 0);
	CHECK(give("vse-batch", "inside", 0) == 0);
	CHECK(post_opt() == -1);
	CHECK(log_has("--vse-batch=inside: the job has no --vse=FILE"));
}

/* ---- task_init: the hand-over to `vse exec --task` -------------------------- */

/* What the task process logged and wrote on its stderr (task_init runs in a child: it may exec). */
static char task_log[8192];

/*
 * Run slurm_spank_task_init as slurmstepd would in a task of step `step` with --vse (and
 * --vse-batch) as given; the plugstack names the fixture CLI `vse-task`, which writes what it got
 * to the marker. Returns task_init's result, or 1000 when the process was replaced (exec).
 */
static int task_init_as(uint32_t step, const char *cli_arg, const char *vse, const char *batch)
{
	size_t len = 0;
	ssize_t n;
	int j;

	static char marker_env[PATH_MAX + 32];
	static char *argv[] = { "/usr/bin/hostname", "-s", "two words", NULL };
	static char *env[] = { "SLURM_LOCALID=1", "SLURM_PROCID=3", "FOO=bar baz", marker_env, NULL };
	int p[2], status, rv = -99;
	pid_t pid;

	snprintf(marker_env, sizeof(marker_env), "VSE_TEST_MARKER=%s", marker);
	fake_step = step;
	fake_argc = 3;
	fake_argv = argv;
	fake_task_env = env;
	CHECK(init_with(S_CTX_REMOTE, cli_arg == NULL ? "vse-task" : NULL, cli_arg) == 0);
	if (vse != NULL)
		CHECK(give_option(vse, 1) == 0);
	if (batch != NULL)
		CHECK(give("vse-batch", batch, 1) == 0);
	CHECK(pipe(p) == 0);
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		dup2(p[1], STDERR_FILENO);
		rv = p_task_init(SP, 0, NULL);
		fflush(stderr);
		dprintf(p[1], "rv=%d\n", rv);
		for (j = 0; j < fake_nlog; j++)
			dprintf(p[1], "log: %s\n", fake_log[j]);
		_exit(0);
	}
	close(p[1]);
	while (len < sizeof(task_log) - 1 && (n = read(p[0], task_log + len, sizeof(task_log) - 1 - len)) > 0)
		len += (size_t)n;
	task_log[len] = '\0';
	close(p[0]);
	rv = 1000;
	for (const char *l = task_log; (l = strstr(l, "rv=")) != NULL; l++)
		if (l == task_log || l[-1] == '\n')
			rv = atoi(l + 3);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return (rv);
}

/* The marker file's text ("" when the fixture never ran). */
static const char *marker_text(void)
{
	static char buf[4096];
	FILE *f = fopen(marker, "r");
	size_t n = 0;

	buf[0] = '\0';
	if (f != NULL) {
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	return (buf);
}

static int marker_is(const char *want)
{
	const char *got = marker_text();

	if (strcmp(got, want) == 0)
		return (1);
	printf("#   marker:\n%s#   want:\n%s", got, want);
	return (0);
}

static void t_task_of_a_vse_step_becomes_vse_exec_task(void)
{
	CHECK(task_init_as(3, NULL, "hello.xml", NULL) == 1000);
	/* argv one per line, then the environment exactly as the task's, then the core limit */
	CHECK(marker_is("exec\n--task\n--\n/usr/bin/hostname\n-s\ntwo words\n"
			"env: FOO=bar baz\nenv: SLURM_LOCALID=1\nenv: SLURM_PROCID=3\ncore: 0\n"));
}

static void t_task_without_vse_stays_on_the_host(void)
{
	CHECK(task_init_as(3, NULL, NULL, NULL) == 0);
	CHECK(marker_is(""));
	CHECK(fake_nlog == 0);
}

static void t_batch_step_stays_on_the_host_by_default(void)
{
	CHECK(task_init_as(SLURM_BATCH_SCRIPT, NULL, "hello.xml", NULL) == 0);
	CHECK(task_init_as(SLURM_BATCH_SCRIPT, NULL, "hello.xml", "host") == 0);
	CHECK(marker_is(""));
}

static void t_batch_step_inside_becomes_vse_exec_batch(void)
{
	CHECK(task_init_as(SLURM_BATCH_SCRIPT, NULL, "hello.xml", "inside") == 1000);
	CHECK(strncmp(marker_text(), "exec\n--batch\n--\n/usr/bin/hostname\n", 34) == 0);
}

static void t_extern_and_interactive_steps_stay_on_the_host(void)
{
	CHECK(task_init_as(SLURM_EXTERN_CONT, NULL, "hello.xml", "inside") == 0);
	CHECK(task_init_as(SLURM_INTERACTIVE_STEP, NULL, "hello.xml", NULL) == 0);
	CHECK(marker_is(""));
}

static void t_task_hand_over_failure_fails_the_task_and_says_why(void)
{
	CHECK(task_init_as(0, "vse=/nonexistent/bin/vse", "hello.xml", NULL) == -1);
	/* on the task's stderr (srun shows it) and in the log */
	CHECK(strstr(task_log, "\nlog: vse: cannot run the task in the job's VMs: execve /nonexistent/bin/vse: No such file or directory\n") != NULL);
	CHECK(strncmp(task_log, "vse: cannot run the task in the job's VMs: execve /nonexistent/bin/vse: No such file or directory\n", 97) == 0);
	if (failed)
		printf("#   task's stderr and log:\n%s", task_log);
}

/* ---- runner ---------------------------------------------------------------- */

static const struct {
	const char *name;
	void (*fn)(void);
} tests[] = {
#define T(fn) { #fn + 2, fn }
	T(t_exports_only_spank_and_plugin_symbols),
	T(t_init_registers_option_in_sbatch),
	T(t_init_registers_option_in_srun),
	T(t_valid_file_is_exported_to_prolog),
	T(t_relative_file_resolves_against_cwd),
	T(t_cli_gets_devnull_stdin_and_no_inherited_fds),
	T(t_invalid_file_forwards_cli_errors),
	T(t_unknown_plugstack_arg_fails_naming_key),
	T(t_bare_plugstack_word_fails_naming_it),
	T(t_missing_vse_arg_fails),
	T(t_relative_vse_arg_fails),
	T(t_bad_timeout_fails_naming_value),
	T(t_hanging_cli_is_killed_at_timeout),
	T(t_missing_cli_is_reported),
	T(t_cli_printing_two_lines_is_refused),
	T(t_empty_file_argument_is_refused),
	T(t_same_value_twice_runs_cli_once),
	T(t_remote_context_does_nothing),
	T(t_no_option_no_setenv),
	T(t_slurmd_and_job_script_contexts_do_nothing),
	T(t_srun_in_allocation_takes_the_inherited_option_without_validating),
	T(t_srun_in_allocation_takes_the_same_file_given_again),
	T(t_srun_in_allocation_refuses_another_file),
	T(t_srun_in_allocation_without_vms_is_refused),
	T(t_sbatch_in_a_job_validates_as_usual),
	T(t_batch_option_takes_host_or_inside),
	T(t_batch_inside_needs_vse),
	T(t_task_of_a_vse_step_becomes_vse_exec_task),
	T(t_task_without_vse_stays_on_the_host),
	T(t_batch_step_stays_on_the_host_by_default),
	T(t_batch_step_inside_becomes_vse_exec_batch),
	T(t_extern_and_interactive_steps_stay_on_the_host),
	T(t_task_hand_over_failure_fails_the_task_and_says_why),
#undef T
};

static void run_child(int i)
{
	int j;

	alarm(30);
	if (load_plugin() < 0)
		_exit(1);
	tests[i].fn();
	for (j = 0; j < fake_nlog; j++)
		if (strncmp(fake_log[j], "vse: ", 5) != 0) {
			printf("#   log line without \"vse: \" prefix: %s\n", fake_log[j]);
			failed = 1;
		}
	CHECK(p_exit(SP, 0, NULL) == 0);
	if (failed)
		for (j = 0; j < fake_nlog; j++)
			printf("#   log: %s\n", fake_log[j]);
	fflush(stdout);
	_exit(failed ? 1 : 0);
}

static void remove_tmpdir(void)
{
	char path[PATH_MAX];
	struct dirent *e;
	DIR *d = opendir(tmpdir);

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", tmpdir, e->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(tmpdir);
}

int main(int argc, char **argv)
{
	int n = (int)(sizeof(tests) / sizeof(tests[0]));
	int passed = 0, nfailed = 0, i, status;
	pid_t pid;

	if (argc != 3 || argv[1][0] != '/' || argv[2][0] != '/') {
		fprintf(stderr, "usage: %s /abs/path/vse.so /abs/path/fixtures\n", argv[0]);
		return (2);
	}
	plugin_path = argv[1];
	fixtures = argv[2];
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return (2);
	}

	printf("1..%d\n", n);
	for (i = 0; i < n; i++) {
		snprintf(marker, sizeof(marker), "%s/runs.%d", tmpdir, i);
		setenv("VSE_TEST_MARKER", marker, 1);
		fflush(stdout);
		pid = fork();
		if (pid < 0) {
			perror("fork");
			return (2);
		}
		if (pid == 0)
			run_child(i);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
			printf("ok %d - %s\n", i + 1, tests[i].name);
			passed++;
		} else {
			if (WIFSIGNALED(status))
				printf("#   killed by signal %d\n", WTERMSIG(status));
			printf("not ok %d - %s\n", i + 1, tests[i].name);
			nfailed++;
		}
	}
	remove_tmpdir();
	printf("spank: %d passed, %d failed\n", passed, nfailed);
	return (nfailed == 0 ? 0 : 1);
}
