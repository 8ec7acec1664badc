/* Private declarations of the CUDA masquerade: torch.cuda.* answered for the
 * device that is really present (cuda_query.c, cuda_props.c, cuda_memory.c,
 * cuda_rng.c, cuda_misc.c) and torch.mps.* answered from CUDA
 * (mps_reverse.c).
 *
 * The state is an immutable snapshot (td_masq) that the module state points
 * to (td_state.masq): masq_install() and masq_configure() publish a new one,
 * and every callable holds the one it started with for its whole call.  The
 * counters every call reads or updates (peaks, "a query ran") are atomics in
 * one object all snapshots share.
 */
#ifndef TD_MASQUERADE_H
#define TD_MASQUERADE_H

#include "core/tdcore.h"

#include <stdatomic.h>

/* Facts about the process that every snapshot of a module shares: the
 * counters each call reads or updates (peaks, the truth switch's "a query
 * ran"), as atomics. */
typedef struct {
    PyObject_HEAD
    atomic_int initialized;     /* init() or any query ran */
    atomic_int current_index;   /* set_device()'s index, < device_count */
    atomic_int hwm_trusted;     /* the OS peak counts since our last reset */
    atomic_llong fraction_ppm;  /* per-process fraction, in millionths */
    atomic_llong peak_allocated;
    atomic_llong peak_reserved;
    atomic_llong last_sample;   /* last allocated bytes seen */
    atomic_llong total_allocated; /* growth seen between samples */
    atomic_llong total_freed;     /* shrinkage seen between samples */
    atomic_llong num_samples;
    atomic_llong rss_cache;       /* CPU: RSS read at rss_cache_ns */
    atomic_llong rss_cache_ns;
    atomic_int sync_debug_mode; /* set_sync_debug_mode()'s 0, 1 or 2 */
} td_masq_counters;

/* A snapshot of the masquerade's state: immutable once published (a change
 * makes a new one, masquerade.c), and held by each callable for its whole
 * call.  The one exception is `props`, built on first use: it goes from
 * NULL to its value once and is never replaced in a snapshot. */
typedef struct {
    PyObject_HEAD
    /* Handed over by masq_install(); NULL until then (all strong). */
    PyObject *props;            /* DeviceProperties of the one device */
    PyObject *props_factory;    /* () -> props, called at first use: on
                                   the CPU it reads psutil, whose import
                                   alone would double TorchDevice's */
    PyObject *capability;       /* (major, minor) */
    PyObject *target_device;    /* torch.device a "cuda" request becomes */
    PyObject *orig_is_available; /* torch.cuda.is_available, unpatched */
    PyObject *truth_for;        /* tuple of package names seeing the truth */
    PyObject *generator;        /* default generator of the target device */
    /* The device's own counters (device_memory; MPS, a generic
     * accelerator): */
    PyObject *device_allocated;    /* () -> bytes held by tensors */
    PyObject *device_reserved;     /* () -> bytes the allocator holds */
    PyObject *device_empty_cache;  /* torch.mps.empty_cache, ... */
    PyObject *device_set_fraction; /* torch.mps.set_per_process_... */
    /* Where the device keeps peaks itself (not MPS: there they are the
     * samples' maximum): () -> bytes, and their reset. */
    PyObject *device_max_allocated;
    PyObject *device_max_reserved;
    PyObject *device_reset_peak;
    PyObject *rss;              /* () -> int, where /proc is not there */
    PyObject *mem_info;         /* () -> (free, total) of the target */
    PyObject *orig_summary;     /* torch.cuda.memory_summary (formatter) */
    PyObject *log_debug;        /* callable(msg): logger.debug, or None */
    PyObject *log_info;         /* callable(msg): logger.info, or None */
    PyObject *cuda_module;      /* torch.cuda */
    PyObject *target_type;      /* "cpu" / "mps" (profile cuda: "cuda") */
    PyObject *record;           /* _tdcore.record */
    PyObject *originals;        /* dict: name -> torch callable it stands in
                                   for, or helper (OrderedDict, ...) */

    /* Taken from the installation in force at masq_install(). */
    PyObject *device_type;      /* torch.device */

    /* Interned names. */
    PyObject *str_manual_seed;
    PyObject *str_seed;
    PyObject *str_initial_seed;
    PyObject *str_get_state;
    PyObject *str_set_state;
    PyObject *str_optional;
    PyObject *str_abbreviated;
    PyObject *str_is_cuda;
    PyObject *str_type;
    PyObject *str_pname;        /* "name" */
    PyObject *api_prefix;       /* "torch.cuda." */

    PyObject *counters;         /* td_masq_counters, shared */

    long long total_memory;     /* bytes, fixed at install */
    int device_memory;          /* memory comes from the device's counters,
                                   not the process's resident set */
    int bf16;                   /* is_bf16_supported() */
    int mps_announced;          /* torch.backends.mps.is_available() says
                                   True to the program (mps_reverse.c) */
    int truthful;               /* is_available() tells everyone the truth */
    int device_count;           /* devices shown (all the one real device) */
} td_masq;

/* The counters of a snapshot. */
#define TD_MC(m) ((td_masq_counters *)(m)->counters)

/* A new reference to the snapshot in force of a module state. */
td_masq *td_masq_hold(td_state *st);

#if defined(__GNUC__) || defined(__clang__)
#define TD_MAYBE_UNUSED __attribute__((unused))
#else
#define TD_MAYBE_UNUSED
#endif

/* Every masquerade callable holds the snapshot in force for its whole call:
 * these define `name(module, ...)`, which does that and calls the body
 * written after the macro as `name_impl(st, m, ...)`. */
#define TD_MASQ_ENTRY(name, params, call)                                   \
    static PyObject *name##_impl(td_state *st TD_MAYBE_UNUSED,              \
                                 td_masq *m TD_MAYBE_UNUSED params);        \
    static PyObject *                                                       \
    name(PyObject *module TD_MASQ_PARAMS_##call)                            \
    {                                                                       \
        td_state *st = td_module_state(module);                             \
        td_masq *m = td_masq_hold(st);                                      \
        if (m == NULL) {                                                    \
            return NULL;                                                    \
        }                                                                   \
        PyObject *result = name##_impl(st, m TD_MASQ_ARGS_##call);          \
        Py_DECREF(m);                                                       \
        return result;                                                      \
    }                                                                       \
    static PyObject *name##_impl(td_state *st TD_MAYBE_UNUSED,              \
                                 td_masq *m TD_MAYBE_UNUSED params)

#define TD_MASQ_PARAMS_NOARGS , PyObject *Py_UNUSED(unused)
#define TD_MASQ_ARGS_NOARGS
#define TD_MASQ_PARAMS_O , PyObject *arg
#define TD_MASQ_ARGS_O , arg
#define TD_MASQ_PARAMS_FAST , PyObject *const *args, Py_ssize_t nargs
#define TD_MASQ_ARGS_FAST , args, nargs
#define TD_MASQ_PARAMS_FASTKW                                               \
    , PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames
#define TD_MASQ_ARGS_FASTKW , args, nargs, kwnames

/* METH_NOARGS: body sees (st, m). */
#define TD_MASQ_NOARGS(name) TD_MASQ_ENTRY(name, , NOARGS)
/* METH_O: body sees (st, m, arg). */
#define TD_MASQ_O(name) TD_MASQ_ENTRY(name, TD_MASQ_PARAMS_O, O)
/* METH_FASTCALL: body sees (st, m, args, nargs). */
#define TD_MASQ_FAST(name) TD_MASQ_ENTRY(name, TD_MASQ_PARAMS_FAST, FAST)
/* METH_FASTCALL | METH_KEYWORDS: body sees (st, m, args, nargs, kwnames). */
#define TD_MASQ_FASTKW(name) TD_MASQ_ENTRY(name, TD_MASQ_PARAMS_FASTKW, FASTKW)

/* cuda_query.c */
/* Index of the device a torch.cuda argument names (None and "cuda" ->
 * the current one when optional).  Every index names the one real device;
 * indexes past device_count collapse to 0, as the policy collapses
 * "cuda:N".  Returns 0, or -1 with ValueError set. */
int td_masq_device_index(td_masq *m, PyObject *arg, int optional,
                         long *index);
/* Borrowed torch callable recorded under `name` in masq_install's
 * originals, or NULL (no exception set). */
PyObject *td_masq_original(td_masq *m, const char *name);
/* Whether the calling code belongs to a package other than torch that is
 * told the truth (Triton, bitsandbytes, DeepSpeed, truth_for). */
int td_masq_caller_package_sees_truth(td_masq *m, td_state *st);
/* Adds an "emulated" record for api when recording is on: code written
 * for `from` ("cuda", or "mps" on profile cuda) answered by the target. */
int td_masq_record_from(td_state *st, td_masq *m, const char *api,
                        const char *from);
/* The same for torch.cuda's functions. */
int td_masq_record(td_state *st, td_masq *m, const char *api);
/* Logs through the logger "TorchDevice" at debug level, when enabled. */
int td_masq_debug(td_masq *m, const char *fmt, ...);
/* is_available()'s answer for the calling code, from `truth`; a made-up
 * answer is recorded as MPS code's `api` when api is not NULL. */
PyObject *td_masq_is_available_with(td_state *st, td_masq *m,
                                    PyObject *truth, const char *api);
extern PyMethodDef td_cuda_query_methods[];
/* The same queries recorded as torch.accelerator.* */
extern PyMethodDef td_accel_query_methods[];

/* The DeviceProperties object (borrowed from m, which the caller holds),
 * built by props_factory on first use; NULL with an exception set when it
 * cannot be had. */
PyObject *td_masq_props(td_masq *m);

/* cuda_props.c */
extern PyType_Spec td_props_spec;

/* cuda_memory.c */
extern PyMethodDef td_cuda_memory_methods[];

/* cuda_rng.c */
extern PyMethodDef td_cuda_rng_methods[];

/* cuda_misc.c */
extern PyMethodDef td_cuda_misc_methods[];

/* mps_reverse.c */
extern PyMethodDef td_mps_reverse_methods[];

#endif /* TD_MASQUERADE_H */
