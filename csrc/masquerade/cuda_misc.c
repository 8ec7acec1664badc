/* torch.cuda calls that have no meaning off CUDA: NVTX annotations (no-ops),
 * make_graphed_callables (the eager equivalent: CUDAGraph itself is
 * recorded and replayed in TorchDevice/_graphs.py), IPC and debug switches
 * and the pinned-memory counters' resets (no-ops that log at debug level).
 *
 * Python equivalent:
 *
 *     def range_push(msg): return 0           # nvtx: nothing to annotate
 *     def make_graphed_callables(callables, sample_args, *a, **k):
 *         return callables                     # run eagerly
 *     def ipc_collect(): log.debug("no-op")
 */
#include "masquerade.h"

/* ---- NVTX: annotations for NVIDIA's profilers; nothing records them ---- */

static PyObject *
nvtx_depth(PyObject *Py_UNUSED(module), PyObject *const *Py_UNUSED(args),
           Py_ssize_t Py_UNUSED(nargs), PyObject *Py_UNUSED(kwnames))
{
    return PyLong_FromLong(0);
}

static PyObject *
nvtx_none(PyObject *Py_UNUSED(module), PyObject *const *Py_UNUSED(args),
          Py_ssize_t Py_UNUSED(nargs), PyObject *Py_UNUSED(kwnames))
{
    Py_RETURN_NONE;
}

/* ---- no-meaning calls ----------------------------------------------- */

static PyObject *
noop_logged(td_state *st, td_masq *m, const char *api)
{
    if (td_masq_debug(m, "%s(): no effect on %S", api,
                      m->target_type ? m->target_type : Py_None) < 0
        || td_masq_record(st, m, api) < 0)
    {
        return NULL;
    }
    Py_RETURN_NONE;
}

TD_MASQ_NOARGS(misc_ipc_collect)
{
    return noop_logged(st, m, "torch.cuda.ipc_collect");
}

/* CUDA's warning level for synchronizing calls.  Nothing here waits on a
 * device the way CUDA's .item() or nonzero() do, so there is nothing to warn
 * about; the level is kept, as torch validates it, so a program that saves
 * and restores it (get, set "warn", set the saved one back) reads back what
 * it set. */
TD_MASQ_O(misc_set_sync_debug_mode)
{
    long mode;
    if (PyUnicode_Check(arg)) {
        if (PyUnicode_CompareWithASCIIString(arg, "default") == 0) {
            mode = 0;
        }
        else if (PyUnicode_CompareWithASCIIString(arg, "warn") == 0) {
            mode = 1;
        }
        else if (PyUnicode_CompareWithASCIIString(arg, "error") == 0) {
            mode = 2;
        }
        else {
            PyErr_SetString(PyExc_RuntimeError,
                            "invalid value of debug_mode, expected one of "
                            "`default`, `warn`, `error`");
            return NULL;
        }
    }
    else if (PyLong_Check(arg) && !PyBool_Check(arg)) {
        int overflow;
        mode = PyLong_AsLongAndOverflow(arg, &overflow);
        if (mode == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (overflow || mode < 0 || mode > 2) {
            PyErr_SetString(PyExc_RuntimeError,
                            "invalid value of debug_mode, expected one of "
                            "0,1,2");
            return NULL;
        }
    }
    else {
        PyErr_SetString(PyExc_RuntimeError,
                        "invalid argument to set_sync_debug_mode");
        return NULL;
    }
    atomic_store(&TD_MC(m)->sync_debug_mode, (int)mode);
    return noop_logged(st, m, "torch.cuda.set_sync_debug_mode");
}

/* The pinned-memory allocator's counters: host_memory_stats() answers
 * torch's own empty dict here, so there is nothing to reset. */
TD_MASQ_NOARGS(misc_reset_peak_host)
{
    return noop_logged(st, m, "torch.cuda.reset_peak_host_memory_stats");
}

TD_MASQ_NOARGS(misc_reset_accumulated_host)
{
    return noop_logged(st, m,
                       "torch.cuda.reset_accumulated_host_memory_stats");
}

TD_MASQ_NOARGS(misc_get_sync_debug_mode)
{
    return PyLong_FromLong(atomic_load(&TD_MC(m)->sync_debug_mode));
}

TD_MASQ_FASTKW(misc_record_memory_history)
{
    (void)args;
    (void)nargs;
    (void)kwnames;
    return noop_logged(st, m, "torch.cuda.memory._record_memory_history");
}

/* _snapshot(device=None, augment_with_fx_traces=False): what
 * torch.cuda.memory._dump_snapshot pickles and the memory visualizer
 * reads.  No allocator here keeps segments or, with
 * _record_memory_history a no-op, traces: an empty snapshot of the shape
 * CUDA's has, so a program that saves one goes on. */
TD_MASQ_FASTKW(misc_memory_snapshot)
{
    static const char *const names[] = {"device", "augment_with_fx_traces"};
    static const td_args_spec spec = {"_snapshot", names, 2, 0, 2};
    PyObject *a[2];
    PyObject *snapshot = NULL, *settings = NULL;
    if (td_args_parse(&spec, args, nargs, kwnames, a) < 0
        || td_masq_record(st, m, "torch.cuda.memory._snapshot") < 0)
    {
        return NULL;
    }
    snapshot = Py_BuildValue("{s:[],s:[[]]}", "segments", "device_traces");
    if (snapshot == NULL) {
        goto error;
    }
    settings = PyDict_New();
    if (settings == NULL
        || PyDict_SetItemString(snapshot, "allocator_settings", settings) < 0)
    {
        goto error;
    }
    Py_DECREF(settings);
    return snapshot;
error:
    Py_XDECREF(settings);
    Py_XDECREF(snapshot);
    return NULL;
}

TD_MASQ_FASTKW(misc_caching_allocator_enable)
{
    (void)args;
    (void)nargs;
    (void)kwnames;
    return noop_logged(st, m, "torch.cuda.caching_allocator_enable");
}

/* ---- make_graphed_callables ------------------------------------------- */

TD_MASQ_FASTKW(misc_make_graphed_callables)
{
    /* Everything after `callables` is CUDA capture detail: accepted, not
     * used. */
    PyObject *callables = nargs > 0 ? args[0] : NULL;
    for (Py_ssize_t i = 0; kwnames && i < PyTuple_GET_SIZE(kwnames); i++) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i),
                                             "callables") == 0)
        {
            callables = args[nargs + i];
        }
    }
    if (callables == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "make_graphed_callables() missing 1 required "
                        "positional argument: 'callables'");
        return NULL;
    }
    if (td_masq_debug(m, "torch.cuda.make_graphed_callables: running %R "
                      "eagerly (no CUDA graphs on %S)", callables,
                      m->target_type) < 0
        || td_masq_record(st, m, "torch.cuda.make_graphed_callables") < 0)
    {
        return NULL;
    }
    return Py_NewRef(callables);
}

PyMethodDef td_cuda_misc_methods[] = {
    {"range_push", TD_FASTKW(nvtx_depth), "range_push(msg) -> 0 (no-op)"},
    {"range_pop", TD_FASTKW(nvtx_depth), "range_pop() -> 0 (no-op)"},
    {"range_start", TD_FASTKW(nvtx_depth), "range_start(msg) -> 0 (no-op)"},
    {"range_end", TD_FASTKW(nvtx_none), "range_end(range_id) (no-op)"},
    {"mark", TD_FASTKW(nvtx_none), "mark(msg) (no-op)"},
    {"ipc_collect", misc_ipc_collect, METH_NOARGS, "ipc_collect() (no-op)"},
    {"set_sync_debug_mode", misc_set_sync_debug_mode, METH_O,
     "set_sync_debug_mode(debug_mode): kept for get_sync_debug_mode()"},
    {"get_sync_debug_mode", misc_get_sync_debug_mode, METH_NOARGS,
     "get_sync_debug_mode() -> the level set (0, 1 or 2)"},
    {"reset_peak_host_memory_stats", misc_reset_peak_host, METH_NOARGS,
     "reset_peak_host_memory_stats() (no-op)"},
    {"reset_accumulated_host_memory_stats", misc_reset_accumulated_host,
     METH_NOARGS, "reset_accumulated_host_memory_stats() (no-op)"},
    {"_record_memory_history", TD_FASTKW(misc_record_memory_history),
     "_record_memory_history(...) (no-op)"},
    {"_snapshot", TD_FASTKW(misc_memory_snapshot),
     "_snapshot(device=None, augment_with_fx_traces=False) -> "
     "{'segments': [], 'device_traces': [[]], "
     "'allocator_settings': {}}"},
    {"caching_allocator_enable", TD_FASTKW(misc_caching_allocator_enable),
     "caching_allocator_enable(value=True) (no-op)"},
    {"make_graphed_callables", TD_FASTKW(misc_make_graphed_callables),
     "make_graphed_callables(callables, sample_args, ...) -> callables\n\n"
     "No CUDA graphs here: the callables run eagerly."},
    {NULL, NULL, 0, NULL},
};
