/* Redirecting the construction of torch.device and torch.Generator.
 *
 * Both are static C types of torch: they cannot be subclassed or replaced
 * without breaking isinstance, pickling, TorchScript annotations and the
 * exact-type checks in torch's C++ argument parser.  So the real type stays
 * at torch.device and only its tp_new slot is swapped: the hook lets torch
 * build (and validate) the device, then hands back the redirected one.
 * Every device that reaches the user is a genuine torch.device.
 */
#include "tdcore.h"

static int
is_int_value(PyObject *obj, long value)
{
    if (!PyLong_CheckExact(obj)) {
        return 0;
    }
    int overflow = 0;
    long v = PyLong_AsLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return !overflow && v == value;
}

/* "cpu:-1" and torch.device("cpu", -1) are not valid torch syntax (torch
 * rejects negative indexes), so they are recognised before torch parses.
 * `only` is the request of a lone argument (device_new). */
static int
is_toggle_request(PyObject *args, PyObject *kwargs, td_request only)
{
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        return 0;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n == 1) {
        return only.kind == TD_REQ_CPU_TOGGLE;
    }
    if (n == 2) {
        PyObject *t = PyTuple_GET_ITEM(args, 0);
        return PyUnicode_Check(t)
               && PyUnicode_CompareWithASCIIString(t, "cpu") == 0
               && is_int_value(PyTuple_GET_ITEM(args, 1), -1);
    }
    return 0;
}

/* Whether a torch-function mode is pushed in this thread: torch hands every
 * torch.device(...) call to it, so the call must reach torch (-1: error). */
static int
function_mode_pushed(td_install *st)
{
    if (st->mode_stack_len == Py_None) {
        return 1;   /* that torch does not say: assume one */
    }
    Py_ssize_t n = td_mode_stack_depth(st);
    return n < 0 ? -1 : n != 0;
}

/* torch.device("cuda"), ("cuda:1"), ("mps"): the call CUDA and MPS code
 * makes most, redirected.  torch's own parse would build a device only to
 * have it replaced, so the string is read here, with torch's grammar
 * (td_parse_device_string) and index range (an int8: 0-127), and the
 * redirected device handed back at once.  Every other call goes through
 * torch: other spellings and malformed strings (torch's errors), a request
 * torch's own code makes (it gets the truth, below), a pushed
 * torch-function mode.  `req` is `arg`'s request.  Returns NULL with no
 * exception where torch must parse. */
static PyObject *
device_from_string(td_install *st, PyObject *arg, td_request req)
{
    if ((req.kind != TD_REQ_CUDA && req.kind != TD_REQ_MPS)
        || req.index > 127)
    {
        return NULL;
    }
    td_resolution res = td_resolve_now(st, req);
    if (res.target == TD_TARGET_KEEP || td_torch_names_device(st->str_name)) {
        return NULL;
    }
    int pushed = function_mode_pushed(st);
    if (pushed != 0) {
        if (pushed < 0) {
            PyErr_Clear();   /* torch's own call will say what is wrong */
        }
        return NULL;
    }
    if (td_get_report() && td_report(st, st->api_device, req, res, arg) < 0) {
        return NULL;
    }
    return td_request_device(st, res.target, req, TD_INTENT_ACCEL);
}

static PyObject *
device_new(td_install *st, newfunc orig_device_new, PyTypeObject *type,
           PyObject *args, PyObject *kwargs)
{
    /* A lone argument is parsed once, for every case below. */
    PyObject *only = NULL;   /* borrowed */
    td_request first = {TD_REQ_OTHER, -1};
    if (PyTuple_GET_SIZE(args) == 1
        && (kwargs == NULL || PyDict_GET_SIZE(kwargs) == 0))
    {
        only = PyTuple_GET_ITEM(args, 0);
        /* Always as a place: torch.device(x.device) returns the place
         * itself in every mode (for moves, a device read off a tensor). */
        first = td_request_as_place(st, only,
                                    td_request_from_object(st, only));
    }
    if (only != NULL && PyUnicode_CheckExact(only)) {
        PyObject *fast = device_from_string(st, only, first);
        if (fast != NULL || PyErr_Occurred()) {
            return fast;
        }
    }
    if (is_toggle_request(args, kwargs, first)) {
        td_request req = {TD_REQ_CPU_TOGGLE, -1};
        td_resolution res = td_resolve_now(st, req);
        if (td_get_report()
            && td_report(st, st->api_device, req, res,
                         PyTuple_GET_ITEM(args, 0)) < 0)
        {
            return NULL;
        }
        return Py_NewRef(st->target[TD_TARGET_CPU]);
    }
    /* A bare int is an accelerator ordinal; torch would ask the build's
     * accelerator, which a CPU-only build lacks, so resolve it first. */
    if (only != NULL && PyLong_CheckExact(only)
        && first.kind == TD_REQ_CUDA)
    {
        td_resolution res = td_resolve_now(st, first);
        if (res.target != TD_TARGET_KEEP) {
            if (td_get_report()
                && td_report(st, st->api_device, first, res, only) < 0)
            {
                return NULL;
            }
            return td_request_device(st, res.target, first, TD_INTENT_ACCEL);
        }
    }
    /* torch.device(d) of a device the program built keeps what d asked
     * for (moves.c reads it by identity, pose.c shows it). */
    if (only != NULL
        && (td_pose_kept(st, only) || td_intent_kept(st, only)))
    {
        return Py_NewRef(only);
    }
    /* torch.device(x.device) of a host tensor's device names that place
     * too (dynamo rebuilds the devices it reads off tensors so). */
    if (first.kind == TD_REQ_HOST_PLACE) {
        return Py_NewRef(only);
    }
    PyObject *dev = orig_device_new(type, args, kwargs);
    /* A TorchFunctionMode may hand back something else: leave it alone. */
    if (dev == NULL || Py_TYPE(dev) != st->device_type) {
        return dev;
    }
    /* Under a torch-function mode (torch.set_default_device's among them)
     * torch handed the call to the mode, whose own torch.device(...) came
     * back through this hook: that device is decided already.  Read as a
     * fresh one it names the device really used ("cuda" would read
     * "cpu"). */
    if (td_pose_kept(st, dev) || td_intent_kept(st, dev)) {
        return dev;
    }
    td_accel_type accel = td_accel_of(st);
    td_request req = td_request_from_device(dev, &accel);
    td_resolution res = td_resolve_now(st, req);
    if (res.target == TD_TARGET_KEEP) {
        /* One object per device the program names, so that a move can
         * tell "cpu" from a device read off a tensor (moves.c). */
        PyObject *cached = td_intent_cached(st, dev);
        if (cached != NULL) {
            Py_DECREF(dev);
            return Py_NewRef(cached);
        }
        return dev;
    }
    /* Torch's own code compares against the devices it names (GradScaler's
     * `device == torch.device("mps:0")`): it gets the truth.  Whatever it
     * allocates still goes through the factory wrappers.  Not so where it
     * builds the device of the program's own tensors (FSDP2's, devarg.c). */
    if ((req.kind == TD_REQ_CUDA || req.kind == TD_REQ_MPS)
        && td_torch_names_device(st->str_name))
    {
        return dev;
    }
    if (td_get_report() && td_report(st, st->api_device, req, res, dev) < 0) {
        Py_DECREF(dev);
        return NULL;
    }
    Py_DECREF(dev);
    return td_request_device(st, res.target, req,
                             td_intent_of_kind(req.kind));
}

/* The hook holds the installation for the whole call (tdcore.h). */
static PyObject *
device_new_hook(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    newfunc orig = td_slot_original(TD_SLOT_DEVICE);
    td_install *st = td_install_acquire();
    if (st == NULL || type != st->device_type) {
        Py_XDECREF(st);
        return orig(type, args, kwargs);
    }
    PyObject *result = device_new(st, orig, type, args, kwargs);
    Py_DECREF(st);
    return result;
}

/* torch.Generator(device=None): the device is parsed in C++, not through
 * torch.device, so the argument is rewritten before torch sees it.
 *
 * Only accelerator requests move.  A generator is a random stream, not
 * memory: `torch.Generator()` is the host's stream on CUDA, the one torch's
 * own samplers (DataLoader shuffling, random_split, randperm) require, and
 * what seeds the same numbers everywhere; promoting it the way accelerate
 * mode promotes a device-less tensor would break those and change the
 * numbers (docs/policy.md). */
static PyObject *
generator_new(td_install *st, newfunc orig_generator_new, PyTypeObject *type,
              PyObject *args, PyObject *kwargs)
{
    PyObject *new_args = NULL, *new_kwargs = NULL, *result = NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject *arg = NULL;   /* borrowed */
    if (n >= 1) {
        arg = PyTuple_GET_ITEM(args, 0);
    }
    else if (kwargs != NULL) {
        arg = PyDict_GetItemWithError(kwargs, st->str_device);
        if (arg == NULL && PyErr_Occurred()) {
            return NULL;
        }
    }
    td_request req = td_request_from_object(st, arg);
    /* A generator without a device, or a "cpu" one, stays on the host in
     * every mode: torch's host-side sampling (DataLoader shuffling,
     * random_split, randperm in samplers) accepts only host generators, and
     * a factory that draws from one runs on the host and is moved where the
     * policy sends it (wrapper.c), so the numbers are the native ones. */
    if (req.kind == TD_REQ_NONE || req.kind == TD_REQ_CPU) {
        return orig_generator_new(type, args, kwargs);
    }
    td_resolution res = td_resolve_now(st, req);
    if (res.target == TD_TARGET_KEEP) {
        return orig_generator_new(type, args, kwargs);
    }
    if (td_get_report()
        && td_report(st, st->api_generator, req, res, arg) < 0)
    {
        return NULL;
    }
    PyObject *target = td_target_device(st, res.target);   /* borrowed */
    if (n >= 1) {
        /* A fresh tuple: args may be shared with the caller. */
        new_args = PyTuple_New(n);
        if (new_args == NULL) {
            goto error;
        }
        PyTuple_SET_ITEM(new_args, 0, Py_NewRef(target));
        for (Py_ssize_t i = 1; i < n; i++) {
            PyTuple_SET_ITEM(new_args, i, Py_NewRef(PyTuple_GET_ITEM(args, i)));
        }
        result = orig_generator_new(type, new_args, kwargs);
    }
    else {
        new_kwargs = kwargs ? PyDict_Copy(kwargs) : PyDict_New();
        if (new_kwargs == NULL
            || PyDict_SetItem(new_kwargs, st->str_device, target) < 0)
        {
            goto error;
        }
        result = orig_generator_new(type, args, new_kwargs);
    }
error:
    Py_XDECREF(new_args);
    Py_XDECREF(new_kwargs);
    return result;
}

static PyObject *
generator_new_hook(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    newfunc orig = td_slot_original(TD_SLOT_GENERATOR);
    td_install *st = td_install_acquire();
    if (st == NULL || type != td_slot_type(TD_SLOT_GENERATOR)) {
        Py_XDECREF(st);
        return orig(type, args, kwargs);
    }
    PyObject *result = generator_new(st, orig, type, args, kwargs);
    Py_DECREF(st);
    return result;
}

/* Three install steps, undone in reverse order by td_slots_unhook_all(). */
int
td_hooks_install(td_install *st, PyObject *gen_type)
{
    if (td_slot_hook(TD_SLOT_DEVICE, (PyObject *)st->device_type,
                     device_new_hook) < 0
        || td_slot_hook(TD_SLOT_DEVICE_FACE, (PyObject *)st->device_type,
                        NULL) < 0)
    {
        return -1;
    }
    if (gen_type != Py_None
        && td_slot_hook(TD_SLOT_GENERATOR, gen_type, generator_new_hook) < 0)
    {
        return -1;
    }
    return 0;
}

static PyObject *
hooks_installed(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    PyTypeObject *t = td_slot_type(TD_SLOT_DEVICE);
    return PyBool_FromLong(t != NULL && t->tp_new == device_new_hook);
}

PyMethodDef td_hook_methods[] = {
    {"hooks_installed", hooks_installed, METH_NOARGS,
     "hooks_installed() -> bool\n\nWhether torch.device's tp_new is hooked."},
    {NULL, NULL, 0, NULL},
};
