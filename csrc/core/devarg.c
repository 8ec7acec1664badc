/* Turning the device arguments users pass (str, int, torch.device, None) into
 * policy requests, and targets back into torch.device objects. */
#include "tdcore.h"

#include <string.h>

/* torch.device is `struct { PyObject_HEAD; at::Device device; }` and
 * at::Device is two int8 fields (type, index).  Reading them directly avoids
 * the string that the Python `.type` getter builds on every access; the
 * layout is verified against live objects at install time. */
typedef struct {
    PyObject_HEAD
    signed char type;
    signed char index;
} td_device_view;

static int
device_fields(PyObject *dev, int *type, int *index)
{
    const td_device_view *v = (const td_device_view *)dev;
    *type = v->type;
    *index = v->index;
    return 0;
}

/* probe_mps is torch.device("mps", 0); the target devices themselves may
 * differ from their names in a simulated profile (tests). */
int
td_device_check_layout(td_state *st, PyObject *probe_mps)
{
    struct {
        PyObject *dev;
        int type;
        int index;
    } expect[] = {
        {st->dev_cpu, TD_C10_CPU, -1},
        {st->dev_cuda, TD_C10_CUDA, -1},
        {probe_mps, TD_C10_MPS, 0},
    };
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        int type, index;
        if (Py_TYPE(expect[i].dev) != st->device_type) {
            PyErr_SetString(PyExc_TypeError,
                            "install(): target devices must be torch.device");
            return -1;
        }
        device_fields(expect[i].dev, &type, &index);
        if (type != expect[i].type || index != expect[i].index) {
            PyErr_Format(PyExc_RuntimeError,
                         "this torch build lays out torch.device differently "
                         "than TorchDevice expects (entry %zu read as %d:%d)",
                         i, type, index);
            return -1;
        }
    }
    return 0;
}

td_request
td_request_from_device(PyObject *dev)
{
    td_request r = {TD_REQ_OTHER, -1};
    int type, index;
    device_fields(dev, &type, &index);
    switch (type) {
    case TD_C10_CPU:
        r.kind = TD_REQ_CPU;
        break;
    case TD_C10_CUDA:
        r.kind = TD_REQ_CUDA;
        break;
    case TD_C10_MPS:
        r.kind = TD_REQ_MPS;
        break;
    case TD_C10_META:
        r.kind = TD_REQ_META;
        break;
    default:
        return r;
    }
    r.index = index;
    return r;
}

td_request
td_request_from_object(td_state *st, PyObject *obj)
{
    td_request r = {TD_REQ_OTHER, -1};
    if (obj == NULL || obj == Py_None) {
        r.kind = TD_REQ_NONE;
        return r;
    }
    if (Py_TYPE(obj) == st->device_type) {
        return td_request_from_device(obj);
    }
    if (PyUnicode_Check(obj)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(obj, &n);
        if (s == NULL) {
            /* Lone surrogates: not a device torch accepts either. */
            PyErr_Clear();
            return r;
        }
        return td_parse_device_string(s, (size_t)n);
    }
    if (PyBytes_Check(obj)) {
        /* torch reads b"cuda:1" as "cuda:1" (torch.device, factories,
         * .to), so it is the same request. */
        return td_parse_device_string(PyBytes_AS_STRING(obj),
                                      (size_t)PyBytes_GET_SIZE(obj));
    }
    if (PyLong_CheckExact(obj)) {
        int overflow = 0;
        long v = PyLong_AsLongAndOverflow(obj, &overflow);
        if (overflow || v < 0 || v > 2147483647L) {
            if (v == -1 && PyErr_Occurred()) {
                PyErr_Clear();
            }
            return r;   /* torch reports it */
        }
        /* A bare int is an accelerator ordinal: CUDA code means cuda:N. */
        r.kind = TD_REQ_CUDA;
        r.index = v;
        return r;
    }
    return r;
}

int
td_is_device_arg(td_state *st, PyObject *obj)
{
    return Py_TYPE(obj) == st->device_type || PyUnicode_Check(obj)
           || PyBytes_Check(obj) || PyLong_CheckExact(obj);
}

PyObject *
td_target_device(td_state *st, td_target t)
{
    switch (t) {
    case TD_TARGET_CPU:
        return st->dev_cpu;
    case TD_TARGET_CUDA:
        return st->dev_cuda;
    case TD_TARGET_MPS:
        return st->dev_mps;
    case TD_TARGET_KEEP:
        break;
    }
    return NULL;
}

/* Torch's own code (optimizers, data loading, serialization, GradScaler)
 * means the devices it names: a host-side "cpu" or None is never promoted to
 * the accelerator, and a device it constructs is the truth.  Not exempt:
 * torch.nn (layers built without device= land beside the user's tensors),
 * torch.utils._device (the default device the user asked for), and the
 * compilers, which run the user's own code on the user's behalf. */
static int
starts_with(const char *s, Py_ssize_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    return (size_t)n >= k && memcmp(s, prefix, k) == 0;
}

static const char *const td_not_torch_internal[] = {
    "torch.nn.", "torch.utils._device", "torch._dynamo", "torch._inductor",
    "torch.fx", "torch.jit", "torch._functorch", "torch.export",
    "torch._export", "torch._higher_order_ops",
};

const char *
td_caller_module(td_state *st, Py_ssize_t *size)
{
    PyObject *globals = PyEval_GetGlobals();   /* borrowed */
    if (globals == NULL || !PyDict_CheckExact(globals)) {
        return NULL;
    }
    /* borrowed; a lookup error reads as "unknown caller" */
    PyObject *name = PyDict_GetItemWithError(globals, st->str_name);
    if (name == NULL || !PyUnicode_Check(name)) {
        PyErr_Clear();
        return NULL;
    }
    const char *s = PyUnicode_AsUTF8AndSize(name, size);
    if (s == NULL) {
        PyErr_Clear();
    }
    return s;
}

int
td_called_from_torch(td_state *st)
{
    Py_ssize_t n;
    const char *s = td_caller_module(st, &n);
    if (s == NULL) {
        return 0;
    }
    if (!starts_with(s, n, "torch.")) {
        return 0;
    }
    size_t count = sizeof(td_not_torch_internal)
                   / sizeof(td_not_torch_internal[0]);
    for (size_t i = 0; i < count; i++) {
        if (starts_with(s, n, td_not_torch_internal[i])) {
            return 0;
        }
    }
    return 1;
}

td_resolution
td_resolve_now(td_state *st, td_request req)
{
    td_profile profile = td_get_profile();
    td_mode mode = td_get_mode();
    int from_torch = 0;
    if (mode == TD_MODE_ACCELERATE
        && (req.kind == TD_REQ_CPU_TOGGLE
            || (profile != TD_PROFILE_CPU
                && (req.kind == TD_REQ_NONE || req.kind == TD_REQ_CPU))))
    {
        from_torch = td_called_from_torch(st);
    }
    td_resolution res = td_resolve(req, profile, mode, td_get_cpu_override(),
                                   from_torch);
    if (res.toggle_override) {
        td_toggle_cpu_override();
    }
    return res;
}
