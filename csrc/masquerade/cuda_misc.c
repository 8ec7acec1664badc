/* torch.cuda calls that have no meaning off CUDA: NVTX annotations (no-ops),
 * CUDA graphs (an eager fallback where one exists, else an error naming the
 * call), IPC and debug switches (no-ops that log at debug level).
 *
 * Python equivalent:
 *
 *     def range_push(msg): return 0           # nvtx: nothing to annotate
 *     def make_graphed_callables(callables, sample_args, *a, **k):
 *         return callables                     # run eagerly
 *     def is_current_stream_capturing(): return False
 *     class CUDAGraph:
 *         def __new__(cls, *a, **k): raise RuntimeError("... needs CUDA")
 *     def ipc_collect(): log.debug("no-op")
 */
#include "masquerade.h"

static td_state *
module_state(PyObject *module)
{
    return (td_state *)PyModule_GetState(module);
}

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
noop_logged(PyObject *module, const char *api)
{
    td_state *st = module_state(module);
    if (td_masq_debug(st, "%s(): no effect on %S", api,
                      TD_MASQ(st)->target_type ? TD_MASQ(st)->target_type
                                               : Py_None) < 0
        || td_masq_record(st, api) < 0)
    {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
misc_ipc_collect(PyObject *module, PyObject *Py_UNUSED(a))
{
    return noop_logged(module, "torch.cuda.ipc_collect");
}

static PyObject *
misc_set_sync_debug_mode(PyObject *module, PyObject *Py_UNUSED(mode))
{
    return noop_logged(module, "torch.cuda.set_sync_debug_mode");
}

static PyObject *
misc_get_sync_debug_mode(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(a))
{
    return PyLong_FromLong(0);
}

static PyObject *
misc_record_memory_history(PyObject *module,
                           PyObject *const *Py_UNUSED(args),
                           Py_ssize_t Py_UNUSED(nargs),
                           PyObject *Py_UNUSED(kwnames))
{
    return noop_logged(module, "torch.cuda.memory._record_memory_history");
}

static PyObject *
misc_caching_allocator_enable(PyObject *module,
                              PyObject *const *Py_UNUSED(args),
                              Py_ssize_t Py_UNUSED(nargs),
                              PyObject *Py_UNUSED(kwnames))
{
    return noop_logged(module, "torch.cuda.caching_allocator_enable");
}

/* ---- CUDA graphs ------------------------------------------------------ */

static PyObject *
graphs_unsupported(td_state *st, const char *api)
{
    PyObject *target = TD_MASQ(st)->target_type;
    PyErr_Format(PyExc_RuntimeError,
                 "%s: CUDA graph capture and replay need an NVIDIA GPU; "
                 "TorchDevice runs this program on %S, which has no "
                 "equivalent. Run the code eagerly (torch.cuda."
                 "make_graphed_callables returns the callables unchanged).",
                 api, target ? target : Py_None);
    return NULL;
}

static PyObject *
misc_make_graphed_callables(PyObject *module, PyObject *const *args,
                            Py_ssize_t nargs, PyObject *kwnames)
{
    td_state *st = module_state(module);
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
    if (td_masq_debug(st, "torch.cuda.make_graphed_callables: running %R "
                      "eagerly (no CUDA graphs on %S)", callables,
                      TD_MASQ(st)->target_type) < 0
        || td_masq_record(st, "torch.cuda.make_graphed_callables") < 0)
    {
        return NULL;
    }
    return Py_NewRef(callables);
}

static PyObject *
misc_is_capturing(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(a))
{
    Py_RETURN_FALSE;
}

static PyObject *
misc_graph_pool_handle(PyObject *module, PyObject *Py_UNUSED(a))
{
    return graphs_unsupported(module_state(module),
                              "torch.cuda.graph_pool_handle");
}

static PyObject *
CUDAGraph_new(PyTypeObject *type, PyObject *Py_UNUSED(args),
              PyObject *Py_UNUSED(kwargs))
{
    return graphs_unsupported((td_state *)PyType_GetModuleState(type),
                              "torch.cuda.CUDAGraph");
}

static PyType_Slot cuda_graph_slots[] = {
    {Py_tp_new, CUDAGraph_new},
    {Py_tp_doc,
     "Stands in for torch.cuda.CUDAGraph where there is no CUDA: "
     "constructing one raises a RuntimeError that says why."},
    {0, NULL},
};

PyType_Spec td_cuda_graph_spec = {
    .name = "TorchDevice._tdcore.CUDAGraph",
    .basicsize = sizeof(PyObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = cuda_graph_slots,
};

#define FASTKW(f) (PyCFunction)(void (*)(void))(f), \
                  METH_FASTCALL | METH_KEYWORDS

PyMethodDef td_cuda_misc_methods[] = {
    {"range_push", FASTKW(nvtx_depth), "range_push(msg) -> 0 (no-op)"},
    {"range_pop", FASTKW(nvtx_depth), "range_pop() -> 0 (no-op)"},
    {"range_start", FASTKW(nvtx_depth), "range_start(msg) -> 0 (no-op)"},
    {"range_end", FASTKW(nvtx_none), "range_end(range_id) (no-op)"},
    {"mark", FASTKW(nvtx_none), "mark(msg) (no-op)"},
    {"ipc_collect", misc_ipc_collect, METH_NOARGS, "ipc_collect() (no-op)"},
    {"set_sync_debug_mode", misc_set_sync_debug_mode, METH_O,
     "set_sync_debug_mode(debug_mode) (no-op)"},
    {"get_sync_debug_mode", misc_get_sync_debug_mode, METH_NOARGS,
     "get_sync_debug_mode() -> 0"},
    {"_record_memory_history", FASTKW(misc_record_memory_history),
     "_record_memory_history(...) (no-op)"},
    {"caching_allocator_enable", FASTKW(misc_caching_allocator_enable),
     "caching_allocator_enable(value=True) (no-op)"},
    {"make_graphed_callables", FASTKW(misc_make_graphed_callables),
     "make_graphed_callables(callables, sample_args, ...) -> callables\n\n"
     "No CUDA graphs here: the callables run eagerly."},
    {"is_current_stream_capturing", misc_is_capturing, METH_NOARGS,
     "is_current_stream_capturing() -> False"},
    {"graph_pool_handle", misc_graph_pool_handle, METH_NOARGS,
     "graph_pool_handle(): raises, CUDA graphs need CUDA"},
    {NULL, NULL, 0, NULL},
};
