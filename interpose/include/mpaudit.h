/* mpaudit runtime API, for frameworks that cooperate with libmpaudit.so.
 *
 * Look the functions up at run time so the framework runs unchanged without
 * the library:
 *
 *     typedef int (*declare_fn)(const char *);
 *     declare_fn declare = (declare_fn)dlsym(RTLD_DEFAULT, "mpaudit_declare_output");
 *     if (declare) declare("hist.root");
 */
#ifndef MPAUDIT_H
#define MPAUDIT_H

#ifdef __cplusplus
extern "C" {
#endif

/* Declares `path` (relative paths are resolved against the cwd now) an
 * output managed by the framework's I/O components, like Gaudi's
 * IIoComponentMgr::io_register(comp, WRITE, path): writes to it are
 * "declared", never "rogue". Inherited by forked workers.
 * Returns 0, or -1 with errno EINVAL or ENOMEM (table full). */
int mpaudit_declare_output(const char *path);

/* 1 when libmpaudit.so is loaded and initialised. */
int mpaudit_enabled(void);

#ifdef __cplusplus
}
#endif

#endif
