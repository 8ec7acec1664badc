/* _tdcore: module definition, state, and the install/uninstall entry points.
 *
 * The Python package hands over every torch object that the hot path needs
 * (device types, target devices, original methods); _tdcore never imports
 * torch and never includes its headers, so one build serves every torch
 * release that keeps torch.device's two-byte layout (checked at install).
 */
#include "tdcore.h"

#include <stdatomic.h>
#include <string.h>

static _Atomic(td_state *) installed_state;
static PyObject *installed_module;   /* strong; keeps that state alive */

td_state *
td_installed_state(void)
{
    return atomic_load_explicit(&installed_state, memory_order_acquire);
}

void
td_set_installed_state(td_state *st, PyObject *module)
{
    atomic_store_explicit(&installed_state, st, memory_order_release);
    Py_XINCREF(module);
    Py_XSETREF(installed_module, module);
}

static td_state *
get_state(PyObject *module)
{
    return (td_state *)PyModule_GetState(module);
}

static void
clear_torch_refs(td_state *st)
{
    Py_CLEAR(st->device_type);
    Py_CLEAR(st->dtype_type);
    Py_CLEAR(st->dev_cpu);
    Py_CLEAR(st->dev_cuda);
    Py_CLEAR(st->dev_mps);
    Py_CLEAR(st->float64);
    Py_CLEAR(st->float32);
    Py_CLEAR(st->tensor_to);
    Py_CLEAR(st->tensor_cpu);
    Py_CLEAR(st->module_to);
    Py_CLEAR(st->mode_stack_len);
    Py_CLEAR(st->skip_prefixes);
    Py_CLEAR(st->report_sink);
    Py_CLEAR(st->tensor_type);
    Py_CLEAR(st->tensor_storage);
    Py_CLEAR(st->tensor_clone);
    Py_CLEAR(st->intent_accel_cpu);
    Py_CLEAR(st->intent_host_cuda);
    Py_CLEAR(st->intent_host_mps);
}

/* What moves.c needs, made from what install() was handed (before the
 * torch.device hook is in place, so that the devices are new objects):
 * the tensor type and its untyped_storage, and one more device object per
 * target that the hook hands out for the other intent. */
static int
install_moves(td_state *st)
{
    PyObject *owner = PyObject_GetAttrString(st->tensor_to, "__objclass__");
    if (owner == NULL) {
        return -1;
    }
    if (!PyType_Check(owner)) {
        Py_DECREF(owner);
        PyErr_SetString(PyExc_TypeError,
                        "install(): tensor_to must be a method of the tensor "
                        "type");
        return -1;
    }
    st->tensor_type = (PyTypeObject *)owner;
    st->tensor_storage = PyObject_GetAttrString(owner, "untyped_storage");
    st->tensor_clone = st->tensor_storage
                       ? PyObject_GetAttrString(owner, "clone") : NULL;
    PyObject *dev = (PyObject *)st->device_type;
    st->intent_accel_cpu = PyObject_CallOneArg(dev, st->dev_cpu);
    st->intent_host_cuda = st->intent_accel_cpu
                           ? PyObject_CallOneArg(dev, st->dev_cuda) : NULL;
    st->intent_host_mps = st->intent_host_cuda
                          ? PyObject_CallOneArg(dev, st->dev_mps) : NULL;
    if (st->tensor_clone == NULL || st->intent_host_mps == NULL) {
        return -1;
    }
    if (st->intent_accel_cpu == st->dev_cpu
        || st->intent_host_cuda == st->dev_cuda
        || st->intent_host_mps == st->dev_mps)
    {
        PyErr_SetString(PyExc_RuntimeError,
                        "install(): torch.device is still hooked");
        return -1;
    }
    return 0;
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
    }
    PyErr_Clear();
    PyErr_Format(PyExc_ValueError,
                 "profile must be 'cuda', 'mps' or 'cpu', not %R", obj);
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

static int
request_for_test(td_state *st, PyObject *obj, td_request *out)
{
    if (obj == Py_None || PyUnicode_Check(obj) || PyLong_CheckExact(obj)) {
        *out = td_request_from_object(st, obj);
        return 0;
    }
    if (st->device_type != NULL && Py_TYPE(obj) == st->device_type) {
        *out = td_request_from_device(obj);
        return 0;
    }
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
tdcore_resolve(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"request", "profile", "mode", "cpu_override",
                             "from_torch", NULL};
    PyObject *request, *profile_obj, *mode_obj = NULL;
    int override = 0, from_torch = 0;
    td_profile profile;
    td_mode mode = TD_MODE_ACCELERATE;
    td_request req;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|Opp:resolve", kwlist,
                                     &request, &profile_obj, &mode_obj,
                                     &override, &from_torch)
        || parse_profile(profile_obj, &profile) < 0
        || (mode_obj != NULL && parse_mode(mode_obj, &mode) < 0)
        || request_for_test(get_state(module), request, &req) < 0)
    {
        return NULL;
    }
    return resolution_dict(td_resolve(req, profile, mode, override,
                                      from_torch));
}

static PyObject *
tdcore_float64_action(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"request", "profile", "mode", "cpu_override",
                             "float64", NULL};
    PyObject *request, *profile_obj, *mode_obj = NULL, *f64_obj = NULL;
    int override = 0;
    td_profile profile;
    td_mode mode = TD_MODE_ACCELERATE;
    td_float64_policy f64 = TD_FLOAT64_DOWNCAST;
    td_request req;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OpO:float64_action",
                                     kwlist, &request, &profile_obj,
                                     &mode_obj, &override, &f64_obj)
        || parse_profile(profile_obj, &profile) < 0
        || (mode_obj != NULL && parse_mode(mode_obj, &mode) < 0)
        || (f64_obj != NULL && parse_float64(f64_obj, &f64) < 0)
        || request_for_test(get_state(module), request, &req) < 0)
    {
        return NULL;
    }
    td_resolution res = td_resolve(req, profile, mode, override, 0);
    static const char *names[] = {"keep", "float32", "error"};
    return PyUnicode_FromString(
        names[td_float64_action(profile, req, res, f64)]);
}

static PyObject *
tdcore_parse(PyObject *module, PyObject *obj)
{
    static const char *names[] = {"none", "cpu", "cuda", "mps", "meta",
                                  "cpu-toggle", "other"};
    td_request req;
    if (request_for_test(get_state(module), obj, &req) < 0) {
        return NULL;
    }
    return Py_BuildValue("(sl)", names[req.kind], req.index);
}

static PyObject *
tdcore_configure(PyObject *Py_UNUSED(module), PyObject *args,
                 PyObject *kwargs)
{
    static char *kwlist[] = {"profile", "mode", "float64", NULL};
    PyObject *profile_obj, *mode_obj, *f64_obj;
    td_profile profile;
    td_mode mode;
    td_float64_policy f64;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:configure", kwlist,
                                     &profile_obj, &mode_obj, &f64_obj)
        || parse_profile(profile_obj, &profile) < 0
        || parse_mode(mode_obj, &mode) < 0
        || parse_float64(f64_obj, &f64) < 0)
    {
        return NULL;
    }
    td_set_config(profile, mode, f64);
    Py_RETURN_NONE;
}

static PyObject *
tdcore_settings(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(a))
{
    static const char *modes[] = {"accelerate", "cpu-stays-cpu"};
    static const char *f64[] = {"downcast", "error"};
    return Py_BuildValue("{sssssssOss}", "profile",
                         td_profile_name(td_get_profile()), "mode",
                         modes[td_get_mode()], "float64",
                         f64[td_get_float64()], "cpu_override",
                         td_get_cpu_override() ? Py_True : Py_False, "moves",
                         td_get_move_copies() ? "copy" : "alias");
}

/* ---- install / uninstall ------------------------------------------------ */

static PyObject *
tdcore_install(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {
        "device_type", "dtype_type", "dev_cpu", "dev_cuda", "dev_mps",
        "float64", "float32", "tensor_to", "tensor_cpu", "module_to",
        "mode_stack_len", "generator_type", "skip_prefixes", "report_sink",
        "probe_mps", NULL};
    td_state *st = get_state(module);
    PyObject *o[15];
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "|$OOOOOOOOOOOOOOO:install", kwlist, &o[0], &o[1],
            &o[2], &o[3], &o[4], &o[5], &o[6], &o[7], &o[8], &o[9], &o[10],
            &o[11], &o[12], &o[13], &o[14]))
    {
        return NULL;
    }
    if (PyTuple_GET_SIZE(args) != 0 || kwargs == NULL
        || PyDict_GET_SIZE(kwargs) != 15)
    {
        PyErr_SetString(PyExc_TypeError, "install() needs every keyword");
        return NULL;
    }
    if (!PyType_Check(o[0]) || !PyType_Check(o[1])) {
        PyErr_SetString(PyExc_TypeError, "device_type/dtype_type: types");
        return NULL;
    }
    if (td_installed_state() != NULL && td_installed_state() != st) {
        PyErr_SetString(PyExc_RuntimeError,
                        "another _tdcore module already patched torch");
        return NULL;
    }
    clear_torch_refs(st);
    st->device_type = (PyTypeObject *)Py_NewRef(o[0]);
    st->dtype_type = (PyTypeObject *)Py_NewRef(o[1]);
    st->dev_cpu = Py_NewRef(o[2]);
    st->dev_cuda = Py_NewRef(o[3]);
    st->dev_mps = Py_NewRef(o[4]);
    st->float64 = Py_NewRef(o[5]);
    st->float32 = Py_NewRef(o[6]);
    st->tensor_to = Py_NewRef(o[7]);
    st->tensor_cpu = Py_NewRef(o[8]);
    st->module_to = Py_NewRef(o[9]);
    st->mode_stack_len = Py_NewRef(o[10]);
    st->skip_prefixes = Py_NewRef(o[12]);
    st->report_sink = Py_NewRef(o[13]);
    if (td_device_check_layout(st, o[14]) < 0 || install_moves(st) < 0) {
        goto error;
    }
    td_set_installed_state(st, module);
    if (td_hooks_install(st, o[11]) < 0) {
        td_set_installed_state(NULL, NULL);
        goto error;
    }
    Py_RETURN_NONE;
error:
    clear_torch_refs(st);
    return NULL;
}

static PyObject *
tdcore_uninstall(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_state *st = get_state(module);
    if (td_installed_state() == st) {
        td_hooks_uninstall();
        td_set_installed_state(NULL, NULL);
    }
    td_streams_uninstall(st);
    clear_torch_refs(st);
    Py_RETURN_NONE;
}

static PyObject *
tdcore_is_installed(PyObject *module, PyObject *Py_UNUSED(a))
{
    return PyBool_FromLong(td_installed_state() == get_state(module));
}

static PyMethodDef tdcore_methods[] = {
    {"resolve", (PyCFunction)(void (*)(void))tdcore_resolve,
     METH_VARARGS | METH_KEYWORDS,
     "resolve(request, profile, mode='accelerate', cpu_override=False, "
     "from_torch=False) -> dict\n\nThe pure policy: no state is read or "
     "changed."},
    {"float64_action", (PyCFunction)(void (*)(void))tdcore_float64_action,
     METH_VARARGS | METH_KEYWORDS,
     "float64_action(request, profile, mode='accelerate', "
     "cpu_override=False, float64='downcast') -> 'keep'|'float32'|'error'"},
    {"parse", tdcore_parse, METH_O,
     "parse(request) -> (kind, index)\n\nClassifies a device request."},
    {"configure", (PyCFunction)(void (*)(void))tdcore_configure,
     METH_VARARGS | METH_KEYWORDS,
     "configure(profile, mode, float64)\n\nSets the policy in force."},
    {"settings", tdcore_settings, METH_NOARGS,
     "settings() -> dict\n\nThe policy in force."},
    {"install", (PyCFunction)(void (*)(void))tdcore_install,
     METH_VARARGS | METH_KEYWORDS,
     "install(**torch_objects)\n\nTakes the torch objects and hooks "
     "torch.device and torch.Generator."},
    {"uninstall", tdcore_uninstall, METH_NOARGS,
     "uninstall()\n\nRestores the hooked slots and drops torch objects."},
    {"is_installed", tdcore_is_installed, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* ---- module lifecycle --------------------------------------------------- */

static int
add_functions(PyObject *module, PyMethodDef *defs)
{
    return PyModule_AddFunctions(module, defs);
}

static int
tdcore_exec(PyObject *module)
{
    td_state *st = get_state(module);
    st->wrapper_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &td_wrapper_spec, NULL);
    if (st->wrapper_type == NULL
        || PyModule_AddType(module, st->wrapper_type) < 0)
    {
        return -1;
    }
#define INTERN(field, text)                                 \
    do {                                                    \
        st->field = PyUnicode_InternFromString(text);       \
        if (st->field == NULL) {                            \
            return -1;                                      \
        }                                                   \
    } while (0)
    INTERN(str_device, "device");
    INTERN(str_dtype, "dtype");
    INTERN(str_non_blocking, "non_blocking");
    INTERN(str_memory_format, "memory_format");
    INTERN(str_is_cpu, "is_cpu");
    INTERN(str_name, "__name__");
    INTERN(api_device, "torch.device");
    INTERN(api_generator, "torch.Generator");
    INTERN(str_accel_mark, "_torchdevice_on_accelerator");
#undef INTERN
    st->kw_device = PyTuple_Pack(1, st->str_device);
    st->records = td_sites_new(module);
    if (st->kw_device == NULL || st->records == NULL) {
        return -1;
    }
    if (add_functions(module, td_flags_methods) < 0
        || add_functions(module, td_hook_methods) < 0
        || add_functions(module, td_report_methods) < 0
        || add_functions(module, td_trace_methods) < 0
        || add_functions(module, td_moves_methods) < 0
        || add_functions(module, td_streams_methods) < 0
        || td_streams_exec(module, st) < 0
        || td_masq_init(module, st) < 0)
    {
        return -1;
    }
    static const char *kinds[] = {"KIND_FACTORY", "KIND_TO", "KIND_MOVE",
                                  "KIND_NUMPY", "KIND_PIN_MEMORY",
                                  "KIND_IS_PINNED"};
    for (int i = 0; i < (int)(sizeof(kinds) / sizeof(kinds[0])); i++) {
        if (PyModule_AddIntConstant(module, kinds[i], i) < 0) {
            return -1;
        }
    }
    return 0;
}

static int
tdcore_traverse(PyObject *module, visitproc visit, void *arg)
{
    td_state *st = get_state(module);
    Py_VISIT(st->wrapper_type);
    Py_VISIT(st->device_type);
    Py_VISIT(st->dtype_type);
    Py_VISIT(st->dev_cpu);
    Py_VISIT(st->dev_cuda);
    Py_VISIT(st->dev_mps);
    Py_VISIT(st->float64);
    Py_VISIT(st->float32);
    Py_VISIT(st->tensor_to);
    Py_VISIT(st->tensor_cpu);
    Py_VISIT(st->module_to);
    Py_VISIT(st->mode_stack_len);
    Py_VISIT(st->skip_prefixes);
    Py_VISIT(st->report_sink);
    Py_VISIT(st->tensor_type);
    Py_VISIT(st->tensor_storage);
    Py_VISIT(st->tensor_clone);
    Py_VISIT(st->intent_accel_cpu);
    Py_VISIT(st->intent_host_cuda);
    Py_VISIT(st->intent_host_mps);
    Py_VISIT(st->records);
    Py_VISIT(st->streams);
    Py_VISIT(st->masq);
    return 0;
}

static int
tdcore_clear(PyObject *module)
{
    td_state *st = get_state(module);
    if (td_installed_state() == st) {
        td_hooks_uninstall();
        atomic_store(&installed_state, NULL);
    }
    clear_torch_refs(st);
    Py_CLEAR(st->wrapper_type);
    Py_CLEAR(st->streams);
    Py_CLEAR(st->masq);
    Py_CLEAR(st->records);
    Py_CLEAR(st->str_device);
    Py_CLEAR(st->str_dtype);
    Py_CLEAR(st->str_non_blocking);
    Py_CLEAR(st->str_memory_format);
    Py_CLEAR(st->str_is_cpu);
    Py_CLEAR(st->str_name);
    Py_CLEAR(st->kw_device);
    Py_CLEAR(st->api_device);
    Py_CLEAR(st->api_generator);
    Py_CLEAR(st->str_accel_mark);
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
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
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
