/* barge-probe: tries system calls and says what the kernel answered, one
 * line per operation: "<op>: ok" or "<op>: <errno name>". Each operation runs
 * in a child of its own, so that one (unshare) cannot change the next.
 *
 *   unshare-user unshare-mnt   unshare(2) with CLONE_NEWUSER / CLONE_NEWNS
 *   add_key keyctl             add_key(2) to the process keyring, keyctl(2)
 *   mount                      mount(2) of a tmpfs on /tmp
 *   ptrace=PID                 PTRACE_ATTACH to PID (detached again)
 *   mkdir=PATH getpgid         for custom seccomp profiles
 *   open=PATH                  open(2) read-only, non-blocking
 *   connect=PATH               connect(2) to a unix socket
 *
 * Built static by the integration suite (security_cases.rs). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEY_SPEC_PROCESS_KEYRING (-2)
#define KEYCTL_GET_KEYRING_ID 0

/* 0, or the errno of the operation. */
static int run(const char *op) {
	const char *arg = strchr(op, '=');
	arg = arg ? arg + 1 : "";
	if (strcmp(op, "unshare-user") == 0)
		return unshare(CLONE_NEWUSER) ? errno : 0;
	if (strcmp(op, "unshare-mnt") == 0)
		return unshare(CLONE_NEWNS) ? errno : 0;
	if (strcmp(op, "add_key") == 0)
		return syscall(SYS_add_key, "user", "barge-it", "x", 1, KEY_SPEC_PROCESS_KEYRING) < 0 ? errno : 0;
	if (strcmp(op, "keyctl") == 0)
		return syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_PROCESS_KEYRING, 1) < 0 ? errno : 0;
	if (strcmp(op, "mount") == 0)
		return mount("none", "/tmp", "tmpfs", 0, NULL) ? errno : 0;
	if (strncmp(op, "ptrace=", 7) == 0) {
		pid_t pid = atoi(arg);
		if (ptrace(PTRACE_ATTACH, pid, 0, 0))
			return errno;
		waitpid(pid, NULL, __WALL);
		ptrace(PTRACE_DETACH, pid, 0, 0);
		return 0;
	}
	if (strncmp(op, "mkdir=", 6) == 0) {
		if (mkdir(arg, 0700))
			return errno;
		rmdir(arg);
		return 0;
	}
	if (strcmp(op, "getpgid") == 0)
		return syscall(SYS_getpgid, 0) < 0 ? errno : 0;
	if (strncmp(op, "open=", 5) == 0) {
		int fd = open(arg, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0)
			return errno;
		close(fd);
		return 0;
	}
	if (strncmp(op, "connect=", 8) == 0) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return errno;
		strncpy(sa.sun_path, arg, sizeof(sa.sun_path) - 1);
		int r = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ? errno : 0;
		close(fd);
		return r;
	}
	fprintf(stderr, "barge-probe: unknown operation %s\n", op);
	exit(2);
}

int main(int argc, char **argv) {
	for (int i = 1; i < argc; i++) {
		fflush(stdout);
		pid_t child = fork();
		if (child < 0) {
			perror("fork");
			return 1;
		}
		if (child == 0) {
			int e = run(argv[i]);
			printf("%s: %s\n", argv[i], e ? strerrorname_np(e) : "ok");
			fflush(stdout);
			_exit(0);
		}
		int status;
		if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			/* A filter that kills, or a bad operation. */
			if (WIFSIGNALED(status))
				printf("%s: killed by signal %d\n", argv[i], WTERMSIG(status));
			else
				return 2;
		}
	}
	return 0;
}
