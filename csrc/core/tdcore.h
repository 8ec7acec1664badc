/* Shared declarations of the _tdcore extension.
 *
 * Two kinds of state, with different lifetimes (docs/architecture.md):
 *
 * - td_state, the module state: what lives as long as the module (its
 *   types, interned names, the call-site table, the streams template, the
 *   masquerade snapshot).
 * - td_install, the installation: everything install() was handed (torch's
 *   types, the target devices, torch's originals), plus the streams objects
 *   handed over after it.  It is immutable once published: a change builds
 *   a new one and swaps it in.  Every hook takes a strong reference for
 *   the whole call (td_install_acquire), so uninstall() can drop it while
 *   a hook in another thread still uses it.  By convention a td_install
 *   pointer is called `st` in the hooks, which read nothing else.
 *
 * The settings read on every call (profile, mode, ...) are C11 atomics in
 * flags.c.
 */
#ifndef TD_TDCORE_H
#define TD_TDCORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "policy.h"

/* Per-thread state (scopes, a module move under way, the report's mute):
 * what one thread opens, only that thread closes. */
#if defined(_MSC_VER)
#define TD_THREAD_LOCAL __declspec(thread)
#else
#define TD_THREAD_LOCAL _Thread_local
#endif

/* c10::DeviceType values that have been stable since 2018 (checked against a
 * live torch.device at install time, see devarg.c). */
#define TD_C10_CPU 0
#define TD_C10_CUDA 1
#define TD_C10_MPS 13
#define TD_C10_META 14

/* Interned names, created at module exec; the module state and every
 * installation made from it hold them under the same field names. */
#define TD_NAME_FIELDS(X)                                                   \
    X(str_device, "device")                                                 \
    X(str_dtype, "dtype")                                                   \
    X(str_generator, "generator")                                           \
    X(str_non_blocking, "non_blocking")                                     \
    X(str_pin_memory, "pin_memory")                                         \
    X(str_memory_format, "memory_format")                                   \
    X(str_is_cpu, "is_cpu")                                                 \
    X(str_to, "to")                                                         \
    X(str_name, "__name__")                                                 \
    X(api_device, "torch.device")                                           \
    X(api_generator, "torch.Generator")                                     \
    X(str_accel_mark, "_torchdevice_on_accelerator")                        \
    X(str_lowered_mark, "_torchdevice_lowered")                             \
    X(str_tensor_flatten, "__tensor_flatten__")                             \
    X(str_grad_fn, "grad_fn")                                               \
    X(str_next_functions, "next_functions")                                 \
    X(str_variable, "variable")                                             \
    X(str_cuda, "cuda")                                                     \
    X(str_mps, "mps")                                                       \
    X(str_float64, "float64")                                               \
    X(str_float32, "float32")                                               \
    X(str_complex128, "complex128")                                         \
    X(str_complex64, "complex64")                                           \
    X(str_downcast, "downcast")                                             \
    X(str_out, "out")                                                       \
    X(str_tensor, "tensor")                                                 \
    X(str_force, "force")                                                   \
    X(str_resizable, "resizable")
#define TD_DECLARE_NAME(field, text) PyObject *field;

typedef struct {
    PyTypeObject *wrapper_type;
    PyTypeObject *install_type;
    PyObject *records;             /* report.c's call-site table */
    PyObject *streams;             /* streams.h: the td_streams template */
    PyObject *masq;                /* masquerade.h: the current snapshot */
    PyObject *installation;        /* td_install in force, or NULL */
    TD_NAME_FIELDS(TD_DECLARE_NAME)
    PyObject *kw_device;           /* ("device",) */
} td_state;

/* The accelerator kinds a device can be asked for under another's name. */
enum { TD_POSE_CUDA = 0, TD_POSE_MPS = 1, TD_POSE_KINDS = 2 };

typedef struct {
    PyObject_HEAD
    /* torch's types and values */
    PyTypeObject *device_type;     /* torch.device (static C type) */
    PyTypeObject *dtype_type;      /* torch.dtype */
    PyObject *target[TD_TARGET_COUNT];   /* torch.device per td_target;
                                            [TD_TARGET_KEEP] is NULL, and
                                            [TD_TARGET_ACCEL] where there is
                                            no generic accelerator */
    PyObject *accel_name;          /* str: target[TD_TARGET_ACCEL].type,
                                      or NULL */
    PyObject *float64;
    PyObject *float32;
    PyObject *complex128;          /* float64's complex pair: where float64 */
    PyObject *complex64;           /* is lowered, complex128 is too */
    PyObject *default_dtype;       /* torch.get_default_dtype */
    PyObject *made_dtype;          /* (fn, *args, **kwargs) -> the dtype the
                                      call makes, or None (wrapper.c) */
    /* torch's originals the wrappers fall back on */
    PyObject *tensor_to;           /* torch.Tensor.to */
    PyObject *tensor_cpu;          /* torch.Tensor.cpu */
    PyObject *module_to;           /* torch.nn.Module.to */
    /* torch's default-device context (devarg.c); any may be None */
    PyObject *mode_stack_len;      /* () -> int */
    PyObject *mode_stack_at;       /* (i) -> mode */
    PyObject *device_context;      /* torch.utils._device.DeviceContext */
    /* the report */
    PyObject *skip_prefixes;       /* tuple of path prefixes not reported */
    PyObject *report_sink;         /* callable(record) for a first hit */
    PyObject *records;             /* the module's call-site table */
    /* streams.h: the module's streams types (td_streams), and the objects
     * streams_setup() handed each backend (td_backends; NULL before) */
    PyObject *streams;
    PyObject *backends;
    /* moves.c, made at install from the objects above */
    PyTypeObject *tensor_type;     /* torch._C.TensorBase (tensor_to's) */
    PyObject *tensor_storage;      /* TensorBase.untyped_storage */
    PyObject *tensor_clone;        /* TensorBase.clone */
    /* pose.c: the device handed out for a "cuda" or "mps" request that
     * lands on a device of another type, per (target, kind asked for);
     * NULL where the kind is the target's own or there is no target.
     * [TD_TARGET_CPU][TD_POSE_CUDA] is the accelerator intent on profile
     * cpu (moves.c). */
    PyObject *pose[TD_TARGET_COUNT][TD_POSE_KINDS];
    /* pose.c: the poses for a request that names an index ("cuda:1"),
     * made at first use: {slot: pose} and {address of a pose: slot}, where
     * a slot encodes (target, kind asked for, index asked for). */
    PyObject *pose_at;
    PyObject *pose_asked;
    PyObject *intent_host_cuda;    /* torch.device("cuda") handed out for a
                                      promoted host request */
    PyObject *intent_host_mps;     /* same for the MPS target */
    PyObject *intent_host_accel;   /* same for the generic accelerator's
                                      (NULL where there is none) */
    TD_NAME_FIELDS(TD_DECLARE_NAME)
    PyObject *kw_device;           /* ("device",) */
} td_install;

/* module.c: the state of a module, and the installation in force. */
td_state *td_module_state(PyObject *module);
/* The state of the module that defined `type` (one of our heap types). */
td_state *td_type_state(PyTypeObject *type);
/* A new reference to the installation in force, or NULL (no exception)
 * when TorchDevice is not installed. */
td_install *td_install_acquire(void);
/* The same, with RuntimeError set when there is none. */
td_install *td_install_require(const char *what);
/* Builds a copy of `src` (every field a new reference) to change before it
 * is published. */
td_install *td_install_copy(td_install *src);
/* Makes `inst` (stolen; NULL to uninstall) the installation in force. */
void td_install_publish(td_state *mst, td_install *inst);

/* slots.c: the tp_new hooks of torch's static types, one helper for all. */
typedef enum {
    TD_SLOT_DEVICE = 0,            /* torch.device */
    TD_SLOT_DEVICE_FACE = 1,       /* torch.device's type, str and repr
                                      (pose.c; not a tp_new) */
    TD_SLOT_GENERATOR = 2,         /* torch.Generator */
    TD_SLOT_STREAM = 3,            /* torch.Stream */
    TD_SLOT_EVENT = 4,             /* torch.Event */
    TD_SLOT_COUNT = 5,
} td_slot;
/* Swaps type's tp_new for hook.  Fails (RuntimeError naming the type, the
 * slot untouched) when the type has a vectorcall entry, which would bypass
 * tp_new, or when a failure was injected for this step (tests). */
int td_slot_hook(td_slot slot, PyObject *type, newfunc hook);
void td_slot_unhook(td_slot slot);
/* Undoes every hook, in the reverse order of installation. */
void td_slots_unhook_all(void);
/* The hooked type, or NULL; and torch's own tp_new (valid once hooked, and
 * kept after unhooking: a hook already running may still call it). */
PyTypeObject *td_slot_type(td_slot slot);
newfunc td_slot_original(td_slot slot);
extern PyMethodDef td_slot_methods[];

/* flags.c: process-wide settings, read on every intercepted call. */
td_profile td_get_profile(void);
td_mode td_get_mode(void);
td_float64_policy td_get_float64(void);
int td_get_accel_float64(void);
int td_get_cpu_override(void);
int td_exchange_cpu_override(int value);
void td_toggle_cpu_override(void);
void td_note_mps_request(void);
int td_mps_requested(void);
int td_get_report(void);
void td_set_config(td_profile profile, td_mode mode, td_float64_policy f64,
                   int accel_float64);
void td_set_report(int on);
extern PyMethodDef td_flags_methods[];

/* args.c: the one parser of C functions' arguments. */
typedef struct {
    const char *fname;             /* for messages: "set_device" */
    const char *const *names;      /* parameter names, by position */
    int count;                     /* how many parameters */
    int required;                  /* the first `required` must be given */
    int positional;                /* how many may be given by position */
} td_args_spec;
/* Fills out[0..count) with borrowed arguments (NULL when absent) of a
 * vectorcall/FASTCALL call; TypeError as CPython words it on a mismatch. */
int td_args_parse(const td_args_spec *spec, PyObject *const *args,
                  Py_ssize_t nargs, PyObject *kwnames, PyObject **out);

/* devarg.c: Python device arguments <-> policy requests. */
int td_device_check_layout(PyTypeObject *device_type, PyObject *probes);
/* The generic accelerator's type as the parser takes it (name NULL where
 * there is none, or st is NULL). */
td_accel_type td_accel_of(td_install *st);
/* `accel` may be NULL: its type is then TD_REQ_OTHER. */
td_request td_request_from_device(PyObject *dev, const td_accel_type *accel);
/* The c10 DeviceType of a torch.device object. */
int td_device_type_code(PyObject *dev);
/* Whether two torch.device objects name the same device. */
int td_same_device(PyObject *a, PyObject *b);
/* A value that is not a device request gives TD_REQ_OTHER.  device_type
 * may be NULL (not installed): then only str, bytes and int are read. */
td_request td_request_from_value(PyTypeObject *device_type,
                                 const td_accel_type *accel, PyObject *obj);
td_request td_request_from_object(td_install *st, PyObject *obj);
/* `req`, read from `obj`: TD_REQ_HOST_PLACE where `obj` is a host
 * torch.device TorchDevice did not hand out (read off a tensor), the place
 * of that tensor. */
td_request td_request_as_place(td_install *st, PyObject *obj, td_request req);
/* A call's device argument as the policy resolves it: as
 * td_request_as_place reads it where a "cpu" request would be promoted,
 * td_request_from_object elsewhere (both resolve alike there). */
td_request td_request_of_arg(td_install *st, PyObject *obj);
int td_is_device_arg(td_install *st, PyObject *obj);
/* Borrowed reference to the device object for a target (not KEEP). */
PyObject *td_target_device(td_install *st, td_target t);
/* True when the innermost Python frame belongs to torch's own code, or to
 * a library's host-side code that reads tensors' memory as host bytes.
 * name_key is the interned "__name__". */
int td_called_from_torch(PyObject *name_key);
/* The same, less the torch code that builds the program's own devices
 * (devarg.c): whether a "cuda"/"mps" torch.device it makes is the truth. */
int td_torch_names_device(PyObject *name_key);
/* The calling Python code's module __name__ (UTF-8, borrowed from the
 * frame's globals), or NULL when there is none. */
const char *td_caller_module(PyObject *name_key, Py_ssize_t *size);
/* The dtype a float64-based dtype (float64, complex128) becomes where
 * float64 is lowered (float32, complex64), borrowed; NULL for any other. */
PyObject *td_narrow_dtype(td_install *st, PyObject *dtype);
/* "float64", "float32", "complex128" or "complex64" for those dtypes (the
 * report's and the errors' words), borrowed. */
PyObject *td_dtype_name(td_install *st, PyObject *dtype);
/* The TypeError of TORCHDEVICE_FLOAT64=error for `dtype` (float64 or
 * complex128), naming the call `api`. */
void td_float64_error(td_install *st, PyObject *api, PyObject *dtype);
/* Resolves with the current settings and applies an override toggle. */
td_resolution td_resolve_now(td_install *st, td_request req);
/* Depth of this thread's torch-function mode stack (mode_stack_len must
 * not be None); -1 with an exception on error. */
Py_ssize_t td_mode_stack_depth(td_install *st);
/* Whether torch's default-device context (`with torch.device(...)`,
 * torch.set_default_device) is active in the calling thread: 1, 0 or -1. */
int td_default_device_active(td_install *st);
extern PyMethodDef td_devarg_methods[];

/* moves.c: moves copy, as on CUDA (docs/policy.md) */
typedef enum {
    TD_INTENT_NONE = 0,    /* no device, or one read from a tensor */
    TD_INTENT_HOST = 1,
    TD_INTENT_ACCEL = 2,
} td_intent;
int td_get_move_copies(void);
/* Whether copies may have to be forced: host and accelerator requests can
 * land on one device. */
int td_moves_active(void);
/* Derives the installation's moves fields (before torch.device is hooked:
 * the intent devices must be new objects). */
int td_moves_setup(td_install *st);
td_intent td_intent_of_kind(td_req_kind kind);
/* Whether `dev` is one of the torch.device objects TorchDevice hands out
 * for requests (the targets, the intent devices, the poses). */
int td_device_handed_out(td_install *st, PyObject *dev);
td_intent td_intent_of_arg(td_install *st, PyObject *arg);
/* Where the program sees a tensor, as the intent of a move to it
 * (.to(other)); TD_INTENT_NONE where it is not known. */
td_intent td_intent_of_tensor(td_install *st, PyObject *tensor);
/* Tensor.pin_memory() where nothing can be pinned: CUDA's pinned copy is a
 * new tensor, so this is a host request's copy, or the tensor itself where
 * a host request made it (as pinning a pinned tensor is). */
PyObject *td_pinned_copy(td_install *st, PyObject *tensor);
/* The result of a data constructor called for the host (as_tensor(t,
 * device="cpu")): CUDA copies data it has on the GPU, so a result sharing
 * the memory of a tensor on the accelerator becomes a copy, marked as a
 * host request's.  Data whose place is not known keeps as_tensor's alias
 * (host data, numpy arrays: no copy on CUDA either).  Steals `result`. */
PyObject *td_constructed_on_host(td_install *st, PyObject *data,
                                 PyObject *result);
/* What numpy(force=True) converts: CUDA's force copies a tensor on the GPU
 * to the host, so one on the accelerator is cloned first.  New reference. */
PyObject *td_numpy_source(td_install *st, PyObject *tensor);
/* Borrowed device object for a target, carrying the intent by identity. */
PyObject *td_intent_device(td_install *st, td_target target,
                           td_intent intent);
/* Borrowed cached object equal to `dev` (a device torch built), or NULL. */
PyObject *td_intent_cached(td_install *st, PyObject *dev);
/* Whether `dev` is one of the objects above that the policy keeps as it
 * is: torch.device(dev) may then be `dev` itself. */
int td_intent_kept(td_install *st, PyObject *dev);
/* A new torch.device equal to `dev`, made by torch's own tp_new. */
int td_new_device_like(td_install *st, PyObject *dev, PyObject **out);
int td_module_intent(void);
int td_swap_module_intent(int intent);
int td_on_accelerator(td_install *st, PyObject *tensor);
void td_mark_accelerator(td_install *st, PyObject *tensor);
void td_mark_lowered(td_install *st, PyObject *tensor);
/* Finishes a constructor's call for an accelerator request
 * (torch.as_tensor(data, device="cuda"), asarray, tensor): a copy where
 * torch returned memory the data owns and the data is not on the
 * accelerator (CUDA copies it there), then the mark.  Steals `result`. */
PyObject *td_constructed_on_accelerator(td_install *st, PyObject *data,
                                        PyObject *result);
/* Opens a move in this thread, just before torch is called: returns the
 * token td_move_done() takes. */
const void *td_move_begin(void);
/* Finishes a move: a copy where torch returned the tensor `self` and the
 * move crosses devices, and the mark on a new result that went to the
 * accelerator; nothing where the move already came through a wrapper again
 * for `self` (a tensor subclass's __torch_function__ calls torch's public
 * method, which is ours).  Steals `result`. */
PyObject *td_move_done(td_install *st, PyObject *self, td_intent intent,
                       const void *begun, PyObject *result);
extern PyMethodDef td_moves_methods[];

/* pose.c: what a device the program asked for reads as (docs/policy.md) */
/* The name `dev` reads as to the program ("cuda", "mps"; borrowed), or
 * NULL when it is not one of the installation's poses. */
PyObject *td_pose_name(td_install *st, PyObject *dev);
extern PyMethodDef td_pose_methods[];

/* shared.c: atomic counters in memory shared between processes */
extern PyMethodDef td_shared_methods[];
/* The device object to hand out for `req` sent to `target` with `intent`
 * (new reference, or NULL with an exception): the pose where the kind is
 * not the target's, reading the index `req` asked for. */
PyObject *td_request_device(td_install *st, td_target target,
                            td_request req, td_intent intent);
/* Whether `dev` is a pose asked for as "cuda": 1 with *index set to the
 * index asked for (-1: none), else 0. */
int td_pose_cuda_index(td_install *st, PyObject *dev, long *index);
/* Whether `dev` is a pose whose kind the policy still sends to its target:
 * torch.device(dev) may then be `dev` itself. */
int td_pose_kept(td_install *st, PyObject *dev);
/* Makes the installation's poses (before torch.device is hooked). */
int td_poses_setup(td_install *st);
/* Swaps torch.device's `type` and `index` getters, `__reduce__` and
 * str/repr for ones that show what a pose was asked for (slots.c's
 * "torch.device.type" step), and back. */
int td_face_hook(PyTypeObject *device_type);
void td_face_unhook(PyTypeObject *device_type);
/* Whether the calling code is shown what a device was asked for rather
 * than the device really used: whoever is shown the masquerade, except
 * TorchDevice's own modules.  The masquerade owns that rule
 * (masquerade/cuda_query.c).  Never fails. */
int td_masq_shows_pose(td_state *st);

/* devicehook.c */
int td_hooks_install(td_install *st, PyObject *gen_type);
extern PyMethodDef td_hook_methods[];

/* wrapper.c */
extern PyType_Spec td_wrapper_spec;
/* What every function-like type of ours (Wrapper) shares:
 * binds like a function (tp_descr_get), and pickles by the __module__ and
 * _td_pickle_name in its __dict__, which the patch table sets to where the
 * object is installed, as torch's own callables pickle by name. */
PyObject *td_bind_like_function(PyObject *self, PyObject *obj,
                                PyObject *type);
PyObject *td_reduce_by_name(PyObject *self, PyObject *unused);

/* install.c: the installation type and install()/uninstall(). */
extern PyType_Spec td_install_spec;
extern PyMethodDef td_install_methods[];
/* Undoes every hook and publishes no installation, if `mst` owns it. */
void td_uninstall_module(td_state *mst);

/* report.c */
int td_report(td_install *st, PyObject *api, td_request req,
              td_resolution res, PyObject *orig);
/* A hit classified by the caller ("emulated", "unsupported", ...); the four
 * are str.  Callers check td_get_report() first.  `table` is the module's
 * call-site table, `inst` the installation (may be NULL: no sink). */
int td_record(PyObject *table, td_install *inst, PyObject *api,
              PyObject *what, PyObject *from, PyObject *to);
/* While one of our functions answers through another of ours (torch.mps's
 * actions through the CUDA masquerade on a machine with neither), the
 * inner one records nothing: the report names what the program called,
 * once.  Per thread; pairs nest. */
void td_report_mute(void);
void td_report_unmute(void);
/* The masquerade's queries that the report records when their answer was
 * made up for the user's code (docs/report.md). */
typedef enum {
    TD_QUERY_CUDA_IS_AVAILABLE = 0,
    TD_QUERY_CUDA_DEVICE_COUNT,
    TD_QUERY_ACCEL_IS_AVAILABLE,
    TD_QUERY_ACCEL_DEVICE_COUNT,
    TD_QUERY_ACCEL_CURRENT,
    TD_QUERY_COUNT,
} td_query;
/* An "emulated" hit of query q, cuda -> to (a str), at the caller's site;
 * builds no object on a repeated hit.  Callers check td_get_report(). */
int td_record_query(PyObject *table, td_install *inst, td_query q,
                    PyObject *to);
PyObject *td_sites_new(PyObject *module);
extern PyMethodDef td_report_methods[];

/* trace.c: the policy for torch.compile polyfills (TorchDevice/_compile.py) */
extern PyMethodDef td_trace_methods[];

/* stream_api.c, stream.c, event.c, backend_*.c (streams.h): streams and
 * events of torch.cuda / torch.mps */
int td_streams_exec(PyObject *module, td_state *st);
extern PyMethodDef td_streams_methods[];

/* masquerade.c, cuda_*.c, mps_reverse.c (masquerade.h): torch.cuda answered
 * for the device really used, and torch.mps answered from CUDA */
int td_masq_init(PyObject *module, td_state *st);

/* obj.name where obj may lack it: 1 with *value set, 0 without (no
 * error), -1 on error.  One spelling for every Python version. */
static inline int
td_optional_attr(PyObject *obj, PyObject *name, PyObject **value)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyObject_GetOptionalAttr(obj, name, value);
#else
    return _PyObject_LookupAttr(obj, name, value);
#endif
}

/* dict[key] as a new reference: 1 with *value set, 0 when missing (no
 * error), -1 on error.  One spelling for every Python version. */
static inline int
td_dict_get_ref(PyObject *dict, PyObject *key, PyObject **value)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyDict_GetItemRef(dict, key, value);
#else
    *value = Py_XNewRef(PyDict_GetItemWithError(dict, key));
    return *value != NULL ? 1 : PyErr_Occurred() ? -1 : 0;
#endif
}

/* Same-shape boilerplate of our callable types. */
#define TD_FASTKW(f) (PyCFunction)(void (*)(void))(f), \
                     METH_FASTCALL | METH_KEYWORDS

#endif /* TD_TDCORE_H */
