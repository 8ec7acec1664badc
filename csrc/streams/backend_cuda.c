/* The CUDA backend: events for MPS-written code on profile "cuda"; and the
 * device backend, the same code over the generic accelerator's native
 * torch.Event (profile accelerator, docs/streams.md).
 *
 * Each of our events wraps a native torch.cuda.Event, so record, wait and
 * elapsed_time are the GPU's own.  torch.mps events take no stream; when a
 * stream is given anyway it may be one of ours (its native stream, if any, is
 * used) or a native torch.cuda.Stream / torch.Stream, passed through as is.
 * Without one, torch.cuda's current stream is used, as torch.cuda.Event
 * does.  The torch.cuda objects are handed over by streams_setup(cuda_ops=),
 * the accelerator's by streams_setup(device_ops=): an event factory taking
 * CUDA's keywords, torch.Event's methods, the device's synchronize.
 */
#include "streams.h"

static int
cuda_event_create(td_event *ev)
{
    PyObject *kwargs = Py_BuildValue(
        "{sOsOsO}", "enable_timing", ev->enable_timing ? Py_True : Py_False,
        "blocking", ev->blocking ? Py_True : Py_False, "interprocess",
        ev->interprocess ? Py_True : Py_False);
    if (kwargs == NULL) {
        return -1;
    }
    PyObject *empty = PyTuple_New(0);
    if (empty != NULL) {
        ev->handle = PyObject_Call(PyTuple_GET_ITEM(ev->ops, TD_OPS_EVENT),
                                   empty, kwargs);
        Py_DECREF(empty);
    }
    Py_DECREF(kwargs);
    return ev->handle == NULL ? -1 : 0;
}

/* The native stream to pass, borrowed; NULL for "torch's current one". */
static PyObject *
native_stream(td_stream *s, PyObject *foreign)
{
    if (foreign != NULL) {
        return foreign;
    }
    return s != NULL ? s->handle : NULL;
}

static int
cuda_event_record(td_event *ev, td_stream *s, PyObject *foreign)
{
    return td_ops_do(ev->ops, TD_OPS_RECORD, ev->handle,
                     native_stream(s, foreign));
}

static int
cuda_event_wait(td_event *ev, td_stream *s, PyObject *foreign)
{
    return td_ops_do(ev->ops, TD_OPS_WAIT, ev->handle,
                     native_stream(s, foreign));
}

static int
cuda_event_query(td_event *ev)
{
    PyObject *r = td_ops_call(ev->ops, TD_OPS_QUERY, ev->handle, NULL);
    if (r == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(r);
    Py_DECREF(r);
    return truth;
}

static int
cuda_event_synchronize(td_event *ev)
{
    return td_ops_do(ev->ops, TD_OPS_EV_SYNCHRONIZE, ev->handle, NULL);
}

static int
cuda_event_elapsed_ms(td_event *start, td_event *end, double *ms)
{
    /* torch.mps.Event.elapsed_time waits for the end event; CUDA's raises
     * "device not ready" instead.  MPS code expects the former. */
    return td_ops_elapsed_ms(start, end, ms);
}

static int
cuda_stream_query(td_stream *s)
{
    if (s->handle != NULL) {
        PyObject *r = PyObject_CallMethod(s->handle, "query", NULL);
        if (r == NULL) {
            return -1;
        }
        int truth = PyObject_IsTrue(r);
        Py_DECREF(r);
        return truth;
    }
    /* No native stream of its own: ask a marker on the current stream. */
    return td_marker_idle(s->ops, NULL);
}

static int
cuda_device_synchronize(PyObject *ops)
{
    return td_ops_do(ops, TD_OPS_SYNCHRONIZE, NULL, NULL);
}

static int
cuda_stream_synchronize(td_stream *s)
{
    if (s->handle != NULL) {
        PyObject *r = PyObject_CallMethod(s->handle, "synchronize", NULL);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    return cuda_device_synchronize(s->ops);
}

const td_backend td_backend_cuda = {
    .id = TD_BACKEND_CUDA,
    .name = "cuda",
    .accepts_foreign = TD_FOREIGN_ANY,
    .event_create = cuda_event_create,
    .event_record = cuda_event_record,
    .event_wait = cuda_event_wait,
    .event_query = cuda_event_query,
    .event_synchronize = cuda_event_synchronize,
    .event_elapsed_ms = cuda_event_elapsed_ms,
    .stream_query = cuda_stream_query,
    .stream_synchronize = cuda_stream_synchronize,
    .device_synchronize = cuda_device_synchronize,
};

/* The generic accelerator: torch.Event(device=<it>) behaves as CUDA's
 * events do (record on a stream, wait, query, elapsed_time), and streams
 * without a native one of their own use the device's current stream. */
const td_backend td_backend_device = {
    .id = TD_BACKEND_DEVICE,
    .name = "device",
    .accepts_foreign = TD_FOREIGN_TORCH_STREAM,
    .event_create = cuda_event_create,
    .event_record = cuda_event_record,
    .event_wait = cuda_event_wait,
    .event_query = cuda_event_query,
    .event_synchronize = cuda_event_synchronize,
    .event_elapsed_ms = cuda_event_elapsed_ms,
    .stream_query = cuda_stream_query,
    .stream_synchronize = cuda_stream_synchronize,
    .device_synchronize = cuda_device_synchronize,
};
