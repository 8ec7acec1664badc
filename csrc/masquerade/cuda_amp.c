/* A callable that stands in for a torch function or method taking a device
 * *type* string ("cuda"): torch.autocast.__init__, GradScaler.__init__,
 * torch.is_autocast_enabled, torch.get_autocast_dtype, ...  It rewrites
 * "cuda" to the device type really used, so autocast and GradScaler run
 * there instead of warning "CUDA is not available" and disabling
 * themselves.  For autocast it also picks a dtype the target supports.
 *
 * Python equivalent:
 *
 *     class DeviceTypeArg:
 *         def __init__(self, wrapped, api, argname, argpos, *,
 *                      default_cuda=False, autocast=False): ...
 *         def __call__(self, *args, **kwargs):
 *             value = kwargs.get(argname, args[argpos] if ... else MISSING)
 *             if value == "cuda" or (value is MISSING and default_cuda):
 *                 value = TARGET_TYPE                  # "cpu" / "mps"
 *                 if autocast:
 *                     want = dtype or torch.float16    # CUDA's default
 *                     dtype = want if want in SUPPORTED else DEFAULT
 *             return wrapped(*args, **kwargs)
 *         def __get__(self, obj, cls): ...   # binds like a function
 *
 * Not a hot path (one call per autocast region): the rewritten call goes
 * through a tuple and a dict.
 */
#include "masquerade.h"

#include "core/fields.h"

#include <stddef.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *wrapped;      /* strong, never NULL */
    PyObject *api;          /* str, for the report and messages */
    PyObject *argname;      /* interned str */
    PyObject *dict;         /* __dict__ (functools.update_wrapper) */
    PyObject *weakreflist;
    Py_ssize_t argpos;      /* position of the argument, self included */
    int default_cuda;       /* a missing argument means "cuda" */
    int autocast;           /* also choose autocast's dtype */
} td_devtype;

static int
is_cuda_type(PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        return 0;
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(arg, &n);
    if (s == NULL) {
        PyErr_Clear();
        return 0;
    }
    return n >= 4 && s[0] == 'c' && s[1] == 'u' && s[2] == 'd' && s[3] == 'a'
           && (n == 4 || s[4] == ':');
}

static int
log_dtype_change(td_masq *m, td_devtype *w, PyObject *want, PyObject *chosen)
{
    if (td_get_report() && m->record != NULL) {
        PyObject *from = PyObject_Str(want);
        PyObject *to = from ? PyObject_Str(chosen) : NULL;
        PyObject *r = to ? PyObject_CallFunction(m->record, "OsOO", w->api,
                                                 "dtype", from, to)
                         : NULL;
        Py_XDECREF(from);
        Py_XDECREF(to);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    if (m->log_info == NULL) {
        return 0;
    }
    PyObject *msg = PyUnicode_FromFormat(
        "%U: %S is not supported by autocast on %S; using %S", w->api, want,
        m->target_type, chosen);
    if (msg == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallOneArg(m->log_info, msg);
    Py_DECREF(msg);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* Sets the dtype autocast will use on the target.  `dslot` is the
 * positional index of dtype, or -1 when it is not passed positionally. */
static int
choose_dtype(td_state *st, td_masq *m, td_devtype *w, PyObject *pos,
             PyObject *kw, Py_ssize_t dslot)
{
    PyObject *want = NULL;   /* borrowed */
    if (dslot >= 0 && dslot < PyTuple_GET_SIZE(pos)) {
        want = PyTuple_GET_ITEM(pos, dslot);
    }
    else {
        want = PyDict_GetItemWithError(kw, st->str_dtype);
        if (want == NULL && PyErr_Occurred()) {
            return -1;
        }
    }
    if (want == NULL || want == Py_None) {
        want = m->float16;   /* what autocast("cuda") means by default */
    }
    if (want == NULL || m->amp_dtypes == NULL || m->amp_default == NULL) {
        return 0;
    }
    int ok = PySequence_Contains(m->amp_dtypes, want);
    if (ok < 0) {
        return -1;
    }
    PyObject *chosen = ok ? want : m->amp_default;
    if (!ok && log_dtype_change(m, w, want, chosen) < 0) {
        return -1;
    }
    if (dslot >= 0 && dslot < PyTuple_GET_SIZE(pos)) {
        PyObject *old = PyTuple_GET_ITEM(pos, dslot);
        PyTuple_SET_ITEM(pos, dslot, Py_NewRef(chosen));
        Py_DECREF(old);
        return 0;
    }
    return PyDict_SetItem(kw, st->str_dtype, chosen);
}

static PyObject *
devtype_call(td_devtype *w, td_state *st, td_masq *m, PyObject *const *args,
             size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    Py_ssize_t slot = -1;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        if (PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, i), w->argname)
            == 0)
        {
            slot = nargs + i;
        }
    }
    if (slot < 0 && w->argpos < nargs) {
        slot = w->argpos;
    }
    int rewrite = slot >= 0 ? is_cuda_type(args[slot]) : w->default_cuda;
    if (!rewrite || m->target_type == NULL) {
        return PyObject_Vectorcall(w->wrapped, args, nargsf, kwnames);
    }
    PyObject *pos = NULL, *kw = NULL, *result = NULL;
    pos = PyTuple_New(nargs);
    kw = PyDict_New();
    if (pos == NULL || kw == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyObject *v = (i == slot) ? m->target_type : args[i];
        PyTuple_SET_ITEM(pos, i, Py_NewRef(v));
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        if (PyDict_SetItem(kw, PyTuple_GET_ITEM(kwnames, i), args[nargs + i])
            < 0)
        {
            goto done;
        }
    }
    if ((slot < 0 || slot >= nargs)
        && PyDict_SetItem(kw, w->argname, m->target_type) < 0)
    {
        goto done;
    }
    if (w->autocast && choose_dtype(st, m, w, pos, kw, w->argpos + 1) < 0) {
        goto done;
    }
    if (td_get_report() && m->record != NULL) {
        PyObject *r = PyObject_CallFunction(m->record, "OssO", w->api,
                                            "redirected", "cuda",
                                            m->target_type);
        if (r == NULL) {
            goto done;
        }
        Py_DECREF(r);
    }
    result = PyObject_Call(w->wrapped, pos, kw);
done:
    Py_XDECREF(pos);
    Py_XDECREF(kw);
    return result;
}

/* Holds the masquerade snapshot for the whole call (masquerade.h). */
static PyObject *
devtype_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                   PyObject *kwnames)
{
    td_state *st = td_type_state(Py_TYPE(self));
    td_masq *m = td_masq_hold(st);
    if (m == NULL) {
        return NULL;
    }
    PyObject *result = devtype_call((td_devtype *)self, st, m, args, nargsf,
                                    kwnames);
    Py_DECREF(m);
    return result;
}

static PyObject *
devtype_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"wrapped", "api", "argname", "argpos",
                             "default_cuda", "autocast", NULL};
    PyObject *wrapped, *api, *argname;
    Py_ssize_t argpos;
    int default_cuda = 0, autocast = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OUUn|$pp:DeviceTypeArg",
                                     kwlist, &wrapped, &api, &argname,
                                     &argpos, &default_cuda, &autocast))
    {
        return NULL;
    }
    if (!PyCallable_Check(wrapped) || argpos < 0) {
        PyErr_SetString(PyExc_TypeError,
                        "DeviceTypeArg: wrapped must be callable and argpos "
                        ">= 0");
        return NULL;
    }
    td_devtype *w = (td_devtype *)type->tp_alloc(type, 0);
    if (w == NULL) {
        return NULL;
    }
    w->vectorcall = devtype_vectorcall;
    w->wrapped = Py_NewRef(wrapped);
    w->api = Py_NewRef(api);
    Py_INCREF(argname);
    PyUnicode_InternInPlace(&argname);
    w->argname = argname;
    w->argpos = argpos;
    w->default_cuda = default_cuda;
    w->autocast = autocast;
    return (PyObject *)w;
}

static int
devtype_traverse(PyObject *self, visitproc visit, void *arg)
{
    td_devtype *w = (td_devtype *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(w->wrapped);
    Py_VISIT(w->api);
    Py_VISIT(w->argname);
    Py_VISIT(w->dict);
    return 0;
}

static int
devtype_clear(PyObject *self)
{
    td_devtype *w = (td_devtype *)self;
    Py_CLEAR(w->wrapped);
    Py_CLEAR(w->api);
    Py_CLEAR(w->argname);
    Py_CLEAR(w->dict);
    return 0;
}

TD_GC_DEALLOC_WEAKREF(devtype_dealloc, td_devtype, devtype_clear)

static PyObject *
devtype_repr(PyObject *self)
{
    td_devtype *w = (td_devtype *)self;
    return PyUnicode_FromFormat("<TorchDevice._tdcore.DeviceTypeArg for %R>",
                                w->wrapped);
}

static PyMemberDef devtype_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(td_devtype, vectorcall),
     READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(td_devtype, dict), READONLY,
     NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(td_devtype, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

/* Binds like a function (so it can stand in for __init__) and pickles by
 * name, as Wrapper does (wrapper.c). */
static PyMethodDef devtype_methods[] = {
    {"__reduce__", td_reduce_by_name, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef devtype_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL,
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot devtype_slots[] = {
    {Py_tp_new, devtype_new},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, td_bind_like_function},
    {Py_tp_methods, devtype_methods},
    {Py_tp_traverse, devtype_traverse},
    {Py_tp_clear, devtype_clear},
    {Py_tp_dealloc, devtype_dealloc},
    {Py_tp_repr, devtype_repr},
    {Py_tp_members, devtype_members},
    {Py_tp_getset, devtype_getset},
    {Py_tp_doc,
     "DeviceTypeArg(wrapped, api, argname, argpos, *, default_cuda=False, "
     "autocast=False)\n\nCalls wrapped with a \"cuda\" device type replaced "
     "by the device type really used."},
    {0, NULL},
};

PyType_Spec td_devtype_arg_spec = {
    .name = "TorchDevice._tdcore.DeviceTypeArg",
    .basicsize = sizeof(td_devtype),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = devtype_slots,
};
