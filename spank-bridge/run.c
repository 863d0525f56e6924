#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include <slurm/spank.h>

#include "run.h"

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* A pipe whose ends are close-on-exec and above stdio, so dup2 onto 0-2 never clobbers them. */
static int pipe_above_stdio(int fds[2])
{
	int i, fd;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return (-1);
	for (i = 0; i < 2; i++) {
		if (fds[i] > STDERR_FILENO)
			continue;
		fd = fcntl(fds[i], F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
		if (fd < 0)
			return (-1);
		close(fds[i]);
		fds[i] = fd;
	}
	return (0);
}

/* In the child: only async-signal-safe calls from here to execv. */
static void child_exec(char *const argv[], int out_fd, int err_fd, int errno_fd, long open_max)
{
	struct sigaction dfl;
	sigset_t none;
	int null_fd, e;
	long fd;

	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigaction(SIGPIPE, &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* Own process group, so a timeout kills whatever the CLI started too. */
	setpgid(0, 0);

	null_fd = open("/dev/null", O_RDONLY);
	if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0 ||
	    dup2(out_fd, STDOUT_FILENO) < 0 || dup2(err_fd, STDERR_FILENO) < 0 ||
	    dup2(errno_fd, 3) < 0 || fcntl(3, F_SETFD, FD_CLOEXEC) < 0)
		goto fail;
	if (close_range(4, ~0U, 0) < 0)
		for (fd = 4; fd < open_max; fd++)
			close((int)fd);

	execv(argv[0], argv);

fail:
	e = errno;
	while (write(3, &e, sizeof(e)) < 0 && errno == EINTR)
		;
	_exit(127);
}

static int read_some(int fd, char **buf, size_t *len, int *truncated, size_t cap)
{
	char chunk[16384];
	size_t take;
	ssize_t n;
	char *p;

	n = read(fd, chunk, sizeof(chunk));
	if (n < 0)
		return ((errno == EINTR || errno == EAGAIN) ? 1 : -1);
	if (n == 0)
		return (0);
	take = (size_t)n;
	if (take > cap - *len) {
		take = cap - *len;
		*truncated = 1;
	}
	if (take == 0)
		return (1);
	p = realloc(*buf, *len + take + 1);
	if (p == NULL)
		return (-1);
	memcpy(p + *len, chunk, take);
	*len += take;
	p[*len] = '\0';
	*buf = p;
	return (1);
}

/* Drain stdout and stderr until both reach EOF or the deadline passes. */
static int collect(int *out_fd, int *err_fd, int64_t deadline, size_t cap, struct vse_run_result *res)
{
	struct pollfd pfd[2] = { { *out_fd, POLLIN, 0 }, { *err_fd, POLLIN, 0 } };
	int64_t left;
	int i, n;

	while (pfd[0].fd >= 0 || pfd[1].fd >= 0) {
		left = deadline - now_ms();
		if (left <= 0) {
			res->timed_out = 1;
			return (0);
		}
		n = poll(pfd, 2, left > INT_MAX ? INT_MAX : (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			slurm_error("vse: poll on the output of the vse command failed: %s", strerror(errno));
			return (-1);
		}
		for (i = 0; i < 2; i++) {
			if (pfd[i].fd < 0 || pfd[i].revents == 0)
				continue;
			n = i == 0 ? read_some(pfd[i].fd, &res->out, &res->out_len, &res->out_truncated, cap)
				   : read_some(pfd[i].fd, &res->err, &res->err_len, &res->err_truncated, cap);
			if (n < 0) {
				slurm_error("vse: reading the output of the vse command failed: %s", strerror(errno));
				return (-1);
			}
			if (n == 0) {
				close_fd(i == 0 ? out_fd : err_fd);
				pfd[i].fd = -1;
			}
		}
	}
	return (0);
}

/* Reap the child, waiting at most until the deadline (it may close its output and keep running). */
static int reap(pid_t pid, int64_t deadline, struct vse_run_result *res)
{
	struct timespec tick = { 0, 10 * 1000 * 1000 };
	pid_t w;

	while (!res->timed_out) {
		w = waitpid(pid, &res->status, WNOHANG);
		if (w == pid)
			return (0);
		if (w < 0 && errno != EINTR) {
			slurm_error("vse: waiting for the vse command failed: %s", strerror(errno));
			return (-1);
		}
		if (now_ms() >= deadline)
			res->timed_out = 1;
		else
			nanosleep(&tick, NULL);
	}
	kill(-pid, SIGKILL);
	kill(pid, SIGKILL);
	while ((w = waitpid(pid, &res->status, 0)) < 0 && errno == EINTR)
		;
	return (w == pid ? 0 : -1);
}

int vse_run(char *const argv[], unsigned int timeout, size_t cap, struct vse_run_result *res)
{
	int out[2] = { -1, -1 }, err[2] = { -1, -1 }, ex[2] = { -1, -1 };
	int64_t deadline;
	long open_max;
	pid_t pid = -1;
	int rv = -1;

	memset(res, 0, sizeof(*res));
	res->out = calloc(1, 1);
	res->err = calloc(1, 1);
	if (res->out == NULL || res->err == NULL) {
		slurm_error("vse: cannot run %s: out of memory", argv[0]);
		goto fail;
	}
	if (pipe_above_stdio(out) < 0 || pipe_above_stdio(err) < 0 || pipe_above_stdio(ex) < 0) {
		slurm_error("vse: cannot run %s: pipe: %s", argv[0], strerror(errno));
		goto fail;
	}
	open_max = sysconf(_SC_OPEN_MAX);
	if (open_max < 0 || open_max > 65536)
		open_max = 65536;

	deadline = now_ms() + (int64_t)timeout * 1000;
	pid = fork();
	if (pid < 0) {
		slurm_error("vse: cannot run %s: fork: %s", argv[0], strerror(errno));
		goto fail;
	}
	if (pid == 0)
		child_exec(argv, out[1], err[1], ex[1], open_max);
	setpgid(pid, pid);
	close_fd(&out[1]);
	close_fd(&err[1]);
	close_fd(&ex[1]);

	if (collect(&out[0], &err[0], deadline, cap, res) < 0)
		goto fail;
	if (reap(pid, deadline, res) < 0)
		goto fail;
	pid = -1;
	/* Non-blocking: a fork elsewhere in a threaded host could still hold the write end. */
	fcntl(ex[0], F_SETFL, O_NONBLOCK);
	if (read(ex[0], &res->exec_errno, sizeof(res->exec_errno)) != sizeof(res->exec_errno))
		res->exec_errno = 0;
	rv = 0;

fail:
	if (pid > 0) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	close_fd(&out[0]);
	close_fd(&out[1]);
	close_fd(&err[0]);
	close_fd(&err[1]);
	close_fd(&ex[0]);
	close_fd(&ex[1]);
	if (rv < 0)
		vse_run_result_free(res);
	return (rv);
}

void vse_run_result_free(struct vse_run_result *res)
{
	free(res->out);
	free(res->err);
	res->out = NULL;
	res->err = NULL;
	res->out_len = 0;
	res->err_len = 0;
}
