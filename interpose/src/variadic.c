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
