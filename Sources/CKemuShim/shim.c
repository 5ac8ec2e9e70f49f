#define _GNU_SOURCE
#include "CKemuShim.h"

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

static void child_fail(int pipe_fd, const char *step) {
    child_failure f;
    f.err = errno;
    memset(f.step, 0, sizeof f.step);
    strncpy(f.step, step, sizeof f.step - 1);
    ssize_t unused = write(pipe_fd, &f, sizeof f);
    (void)unused;
    _exit(127);
}

// Bind <old>/etc/netns/<name>/<entry> over /etc/<entry> for every entry, as `ip netns exec`
// does (`old`: where the machine's root is, "" when it is still /).
static int bind_etc(const char *name, const char *old) {
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s/etc/netns/%s", old, name) >= (int)sizeof dir) { errno = ENAMETOOLONG; return -1; }
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

// mkdir -p inside the child, with a stack buffer. 0 or -1 with errno.
static int make_path(const char *path) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) { errno = ENAMETOOLONG; return -1; }
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char saved = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
        buf[i] = saved;
    }
    return 0;
}

#define KEMU_MAX_BINDS 64

// Makes a missing bind target in a private root: a directory for a directory, an empty file for
// anything else. 0 or -1 with errno.
static int make_target(const char *target, int source) {
    struct stat st;
    if (stat(target, &st) == 0) return 0;  // there already (perhaps in a read-only volume)
    if (fstat(source, &st) != 0) return -1;
    if (S_ISDIR(st.st_mode)) return make_path(target);
    char parent[4096];
    size_t n = strlen(target);
    if (n >= sizeof parent) { errno = ENAMETOOLONG; return -1; }
    memcpy(parent, target, n + 1);
    char *slash = strrchr(parent, '/');
    if (slash != NULL && slash != parent) {
        *slash = 0;
        if (make_path(parent) != 0) return -1;
    }
    int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return errno == EEXIST || errno == EISDIR ? 0 : -1;
    close(fd);
    return 0;
}

// A root of the child's own, at <scratch>/root: an overlay whose lower layer is the machine's /
// and whose upper layer is a tmpfs at <scratch> (on another file system than /, as overlayfs
// wants, and gone with the mount namespace), with the machine's mount points bound into it. The
// child pivots into it with the machine's root kept at OLD_ROOT until the mounts are done:
// targets then resolve inside the new root (a symlink such as /var/run → /run included), and
// the held sources, mounts of the old root, can still be bound.
#define OLD_ROOT "/.kemu-machine-root"
static void private_root(const kemu_spawn_options *o, int pipe_fd) {
    if (mount("kemu-root", o->root_scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0) child_fail(pipe_fd, "root: tmpfs");
    char upper[4096], work[4096], root[4096], old[4096], data[8400];
    if (snprintf(upper, sizeof upper, "%s/upper", o->root_scratch) >= (int)sizeof upper
        || snprintf(work, sizeof work, "%s/work", o->root_scratch) >= (int)sizeof work
        || snprintf(root, sizeof root, "%s/root", o->root_scratch) >= (int)sizeof root
        || snprintf(old, sizeof old, "%s/root" OLD_ROOT, o->root_scratch) >= (int)sizeof old) { errno = ENAMETOOLONG; child_fail(pipe_fd, "root: path"); }
    if (mkdir(upper, 0755) != 0 || mkdir(work, 0755) != 0 || mkdir(root, 0755) != 0) child_fail(pipe_fd, "root: mkdir");
    snprintf(data, sizeof data, "lowerdir=/,upperdir=%s,workdir=%s", upper, work);
    if (mount("overlay", root, "overlay", 0, data) != 0) child_fail(pipe_fd, "root: overlay");
    for (char *const *m = o->root_mounts; m != NULL && m[0] != NULL; m++) {
        char target[4096];
        if (snprintf(target, sizeof target, "%s%s", root, m[0]) >= (int)sizeof target) continue;
        if (mount(m[0], target, NULL, MS_BIND | MS_REC, NULL) != 0 && errno != ENOENT) child_fail(pipe_fd, "root: bind");
    }
    if (mkdir(old, 0700) != 0 && errno != EEXIST) child_fail(pipe_fd, "root: mkdir");
    if (syscall(SYS_pivot_root, root, old) != 0) child_fail(pipe_fd, "pivot_root");
    if (chdir("/") != 0) child_fail(pipe_fd, "root: chdir");
}

static int bind_source(int source, const char *target, int readonly) {
    char held[64];
    snprintf(held, sizeof held, "/proc/self/fd/%d", source);
    if (mount(held, target, "none", MS_BIND | MS_REC, NULL) != 0) return -1;
    if (readonly && mount("none", target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) != 0) return -1;
    return 0;
}

static void private_mounts(const kemu_spawn_options *o, int pipe_fd, int sources[KEMU_MAX_BINDS]) {
    if (unshare(CLONE_NEWNS | (o->hostname != NULL ? CLONE_NEWUTS : 0)) != 0) child_fail(pipe_fd, "unshare");
    if (o->hostname != NULL && sethostname(o->hostname, strlen(o->hostname)) != 0) child_fail(pipe_fd, "sethostname");
    if (mount("", "/", "none", MS_SLAVE | MS_REC, NULL) != 0) child_fail(pipe_fd, "mount");
    // Each source held from the machine's view: bound from its descriptor, as runc mounts
    // through /proc/self/fd, whatever its path leads to in a private root or under a hidden one.
    int count = 0;
    for (char *const *b = o->binds; b != NULL && b[0] != NULL && b[1] != NULL; b += 2, count++) {
        if (count >= KEMU_MAX_BINDS) { errno = E2BIG; child_fail(pipe_fd, "bind volume"); }
        sources[count] = open(b[0], O_PATH | O_CLOEXEC);
    }
    int private = o->root_scratch != NULL;
    if (private) private_root(o, pipe_fd);
    if (bind_etc(o->netns_name, private ? OLD_ROOT : "") != 0) child_fail(pipe_fd, "bind /etc/netns");
    int bound[KEMU_MAX_BINDS] = {0};
    for (int i = 0; i < count; i++) {
        const char *target = o->binds[2 * i + 1];
        if (sources[i] < 0) continue;
        if (private && make_target(target, sources[i]) != 0) child_fail(pipe_fd, "volume: mkdir");
        if (bind_source(sources[i], target, 0) == 0) bound[i] = 1;
        else if (errno != ENOENT) child_fail(pipe_fd, "bind volume");
    }
    // Read-only once every volume is bound: a volume mounted inside a read-only one (a Secret
    // under a ConfigMap's path) needs its mount point made there first.
    for (int i = 0; i < count; i++) {
        if (!bound[i] || o->bind_readonly == NULL || !o->bind_readonly[i]) continue;
        if (mount("none", o->binds[2 * i + 1], NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) != 0) child_fail(pipe_fd, "volume: read-only");
    }
}

// Last of the mounts: each hidden directory is covered by an empty tmpfs, made read-only once
// the bind sources under it are bound again at their own paths inside it (so a volume's
// directory, its $KEMU_VOLUME_ path and a working directory there stay as they were, and
// nothing else of the directory shows). A source is bound from its held descriptor, as runc
// mounts through /proc/self/fd: its path no longer leads to it. Then the machine's root goes
// (in a private root), and /sys is mounted afresh: it shows the namespace's own links only when
// sysfs is mounted from inside it.
static void hide_paths(const kemu_spawn_options *o, int pipe_fd, const int sources[KEMU_MAX_BINDS]) {
    for (char *const *h = o->hidden; h != NULL && h[0] != NULL; h++) {
        if (mount("kemu-hidden", h[0], "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=0755") != 0) {
            if (errno == ENOENT) continue;
            child_fail(pipe_fd, "hide");
        }
        size_t len = strlen(h[0]);
        int i = 0;
        for (char *const *b = o->binds; b != NULL && b[0] != NULL && b[1] != NULL && i < KEMU_MAX_BINDS; b += 2, i++) {
            if (sources[i] < 0 || strncmp(b[0], h[0], len) != 0 || b[0][len] != '/') continue;
            if (make_target(b[0], sources[i]) != 0) child_fail(pipe_fd, "hide: mkdir");
            if (bind_source(sources[i], b[0], o->bind_readonly != NULL && o->bind_readonly[i]) != 0) child_fail(pipe_fd, "hide: bind");
        }
        if (mount("none", h[0], NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) child_fail(pipe_fd, "hide: read-only");
    }
    for (int i = 0; i < KEMU_MAX_BINDS; i++) if (sources[i] >= 0) close(sources[i]);
    if (o->root_scratch != NULL) {
        if (umount2(OLD_ROOT, MNT_DETACH) != 0) child_fail(pipe_fd, "root: detach");
        (void)rmdir(OLD_ROOT);
    }
    if (umount2("/sys", MNT_DETACH) == 0 || o->root_scratch != NULL) {
        if (mount(o->netns_name, "/sys", "sysfs", 0, NULL) != 0) child_fail(pipe_fd, "mount /sys");
    }
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
        if (write(o->cgroup_fds[i], "0", 1) != 1) child_fail(pipe_fd, "cgroup");
    }
    if (o->new_session && setsid() < 0) child_fail(pipe_fd, "setsid");
    if (o->new_session && o->nice != 0) session_nice(o->nice);
    int sources[KEMU_MAX_BINDS];
    for (int i = 0; i < KEMU_MAX_BINDS; i++) sources[i] = -1;
    if (o->join_pid > 0) {
        if (join_namespaces(o->join_pid) != 0) child_fail(pipe_fd, "join namespaces");
    } else {
        if (o->netns_fd >= 0 && setns(o->netns_fd, CLONE_NEWNET) != 0) child_fail(pipe_fd, "setns");
        if (o->netns_name != NULL) {
            private_mounts(o, pipe_fd, sources);
            hide_paths(o, pipe_fd, sources);
        }
    }
    // Opened while the child may still reach it, for an exec the new user could not make by path.
    int program = o->resolved != NULL ? open(o->resolved, O_PATH | O_CLOEXEC) : -1;
    if (o->stdin_fd >= 0 && dup2(o->stdin_fd, 0) < 0) child_fail(pipe_fd, "dup2 stdin");
    if (o->stdout_fd >= 0 && dup2(o->stdout_fd, 1) < 0) child_fail(pipe_fd, "dup2 stdout");
    if (o->stderr_fd >= 0 && dup2(o->stderr_fd, 2) < 0) child_fail(pipe_fd, "dup2 stderr");
    if (o->controlling_tty && ioctl(0, TIOCSCTTY, 0) != 0) child_fail(pipe_fd, "controlling tty");
    if (o->cwd != NULL && chdir(o->cwd) != 0) child_fail(pipe_fd, "chdir");
    if (o->nice != 0) {
        errno = 0;
        int current = getpriority(PRIO_PROCESS, 0);
        if (errno == 0 && setpriority(PRIO_PROCESS, 0, current + o->nice) != 0) child_fail(pipe_fd, "setpriority");
    }
    if (o->set_identity) {
        if (limit_capabilities(o->capabilities) != 0) child_fail(pipe_fd, "capabilities");
        if (setgroups((size_t)o->group_count, o->groups) != 0) child_fail(pipe_fd, "setgroups");
        if (setgid(o->gid) != 0) child_fail(pipe_fd, "setgid");
        if (setuid(o->uid) != 0) child_fail(pipe_fd, "setuid");
    }
    if (o->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail(pipe_fd, "no_new_privs");
    // Nothing but stdio crosses into the new program: libraries (SwiftNIO among them) open
    // descriptors without O_CLOEXEC, and a pod holding its agent's listening socket keeps the port
    // taken after the agent dies. Marked close-on-exec rather than closed, so the error pipe
    // still reports a failed exec.
    if (syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) != 0) child_fail(pipe_fd, "close_range");
    execvpe(file, argv, envp);
    if (program >= 0 && (errno == EACCES || errno == ENOENT)) {
        syscall(SYS_execveat, program, "", argv, envp, AT_EMPTY_PATH);
    }
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
