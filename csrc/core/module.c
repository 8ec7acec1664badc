/* _tdcore: module definition and state, the installation in force, and
 * the pure policy exposed for tests.
 *
 * The Python package hands over every torch object that the hot path needs
 * (device types, target devices, original methods); _tdcore never imports
 * torch and never includes its headers, so one build serves every torch
 * release that keeps torch.device's two-byte layout (checked at install).
 */
#include "tdcore.h"

#include "fields.h"

#include <stdatomic.h>
#include <string.h>

/* The installation in force: a borrowed mirror of the owning module's
 * td_state.installation, for the hooks in torch's static types, which
 * cannot reach a module.  Loading it and taking a reference is one step
 * under the GIL (the module does not declare Py_mod_gil_not_used), as is
 * publishing and dropping the old one, so a hook never sees a freed one. */
static _Atomic(td_install *) in_force;

td_state *
td_module_state(PyObject *module)
{
    return (td_state *)PyModule_GetState(module);
}

td_state *
td_type_state(PyTypeObject *type)
{
    return (td_state *)PyType_GetModuleState(type);
}

td_install *
td_install_acquire(void)
{
    td_install *inst = atomic_load_explicit(&in_force, memory_order_acquire);
    Py_XINCREF(inst);
    return inst;
}

td_install *
td_install_require(const char *what)
{
    td_install *inst = td_install_acquire();
    if (inst == NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s: TorchDevice is not enabled", what);
    }
    return inst;
}

void
td_install_publish(td_state *mst, td_install *inst)
{
    PyObject *old = mst->installation;
    mst->installation = (PyObject *)inst;
    atomic_store_explicit(&in_force, inst, memory_order_release);
    /* Last: the decref may run code, which must find the new one. */
    Py_XDECREF(old);
}

/* ---- policy, exposed for tests and for the Python layer ---------------- */

static int
parse_profile(PyObject *obj, td_profile *out)
{
    const char *s = PyUnicode_Check(obj) ? PyUnicode_AsUTF8(obj) : NULL;
    if (s != NULL) {
        if (strcmp(s, "cpu") == 0) {
            *out = TD_PROFILE_CPU;
            return 0;
        }
        if (strcmp(s, "cuda") == 0) {
            *out = TD_PROFILE_CUDA;
            return 0;
        }
        if (strcmp(s, "mps") == 0) {
            *out = TD_PROFILE_MPS;
            return 0;
        }
        if (strcmp(s, "accelerator") == 0) {
            *out = TD_PROFILE_ACCEL;
            return 0;
        }
    }
    PyErr_Clear();
    PyErr_Format(PyExc_ValueError,
                 "profile must be 'cuda', 'mps', 'accelerator' or 'cpu', "
                 "not %R", obj);
    return -1;
}

static int
parse_mode(PyObject *obj, td_mode *out)
{
    const char *s = PyUnicode_Check(obj) ? PyUnicode_AsUTF8(obj) : NULL;
    if (s != NULL) {
        if (strcmp(s, "accelerate") == 0) {
            *out = TD_MODE_ACCELERATE;
            return 0;
        }
        if (strcmp(s, "cpu-stays-cpu") == 0) {
            *out = TD_MODE_CPU_STAYS_CPU;
            return 0;
        }
    }
    PyErr_Clear();
    PyErr_Format(PyExc_ValueError,
                 "mode must be 'accelerate' or 'cpu-stays-cpu', not %R", obj);
    return -1;
}

static int
parse_float64(PyObject *obj, td_float64_policy *out)
{
    const char *s = PyUnicode_Check(obj) ? PyUnicode_AsUTF8(obj) : NULL;
    if (s != NULL) {
        if (strcmp(s, "downcast") == 0) {
            *out = TD_FLOAT64_DOWNCAST;
            return 0;
        }
        if (strcmp(s, "error") == 0) {
            *out = TD_FLOAT64_ERROR;
            return 0;
        }
    }
    PyErr_Clear();
    PyErr_Format(PyExc_ValueError,
                 "float64 must be 'downcast' or 'error', not %R", obj);
    return -1;
}

/* A request as the wrappers read it; the generic accelerator's type is
 * the installed one's, or `accel` when given (a str: tests of the pure
 * policy for any device type). */
static int
request_for_test(PyObject *obj, PyObject *accel_obj, td_request *out)
{
    td_install *st = td_install_acquire();
    td_accel_type accel = td_accel_of(st);
    if (accel_obj != NULL && accel_obj != Py_None) {
        Py_ssize_t n;
        accel.name = PyUnicode_Check(accel_obj)
                     ? PyUnicode_AsUTF8AndSize(accel_obj, &n) : NULL;
        if (accel.name == NULL) {
            Py_XDECREF(st);
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "accelerator must be a str");
            return -1;
        }
        accel.len = (size_t)n;
    }
    int is_device = st != NULL && Py_TYPE(obj) == st->device_type;
    if (obj == Py_None || PyUnicode_Check(obj) || PyLong_CheckExact(obj)
        || is_device)
    {
        /* accel.name borrows from accel_obj or the installation's str,
         * both alive until this returns. */
        *out = td_request_from_value(st != NULL ? st->device_type : NULL,
                                     &accel, obj);
        if (is_device) {
            *out = td_request_as_place(st, obj, *out);
        }
        Py_XDECREF(st);
        return 0;
    }
    Py_XDECREF(st);
    PyErr_Format(PyExc_TypeError,
                 "request must be None, str, int or torch.device, not %.100s",
                 Py_TYPE(obj)->tp_name);
    return -1;
}

static PyObject *
resolution_dict(td_resolution res)
{
    return Py_BuildValue("{sssOsO}", "target", td_target_name(res.target),
                         "toggle", res.toggle_override ? Py_True : Py_False,
                         "redirected", res.redirected ? Py_True : Py_False);
}

static PyObject *
tdcore_resolve(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"request", "profile", "mode", "cpu_override",
                             "from_torch", "accelerator", NULL};
    PyObject *request, *profile_obj, *mode_obj = NULL, *accel = NULL;
    int override = 0, from_torch = 0;
    td_profile profile;
    td_mode mode = TD_MODE_ACCELERATE;
    td_request req;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OppO:resolve", kwlist,
                                     &request, &profile_obj, &mode_obj,
                                     &override, &from_torch, &accel)
        || parse_profile(profile_obj, &profile) < 0
        || (mode_obj != NULL && parse_mode(mode_obj, &mode) < 0)
        || request_for_test(request, accel, &req) < 0)
    {
        return NULL;
    }
    return resolution_dict(td_resolve(req, profile, mode, override,
                                      from_torch));
}

static PyObject *
tdcore_float64_action(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"request", "profile", "mode", "cpu_override",
                             "float64", "device_float64", "accelerator",
                             NULL};
    PyObject *request, *profile_obj, *mode_obj = NULL, *f64_obj = NULL;
    PyObject *dev_f64_obj = Py_None, *accel = NULL;
    int override = 0;
    td_profile profile;
    td_mode mode = TD_MODE_ACCELERATE;
    td_float64_policy f64 = TD_FLOAT64_DOWNCAST;
    td_request req;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OpOOO:float64_action",
                                     kwlist, &request, &profile_obj,
                                     &mode_obj, &override, &f64_obj,
                                     &dev_f64_obj, &accel)
        || parse_profile(profile_obj, &profile) < 0
        || (mode_obj != NULL && parse_mode(mode_obj, &mode) < 0)
        || (f64_obj != NULL && parse_float64(f64_obj, &f64) < 0)
        || request_for_test(request, accel, &req) < 0)
    {
        return NULL;
    }
    /* None: the profile's own record (MPS computes no float64). */
    int dev_f64 = dev_f64_obj == Py_None ? profile != TD_PROFILE_MPS
                                         : PyObject_IsTrue(dev_f64_obj);
    if (dev_f64 < 0) {
        return NULL;
    }
    td_resolution res = td_resolve(req, profile, mode, override, 0);
    static const char *names[] = {"keep", "float32", "error"};
    return PyUnicode_FromString(
        names[td_float64_action(profile, dev_f64, req, res, f64)]);
}

static PyObject *
tdcore_parse(PyObject *Py_UNUSED(module), PyObject *obj)
{
    static const char *names[] = {"none", "cpu", "cuda", "mps", "meta",
                                  "cpu-toggle", "other", "accelerator",
                                  "host-place"};
    td_request req;
    if (request_for_test(obj, NULL, &req) < 0) {
        return NULL;
    }
    return Py_BuildValue("(sl)", names[req.kind], req.index);
}

static PyObject *
tdcore_configure(PyObject *Py_UNUSED(module), PyObject *args,
                 PyObject *kwargs)
{
    static char *kwlist[] = {"profile", "mode", "float64", "device_float64",
                             NULL};
    PyObject *profile_obj, *mode_obj, *f64_obj, *dev_f64_obj = Py_None;
    td_profile profile;
    td_mode mode;
    td_float64_policy f64;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O:configure", kwlist,
                                     &profile_obj, &mode_obj, &f64_obj,
                                     &dev_f64_obj)
        || parse_profile(profile_obj, &profile) < 0
        || parse_mode(mode_obj, &mode) < 0
        || parse_float64(f64_obj, &f64) < 0)
    {
        return NULL;
    }
    /* None: the profile's own record (MPS computes no float64). */
    int dev_f64 = dev_f64_obj == Py_None ? profile != TD_PROFILE_MPS
                                         : PyObject_IsTrue(dev_f64_obj);
    if (dev_f64 < 0) {
        return NULL;
    }
    td_set_config(profile, mode, f64, dev_f64);
    Py_RETURN_NONE;
}

static PyObject *
tdcore_settings(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(a))
{
    static const char *modes[] = {"accelerate", "cpu-stays-cpu"};
    static const char *f64[] = {"downcast", "error"};
    return Py_BuildValue("{sssssssOsssO}", "profile",
                         td_profile_name(td_get_profile()), "mode",
                         modes[td_get_mode()], "float64",
                         f64[td_get_float64()], "cpu_override",
                         td_get_cpu_override() ? Py_True : Py_False, "moves",
                         td_get_move_copies() ? "copy" : "alias",
                         "device_float64",
                         td_get_accel_float64() ? Py_True : Py_False);
}

static PyMethodDef tdcore_methods[] = {
    {"resolve", (PyCFunction)(void (*)(void))tdcore_resolve,
     METH_VARARGS | METH_KEYWORDS,
     "resolve(request, profile, mode='accelerate', cpu_override=False, "
     "from_torch=False, accelerator=None) -> dict\n\nThe pure policy: no "
     "state is read or changed.  accelerator: the generic accelerator's "
     "type name (default: the installed one's)."},
    {"float64_action", (PyCFunction)(void (*)(void))tdcore_float64_action,
     METH_VARARGS | METH_KEYWORDS,
     "float64_action(request, profile, mode='accelerate', "
     "cpu_override=False, float64='downcast', device_float64=None, "
     "accelerator=None) -> 'keep'|'float32'|'error'"},
    {"parse", tdcore_parse, METH_O,
     "parse(request) -> (kind, index)\n\nClassifies a device request."},
    {"configure", (PyCFunction)(void (*)(void))tdcore_configure,
     METH_VARARGS | METH_KEYWORDS,
     "configure(profile, mode, float64, device_float64=None)\n\nSets the "
     "policy in force; device_float64: whether the accelerator computes "
     "float64 (None: all but MPS)."},
    {"settings", tdcore_settings, METH_NOARGS,
     "settings() -> dict\n\nThe policy in force."},
    {NULL, NULL, 0, NULL},
};

/* ---- module lifecycle --------------------------------------------------- */

static int
tdcore_exec(PyObject *module)
{
    td_state *st = td_module_state(module);
    st->wrapper_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &td_wrapper_spec, NULL);
    if (st->wrapper_type == NULL
        || PyModule_AddType(module, st->wrapper_type) < 0)
    {
        return -1;
    }
    st->install_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &td_install_spec, NULL);
    if (st->install_type == NULL) {
        return -1;
    }
#define INTERN(field, text)                                 \
    st->field = PyUnicode_InternFromString(text);           \
    if (st->field == NULL) {                                \
        return -1;                                          \
    }
    TD_NAME_FIELDS(INTERN)
#undef INTERN
    st->kw_device = PyTuple_Pack(1, st->str_device);
    st->records = td_sites_new(module);
    if (st->kw_device == NULL || st->records == NULL) {
        return -1;
    }
    PyMethodDef *const tables[] = {
        td_install_methods, td_slot_methods, td_flags_methods,
        td_hook_methods, td_devarg_methods, td_report_methods,
        td_trace_methods, td_moves_methods, td_pose_methods,
        td_shared_methods, td_streams_methods,
    };
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        if (PyModule_AddFunctions(module, tables[i]) < 0) {
            return -1;
        }
    }
    if (td_streams_exec(module, st) < 0 || td_masq_init(module, st) < 0) {
        return -1;
    }
    static const char *kinds[] = {"KIND_FACTORY", "KIND_TO", "KIND_MOVE",
                                  "KIND_NUMPY", "KIND_PIN_MEMORY",
                                  "KIND_IS_PINNED", "KIND_DOUBLE",
                                  "KIND_CDOUBLE"};
    for (int i = 0; i < (int)(sizeof(kinds) / sizeof(kinds[0])); i++) {
        if (PyModule_AddIntConstant(module, kinds[i], i) < 0) {
            return -1;
        }
    }
    return 0;
}

#define STATE_FIELDS TD_FIELDS(td_state, wrapper_type, kw_device)

static int
tdcore_traverse(PyObject *module, visitproc visit, void *arg)
{
    return td_fields_visit((PyObject *)td_module_state(module), STATE_FIELDS,
                           visit, arg);
}

/* Teardown undoes install(): torch's slots get their own tp_new back, in
 * the reverse order they were hooked, before anything is dropped. */
static int
tdcore_clear(PyObject *module)
{
    td_state *st = td_module_state(module);
    if (st == NULL) {
        return 0;
    }
    td_uninstall_module(st);
    td_fields_clear((PyObject *)st, STATE_FIELDS);
    return 0;
}

static void
tdcore_free(void *module)
{
    (void)tdcore_clear((PyObject *)module);
}

static PyModuleDef_Slot tdcore_slots[] = {
    {Py_mod_exec, tdcore_exec},
#ifdef Py_mod_multiple_interpreters
    /* torch.device's slot is process-wide: one interpreter owns it. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    /* No Py_mod_gil slot: the module relies on the GIL
     * (docs/reliability.md). */
    {0, NULL},
};

static struct PyModuleDef tdcore_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "TorchDevice._tdcore",
    .m_doc = "TorchDevice's hot path: device policy and torch wrappers.",
    .m_size = sizeof(td_state),
    .m_methods = tdcore_methods,
    .m_slots = tdcore_slots,
    .m_traverse = tdcore_traverse,
    .m_clear = tdcore_clear,
    .m_free = tdcore_free,
};

PyMODINIT_FUNC
PyInit__tdcore(void)
{
    return PyModuleDef_Init(&tdcore_def);
}
