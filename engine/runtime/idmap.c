/*
 * hpc-exec-idmap UID GID PROGRAM [ARG...]
 *
 * The first program of a rootless container (docs/run.md, "Rootless mode"). runc 1.1.5 must be
 * uid 0 in every user namespace it sets up, and an unprivileged user can map only one id, so
 * runc starts the container as uid 0 of the engine's user namespace, which is the caller on the
 * host. This helper then moves itself into a child user namespace that maps UID and GID (the
 * caller's own numbers) onto that 0, and execs PROGRAM: inside, the process is the caller,
 * with the caller's numbers; on the host it is the caller too. No setuid bit and no
 * subordinate ids are involved. The process has no capabilities outside its own namespace
 * (runc dropped them all and set no_new_privileges), and loses those of the new namespace at
 * the exec, since its uid is not 0 there.
 *
 * Built static by the package build (setup.py, build_idmap), because it runs inside images
 * that may have no C library at all. On failure it prints one line and exits 121, the
 * engine's "the container could not be set up or started" code (docs/exit-codes.md), also
 * when PROGRAM cannot be run.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_RUNTIME 121

static int write_file(const char *path, const char *text)
{
    size_t len = strlen(text);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, len);
    int saved = errno;
    close(fd);
    errno = saved;
    return n == (ssize_t)len ? 0 : -1;
}

static int parse_id(const char *text, unsigned long *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long value = strtoul(text, &end, 10);
    if (errno != 0 || *text == '\0' || *text == '-' || *end != '\0' || value > 4294967294UL)
        return -1;
    *out = value;
    return 0;
}

static int fail(const char *what, const char *value)
{
    fprintf(stderr, "hpc-exec: error: %s%s%s: %s\n", what, value ? " " : "", value ? value : "",
            strerror(errno));
    return EXIT_RUNTIME;
}

int main(int argc, char **argv)
{
    unsigned long uid, gid;
    char map[64];

    if (argc < 4 || parse_id(argv[1], &uid) != 0 || parse_id(argv[2], &gid) != 0) {
        fprintf(stderr, "hpc-exec: error: usage: hpc-exec-idmap UID GID PROGRAM [ARG...]\n");
        return EXIT_RUNTIME;
    }
    unsigned int outer_uid = (unsigned int)geteuid();
    unsigned int outer_gid = (unsigned int)getegid();
    if (unshare(CLONE_NEWUSER) != 0)
        return fail("cannot create the caller's user namespace in the container", NULL);
    snprintf(map, sizeof map, "%lu %u 1\n", uid, outer_uid);
    if (write_file("/proc/self/uid_map", map) != 0)
        return fail("cannot write", "/proc/self/uid_map");
    /* setgroups is already "deny" in the engine's namespace, and so in this one; writing it
     * again keeps gid_map writable if that ever changes. */
    if (write_file("/proc/self/setgroups", "deny") != 0 && errno != ENOENT)
        return fail("cannot write", "/proc/self/setgroups");
    snprintf(map, sizeof map, "%lu %u 1\n", gid, outer_gid);
    if (write_file("/proc/self/gid_map", map) != 0)
        return fail("cannot write", "/proc/self/gid_map");
    /* The new namespace starts with a full bounding set; empty it, as runc did in the outer
     * one, so the container shows and can gain no capability at all. */
    for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0)
            return fail("cannot drop the capability bounding set", NULL);
    }
    execvp(argv[3], argv + 3);
    return fail("cannot run in the container:", argv[3]);
}
