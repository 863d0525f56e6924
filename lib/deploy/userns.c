/*
 * vse-userns: run a program as a user of the host, with capabilities that only reach that user's
 * own files. Used for virtiofsd, which shares a host directory with a guest: it needs capabilities
 * (it sandboxes itself in namespaces and switches file-system ids), but must read and write the
 * host's files with the job user's rights, never root's.
 *
 *   vse-userns UID GID [--ro DIR]... [--listen SOCKET] -- PROGRAM [ARG]...
 *
 * Run by root. It forks a child that enters a new user namespace in which only UID and GID are
 * mapped (to themselves); the parent writes the maps. The child becomes UID:GID, keeps its
 * capabilities in that namespace through exec (ambient), enters a new mount namespace, makes each
 * --ro DIR a read-only bind mount of itself, with --listen makes SOCKET a listening unix socket
 * (owned by UID) on file descriptor 3 (virtiofsd --fd=3: given its socket, it needs no lock file in
 * root's /run), and executes PROGRAM detached by setsid(), with its
 * stdout sent to its stderr. Capabilities in a user namespace apply only to files whose owner and
 * group are mapped there: the user's own. The parent prints the child's pid and exits 0 once the
 * child is on its way (PROGRAM's own failures show in its stderr and its exit).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/types.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, "vse-userns: %s: %s\n", what, strerror(errno));
	exit(125);
}

static void usage(void)
{
	fprintf(stderr, "usage: vse-userns UID GID [--ro DIR]... [--listen SOCKET] -- PROGRAM [ARG]...\n");
	exit(125);
}

static unsigned long id_arg(const char *s)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || end == s || v > 0xfffffffeUL) usage();
	return v;
}

static void write_file(pid_t pid, const char *name, const char *text)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0) die(path);
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) die(path);
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc < 5) usage();
	if (geteuid() != 0) {
		fprintf(stderr, "vse-userns: must be run by root\n");
		return 125;
	}
	uid_t uid = (uid_t)id_arg(argv[1]);
	gid_t gid = (gid_t)id_arg(argv[2]);
	int i = 3;
	char *ro[64], *listen_path = NULL;
	int nro = 0;
	for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "--ro") == 0 && i + 1 < argc && nro < 64 && argv[i + 1][0] == '/') ro[nro++] = argv[++i];
		else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc && argv[i + 1][0] == '/') listen_path = argv[++i];
		else usage();
	}
	if (i + 1 >= argc) usage();
	char **prog = argv + i + 1;

	int go[2], ready[2];
	if (pipe2(go, O_CLOEXEC) != 0 || pipe2(ready, O_CLOEXEC) != 0) die("pipe");
	pid_t child = fork();
	if (child < 0) die("fork");
	if (child == 0) {
		close(go[1]);
		close(ready[0]);
		if (setsid() < 0) die("setsid");
		if (dup2(2, 1) < 0) die("dup2");
		if (unshare(CLONE_NEWUSER) != 0) die("unshare(user)");
		if (write(ready[1], "u", 1) != 1) die("sync");
		close(ready[1]);
		char c;
		if (read(go[0], &c, 1) != 1) _exit(125); /* the parent failed to write the maps */
		if (setgroups(1, &gid) != 0) die("setgroups");
		if (setresgid(gid, gid, gid) != 0) die("setresgid");
		if (prctl(PR_SET_KEEPCAPS, 1) != 0) die("keepcaps");
		if (setresuid(uid, uid, uid) != 0) die("setresuid");
		/* all capabilities of this namespace: permitted, effective, inheritable, then ambient */
		struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
		struct __user_cap_data_struct data[2];
		memset(data, 0xff, sizeof data);
		int last = CAP_LAST_CAP;
		FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "r");
		if (f) {
			if (fscanf(f, "%d", &last) != 1) last = CAP_LAST_CAP;
			fclose(f);
		}
		if (syscall(SYS_capset, &hdr, data) != 0) die("capset");
		for (int cap = 0; cap <= last; cap++) prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
		if (unshare(CLONE_NEWNS) != 0) die("unshare(mount)");
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("make / private");
		for (int k = 0; k < nro; k++) {
			if (mount(ro[k], ro[k], NULL, MS_BIND | MS_REC, NULL) != 0) die(ro[k]);
			if (mount(NULL, ro[k], NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) != 0) die(ro[k]);
		}
		if (listen_path) {
			struct sockaddr_un sa = { .sun_family = AF_UNIX };
			if (strlen(listen_path) >= sizeof sa.sun_path) {
				fprintf(stderr, "vse-userns: socket path too long: %s\n", listen_path);
				_exit(125);
			}
			strcpy(sa.sun_path, listen_path);
			int fd = socket(AF_UNIX, SOCK_STREAM, 0);
			if (fd < 0) die("socket");
			unlink(listen_path);
			if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) die(listen_path);
			if (listen(fd, 1) != 0) die("listen");
			if (fd != 3) {
				if (dup2(fd, 3) < 0) die("dup2");
				close(fd);
			}
		}
		execv(prog[0], prog);
		die(prog[0]);
	}
	close(go[0]);
	close(ready[1]);
	char c;
	if (read(ready[0], &c, 1) != 1) {
		fprintf(stderr, "vse-userns: the child could not enter a user namespace\n");
		return 125;
	}
	char map[64];
	snprintf(map, sizeof map, "%u %u 1\n", (unsigned)uid, (unsigned)uid);
	write_file(child, "uid_map", map);
	snprintf(map, sizeof map, "%u %u 1\n", (unsigned)gid, (unsigned)gid);
	write_file(child, "gid_map", map);
	if (write(go[1], "g", 1) != 1) die("sync");
	close(go[1]);
	printf("%d\n", (int)child);
	return 0;
}
