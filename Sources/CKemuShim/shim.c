#define _GNU_SOURCE
#include "CKemuShim.h"
#include "spawn_mounts.h"

#include <dirent.h>
#include <grp.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

const int kemu_clone_newnet = CLONE_NEWNET;

int kemu_setns(int fd, int nstype) { return setns(fd, nstype); }
int kemu_unshare(int flags) { return unshare(flags); }

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
int kemu_pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int kemu_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
int kemu_accept_nonblock(int fd, void *address, unsigned int *length) {
    return accept4(fd, (struct sockaddr *)address, (socklen_t *)length, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

long kemu_splice(int from, int to, unsigned long length) {
    return (long)splice(from, NULL, to, NULL, length, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
}

int kemu_pipe_nonblock(int fds[2], int size) {
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return -1;
    if (size > 0) (void)fcntl(fds[1], F_SETPIPE_SZ, size);
    return 0;
}

int kemu_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }
void kemu_name_thread(const char *name) { (void)prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }

void kemu_malloc_trim(void) { (void)malloc_trim(0); }

pid_t kemu_gettid(void) { return (pid_t)syscall(SYS_gettid); }

int kemu_set_nice(int nice) { return setpriority(PRIO_PROCESS, 0, nice) == 0 ? 0 : errno; }

int kemu_openpty(int *primary, int *secondary) {
    int p = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (p < 0) return errno;
    char name[128];
    if (grantpt(p) != 0 || unlockpt(p) != 0 || ptsname_r(p, name, sizeof name) != 0) { int err = errno; close(p); return err; }
    int s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0) { int err = errno; close(p); return err; }
    *primary = p;
    *secondary = s;
    return 0;
}

int kemu_set_window_size(int fd, unsigned short rows, unsigned short columns) {
    struct winsize size = { .ws_row = rows, .ws_col = columns };
    return ioctl(fd, TIOCSWINSZ, &size) == 0 ? 0 : errno;
}

int kemu_make_shared_mountpoint(const char *path) {
    // First try: already a mount point, just mark it shared.
    if (mount("", path, "none", MS_SHARED | MS_REC, NULL) == 0) return 0;
    if (errno != EINVAL) return errno;
    // Not a mount point yet: bind it onto itself, then mark it shared.
    if (mount(path, path, "none", MS_BIND | MS_REC, NULL) != 0) return errno;
    if (mount("", path, "none", MS_SHARED | MS_REC, NULL) != 0) return errno;
    return 0;
}

int kemu_bind_mount(const char *source, const char *target) {
    return mount(source, target, "none", MS_BIND, NULL) == 0 ? 0 : errno;
}

int kemu_umount_detach(const char *target) {
    return umount2(target, MNT_DETACH) == 0 ? 0 : errno;
}

// ---- spawn -------------------------------------------------------------------------------------
// Everything below runs in the forked child: only async-signal-safe calls, no allocation.

typedef struct { int err; char step[KEMU_STEP_LEN]; } child_failure;

void kemu_child_fail(int pipe_fd, const char *step) {
    child_failure f;
    f.err = errno;
    memset(f.step, 0, sizeof f.step);
    strncpy(f.step, step, sizeof f.step - 1);
    ssize_t unused = write(pipe_fd, &f, sizeof f);
    (void)unused;
    _exit(127);
}

// Keeps only `keep` in the bounding set, the inheritable set and the ambient set: what a program
// started afterwards can ever hold, whatever its user or file capabilities.
static int limit_capabilities(unsigned long long keep) {
    for (int cap = 0; cap < 64; cap++) {
        if (keep & (1ULL << cap)) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return -1;
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) return -1;
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) != 0) return -1;
    data[0].inheritable &= (unsigned)(keep & 0xffffffffULL);
    data[1].inheritable &= (unsigned)(keep >> 32);
    return (int)syscall(SYS_capset, &header, data);
}

// Enters the namespaces of a running process: network, UTS, then mount (opened first, since
// entering the mount namespace changes what /proc/<pid> names).
static int join_namespaces(pid_t pid) {
    static const char *const kinds[3] = { "net", "uts", "mnt" };
    static const int types[3] = { CLONE_NEWNET, CLONE_NEWUTS, CLONE_NEWNS };
    int fds[3];
    for (int i = 0; i < 3; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)pid, kinds[i]);
        fds[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0) { int err = errno; for (int j = 0; j < i; j++) close(fds[j]); errno = err; return -1; }
    }
    for (int i = 0; i < 3; i++) {
        if (setns(fds[i], types[i]) != 0) { int err = errno; for (int j = 0; j < 3; j++) close(fds[j]); errno = err; return -1; }
    }
    for (int i = 0; i < 3; i++) close(fds[i]);
    return 0;
}

/// With autogroup scheduling (CONFIG_SCHED_AUTOGROUP, on in Debian's kernels), the CPU is shared
/// between sessions first and a thread's niceness counts only inside its own: a daemon or a
/// container in a session of its own competes with a thousand others as an equal whatever its
/// niceness (measured: the API server at nice -10 still waited seconds for a CPU behind 1,000
/// starting pods). Its session's autogroup takes the same niceness, so it counts across sessions
/// too. Best effort: without autogroups the file is missing, and the thread niceness is all there is.
static void session_nice(int delta) {
    errno = 0;
    int current = getpriority(PRIO_PROCESS, 0);
    if (errno != 0) return;
    int value = current + delta;
    if (value < -20) value = -20;
    if (value > 19) value = 19;
    // "-20" at most: formatted by hand (no stdio between fork and exec).
    char text[4];
    int n = 0, magnitude = value < 0 ? -value : value;
    if (value < 0) text[n++] = '-';
    if (magnitude >= 10) text[n++] = (char)('0' + magnitude / 10);
    text[n++] = (char)('0' + magnitude % 10);
    int fd = open("/proc/self/autogroup", O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t written = write(fd, text, (size_t)n);
    (void)written;
    close(fd);
}

static void child_main(const char *file, char *const argv[], char *const envp[],
                       const kemu_spawn_options *o, int pipe_fd) {
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        signal(s, SIG_DFL);
    }
    for (int i = 0; i < o->cgroup_count; i++) {
        if (write(o->cgroup_fds[i], "0", 1) != 1) kemu_child_fail(pipe_fd, "cgroup");
    }
    if (o->new_session && setsid() < 0) kemu_child_fail(pipe_fd, "setsid");
    if (o->new_session && o->nice != 0) session_nice(o->nice);
    int sources[KEMU_MAX_BINDS];
    for (int i = 0; i < KEMU_MAX_BINDS; i++) sources[i] = -1;
    if (o->join_pid > 0) {
        if (join_namespaces(o->join_pid) != 0) kemu_child_fail(pipe_fd, "join namespaces");
    } else {
        if (o->netns_fd >= 0 && setns(o->netns_fd, CLONE_NEWNET) != 0) kemu_child_fail(pipe_fd, "setns");
        if (o->netns_name != NULL) {
            kemu_private_mounts(o, pipe_fd, sources);
            kemu_hide_paths(o, pipe_fd, sources);
        }
    }
    // Opened while the child may still reach it, for an exec the new user could not make by path.
    int program = o->resolved != NULL ? open(o->resolved, O_PATH | O_CLOEXEC) : -1;
    if (o->stdin_fd >= 0 && dup2(o->stdin_fd, 0) < 0) kemu_child_fail(pipe_fd, "dup2 stdin");
    if (o->stdout_fd >= 0 && dup2(o->stdout_fd, 1) < 0) kemu_child_fail(pipe_fd, "dup2 stdout");
    if (o->stderr_fd >= 0 && dup2(o->stderr_fd, 2) < 0) kemu_child_fail(pipe_fd, "dup2 stderr");
    if (o->controlling_tty && ioctl(0, TIOCSCTTY, 0) != 0) kemu_child_fail(pipe_fd, "controlling tty");
    if (o->cwd != NULL && chdir(o->cwd) != 0) kemu_child_fail(pipe_fd, "chdir");
    if (o->nice != 0) {
        errno = 0;
        int current = getpriority(PRIO_PROCESS, 0);
        if (errno == 0 && setpriority(PRIO_PROCESS, 0, current + o->nice) != 0) kemu_child_fail(pipe_fd, "setpriority");
    }
    if (o->set_identity) {
        if (limit_capabilities(o->capabilities) != 0) kemu_child_fail(pipe_fd, "capabilities");
        if (setgroups((size_t)o->group_count, o->groups) != 0) kemu_child_fail(pipe_fd, "setgroups");
        if (setgid(o->gid) != 0) kemu_child_fail(pipe_fd, "setgid");
        if (setuid(o->uid) != 0) kemu_child_fail(pipe_fd, "setuid");
    }
    if (o->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) kemu_child_fail(pipe_fd, "no_new_privs");
    // Nothing but stdio crosses into the new program: libraries (SwiftNIO among them) open
    // descriptors without O_CLOEXEC, and a pod holding its agent's listening socket keeps the port
    // taken after the agent dies. Marked close-on-exec rather than closed, so the error pipe
    // still reports a failed exec.
    if (syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) != 0) kemu_child_fail(pipe_fd, "close_range");
    execvpe(file, argv, envp);
    if (program >= 0 && (errno == EACCES || errno == ENOENT)) {
        syscall(SYS_execveat, program, "", argv, envp, AT_EMPTY_PATH);
    }
    kemu_child_fail(pipe_fd, "exec");
}

int kemu_spawn(const char *file, char *const argv[], char *const envp[],
               const kemu_spawn_options *options, pid_t *pid, char failed_step[KEMU_STEP_LEN]) {
    failed_step[0] = 0;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) { strcpy(failed_step, "pipe"); return errno; }
    pid_t child = fork();
    if (child < 0) {
        int err = errno;
        close(fds[0]); close(fds[1]);
        strcpy(failed_step, "fork");
        return err;
    }
    if (child == 0) {
        close(fds[0]);
        child_main(file, argv, envp, options, fds[1]);
    }
    close(fds[1]);
    // exec closes the write end (O_CLOEXEC): EOF means the child is running the new program.
    child_failure f;
    ssize_t n;
    do { n = read(fds[0], &f, sizeof f); } while (n < 0 && errno == EINTR);
    close(fds[0]);
    if (n == (ssize_t)sizeof f) {
        int status;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
        memcpy(failed_step, f.step, KEMU_STEP_LEN);
        failed_step[KEMU_STEP_LEN - 1] = 0;
        return f.err;
    }
    *pid = child;
    return 0;
}
