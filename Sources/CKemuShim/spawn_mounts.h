// The spawned child's mounts (spawn_mounts.c), for shim.c's child: a private mount namespace
// with the namespace's /etc/netns files, volumes bound, optionally a root of its own, kemu's
// state hidden. Runs in the forked child: only async-signal-safe calls, no allocation.
#pragma once
#include "CKemuShim.h"

#define KEMU_MAX_BINDS 64

/// Reports the failed step (and errno) on the error pipe and exits 127.
void kemu_child_fail(int pipe_fd, const char *step) __attribute__((noreturn));
/// unshare, /etc/netns files, the private root if asked (pivoted into, the machine's kept aside),
/// the volumes bound (read-only ones remounted once all are there). `sources` gets the held
/// descriptor of each bind source.
void kemu_private_mounts(const kemu_spawn_options *o, int pipe_fd, int sources[KEMU_MAX_BINDS]);
/// The hidden directories covered, bind sources under them bound again; then the machine's root
/// detached and /sys mounted afresh.
void kemu_hide_paths(const kemu_spawn_options *o, int pipe_fd, const int sources[KEMU_MAX_BINDS]);
