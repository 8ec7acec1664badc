/* The state of the CUDA masquerade and the entry points the Python layer
 * uses to set it up.
 *
 * Python equivalent:
 *
 *     state = MasqState()
 *     def masq_install(**torch_objects): state.__dict__.update(...)
 *     def masq_function(name, module_name):   # a builtin named `name`
 *         return builtin(TABLES[name], self=_tdcore, __module__=module_name)
 *     def masq_configure(truthful=None, truth_for=None): ...
 *
 * The replacements are builtins whose __name__ and __module__ are those of
 * the torch function they replace, so pickling them by reference and
 * reading their names give what torch's own would.
 */
#include "masquerade.h"

#include "core/fields.h"

#include <stddef.h>
#include <string.h>
#include <structmember.h>

/* ---- the snapshot ------------------------------------------------------- */

#define OBJ_FIELD(name) {#name, offsetof(td_masq, name)}

/* The fields masq_install() takes, in struct order. */
static const struct {
    const char *name;
    size_t offset;
} obj_fields[] = {
    OBJ_FIELD(props),
    OBJ_FIELD(props_factory),
    OBJ_FIELD(capability),
    OBJ_FIELD(target_device),
    OBJ_FIELD(orig_is_available),
    OBJ_FIELD(truth_for),
    OBJ_FIELD(generator),
    OBJ_FIELD(device_allocated),
    OBJ_FIELD(device_reserved),
    OBJ_FIELD(device_empty_cache),
    OBJ_FIELD(device_set_fraction),
    OBJ_FIELD(device_max_allocated),
    OBJ_FIELD(device_max_reserved),
    OBJ_FIELD(device_reset_peak),
    OBJ_FIELD(rss),
    OBJ_FIELD(mem_info),
    OBJ_FIELD(orig_summary),
    OBJ_FIELD(log_debug),
    OBJ_FIELD(log_info),
    OBJ_FIELD(cuda_module),
    OBJ_FIELD(target_type),
    OBJ_FIELD(record),
    OBJ_FIELD(originals),
};

#define N_INSTALLED (sizeof(obj_fields) / sizeof(obj_fields[0]))
#define MASQ_FIELDS TD_FIELDS(td_masq, props, counters)

static PyObject **
field_at(td_masq *m, size_t i)
{
    return (PyObject **)((char *)m + obj_fields[i].offset);
}

static int
MasqState_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return td_fields_visit(self, MASQ_FIELDS, visit, arg);
}

static int
MasqState_clear(PyObject *self)
{
    td_fields_clear(self, MASQ_FIELDS);
    return 0;
}

TD_GC_DEALLOC(MasqState_dealloc, MasqState_clear)

static PyType_Slot masq_state_slots[] = {
    {Py_tp_traverse, MasqState_traverse},
    {Py_tp_clear, MasqState_clear},
    {Py_tp_dealloc, MasqState_dealloc},
    {Py_tp_doc, "State of the CUDA masquerade (internal, immutable)."},
    {0, NULL},
};

static PyType_Spec masq_state_spec = {
    .name = "TorchDevice._tdcore._MasqState",
    .basicsize = sizeof(td_masq),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = masq_state_slots,
};

static PyType_Slot masq_counters_slots[] = {
    {Py_tp_doc, "Counters of the CUDA masquerade (internal)."},
    {0, NULL},
};

static PyType_Spec masq_counters_spec = {
    .name = "TorchDevice._tdcore._MasqCounters",
    .basicsize = sizeof(td_masq_counters),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = masq_counters_slots,
};

td_masq *
td_masq_hold(td_state *st)
{
    if (st == NULL || st->masq == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_tdcore has been cleared");
        return NULL;
    }
    return (td_masq *)Py_NewRef(st->masq);
}

/* A copy of `src` (every field a new reference, the counters shared) to
 * change before it is published. */
static td_masq *
masq_copy(td_masq *src)
{
    td_masq *m = PyObject_GC_New(td_masq, Py_TYPE(src));
    if (m == NULL) {
        return NULL;
    }
    td_fields_copy((PyObject *)m, (PyObject *)src, MASQ_FIELDS);
    m->total_memory = src->total_memory;
    m->device_memory = src->device_memory;
    m->bf16 = src->bf16;
    m->mps_announced = src->mps_announced;
    m->truthful = src->truthful;
    m->device_count = src->device_count;
    PyObject_GC_Track((PyObject *)m);
    return m;
}

/* Makes `m` (stolen) the snapshot in force; callables still running keep
 * theirs. */
static void
masq_publish(td_state *st, td_masq *m)
{
    Py_XSETREF(st->masq, (PyObject *)m);
}

/* ---- entry points ------------------------------------------------------- */

static PyObject *
masq_install(PyObject *module, PyObject *args, PyObject *kwargs)
{
    td_state *st = td_module_state(module);
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    if (PyTuple_GET_SIZE(args) != 0 || kwargs == NULL) {
        PyErr_SetString(PyExc_TypeError, "masq_install() takes keywords");
        return NULL;
    }
    if (st->masq == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_tdcore has been cleared");
        return NULL;
    }
    /* Validate every key first, so that an error changes nothing. */
    while (PyDict_Next(kwargs, &pos, &key, &value)) {
        const char *k = PyUnicode_AsUTF8(key);
        if (k == NULL) {
            return NULL;
        }
        int known = strcmp(k, "total_memory") == 0
                    || strcmp(k, "device_memory") == 0
                    || strcmp(k, "bf16") == 0
                    || strcmp(k, "mps_announced") == 0;
        for (size_t i = 0; i < N_INSTALLED && !known; i++) {
            known = strcmp(k, obj_fields[i].name) == 0;
        }
        if (!known) {
            PyErr_Format(PyExc_TypeError,
                         "masq_install() got an unexpected keyword %R", key);
            return NULL;
        }
    }
    td_masq *old = (td_masq *)st->masq;
    PyObject *total = PyDict_GetItemString(kwargs, "total_memory");
    long long total_memory = old->total_memory;
    if (total != NULL) {
        total_memory = PyLong_AsLongLong(total);
        if (total_memory == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    int flags[3] = {old->device_memory, old->bf16, old->mps_announced};
    const char *flag_names[3] = {"device_memory", "bf16", "mps_announced"};
    for (int i = 0; i < 3; i++) {
        PyObject *v = PyDict_GetItemString(kwargs, flag_names[i]);
        if (v != NULL && (flags[i] = PyObject_IsTrue(v)) < 0) {
            return NULL;
        }
    }
    /* Nothing above ran Python code, so `old` is still the one in force. */
    td_masq *m = masq_copy((td_masq *)st->masq);
    if (m == NULL) {
        return NULL;
    }
    pos = 0;
    while (PyDict_Next(kwargs, &pos, &key, &value)) {
        for (size_t i = 0; i < N_INSTALLED; i++) {
            if (PyUnicode_CompareWithASCIIString(key, obj_fields[i].name)
                == 0)
            {
                Py_XSETREF(*field_at(m, i),
                           value == Py_None ? NULL : Py_NewRef(value));
            }
        }
    }
    m->total_memory = total_memory;
    m->device_memory = flags[0];
    m->bf16 = flags[1];
    m->mps_announced = flags[2];
    td_install *inst = td_install_acquire();
    if (inst != NULL) {
        Py_XSETREF(m->device_type, Py_NewRef((PyObject *)inst->device_type));
        Py_DECREF(inst);
    }
    masq_publish(st, m);
    Py_RETURN_NONE;
}

PyObject *
td_masq_props(td_masq *m)
{
    if (m->props == NULL && m->props_factory != NULL) {
        /* Two threads may both build it; the first one stored stays (a
         * snapshot's props is set once, never replaced). */
        PyObject *props = PyObject_CallNoArgs(m->props_factory);
        if (props == NULL) {
            return NULL;
        }
        if (m->props == NULL) {
            m->props = props;
        }
        else {
            Py_DECREF(props);
        }
    }
    if (m->props == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "TorchDevice: the CUDA masquerade is not installed");
    }
    return m->props;
}

static PyMethodDef *const function_tables[] = {
    td_cuda_query_methods, td_cuda_memory_methods, td_cuda_rng_methods,
    td_cuda_misc_methods,
};

static PyObject *
find_function(PyObject *module, PyMethodDef *const *tables, size_t ntables,
              const char *name, PyObject *module_name)
{
    for (size_t t = 0; t < ntables; t++) {
        for (PyMethodDef *def = tables[t]; def->ml_name; def++) {
            if (strcmp(name, def->ml_name) == 0) {
                return PyCFunction_NewEx(def, module, module_name);
            }
        }
    }
    PyErr_Format(PyExc_KeyError, "no masquerade function named '%s'", name);
    return NULL;
}

/* "mps.<name>" names the reverse direction's functions. */
static PyObject *
masq_function(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyUnicode_Check(args[0])
        || !PyUnicode_Check(args[1]))
    {
        PyErr_SetString(PyExc_TypeError,
                        "masq_function(name: str, module_name: str)");
        return NULL;
    }
    const char *name = PyUnicode_AsUTF8(args[0]);
    if (name == NULL) {
        return NULL;
    }
    if (strncmp(name, "mps.", 4) == 0) {
        PyMethodDef *const reverse[] = {td_mps_reverse_methods};
        return find_function(module, reverse, 1, name + 4, args[1]);
    }
    /* torch.accelerator's queries are recorded under their own names. */
    if (PyUnicode_CompareWithASCIIString(args[1], "torch.accelerator") == 0) {
        for (PyMethodDef *def = td_accel_query_methods; def->ml_name; def++) {
            if (strcmp(name, def->ml_name) == 0) {
                return PyCFunction_NewEx(def, module, args[1]);
            }
        }
    }
    return find_function(module, function_tables,
                         sizeof(function_tables) / sizeof(function_tables[0]),
                         name, args[1]);
}

static int
append_names(PyObject *names, PyMethodDef *defs, const char *prefix)
{
    for (PyMethodDef *def = defs; def->ml_name; def++) {
        PyObject *s = PyUnicode_FromFormat("%s%s", prefix, def->ml_name);
        if (s == NULL || PyList_Append(names, s) < 0) {
            Py_XDECREF(s);
            return -1;
        }
        Py_DECREF(s);
    }
    return 0;
}

static PyObject *
masq_names(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(a))
{
    PyObject *names = PyList_New(0);
    if (names == NULL) {
        return NULL;
    }
    size_t ntables = sizeof(function_tables) / sizeof(function_tables[0]);
    for (size_t t = 0; t < ntables; t++) {
        if (append_names(names, function_tables[t], "") < 0) {
            Py_DECREF(names);
            return NULL;
        }
    }
    if (append_names(names, td_mps_reverse_methods, "mps.") < 0) {
        Py_DECREF(names);
        return NULL;
    }
    return names;
}

static PyObject *
masq_configure(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"truthful", "truth_for", "device_count", NULL};
    td_state *st = td_module_state(module);
    PyObject *truthful = NULL, *truth_for = NULL;
    int count = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOi:masq_configure",
                                     kwlist, &truthful, &truth_for, &count))
    {
        return NULL;
    }
    if (count < 0) {
        PyErr_SetString(PyExc_ValueError, "device_count must be >= 1");
        return NULL;
    }
    int on = -1;
    if (truthful != NULL && (on = PyObject_IsTrue(truthful)) < 0) {
        return NULL;
    }
    if (truth_for != NULL) {
        if (!PyTuple_CheckExact(truth_for)) {
            PyErr_SetString(PyExc_TypeError, "truth_for must be a tuple");
            return NULL;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(truth_for); i++) {
            if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(truth_for, i))) {
                PyErr_SetString(PyExc_TypeError,
                                "truth_for must hold package names (str)");
                return NULL;
            }
        }
    }
    if (st->masq == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_tdcore has been cleared");
        return NULL;
    }
    td_masq *m = masq_copy((td_masq *)st->masq);
    if (m == NULL) {
        return NULL;
    }
    if (truth_for != NULL) {
        Py_XSETREF(m->truth_for, Py_NewRef(truth_for));
    }
    if (on >= 0) {
        m->truthful = on;
    }
    if (count > 0) {
        m->device_count = count;
        if (atomic_load(&TD_MC(m)->current_index) >= count) {
            atomic_store(&TD_MC(m)->current_index, 0);
        }
    }
    masq_publish(st, m);
    Py_RETURN_NONE;
}

TD_MASQ_NOARGS(masq_settings)
{
    PyObject *truth_for = m->truth_for ? m->truth_for : Py_None;
    return Py_BuildValue("{sOsOsLsi}", "truthful",
                         m->truthful ? Py_True : Py_False,
                         "truth_for", truth_for, "total_memory",
                         m->total_memory, "device_count",
                         m->device_count);
}

static PyMethodDef masq_methods[] = {
    {"masq_install", (PyCFunction)(void (*)(void))masq_install,
     METH_VARARGS | METH_KEYWORDS,
     "masq_install(**objects)\n\nHands the masquerade the objects it answers "
     "from (device properties, generator, memory sources)."},
    {"masq_function", (PyCFunction)(void (*)(void))masq_function,
     METH_FASTCALL,
     "masq_function(name, module_name) -> builtin\n\nThe replacement for "
     "torch's `name`, reporting `module_name` as its __module__."},
    {"masq_names", masq_names, METH_NOARGS,
     "masq_names() -> list\n\nEvery name masq_function() knows."},
    {"masq_configure", (PyCFunction)(void (*)(void))masq_configure,
     METH_VARARGS | METH_KEYWORDS,
     "masq_configure(*, truthful=None, truth_for=None, device_count=0)\n\n"
     "Who sees the truth from torch.cuda.is_available(); how many devices "
     "are shown (0: unchanged)."},
    {"masq_settings", masq_settings, METH_NOARGS,
     "masq_settings() -> dict"},
    {NULL, NULL, 0, NULL},
};

static int
add_type(PyObject *module, PyType_Spec *spec)
{
    PyObject *tp = PyType_FromModuleAndSpec(module, spec, NULL);
    if (tp == NULL) {
        return -1;
    }
    int rc = PyModule_AddType(module, (PyTypeObject *)tp);
    Py_DECREF(tp);
    return rc;
}

int
td_masq_init(PyObject *module, td_state *st)
{
    /* Not bound to the module, as report.c's table: see there. */
    PyTypeObject *tp = (PyTypeObject *)PyType_FromSpec(&masq_counters_spec);
    if (tp == NULL) {
        return -1;
    }
    td_masq_counters *c = PyObject_New(td_masq_counters, tp);
    Py_DECREF(tp);   /* the instance holds its type */
    if (c == NULL) {
        return -1;
    }
    atomic_init(&c->initialized, 0);
    atomic_init(&c->current_index, 0);
    atomic_init(&c->hwm_trusted, 1);
    atomic_init(&c->fraction_ppm, 1000000);
    atomic_init(&c->peak_allocated, 0);
    atomic_init(&c->peak_reserved, 0);
    atomic_init(&c->last_sample, -1);
    atomic_init(&c->total_allocated, 0);
    atomic_init(&c->total_freed, 0);
    atomic_init(&c->num_samples, 0);
    atomic_init(&c->rss_cache, 0);
    atomic_init(&c->rss_cache_ns, 0);
    atomic_init(&c->sync_debug_mode, 0);

    tp = (PyTypeObject *)PyType_FromModuleAndSpec(module, &masq_state_spec,
                                                  NULL);
    if (tp == NULL) {
        Py_DECREF(c);
        return -1;
    }
    td_masq *m = PyObject_GC_New(td_masq, tp);
    Py_DECREF(tp);
    if (m == NULL) {
        Py_DECREF(c);
        return -1;
    }
    memset((char *)m + sizeof(PyObject), 0, sizeof(td_masq) - sizeof(PyObject));
    m->counters = (PyObject *)c;
    m->device_count = 1;
    PyObject_GC_Track((PyObject *)m);
    st->masq = (PyObject *)m;

#define INTERN(field, text)                                 \
    do {                                                    \
        m->field = PyUnicode_InternFromString(text);        \
        if (m->field == NULL) {                             \
            return -1;                                      \
        }                                                   \
    } while (0)
    INTERN(str_manual_seed, "manual_seed");
    INTERN(str_seed, "seed");
    INTERN(str_initial_seed, "initial_seed");
    INTERN(str_get_state, "get_state");
    INTERN(str_set_state, "set_state");
    INTERN(str_optional, "optional");
    INTERN(str_abbreviated, "abbreviated");
    INTERN(str_is_cuda, "is_cuda");
    INTERN(str_type, "type");
    INTERN(str_pname, "name");
    INTERN(api_prefix, "torch.cuda.");
#undef INTERN
    m->truth_for = PyTuple_New(0);
    if (m->truth_for == NULL) {
        return -1;
    }
    if (add_type(module, &td_props_spec) < 0
        || PyModule_AddFunctions(module, masq_methods) < 0)
    {
        return -1;
    }
    return 0;
}
