/* The reverse direction (profile cuda): torch.mps.* and torch.backends.mps.*
 * answered from CUDA, for code written for Apple GPUs running on NVIDIA.
 * torch.cuda itself is left untouched on that profile.
 *
 * Python equivalent:
 *
 *     def is_available():              # torch.backends.mps / torch.mps
 *         return truth() if caller_is_torch_or_carved_out() else True
 *     def synchronize(): torch.cuda.synchronize()
 *     def current_allocated_memory():
 *         if not mps_announced and not program_asked_for_mps():
 *             return torch_own_current_allocated_memory()  # raises here
 *         return torch.cuda.memory_allocated()
 *     def get_rng_state(device="mps"): return torch.cuda.get_rng_state()
 *     ...
 *
 * The CUDA functions are looked up on torch.cuda at each call, so they are
 * whatever torch.cuda holds (native on this profile).
 */
#include "masquerade.h"

#include <string.h>

/* Whether torch.mps's own function answers instead: where MPS is not
 * announced (CUDA is, on a machine with neither), torch.mps does what a
 * program written for MPS asks of it once the program has asked for "mps".
 * Before that it is torch's, which raises on a machine without MPS, and
 * libraries take that for the answer to "is MPS here?" (DeepSpeed calls
 * current_allocated_memory() and catches the RuntimeError: answered, it
 * chose its MPS accelerator and stopped, "Accelerator is not detected").
 * manual_seed() is torch's silent no-op there, so it always answers.
 * Packages told the truth about the hardware get torch's own wherever MPS
 * is not really there: on profile cuda MPS is announced for MPS-written
 * code, and DeepSpeed, which checks for MPS before CUDA, took its MPS
 * accelerator on an NVIDIA GPU. */
static int
left_to_torch(td_state *st, td_masq *m, const char *mps_name)
{
    if (strcmp(mps_name, "manual_seed") == 0) {
        return 0;
    }
    if (!m->mps_announced && !td_mps_requested()) {
        return 1;
    }
    return td_masq_caller_package_sees_truth(m, st);
}

static PyObject *
torch_own(td_masq *m, const char *mps_name, PyObject *const *args,
          Py_ssize_t nargs)
{
    char key[64];
    PyOS_snprintf(key, sizeof(key), "mps.%s", mps_name);
    PyObject *fn = td_masq_original(m, key);
    if (fn == NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "TorchDevice: no original recorded for torch.%s", key);
        return NULL;
    }
    Py_INCREF(fn);
    PyObject *r = PyObject_Vectorcall(fn, args, (size_t)nargs, NULL);
    Py_DECREF(fn);
    return r;
}

/* Calls torch.cuda.<name>(*args[:nkeep]) for torch.mps.<mps_name>: the MPS
 * spellings add a device argument ("mps") that CUDA's would misread, so it
 * is dropped.  The report lists the call as MPS code answered by CUDA. */
static PyObject *
cuda_call(td_state *st, td_masq *m, const char *mps_name, const char *api,
          const char *name, PyObject *const *args, Py_ssize_t nkeep)
{
    if (left_to_torch(st, m, mps_name)) {
        return torch_own(m, mps_name, args, nkeep);
    }
    if (td_masq_record_from(st, m, api, "mps") < 0) {
        return NULL;
    }
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
    /* Where torch.cuda is our masquerade too (neither kind is real), its
     * function would add a torch.cuda row for a call the program did not
     * make. */
    td_report_mute();
    PyObject *r = PyObject_Vectorcall(fn, args, (size_t)nkeep, NULL);
    td_report_unmute();
    Py_DECREF(fn);
    return r;
}

/* torch.mps.<mps_name> forwarded to torch.cuda.<cuda_name>. */
#define FORWARD(mps_name, cuda_name, args, nkeep) \
    cuda_call(st, m, mps_name, "torch.mps." mps_name, cuda_name, args, nkeep)

TD_MASQ_NOARGS(rv_is_available)
{
    PyObject *truth = m->originals
        ? PyDict_GetItemString(m->originals, "mps.is_available") : NULL;
    return td_masq_is_available_with(st, m, truth,
                                     "torch.backends.mps.is_available");
}

/* As is_available(), to the same callers: an MPS that is available was
 * built. */
TD_MASQ_NOARGS(rv_is_built)
{
    return td_masq_is_available_with(st, m,
                                     td_masq_original(m, "mps.is_built"),
                                     "torch.backends.mps.is_built");
}

TD_MASQ_NOARGS(rv_synchronize)
{
    return FORWARD("synchronize", "synchronize", NULL, 0);
}

TD_MASQ_NOARGS(rv_empty_cache)
{
    return FORWARD("empty_cache", "empty_cache", NULL, 0);
}

TD_MASQ_NOARGS(rv_current_allocated)
{
    return FORWARD("current_allocated_memory", "memory_allocated", NULL, 0);
}

TD_MASQ_NOARGS(rv_driver_allocated)
{
    return FORWARD("driver_allocated_memory", "memory_reserved", NULL, 0);
}

/* recommended_max_memory(): MPS's working-set budget; on CUDA, the total
 * memory of the current device. */
TD_MASQ_NOARGS(rv_recommended_max)
{
    if (left_to_torch(st, m, "recommended_max_memory")) {
        return torch_own(m, "recommended_max_memory", NULL, 0);
    }
    PyObject *info = FORWARD("recommended_max_memory", "mem_get_info", NULL,
                             0);
    if (info == NULL) {
        return NULL;
    }
    PyObject *total = PySequence_GetItem(info, 1);
    Py_DECREF(info);
    return total;
}

TD_MASQ_O(rv_manual_seed)
{
    return FORWARD("manual_seed", "manual_seed", &arg, 1);
}

TD_MASQ_NOARGS(rv_seed)
{
    return FORWARD("seed", "seed", NULL, 0);
}

static const char *const rng_names[] = {"new_state", "device"};

TD_MASQ_FASTKW(rv_get_rng_state)
{
    static const td_args_spec spec = {"get_rng_state", rng_names + 1, 1, 0,
                                      1};
    PyObject *device;
    if (td_args_parse(&spec, args, nargs, kwnames, &device) < 0) {
        return NULL;
    }
    return FORWARD("get_rng_state", "get_rng_state", NULL, 0);
}

TD_MASQ_FASTKW(rv_set_rng_state)
{
    static const td_args_spec spec = {"set_rng_state", rng_names, 2, 1, 2};
    PyObject *a[2];
    if (td_args_parse(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    return FORWARD("set_rng_state", "set_rng_state", &a[0], 1);
}

/* MPS allows up to 2.0 (past the recommended budget); CUDA's fraction of
 * a fixed memory stops at 1.0. */
TD_MASQ_O(rv_set_fraction)
{
    PyObject *fraction = arg;
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
    PyObject *r = FORWARD("set_per_process_memory_fraction",
                          "set_per_process_memory_fraction", &clamped, 1);
    Py_DECREF(clamped);
    return r;
}

TD_MASQ_NOARGS(rv_device_count)
{
    return FORWARD("device_count", "device_count", NULL, 0);
}

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
    {"get_rng_state", TD_FASTKW(rv_get_rng_state),
     "get_rng_state(device='mps'): torch.cuda.get_rng_state()"},
    {"set_rng_state", TD_FASTKW(rv_set_rng_state),
     "set_rng_state(new_state, device='mps'): "
     "torch.cuda.set_rng_state(new_state)"},
    {"set_per_process_memory_fraction", rv_set_fraction, METH_O,
     "set_per_process_memory_fraction(fraction): CUDA's, capped at 1.0"},
    {"device_count", rv_device_count, METH_NOARGS,
     "device_count(): torch.cuda.device_count()"},
    {NULL, NULL, 0, NULL},
};
