/* Counters in memory shared between processes.
 *
 * A device tensor sent to another process where torch cannot share the
 * device's memory travels through a host copy in shared memory, and both
 * sides keep their device memory in step with it at each message
 * (TorchDevice/_multiprocessing.py).  Two counters sit beside each copy:
 * its generation and how many processes hold it.  Processes add to them at
 * the same moments (workers started together receive the same tensor), and
 * an increment lost to a race would make a sender stop writing to a copy
 * that a receiver still reads.  Python has no atomic add on shared memory;
 * this is one, on an int64 of a writable buffer (a numpy view of the
 * shared tensor).
 */
#include "tdcore.h"

#include <stdatomic.h>
#include <stdint.h>

/* shared_add(buffer, index, delta) -> int: adds `delta` to the int64 at
 * `index` of `buffer` atomically and returns the new value. */
static PyObject *
shared_add(PyObject *Py_UNUSED(module), PyObject *const *args,
           Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"buffer", "index", "delta"};
    static const td_args_spec spec = {"shared_add", names, 3, 3, 3};
    PyObject *a[3];
    if (td_args_parse(&spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    Py_ssize_t index = PyNumber_AsSsize_t(a[1], PyExc_IndexError);
    if (index == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long long delta = PyLong_AsLongLong(a[2]);
    if (delta == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(a[0], &view, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t offset = index * (Py_ssize_t)sizeof(int64_t);
    if (index < 0 || offset + (Py_ssize_t)sizeof(int64_t) > view.len) {
        PyErr_SetString(PyExc_IndexError, "shared_add: index out of range");
        goto done;
    }
    char *where = (char *)view.buf + offset;
    if ((uintptr_t)where % _Alignof(int64_t) != 0) {
        PyErr_SetString(PyExc_ValueError,
                        "shared_add: the counter is not aligned");
        goto done;
    }
    /* Lock-free on every platform CPython supports for 64-bit integers, so
     * the same instruction works across processes mapping this memory. */
    _Atomic int64_t *counter = (_Atomic int64_t *)(void *)where;
    int64_t now = atomic_fetch_add(counter, (int64_t)delta) + (int64_t)delta;
    result = PyLong_FromLongLong((long long)now);
done:
    PyBuffer_Release(&view);
    return result;
}

PyMethodDef td_shared_methods[] = {
    {"shared_add", TD_FASTKW(shared_add),
     "shared_add(buffer, index, delta) -> int\n\nAdds delta to the int64 "
     "at index of a writable buffer atomically (the buffer may be memory "
     "shared between processes) and returns the new value."},
    {NULL, NULL, 0, NULL},
};
