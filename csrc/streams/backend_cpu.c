/* The CPU backend: streams and events for profile "cpu".
 *
 * Every torch operation on the CPU has finished when it returns, so a stream
 * is already ordered and complete whenever Python can look at it: waits and
 * synchronizations have nothing to wait for, queries are always true, and
 * the time of an event is the host's monotonic clock when record() ran,
 * which is the moment all the work recorded before it was complete.
 */
#include "streams.h"

#ifdef _WIN32
#include <windows.h>
#else
#include <time.h>
#endif

/* Nanoseconds of a clock that never jumps (the one time.perf_counter and
 * time.monotonic read on Linux and macOS). */
static int
monotonic_ns(int64_t *out)
{
#ifdef _WIN32
    LARGE_INTEGER freq, now;
    if (!QueryPerformanceFrequency(&freq) || !QueryPerformanceCounter(&now)) {
        PyErr_SetFromWindowsErr(0);
        return -1;
    }
    *out = (int64_t)((double)now.QuadPart * 1e9 / (double)freq.QuadPart);
#else
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    *out = (int64_t)ts.tv_sec * 1000000000 + (int64_t)ts.tv_nsec;
#endif
    return 0;
}

static int
cpu_event_create(td_event *Py_UNUSED(ev))
{
    return 0;
}

static int
cpu_event_record(td_event *ev, td_stream *Py_UNUSED(s),
                 PyObject *Py_UNUSED(foreign))
{
    return monotonic_ns(&ev->host_ns);
}

static int
cpu_nothing_to_wait(td_event *Py_UNUSED(ev), td_stream *Py_UNUSED(s),
                    PyObject *Py_UNUSED(foreign))
{
    return 0;
}

static int
cpu_event_query(td_event *Py_UNUSED(ev))
{
    return 1;
}

static int
cpu_event_synchronize(td_event *Py_UNUSED(ev))
{
    return 0;
}

static int
cpu_event_elapsed_ms(td_event *start, td_event *end, double *ms)
{
    *ms = (double)(end->host_ns - start->host_ns) / 1e6;
    return 0;
}

static int
cpu_stream_query(td_stream *Py_UNUSED(s))
{
    return 1;
}

static int
cpu_stream_synchronize(td_stream *Py_UNUSED(s))
{
    return 0;
}

static int
cpu_device_synchronize(PyObject *Py_UNUSED(ops))
{
    return 0;
}

const td_backend td_backend_cpu = {
    .id = TD_BACKEND_CPU,
    .name = "cpu",
    .accepts_foreign = TD_FOREIGN_NONE,
    .event_create = cpu_event_create,
    .event_record = cpu_event_record,
    .event_wait = cpu_nothing_to_wait,
    .event_query = cpu_event_query,
    .event_synchronize = cpu_event_synchronize,
    .event_elapsed_ms = cpu_event_elapsed_ms,
    .stream_query = cpu_stream_query,
    .stream_synchronize = cpu_stream_synchronize,
    .device_synchronize = cpu_device_synchronize,
};
