/* The C-variadic members of the exec family, which stable Rust cannot
 * define. Each collects its arguments and calls the non-variadic sibling,
 * which resolves to libmpaudit's own hook (this library is first in the
 * lookup order), so the exec is logged and its environment doctored. */
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>

extern char **environ;
int execv(const char *path, char *const argv[]);
int execvp(const char *file, char *const argv[]);
int execve(const char *path, char *const argv[], char *const envp[]);

#define MAX_ARGS 4096

/* Copies arg0 and the variadic arguments up to and including the NULL. */
#define COLLECT(argv, arg0, ap)                                   \
    do {                                                          \
        size_t n_ = 0;                                            \
        (argv)[n_++] = (char *)(arg0);                            \
        while ((argv)[n_ - 1] != NULL) {                          \
            if (n_ == MAX_ARGS) { errno = E2BIG; return -1; }     \
            (argv)[n_++] = va_arg(ap, char *);                    \
        }                                                         \
    } while (0)

__attribute__((visibility("default")))
int execl(const char *path, const char *arg, ...) {
    char *argv[MAX_ARGS];
    va_list ap;
    va_start(ap, arg);
    COLLECT(argv, arg, ap);
    va_end(ap);
    return execv(path, argv);
}

__attribute__((visibility("default")))
int execlp(const char *file, const char *arg, ...) {
    char *argv[MAX_ARGS];
    va_list ap;
    va_start(ap, arg);
    COLLECT(argv, arg, ap);
    va_end(ap);
    return execvp(file, argv);
}

__attribute__((visibility("default")))
int execle(const char *path, const char *arg, ...) {
    char *argv[MAX_ARGS];
    va_list ap;
    va_start(ap, arg);
    COLLECT(argv, arg, ap);
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return execve(path, argv, envp);
}

/* ---- syscall(): the file system calls a program makes by number ----
 *
 * syscall(3) is variadic; its six argument words are collected here and
 * the file-changing numbers handed to the Rust dispatcher (hooks.rs,
 * `__mpaudit_syscall`), which sends each through the same code as its
 * libc wrapper. Every other number, and every call made by this library
 * itself (its own raw system calls go through `syscall` too, which this
 * definition interposes), goes straight to libc's syscall with the same
 * return value and errno. */
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stdint.h>
#include <sys/syscall.h>

typedef long (*syscall_fn)(long, long, long, long, long, long, long);
static syscall_fn real_syscall;

long __mpaudit_syscall(uintptr_t caller, long number, const long *args);

/* Resolves libc's syscall (called at load; before that, on first use,
 * with a lock-free store like every other real function). */
__attribute__((visibility("hidden"))) void __mpaudit_resolve_syscall(void) {
    __atomic_store_n(&real_syscall, (syscall_fn)dlsym(RTLD_NEXT, "syscall"), __ATOMIC_RELEASE);
}

/* libc's syscall with the program's words: the hook's own pass-through
 * (exported to the dispatcher too). */
__attribute__((visibility("hidden"))) long __mpaudit_real_syscall(long number, const long *a) {
    syscall_fn f = __atomic_load_n(&real_syscall, __ATOMIC_ACQUIRE);
    if (f == NULL) {
        __mpaudit_resolve_syscall();
        f = __atomic_load_n(&real_syscall, __ATOMIC_ACQUIRE);
    }
    if (f == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return f(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* This library's own address range, from its ELF header (the linker's
 * hidden __ehdr_start) and program headers, found once. */
extern const char __ehdr_start[] __attribute__((visibility("hidden")));
static uintptr_t own_lo, own_hi;

static int from_this_library(uintptr_t caller) {
    uintptr_t hi = __atomic_load_n(&own_hi, __ATOMIC_ACQUIRE);
    if (hi == 0) {
        const ElfW(Ehdr) *eh = (const ElfW(Ehdr) *)__ehdr_start;
        const ElfW(Phdr) *ph = (const ElfW(Phdr) *)(__ehdr_start + eh->e_phoff);
        uintptr_t lo = UINTPTR_MAX, base = 0;
        for (int i = 0; i < eh->e_phnum; i++) {
            if (ph[i].p_type != PT_LOAD) continue;
            if (ph[i].p_offset == 0) base = (uintptr_t)__ehdr_start - ph[i].p_vaddr;
            if (ph[i].p_vaddr < lo) lo = ph[i].p_vaddr;
            if (ph[i].p_vaddr + ph[i].p_memsz > hi) hi = ph[i].p_vaddr + ph[i].p_memsz;
        }
        __atomic_store_n(&own_lo, base + lo, __ATOMIC_RELAXED);
        hi += base;
        __atomic_store_n(&own_hi, hi, __ATOMIC_RELEASE);
    }
    return caller >= __atomic_load_n(&own_lo, __ATOMIC_RELAXED) && caller < hi;
}

/* The numbers the dispatcher handles (it passes anything else through). */
static int is_file_syscall(long n) {
    switch (n) {
#ifdef SYS_open
    case SYS_open: case SYS_creat: case SYS_rename: case SYS_unlink:
    case SYS_rmdir: case SYS_mkdir: case SYS_link: case SYS_symlink:
    case SYS_chmod: case SYS_chown: case SYS_lchown: case SYS_utime:
    case SYS_utimes: case SYS_futimesat: case SYS_mknod:
    case SYS_stat: case SYS_lstat: case SYS_access:
#endif
    case SYS_openat: case SYS_openat2: case SYS_renameat: case SYS_renameat2:
    case SYS_unlinkat: case SYS_mkdirat: case SYS_linkat: case SYS_symlinkat:
    case SYS_truncate: case SYS_fchmodat: case 452 /* fchmodat2 */:
    case SYS_fchownat: case SYS_utimensat: case SYS_mknodat:
    case SYS_execve: case SYS_execveat: case SYS_bind:
    case SYS_newfstatat: case SYS_statx: case SYS_faccessat: case SYS_faccessat2:
    case SYS_getdents64:
    case SYS_fchmod: case SYS_fchown: case SYS_fsetxattr: case SYS_fremovexattr:
    case SYS_setxattr: case SYS_lsetxattr: case SYS_removexattr: case SYS_lremovexattr:
    case SYS_getxattr: case SYS_lgetxattr: case SYS_listxattr: case SYS_llistxattr:
        return 1;
    default:
        return 0;
    }
}

__attribute__((visibility("default")))
long syscall(long number, ...) {
    long a[6];
    va_list ap;
    va_start(ap, number);
    /* syscall(3) reads six words whatever the call takes, as glibc does. */
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    uintptr_t caller = (uintptr_t)__builtin_return_address(0);
    if (!is_file_syscall(number) || from_this_library(caller))
        return __mpaudit_real_syscall(number, a);
    return __mpaudit_syscall(caller, number, a);
}
