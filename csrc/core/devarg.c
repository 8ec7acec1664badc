/* Turning the device arguments users pass (str, int, torch.device, None) into
 * policy requests, and targets back into torch.device objects. */
#include "tdcore.h"

#include <frameobject.h>
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

/* probes are torch.device("cpu"), torch.device("cuda") and
 * torch.device("mps", 0), built by torch itself; the target devices may
 * differ from their names in a simulated profile (tests). */
int
td_device_check_layout(PyTypeObject *device_type, PyObject *probes)
{
    static const struct {
        int type;
        int index;
    } expect[] = {
        {TD_C10_CPU, -1},
        {TD_C10_CUDA, -1},
        {TD_C10_MPS, 0},
    };
    size_t n = sizeof(expect) / sizeof(expect[0]);
    if (!PyTuple_Check(probes) || (size_t)PyTuple_GET_SIZE(probes) != n) {
        PyErr_SetString(PyExc_TypeError,
                        "install(): layout_probes must be (cpu, cuda, mps:0)");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        int type, index;
        PyObject *dev = PyTuple_GET_ITEM(probes, i);
        if (Py_TYPE(dev) != device_type) {
            PyErr_SetString(PyExc_TypeError,
                            "install(): layout probes must be torch.device");
            return -1;
        }
        device_fields(dev, &type, &index);
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

td_accel_type
td_accel_of(td_install *st)
{
    td_accel_type a = {NULL, 0, -1};
    if (st == NULL || st->accel_name == NULL
        || st->target[TD_TARGET_ACCEL] == NULL)
    {
        return a;
    }
    Py_ssize_t n;
    /* UTF-8 cached in the str object: no allocation after the first. */
    const char *s = PyUnicode_AsUTF8AndSize(st->accel_name, &n);
    if (s == NULL) {
        PyErr_Clear();
        return a;
    }
    int index;
    device_fields(st->target[TD_TARGET_ACCEL], &a.code, &index);
    a.name = s;
    a.len = (size_t)n;
    return a;
}

int
td_device_type_code(PyObject *dev)
{
    int type, index;
    device_fields(dev, &type, &index);
    return type;
}

int
td_same_device(PyObject *a, PyObject *b)
{
    int ta, ia, tb, ib;
    device_fields(a, &ta, &ia);
    device_fields(b, &tb, &ib);
    return ta == tb && ia == ib;
}

td_request
td_request_from_device(PyObject *dev, const td_accel_type *accel)
{
    td_request r = {TD_REQ_OTHER, -1};
    int type, index;
    device_fields(dev, &type, &index);
    if (accel != NULL && accel->name != NULL && type == accel->code) {
        r.kind = TD_REQ_ACCEL;
        r.index = index;
        return r;
    }
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
td_request_from_value(PyTypeObject *device_type, const td_accel_type *accel,
                      PyObject *obj)
{
    td_request r = {TD_REQ_OTHER, -1};
    if (obj == NULL || obj == Py_None) {
        r.kind = TD_REQ_NONE;
        return r;
    }
    if (device_type != NULL && Py_TYPE(obj) == device_type) {
        return td_request_from_device(obj, accel);
    }
    if (PyUnicode_Check(obj)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(obj, &n);
        if (s == NULL) {
            /* Lone surrogates: not a device torch accepts either. */
            PyErr_Clear();
            return r;
        }
        return td_parse_device_string(s, (size_t)n, accel);
    }
    if (PyBytes_Check(obj)) {
        /* torch reads b"cuda:1" as "cuda:1" (torch.device, factories,
         * .to), so it is the same request. */
        return td_parse_device_string(PyBytes_AS_STRING(obj),
                                      (size_t)PyBytes_GET_SIZE(obj), accel);
    }
    if (PyLong_CheckExact(obj)) {
        int overflow = 0;
        long v = PyLong_AsLongAndOverflow(obj, &overflow);
        if (v == -1 && !overflow && !PyErr_Occurred()) {
            r.kind = TD_REQ_CUDA;
            r.index = TD_INDEX_HOST;
            return r;
        }
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

td_request
td_request_from_object(td_install *st, PyObject *obj)
{
    td_accel_type accel = td_accel_of(st);
    return td_request_from_value(st->device_type, &accel, obj);
}

td_request
td_request_as_place(td_install *st, PyObject *obj, td_request req)
{
    /* In mode "accelerate" `torch.zeros(n, device=x.device)` for a host x
     * (torch.from_numpy's, a DataLoader batch) means "where x is": sent to
     * the accelerator as a "cpu" request would be, it could never meet x.
     * The program's own torch.device("cpu") is one of ours, and stays a
     * request (docs/policy.md). */
    if (req.kind == TD_REQ_CPU && obj != NULL
        && Py_TYPE(obj) == st->device_type && !td_device_handed_out(st, obj))
    {
        req.kind = TD_REQ_HOST_PLACE;
    }
    return req;
}

td_request
td_request_of_arg(td_install *st, PyObject *obj)
{
    td_request req = td_request_from_object(st, obj);
    /* A "cpu" request and a host place resolve alike (kept) except where
     * "cpu" is promoted: only there is the identity scan worth its cost,
     * a dict lookup per call once the program has named an index. */
    if (req.kind != TD_REQ_CPU || td_get_mode() != TD_MODE_ACCELERATE
        || td_get_cpu_override())
    {
        return req;
    }
    return td_request_as_place(st, obj, req);
}

int
td_is_device_arg(td_install *st, PyObject *obj)
{
    return Py_TYPE(obj) == st->device_type || PyUnicode_Check(obj)
           || PyBytes_Check(obj) || PyLong_CheckExact(obj);
}

PyObject *
td_target_device(td_install *st, td_target t)
{
    if (t <= TD_TARGET_KEEP || t >= TD_TARGET_COUNT) {
        return NULL;
    }
    return st->target[t];
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

/* The module name of the globals a pass-through wrapper runs in
 * (TorchDevice/_patches.py, passthrough()): a Python function of ours
 * between the caller and a C function of ours (one that carries
 * `__wrapped__`, a storage constructor's marking).  Its frame is not the
 * caller: the frame that called it is. */
#define TD_PASSTHROUGH "TorchDevice._passthrough"

/* borrowed; NULL without an exception where there is none */
static PyObject *
module_name_of(PyObject *globals, PyObject *name_key)
{
    if (globals == NULL || !PyDict_CheckExact(globals)) {
        return NULL;
    }
    /* a lookup error reads as "unknown caller" */
    PyObject *name = PyDict_GetItemWithError(globals, name_key);
    if (name == NULL || !PyUnicode_Check(name)) {
        PyErr_Clear();
        return NULL;
    }
    return name;
}

/* The globals of the frame that called the innermost one; borrowed (the
 * frame, alive on the stack, holds them), NULL where there is none. */
static PyObject *
outer_globals(void)
{
    PyFrameObject *frame = PyEval_GetFrame();   /* borrowed */
    if (frame == NULL) {
        return NULL;
    }
    PyFrameObject *back = PyFrame_GetBack(frame);
    if (back == NULL) {
        return NULL;
    }
    PyObject *globals = PyObject_GetAttrString((PyObject *)back, "f_globals");
    Py_DECREF(back);
    if (globals == NULL) {
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(globals);
    return globals;
}

const char *
td_caller_module(PyObject *name_key, Py_ssize_t *size)
{
    PyObject *name = module_name_of(PyEval_GetGlobals(), name_key);
    if (name != NULL
        && PyUnicode_CompareWithASCIIString(name, TD_PASSTHROUGH) == 0)
    {
        name = module_name_of(outer_globals(), name_key);
    }
    if (name == NULL) {
        return NULL;
    }
    const char *s = PyUnicode_AsUTF8AndSize(name, size);
    if (s == NULL) {
        PyErr_Clear();
    }
    return s;
}

/* torch's code that builds the device the program's own tensors are on
 * from what the program named, and compares them: FSDP2 makes its device
 * from the program's mesh (`torch.device(mesh.device_type, index)`, "cuda")
 * and checks every parameter against it.  Built as the truth, "cuda:0"
 * equals no tensor's device where "cuda" lands elsewhere, and FSDP2 stops
 * on a tensor-parallel (DTensor) parameter.  Its accelerator requests land
 * as the program's do; everything else about it stays torch's own. */
static const char *const td_builds_programs_device[] = {
    "torch.distributed.fsdp._fully_shard",
};

static int
starts_with_any(const char *s, Py_ssize_t n, const char *const *prefixes,
                size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (starts_with(s, n, prefixes[i])) {
            return 1;
        }
    }
    return 0;
}

/* torch's own host-side code inside those packages.  torch.export.load
 * reads each weight into a device-less torch.empty(0) with set_() to its
 * host bytes, then moves it to the device the archive names.  Two
 * functions of torch.nn.utils.rnn keep a packed sequence's lengths on the
 * host, which torch's kernels require ("'lengths' argument should be a 1D
 * CPU int64 tensor"); the rest of that module, PackedSequence.cpu() and
 * .to() among it, asks for what the program asked for and is treated as
 * the program's own request. */
typedef struct {
    const char *module;
    const char *function;       /* NULL: all of the module */
} td_host_code;

static const td_host_code td_torch_internal_inside[] = {
    {"torch.export.pt2_archive", NULL},
    {"torch.nn.utils.rnn", "pack_padded_sequence"},
    {"torch.nn.utils.rnn", "pad_packed_sequence"},
};

/* Libraries' host-side code, which reads a tensor's memory through its
 * data pointer.  safetensors' writer (transformers' save_pretrained,
 * accelerate's save_model) moves each tensor with .to("cpu") and hands
 * data_ptr() to numpy as host bytes.  In mode "accelerate" that "cpu"
 * would stay on the device, whose data pointer on MPS is a Metal buffer,
 * not the values: the file would hold garbage, silently. */
static const td_host_code td_library_host_code[] = {
    {"safetensors.torch", "_to_ndarray"},       /* safetensors 0.6 on */
    {"safetensors.torch", "_tobytes"},          /* earlier releases */
};

/* The name of the function running in the caller's frame (the frame past
 * a pass-through wrapper, as td_caller_module reads it); a new reference,
 * NULL without an exception where there is no frame. */
static PyObject *
caller_function_name(PyObject *name_key)
{
    PyFrameObject *frame = PyEval_GetFrame();   /* borrowed */
    if (frame == NULL) {
        return NULL;
    }
    Py_INCREF(frame);
    PyObject *inner = module_name_of(PyEval_GetGlobals(), name_key);
    if (inner != NULL
        && PyUnicode_CompareWithASCIIString(inner, TD_PASSTHROUGH) == 0)
    {
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        if (back == NULL) {
            return NULL;
        }
        frame = back;
    }
    PyCodeObject *code = PyFrame_GetCode(frame);
    Py_DECREF(frame);
    PyObject *name = Py_NewRef(code->co_name);
    Py_DECREF(code);
    return name;
}

/* The caller's function is read once, and only where a module matches an
 * entry that names functions. */
static int
host_code_inside(PyObject *name_key, const char *s, Py_ssize_t n,
                 const td_host_code *table, size_t count)
{
    PyObject *function = NULL;
    int inside = 0;
    for (size_t i = 0; i < count; i++) {
        const td_host_code *c = &table[i];
        if (!starts_with(s, n, c->module)) {
            continue;
        }
        if (c->function == NULL) {
            inside = 1;
            break;
        }
        if (function == NULL) {
            function = caller_function_name(name_key);
            if (function == NULL) {
                break;
            }
        }
        if (PyUnicode_CompareWithASCIIString(function, c->function) == 0) {
            inside = 1;
            break;
        }
    }
    Py_XDECREF(function);
    return inside;
}

static int
torch_internal(PyObject *name_key, const char *s, Py_ssize_t n)
{
    return s != NULL && starts_with(s, n, "torch.")
           && (!starts_with_any(s, n, td_not_torch_internal,
                                Py_ARRAY_LENGTH(td_not_torch_internal))
               || host_code_inside(name_key, s, n, td_torch_internal_inside,
                                   Py_ARRAY_LENGTH(td_torch_internal_inside)));
}

int
td_called_from_torch(PyObject *name_key)
{
    Py_ssize_t n = 0;
    const char *s = td_caller_module(name_key, &n);
    return torch_internal(name_key, s, n)
           || (s != NULL
               && host_code_inside(name_key, s, n, td_library_host_code,
                                   Py_ARRAY_LENGTH(td_library_host_code)));
}

int
td_torch_names_device(PyObject *name_key)
{
    Py_ssize_t n = 0;
    const char *s = td_caller_module(name_key, &n);
    return torch_internal(name_key, s, n)
           && !starts_with_any(s, n, td_builds_programs_device,
                               Py_ARRAY_LENGTH(td_builds_programs_device));
}

void
td_float64_error(td_install *st, PyObject *api, PyObject *dtype)
{
    PyObject *wide = td_dtype_name(st, dtype);
    PyObject *narrow = td_dtype_name(st, td_narrow_dtype(st, dtype));
    if (td_get_profile() == TD_PROFILE_ACCEL && st->accel_name != NULL) {
        PyErr_Format(PyExc_TypeError,
                     "%U: the %U device does not support %U (its "
                     "capability record, TORCHDEVICE_CAPABILITIES); set "
                     "TORCHDEVICE_FLOAT64=downcast to use %U instead",
                     api, st->accel_name, wide, narrow);
        return;
    }
    PyErr_Format(PyExc_TypeError,
                 "%U: MPS does not support %U; set "
                 "TORCHDEVICE_FLOAT64=downcast to use %U instead", api, wide,
                 narrow);
}

PyObject *
td_narrow_dtype(td_install *st, PyObject *dtype)
{
    return dtype == st->float64 ? st->float32
           : dtype == st->complex128 ? st->complex64 : NULL;
}

PyObject *
td_dtype_name(td_install *st, PyObject *dtype)
{
    return dtype == st->complex128 ? st->str_complex128
           : dtype == st->complex64 ? st->str_complex64
           : dtype == st->float32 ? st->str_float32 : st->str_float64;
}

/* Whether the caller is code FX generated for a graph (a GraphModule's
 * forward: what torch.compile's eager backends and fx.symbolic_trace run).
 * Such code has no module: FX compiles it under a "<eval_with_key>.N" file
 * name into a namespace without __name__.  Its calls were traced, and
 * their devices decided then (the compile polyfills, the wrappers under
 * symbolic tracing), so a host request there is the trace's decision, not
 * the user's: re-deciding it would make the graph compute somewhere its
 * trace did not (docs/compile-checkpoints-distributed.md). */
static int
called_from_graph_code(td_install *st)
{
    PyObject *globals = PyEval_GetGlobals();   /* borrowed */
    if (globals == NULL || !PyDict_CheckExact(globals)) {
        return 0;
    }
    int has_name = PyDict_Contains(globals, st->str_name);
    if (has_name != 0) {
        if (has_name < 0) {
            PyErr_Clear();
        }
        return 0;
    }
    PyFrameObject *frame = PyEval_GetFrame();  /* borrowed */
    if (frame == NULL) {
        return 0;
    }
    PyCodeObject *code = PyFrame_GetCode(frame);
    int found = 0;
    if (PyUnicode_Check(code->co_filename)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(code->co_filename, &n);
        if (s == NULL) {
            PyErr_Clear();
        }
        else {
            found = starts_with(s, n, "<eval_with_key>");
        }
    }
    Py_DECREF(code);
    return found;
}

td_resolution
td_resolve_now(td_install *st, td_request req)
{
    td_profile profile = td_get_profile();
    td_mode mode = td_get_mode();
    int from_torch = 0;
    if (req.kind == TD_REQ_MPS) {
        td_note_mps_request();
    }
    if (mode == TD_MODE_ACCELERATE
        && (req.kind == TD_REQ_CPU_TOGGLE
            || (profile != TD_PROFILE_CPU
                && (req.kind == TD_REQ_NONE || req.kind == TD_REQ_CPU))))
    {
        from_torch = td_called_from_torch(st->str_name)
                     || called_from_graph_code(st);
    }
    td_resolution res = td_resolve(req, profile, mode, td_get_cpu_override(),
                                   from_torch);
    if (res.toggle_override) {
        td_toggle_cpu_override();
    }
    return res;
}

Py_ssize_t
td_mode_stack_depth(td_install *st)
{
    PyObject *len = PyObject_CallNoArgs(st->mode_stack_len);
    if (len == NULL) {
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(len);
    Py_DECREF(len);
    if (n < 0 && !PyErr_Occurred()) {
        n = 0;   /* torch never says less than none */
    }
    return n;
}

/* torch's default-device context: `with torch.device(d):` and
 * torch.set_default_device(d) both push a DeviceContext mode onto the
 * calling thread's torch-function mode stack, and torch fills the device of
 * a factory called without one from it.  Other modes (profilers, counting
 * modes, a user's own) say nothing about devices, so only a DeviceContext
 * counts.  The stack is per thread, as torch's context is. */
int
td_default_device_active(td_install *st)
{
    if (st->mode_stack_len == Py_None || st->mode_stack_at == Py_None
        || st->device_context == Py_None)
    {
        return 0;   /* that torch has no such context (_torch_compat.py) */
    }
    Py_ssize_t n = td_mode_stack_depth(st);
    if (n < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *index = PyLong_FromSsize_t(i);
        PyObject *mode = index ? PyObject_CallOneArg(st->mode_stack_at, index)
                               : NULL;
        Py_XDECREF(index);
        if (mode == NULL) {
            return -1;
        }
        int found = PyObject_TypeCheck(mode,
                                       (PyTypeObject *)st->device_context);
        Py_DECREF(mode);
        if (found) {
            return 1;
        }
    }
    return 0;
}

static PyObject *
devarg_default_device_active(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    td_install *st = td_install_acquire();
    if (st == NULL) {
        Py_RETURN_FALSE;
    }
    int active = td_default_device_active(st);
    Py_DECREF(st);
    return active < 0 ? NULL : PyBool_FromLong(active);
}

static PyObject *
devarg_is_device_arg(PyObject *Py_UNUSED(m), PyObject *obj)
{
    td_install *st = td_install_acquire();
    if (st == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "TorchDevice is not enabled");
        return NULL;
    }
    int yes = td_is_device_arg(st, obj);
    Py_DECREF(st);
    return PyBool_FromLong(yes);
}

PyMethodDef td_devarg_methods[] = {
    {"default_device_active", devarg_default_device_active, METH_NOARGS,
     "default_device_active() -> bool\n\nWhether torch's default-device "
     "context (with torch.device(...), set_default_device) is active in "
     "the calling thread, as the wrappers see it."},
    {"is_device_arg", devarg_is_device_arg, METH_O,
     "is_device_arg(value) -> bool\n\nWhether the wrappers read value as a "
     "device argument (torch.device, str, bytes, int)."},
    {NULL, NULL, 0, NULL},
};
