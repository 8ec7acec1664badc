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
int td_record_query(td_state *st, td_query q, PyObject *to);
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
