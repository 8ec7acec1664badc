/* torch.cuda.Stream, torch.cuda.ExternalStream and torch.cuda.StreamContext
 * where no CUDA device is present (and torch.mps streams on profile cuda).
 *
 * Python equivalent:
 *
 *     class Stream:
 *         def __new__(cls, device=None, priority=0): ...  # a fresh stream id
 *         def query(self): return backend.stream_query(self)
 *         def synchronize(self): backend.stream_synchronize(self)
 *         def wait_event(self, event): event.wait(self)
 *         def wait_stream(self, other): self.wait_event(other.record_event())
 *         def record_event(self, event=None):
 *             event = event or Event(); event.record(self); return event
 *         def __eq__(self, other): same stream id, kind and backend
 *
 *     class StreamContext:         # what torch.cuda.stream(s) returns
 *         def __enter__(self): self.prev = current_stream(); set_stream(s)
 *         def __exit__(self, *exc): set_stream(self.prev)
 *
 * Streams are values, as in torch: two objects for the same stream compare
 * and hash equal.  A stream's fields never change after construction.
 */
#include "streams.h"

#include "core/fields.h"

#include <structmember.h>

/* torch keeps 4 priorities (c10 max_compile_time_stream_priorities): 0 is
 * the lowest, -3 the highest; others are clamped, as CUDA streams' are. */
#define TD_PRIORITY_LOWEST 0
#define TD_PRIORITY_HIGHEST (-3)

static _Atomic int64_t next_stream_id = 1;

static void Stream_dealloc(PyObject *self);
static void StreamContext_dealloc(PyObject *self);

td_state *
td_state_of_type(PyTypeObject *type, destructor dealloc)
{
    if (type == NULL) {
        PyErr_SetString(PyExc_SystemError, "td_state_of_type(NULL)");
        return NULL;
    }
    for (PyTypeObject *t = type; t != NULL; t = t->tp_base) {
        if (t->tp_dealloc == dealloc) {
            return (td_state *)PyType_GetModuleState(t);
        }
    }
    PyErr_Format(PyExc_TypeError, "%.100s is not a TorchDevice type",
                 type->tp_name);
    return NULL;
}

td_streams *
td_streams_of_type(PyTypeObject *type, destructor dealloc)
{
    td_state *st = td_state_of_type(type, dealloc);
    if (st == NULL) {
        return NULL;
    }
    if (st->streams == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_tdcore has been cleared");
        return NULL;
    }
    return TD_STREAMS(st);
}

int
td_stream_check(td_streams *ss, PyObject *obj)
{
    return PyObject_TypeCheck(obj, ss->stream_type);
}

int
td_stream_check_device(td_install *st, int backend, PyObject *device,
                       const char *fname)
{
    if (device == NULL || device == Py_None) {
        return 0;
    }
    if (PyLong_CheckExact(device)) {
        /* An ordinal; negative ones mean the current device, as in torch.
         * Every ordinal collapses onto the one device that is present. */
        return 0;
    }
    if (Py_TYPE(device) == st->device_type || PyUnicode_Check(device)) {
        td_request req = td_request_from_object(st, device);
        if (req.kind == TD_REQ_CUDA
            || (backend == TD_BACKEND_CUDA && req.kind == TD_REQ_MPS))
        {
            return 0;
        }
        /* torch.device("cuda") has already become the device in use. */
        if (Py_TYPE(device) == st->device_type
            && ((backend == TD_BACKEND_CPU && req.kind == TD_REQ_CPU)
                || (backend == TD_BACKEND_METAL && req.kind == TD_REQ_MPS)
                || ((backend == TD_BACKEND_METAL
                     || backend == TD_BACKEND_DEVICE)
                    && req.kind == TD_REQ_ACCEL)))
        {
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError,
                 "%s(): expected a %s device, but got: %R", fname,
                 backend == TD_BACKEND_CUDA ? "mps" : "cuda", device);
    return -1;
}

PyObject *
td_stream_new(td_backends *bk, PyTypeObject *type, int backend,
              int64_t stream_id, int priority, int external)
{
    td_stream *s = (td_stream *)type->tp_alloc(type, 0);
    if (s == NULL) {
        return NULL;
    }
    s->backend = td_backend_of(backend);
    s->device = Py_XNewRef(bk->device[backend]);
    s->ops = Py_XNewRef(bk->ops[backend]);
    s->stream_id = stream_id;
    s->priority = priority;
    s->external = external;
    if (s->device == NULL) {
        Py_DECREF(s);
        PyErr_Format(PyExc_RuntimeError,
                     "TorchDevice streams: the %s backend is not set up",
                     td_backend_of(backend)->name);
        return NULL;
    }
    return (PyObject *)s;
}

/* ---- Stream --------------------------------------------------------------- */

static PyObject *
Stream_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"device", "priority", "stream_id",
                             "device_index", "device_type", NULL};
    PyObject *device = Py_None, *priority_obj = NULL, *id_obj = NULL;
    PyObject *index_obj = NULL, *type_obj = NULL;
    td_streams *ss = td_streams_of_type(type, Stream_dealloc);
    if (ss == NULL
        || !PyArg_ParseTupleAndKeywords(args, kwargs, "|OO$OOO:Stream", kwlist,
                                        &device, &priority_obj, &id_obj,
                                        &index_obj, &type_obj))
    {
        return NULL;
    }
    (void)index_obj;   /* one device: every index is it */
    (void)type_obj;
    long priority = 0;
    if (priority_obj != NULL) {
        if (!PyLong_Check(priority_obj)) {
            PyErr_Format(PyExc_TypeError,
                         "Stream(): priority must be int, not %.100s",
                         Py_TYPE(priority_obj)->tp_name);
            return NULL;
        }
        int overflow;
        priority = PyLong_AsLongAndOverflow(priority_obj, &overflow);
        if (priority == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (overflow) {
            priority = overflow > 0 ? TD_PRIORITY_LOWEST : TD_PRIORITY_HIGHEST;
        }
        if (priority > TD_PRIORITY_LOWEST) {
            priority = TD_PRIORITY_LOWEST;
        }
        if (priority < TD_PRIORITY_HIGHEST) {
            priority = TD_PRIORITY_HIGHEST;
        }
    }
    /* Held for the call: the report below runs Python code. */
    td_install *st = td_install_acquire();
    PyObject *result = NULL;
    int b = td_streams_active(st);
    if (b < 0 || td_stream_check_device(st, b, device, "Stream") < 0) {
        goto done;
    }
    int64_t id;
    if (id_obj != NULL && id_obj != Py_None) {
        /* torch rebuilds a stream from (stream_id, device_index,
         * device_type), e.g. when it crosses torch.compile. */
        id = PyLong_AsLongLong(id_obj);
        if (id == -1 && PyErr_Occurred()) {
            goto done;
        }
    }
    else {
        id = atomic_fetch_add(&next_stream_id, 1);
        if (td_streams_report(st, ss->api_stream[b], b) < 0) {
            goto done;
        }
    }
    result = td_stream_new(TD_BACKENDS(st), type, b, id, (int)priority, 0);
done:
    Py_XDECREF(st);
    return result;
}

static PyObject *
ExternalStream_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"stream_ptr", "device", NULL};
    PyObject *ptr_obj, *device = Py_None;
    td_streams *ss = td_streams_of_type(type, Stream_dealloc);
    if (ss == NULL
        || !PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:ExternalStream",
                                        kwlist, &ptr_obj, &device))
    {
        return NULL;
    }
    if (!PyLong_Check(ptr_obj)) {
        PyErr_Format(PyExc_TypeError,
                     "ExternalStream(): stream_ptr must be int, not %.100s",
                     Py_TYPE(ptr_obj)->tp_name);
        return NULL;
    }
    long long ptr = PyLong_AsLongLong(ptr_obj);
    if (ptr == -1 && PyErr_Occurred()) {
        return NULL;
    }
    td_install *st = td_install_acquire();
    PyObject *result = NULL;
    int b = td_streams_active(st);
    if (b >= 0
        && td_stream_check_device(st, b, device, "ExternalStream") == 0
        && td_streams_report(st, ss->api_stream[b], b) == 0)
    {
        result = td_stream_new(TD_BACKENDS(st), type, b, (int64_t)ptr, 0, 1);
    }
    Py_XDECREF(st);
    return result;
}

static int
Stream_traverse(PyObject *self, visitproc visit, void *arg)
{
    td_stream *s = (td_stream *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(s->device);
    Py_VISIT(s->ops);
    Py_VISIT(s->handle);
    return 0;
}

static int
Stream_clear(PyObject *self)
{
    td_stream *s = (td_stream *)self;
    Py_CLEAR(s->device);
    Py_CLEAR(s->ops);
    Py_CLEAR(s->handle);
    return 0;
}

TD_GC_DEALLOC_WEAKREF(Stream_dealloc, td_stream, Stream_clear)

static PyObject *
Stream_query(PyObject *self, PyObject *Py_UNUSED(a))
{
    td_stream *s = (td_stream *)self;
    int done = s->backend->stream_query(s);
    return done < 0 ? NULL : PyBool_FromLong(done);
}

static PyObject *
Stream_synchronize(PyObject *self, PyObject *Py_UNUSED(a))
{
    td_stream *s = (td_stream *)self;
    if (s->backend->stream_synchronize(s) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Stream_wait_event(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                  Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const kw[] = {"event"};
    static const td_args_spec spec = {"wait_event", kw, 1, 1, 1};
    td_streams *ss = td_streams_of_class(cls);
    PyObject *event;
    if (ss == NULL || td_args_parse(&spec, args, nargs, kwnames, &event) < 0)
    {
        return NULL;
    }
    if (!td_event_check(ss, event)) {
        PyErr_Format(PyExc_TypeError,
                     "wait_event(): argument 'event' must be "
                     "torch.cuda.Event, not %.100s", Py_TYPE(event)->tp_name);
        return NULL;
    }
    if (td_event_wait(ss, (td_event *)event, self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Stream_wait_stream(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const kw[] = {"stream"};
    static const td_args_spec spec = {"wait_stream", kw, 1, 1, 1};
    td_streams *ss = td_streams_of_class(cls);
    PyObject *other;
    if (ss == NULL || td_args_parse(&spec, args, nargs, kwnames, &other) < 0)
    {
        return NULL;
    }
    if (!td_stream_check(ss, other)) {
        PyErr_Format(PyExc_TypeError,
                     "wait_stream(): argument 'stream' must be "
                     "torch.cuda.Stream, not %.100s", Py_TYPE(other)->tp_name);
        return NULL;
    }
    td_stream *s = (td_stream *)self, *o = (td_stream *)other;
    if (s->backend != o->backend) {
        PyErr_Format(PyExc_RuntimeError,
                     "wait_stream(): the streams belong to different "
                     "backends (%s and %s)", s->backend->name,
                     o->backend->name);
        return NULL;
    }
    /* On the CPU every stream is complete whenever Python runs. */
    if (s->backend->id == TD_BACKEND_CPU || self == other) {
        Py_RETURN_NONE;
    }
    PyObject *ev = td_event_new_with(ss->event_type, o->backend, o->device,
                                     o->ops, 0, 0, 0, 0);
    if (ev == NULL) {
        return NULL;
    }
    int rc = td_event_record(ss, (td_event *)ev, other);
    if (rc == 0) {
        rc = td_event_wait(ss, (td_event *)ev, self);
    }
    Py_DECREF(ev);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Stream_record_event(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                    Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const kw[] = {"event"};
    static const td_args_spec spec = {"record_event", kw, 1, 0, 1};
    td_streams *ss = td_streams_of_class(cls);
    PyObject *event;
    if (ss == NULL || td_args_parse(&spec, args, nargs, kwnames, &event) < 0)
    {
        return NULL;
    }
    if (event == NULL || event == Py_None) {
        td_stream *s = (td_stream *)self;
        event = td_event_new_with(ss->event_type, s->backend, s->device,
                                  s->ops, 0, 0, 0, 0);
        if (event == NULL) {
            return NULL;
        }
    }
    else if (td_event_check(ss, event)) {
        Py_INCREF(event);
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "record_event(): argument 'event' must be "
                     "torch.cuda.Event or None, not %.100s",
                     Py_TYPE(event)->tp_name);
        return NULL;
    }
    if (td_event_record(ss, (td_event *)event, self) < 0) {
        Py_DECREF(event);
        return NULL;
    }
    return event;
}

/* `with stream:` as torch.Stream offers it.  The streams it replaces go on a
 * per-thread stack, since one stream object may be entered by many threads
 * or nested in itself. */
static PyObject *
with_stack(td_streams *ss, int create)
{
    PyObject *d = PyThreadState_GetDict();   /* borrowed */
    if (d == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "this thread has no state dict");
        return NULL;
    }
    PyObject *stack = PyDict_GetItemWithError(d, ss->key_with);
    if (stack != NULL || PyErr_Occurred() || !create) {
        if (stack == NULL && !PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError,
                            "Stream.__exit__() without __enter__()");
        }
        return stack;
    }
    stack = PyList_New(0);
    if (stack == NULL || PyDict_SetItem(d, ss->key_with, stack) < 0) {
        Py_XDECREF(stack);
        return NULL;
    }
    Py_DECREF(stack);   /* the dict holds it */
    return stack;
}

static PyObject *
Stream_enter(PyObject *self, PyTypeObject *cls, PyObject *const *args,
             Py_ssize_t nargs, PyObject *kwnames)
{
    static const td_args_spec spec = {"__enter__", NULL, 0, 0, 0};
    td_streams *ss = td_streams_of_class(cls);
    if (ss == NULL || td_args_parse(&spec, args, nargs, kwnames, NULL) < 0)
    {
        return NULL;
    }
    int b = ((td_stream *)self)->backend->id;
    PyObject *stack = with_stack(ss, 1);   /* borrowed */
    PyObject *prev = stack ? td_current_stream(ss, b) : NULL;
    if (prev == NULL || PyList_Append(stack, prev) < 0) {
        return NULL;
    }
    if (td_set_current_stream(ss, b, self) < 0) {
        return NULL;
    }
    return Py_NewRef(self);
}

static PyObject *
Stream_exit(PyObject *self, PyTypeObject *cls, PyObject *const *args,
            Py_ssize_t nargs, PyObject *Py_UNUSED(kwnames))
{
    (void)args;
    (void)nargs;
    td_streams *ss = td_streams_of_class(cls);
    PyObject *stack = ss ? with_stack(ss, 0) : NULL;   /* borrowed */
    if (stack == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(stack);
    if (n == 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Stream.__exit__() without __enter__()");
        return NULL;
    }
    PyObject *prev = Py_NewRef(PyList_GET_ITEM(stack, n - 1));
    int rc = PyList_SetSlice(stack, n - 1, n, NULL);
    if (rc == 0) {
        rc = td_set_current_stream(ss, ((td_stream *)self)->backend->id, prev);
    }
    Py_DECREF(prev);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_FALSE;
}

static PyObject *
Stream_priority_range(PyObject *Py_UNUSED(cls), PyObject *Py_UNUSED(a))
{
    return Py_BuildValue("(ii)", TD_PRIORITY_LOWEST, TD_PRIORITY_HIGHEST);
}

PyObject *
td_not_picklable(PyObject *self, PyObject *Py_UNUSED(a))
{
    PyErr_Format(PyExc_TypeError, "cannot pickle '%.100s' object",
                 Py_TYPE(self)->tp_name);
    return NULL;
}

static PyObject *
Stream_get_device(PyObject *self, void *Py_UNUSED(c))
{
    return Py_NewRef(((td_stream *)self)->device);
}

/* The backend does not tell the type: the Metal backend serves MPS or an
 * accelerator with MPS's record, the device backend any accelerator. */
static PyObject *
Stream_get_device_type(PyObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromLong(td_device_type_code(((td_stream *)self)->device));
}

static PyObject *
Stream_get_zero(PyObject *Py_UNUSED(self), void *Py_UNUSED(c))
{
    return PyLong_FromLong(0);
}

static PyObject *
Stream_get_stream_id(PyObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromLongLong(((td_stream *)self)->stream_id);
}

static PyObject *
Stream_get_priority(PyObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromLong(((td_stream *)self)->priority);
}

static PyObject *
Stream_get_backend(PyObject *self, void *Py_UNUSED(c))
{
    return PyUnicode_FromString(((td_stream *)self)->backend->name);
}

static int
has_stream_layout(PyTypeObject *t)
{
    for (; t != NULL; t = t->tp_base) {
        if (t->tp_dealloc == Stream_dealloc) {
            return 1;
        }
    }
    return 0;
}

static PyObject *
Stream_richcompare(PyObject *self, PyObject *other, int op)
{
    if ((op != Py_EQ && op != Py_NE) || !has_stream_layout(Py_TYPE(other))) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    td_stream *a = (td_stream *)self, *b = (td_stream *)other;
    int same = a->stream_id == b->stream_id && a->external == b->external
               && a->backend == b->backend;
    return PyBool_FromLong(op == Py_EQ ? same : !same);
}

static Py_hash_t
Stream_hash(PyObject *self)
{
    td_stream *s = (td_stream *)self;
    Py_uhash_t h = (Py_uhash_t)s->stream_id * 1000003U;
    h ^= ((Py_uhash_t)s->backend->id << 1) | (Py_uhash_t)s->external;
    return h == (Py_uhash_t)-1 ? -2 : (Py_hash_t)h;
}

static PyObject *
Stream_repr(PyObject *self)
{
    td_stream *s = (td_stream *)self;
    const char *api = s->backend->id == TD_BACKEND_CUDA ? "torch.mps"
                                                         : "torch.cuda";
    return PyUnicode_FromFormat(
        "<%s.%s device=%S stream_id=%lld (TorchDevice, %s backend)>", api,
        s->external ? "ExternalStream" : "Stream", s->device,
        (long long)s->stream_id, s->backend->name);
}

#define METHOD_FAST(name, func, doc)                                        \
    {name, (PyCFunction)(void (*)(void))(func),                             \
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS, doc}

static PyMethodDef Stream_methods[] = {
    {"query", Stream_query, METH_NOARGS,
     "query() -> bool\n\nWhether all work submitted to the stream is done."},
    {"synchronize", Stream_synchronize, METH_NOARGS,
     "synchronize()\n\nWaits for all work submitted to the stream."},
    METHOD_FAST("wait_event", Stream_wait_event,
                "wait_event(event)\n\nFuture work on this stream waits for "
                "event."),
    METHOD_FAST("wait_stream", Stream_wait_stream,
                "wait_stream(stream)\n\nFuture work on this stream waits for "
                "the work submitted to stream so far."),
    METHOD_FAST("record_event", Stream_record_event,
                "record_event(event=None) -> Event\n\nRecords event (a new "
                "one when None) on this stream."),
    METHOD_FAST("__enter__", Stream_enter, NULL),
    METHOD_FAST("__exit__", Stream_exit, NULL),
    {"priority_range", Stream_priority_range, METH_NOARGS | METH_STATIC,
     "priority_range() -> (lowest, highest)"},
    {"__reduce__", td_not_picklable, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Stream_getset[] = {
    {"device", Stream_get_device, NULL,
     "The device the stream's work runs on.", NULL},
    {"device_type", Stream_get_device_type, NULL,
     "c10 DeviceType of that device.", NULL},
    {"device_index", Stream_get_zero, NULL, NULL, NULL},
    {"stream_id", Stream_get_stream_id, NULL, NULL, NULL},
    {"cuda_stream", Stream_get_stream_id, NULL,
     "An opaque identifier (no cudaStream_t exists).", NULL},
    {"native_handle", Stream_get_stream_id, NULL, NULL, NULL},
    {"priority", Stream_get_priority, NULL, NULL, NULL},
    {"_td_backend", Stream_get_backend, NULL,
     "TorchDevice backend: 'cpu', 'metal', 'cuda' or 'device'.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Stream_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(td_stream, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(Stream_doc,
"Stream(device=None, priority=0)\n\n"
"torch.cuda.Stream emulated by TorchDevice on the device that is present\n"
"(CPU: work is synchronous; MPS: Metal's one command queue).  Ordering,\n"
"waits, events and per-thread current streams behave as CUDA's do.");

static PyType_Slot stream_slots[] = {
    {Py_tp_new, (void *)Stream_new},
    {Py_tp_dealloc, (void *)Stream_dealloc},
    {Py_tp_traverse, (void *)Stream_traverse},
    {Py_tp_clear, (void *)Stream_clear},
    {Py_tp_repr, (void *)Stream_repr},
    {Py_tp_hash, (void *)Stream_hash},
    {Py_tp_richcompare, (void *)Stream_richcompare},
    {Py_tp_methods, Stream_methods},
    {Py_tp_getset, Stream_getset},
    {Py_tp_members, Stream_members},
    {Py_tp_doc, (void *)Stream_doc},
    {0, NULL},
};

PyType_Spec td_stream_spec = {
    .name = "TorchDevice._tdcore.Stream",
    .basicsize = sizeof(td_stream),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE
              | Py_TPFLAGS_IMMUTABLETYPE),
    .slots = stream_slots,
};

PyDoc_STRVAR(ExternalStream_doc,
"ExternalStream(stream_ptr, device=None)\n\n"
"torch.cuda.ExternalStream emulated by TorchDevice: stream_ptr only names\n"
"the stream (equal pointers give equal streams); no foreign queue exists.");

static PyType_Slot external_slots[] = {
    {Py_tp_new, (void *)ExternalStream_new},
    {Py_tp_dealloc, (void *)Stream_dealloc},
    {Py_tp_traverse, (void *)Stream_traverse},
    {Py_tp_clear, (void *)Stream_clear},
    {Py_tp_doc, (void *)ExternalStream_doc},
    {0, NULL},
};

PyType_Spec td_external_stream_spec = {
    .name = "TorchDevice._tdcore.ExternalStream",
    .basicsize = 0,
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE
              | Py_TPFLAGS_IMMUTABLETYPE),
    .slots = external_slots,
};

/* ---- StreamContext --------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *stream;   /* strong; NULL for stream(None) */
    PyObject *prev;     /* strong while entered */
} td_stream_context;

PyObject *
td_stream_context_new(td_streams *ss, PyObject *stream)
{
    if (stream != Py_None && !td_stream_check(ss, stream)) {
        /* torch.cuda.StreamContext fails on stream.device: AttributeError */
        PyErr_Format(PyExc_AttributeError,
                     "torch.cuda.stream(): expected a torch.cuda.Stream or "
                     "None, got '%.100s' (which has no attribute 'device')",
                     Py_TYPE(stream)->tp_name);
        return NULL;
    }
    PyTypeObject *tp = ss->context_type;
    td_stream_context *c = (td_stream_context *)tp->tp_alloc(tp, 0);
    if (c == NULL) {
        return NULL;
    }
    c->stream = stream == Py_None ? NULL : Py_NewRef(stream);
    return (PyObject *)c;
}

static PyObject *
StreamContext_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"stream", NULL};
    PyObject *stream;
    td_streams *ss = td_streams_of_type(type, StreamContext_dealloc);
    if (ss == NULL
        || !PyArg_ParseTupleAndKeywords(args, kwargs, "O:StreamContext",
                                        kwlist, &stream))
    {
        return NULL;
    }
    if (type == ss->context_type) {
        return td_stream_context_new(ss, stream);
    }
    /* A subclass: same checks, its own type. */
    PyObject *probe = td_stream_context_new(ss, stream);
    if (probe == NULL) {
        return NULL;
    }
    Py_DECREF(probe);
    td_stream_context *c = (td_stream_context *)type->tp_alloc(type, 0);
    if (c != NULL) {
        c->stream = stream == Py_None ? NULL : Py_NewRef(stream);
    }
    return (PyObject *)c;
}

static PyObject *
StreamContext_enter(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                    Py_ssize_t nargs, PyObject *kwnames)
{
    td_stream_context *c = (td_stream_context *)self;
    static const td_args_spec spec = {"__enter__", NULL, 0, 0, 0};
    td_streams *ss = td_streams_of_class(cls);
    if (ss == NULL || td_args_parse(&spec, args, nargs, kwnames, NULL) < 0)
    {
        return NULL;
    }
    if (c->stream == NULL) {
        Py_RETURN_NONE;
    }
    int b = ((td_stream *)c->stream)->backend->id;
    PyObject *prev = td_current_stream(ss, b);   /* borrowed */
    if (prev == NULL) {
        return NULL;
    }
    Py_INCREF(prev);
    if (td_set_current_stream(ss, b, c->stream) < 0) {
        Py_DECREF(prev);
        return NULL;
    }
    Py_XSETREF(c->prev, prev);
    /* torch.cuda.StreamContext.__enter__ returns None. */
    Py_RETURN_NONE;
}

static PyObject *
StreamContext_exit(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                   Py_ssize_t nargs, PyObject *Py_UNUSED(kwnames))
{
    (void)args;
    (void)nargs;
    td_stream_context *c = (td_stream_context *)self;
    td_streams *ss = td_streams_of_class(cls);
    if (ss == NULL) {
        return NULL;
    }
    if (c->stream == NULL || c->prev == NULL) {
        Py_RETURN_NONE;
    }
    PyObject *prev = c->prev;
    c->prev = NULL;
    int rc = td_set_current_stream(ss, ((td_stream *)prev)->backend->id, prev);
    Py_DECREF(prev);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
StreamContext_get_stream(PyObject *self, void *Py_UNUSED(c))
{
    td_stream_context *c = (td_stream_context *)self;
    return Py_NewRef(c->stream != NULL ? c->stream : Py_None);
}

static int
StreamContext_traverse(PyObject *self, visitproc visit, void *arg)
{
    td_stream_context *c = (td_stream_context *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(c->stream);
    Py_VISIT(c->prev);
    return 0;
}

static int
StreamContext_clear(PyObject *self)
{
    td_stream_context *c = (td_stream_context *)self;
    Py_CLEAR(c->stream);
    Py_CLEAR(c->prev);
    return 0;
}

TD_GC_DEALLOC(StreamContext_dealloc, StreamContext_clear)

static PyMethodDef StreamContext_methods[] = {
    METHOD_FAST("__enter__", StreamContext_enter, NULL),
    METHOD_FAST("__exit__", StreamContext_exit, NULL),
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef StreamContext_getset[] = {
    {"stream", StreamContext_get_stream, NULL, "The selected stream.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(StreamContext_doc,
"StreamContext(stream)\n\n"
"Makes stream the calling thread's current stream inside `with`, and puts\n"
"the previous one back on exit, also when the body raises.  A no-op for\n"
"None.");

static PyType_Slot context_slots[] = {
    {Py_tp_new, (void *)StreamContext_new},
    {Py_tp_dealloc, (void *)StreamContext_dealloc},
    {Py_tp_traverse, (void *)StreamContext_traverse},
    {Py_tp_clear, (void *)StreamContext_clear},
    {Py_tp_methods, StreamContext_methods},
    {Py_tp_getset, StreamContext_getset},
    {Py_tp_doc, (void *)StreamContext_doc},
    {0, NULL},
};

PyType_Spec td_stream_context_spec = {
    .name = "TorchDevice._tdcore.StreamContext",
    .basicsize = sizeof(td_stream_context),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE
              | Py_TPFLAGS_IMMUTABLETYPE),
    .slots = context_slots,
};
