/* The object torch.cuda.get_device_properties() returns under the
 * masquerade: CUDA's field names, filled by the Python layer from the device
 * that is really present (CPU model, cores and RAM; Apple GPU name, cores and
 * recommended working set), read-only like torch._C._CudaDeviceProperties.
 *
 * Python equivalent:
 *
 *     class DeviceProperties:
 *         __slots__ = FIELDS
 *         def __init__(self, **fields): ...   # every field, nothing else
 *         def __repr__(self):
 *             return "_CudaDeviceProperties(name=..., major=..., ...)"
 */
#include "masquerade.h"

#include <stddef.h>
#include <structmember.h>

#define N_PROPS 23

typedef struct {
    PyObject_HEAD
    PyObject *f[N_PROPS];   /* strong, never NULL once constructed */
} td_props;

/* Index order of td_props.f; the repr relies on the first eight. */
static const char *const prop_names[N_PROPS] = {
    "name", "major", "minor", "total_memory", "multi_processor_count",
    "uuid", "L2_cache_size", "device_type",
    "is_integrated", "is_multi_gpu_board", "max_threads_per_multi_processor",
    "max_threads_per_block", "gcnArchName", "warp_size", "clock_rate",
    "memory_clock_rate", "memory_bus_width", "shared_memory_per_block",
    "shared_memory_per_block_optin", "shared_memory_per_multiprocessor",
    "regs_per_multiprocessor", "pci_bus_id", "pci_device_id",
};

#define OFF(i) \
    ((Py_ssize_t)(offsetof(td_props, f) + (i) * sizeof(PyObject *)))

static PyMemberDef props_members[N_PROPS + 1] = {
    {"name", T_OBJECT_EX, OFF(0), READONLY, NULL},
    {"major", T_OBJECT_EX, OFF(1), READONLY, NULL},
    {"minor", T_OBJECT_EX, OFF(2), READONLY, NULL},
    {"total_memory", T_OBJECT_EX, OFF(3), READONLY, NULL},
    {"multi_processor_count", T_OBJECT_EX, OFF(4), READONLY, NULL},
    {"uuid", T_OBJECT_EX, OFF(5), READONLY, NULL},
    {"L2_cache_size", T_OBJECT_EX, OFF(6), READONLY, NULL},
    {"device_type", T_OBJECT_EX, OFF(7), READONLY, NULL},
    {"is_integrated", T_OBJECT_EX, OFF(8), READONLY, NULL},
    {"is_multi_gpu_board", T_OBJECT_EX, OFF(9), READONLY, NULL},
    {"max_threads_per_multi_processor", T_OBJECT_EX, OFF(10), READONLY, NULL},
    {"max_threads_per_block", T_OBJECT_EX, OFF(11), READONLY, NULL},
    {"gcnArchName", T_OBJECT_EX, OFF(12), READONLY, NULL},
    {"warp_size", T_OBJECT_EX, OFF(13), READONLY, NULL},
    {"clock_rate", T_OBJECT_EX, OFF(14), READONLY, NULL},
    {"memory_clock_rate", T_OBJECT_EX, OFF(15), READONLY, NULL},
    {"memory_bus_width", T_OBJECT_EX, OFF(16), READONLY, NULL},
    {"shared_memory_per_block", T_OBJECT_EX, OFF(17), READONLY, NULL},
    {"shared_memory_per_block_optin", T_OBJECT_EX, OFF(18), READONLY, NULL},
    {"shared_memory_per_multiprocessor", T_OBJECT_EX, OFF(19), READONLY, NULL},
    {"regs_per_multiprocessor", T_OBJECT_EX, OFF(20), READONLY, NULL},
    {"pci_bus_id", T_OBJECT_EX, OFF(21), READONLY, NULL},
    {"pci_device_id", T_OBJECT_EX, OFF(22), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};


static PyObject *
Props_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || kwargs == NULL
        || PyDict_GET_SIZE(kwargs) != N_PROPS)
    {
        PyErr_Format(PyExc_TypeError,
                     "DeviceProperties() takes exactly the %d fields as "
                     "keywords", N_PROPS);
        return NULL;
    }
    td_props *self = (td_props *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    for (int i = 0; i < N_PROPS; i++) {
        PyObject *v = PyDict_GetItemString(kwargs, prop_names[i]);
        if (v == NULL) {
            PyErr_Format(PyExc_TypeError,
                         "DeviceProperties() missing field '%s'",
                         prop_names[i]);
            Py_DECREF(self);
            return NULL;
        }
        self->f[i] = Py_NewRef(v);
    }
    return (PyObject *)self;
}

static int
Props_traverse(PyObject *op, visitproc visit, void *arg)
{
    td_props *self = (td_props *)op;
    Py_VISIT(Py_TYPE(op));
    for (int i = 0; i < N_PROPS; i++) {
        Py_VISIT(self->f[i]);
    }
    return 0;
}

static int
Props_clear(PyObject *op)
{
    td_props *self = (td_props *)op;
    for (int i = 0; i < N_PROPS; i++) {
        Py_CLEAR(self->f[i]);
    }
    return 0;
}

static void
Props_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)Props_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static long long
megabytes(PyObject *v)
{
    long long b = PyLong_Check(v) ? PyLong_AsLongLong(v) : 0;
    if (b == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return b / (1024LL * 1024);
}

/* CUDA's own repr, with the device type appended so the truth shows. */
static PyObject *
Props_repr(PyObject *op)
{
    td_props *self = (td_props *)op;
    if (self->f[0] == NULL) {
        return PyUnicode_FromString("_CudaDeviceProperties()");
    }
    return PyUnicode_FromFormat(
        "_CudaDeviceProperties(name=%R, major=%S, minor=%S, "
        "total_memory=%lldMB, multi_processor_count=%S, uuid=%S, "
        "L2_cache_size=%lldMB, device_type=%R)",
        self->f[0], self->f[1], self->f[2], megabytes(self->f[3]),
        self->f[4], self->f[5], megabytes(self->f[6]), self->f[7]);
}

static PyObject *
Props_fields(PyObject *Py_UNUSED(cls), PyObject *Py_UNUSED(a))
{
    PyObject *t = PyTuple_New(N_PROPS);
    if (t == NULL) {
        return NULL;
    }
    for (int i = 0; i < N_PROPS; i++) {
        PyObject *s = PyUnicode_FromString(prop_names[i]);
        if (s == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, s);
    }
    return t;
}

static PyMethodDef props_methods[] = {
    {"fields", Props_fields, METH_NOARGS | METH_CLASS,
     "fields() -> tuple\n\nThe names every instance carries."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot props_slots[] = {
    {Py_tp_new, Props_new},
    {Py_tp_traverse, Props_traverse},
    {Py_tp_clear, Props_clear},
    {Py_tp_dealloc, Props_dealloc},
    {Py_tp_repr, Props_repr},
    {Py_tp_members, props_members},
    {Py_tp_methods, props_methods},
    {Py_tp_doc,
     "DeviceProperties(**fields)\n\nWhat torch.cuda.get_device_properties() "
     "returns under TorchDevice: CUDA's fields, describing the device the "
     "code really runs on (device_type tells which)."},
    {0, NULL},
};

PyType_Spec td_props_spec = {
    .name = "TorchDevice._tdcore.DeviceProperties",
    .basicsize = sizeof(td_props),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = props_slots,
};
