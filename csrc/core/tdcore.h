/* Shared declarations of the _tdcore extension.
 *
 * Module state owns the heap types and every torch object handed over by the
 * Python layer.  The settings that the tp_new hooks of torch's static types
 * read live in process-wide atomics (flags.c): those types are shared by
 * every interpreter, so their hooks cannot reach a module state of their own.
 */
#ifndef TD_TDCORE_H
#define TD_TDCORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "policy.h"

/* c10::DeviceType values that have been stable since 2018 (checked against a
 * live torch.device at install time, see devarg.c). */
#define TD_C10_CPU 0
#define TD_C10_CUDA 1
#define TD_C10_MPS 13
#define TD_C10_META 14

typedef struct {
    PyTypeObject *wrapper_type;

    /* Handed over by install(); NULL until then. */
    PyTypeObject *device_type;     /* torch.device (static C type) */
    PyTypeObject *dtype_type;      /* torch.dtype */
    PyObject *dev_cpu;             /* torch.device("cpu") */
    PyObject *dev_cuda;            /* torch.device("cuda") */
    PyObject *dev_mps;             /* torch.device("mps", 0) */
    PyObject *float64;
    PyObject *float32;
    PyObject *tensor_to;           /* original torch.Tensor.to */
    PyObject *tensor_cpu;          /* original torch.Tensor.cpu */
    PyObject *module_to;           /* original torch.nn.Module.to */
    PyObject *mode_stack_len;      /* torch._C._len_torch_function_stack */
    PyObject *skip_prefixes;       /* tuple of path prefixes not reported */
    PyObject *report_sink;         /* callable(record) for the first hit */
    PyObject *records;             /* report.c's call-site table */
    PyObject *streams;             /* streams.h: td_streams */
    PyObject *masq;                /* masquerade.h: td_masq */

    /* moves.c, made at install from the objects above: */
    PyTypeObject *tensor_type;     /* torch._C.TensorBase (tensor_to's) */
    PyObject *tensor_storage;      /* TensorBase.untyped_storage */
    PyObject *tensor_clone;        /* TensorBase.clone */
    PyObject *intent_accel_cpu;    /* torch.device("cpu") handed out for an
                                      accelerator request (profile cpu) */
    PyObject *intent_host_cuda;    /* torch.device("cuda") handed out for a
                                      promoted host request */
    PyObject *intent_host_mps;     /* same for the MPS target */

    /* Interned names. */
    PyObject *str_device;
    PyObject *str_dtype;
    PyObject *str_non_blocking;
    PyObject *str_memory_format;
    PyObject *str_is_cpu;
    PyObject *str_name;
    PyObject *kw_device;           /* ("device",) */
    PyObject *api_device;          /* "torch.device" */
    PyObject *api_generator;       /* "torch.Generator" */
    PyObject *str_accel_mark;      /* storage attribute: on the accelerator */
} td_state;

/* flags.c: process-wide settings, read on every intercepted call. */
td_profile td_get_profile(void);
td_mode td_get_mode(void);
td_float64_policy td_get_float64(void);
int td_get_cpu_override(void);
int td_exchange_cpu_override(int value);
void td_toggle_cpu_override(void);
int td_get_report(void);
void td_set_config(td_profile profile, td_mode mode, td_float64_policy f64);
void td_set_report(int on);
extern PyMethodDef td_flags_methods[];

/* The state of the module that last ran install(); the tp_new hooks use it. */
td_state *td_installed_state(void);
void td_set_installed_state(td_state *st, PyObject *module);

/* devarg.c: Python device arguments <-> policy requests. */
int td_device_check_layout(td_state *st, PyObject *probe_mps);
td_request td_request_from_device(PyObject *dev);
/* 0 on success; a value that is not a device request gives TD_REQ_OTHER. */
td_request td_request_from_object(td_state *st, PyObject *obj);
int td_is_device_arg(td_state *st, PyObject *obj);
/* Borrowed reference to the device object for a target (not KEEP). */
PyObject *td_target_device(td_state *st, td_target t);
/* True when the innermost Python frame belongs to torch's own code. */
int td_called_from_torch(td_state *st);
/* The calling Python code's module __name__ (UTF-8, borrowed from the
 * frame's globals), or NULL when there is none. */
const char *td_caller_module(td_state *st, Py_ssize_t *size);
/* Resolves with the current settings and applies an override toggle. */
td_resolution td_resolve_now(td_state *st, td_request req);

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
td_intent td_intent_of_kind(td_req_kind kind);
td_intent td_intent_of_arg(td_state *st, PyObject *arg);
/* Borrowed device object for a target, carrying the intent by identity. */
PyObject *td_intent_device(td_state *st, td_target target, td_intent intent);
/* Borrowed cached object equal to `dev` (a device torch built), or NULL. */
PyObject *td_intent_cached(td_state *st, PyObject *dev);
/* Whether `dev` is one of the objects above that the policy keeps as it
 * is: torch.device(dev) may then be `dev` itself. */
int td_intent_kept(td_state *st, PyObject *dev);
int td_module_intent(void);
int td_swap_module_intent(int intent);
int td_on_accelerator(td_state *st, PyObject *tensor);
void td_mark_accelerator(td_state *st, PyObject *tensor);
/* Whether moving `tensor` with this intent must copy to be CUDA's move. */
int td_move_must_copy(td_state *st, PyObject *tensor, td_intent intent);
/* Finishes a move: a copy where `force` and torch returned `self`, and the
 * mark on a new result that went to the accelerator.  Steals `result`. */
PyObject *td_move_done(td_state *st, PyObject *self, td_intent intent,
                       int force, PyObject *result);
extern PyMethodDef td_moves_methods[];

/* devicehook.c */
int td_hooks_install(td_state *st, PyObject *gen_type);
void td_hooks_uninstall(void);
extern PyMethodDef td_hook_methods[];

/* wrapper.c */
extern PyType_Spec td_wrapper_spec;

/* report.c */
int td_report(td_state *st, PyObject *api, td_request req,
              td_resolution res, PyObject *orig);
/* A hit classified by the caller ("emulated", "unsupported", ...); the four
 * are str.  Callers check td_get_report() first. */
int td_record(td_state *st, PyObject *api, PyObject *what, PyObject *from,
              PyObject *to);
PyObject *td_sites_new(PyObject *module);
extern PyMethodDef td_report_methods[];

/* trace.c: the policy for torch.compile polyfills (TorchDevice/_compile.py) */
extern PyMethodDef td_trace_methods[];

/* stream_api.c, stream.c, event.c, backend_*.c (streams.h): streams and
 * events of torch.cuda / torch.mps */
int td_streams_exec(PyObject *module, td_state *st);
void td_streams_uninstall(td_state *st);
extern PyMethodDef td_streams_methods[];

/* masquerade.c, cuda_*.c, mps_reverse.c (masquerade.h): torch.cuda answered
 * for the device really used, and torch.mps answered from CUDA */
int td_masq_init(PyObject *module, td_state *st);

#endif /* TD_TDCORE_H */
