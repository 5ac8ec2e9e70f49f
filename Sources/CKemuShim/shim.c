#define _GNU_SOURCE
#include "CKemuShim.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
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

void kemu_malloc_trim(void) { (void)malloc_trim(0); }

pid_t kemu_gettid(void) { return (pid_t)syscall(SYS_gettid); }

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

static void child_fail(int pipe_fd, const char *step) {
    child_failure f;
    f.err = errno;
    memset(f.step, 0, sizeof f.step);
    strncpy(f.step, step, sizeof f.step - 1);
    ssize_t unused = write(pipe_fd, &f, sizeof f);
    (void)unused;
    _exit(127);
}

// Bind /etc/netns/<name>/<entry> over /etc/<entry> for every entry, as `ip netns exec` does.
static int bind_etc(const char *name) {
    char dir[4096];
    if (snprintf(dir, sizeof dir, "/etc/netns/%s", name) >= (int)sizeof dir) { errno = ENAMETOOLONG; return -1; }
    // open + getdents64 with a stack buffer: opendir would allocate, which a forked child avoids.
    int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0) return errno == ENOENT ? 0 : -1;
    char buf[4096] __attribute__((aligned(8)));
    for (;;) {
        long n = syscall(SYS_getdents64, d, buf, sizeof buf);
        if (n < 0) { int err = errno; close(d); errno = err; return -1; }
        if (n == 0) break;
        for (long off = 0; off < n;) {
            struct dirent64 *e = (struct dirent64 *)(buf + off);
            off += e->d_reclen;
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char src[4096], dst[4096];
            if (snprintf(src, sizeof src, "%s/%s", dir, e->d_name) >= (int)sizeof src) continue;
            if (snprintf(dst, sizeof dst, "/etc/%s", e->d_name) >= (int)sizeof dst) continue;
            // A missing target is skipped, as iproute2 does.
            if (mount(src, dst, "none", MS_BIND, NULL) != 0 && errno != ENOENT) {
                int err = errno; close(d); errno = err; return -1;
            }
        }
    }
    close(d);
    return 0;
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
    if (o->new_session && setsid() < 0) child_fail(pipe_fd, "setsid");
    if (o->netns_fd >= 0 && setns(o->netns_fd, CLONE_NEWNET) != 0) child_fail(pipe_fd, "setns");
    if (o->netns_name != NULL) {
        if (unshare(CLONE_NEWNS) != 0) child_fail(pipe_fd, "unshare");
        if (mount("", "/", "none", MS_SLAVE | MS_REC, NULL) != 0) child_fail(pipe_fd, "mount");
        // /sys shows the namespace's own links only when sysfs is mounted from inside it.
        if (umount2("/sys", MNT_DETACH) == 0) {
            if (mount(o->netns_name, "/sys", "sysfs", 0, NULL) != 0) child_fail(pipe_fd, "mount /sys");
        }
        if (bind_etc(o->netns_name) != 0) child_fail(pipe_fd, "bind /etc/netns");
        for (char *const *b = o->binds; b != NULL && b[0] != NULL && b[1] != NULL; b += 2) {
            if (mount(b[0], b[1], "none", MS_BIND | MS_REC, NULL) != 0 && errno != ENOENT) child_fail(pipe_fd, "bind volume");
        }
    }
    if (o->stdin_fd >= 0 && dup2(o->stdin_fd, 0) < 0) child_fail(pipe_fd, "dup2 stdin");
    if (o->stdout_fd >= 0 && dup2(o->stdout_fd, 1) < 0) child_fail(pipe_fd, "dup2 stdout");
    if (o->stderr_fd >= 0 && dup2(o->stderr_fd, 2) < 0) child_fail(pipe_fd, "dup2 stderr");
    if (o->cwd != NULL && chdir(o->cwd) != 0) child_fail(pipe_fd, "chdir");
    // Nothing but stdio crosses into the new program: libraries (SwiftNIO among them) open
    // descriptors without O_CLOEXEC, and a pod holding its agent's listening socket keeps the port
    // taken after the agent dies. Marked close-on-exec rather than closed, so the error pipe
    // still reports a failed exec.
    if (syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) != 0) child_fail(pipe_fd, "close_range");
    execvpe(file, argv, envp);
    child_fail(pipe_fd, "exec");
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
