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

#include "core/fields.h"

#include <string.h>

/* A backend forced by tests (streams_force_backend), or -1. */
static atomic_int forced = -1;

/* ---- the state objects ---------------------------------------------------- */

#define STREAMS_FIELDS TD_FIELDS(td_streams, stream_type, \
                                 dev_name[TD_BACKEND_COUNT - 1])
#define BACKENDS_FIELDS TD_FIELDS(td_backends, ops[0], record_stream)

static int
StreamsState_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return td_fields_visit(self, STREAMS_FIELDS, visit, arg);
}

static int
StreamsState_clear(PyObject *self)
{
    td_fields_clear(self, STREAMS_FIELDS);
    return 0;
}

TD_GC_DEALLOC(StreamsState_dealloc, StreamsState_clear)

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

static int
Backends_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return td_fields_visit(self, BACKENDS_FIELDS, visit, arg);
}

static int
Backends_clear(PyObject *self)
{
    td_fields_clear(self, BACKENDS_FIELDS);
    return 0;
}

TD_GC_DEALLOC(Backends_dealloc, Backends_clear)

static PyType_Slot backends_slots[] = {
    {Py_tp_traverse, (void *)Backends_traverse},
    {Py_tp_clear, (void *)Backends_clear},
    {Py_tp_dealloc, (void *)Backends_dealloc},
    {0, NULL},
};

static PyType_Spec backends_spec = {
    .name = "TorchDevice._tdcore._Backends",
    .basicsize = sizeof(td_backends),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
              | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION),
    .slots = backends_slots,
};

/* A zeroed GC object of a state type, not yet tracked. */
static PyObject *
new_state_object(PyTypeObject *type, size_t size)
{
    PyObject *obj = (PyObject *)PyObject_GC_New(PyObject, type);
    if (obj != NULL) {
        memset((char *)obj + sizeof(PyObject), 0, size - sizeof(PyObject));
    }
    return obj;
}

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
    static const char *const dev_names[] = {"cpu", "mps", "cuda",
                                            "accelerator"};
    /* What code that reaches each backend asked for. */
    static const char *const req_names[] = {"cuda", "cuda", "mps", "cuda"};
    static const char *const api_prefix[] = {"torch.cuda.", "torch.cuda.",
                                             "torch.mps.", "torch.cuda."};
    PyTypeObject *state_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &td_streams_state_spec, NULL);
    if (state_type == NULL) {
        return -1;
    }
    td_streams *ss = (td_streams *)new_state_object(state_type,
                                                    sizeof(td_streams));
    Py_DECREF(state_type);   /* the instance holds its own reference */
    if (ss == NULL) {
        return -1;
    }
    PyObject_GC_Track((PyObject *)ss);
    st->streams = (PyObject *)ss;

    ss->stream_type = add_type(module, &td_stream_spec, NULL);
    if (ss->stream_type == NULL) {
        return -1;
    }
    ss->external_type = add_type(module, &td_external_stream_spec,
                                 ss->stream_type);
    ss->event_type = add_type(module, &td_event_spec, NULL);
    ss->mps_event_type = add_type(module, &td_mps_event_spec,
                                  ss->event_type);
    ss->context_type = add_type(module, &td_stream_context_spec, NULL);
    ss->backends_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &backends_spec, NULL);
    if (ss->external_type == NULL || ss->event_type == NULL
        || ss->mps_event_type == NULL
        || ss->context_type == NULL || ss->backends_type == NULL)
    {
        return -1;
    }
    for (int b = 0; b < TD_BACKEND_COUNT; b++) {
        ss->key_current[b] = PyUnicode_FromFormat(
            "TorchDevice._tdcore.current_stream.%s", dev_names[b]);
        ss->api_stream[b] = PyUnicode_FromFormat("%sStream", api_prefix[b]);
        ss->api_event[b] = PyUnicode_FromFormat("%sEvent", api_prefix[b]);
        ss->api_synchronize[b] = PyUnicode_FromFormat("%ssynchronize",
                                                      api_prefix[b]);
        ss->api_current[b] = PyUnicode_FromFormat("%scurrent_stream",
                                                  api_prefix[b]);
        ss->api_default[b] = PyUnicode_FromFormat("%sdefault_stream",
                                                  api_prefix[b]);
        ss->req_name[b] = PyUnicode_InternFromString(req_names[b]);
        ss->dev_name[b] = PyUnicode_InternFromString(dev_names[b]);
        if (ss->key_current[b] == NULL || ss->api_stream[b] == NULL
            || ss->api_event[b] == NULL || ss->api_synchronize[b] == NULL
            || ss->api_current[b] == NULL || ss->api_default[b] == NULL
            || ss->req_name[b] == NULL || ss->dev_name[b] == NULL)
        {
            return -1;
        }
        PyUnicode_InternInPlace(&ss->key_current[b]);
    }
    ss->key_with = PyUnicode_InternFromString(
        "TorchDevice._tdcore.stream_with_stack");
    ss->what_emulated = PyUnicode_InternFromString("emulated");
    ss->api_mps_event = PyUnicode_InternFromString("torch.mps.Event");
    ss->req_mps = PyUnicode_InternFromString("mps");
    if (ss->key_with == NULL || ss->what_emulated == NULL
        || ss->api_mps_event == NULL || ss->req_mps == NULL)
    {
        return -1;
    }
    return 0;
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
    case TD_BACKEND_DEVICE:
        return &td_backend_device;
    default:
        return &td_backend_cpu;
    }
}

int
td_streams_active(td_install *st)
{
    int b = atomic_load_explicit(&forced, memory_order_relaxed);
    if (b < 0) {
        switch (td_get_profile()) {
        case TD_PROFILE_MPS:
            b = TD_BACKEND_METAL;
            break;
        case TD_PROFILE_CUDA:
            b = TD_BACKEND_CUDA;
            break;
        case TD_PROFILE_ACCEL:
            /* The record chose: Metal's one queue was handed ops, or the
             * device's native events were. */
            b = st != NULL && TD_BACKENDS(st) != NULL
                        && TD_BACKENDS(st)->ops[TD_BACKEND_METAL] != NULL
                    ? TD_BACKEND_METAL : TD_BACKEND_DEVICE;
            break;
        default:
            b = TD_BACKEND_CPU;
            break;
        }
    }
    if (st == NULL || TD_BACKENDS(st) == NULL
        || TD_BACKENDS(st)->default_stream[b] == NULL)
    {
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
    td_state *st = td_type_state(defining_class);
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
    /* Borrowed from the installation in force: nothing can drop it before
     * the caller runs Python code (the GIL is held throughout). */
    td_install *st = td_install_acquire();
    PyObject *s = NULL;
    if (st != NULL && TD_BACKENDS(st) != NULL) {
        s = TD_BACKENDS(st)->default_stream[backend];
    }
    Py_XDECREF(st);
    if (s == NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "TorchDevice streams: the %s backend is not set up",
                     td_backend_of(backend)->name);
    }
    return s;
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
td_streams_report(td_install *st, PyObject *api, int backend)
{
    return td_streams_report_as(st, api, TD_STREAMS(st)->req_name[backend],
                                backend);
}

int
td_streams_report_as(td_install *st, PyObject *api, PyObject *request,
                     int backend)
{
    /* torch's own use (its benchmark timer's synchronize) is not the
     * program's to port, as for the masquerade's calls. */
    if (!td_get_report() || td_called_from_torch(st->str_name)) {
        return 0;
    }
    td_streams *ss = TD_STREAMS(st);
    /* On profile accelerator the work runs on that device, whichever
     * backend its record chose. */
    PyObject *dev = backend != TD_BACKEND_CPU && st->accel_name != NULL
                    && td_get_profile() == TD_PROFILE_ACCEL
                    ? st->accel_name : ss->dev_name[backend];
    return td_record(st->records, st, api, ss->what_emulated, request, dev);
}

/* ---- the functions torch.cuda gets --------------------------------------- */

static td_streams *
module_streams(PyObject *module)
{
    td_state *st = td_module_state(module);
    if (st == NULL || st->streams == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_tdcore has been cleared");
        return NULL;
    }
    return TD_STREAMS(st);
}

static const char *const device_names[] = {"device"};

/* current_stream(device=None) / default_stream(device=None) */
static PyObject *
stream_query_fn(PyObject *module, PyObject *const *args, Py_ssize_t nargsf,
                PyObject *kwnames, const td_args_spec *spec, int want_default)
{
    td_streams *ss = module_streams(module);
    PyObject *device;
    if (ss == NULL
        || td_args_parse(spec, args, PyVectorcall_NARGS(nargsf), kwnames,
                         &device) < 0)
    {
        return NULL;
    }
    td_install *st = td_install_acquire();
    PyObject *result = NULL;
    int b = td_streams_active(st);
    if (b >= 0 && td_stream_check_device(st, b, device, spec->fname) == 0
        && td_streams_report(st, want_default ? ss->api_default[b]
                                              : ss->api_current[b], b) == 0)
    {
        result = want_default
                     ? Py_NewRef(TD_BACKENDS(st)->default_stream[b])
                     : Py_XNewRef(td_current_stream(ss, b));
    }
    Py_XDECREF(st);
    return result;
}

static PyObject *
current_stream(PyObject *module, PyObject *const *args, Py_ssize_t nargsf,
               PyObject *kwnames)
{
    static const td_args_spec spec = {"current_stream", device_names, 1, 0,
                                      1};
    return stream_query_fn(module, args, nargsf, kwnames, &spec, 0);
}

static PyObject *
default_stream(PyObject *module, PyObject *const *args, Py_ssize_t nargsf,
               PyObject *kwnames)
{
    static const td_args_spec spec = {"default_stream", device_names, 1, 0,
                                      1};
    return stream_query_fn(module, args, nargsf, kwnames, &spec, 1);
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
    td_streams *ss = module_streams(module);
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
    static const td_args_spec spec = {"stream", kw_stream, 1, 0, 1};
    PyObject *stream = NULL;
    td_streams *ss = module_streams(module);
    if (ss == NULL
        || td_args_parse(&spec, args, PyVectorcall_NARGS(nargsf), kwnames,
                         &stream) < 0)
    {
        return NULL;
    }
    return td_stream_context_new(ss, stream ? stream : Py_None);
}

static PyObject *
synchronize(PyObject *module, PyObject *const *args, Py_ssize_t nargsf,
            PyObject *kwnames)
{
    static const td_args_spec spec = {"synchronize", device_names, 1, 0, 1};
    td_streams *ss = module_streams(module);
    PyObject *device;
    if (ss == NULL
        || td_args_parse(&spec, args, PyVectorcall_NARGS(nargsf), kwnames,
                         &device) < 0)
    {
        return NULL;
    }
    /* Held: the backend calls into Python with the ops it was handed. */
    td_install *st = td_install_acquire();
    int rc = -1;
    int b = td_streams_active(st);
    if (b >= 0 && td_stream_check_device(st, b, device, "synchronize") == 0
        && td_streams_report(st, ss->api_synchronize[b], b) == 0)
    {
        rc = td_backend_of(b)->device_synchronize(TD_BACKENDS(st)->ops[b]);
    }
    Py_XDECREF(st);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
get_stream_from_external(PyObject *module, PyObject *const *args,
                         Py_ssize_t nargsf, PyObject *kwnames)
{
    static const char *const names[] = {"data_ptr", "device"};
    static const td_args_spec spec = {"get_stream_from_external", names, 2,
                                      1, 2};
    td_streams *ss = module_streams(module);
    PyObject *a[2];
    if (ss == NULL
        || td_args_parse(&spec, args, PyVectorcall_NARGS(nargsf), kwnames,
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
    td_install *st = td_install_acquire();
    td_backends *bk = st != NULL ? TD_BACKENDS(st) : NULL;
    PyObject *result = NULL;
    if (st != NULL && td_stream_check(TD_STREAMS(st), stream)) {
        result = Py_NewRef(Py_None);
    }
    else if (bk == NULL || bk->record_stream == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Tensor.record_stream: TorchDevice is not enabled");
    }
    else {
        PyObject *a[2] = {tensor, stream};
        result = PyObject_Vectorcall(bk->record_stream, a, 2, NULL);
    }
    Py_XDECREF(st);
    return result;
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

/* The backends' objects, as a new td_backends. */
static td_backends *
make_backends(td_install *st, td_streams *ss, PyObject *metal, PyObject *cuda,
              PyObject *device, PyObject *rec)
{
    td_backends *bk = (td_backends *)new_state_object(ss->backends_type,
                                                      sizeof(td_backends));
    if (bk == NULL) {
        return NULL;
    }
    PyObject_GC_Track((PyObject *)bk);
    /* Metal's one queue serves MPS, or the generic accelerator when its
     * record is MPS's. */
    PyObject *accel = st->target[TD_TARGET_ACCEL];
    bk->device[TD_BACKEND_CPU] = Py_NewRef(st->target[TD_TARGET_CPU]);
    bk->device[TD_BACKEND_METAL] = Py_NewRef(
        accel != NULL ? accel : st->target[TD_TARGET_MPS]);
    bk->device[TD_BACKEND_CUDA] = Py_NewRef(st->target[TD_TARGET_CUDA]);
    bk->device[TD_BACKEND_DEVICE] = Py_XNewRef(accel);
    if (metal != Py_None) {
        bk->ops[TD_BACKEND_METAL] = Py_NewRef(metal);
    }
    if (cuda != Py_None) {
        bk->ops[TD_BACKEND_CUDA] = Py_NewRef(cuda);
    }
    if (device != Py_None) {
        if (accel == NULL) {
            Py_DECREF(bk);
            PyErr_SetString(PyExc_ValueError,
                            "streams_setup(): device_ops without a generic "
                            "accelerator installed");
            return NULL;
        }
        bk->ops[TD_BACKEND_DEVICE] = Py_NewRef(device);
    }
    if (rec != Py_None) {
        bk->record_stream = Py_NewRef(rec);
    }
    for (int b = 0; b < TD_BACKEND_COUNT; b++) {
        if (b != TD_BACKEND_CPU && bk->ops[b] == NULL) {
            continue;
        }
        bk->default_stream[b] = td_stream_new(bk, ss->stream_type, b, 0, 0,
                                              0);
        if (bk->default_stream[b] == NULL) {
            Py_DECREF(bk);
            return NULL;
        }
    }
    return bk;
}

/* Publishes a copy of the installation with the backends' objects, then
 * hooks torch.Stream and torch.Event (two install steps; a failure leaves
 * them unhooked and the earlier installation in force). */
static PyObject *
streams_setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    static const char *const names[] = {"metal_ops", "cuda_ops",
                                        "record_stream", "generic_stream",
                                        "generic_event", "device_ops"};
    static const td_args_spec spec = {"streams_setup", names, 6, 0, 0};
    PyObject *a[6];
    td_state *mst = td_module_state(module);
    if (td_args_parse(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    for (int i = 0; i < 6; i++) {
        if (a[i] == NULL) {
            a[i] = Py_None;
        }
    }
    if (check_ops(a[0], "metal_ops") < 0 || check_ops(a[1], "cuda_ops") < 0
        || check_ops(a[5], "device_ops") < 0)
    {
        return NULL;
    }
    td_install *st = td_install_acquire();
    if (st == NULL || (PyObject *)st != mst->installation) {
        Py_XDECREF(st);
        PyErr_SetString(PyExc_RuntimeError,
                        "streams_setup() needs install() first");
        return NULL;
    }
    td_install *next = NULL;
    td_backends *bk = make_backends(st, TD_STREAMS(st), a[0], a[1], a[5],
                                    a[2]);
    if (bk != NULL) {
        next = td_install_copy(st);
    }
    if (next == NULL) {
        Py_XDECREF(bk);
        Py_DECREF(st);
        return NULL;
    }
    Py_XSETREF(next->backends, (PyObject *)bk);
    td_install_publish(mst, next);
    int rc = td_generic_hooks_install(a[3], a[4]);
    if (rc < 0) {
        /* Undo in reverse: the hooks made so far, then the publication. */
        td_slot_unhook(TD_SLOT_EVENT);
        td_slot_unhook(TD_SLOT_STREAM);
        td_install_publish(mst, (td_install *)Py_NewRef(st));
    }
    Py_DECREF(st);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
streams_force_backend(PyObject *Py_UNUSED(module), PyObject *name)
{
    static const char *const names[] = {"cpu", "metal", "cuda", "device"};
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
                         "backend must be 'cpu', 'metal', 'cuda', 'device' "
                         "or None, not %R", name);
            return NULL;
        }
    }
    int previous = atomic_exchange(&forced, value);
    if (previous < 0) {
        Py_RETURN_NONE;
    }
    return PyUnicode_FromString(names[previous]);
}

static PyObject *
streams_info(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(a))
{
    int forced_now = atomic_load(&forced);
    td_install *st = td_install_acquire();
    td_backends *bk = st != NULL ? TD_BACKENDS(st) : NULL;
    int b = td_streams_active(st);
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
        Py_XDECREF(st);
        return NULL;
    }
    for (int i = 0; i < TD_BACKEND_COUNT; i++) {
        if (bk == NULL || bk->default_stream[i] == NULL) {
            continue;
        }
        PyObject *name = PyUnicode_FromString(td_backend_of(i)->name);
        if (name == NULL
            || _PyTuple_Resize(&ready, PyTuple_GET_SIZE(ready) + 1) < 0)
        {
            Py_XDECREF(name);
            Py_XDECREF(ready);
            Py_DECREF(active);
            Py_XDECREF(st);
            return NULL;
        }
        PyTuple_SET_ITEM(ready, PyTuple_GET_SIZE(ready) - 1, name);
    }
    Py_XDECREF(st);
    return Py_BuildValue(
        "{sNsOsNsO}", "active", active, "forced",
        forced_now < 0 ? Py_None : Py_True, "ready", ready, "generic_hooks",
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
    {"streams_setup", TD_FASTKW(streams_setup),
     "streams_setup(*, metal_ops=None, cuda_ops=None, record_stream=None, "
     "generic_stream=None, generic_event=None, device_ops=None)\n\nHands "
     "the torch objects of "
     "each backend over (after install()) and hooks torch.Stream/Event."},
    {"streams_force_backend", streams_force_backend, METH_O,
     "streams_force_backend(name) -> previous\n\n'cpu', 'metal', 'cuda', "
     "'device', or "
     "None to follow the profile.  For tests."},
    {"streams_info", streams_info, METH_NOARGS,
     "streams_info() -> dict\n\nThe active backend and what is set up."},
    {NULL, NULL, 0, NULL},
};
