/* The Metal backend: streams and events for profile "mps".
 *
 * torch.mps has one command queue per process and events without a stream
 * argument.  All of our streams therefore map onto that one queue: work is
 * ordered at least as strictly as CUDA orders it across streams, so every
 * wait CUDA code asks for already holds, and the backend only has to record
 * torch.mps events and wait for them.  The torch.mps objects are handed over
 * from Python (streams_setup(metal_ops=...)); tests hand over a simulated
 * torch.mps instead, since no Apple hardware is available to us.
 */
#include "streams.h"

#ifdef _WIN32
#include <windows.h>
#else
#include <time.h>
#endif

PyObject *
td_ops_call(PyObject *ops, int index, PyObject *a, PyObject *b)
{
    PyObject *args[2] = {a, b};
    size_t n = a == NULL ? 0 : (b == NULL ? 1 : 2);
    return PyObject_Vectorcall(PyTuple_GET_ITEM(ops, index), args, n, NULL);
}

int
td_ops_do(PyObject *ops, int index, PyObject *a, PyObject *b)
{
    PyObject *r = td_ops_call(ops, index, a, b);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int
ops_truth(PyObject *ops, int index, PyObject *a)
{
    PyObject *r = td_ops_call(ops, index, a, NULL);
    if (r == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(r);
    Py_DECREF(r);
    return truth;
}

static int
metal_event_create(td_event *ev)
{
    /* torch.mps.Event(enable_timing): its only argument. */
    PyObject *timing = ev->enable_timing ? Py_True : Py_False;
    ev->handle = td_ops_call(ev->ops, TD_OPS_EVENT, timing, NULL);
    return ev->handle == NULL ? -1 : 0;
}

static int
metal_event_record(td_event *ev, td_stream *Py_UNUSED(s),
                   PyObject *Py_UNUSED(foreign))
{
    return td_ops_do(ev->ops, TD_OPS_RECORD, ev->handle, NULL);
}

static int
metal_event_wait(td_event *ev, td_stream *Py_UNUSED(s),
                 PyObject *Py_UNUSED(foreign))
{
    /* As in CUDA, waiting for an event never recorded waits for nothing. */
    if (!ev->recorded) {
        return 0;
    }
    return td_ops_do(ev->ops, TD_OPS_WAIT, ev->handle, NULL);
}

static int
metal_event_query(td_event *ev)
{
    if (!ev->recorded) {
        return 1;
    }
    return ops_truth(ev->ops, TD_OPS_QUERY, ev->handle);
}

static int
metal_event_synchronize(td_event *ev)
{
    if (!ev->recorded) {
        return 0;
    }
    return td_ops_do(ev->ops, TD_OPS_EV_SYNCHRONIZE, ev->handle, NULL);
}

int
td_ops_elapsed_ms(td_event *start, td_event *end, double *ms)
{
    /* CUDA raises while `end` is pending; MPS-era code and CUDA code alike
     * expect a number here, so wait for it instead. */
    if (td_ops_do(end->ops, TD_OPS_EV_SYNCHRONIZE, end->handle, NULL) < 0) {
        return -1;
    }
    PyObject *r = td_ops_call(start->ops, TD_OPS_ELAPSED, start->handle,
                              end->handle);
    if (r == NULL) {
        return -1;
    }
    *ms = PyFloat_AsDouble(r);
    Py_DECREF(r);
    return (*ms == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int
metal_event_elapsed_ms(td_event *start, td_event *end, double *ms)
{
    return td_ops_elapsed_ms(start, end, ms);
}

/* Sleeps without the GIL, so that whatever completes events (a Python
 * thread too, in tests) can run. */
static void
pause_us(long us)
{
    Py_BEGIN_ALLOW_THREADS
#ifdef _WIN32
    Sleep((DWORD)(us / 1000 > 0 ? us / 1000 : 0));
#else
    struct timespec ts = {0, us * 1000L};
    nanosleep(&ts, NULL);
#endif
    Py_END_ALLOW_THREADS
}

/* A stream is idle when a marker recorded now on it has passed.  The
 * marker itself needs a moment to go through an idle queue (tens of
 * microseconds on a GPU), so it gets up to TD_MARKER_GRACE_US before the
 * answer is "busy"; otherwise a polling loop, which records a fresh marker
 * each time, would never see True. */
#define TD_MARKER_GRACE_US 2000
#define TD_MARKER_POLL_US 50

int
td_marker_idle(PyObject *ops, PyObject *event_arg)
{
    PyObject *marker = td_ops_call(ops, TD_OPS_EVENT, event_arg, NULL);
    if (marker == NULL) {
        return -1;
    }
    int truth = -1;
    if (td_ops_do(ops, TD_OPS_RECORD, marker, NULL) == 0) {
        for (long waited = 0;; waited += TD_MARKER_POLL_US) {
            truth = ops_truth(ops, TD_OPS_QUERY, marker);
            if (truth != 0 || waited >= TD_MARKER_GRACE_US) {
                break;
            }
            pause_us(TD_MARKER_POLL_US);
        }
    }
    Py_DECREF(marker);
    return truth;
}

static int
metal_stream_query(td_stream *s)
{
    /* torch.mps.Event(enable_timing=False) */
    return td_marker_idle(s->ops, Py_False);
}

static int
metal_device_synchronize(PyObject *ops)
{
    return td_ops_do(ops, TD_OPS_SYNCHRONIZE, NULL, NULL);
}

static int
metal_stream_synchronize(td_stream *s)
{
    return metal_device_synchronize(s->ops);
}

const td_backend td_backend_metal = {
    .id = TD_BACKEND_METAL,
    .name = "metal",
    .accepts_foreign = TD_FOREIGN_NONE,
    .event_create = metal_event_create,
    .event_record = metal_event_record,
    .event_wait = metal_event_wait,
    .event_query = metal_event_query,
    .event_synchronize = metal_event_synchronize,
    .event_elapsed_ms = metal_event_elapsed_ms,
    .stream_query = metal_stream_query,
    .stream_synchronize = metal_stream_synchronize,
    .device_synchronize = metal_device_synchronize,
};
