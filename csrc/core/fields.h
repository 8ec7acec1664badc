/* The boilerplate every state object of _tdcore shares (the installation,
 * the streams state, the masquerade snapshot): a run of object references
 * between two fields of its struct, visited, cleared and copied as one.
 */
#ifndef TD_FIELDS_H
#define TD_FIELDS_H

#include <Python.h>
#include <stddef.h>

/* [begin, end) in bytes: every PyObject * from field `first` to `last`. */
#define TD_FIELDS(type, first, last)                                        \
    (Py_ssize_t)offsetof(type, first),                                      \
    (Py_ssize_t)(offsetof(type, last) + sizeof(PyObject *))

static inline int
td_fields_visit(PyObject *self, Py_ssize_t begin, Py_ssize_t end,
                visitproc visit, void *arg)
{
    for (Py_ssize_t off = begin; off < end; off += sizeof(PyObject *)) {
        Py_VISIT(*(PyObject **)((char *)self + off));
    }
    return 0;
}

static inline void
td_fields_clear(PyObject *self, Py_ssize_t begin, Py_ssize_t end)
{
    for (Py_ssize_t off = begin; off < end; off += sizeof(PyObject *)) {
        Py_CLEAR(*(PyObject **)((char *)self + off));
    }
}

/* dst's fields become new references to src's (dst's must be NULL). */
static inline void
td_fields_copy(PyObject *dst, PyObject *src, Py_ssize_t begin,
               Py_ssize_t end)
{
    for (Py_ssize_t off = begin; off < end; off += sizeof(PyObject *)) {
        *(PyObject **)((char *)dst + off) =
            Py_XNewRef(*(PyObject **)((char *)src + off));
    }
}

/* The dealloc of a GC state type whose clear drops every reference. */
#define TD_GC_DEALLOC(name, clear)                                          \
    static void                                                             \
    name(PyObject *self)                                                    \
    {                                                                       \
        PyTypeObject *tp = Py_TYPE(self);                                   \
        PyObject_GC_UnTrack(self);                                          \
        (void)clear(self);                                                  \
        tp->tp_free(self);                                                  \
        Py_DECREF(tp);                                                      \
    }

/* The same for a type with a `weakreflist` field (our callables, streams
 * and events), whose weak references are cleared first. */
#define TD_GC_DEALLOC_WEAKREF(name, type, clear)                            \
    static void                                                             \
    name(PyObject *self)                                                    \
    {                                                                       \
        PyTypeObject *tp = Py_TYPE(self);                                   \
        PyObject_GC_UnTrack(self);                                          \
        if (((type *)self)->weakreflist != NULL) {                          \
            PyObject_ClearWeakRefs(self);                                   \
        }                                                                   \
        (void)clear(self);                                                  \
        tp->tp_free(self);                                                  \
        Py_DECREF(tp);                                                      \
    }

#endif /* TD_FIELDS_H */
