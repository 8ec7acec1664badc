/* The reverse direction (profile cuda): torch.mps.* and torch.backends.mps.*
 * answered from CUDA, for code written for Apple GPUs running on NVIDIA.
 * torch.cuda itself is left untouched on that profile.
 *
 * Python equivalent:
 *
 *     def is_available():              # torch.backends.mps / torch.mps
 *         return truth() if caller_is_torch_or_carved_out() else True
 *     def synchronize(): torch.cuda.synchronize()
 *     def current_allocated_memory(): return torch.cuda.memory_allocated()
 *     def get_rng_state(device="mps"): return torch.cuda.get_rng_state()
 *     ...
 *
 * The CUDA functions are looked up on torch.cuda at each call, so they are
 * whatever torch.cuda holds (native on this profile).
 */
#include "masquerade.h"

static td_state *
module_state(PyObject *module)
{
    return (td_state *)PyModule_GetState(module);
}

/* Calls torch.cuda.<name>(*args[:nkeep]): the MPS spellings add a device
 * argument ("mps") that CUDA's would misread, so it is dropped. */
static PyObject *
cuda_call(PyObject *module, const char *name, PyObject *const *args,
          Py_ssize_t nkeep)
{
    td_masq *m = TD_MASQ(module_state(module));
    if (m->cuda_module == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "TorchDevice: the MPS-on-CUDA bridge is not "
                        "installed");
        return NULL;
    }
    PyObject *fn = PyObject_GetAttrString(m->cuda_module, name);
    if (fn == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_Vectorcall(fn, args, (size_t)nkeep, NULL);
    Py_DECREF(fn);
    return r;
}

static PyObject *
rv_is_available(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_masq *m = TD_MASQ(module_state(module));
    PyObject *truth = m->originals
        ? PyDict_GetItemString(m->originals, "mps.is_available") : NULL;
    return td_masq_is_available_with(module, truth);
}

/* As is_available(), to the same callers: an MPS that is available was
 * built. */
static PyObject *
rv_is_built(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_masq *m = TD_MASQ(module_state(module));
    return td_masq_is_available_with(module,
                                     td_masq_original(m, "mps.is_built"));
}

static PyObject *
rv_synchronize(PyObject *module, PyObject *Py_UNUSED(a))
{
    return cuda_call(module, "synchronize", NULL, 0);
}

static PyObject *
rv_empty_cache(PyObject *module, PyObject *Py_UNUSED(a))
{
    return cuda_call(module, "empty_cache", NULL, 0);
}

static PyObject *
rv_current_allocated(PyObject *module, PyObject *Py_UNUSED(a))
{
    return cuda_call(module, "memory_allocated", NULL, 0);
}

static PyObject *
rv_driver_allocated(PyObject *module, PyObject *Py_UNUSED(a))
{
    return cuda_call(module, "memory_reserved", NULL, 0);
}

/* recommended_max_memory(): MPS's working-set budget; on CUDA, the total
 * memory of the current device. */
static PyObject *
rv_recommended_max(PyObject *module, PyObject *Py_UNUSED(a))
{
    PyObject *info = cuda_call(module, "mem_get_info", NULL, 0);
    if (info == NULL) {
        return NULL;
    }
    PyObject *total = PySequence_GetItem(info, 1);
    Py_DECREF(info);
    return total;
}

static PyObject *
rv_manual_seed(PyObject *module, PyObject *seed)
{
    return cuda_call(module, "manual_seed", &seed, 1);
}

static PyObject *
rv_seed(PyObject *module, PyObject *Py_UNUSED(a))
{
    return cuda_call(module, "seed", NULL, 0);
}

static PyObject *
rv_get_rng_state(PyObject *module, PyObject *const *Py_UNUSED(args),
                 Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_SetString(PyExc_TypeError, "get_rng_state(device='mps')");
        return NULL;
    }
    return cuda_call(module, "get_rng_state", NULL, 0);
}

static PyObject *
rv_set_rng_state(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *state = nargs > 0 ? args[0] : NULL;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i),
                                             "new_state") == 0)
        {
            state = args[nargs + i];
        }
    }
    if (state == NULL || nargs > 2) {
        PyErr_SetString(PyExc_TypeError,
                        "set_rng_state(new_state, device='mps')");
        return NULL;
    }
    return cuda_call(module, "set_rng_state", &state, 1);
}

/* MPS allows up to 2.0 (past the recommended budget); CUDA's fraction of
 * a fixed memory stops at 1.0. */
static PyObject *
rv_set_fraction(PyObject *module, PyObject *fraction)
{
    double f = PyFloat_AsDouble(fraction);
    if (f == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (f < 0.0 || f > 2.0) {
        PyErr_Format(PyExc_ValueError,
                     "invalid fraction value %R: it must be between 0 and 2",
                     fraction);
        return NULL;
    }
    PyObject *clamped = PyFloat_FromDouble(f > 1.0 ? 1.0 : f);
    if (clamped == NULL) {
        return NULL;
    }
    PyObject *r = cuda_call(module, "set_per_process_memory_fraction",
                            &clamped, 1);
    Py_DECREF(clamped);
    return r;
}

static PyObject *
rv_device_count(PyObject *module, PyObject *Py_UNUSED(a))
{
    return cuda_call(module, "device_count", NULL, 0);
}

#define FASTKW(f) (PyCFunction)(void (*)(void))(f), \
                  METH_FASTCALL | METH_KEYWORDS

/* Names are looked up with the "mps." prefix by masq_function(). */
PyMethodDef td_mps_reverse_methods[] = {
    {"is_available", rv_is_available, METH_NOARGS,
     "is_available() -> bool\n\nTrue on CUDA; torch's own modules and the "
     "configured packages are told the truth."},
    {"is_built", rv_is_built, METH_NOARGS,
     "is_built() -> bool\n\nAs is_available(), to the same callers."},
    {"synchronize", rv_synchronize, METH_NOARGS,
     "synchronize(): torch.cuda.synchronize()"},
    {"empty_cache", rv_empty_cache, METH_NOARGS,
     "empty_cache(): torch.cuda.empty_cache()"},
    {"current_allocated_memory", rv_current_allocated, METH_NOARGS,
     "current_allocated_memory(): torch.cuda.memory_allocated()"},
    {"driver_allocated_memory", rv_driver_allocated, METH_NOARGS,
     "driver_allocated_memory(): torch.cuda.memory_reserved()"},
    {"recommended_max_memory", rv_recommended_max, METH_NOARGS,
     "recommended_max_memory(): total memory of the current CUDA device"},
    {"manual_seed", rv_manual_seed, METH_O,
     "manual_seed(seed): torch.cuda.manual_seed(seed)"},
    {"seed", rv_seed, METH_NOARGS, "seed(): torch.cuda.seed()"},
    {"get_rng_state", FASTKW(rv_get_rng_state),
     "get_rng_state(device='mps'): torch.cuda.get_rng_state()"},
    {"set_rng_state", FASTKW(rv_set_rng_state),
     "set_rng_state(new_state, device='mps'): "
     "torch.cuda.set_rng_state(new_state)"},
    {"set_per_process_memory_fraction", rv_set_fraction, METH_O,
     "set_per_process_memory_fraction(fraction): CUDA's, capped at 1.0"},
    {"device_count", rv_device_count, METH_NOARGS,
     "device_count(): torch.cuda.device_count()"},
    {NULL, NULL, 0, NULL},
};
