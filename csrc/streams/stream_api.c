/* The module-wide side of streams and events: the state the Python layer
 * hands torch objects to, the per-thread current stream, and the functions
 * that stand in for torch.cuda's (current_stream, default_stream,
 * set_stream, stream, synchronize, get_stream_from_external) and for
 * Tensor.record_stream.
 *
 * Python equivalent:
 *
 *     def current_stream(device=None):
 *         return threading.local().current.get(backend(), DEFAULT[backend()])
 *     def set_stream(stream):
 *         if stream is not None:
 *             threading.local().current[stream.backend] = stream
 *     def synchronize(device=None):
 *         BACKEND[backend()].device_synchronize()
 *
 * The current stream lives in the thread-state dict, so each thread starts
 * on the default stream and keeps its own, as CUDA's are per thread.
 */
#include "streams.h"

#include <string.h>

/* ---- the state object --------------------------------------------------- */

static int
StreamsState_traverse(PyObject *self, visitproc visit, void *arg)
{
    td_streams *ss = (td_streams *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(ss->stream_type);
    Py_VISIT(ss->external_type);
    Py_VISIT(ss->event_type);
    Py_VISIT(ss->context_type);
    for (int b = 0; b < TD_BACKEND_COUNT; b++) {
        Py_VISIT(ss->ops[b]);
        Py_VISIT(ss->device[b]);
        Py_VISIT(ss->default_stream[b]);
    }
    Py_VISIT(ss->record_stream);
    return 0;
}

static void
clear_handed_over(td_streams *ss)
{
    for (int b = 0; b < TD_BACKEND_COUNT; b++) {
        Py_CLEAR(ss->ops[b]);
        Py_CLEAR(ss->device[b]);
        Py_CLEAR(ss->default_stream[b]);
    }
    Py_CLEAR(ss->record_stream);
}

static int
StreamsState_clear(PyObject *self)
{
    td_streams *ss = (td_streams *)self;
    clear_handed_over(ss);
    Py_CLEAR(ss->stream_type);
    Py_CLEAR(ss->external_type);
    Py_CLEAR(ss->event_type);
    Py_CLEAR(ss->context_type);
    for (int b = 0; b < TD_BACKEND_COUNT; b++) {
        Py_CLEAR(ss->key_current[b]);
        Py_CLEAR(ss->api_stream[b]);
        Py_CLEAR(ss->api_event[b]);
        Py_CLEAR(ss->req_name[b]);
        Py_CLEAR(ss->dev_name[b]);
    }
    Py_CLEAR(ss->key_with);
    Py_CLEAR(ss->what_emulated);
    return 0;
}

static void
StreamsState_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)StreamsState_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot streams_state_slots[] = {
    {Py_tp_traverse, (void *)StreamsState_traverse},
    {Py_tp_clear, (void *)StreamsState_clear},
    {Py_tp_dealloc, (void *)StreamsState_dealloc},
    {0, NULL},
};

PyType_Spec td_streams_state_spec = {
    .name = "TorchDevice._tdcore._StreamsState",
    .basicsize = sizeof(td_streams),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
              | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION),
    .slots = streams_state_slots,
};

static PyTypeObject *
add_type(PyObject *module, PyType_Spec *spec, PyTypeObject *base)
{
    PyTypeObject *tp = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, spec, (PyObject *)base);
    if (tp != NULL && PyModule_AddType(module, tp) < 0) {
        Py_CLEAR(tp);
    }
    return tp;
}

int
td_streams_exec(PyObject *module, td_state *st)
{
    static const char *const dev_names[] = {"cpu", "mps", "cuda"};
    /* What code that reaches each backend asked for. */
    static const char *const req_names[] = {"cuda", "cuda", "mps"};
    static const char *const api_prefix[] = {"torch.cuda.", "torch.cuda.",
                                             "torch.mps."};
    PyTypeObject *state_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &td_streams_state_spec, NULL);
    if (state_type == NULL) {
        return -1;
    }
    td_streams *ss = PyObject_GC_New(td_streams, state_type);
    Py_DECREF(state_type);   /* the instance holds its own reference */
    if (ss == NULL) {
        return -1;
    }
    memset((char *)ss + sizeof(PyObject), 0,
           sizeof(td_streams) - sizeof(PyObject));
    atomic_store(&ss->forced, -1);
    PyObject_GC_Track((PyObject *)ss);
    st->streams = (PyObject *)ss;

    ss->stream_type = add_type(module, &td_stream_spec, NULL);
    if (ss->stream_type == NULL) {
        return -1;
    }
    ss->external_type = add_type(module, &td_external_stream_spec,
                                 ss->stream_type);
    ss->event_type = add_type(module, &td_event_spec, NULL);
    ss->context_type = add_type(module, &td_stream_context_spec, NULL);
    if (ss->external_type == NULL || ss->event_type == NULL
        || ss->context_type == NULL)
    {
        return -1;
    }
    for (int b = 0; b < TD_BACKEND_COUNT; b++) {
        ss->key_current[b] = PyUnicode_FromFormat(
            "TorchDevice._tdcore.current_stream.%s", dev_names[b]);
        ss->api_stream[b] = PyUnicode_FromFormat("%sStream", api_prefix[b]);
        ss->api_event[b] = PyUnicode_FromFormat("%sEvent", api_prefix[b]);
        ss->req_name[b] = PyUnicode_InternFromString(req_names[b]);
        ss->dev_name[b] = PyUnicode_InternFromString(dev_names[b]);
        if (ss->key_current[b] == NULL || ss->api_stream[b] == NULL
            || ss->api_event[b] == NULL || ss->req_name[b] == NULL
            || ss->dev_name[b] == NULL)
        {
            return -1;
        }
        PyUnicode_InternInPlace(&ss->key_current[b]);
    }
    ss->key_with = PyUnicode_InternFromString(
        "TorchDevice._tdcore.stream_with_stack");
    ss->what_emulated = PyUnicode_InternFromString("emulated");
    if (ss->key_with == NULL || ss->what_emulated == NULL) {
        return -1;
    }
    return 0;
}

void
td_streams_uninstall(td_state *st)
{
    td_generic_hooks_uninstall();
    if (st->streams != NULL) {
        clear_handed_over(TD_STREAMS(st));
    }
}

/* ---- helpers shared by the stream and event files ----------------------- */

const td_backend *
td_backend_of(td_backend_id id)
{
    switch (id) {
    case TD_BACKEND_METAL:
        return &td_backend_metal;
    case TD_BACKEND_CUDA:
        return &td_backend_cuda;
    default:
        return &td_backend_cpu;
    }
}

int
td_streams_active(td_streams *ss)
{
    int b = atomic_load_explicit(&ss->forced, memory_order_relaxed);
    if (b < 0) {
        switch (td_get_profile()) {
        case TD_PROFILE_MPS:
            b = TD_BACKEND_METAL;
            break;
        case TD_PROFILE_CUDA:
            b = TD_BACKEND_CUDA;
            break;
        default:
            b = TD_BACKEND_CPU;
            break;
        }
    }
    if (ss->default_stream[b] == NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "TorchDevice streams and events: the %s backend is not "
                     "set up (TorchDevice is disabled, or was enabled for "
                     "another profile)", td_backend_of(b)->name);
        return -1;
    }
    return b;
}

td_streams *
td_streams_of_class(PyTypeObject *defining_class)
{
    td_state *st = (td_state *)PyType_GetModuleState(defining_class);
    if (st == NULL) {
        return NULL;
    }
    if (st->streams == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_tdcore has been cleared");
        return NULL;
    }
    return TD_STREAMS(st);
}

PyObject *
td_current_stream(td_streams *ss, int backend)
{
    PyObject *d = PyThreadState_GetDict();   /* borrowed */
    if (d != NULL) {
        PyObject *s = PyDict_GetItemWithError(d, ss->key_current[backend]);
        if (s != NULL) {
            return s;
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    if (ss->default_stream[backend] == NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "TorchDevice streams: the %s backend is not set up",
                     td_backend_of(backend)->name);
        return NULL;
    }
    return ss->default_stream[backend];
}

int
td_set_current_stream(td_streams *ss, int backend, PyObject *stream)
{
    PyObject *d = PyThreadState_GetDict();   /* borrowed */
    if (d == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "set_stream: this thread has no state dict");
        return -1;
    }
    return PyDict_SetItem(d, ss->key_current[backend], stream);
}

int
td_streams_report(td_state *st, PyObject *api, int backend)
{
    if (!td_get_report()) {
        return 0;
    }
    td_streams *ss = TD_STREAMS(st);
    return td_record(st, api, ss->what_emulated, ss->req_name[backend],
                     ss->dev_name[backend]);
}

int
td_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames, const char *const *kw, int n, int required,
              PyObject **out)
{
    for (int i = 0; i < n; i++) {
        out[i] = NULL;
    }
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes at most %d argument%s (%zd given)", fname, n,
                     n == 1 ? "" : "s", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        out[i] = args[i];
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        int found = -1;
        for (int i = 0; i < n; i++) {
            if (PyUnicode_CompareWithASCIIString(name, kw[i]) == 0) {
                found = i;
                break;
            }
        }
        if (found < 0) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument '%U'",
                         fname, name);
            return -1;
        }
        if (out[found] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got multiple values for argument '%s'", fname,
                         kw[found]);
            return -1;
        }
        out[found] = args[nargs + k];
    }
    for (int i = 0; i < required; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() missing required argument '%s' (pos %d)",
                         fname, kw[i], i + 1);
            return -1;
        }
    }
    return 0;
}

/* ---- the functions torch.cuda gets --------------------------------------- */

static td_streams *
module_streams(PyObject *module, td_state **st_out)
{
    td_state *st = (td_state *)PyModule_GetState(module);
    if (st == NULL || st->streams == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_tdcore has been cleared");
        return NULL;
    }
    if (st_out != NULL) {
        *st_out = st;
    }
    return TD_STREAMS(st);
}

static const char *const kw_device[] = {"device"};

/* current_stream(device=None) / default_stream(device=None) */
static PyObject *
stream_query_fn(PyObject *module, PyObject *const *args, Py_ssize_t nargsf,
                PyObject *kwnames, const char *fname, int want_default)
{
    td_state *st;
    td_streams *ss = module_streams(module, &st);
    PyObject *device;
    if (ss == NULL
        || td_parse_args(fname, args, PyVectorcall_NARGS(nargsf), kwnames,
                         kw_device, 1, 0, &device) < 0)
    {
        return NULL;
    }
    int b = td_streams_active(ss);
    if (b < 0 || td_stream_check_device(st, b, device, fname) < 0) {
        return NULL;
    }
    if (want_default) {
        return Py_NewRef(ss->default_stream[b]);
    }
    return Py_XNewRef(td_current_stream(ss, b));
}

static PyObject *
current_stream(PyObject *module, PyObject *const *args, Py_ssize_t nargsf,
               PyObject *kwnames)
{
    return stream_query_fn(module, args, nargsf, kwnames, "current_stream", 0);
}

static PyObject *
default_stream(PyObject *module, PyObject *const *args, Py_ssize_t nargsf,
               PyObject *kwnames)
{
    return stream_query_fn(module, args, nargsf, kwnames, "default_stream", 1);
}

/* torch.cuda.set_stream reads stream.stream_id and friends, so anything but
 * a stream fails there with AttributeError; keep the type, say more. */
static int
not_a_stream(const char *fname, PyObject *obj)
{
    PyErr_Format(PyExc_AttributeError,
                 "%s: expected a torch.cuda.Stream or None, got '%.100s' "
                 "(which has no attribute 'stream_id')", fname,
                 Py_TYPE(obj)->tp_name);
    return -1;
}

static PyObject *
set_stream(PyObject *module, PyObject *stream)
{
    td_streams *ss = module_streams(module, NULL);
    if (ss == NULL) {
        return NULL;
    }
    if (stream == Py_None) {
        Py_RETURN_NONE;
    }
    if (!td_stream_check(ss, stream)) {
        not_a_stream("torch.cuda.set_stream()", stream);
        return NULL;
    }
    td_stream *s = (td_stream *)stream;
    if (td_set_current_stream(ss, s->backend->id, stream) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* torch.cuda.stream(stream): stream= by keyword as torch allows; omitted
 * it is None (a no-op context), as the original TorchDevice's demos call
 * it (docs/compatibility.md). */
static PyObject *
stream_fn(PyObject *module, PyObject *const *args, Py_ssize_t nargsf,
          PyObject *kwnames)
{
    static const char *const kw_stream[] = {"stream"};
    PyObject *stream = NULL;
    td_streams *ss = module_streams(module, NULL);
    if (ss == NULL
        || td_parse_args("stream", args, PyVectorcall_NARGS(nargsf), kwnames,
                         kw_stream, 1, 0, &stream) < 0)
    {
        return NULL;
    }
    return td_stream_context_new(ss, stream ? stream : Py_None);
}

static PyObject *
synchronize(PyObject *module, PyObject *const *args, Py_ssize_t nargsf,
            PyObject *kwnames)
{
    td_state *st;
    td_streams *ss = module_streams(module, &st);
    PyObject *device;
    if (ss == NULL
        || td_parse_args("synchronize", args, PyVectorcall_NARGS(nargsf),
                         kwnames, kw_device, 1, 0, &device) < 0)
    {
        return NULL;
    }
    int b = td_streams_active(ss);
    if (b < 0 || td_stream_check_device(st, b, device, "synchronize") < 0) {
        return NULL;
    }
    if (td_backend_of(b)->device_synchronize(ss->ops[b]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
get_stream_from_external(PyObject *module, PyObject *const *args,
                         Py_ssize_t nargsf, PyObject *kwnames)
{
    static const char *const kw[] = {"data_ptr", "device"};
    td_streams *ss = module_streams(module, NULL);
    PyObject *a[2];
    if (ss == NULL
        || td_parse_args("get_stream_from_external", args,
                         PyVectorcall_NARGS(nargsf), kwnames, kw, 2, 1,
                         a) < 0)
    {
        return NULL;
    }
    PyObject *kwargs = NULL;
    if (a[1] != NULL) {
        kwargs = Py_BuildValue("{sO}", "device", a[1]);
        if (kwargs == NULL) {
            return NULL;
        }
    }
    PyObject *pos = PyTuple_Pack(1, a[0]);
    PyObject *result = NULL;
    if (pos != NULL) {
        result = PyObject_Call((PyObject *)ss->external_type, pos, kwargs);
        Py_DECREF(pos);
    }
    Py_XDECREF(kwargs);
    return result;
}

/* Tensor.record_stream(stream): with one queue (Metal) or none (CPU) no
 * allocator can hand the memory out while a stream still uses it, so for
 * our streams there is nothing to do.  Anything else goes to torch. */
static PyObject *
record_stream(PyObject *tensor, PyObject *stream)
{
    td_state *st = td_installed_state();
    td_streams *ss = st != NULL ? TD_STREAMS(st) : NULL;
    if (ss != NULL && td_stream_check(ss, stream)) {
        Py_RETURN_NONE;
    }
    if (ss == NULL || ss->record_stream == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Tensor.record_stream: TorchDevice is not enabled");
        return NULL;
    }
    PyObject *a[2] = {tensor, stream};
    return PyObject_Vectorcall(ss->record_stream, a, 2, NULL);
}

static PyMethodDef record_stream_def = {
    "record_stream", record_stream, METH_O,
    "record_stream(stream)\n\nMarks the tensor as used by stream (TorchDevice:"
    " nothing to do for emulated streams; native streams go to torch).",
};

static PyObject *
record_stream_method(PyObject *Py_UNUSED(module), PyObject *tensor_type)
{
    if (!PyType_Check(tensor_type)) {
        PyErr_SetString(PyExc_TypeError,
                        "record_stream_method(tensor_type): a type");
        return NULL;
    }
    return PyDescr_NewMethod((PyTypeObject *)tensor_type, &record_stream_def);
}

/* ---- set-up from the Python layer ----------------------------------------- */

static int
check_ops(PyObject *ops, const char *name)
{
    if (ops == Py_None) {
        return 0;
    }
    if (!PyTuple_CheckExact(ops) || PyTuple_GET_SIZE(ops) != TD_OPS_SIZE) {
        PyErr_Format(PyExc_TypeError,
                     "streams_setup(): %s must be None or a tuple of %d "
                     "callables", name, TD_OPS_SIZE);
        return -1;
    }
    for (Py_ssize_t i = 0; i < TD_OPS_SIZE; i++) {
        if (!PyCallable_Check(PyTuple_GET_ITEM(ops, i))) {
            PyErr_Format(PyExc_TypeError,
                         "streams_setup(): %s[%zd] is not callable", name, i);
            return -1;
        }
    }
    return 1;
}

static PyObject *
streams_setup(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"metal_ops", "cuda_ops", "record_stream",
                             "generic_stream", "generic_event", NULL};
    PyObject *metal = Py_None, *cuda = Py_None, *rec = Py_None;
    PyObject *gstream = Py_None, *gevent = Py_None;
    td_state *st;
    td_streams *ss = module_streams(module, &st);
    if (ss == NULL
        || !PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOOO:streams_setup",
                                        kwlist, &metal, &cuda, &rec, &gstream,
                                        &gevent))
    {
        return NULL;
    }
    int has_metal = check_ops(metal, "metal_ops");
    int has_cuda = check_ops(cuda, "cuda_ops");
    if (has_metal < 0 || has_cuda < 0) {
        return NULL;
    }
    if (st->dev_cpu == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "streams_setup() needs install() first");
        return NULL;
    }
    clear_handed_over(ss);
    ss->device[TD_BACKEND_CPU] = Py_NewRef(st->dev_cpu);
    ss->device[TD_BACKEND_METAL] = Py_NewRef(st->dev_mps);
    ss->device[TD_BACKEND_CUDA] = Py_NewRef(st->dev_cuda);
    if (has_metal) {
        ss->ops[TD_BACKEND_METAL] = Py_NewRef(metal);
    }
    if (has_cuda) {
        ss->ops[TD_BACKEND_CUDA] = Py_NewRef(cuda);
    }
    if (rec != Py_None) {
        ss->record_stream = Py_NewRef(rec);
    }
    for (int b = 0; b < TD_BACKEND_COUNT; b++) {
        if (b != TD_BACKEND_CPU && ss->ops[b] == NULL) {
            continue;
        }
        ss->default_stream[b] = td_stream_new(ss, ss->stream_type, b, 0, 0, 0);
        if (ss->default_stream[b] == NULL) {
            goto error;
        }
    }
    if (gstream != Py_None || gevent != Py_None) {
        if (td_generic_hooks_install(gstream, gevent) < 0) {
            goto error;
        }
    }
    Py_RETURN_NONE;
error:
    clear_handed_over(ss);
    return NULL;
}

static PyObject *
streams_force_backend(PyObject *module, PyObject *name)
{
    static const char *const names[] = {"cpu", "metal", "cuda"};
    td_streams *ss = module_streams(module, NULL);
    if (ss == NULL) {
        return NULL;
    }
    int value = -1;
    if (name != Py_None) {
        for (int b = 0; b < TD_BACKEND_COUNT; b++) {
            if (PyUnicode_Check(name)
                && PyUnicode_CompareWithASCIIString(name, names[b]) == 0)
            {
                value = b;
            }
        }
        if (value < 0) {
            PyErr_Format(PyExc_ValueError,
                         "backend must be 'cpu', 'metal', 'cuda' or None, "
                         "not %R", name);
            return NULL;
        }
    }
    int previous = atomic_exchange(&ss->forced, value);
    if (previous < 0) {
        Py_RETURN_NONE;
    }
    return PyUnicode_FromString(names[previous]);
}

static PyObject *
streams_info(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_streams *ss = module_streams(module, NULL);
    if (ss == NULL) {
        return NULL;
    }
    int forced = atomic_load(&ss->forced);
    int b = td_streams_active(ss);
    PyObject *active;
    if (b < 0) {
        PyErr_Clear();
        active = Py_NewRef(Py_None);
    }
    else {
        active = PyUnicode_FromString(td_backend_of(b)->name);
        if (active == NULL) {
            return NULL;
        }
    }
    PyObject *ready = PyTuple_New(0);
    if (ready == NULL) {
        Py_DECREF(active);
        return NULL;
    }
    for (int i = 0; i < TD_BACKEND_COUNT; i++) {
        if (ss->default_stream[i] == NULL) {
            continue;
        }
        PyObject *name = PyUnicode_FromString(td_backend_of(i)->name);
        if (name == NULL
            || _PyTuple_Resize(&ready, PyTuple_GET_SIZE(ready) + 1) < 0)
        {
            Py_XDECREF(name);
            Py_XDECREF(ready);
            Py_DECREF(active);
            return NULL;
        }
        PyTuple_SET_ITEM(ready, PyTuple_GET_SIZE(ready) - 1, name);
    }
    return Py_BuildValue(
        "{sNsOsNsO}", "active", active, "forced",
        forced < 0 ? Py_None : Py_True, "ready", ready, "generic_hooks",
        td_generic_hooks_installed() ? Py_True : Py_False);
}

PyMethodDef td_streams_methods[] = {
    {"current_stream", (PyCFunction)(void (*)(void))current_stream,
     METH_FASTCALL | METH_KEYWORDS,
     "current_stream(device=None) -> Stream\n\nThe calling thread's current "
     "stream (torch.cuda.current_stream)."},
    {"default_stream", (PyCFunction)(void (*)(void))default_stream,
     METH_FASTCALL | METH_KEYWORDS,
     "default_stream(device=None) -> Stream\n\nThe default stream "
     "(torch.cuda.default_stream)."},
    {"set_stream", set_stream, METH_O,
     "set_stream(stream)\n\nMakes stream the calling thread's current stream;"
     " None does nothing (torch.cuda.set_stream)."},
    {"stream", (PyCFunction)(void (*)(void))stream_fn,
     METH_FASTCALL | METH_KEYWORDS,
     "stream(stream=None) -> StreamContext\n\nContext manager selecting "
     "stream (torch.cuda.stream); None makes it a no-op."},
    {"synchronize", (PyCFunction)(void (*)(void))synchronize,
     METH_FASTCALL | METH_KEYWORDS,
     "synchronize(device=None)\n\nWaits for all work on the device "
     "(torch.cuda.synchronize)."},
    {"get_stream_from_external",
     (PyCFunction)(void (*)(void))get_stream_from_external,
     METH_FASTCALL | METH_KEYWORDS,
     "get_stream_from_external(data_ptr, device=None) -> ExternalStream"},
    {"record_stream_method", record_stream_method, METH_O,
     "record_stream_method(tensor_type)\n\nA method descriptor for "
     "Tensor.record_stream."},
    {"streams_setup", (PyCFunction)(void (*)(void))streams_setup,
     METH_VARARGS | METH_KEYWORDS,
     "streams_setup(*, metal_ops=None, cuda_ops=None, record_stream=None, "
     "generic_stream=None, generic_event=None)\n\nHands the torch objects of "
     "each backend over (after install()) and hooks torch.Stream/Event."},
    {"streams_force_backend", streams_force_backend, METH_O,
     "streams_force_backend(name) -> previous\n\n'cpu', 'metal', 'cuda', or "
     "None to follow the profile.  For tests."},
    {"streams_info", streams_info, METH_NOARGS,
     "streams_info() -> dict\n\nThe active backend and what is set up."},
    {NULL, NULL, 0, NULL},
};
