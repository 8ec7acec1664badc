/* torch.cuda device queries answered for the device that is really present.
 *
 * Python equivalent (profiles mps and cpu; one device, index 0):
 *
 *     def is_available():
 *         if truthful or caller_module() in ("torch", "torch.*", *truth_for):
 *             return original_is_available()
 *         return True
 *     def device_count(): return 1
 *     def current_device(): return 0
 *     def set_device(device): _get_device_index(device)   # validates
 *     def get_device_properties(device=None): return PROPS
 *     ...
 *
 * "cuda:N" collapses to the one device, as the redirection policy does, so
 * code written for N GPUs keeps running; the target's own device type
 * ("cpu" or "mps", which is what torch.device("cuda") became) names it too.
 */
#include "masquerade.h"

#include <stdarg.h>
#include <string.h>

static td_state *
module_state(PyObject *module)
{
    return (td_state *)PyModule_GetState(module);
}

/* ---- helpers shared by the masquerade files ----------------------------- */

int
td_masq_record(td_state *st, const char *api)
{
    td_masq *m = TD_MASQ(st);
    if (!td_get_report() || m->record == NULL) {
        return 0;
    }
    /* torch calling torch.cuda itself (torch.manual_seed seeding every
     * device) is not something the user's code needs to port. */
    if (td_called_from_torch(st)) {
        return 0;
    }
    PyObject *to = m->target_type ? m->target_type : Py_None;
    PyObject *r = PyObject_CallFunction(m->record, "sssO", api, "emulated",
                                        "cuda", to);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

int
td_masq_debug(td_state *st, const char *fmt, ...)
{
    td_masq *m = TD_MASQ(st);
    if (m->log_debug == NULL) {
        return 0;
    }
    va_list va;
    va_start(va, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    if (msg == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallOneArg(m->log_debug, msg);
    Py_DECREF(msg);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int
is_target_kind(td_req_kind kind)
{
    switch (td_get_profile()) {
    case TD_PROFILE_CPU:
        return kind == TD_REQ_CPU;
    case TD_PROFILE_MPS:
        return kind == TD_REQ_MPS;
    case TD_PROFILE_CUDA:
        break;
    }
    return 0;
}

/* An index the program names, as shown: past the devices shown it
 * collapses to 0, as the policy collapses "cuda:N" to the one device. */
static long
shown_index(td_masq *m, long v)
{
    return v < atomic_load_explicit(&m->device_count, memory_order_relaxed)
           ? v : 0;
}

static long
current_index(td_masq *m)
{
    return atomic_load_explicit(&m->current_index, memory_order_relaxed);
}

int
td_masq_device_index(td_state *st, PyObject *arg, int optional, long *index)
{
    td_masq *m = TD_MASQ(st);
    if (arg == NULL || arg == Py_None) {
        if (optional) {
            *index = current_index(m);
            return 0;
        }
        PyErr_SetString(PyExc_ValueError,
                        "Expected a torch.device with a specified index or an "
                        "integer, but got:None");
        return -1;
    }
    if (PyLong_Check(arg)) {
        int overflow = 0;
        long v = PyLong_AsLongAndOverflow(arg, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        *index = (overflow < 0 || v < 0) ? -1
                 : overflow > 0 ? 0 : shown_index(m, v);
        return 0;
    }
    if (PyUnicode_Check(arg) || Py_TYPE(arg) == st->device_type) {
        td_request req = td_request_from_object(st, arg);
        if (req.kind == TD_REQ_CUDA || is_target_kind(req.kind)) {
            *index = req.kind == TD_REQ_CUDA && req.index >= 0
                     ? shown_index(m, req.index) : current_index(m);
            return 0;
        }
        PyErr_Format(PyExc_ValueError, "Expected a cuda device, but got: %S",
                     arg);
        return -1;
    }
    PyErr_Format(PyExc_ValueError,
                 "Expected a torch.device with a specified index or an "
                 "integer, but got:%S", arg);
    return -1;
}

/* Parses (device=None) from a FASTCALL|KEYWORDS call. */
static int
one_device_arg(td_state *st, const char *fname, PyObject *const *args,
               Py_ssize_t nargs, PyObject *kwnames, PyObject **device)
{
    *device = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes at most 1 argument (%zd given)", fname,
                     nargs + nkw);
        return -1;
    }
    if (nargs == 1) {
        *device = args[0];
    }
    else if (nkw == 1) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, 0);
        if (PyUnicode_Compare(name, st->str_device) != 0) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument %R", fname,
                         name);
            return -1;
        }
        *device = args[0];
    }
    return 0;
}

static void
mark_initialized(td_masq *m)
{
    atomic_store_explicit(&m->initialized, 1, memory_order_relaxed);
}

/* ---- is_available and its truth ----------------------------------------- */

static int
name_in_package(const char *s, Py_ssize_t n, const char *pkg, Py_ssize_t k)
{
    return n >= k && memcmp(s, pkg, (size_t)k) == 0
           && (n == k || s[k] == '.');
}

/* Whether the calling Python code must be told the truth: torch's own
 * modules (they route work by it, e.g. DataLoader pinning and autocast) and
 * the configured packages.  Returns 0/1; never fails. */
static int
caller_sees_truth(td_masq *m, td_state *st)
{
    Py_ssize_t n;
    const char *s = td_caller_module(st, &n);
    if (s == NULL) {
        return 0;
    }
    if (name_in_package(s, n, "torch", 5)) {
        return 1;
    }
    PyObject *pkgs = m->truth_for;
    Py_ssize_t npkg = pkgs ? PyTuple_GET_SIZE(pkgs) : 0;
    for (Py_ssize_t i = 0; i < npkg; i++) {
        Py_ssize_t k;
        const char *p = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pkgs, i), &k);
        if (p == NULL) {
            PyErr_Clear();
            continue;
        }
        if (name_in_package(s, n, p, k)) {
            return 1;
        }
    }
    return 0;
}

static PyObject *
call_truth(PyObject *truth)
{
    if (truth == NULL) {
        Py_RETURN_FALSE;
    }
    return PyObject_CallNoArgs(truth);
}

static PyObject *
q_is_available(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_state *st = module_state(module);
    td_masq *m = TD_MASQ(st);
    if (atomic_load_explicit(&m->truthful, memory_order_relaxed)
        || caller_sees_truth(m, st))
    {
        return call_truth(m->orig_is_available);
    }
    Py_RETURN_TRUE;
}

PyObject *
td_masq_is_available_with(PyObject *module, PyObject *truth)
{
    td_state *st = module_state(module);
    td_masq *m = TD_MASQ(st);
    if (atomic_load_explicit(&m->truthful, memory_order_relaxed)
        || caller_sees_truth(m, st))
    {
        return call_truth(truth);
    }
    Py_RETURN_TRUE;
}

/* ---- device selection ------------------------------------------------- */

/* 1, or what the launch asks for (LOCAL_WORLD_SIZE under torchrun, or
 * the configured count): every one is the device really present. */
static PyObject *
q_device_count(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_masq *m = TD_MASQ(module_state(module));
    return PyLong_FromLong(atomic_load_explicit(&m->device_count,
                                                memory_order_relaxed));
}

static PyObject *
q_is_initialized(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_masq *m = TD_MASQ(module_state(module));
    return PyBool_FromLong(atomic_load_explicit(&m->initialized,
                                                memory_order_relaxed));
}

static PyObject *
q_init(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_state *st = module_state(module);
    mark_initialized(TD_MASQ(st));
    if (td_masq_record(st, "torch.cuda.init") < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
q_current_device(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_masq *m = TD_MASQ(module_state(module));
    mark_initialized(m);
    return PyLong_FromLong(current_index(m));
}

/* Selects `index` (>= 0) and returns the previous one. */
static long
exchange_index(td_masq *m, long index)
{
    if (index < 0) {
        return current_index(m);
    }
    return atomic_exchange_explicit(&m->current_index, (int)index,
                                    memory_order_relaxed);
}

static PyObject *
q_set_device(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames)
{
    td_state *st = module_state(module);
    PyObject *device;
    long index;
    if (one_device_arg(st, "set_device", args, nargs, kwnames, &device) < 0) {
        return NULL;
    }
    if (device == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "set_device() missing 1 required positional argument: "
                        "'device'");
        return NULL;
    }
    if (td_masq_device_index(st, device, 0, &index) < 0) {
        return NULL;
    }
    if (index >= 0) {
        mark_initialized(TD_MASQ(st));
        (void)exchange_index(TD_MASQ(st), index);
    }
    if (td_masq_record(st, "torch.cuda.set_device") < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* torch.cuda._get_device_index(device, optional=False, allow_cpu=False):
 * what torch.cuda.device / device_of and torch's helpers resolve through. */
static PyObject *
q_get_device_index(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames)
{
    td_state *st = module_state(module);
    td_masq *m = TD_MASQ(st);
    PyObject *device = nargs > 0 ? args[0] : NULL;
    PyObject *optional = nargs > 1 ? args[1] : NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > 3) {
        PyErr_SetString(PyExc_TypeError,
                        "_get_device_index() takes at most 3 arguments");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_Compare(name, st->str_device) == 0) {
            device = args[nargs + i];
        }
        else if (PyUnicode_Compare(name, m->str_optional) == 0) {
            optional = args[nargs + i];
        }
        else if (PyUnicode_CompareWithASCIIString(name, "allow_cpu") != 0) {
            PyErr_Format(PyExc_TypeError,
                         "_get_device_index() got an unexpected keyword "
                         "argument %R", name);
            return NULL;
        }
    }
    int opt = optional ? PyObject_IsTrue(optional) : 0;
    long index;
    if (opt < 0 || td_masq_device_index(st, device, opt, &index) < 0) {
        return NULL;
    }
    return PyLong_FromLong(index);
}

/* torch.cuda._exchange_device(idx) -> previous index (-1 when idx is
 * "no device": nothing is selected then). */
static PyObject *
q_exchange_device(PyObject *module, PyObject *arg)
{
    td_state *st = module_state(module);
    long index;
    if (td_masq_device_index(st, arg, 0, &index) < 0) {
        return NULL;
    }
    if (index < 0) {
        return PyLong_FromLong(-1);
    }
    return PyLong_FromLong(exchange_index(TD_MASQ(st), index));
}

/* ---- properties ------------------------------------------------------- */

static PyObject *
props_for(td_state *st, PyObject *device)
{
    td_masq *m = TD_MASQ(st);
    long index;
    if (td_masq_device_index(st, device, 1, &index) < 0) {
        return NULL;
    }
    if (index < 0) {
        PyErr_SetString(PyExc_AssertionError, "Invalid device id");
        return NULL;
    }
    PyObject *props = td_masq_props(m);   /* borrowed */
    if (props == NULL) {
        return NULL;
    }
    mark_initialized(m);
    return props;
}

static PyObject *
q_get_device_properties(PyObject *module, PyObject *const *args,
                        Py_ssize_t nargs, PyObject *kwnames)
{
    td_state *st = module_state(module);
    PyObject *device;
    if (one_device_arg(st, "get_device_properties", args, nargs, kwnames,
                       &device) < 0)
    {
        return NULL;
    }
    PyObject *props = props_for(st, device);
    if (props == NULL
        || td_masq_record(st, "torch.cuda.get_device_properties") < 0)
    {
        return NULL;
    }
    return Py_NewRef(props);
}

static PyObject *
q_get_device_name(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames)
{
    td_state *st = module_state(module);
    PyObject *device;
    if (one_device_arg(st, "get_device_name", args, nargs, kwnames, &device)
        < 0)
    {
        return NULL;
    }
    PyObject *props = props_for(st, device);
    if (props == NULL || td_masq_record(st, "torch.cuda.get_device_name") < 0)
    {
        return NULL;
    }
    return PyObject_GetAttr(props, TD_MASQ(st)->str_pname);
}

static PyObject *
q_get_device_capability(PyObject *module, PyObject *const *args,
                        Py_ssize_t nargs, PyObject *kwnames)
{
    td_state *st = module_state(module);
    PyObject *device;
    if (one_device_arg(st, "get_device_capability", args, nargs, kwnames,
                       &device) < 0
        || props_for(st, device) == NULL
        || td_masq_record(st, "torch.cuda.get_device_capability") < 0)
    {
        return NULL;
    }
    return Py_NewRef(TD_MASQ(st)->capability);
}

static PyObject *
q_can_device_access_peer(PyObject *module, PyObject *const *args,
                         Py_ssize_t nargs)
{
    td_state *st = module_state(module);
    long a, b;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError,
                        "can_device_access_peer(device, peer_device)");
        return NULL;
    }
    if (td_masq_device_index(st, args[0], 1, &a) < 0
        || td_masq_device_index(st, args[1], 0, &b) < 0)
    {
        return NULL;
    }
    if (a < 0) {
        PyErr_SetString(PyExc_AssertionError, "Invalid device id");
        return NULL;
    }
    if (b < 0) {
        PyErr_SetString(PyExc_AssertionError, "Invalid peer device id");
        return NULL;
    }
    /* One device: there is no peer to access. */
    Py_RETURN_FALSE;
}

static PyObject *
q_is_bf16_supported(PyObject *module, PyObject *const *args,
                    Py_ssize_t nargs, PyObject *kwnames)
{
    (void)args;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_SetString(PyExc_TypeError,
                        "is_bf16_supported(including_emulation=True)");
        return NULL;
    }
    return PyBool_FromLong(TD_MASQ(module_state(module))->bf16);
}

static PyObject *
q_is_tf32_supported(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(a))
{
    Py_RETURN_FALSE;
}

/* torch.backends.cuda.is_built(): what is_available() says, to the same
 * callers (a CUDA that is available was built). */
static PyObject *
q_is_built(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_masq *m = TD_MASQ(module_state(module));
    return td_masq_is_available_with(module,
                                     td_masq_original(m, "cuda.is_built"));
}

/* torch.cuda.get_arch_list(): the architecture of the capability shown
 * (["sm_80"]), so that it agrees with is_available() and
 * get_device_capability(), also for torch.cuda.get_gencode_flags(), which
 * calls it; the truth when cuda_truthful is on. */
static PyObject *
q_get_arch_list(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_state *st = module_state(module);
    td_masq *m = TD_MASQ(st);
    PyObject *truth = td_masq_original(m, "cuda.get_arch_list");
    if (truth != NULL
        && atomic_load_explicit(&m->truthful, memory_order_relaxed))
    {
        return PyObject_CallNoArgs(truth);
    }
    if (m->capability == NULL || !PyTuple_Check(m->capability)
        || PyTuple_GET_SIZE(m->capability) != 2)
    {
        return PyList_New(0);
    }
    PyObject *arch = PyUnicode_FromFormat(
        "sm_%S%S", PyTuple_GET_ITEM(m->capability, 0),
        PyTuple_GET_ITEM(m->capability, 1));
    if (arch == NULL) {
        return NULL;
    }
    PyObject *list = PyList_New(1);
    if (list == NULL) {
        Py_DECREF(arch);
        return NULL;
    }
    PyList_SET_ITEM(list, 0, arch);
    return list;
}

/* torch.cuda.get_allocator_backend(): CUDA's default caching allocator;
 * the memory functions answer as it would. */
static PyObject *
q_get_allocator_backend(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(a))
{
    return PyUnicode_FromString("native");
}

/* ---- torch.accelerator and torch.get_device_module ---------------------- */

PyObject *
td_masq_original(td_masq *m, const char *name)
{
    return m->originals ? PyDict_GetItemString(m->originals, name) : NULL;
}

static PyObject *
original(td_masq *m, const char *name)
{
    PyObject *fn = td_masq_original(m, name);
    if (fn == NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "TorchDevice: no original recorded for %s", name);
    }
    return fn;   /* borrowed */
}

/* torch.accelerator.current_accelerator(check_available=False): callers
 * that are shown the masquerade get the device "cuda" really runs on, so
 * that it agrees with is_available() and torch.device("cuda"). */
static PyObject *
q_current_accelerator(PyObject *module, PyObject *const *args,
                      Py_ssize_t nargs, PyObject *kwnames)
{
    td_state *st = module_state(module);
    td_masq *m = TD_MASQ(st);
    if (atomic_load_explicit(&m->truthful, memory_order_relaxed)
        || caller_sees_truth(m, st) || m->target_device == NULL)
    {
        PyObject *fn = original(m, "current_accelerator");
        return fn ? PyObject_Vectorcall(fn, args, nargs, kwnames) : NULL;
    }
    /* The object torch.device("cuda") gives user code, which says
     * "accelerator" to a move (moves.c). */
    td_target t = td_get_profile() == TD_PROFILE_MPS ? TD_TARGET_MPS
                  : TD_TARGET_CPU;
    PyObject *dev = st->device_type != NULL
                    ? td_intent_device(st, t, TD_INTENT_ACCEL) : NULL;
    return Py_NewRef(dev != NULL ? dev : m->target_device);
}

/* torch.get_device_module("cuda"): torch.cuda, whose functions answer for
 * the device really used (torch.device("cuda").type alone would name the
 * target's module, which lacks most of them). */
static PyObject *
q_get_device_module(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames)
{
    td_state *st = module_state(module);
    td_masq *m = TD_MASQ(st);
    PyObject *device = NULL;
    if (nargs >= 1) {
        device = args[0];
    }
    else if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) == 1
             && PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0),
                                  st->str_device) == 0)
    {
        device = args[0];
    }
    if (device != NULL && m->cuda_module != NULL
        && (PyUnicode_Check(device) || Py_TYPE(device) == st->device_type)
        && td_request_from_object(st, device).kind == TD_REQ_CUDA)
    {
        return Py_NewRef(m->cuda_module);
    }
    PyObject *fn = original(m, "get_device_module");
    return fn ? PyObject_Vectorcall(fn, args, nargs, kwnames) : NULL;
}

/* torch.accelerator.synchronize(device=None): whatever torch.cuda's
 * synchronize is (docs/streams.md: it waits for the target), so that the two
 * agree; torch's own needs a compiled-in accelerator. */
static PyObject *
q_accel_synchronize(PyObject *module, PyObject *const *args,
                    Py_ssize_t nargs, PyObject *kwnames)
{
    td_state *st = module_state(module);
    td_masq *m = TD_MASQ(st);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    long index;
    if (nargs + nkw > 1) {
        PyErr_SetString(PyExc_TypeError, "synchronize(device=None, /)");
        return NULL;
    }
    if (td_masq_device_index(st, nargs + nkw ? args[0] : NULL, 1, &index)
        < 0)
    {
        return NULL;
    }
    if (m->cuda_module == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "TorchDevice: the CUDA masquerade is not installed");
        return NULL;
    }
    PyObject *fn = PyObject_GetAttrString(m->cuda_module, "synchronize");
    if (fn == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallNoArgs(fn);
    Py_DECREF(fn);
    return r;
}

#define FASTKW(f) (PyCFunction)(void (*)(void))(f), \
                  METH_FASTCALL | METH_KEYWORDS

PyMethodDef td_cuda_query_methods[] = {
    {"is_available", q_is_available, METH_NOARGS,
     "is_available() -> bool\n\nTrue under the masquerade; torch's own "
     "modules and the configured packages are told the truth."},
    {"device_count", q_device_count, METH_NOARGS,
     "device_count() -> int\n\n1, or the launch's LOCAL_WORLD_SIZE, or the "
     "configured count: all the one device really present."},
    {"is_initialized", q_is_initialized, METH_NOARGS,
     "is_initialized() -> bool"},
    {"init", q_init, METH_NOARGS, "init()\n\nNothing to initialise."},
    {"current_device", q_current_device, METH_NOARGS,
     "current_device() -> int"},
    {"current_device_index", q_current_device, METH_NOARGS,
     "current_device_index() -> int"},
    {"set_device", FASTKW(q_set_device),
     "set_device(device)\n\nAccepts int, str and torch.device; every "
     "index names the one device."},
    {"set_device_index", FASTKW(q_set_device),
     "set_device_index(device)"},
    {"_get_device_index", FASTKW(q_get_device_index),
     "_get_device_index(device, optional=False, allow_cpu=False) -> int"},
    {"_exchange_device", q_exchange_device, METH_O,
     "_exchange_device(index) -> previous index"},
    {"_maybe_exchange_device", q_exchange_device, METH_O,
     "_maybe_exchange_device(index) -> previous index"},
    {"get_device_properties", FASTKW(q_get_device_properties),
     "get_device_properties(device=None) -> DeviceProperties"},
    {"get_device_name", FASTKW(q_get_device_name),
     "get_device_name(device=None) -> str"},
    {"get_device_capability", FASTKW(q_get_device_capability),
     "get_device_capability(device=None) -> (major, minor)"},
    {"can_device_access_peer",
     (PyCFunction)(void (*)(void))q_can_device_access_peer, METH_FASTCALL,
     "can_device_access_peer(device, peer_device) -> False"},
    {"is_bf16_supported", FASTKW(q_is_bf16_supported),
     "is_bf16_supported(including_emulation=True) -> bool"},
    {"is_tf32_supported", q_is_tf32_supported, METH_NOARGS,
     "is_tf32_supported() -> False"},
    {"is_built", q_is_built, METH_NOARGS,
     "is_built() -> bool\n\nAs is_available(), to the same callers."},
    {"get_arch_list", q_get_arch_list, METH_NOARGS,
     "get_arch_list() -> list\n\nThe architecture of the capability shown "
     "(['sm_80'])."},
    {"get_allocator_backend", q_get_allocator_backend, METH_NOARGS,
     "get_allocator_backend() -> 'native'"},
    {"current_accelerator", FASTKW(q_current_accelerator),
     "current_accelerator(check_available=False) -> torch.device"},
    {"synchronize", FASTKW(q_accel_synchronize),
     "synchronize(device=None, /): torch.cuda.synchronize()"},
    {"get_device_module", FASTKW(q_get_device_module),
     "get_device_module(device=None) -> module"},
    {NULL, NULL, 0, NULL},
};
