#define _GNU_SOURCE
#include "spawn_mounts.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

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
    if (mount("kemu-root", o->root_scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0) kemu_child_fail(pipe_fd, "root: tmpfs");
    char upper[4096], work[4096], root[4096], old[4096], data[8400];
    if (snprintf(upper, sizeof upper, "%s/upper", o->root_scratch) >= (int)sizeof upper
        || snprintf(work, sizeof work, "%s/work", o->root_scratch) >= (int)sizeof work
        || snprintf(root, sizeof root, "%s/root", o->root_scratch) >= (int)sizeof root
        || snprintf(old, sizeof old, "%s/root" OLD_ROOT, o->root_scratch) >= (int)sizeof old) { errno = ENAMETOOLONG; kemu_child_fail(pipe_fd, "root: path"); }
    if (mkdir(upper, 0755) != 0 || mkdir(work, 0755) != 0 || mkdir(root, 0755) != 0) kemu_child_fail(pipe_fd, "root: mkdir");
    snprintf(data, sizeof data, "lowerdir=/,upperdir=%s,workdir=%s", upper, work);
    if (mount("overlay", root, "overlay", 0, data) != 0) kemu_child_fail(pipe_fd, "root: overlay");
    for (char *const *m = o->root_mounts; m != NULL && m[0] != NULL; m++) {
        char target[4096];
        if (snprintf(target, sizeof target, "%s%s", root, m[0]) >= (int)sizeof target) continue;
        if (mount(m[0], target, NULL, MS_BIND | MS_REC, NULL) != 0 && errno != ENOENT) kemu_child_fail(pipe_fd, "root: bind");
    }
    if (mkdir(old, 0700) != 0 && errno != EEXIST) kemu_child_fail(pipe_fd, "root: mkdir");
    if (syscall(SYS_pivot_root, root, old) != 0) kemu_child_fail(pipe_fd, "pivot_root");
    if (chdir("/") != 0) kemu_child_fail(pipe_fd, "root: chdir");
}

static int bind_source(int source, const char *target, int readonly) {
    char held[64];
    snprintf(held, sizeof held, "/proc/self/fd/%d", source);
    if (mount(held, target, "none", MS_BIND | MS_REC, NULL) != 0) return -1;
    if (readonly && mount("none", target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) != 0) return -1;
    return 0;
}

void kemu_private_mounts(const kemu_spawn_options *o, int pipe_fd, int sources[KEMU_MAX_BINDS]) {
    if (unshare(CLONE_NEWNS | (o->hostname != NULL ? CLONE_NEWUTS : 0)) != 0) kemu_child_fail(pipe_fd, "unshare");
    if (o->hostname != NULL && sethostname(o->hostname, strlen(o->hostname)) != 0) kemu_child_fail(pipe_fd, "sethostname");
    if (mount("", "/", "none", MS_SLAVE | MS_REC, NULL) != 0) kemu_child_fail(pipe_fd, "mount");
    // Each source held from the machine's view: bound from its descriptor, as runc mounts
    // through /proc/self/fd, whatever its path leads to in a private root or under a hidden one.
    int count = 0;
    for (char *const *b = o->binds; b != NULL && b[0] != NULL && b[1] != NULL; b += 2, count++) {
        if (count >= KEMU_MAX_BINDS) { errno = E2BIG; kemu_child_fail(pipe_fd, "bind volume"); }
        sources[count] = open(b[0], O_PATH | O_CLOEXEC);
    }
    int private = o->root_scratch != NULL;
    if (private) private_root(o, pipe_fd);
    if (bind_etc(o->netns_name, private ? OLD_ROOT : "") != 0) kemu_child_fail(pipe_fd, "bind /etc/netns");
    int bound[KEMU_MAX_BINDS] = {0};
    for (int i = 0; i < count; i++) {
        const char *target = o->binds[2 * i + 1];
        if (sources[i] < 0) continue;
        if (private && make_target(target, sources[i]) != 0) kemu_child_fail(pipe_fd, "volume: mkdir");
        if (bind_source(sources[i], target, 0) == 0) bound[i] = 1;
        else if (errno != ENOENT) kemu_child_fail(pipe_fd, "bind volume");
    }
    // Read-only once every volume is bound: a volume mounted inside a read-only one (a Secret
    // under a ConfigMap's path) needs its mount point made there first.
    for (int i = 0; i < count; i++) {
        if (!bound[i] || o->bind_readonly == NULL || !o->bind_readonly[i]) continue;
        if (mount("none", o->binds[2 * i + 1], NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) != 0) kemu_child_fail(pipe_fd, "volume: read-only");
    }
}

// Last of the mounts: each hidden directory is covered by an empty tmpfs, made read-only once
// the bind sources under it are bound again at their own paths inside it (so a volume's
// directory, its $KEMU_VOLUME_ path and a working directory there stay as they were, and
// nothing else of the directory shows). A source is bound from its held descriptor, as runc
// mounts through /proc/self/fd: its path no longer leads to it. Then the machine's root goes
// (in a private root), and /sys is mounted afresh: it shows the namespace's own links only when
// sysfs is mounted from inside it.
void kemu_hide_paths(const kemu_spawn_options *o, int pipe_fd, const int sources[KEMU_MAX_BINDS]) {
    for (char *const *h = o->hidden; h != NULL && h[0] != NULL; h++) {
        if (mount("kemu-hidden", h[0], "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=0755") != 0) {
            if (errno == ENOENT) continue;
            kemu_child_fail(pipe_fd, "hide");
        }
        size_t len = strlen(h[0]);
        int i = 0;
        for (char *const *b = o->binds; b != NULL && b[0] != NULL && b[1] != NULL && i < KEMU_MAX_BINDS; b += 2, i++) {
            if (sources[i] < 0 || strncmp(b[0], h[0], len) != 0 || b[0][len] != '/') continue;
            if (make_target(b[0], sources[i]) != 0) kemu_child_fail(pipe_fd, "hide: mkdir");
            if (bind_source(sources[i], b[0], o->bind_readonly != NULL && o->bind_readonly[i]) != 0) kemu_child_fail(pipe_fd, "hide: bind");
        }
        if (mount("none", h[0], NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) kemu_child_fail(pipe_fd, "hide: read-only");
    }
    for (int i = 0; i < KEMU_MAX_BINDS; i++) if (sources[i] >= 0) close(sources[i]);
    if (o->root_scratch != NULL) {
        if (umount2(OLD_ROOT, MNT_DETACH) != 0) kemu_child_fail(pipe_fd, "root: detach");
        (void)rmdir(OLD_ROOT);
    }
    if (umount2("/sys", MNT_DETACH) == 0 || o->root_scratch != NULL) {
        if (mount(o->netns_name, "/sys", "sysfs", 0, NULL) != 0) kemu_child_fail(pipe_fd, "mount /sys");
    }
}

