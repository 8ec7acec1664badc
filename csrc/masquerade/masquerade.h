/* Private declarations of the CUDA masquerade: torch.cuda.* answered for the
 * device that is really present (cuda_query.c, cuda_props.c, cuda_memory.c,
 * cuda_rng.c, cuda_misc.c) and torch.mps.* answered from CUDA
 * (mps_reverse.c).
 *
 * The state is one GC object owned by the module state (td_state.masq).
 * Its object fields are handed over by masq_install() from the Python layer
 * and only replaced while holding the GIL; the counters that every call
 * reads or updates (peaks, the current device, the truth switch) are atomics
 * so that a free-threaded build stays correct.
 */
#ifndef TD_MASQUERADE_H
#define TD_MASQUERADE_H

#include "core/tdcore.h"

#include <stdatomic.h>

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
    PyObject *mps_allocated;    /* MPS: () -> bytes held by tensors */
    PyObject *mps_driver;       /* MPS: () -> bytes the driver holds */
    PyObject *mps_empty_cache;  /* MPS: torch.mps.empty_cache */
    PyObject *mps_set_fraction; /* MPS: torch.mps.set_per_process_... */
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

    long long total_memory;     /* bytes, fixed at install */
    int is_mps;                 /* memory comes from torch.mps */
    int bf16;                   /* is_bf16_supported() */

    atomic_int truthful;        /* is_available() tells everyone the truth */
    atomic_int device_count;    /* devices shown (all the one real device) */
    atomic_int current_index;   /* set_device()'s index, < device_count */
    atomic_int initialized;     /* init() or any query ran */
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
} td_masq;

/* The masquerade state of a module state (never NULL after exec). */
#define TD_MASQ(st) ((td_masq *)(st)->masq)

/* cuda_query.c */
/* Index of the device a torch.cuda argument names (None and "cuda" ->
 * the current one when optional).  Every index names the one real device;
 * indexes past device_count collapse to 0, as the policy collapses
 * "cuda:N".  Returns 0, or -1 with ValueError set. */
int td_masq_device_index(td_state *st, PyObject *arg, int optional,
                         long *index);
/* is_available()'s rule for another query: True for the code shown the
 * masquerade, `truth()` (None: False) for torch's own modules, the
 * configured packages, and everyone when truthful. */
PyObject *td_masq_is_available_with(PyObject *module, PyObject *truth);
/* Borrowed torch callable recorded under `name` in masq_install's
 * originals, or NULL (no exception set). */
PyObject *td_masq_original(td_masq *m, const char *name);
/* Adds an "emulated" record for api when recording is on. */
int td_masq_record(td_state *st, const char *api);
/* Logs through the logger "TorchDevice" at debug level, when enabled. */
int td_masq_debug(td_state *st, const char *fmt, ...);
extern PyMethodDef td_cuda_query_methods[];

/* The DeviceProperties object (borrowed), built by props_factory on first
 * use; NULL with an exception set when it cannot be had. */
PyObject *td_masq_props(td_masq *m);

/* cuda_props.c */
extern PyType_Spec td_props_spec;

/* cuda_memory.c */
extern PyMethodDef td_cuda_memory_methods[];

/* cuda_rng.c */
extern PyMethodDef td_cuda_rng_methods[];

/* cuda_misc.c */
extern PyMethodDef td_cuda_misc_methods[];
extern PyType_Spec td_cuda_graph_spec;

/* mps_reverse.c */
extern PyMethodDef td_mps_reverse_methods[];

#endif /* TD_MASQUERADE_H */
