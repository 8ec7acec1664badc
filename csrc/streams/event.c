/* torch.cuda.Event where no CUDA device is present, and torch.mps.Event on
 * profile cuda: one type, three backends (backend_*.c).
 *
 * Python equivalent:
 *
 *     class Event:
 *         def __new__(cls, enable_timing=False, blocking=False,
 *                     interprocess=False, external=False): ...
 *         def record(self, stream=None):
 *             backend.record(self, stream or current_stream())
 *         def wait(self, stream=None):
 *             backend.wait(self, stream or current_stream())
 *         def query(self): return backend.query(self)
 *         def synchronize(self): backend.synchronize(self)
 *         def elapsed_time(self, end):   # milliseconds
 *             check both recorded and both timed, as CUDA does
 *             return backend.elapsed_ms(self, end)
 *
 * An event is used from one thread at a time, as in CUDA; record() and the
 * flag it sets run with the GIL held.
 */
#include "streams.h"

#include <stdio.h>

#include "core/fields.h"

#include <structmember.h>

static _Atomic int64_t next_event_id = 1;

static void Event_dealloc(PyObject *self);

int
td_event_check(td_streams *ss, PyObject *obj)
{
    return PyObject_TypeCheck(obj, ss->event_type);
}

PyObject *
td_event_new_with(PyTypeObject *type, const td_backend *backend,
                  PyObject *device, PyObject *ops, int enable_timing,
                  int blocking, int interprocess, int external)
{
    td_event *ev = (td_event *)type->tp_alloc(type, 0);
    if (ev == NULL) {
        return NULL;
    }
    ev->backend = backend;
    ev->device = Py_NewRef(device);
    ev->ops = Py_XNewRef(ops);
    ev->event_id = atomic_fetch_add(&next_event_id, 1);
    ev->enable_timing = enable_timing;
    ev->blocking = blocking;
    ev->interprocess = interprocess;
    ev->external = external;
    if (ev->backend->event_create(ev) < 0) {
        Py_DECREF(ev);
        return NULL;
    }
    return (PyObject *)ev;
}

PyObject *
td_event_new(td_backends *bk, PyTypeObject *type, int backend,
             int enable_timing, int blocking, int interprocess, int external)
{
    if (bk->device[backend] == NULL
        || (backend != TD_BACKEND_CPU && bk->ops[backend] == NULL))
    {
        PyErr_Format(PyExc_RuntimeError,
                     "TorchDevice events: the %s backend is not set up",
                     td_backend_of(backend)->name);
        return NULL;
    }
    return td_event_new_with(type, td_backend_of(backend),
                             bk->device[backend], bk->ops[backend],
                             enable_timing, blocking, interprocess, external);
}

static int
foreign_accepted(td_foreign rule, PyObject *stream)
{
    if (rule == TD_FOREIGN_TORCH_STREAM) {
        /* torch.Stream as hooked; unknown (torch without it, or after
         * disable()) leaves the check to torch. */
        PyTypeObject *generic = td_slot_type(TD_SLOT_STREAM);
        return generic == NULL || PyObject_TypeCheck(stream, generic);
    }
    return rule == TD_FOREIGN_ANY;
}

/* Splits a stream argument into ours (s) or a native one the backend may
 * accept (foreign); None means the calling thread's current stream.  *held
 * gets a new reference to the stream: the backend runs Python code, which
 * could replace the thread's current stream while it is in use. */
static int
stream_arg(td_streams *ss, td_event *ev, PyObject *stream, const char *fname,
           td_stream **s, PyObject **foreign, PyObject **held)
{
    *s = NULL;
    *foreign = NULL;
    *held = NULL;
    if (stream == NULL || stream == Py_None) {
        stream = td_current_stream(ss, ev->backend->id);   /* borrowed */
        if (stream == NULL) {
            return -1;
        }
    }
    if (td_stream_check(ss, stream)) {
        *s = (td_stream *)stream;
        if ((*s)->backend != ev->backend) {
            PyErr_Format(PyExc_RuntimeError,
                         "%s(): the event belongs to the %s backend and the "
                         "stream to the %s backend", fname, ev->backend->name,
                         (*s)->backend->name);
            return -1;
        }
        *held = Py_NewRef(stream);
        return 0;
    }
    if (foreign_accepted(ev->backend->accepts_foreign, stream)) {
        *foreign = stream;
        *held = Py_NewRef(stream);
        return 0;
    }
    PyErr_Format(PyExc_TypeError,
                 "%s(): argument 'stream' must be torch.cuda.Stream%s or "
                 "None, not %.100s", fname,
                 ev->backend->accepts_foreign == TD_FOREIGN_TORCH_STREAM
                 ? ", torch.Stream" : "", Py_TYPE(stream)->tp_name);
    return -1;
}

int
td_event_record(td_streams *ss, td_event *ev, PyObject *stream)
{
    td_stream *s;
    PyObject *foreign, *held;
    if (stream_arg(ss, ev, stream, "record", &s, &foreign, &held) < 0) {
        return -1;
    }
    int rc = ev->backend->event_record(ev, s, foreign);
    Py_DECREF(held);
    if (rc == 0) {
        ev->recorded = 1;
    }
    return rc;
}

int
td_event_wait(td_streams *ss, td_event *ev, PyObject *stream)
{
    td_stream *s;
    PyObject *foreign, *held;
    if (stream_arg(ss, ev, stream, "wait", &s, &foreign, &held) < 0) {
        return -1;
    }
    int rc = ev->backend->event_wait(ev, s, foreign);
    Py_DECREF(held);
    return rc;
}

/* ---- the type --------------------------------------------------------------- */

static PyObject *
Event_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"enable_timing", "blocking", "interprocess",
                             "external", NULL};
    int timing = 0, blocking = 0, interprocess = 0, external = 0;
    td_streams *ss = td_streams_of_type(type, Event_dealloc);
    if (ss == NULL
        || !PyArg_ParseTupleAndKeywords(args, kwargs, "|pppp:Event", kwlist,
                                        &timing, &blocking, &interprocess,
                                        &external))
    {
        return NULL;
    }
    /* Held for the call: the report runs Python code before the event is
     * made from the installation's objects. */
    td_install *st = td_install_acquire();
    PyObject *result = NULL;
    int b = td_streams_active(st);
    /* torch.mps.Event is its own subclass only so that the report names
     * what the program called. */
    int mps = PyType_IsSubtype(type, ss->mps_event_type);
    if (b >= 0
        && td_streams_report_as(st, mps ? ss->api_mps_event
                                        : ss->api_event[b],
                                mps ? ss->req_mps : ss->req_name[b], b) == 0)
    {
        result = td_event_new(TD_BACKENDS(st), type, b, timing, blocking,
                              interprocess, external);
    }
    Py_XDECREF(st);
    return result;
}

static int
Event_traverse(PyObject *self, visitproc visit, void *arg)
{
    td_event *ev = (td_event *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(ev->device);
    Py_VISIT(ev->ops);
    Py_VISIT(ev->handle);
    return 0;
}

static int
Event_clear(PyObject *self)
{
    td_event *ev = (td_event *)self;
    Py_CLEAR(ev->device);
    Py_CLEAR(ev->ops);
    Py_CLEAR(ev->handle);
    return 0;
}

TD_GC_DEALLOC_WEAKREF(Event_dealloc, td_event, Event_clear)

static const char *const kw_stream[] = {"stream"};

static PyObject *
Event_record(PyObject *self, PyTypeObject *cls, PyObject *const *args,
             Py_ssize_t nargs, PyObject *kwnames)
{
    static const td_args_spec spec = {"record", kw_stream, 1, 0, 1};
    td_streams *ss = td_streams_of_class(cls);
    PyObject *stream;
    if (ss == NULL || td_args_parse(&spec, args, nargs, kwnames, &stream) < 0
        || td_event_record(ss, (td_event *)self, stream) < 0)
    {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Event_wait(PyObject *self, PyTypeObject *cls, PyObject *const *args,
           Py_ssize_t nargs, PyObject *kwnames)
{
    static const td_args_spec spec = {"wait", kw_stream, 1, 0, 1};
    td_streams *ss = td_streams_of_class(cls);
    PyObject *stream;
    if (ss == NULL || td_args_parse(&spec, args, nargs, kwnames, &stream) < 0
        || td_event_wait(ss, (td_event *)self, stream) < 0)
    {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Event_query(PyObject *self, PyObject *Py_UNUSED(a))
{
    td_event *ev = (td_event *)self;
    int done = ev->backend->event_query(ev);
    return done < 0 ? NULL : PyBool_FromLong(done);
}

static PyObject *
Event_synchronize(PyObject *self, PyObject *Py_UNUSED(a))
{
    td_event *ev = (td_event *)self;
    if (ev->backend->event_synchronize(ev) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Event_elapsed_time(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const kw[] = {"end_event"};
    static const td_args_spec spec = {"elapsed_time", kw, 1, 1, 1};
    td_streams *ss = td_streams_of_class(cls);
    PyObject *end_obj;
    if (ss == NULL || td_args_parse(&spec, args, nargs, kwnames, &end_obj) < 0)
    {
        return NULL;
    }
    if (!td_event_check(ss, end_obj)) {
        PyErr_Format(PyExc_TypeError,
                     "elapsed_time(): argument 'end_event' must be "
                     "torch.cuda.Event, not %.100s",
                     Py_TYPE(end_obj)->tp_name);
        return NULL;
    }
    td_event *start = (td_event *)self, *end = (td_event *)end_obj;
    /* The checks and messages of c10's CUDAEvent::elapsed_time. */
    if (!start->enable_timing || !end->enable_timing) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Both events must be created with argument "
                        "'enable_timing=True'.");
        return NULL;
    }
    if (!start->recorded || !end->recorded) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Both events must be recorded before calculating "
                        "elapsed time.");
        return NULL;
    }
    if (start->backend != end->backend) {
        PyErr_Format(PyExc_RuntimeError,
                     "elapsed_time(): the events belong to different "
                     "backends (%s and %s)", start->backend->name,
                     end->backend->name);
        return NULL;
    }
    double ms;
    if (start->backend->event_elapsed_ms(start, end, &ms) < 0) {
        return NULL;
    }
    return PyFloat_FromDouble(ms);
}

static PyObject *
no_ipc(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(a))
{
    PyErr_SetString(PyExc_RuntimeError,
                    "torch.cuda.Event IPC (ipc_handle / from_ipc_handle) "
                    "cannot be emulated by TorchDevice: no CUDA device is "
                    "present to share the event with another process");
    return NULL;
}

static PyObject *
Event_from_ipc_handle(PyObject *cls, PyObject *args, PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    return no_ipc(cls, NULL);
}

static PyObject *
Event_get_device(PyObject *self, void *Py_UNUSED(c))
{
    /* As in torch: no device until the event has been recorded. */
    td_event *ev = (td_event *)self;
    return Py_NewRef(ev->recorded ? ev->device : Py_None);
}

static PyObject *
Event_get_handle_id(PyObject *self, void *Py_UNUSED(c))
{
    td_event *ev = (td_event *)self;
    return PyLong_FromLongLong(ev->recorded ? ev->event_id : 0);
}

static PyObject *
Event_get_backend(PyObject *self, void *Py_UNUSED(c))
{
    return PyUnicode_FromString(((td_event *)self)->backend->name);
}

static PyObject *
Event_get_native(PyObject *self, void *Py_UNUSED(c))
{
    td_event *ev = (td_event *)self;
    return Py_NewRef(ev->handle != NULL ? ev->handle : Py_None);
}

static PyObject *
Event_repr(PyObject *self)
{
    td_event *ev = (td_event *)self;
    const char *api = ev->backend->id == TD_BACKEND_CUDA ? "torch.mps"
                                                          : "torch.cuda";
    if (!ev->recorded) {
        return PyUnicode_FromFormat(
            "<%s.Event uninitialized (TorchDevice, %s backend)>", api,
            ev->backend->name);
    }
    /* PyUnicode_FromFormat has no hexadecimal of a 64-bit value before
     * Python 3.12 (it copied the rest of the format verbatim). */
    char id[2 + 16 + 1];
    int n = snprintf(id, sizeof(id), "%#llx",
                     (unsigned long long)ev->event_id);
    if (n < 0 || (size_t)n >= sizeof(id)) {
        PyErr_SetString(PyExc_SystemError, "event id does not fit its repr");
        return NULL;
    }
    return PyUnicode_FromFormat("<%s.Event %s (TorchDevice, %s backend)>",
                                api, id, ev->backend->name);
}

#define METHOD_FAST(name, func, doc)                                        \
    {name, (PyCFunction)(void (*)(void))(func),                             \
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS, doc}

static PyMethodDef Event_methods[] = {
    METHOD_FAST("record", Event_record,
                "record(stream=None)\n\nRecords the event on stream (the "
                "current stream when None)."),
    METHOD_FAST("wait", Event_wait,
                "wait(stream=None)\n\nFuture work on stream waits for the "
                "event."),
    {"query", Event_query, METH_NOARGS,
     "query() -> bool\n\nWhether the work the event captured is done."},
    {"synchronize", Event_synchronize, METH_NOARGS,
     "synchronize()\n\nWaits for the work the event captured."},
    METHOD_FAST("elapsed_time", Event_elapsed_time,
                "elapsed_time(end_event) -> float\n\nMilliseconds between "
                "this event and end_event."),
    {"ipc_handle", no_ipc, METH_NOARGS, "Not available under emulation."},
    {"from_ipc_handle", (PyCFunction)(void (*)(void))Event_from_ipc_handle,
     METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "Not available under emulation."},
    {"__reduce__", td_not_picklable, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Event_getset[] = {
    {"device", Event_get_device, NULL,
     "The device the event was recorded on; None before record().", NULL},
    {"cuda_event", Event_get_handle_id, NULL,
     "An opaque identifier once recorded, 0 before (no cudaEvent_t).", NULL},
    {"event_id", Event_get_handle_id, NULL, NULL, NULL},
    {"_td_backend", Event_get_backend, NULL,
     "TorchDevice backend: 'cpu', 'metal', 'cuda' or 'device'.", NULL},
    {"_td_native", Event_get_native, NULL,
     "The wrapped torch.mps.Event / torch.cuda.Event, or None (CPU).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Event_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(td_event, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyDoc_STRVAR(Event_doc,
"Event(enable_timing=False, blocking=False, interprocess=False,\n"
"      external=False)\n\n"
"torch.cuda.Event emulated by TorchDevice on the device that is present\n"
"(CPU: host monotonic clock at record(); MPS: torch.mps.Event), and\n"
"torch.mps.Event on NVIDIA (a native torch.cuda.Event underneath).");

static PyType_Slot event_slots[] = {
    {Py_tp_new, (void *)Event_new},
    {Py_tp_dealloc, (void *)Event_dealloc},
    {Py_tp_traverse, (void *)Event_traverse},
    {Py_tp_clear, (void *)Event_clear},
    {Py_tp_repr, (void *)Event_repr},
    {Py_tp_methods, Event_methods},
    {Py_tp_getset, Event_getset},
    {Py_tp_members, Event_members},
    {Py_tp_doc, (void *)Event_doc},
    {0, NULL},
};

PyType_Spec td_event_spec = {
    .name = "TorchDevice._tdcore.Event",
    .basicsize = sizeof(td_event),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE
              | Py_TPFLAGS_IMMUTABLETYPE),
    .slots = event_slots,
};

PyDoc_STRVAR(MpsEvent_doc,
"MpsEvent(enable_timing=False, blocking=False, interprocess=False,\n"
"         external=False)\n\n"
"torch.mps.Event wherever TorchDevice replaces it: an Event whose report\n"
"rows name torch.mps.Event and the \"mps\" the program asked for.");

static PyType_Slot mps_event_slots[] = {
    {Py_tp_dealloc, (void *)Event_dealloc},
    {Py_tp_traverse, (void *)Event_traverse},
    {Py_tp_clear, (void *)Event_clear},
    {Py_tp_doc, (void *)MpsEvent_doc},
    {0, NULL},
};

PyType_Spec td_mps_event_spec = {
    .name = "TorchDevice._tdcore.MpsEvent",
    .basicsize = 0,
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE
              | Py_TPFLAGS_IMMUTABLETYPE),
    .slots = mps_event_slots,
};
