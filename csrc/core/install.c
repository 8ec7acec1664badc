/* The installation: what install() was handed, as one immutable object.
 *
 * Python equivalent:
 *
 *     @dataclass(frozen=True)
 *     class Installation:            # one per enable(); never changed
 *         device_type: type; dtype_type: type
 *         target: dict               # td_target -> torch.device (the
 *                                    # generic accelerator's: or None)
 *         float64: dtype; float32: dtype
 *         complex128: dtype; complex64: dtype
 *         default_dtype; made_dtype              # torch's default dtype
 *         tensor_to; tensor_cpu; module_to        # torch's originals
 *         mode_stack_len; mode_stack_at; device_context
 *         skip_prefixes; report_sink; records; streams
 *
 *     def install(**objects):
 *         publish(Installation(**objects)); hook torch.device, Generator
 *     def uninstall():
 *         unhook everything, newest first; publish(None)
 *
 * A change after install() (streams_setup) copies the installation, changes
 * the copy and publishes it.  Hooks take a strong reference to the one in
 * force for their whole call, so an uninstall() in another thread (when a
 * hook calls into Python, the GIL can move) never frees what they use.
 */
#include "tdcore.h"

#include "fields.h"

#include <string.h>

#define INSTALL_FIELDS TD_FIELDS(td_install, device_type, kw_device)

static int
Install_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return td_fields_visit(self, INSTALL_FIELDS, visit, arg);
}

static int
Install_clear(PyObject *self)
{
    td_fields_clear(self, INSTALL_FIELDS);
    return 0;
}

TD_GC_DEALLOC(Install_dealloc, Install_clear)

static PyObject *
Install_targets(PyObject *self, void *Py_UNUSED(c))
{
    td_install *inst = (td_install *)self;
    PyObject *d = PyDict_New();
    for (int t = 0; d != NULL && t < TD_TARGET_COUNT; t++) {
        if (inst->target[t] != NULL
            && PyDict_SetItemString(d, td_target_name((td_target)t),
                                    inst->target[t]) < 0)
        {
            Py_CLEAR(d);
        }
    }
    return d;
}

static PyGetSetDef install_getset[] = {
    {"targets", Install_targets, NULL,
     "{target name: torch.device} this installation redirects to", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot install_slots[] = {
    {Py_tp_traverse, Install_traverse},
    {Py_tp_clear, Install_clear},
    {Py_tp_dealloc, Install_dealloc},
    {Py_tp_getset, install_getset},
    {Py_tp_doc, "What install() was handed (internal, immutable)."},
    {0, NULL},
};

PyType_Spec td_install_spec = {
    .name = "TorchDevice._tdcore.Installation",
    .basicsize = sizeof(td_install),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = install_slots,
};

static td_install *
install_alloc(td_state *mst)
{
    td_install *inst = PyObject_GC_New(td_install, mst->install_type);
    if (inst == NULL) {
        return NULL;
    }
    memset((char *)inst + sizeof(PyObject), 0,
           sizeof(td_install) - sizeof(PyObject));
    PyObject_GC_Track((PyObject *)inst);
    return inst;
}

td_install *
td_install_copy(td_install *src)
{
    PyTypeObject *tp = Py_TYPE(src);
    td_install *inst = PyObject_GC_New(td_install, tp);
    if (inst == NULL) {
        return NULL;
    }
    td_fields_copy((PyObject *)inst, (PyObject *)src, INSTALL_FIELDS);
    PyObject_GC_Track((PyObject *)inst);
    return inst;
}

/* ---- install() ------------------------------------------------------------ */

enum {
    A_DEVICE_TYPE, A_DTYPE_TYPE, A_TARGETS, A_LAYOUT_PROBES, A_FLOAT64,
    A_FLOAT32, A_TENSOR_TO, A_TENSOR_CPU, A_MODULE_TO, A_MODE_STACK_LEN,
    A_MODE_STACK_AT, A_DEVICE_CONTEXT, A_GENERATOR_TYPE, A_SKIP_PREFIXES,
    A_REPORT_SINK, A_DEFAULT_DTYPE, A_MADE_DTYPE, A_COMPLEX128, A_COMPLEX64,
    A_COUNT
};

static const char *const install_names[A_COUNT] = {
    "device_type", "dtype_type", "targets", "layout_probes", "float64",
    "float32", "tensor_to", "tensor_cpu", "module_to", "mode_stack_len",
    "mode_stack_at", "device_context", "generator_type", "skip_prefixes",
    "report_sink", "default_dtype", "made_dtype", "complex128", "complex64",
};

static const td_args_spec install_spec = {
    "install", install_names, A_COUNT, A_COUNT, 0,
};

/* The generic accelerator's target: None where there is none; else a
 * device of a type other than the three the policy names itself, whose
 * type name requests use ("xpu", "simaccel", ...). */
static int
take_accel(td_install *inst, PyObject *dev)
{
    if (dev == Py_None) {
        return 0;
    }
    td_request own = td_request_from_device(dev, NULL);
    if (own.kind != TD_REQ_OTHER) {
        PyErr_SetString(PyExc_ValueError,
                        "install(): targets['accel'] must be a device of "
                        "another type than cpu, cuda, mps or meta");
        return -1;
    }
    PyObject *name = PyObject_GetAttrString(dev, "type");
    if (name == NULL) {
        return -1;
    }
    if (!PyUnicode_Check(name)) {
        Py_DECREF(name);
        PyErr_SetString(PyExc_TypeError,
                        "install(): targets['accel'].type must be a str");
        return -1;
    }
    inst->accel_name = name;
    inst->target[TD_TARGET_ACCEL] = Py_NewRef(dev);
    return 0;
}

/* targets: {"cpu": dev, "cuda": dev, "mps": dev, "accel": dev or None},
 * one per td_target. */
static int
take_targets(td_install *inst, PyObject *targets)
{
    if (!PyDict_Check(targets)
        || PyDict_GET_SIZE(targets) != TD_TARGET_COUNT - 1)
    {
        PyErr_Format(PyExc_TypeError,
                     "install(): targets must be a dict with the %d target "
                     "names", TD_TARGET_COUNT - 1);
        return -1;
    }
    for (int t = 0; t < TD_TARGET_COUNT; t++) {
        if (t == TD_TARGET_KEEP) {
            continue;
        }
        const char *name = td_target_name((td_target)t);
        PyObject *dev = PyDict_GetItemString(targets, name);   /* borrowed */
        if (t == TD_TARGET_ACCEL && dev != NULL
            && (dev == Py_None || Py_TYPE(dev) == inst->device_type))
        {
            if (take_accel(inst, dev) < 0) {
                return -1;
            }
            continue;
        }
        if (dev == NULL || Py_TYPE(dev) != inst->device_type) {
            PyErr_Format(PyExc_TypeError,
                         "install(): targets['%s'] must be a torch.device",
                         name);
            return -1;
        }
        inst->target[t] = Py_NewRef(dev);
    }
    return 0;
}

static int
optional_callable(PyObject *obj, const char *name)
{
    if (obj != Py_None && !PyCallable_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "install(): %s must be callable or "
                     "None", name);
        return -1;
    }
    return 0;
}

static td_install *
build(td_state *mst, PyObject **a)
{
    if (!PyType_Check(a[A_DEVICE_TYPE]) || !PyType_Check(a[A_DTYPE_TYPE])) {
        PyErr_SetString(PyExc_TypeError,
                        "install(): device_type and dtype_type must be types");
        return NULL;
    }
    if (optional_callable(a[A_MODE_STACK_LEN], "mode_stack_len") < 0
        || optional_callable(a[A_MODE_STACK_AT], "mode_stack_at") < 0
        || (a[A_DEVICE_CONTEXT] != Py_None
            && !PyType_Check(a[A_DEVICE_CONTEXT])))
    {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError,
                            "install(): device_context must be a type or "
                            "None");
        }
        return NULL;
    }
    if (td_device_check_layout((PyTypeObject *)a[A_DEVICE_TYPE],
                               a[A_LAYOUT_PROBES]) < 0)
    {
        return NULL;
    }
    td_install *inst = install_alloc(mst);
    if (inst == NULL) {
        return NULL;
    }
    inst->device_type = (PyTypeObject *)Py_NewRef(a[A_DEVICE_TYPE]);
    inst->dtype_type = (PyTypeObject *)Py_NewRef(a[A_DTYPE_TYPE]);
    if (take_targets(inst, a[A_TARGETS]) < 0) {
        Py_DECREF(inst);
        return NULL;
    }
    inst->float64 = Py_NewRef(a[A_FLOAT64]);
    inst->float32 = Py_NewRef(a[A_FLOAT32]);
    inst->complex128 = Py_NewRef(a[A_COMPLEX128]);
    inst->complex64 = Py_NewRef(a[A_COMPLEX64]);
    inst->default_dtype = Py_NewRef(a[A_DEFAULT_DTYPE]);
    inst->made_dtype = Py_NewRef(a[A_MADE_DTYPE]);
    inst->tensor_to = Py_NewRef(a[A_TENSOR_TO]);
    inst->tensor_cpu = Py_NewRef(a[A_TENSOR_CPU]);
    inst->module_to = Py_NewRef(a[A_MODULE_TO]);
    inst->mode_stack_len = Py_NewRef(a[A_MODE_STACK_LEN]);
    inst->mode_stack_at = Py_NewRef(a[A_MODE_STACK_AT]);
    inst->device_context = Py_NewRef(a[A_DEVICE_CONTEXT]);
    inst->skip_prefixes = Py_NewRef(a[A_SKIP_PREFIXES]);
    inst->report_sink = Py_NewRef(a[A_REPORT_SINK]);
    inst->records = Py_XNewRef(mst->records);
    inst->streams = Py_XNewRef(mst->streams);
#define COPY_NAME(field, text) inst->field = Py_XNewRef(mst->field);
    TD_NAME_FIELDS(COPY_NAME)
#undef COPY_NAME
    inst->kw_device = Py_XNewRef(mst->kw_device);
    if (td_moves_setup(inst) < 0 || td_poses_setup(inst) < 0) {
        Py_DECREF(inst);
        return NULL;
    }
    return inst;
}

/* The state of the module that installed, or NULL: one module owns torch's
 * slots at a time.  Not a reference: that module's teardown uninstalls. */
static td_state *owner;

static PyObject *
tdcore_install(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    td_state *mst = td_module_state(module);
    PyObject *a[A_COUNT];
    if (td_args_parse(&install_spec, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (owner != NULL && owner != mst) {
        PyErr_SetString(PyExc_RuntimeError,
                        "another _tdcore module already patched torch");
        return NULL;
    }
    td_install *inst = build(mst, a);
    if (inst == NULL) {
        return NULL;
    }
    /* Steps, each undone in reverse order by td_uninstall_module:
     * publish, hook torch.device, hook torch.Generator. */
    td_uninstall_module(mst);
    owner = mst;
    td_install_publish(mst, (td_install *)Py_NewRef(inst));
    int rc = td_hooks_install(inst, a[A_GENERATOR_TYPE]);
    Py_DECREF(inst);
    if (rc < 0) {
        td_uninstall_module(mst);
        return NULL;
    }
    Py_RETURN_NONE;
}

void
td_uninstall_module(td_state *mst)
{
    if (owner != mst) {
        return;
    }
    td_slots_unhook_all();
    td_install_publish(mst, NULL);
    owner = NULL;
}

static PyObject *
tdcore_uninstall(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_uninstall_module(td_module_state(module));
    Py_RETURN_NONE;
}

static PyObject *
tdcore_is_installed(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_state *mst = td_module_state(module);
    return PyBool_FromLong(owner == mst && mst->installation != NULL);
}

static PyObject *
tdcore_installation(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_state *mst = td_module_state(module);
    return Py_NewRef(mst->installation ? mst->installation : Py_None);
}

PyMethodDef td_install_methods[] = {
    {"install", TD_FASTKW(tdcore_install),
     "install(*, device_type, dtype_type, targets, layout_probes, float64, "
     "float32, tensor_to, tensor_cpu, module_to, mode_stack_len, "
     "mode_stack_at, device_context, generator_type, skip_prefixes, "
     "report_sink, default_dtype, made_dtype, complex128, complex64)"
     "\n\nPublishes a new "
     "installation made of torch's objects and hooks torch.device and "
     "torch.Generator; on any failure, nothing is left changed."},
    {"uninstall", tdcore_uninstall, METH_NOARGS,
     "uninstall()\n\nUndoes every slot hook, newest first, and publishes no "
     "installation.  Hooks still running keep the one they hold."},
    {"is_installed", tdcore_is_installed, METH_NOARGS, NULL},
    {"installation", tdcore_installation, METH_NOARGS,
     "installation() -> Installation or None\n\nThe installation in force."},
    {NULL, NULL, 0, NULL},
};
