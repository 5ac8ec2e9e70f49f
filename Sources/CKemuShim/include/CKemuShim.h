// C for what Swift's Glibc module hides, and for the code that must run between fork and exec
// (no Swift may run in a forked child). Every name carries the kemu_ prefix.
#ifndef KEMU_SHIM_H
#define KEMU_SHIM_H

#include <sys/types.h>
#include <sys/epoll.h>

/// CLONE_NEWNET, which Glibc's Swift overlay does not export.
extern const int kemu_clone_newnet;

/// setns(2): move the calling thread into the namespace behind `fd`.
int kemu_setns(int fd, int nstype);
/// unshare(2) for the calling thread.
int kemu_unshare(int flags);
// pidfd_open(2): a descriptor that polls readable when the process ends (any process, not only
// a child). -1 with errno on failure.
int kemu_pidfd_open(int pid);
// pipe2(fds, O_CLOEXEC): both ends close-on-exec from the start, so no child spawned meanwhile
// inherits them. -1 with errno on failure.
int kemu_pipe_cloexec(int fds[2]);
// The proxy's byte path, GNU calls Glibc's Swift overlay does not export.
// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC; -1 with errno on failure.
int kemu_accept_nonblock(int fd, void *address, unsigned int *length);
// splice(2) with SPLICE_F_MOVE | SPLICE_F_NONBLOCK, no offsets; -1 with errno on failure.
long kemu_splice(int from, int to, unsigned long length);
// pipe2(O_NONBLOCK | O_CLOEXEC), then F_SETPIPE_SZ to `size` bytes (best effort); -1 with errno.
int kemu_pipe_nonblock(int fds[2], int size);
// eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); -1 with errno.
int kemu_eventfd(void);
// prctl(PR_SET_NAME): the calling thread's name as top -H, perf and /proc/PID/task/*/comm show it
// (its first 15 bytes). prctl is variadic, which Swift cannot call.
void kemu_name_thread(const char *name);
// malloc_trim(0): hands memory malloc has freed back to the system.
void kemu_malloc_trim(void);
/// setpriority(PRIO_PROCESS, 0, nice) for the calling thread (Linux niceness is per thread; threads
/// made afterwards inherit it). 0 or an errno value.
int kemu_set_nice(int nice);
/// gettid(2).
pid_t kemu_gettid(void);

/// Makes `path` a shared mount point, bind-mounting it onto itself first if it is not one yet,
/// as `ip netns add` does for /run/netns. Returns 0 or an errno value.
int kemu_make_shared_mountpoint(const char *path);
/// Bind-mounts `source` onto `target`. Returns 0 or an errno value.
int kemu_bind_mount(const char *source, const char *target);
/// Lazily unmounts `target` (MNT_DETACH). Returns 0 or an errno value.
int kemu_umount_detach(const char *target);

/// What a child does before execve.
typedef struct kemu_spawn_options {
    /// Network namespace to enter, or -1 to stay.
    int netns_fd;
    /// Name of the namespace: its /etc/netns/<name>/ files are bind-mounted over /etc/ in a
    /// private mount namespace and /sys is remounted, as `ip netns exec` does. NULL: neither.
    const char *netns_name;
    /// File descriptors for the child's 0, 1, 2; -1 keeps the parent's.
    int stdin_fd, stdout_fd, stderr_fd;
    /// Start a new session (the child leads its own process group).
    int new_session;
    /// Working directory, or NULL.
    const char *cwd;
    /// Bind mounts in the private mount namespace (needs netns_name): source, target, source,
    /// target…, NULL-terminated. A target that does not exist is made in a private root
    /// (`root_scratch`), skipped otherwise.
    char *const *binds;
    /// With netns_name: a private UTS namespace with this hostname. NULL: the host's.
    const char *hostname;
    /// With netns_name: directories covered, after the binds, by an empty read-only tmpfs, so
    /// the child cannot see what is in them. NULL-terminated; a missing one is skipped.
    char *const *hidden;
    /// > 0: join this running process's network, UTS and mount namespaces instead of netns_fd /
    /// netns_name (a command run inside a container).
    pid_t join_pid;
    /// Change to uid/gid with these supplementary groups before exec.
    int set_identity;
    uid_t uid;
    gid_t gid;
    int group_count;
    const gid_t *groups;
    /// Capabilities the child keeps in its bounding set, one bit each (bit n = capability n);
    /// with set_identity, the rest are dropped (a root child keeps only these).
    unsigned long long capabilities;
    /// PR_SET_NO_NEW_PRIVS: no setuid program or file capability raises the child's privileges.
    int no_new_privs;
    /// The program as the parent resolved it: opened before the identity changes and executed
    /// from that descriptor when the new user cannot reach its path (a binary under /root).
    /// NULL: none.
    const char *resolved;
    /// Added to the child's niceness (setpriority) before exec; 0 keeps the caller's.
    int nice;
    /// With netns_name: a root of the child's own. An empty directory where the child mounts a
    /// tmpfs holding an overlay of the machine's / (so what it writes lands in that tmpfs and is
    /// gone with it), binds `root_mounts` into it, then pivots into it. Bind targets are then
    /// made when missing. NULL: the machine's root, and missing targets are skipped.
    const char *root_scratch;
    /// The machine's mount points bound (recursively) into a private root, NULL-terminated.
    char *const *root_mounts;
    /// One per bind pair (or NULL): nonzero binds that one read-only.
    const unsigned char *bind_readonly;
    /// `cgroup.procs` files open for writing: the child writes itself into each first thing,
    /// so everything it starts is in those groups.
    const int *cgroup_fds;
    int cgroup_count;
    /// Nonzero: stdin is a terminal that becomes the child's controlling terminal (needs
    /// new_session).
    int controlling_tty;
} kemu_spawn_options;

/// A pseudo-terminal pair, both ends close-on-exec, the secondary not a controlling terminal
/// of the caller. 0 or an errno value.
int kemu_openpty(int *primary, int *secondary);
/// Sets a terminal's window size (TIOCSWINSZ). 0 or an errno value.
int kemu_set_window_size(int fd, unsigned short rows, unsigned short columns);

/// fork, then in the child: enter the namespace, bind /etc/netns files, set up stdio, exec.
/// `file` is looked up in PATH from `envp` when it has no '/'.
/// Returns 0 and the child's pid, or an errno value; then `failed_step` names the step that
/// failed ("fork", "setns", "unshare", "mount /sys", "chdir", "exec", ...).
#define KEMU_STEP_LEN 24
int kemu_spawn(const char *file, char *const argv[], char *const envp[],
               const kemu_spawn_options *options, pid_t *pid, char failed_step[KEMU_STEP_LEN]);

// zlib streams for SPDY/3.1 header blocks (kubectl port-forward): one inflater and one
// deflater per session, each a single compression context primed with the protocol's
// dictionary and flushed per block (Z_SYNC_FLUSH), as SPDY requires.
typedef struct kemu_zstream kemu_zstream;
// NULL when zlib cannot start one.
kemu_zstream *kemu_zstream_new(int deflating, const unsigned char *dictionary, unsigned int length);
// Runs `input` through the stream into `output`. Returns the bytes written to `output`, -1 for
// input zlib refuses (a bad stream or wrong dictionary), -2 when `capacity` is too small.
long kemu_zstream_run(kemu_zstream *stream, const unsigned char *input, unsigned long length,
                      unsigned char *output, unsigned long capacity);
void kemu_zstream_free(kemu_zstream *stream);

// A netlink socket receiving the packets nftables' `log group GROUP` statements hand over
// (nfnetlink_log), each cut to `copy_bytes`; -1 with errno on failure.
int kemu_nflog_open(unsigned short group, unsigned int copy_bytes);

#endif
