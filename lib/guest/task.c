/*
 * vse-task: runs one command inside a vse guest for `vse exec` (and job steps), started by the
 * guest's SSH server as root with a single argument: base64 of NUL-separated fields
 *
 *   "vse-task-1" ID UID GID CWD NENV ENV... ARGV...
 *   "vse-signal-1" ID SIGNAL
 *
 * (base64, so the command line the SSH server hands to the shell holds no shell syntax at all).
 * A request too long for a command line (dropbear takes at most 9000 bytes: a task's whole
 * environment can be more) comes as `-LEN` instead, and its LEN bytes of base64 come first on
 * stdin; the rest of stdin is the command's.
 * ID (16 hex digits, chosen by the host) names the command in /run/vse-task/ID while it runs, so a
 * second request on the same connection can signal it (the SSH "signal" request is not honoured
 * by every server, dropbear's included).
 *
 * It runs ARGV as UID:GID (unless 0), detached by setsid(), with exactly ENV as environment and
 * CWD as working directory (or /tmp, with a message, when CWD is missing: what slurmstepd does).
 * A command named by a path in a standard system directory that the guest does not have there
 * is looked up by its name on PATH: srun names `hostname` by the host's /usr/bin/hostname, which
 * a busybox guest keeps in /bin (on a merged-/usr Debian both are the same file anyway).
 * Signals it receives, and those a "vse-signal-1" request names, go to the command's whole
 * process group. When the connection goes away (the SSH server's per-connection process ends: our
 * parent-death signal), the group gets SIGTERM, then SIGKILL after two seconds. When the command
 * ends, whatever is left of its group is killed, and vse-task ends the same way the command did:
 * the same exit code, or the same signal (so the SSH server reports exit-signal).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAGIC "vse-task-1"
#define SIGNAL_MAGIC "vse-signal-1"
#define RUNDIR "/run/vse-task"

static int b64val(int c)
{
	if (c >= 'A' && c <= 'Z') return c - 'A';
	if (c >= 'a' && c <= 'z') return c - 'a' + 26;
	if (c >= '0' && c <= '9') return c - '0' + 52;
	if (c == '+') return 62;
	if (c == '/') return 63;
	return -1;
}

/* Decodes standard base64 (padding optional); returns the length, or -1 on a bad character. */
static long b64decode(const char *in, char *out)
{
	long n = 0;
	unsigned acc = 0;
	int bits = 0;
	for (; *in && *in != '='; in++) {
		int v = b64val((unsigned char)*in);
		if (v < 0) return -1;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (char)((acc >> bits) & 0xff);
		}
	}
	return n;
}

static void die(const char *msg)
{
	fprintf(stderr, "vse-task: %s\n", msg);
	exit(125);
}

static long number(const char *s, const char *what)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < 0) {
		fprintf(stderr, "vse-task: bad %s: %s\n", what, s);
		exit(125);
	}
	return v;
}

static int valid_id(const char *id)
{
	size_t n = strlen(id);
	if (n != 16) return 0;
	for (size_t i = 0; i < n; i++) {
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'))) return 0;
	}
	return 1;
}

/* "vse-signal-1" ID SIGNAL: send SIGNAL to the process group of the running command ID */
static int send_signal(char **f, size_t nf)
{
	if (nf != 3 || !valid_id(f[1])) die("bad signal request");
	int sig = (int)number(f[2], "signal");
	char path[64];
	snprintf(path, sizeof path, RUNDIR "/%s", f[1]);
	/* the command may be starting still: give it two seconds to appear */
	FILE *fp = NULL;
	for (int i = 0; i < 20 && !(fp = fopen(path, "r")); i++) {
		struct timespec t = { 0, 100000000 };
		nanosleep(&t, NULL);
	}
	if (!fp) {
		fprintf(stderr, "vse-task: no command %s runs (it ended?)\n", f[1]);
		return 1;
	}
	long pid = 0;
	int ok = fscanf(fp, "%ld", &pid) == 1 && pid > 1;
	fclose(fp);
	if (!ok) die("bad pid file");
	if (kill((pid_t)-pid, sig) != 0 && kill((pid_t)pid, sig) != 0) {
		fprintf(stderr, "vse-task: cannot signal %ld: %s\n", pid, strerror(errno));
		return 1;
	}
	return 0;
}

/* Exactly len bytes of stdin (no more: what follows is the command's stdin), NUL-terminated. */
static char *read_request(long len)
{
	if (len <= 0 || len > 64L * 1024 * 1024) die("bad request length");
	char *text = malloc((size_t)len + 1);
	if (!text) die("out of memory");
	for (long got = 0; got < len;) {
		ssize_t r = read(STDIN_FILENO, text + got, (size_t)(len - got));
		if (r < 0 && errno == EINTR) continue;
		if (r <= 0) die("the request ended early on stdin");
		got += r;
	}
	text[len] = '\0';
	return text;
}

/* Is PATH a file directly in one of the directories every PATH holds? */
static int in_system_dir(const char *path)
{
	static const char *const dirs[] = { "/usr/local/sbin/", "/usr/local/bin/", "/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/" };
	for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
		size_t n = strlen(dirs[i]);
		if (strncmp(path, dirs[i], n) == 0 && path[n] != '\0' && strchr(path + n, '/') == NULL) return 1;
	}
	return 0;
}

static const int forwarded[] = { SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGCONT, SIGTSTP, SIGWINCH };

int main(int argc, char **argv)
{
	if (argc != 2) die("usage: vse-task BASE64|-LEN (run by vse exec, not by hand)");
	/* our parent is the SSH server's per-connection process: when it goes, the connection has gone */
	pid_t parent = getppid();
	if (prctl(PR_SET_PDEATHSIG, SIGHUP) != 0) die("prctl failed");
	if (getppid() != parent) return 129;

	const char *text = argv[1];
	if (text[0] == '-') text = read_request(number(text + 1, "request length"));
	size_t len = strlen(text);
	char *buf = malloc(len + 1);
	if (!buf) die("out of memory");
	long n = b64decode(text, buf);
	if (n < 0) die("the request is not base64");
	buf[n] = '\0';
	/* split into fields */
	size_t nf = 0;
	for (long i = 0; i < n; i++) if (buf[i] == '\0') nf++;
	if (n == 0 || buf[n - 1] != '\0') die("the request does not end with a NUL");
	char **f = calloc(nf + 1, sizeof *f);
	if (!f) die("out of memory");
	for (long i = 0, k = 0; i < n; k++) {
		f[k] = buf + i;
		i += (long)strlen(buf + i) + 1;
	}
	if (nf >= 1 && strcmp(f[0], SIGNAL_MAGIC) == 0) return send_signal(f, nf);
	if (nf < 7 || strcmp(f[0], MAGIC) != 0) die("not a vse-task-1 request");
	const char *id = f[1];
	if (!valid_id(id)) die("bad command id");
	uid_t uid = (uid_t)number(f[2], "uid");
	gid_t gid = (gid_t)number(f[3], "gid");
	const char *cwd = f[4];
	size_t nenv = (size_t)number(f[5], "environment count");
	if (6 + nenv >= nf) die("the request names no command");
	char **env = f + 6;
	char **cmd = f + 6 + nenv;
	/* cmd is NULL-terminated: calloc left f[nf] NULL */
	char **envp = calloc(nenv + 1, sizeof *envp);
	if (!envp) die("out of memory");
	memcpy(envp, env, nenv * sizeof *envp);

	sigset_t all, old;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	pid_t child = fork();
	if (child < 0) die("fork failed");
	if (child == 0) {
		setsid();
		for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
		sigprocmask(SIG_SETMASK, &old, NULL);
		if (uid != 0 || gid != 0) {
			if (setgroups(1, &gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
				fprintf(stderr, "vse-task: cannot become uid %u gid %u: %s\n", (unsigned)uid, (unsigned)gid, strerror(errno));
				_exit(125);
			}
		}
		if (chdir(cwd) != 0) {
			fprintf(stderr, "vse-task: couldn't chdir to `%s': %s: going to /tmp instead\n", cwd, strerror(errno));
			if (chdir("/tmp") != 0) _exit(125);
		}
		environ = envp;
		execvp(cmd[0], cmd);
		int e = errno;
		if (e == ENOENT && in_system_dir(cmd[0])) {
			execvp(strrchr(cmd[0], '/') + 1, cmd);
			if (errno != ENOENT) e = errno;
		}
		fprintf(stderr, "vse-task: %s: %s\n", cmd[0], strerror(e));
		_exit(e == ENOENT ? 127 : 126);
	}

	/* the command's name for signal requests: its pid (= its process group) */
	char idpath[64];
	snprintf(idpath, sizeof idpath, RUNDIR "/%s", id);
	mkdir(RUNDIR, 0700);
	FILE *idf = fopen(idpath, "w");
	if (idf) {
		fprintf(idf, "%ld\n", (long)child);
		fclose(idf);
	}

	int status = 0;
	int hung_up = 0;
	for (;;) {
		siginfo_t si;
		int sig;
		if (hung_up) {
			struct timespec left = { 2, 0 };
			sig = sigtimedwait(&all, &si, &left);
			if (sig < 0 && errno == EAGAIN) {
				kill(-child, SIGKILL);
				continue;
			}
		} else {
			sig = sigwaitinfo(&all, &si);
		}
		if (sig < 0) continue;
		if (sig == SIGCHLD) {
			pid_t w = waitpid(child, &status, WNOHANG);
			if (w == child) break;
			continue;
		}
		if (sig == SIGHUP || sig == SIGPIPE) {
			/* the connection went away: stop the command's group */
			kill(-child, SIGTERM);
			kill(-child, SIGCONT);
			hung_up = 1;
			continue;
		}
		for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++) {
			if (forwarded[i] == sig) kill(-child, sig);
		}
	}
	/* what the command left behind in its group goes with it (a step's processes end with it) */
	kill(-child, SIGKILL);
	unlink(idpath);
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		struct rlimit none = { 0, 0 };
		setrlimit(RLIMIT_CORE, &none);
		signal(sig, SIG_DFL);
		sigset_t one;
		sigemptyset(&one);
		sigaddset(&one, sig);
		sigprocmask(SIG_UNBLOCK, &one, NULL);
		kill(getpid(), sig);
		return 128 + sig;
	}
	return WEXITSTATUS(status);
}
