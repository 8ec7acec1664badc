/* The generic torch.Stream(device=...) and torch.Event(device=...).
 *
 * Both are static C types of torch, so (as for torch.device in
 * devicehook.c) the real types stay in place and only their tp_new slots are
 * swapped.  The hooks change two requests and pass everything else on:
 *
 *   - "cuda" on profile cpu or mps, and "mps" on profile cpu: torch has no
 *     such stream to give, so the answer is the stream or event
 *     torch.cuda.Stream()/Event() gives there (ours, on the backend really
 *     there), which works with torch.cuda.current_stream() and friends;
 *   - "mps" on profile cuda: torch is asked for device "cuda" instead, so
 *     the answer is a genuine torch.Stream / torch.Event on the GPU;
 *   - no device on profile cpu: torch takes the current accelerator, which
 *     is CUDA where the program was written, and torch.accelerator says
 *     there is one; torch itself, finding none, would give a CPU stream or
 *     an event that cannot record.  torch's own code keeps torch's.
 *
 * A torch.device object has already been redirected when it was built, so
 * only strings and ordinals can still say "cuda" here.
 */
#include "streams.h"

/* Borrowed device argument: first positional or device=; NULL if absent. */
static PyObject *
device_arg(td_install *st, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) >= 1) {
        return PyTuple_GET_ITEM(args, 0);
    }
    if (kwargs != NULL) {
        return PyDict_GetItemWithError(kwargs, st->str_device);
    }
    return NULL;
}

typedef enum {
    ROUTE_TORCH,        /* torch's own constructor, unchanged */
    ROUTE_OURS,         /* our emulated stream/event */
    ROUTE_TO_CUDA,      /* torch's constructor with device "cuda" */
} route;

static route
route_of(td_install *st, PyObject *dev)
{
    if (dev == NULL || dev == Py_None) {
        return td_get_profile() == TD_PROFILE_CPU
                       && !td_called_from_torch(st->str_name)
                   ? ROUTE_OURS : ROUTE_TORCH;
    }
    if (Py_TYPE(dev) == st->device_type
        || !(PyUnicode_Check(dev) || PyLong_CheckExact(dev)))
    {
        return ROUTE_TORCH;
    }
    td_request req = td_request_from_object(st, dev);
    td_profile profile = td_get_profile();
    /* "mps" where neither kind is real: a hard-coded request, redirected
     * like device="mps" whichever kind is announced. */
    int neither = profile != TD_PROFILE_CUDA && profile != TD_PROFILE_MPS;
    if ((profile != TD_PROFILE_CUDA && req.kind == TD_REQ_CUDA)
        || (neither && req.kind == TD_REQ_MPS))
    {
        return ROUTE_OURS;
    }
    if (profile == TD_PROFILE_CUDA && req.kind == TD_REQ_MPS) {
        return ROUTE_TO_CUDA;
    }
    return ROUTE_TORCH;
}

/* Calls `orig` with the device argument replaced by torch.device("cuda"). */
static PyObject *
call_on_cuda(td_install *st, newfunc orig, PyTypeObject *type, PyObject *args,
             PyObject *kwargs)
{
    PyObject *new_args = NULL, *new_kwargs = NULL, *result = NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n >= 1) {
        new_args = PyTuple_New(n);
        if (new_args == NULL) {
            return NULL;
        }
        PyTuple_SET_ITEM(new_args, 0, Py_NewRef(st->target[TD_TARGET_CUDA]));
        for (Py_ssize_t i = 1; i < n; i++) {
            PyTuple_SET_ITEM(new_args, i, Py_NewRef(PyTuple_GET_ITEM(args, i)));
        }
        result = orig(type, new_args, kwargs);
    }
    else {
        new_kwargs = PyDict_Copy(kwargs);
        if (new_kwargs != NULL
            && PyDict_SetItem(new_kwargs, st->str_device,
                              st->target[TD_TARGET_CUDA]) == 0)
        {
            result = orig(type, args, new_kwargs);
        }
    }
    Py_XDECREF(new_args);
    Py_XDECREF(new_kwargs);
    return result;
}

/* Calls `type` with the first positional or the device= keyword dropped. */
static PyObject *
call_without_device(td_install *st, PyTypeObject *type, PyObject *args,
                    PyObject *kwargs)
{
    PyObject *rest = kwargs ? PyDict_Copy(kwargs) : PyDict_New();
    PyObject *pos = NULL, *result = NULL;
    if (rest == NULL) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(args) >= 1) {
        pos = PyTuple_GetSlice(args, 1, PyTuple_GET_SIZE(args));
    }
    else if (PyDict_DelItem(rest, st->str_device) == 0) {
        pos = PyTuple_New(0);
    }
    if (pos != NULL) {
        result = PyObject_Call((PyObject *)type, pos, rest);
    }
    Py_XDECREF(pos);
    Py_DECREF(rest);
    return result;
}

static PyObject *
stream_new(td_install *st, newfunc orig_stream_new, PyTypeObject *type,
           PyObject *args, PyObject *kwargs)
{
    PyObject *dev = device_arg(st, args, kwargs);
    if (dev == NULL && PyErr_Occurred()) {
        return NULL;
    }
    switch (route_of(st, dev)) {
    case ROUTE_OURS:
        if (dev != NULL && dev != Py_None
            && td_request_from_object(st, dev).kind == TD_REQ_MPS)
        {
            /* "mps" on profile cpu: the current device, as torch.cuda's
             * own Stream() would pick (it takes no "mps"). */
            return call_without_device(st, TD_STREAMS(st)->stream_type,
                                       args, kwargs);
        }
        /* Same parameters: (device=None, priority=0). */
        return PyObject_Call((PyObject *)TD_STREAMS(st)->stream_type, args,
                             kwargs);
    case ROUTE_TO_CUDA:
        return call_on_cuda(st, orig_stream_new, type, args, kwargs);
    default:
        return orig_stream_new(type, args, kwargs);
    }
}

static PyObject *
event_new(td_install *st, newfunc orig_event_new, PyTypeObject *type,
          PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) > 1) {
        return orig_event_new(type, args, kwargs);
    }
    PyObject *dev = device_arg(st, args, kwargs);
    if (dev == NULL && PyErr_Occurred()) {
        return NULL;
    }
    switch (route_of(st, dev)) {
    case ROUTE_OURS: {
        /* torch.Event(device, *, enable_timing, blocking, interprocess):
         * everything but the device is a keyword of ours too. */
        PyObject *rest = kwargs ? PyDict_Copy(kwargs) : PyDict_New();
        PyObject *empty = rest ? PyTuple_New(0) : NULL;
        PyObject *result = NULL;
        if (empty != NULL
            && (PyTuple_GET_SIZE(args) == 1 || dev == NULL
                || PyDict_DelItem(rest, st->str_device) == 0))
        {
            result = PyObject_Call((PyObject *)TD_STREAMS(st)->event_type,
                                   empty, rest);
        }
        Py_XDECREF(empty);
        Py_XDECREF(rest);
        return result;
    }
    case ROUTE_TO_CUDA:
        return call_on_cuda(st, orig_event_new, type, args, kwargs);
    default:
        return orig_event_new(type, args, kwargs);
    }
}

/* Both hooks hold the installation for the whole call (tdcore.h). */
static PyObject *
generic_stream_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    newfunc orig = td_slot_original(TD_SLOT_STREAM);
    td_install *st = td_install_acquire();
    if (st == NULL || type != td_slot_type(TD_SLOT_STREAM)) {
        Py_XDECREF(st);
        return orig(type, args, kwargs);
    }
    PyObject *result = stream_new(st, orig, type, args, kwargs);
    Py_DECREF(st);
    return result;
}

static PyObject *
generic_event_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    newfunc orig = td_slot_original(TD_SLOT_EVENT);
    td_install *st = td_install_acquire();
    if (st == NULL || type != td_slot_type(TD_SLOT_EVENT)) {
        Py_XDECREF(st);
        return orig(type, args, kwargs);
    }
    PyObject *result = event_new(st, orig, type, args, kwargs);
    Py_DECREF(st);
    return result;
}

int
td_generic_hooks_install(PyObject *stream_type, PyObject *event_type)
{
    if (stream_type != Py_None
        && td_slot_hook(TD_SLOT_STREAM, stream_type, generic_stream_new) < 0)
    {
        return -1;
    }
    if (event_type != Py_None
        && td_slot_hook(TD_SLOT_EVENT, event_type, generic_event_new) < 0)
    {
        return -1;
    }
    return 0;
}

int
td_generic_hooks_installed(void)
{
    PyTypeObject *s = td_slot_type(TD_SLOT_STREAM);
    PyTypeObject *e = td_slot_type(TD_SLOT_EVENT);
    return (s != NULL && s->tp_new == generic_stream_new)
           || (e != NULL && e->tp_new == generic_event_new);
}
