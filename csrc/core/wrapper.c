/* One callable type that stands in for a torch function or method and
 * rewrites its device argument before forwarding to the saved original.
 *
 * Python equivalent:
 *
 *     class Wrapper:
 *         def __init__(self, wrapped, kind, api, grammar, fallback=None,
 *                      request=None): ...
 *         def __call__(self, *args, **kwargs):
 *             device = find_device(args, kwargs, self.grammar)
 *             target = resolve(device)
 *             return self.wrapped(*replace(args, kwargs, target))
 *         def __get__(self, obj, cls):   # binds like a function
 *             return self if obj is None else MethodType(self, obj)
 *
 * Where the device and dtype are, and what a missing device means, comes
 * from the grammar entry the patch table hands over (TorchDevice/
 * _grammar.py), read once at construction.  Calls arrive through vectorcall
 * and leave through vectorcall; arguments are copied only when one of them
 * is rewritten.
 */
#include "tdcore.h"

#include "fields.h"

#include <stdatomic.h>
#include <structmember.h>
#include <stddef.h>
#include <string.h>

/* Set at the first float64 request made float32 in this process, which is
 * recorded (and so logged) even where the report is off. */
static atomic_int td_downcast_told_v = 0;

typedef enum {
    TD_KIND_FACTORY = 0,    /* device= keyword (or a fixed position) */
    TD_KIND_TO = 1,         /* Tensor.to / Module.to call forms */
    TD_KIND_MOVE = 2,       /* .cuda() / .cpu() / .mps(): fixed request */
    TD_KIND_NUMPY = 3,      /* Tensor.numpy: always reaches the host */
    TD_KIND_PIN_MEMORY = 4, /* Tensor.pin_memory */
    TD_KIND_IS_PINNED = 5,  /* Tensor.is_pinned */
    TD_KIND_DOUBLE = 6,     /* Tensor.double: .to(torch.float64) by name */
    TD_KIND_CDOUBLE = 7,    /* Tensor.cdouble: .to(torch.complex128) */
    TD_KIND_COUNT = 8,
} td_kind;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *wrapped;      /* the original; None where torch has none */
    PyObject *fallback;     /* MOVE: the `to` used when the target moves */
    PyObject *api;          /* "torch.zeros", for the report */
    PyObject *grammar;      /* the _grammar.DeviceArg it was built from */
    PyObject *dispatch;     /* FACTORY whose data argument torch dispatches
                               __torch_function__ on: (public, relevant,
                               *args, **kwargs) -> the override's result or
                               NotImplemented (TorchDevice/_overrides.py);
                               else None */
    PyObject *device_kw;    /* interned keyword of the device, or NULL */
    PyObject *dtype_kw;     /* interned keyword of the dtype, or NULL */
    PyObject *data_kw;      /* interned keyword of the data, or NULL */
    PyObject *dict;
    PyObject *weakreflist;
    int kind;
    int none_policy;        /* apply the policy when no device is given */
    td_req_kind request;    /* MOVE: what the method asks for */
    Py_ssize_t device_pos;  /* position of the device argument, or -1 */
    Py_ssize_t dtype_pos;   /* position of the dtype after a positional
                               device, or -1 */
    Py_ssize_t data_pos;    /* position of the data whose dtype the call
                               keeps when it names none, or -1 */
} td_wrapper;

#define TD_SMALL_STACK 12

typedef struct {
    Py_ssize_t index;
    PyObject *value;        /* borrowed for the duration of the call */
} td_subst;

static int
kw_is(PyObject *name, PyObject *interned)
{
    return name == interned
           || (PyUnicode_GET_LENGTH(name) == PyUnicode_GET_LENGTH(interned)
               && PyUnicode_Compare(name, interned) == 0);
}

static Py_ssize_t
find_kw(PyObject *kwnames, Py_ssize_t nargs, PyObject *interned)
{
    if (kwnames == NULL || interned == NULL) {
        return -1;
    }
    Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < nkw; i++) {
        if (kw_is(PyTuple_GET_ITEM(kwnames, i), interned)) {
            return nargs + i;
        }
    }
    return -1;
}

/* The data a constructor copies or a *_like call follows, by position or
 * by keyword (as_tensor(data=x)), borrowed; NULL where the call has none. */
static PyObject *
data_arg(td_wrapper *w, PyObject *const *args, Py_ssize_t nargs,
         PyObject *kwnames)
{
    if (w->data_pos >= 0 && nargs > w->data_pos) {
        return args[w->data_pos];
    }
    Py_ssize_t k = find_kw(kwnames, nargs, w->data_kw);
    return k >= 0 ? args[k] : NULL;
}

/* Calls fn with args where the listed slots are substituted and, when
 * add_device / add_dtype are set, device= / dtype= keywords are appended. */
static PyObject *
forward(td_install *st, PyObject *fn, PyObject *const *args, Py_ssize_t nargs,
        PyObject *kwnames, const td_subst *subst, int nsubst,
        PyObject *add_device, PyObject *add_dtype)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    Py_ssize_t nadd = (add_device != NULL) + (add_dtype != NULL);
    Py_ssize_t total = nargs + nkw + nadd;
    PyObject *small[TD_SMALL_STACK];
    PyObject **buf = small;
    PyObject *names = kwnames;   /* owned only when something is added */
    PyObject *result = NULL;

    if (total > TD_SMALL_STACK) {
        buf = PyMem_Malloc((size_t)total * sizeof(PyObject *));
        if (buf == NULL) {
            return PyErr_NoMemory();
        }
    }
    if (nargs + nkw > 0) {
        memcpy(buf, args, (size_t)(nargs + nkw) * sizeof(PyObject *));
    }
    for (int i = 0; i < nsubst; i++) {
        buf[subst[i].index] = subst[i].value;
    }
    if (nadd > 0) {
        Py_ssize_t at = nargs + nkw;
        if (add_device != NULL) {
            buf[at++] = add_device;
        }
        if (add_dtype != NULL) {
            buf[at] = add_dtype;
        }
        if (nkw == 0 && add_dtype == NULL) {
            names = Py_NewRef(st->kw_device);
        }
        else {
            names = PyTuple_New(nkw + nadd);
            if (names == NULL) {
                goto done;
            }
            for (Py_ssize_t i = 0; i < nkw; i++) {
                PyTuple_SET_ITEM(names, i,
                                 Py_NewRef(PyTuple_GET_ITEM(kwnames, i)));
            }
            at = nkw;
            if (add_device != NULL) {
                PyTuple_SET_ITEM(names, at++, Py_NewRef(st->str_device));
            }
            if (add_dtype != NULL) {
                PyTuple_SET_ITEM(names, at, Py_NewRef(st->str_dtype));
            }
        }
    }
    result = PyObject_Vectorcall(fn, buf, nargs, names);
    if (nadd > 0) {
        Py_DECREF(names);
    }
done:
    if (buf != small) {
        PyMem_Free(buf);
    }
    return result;
}

/* MPS has no float64, nor may another accelerator (its capability record,
 * docs/hardware.md): a float64 request that lands there becomes float32
 * (reported) or an error, by configuration; complex128, a pair of float64,
 * becomes complex64 by the same rule (MPS has no complex128 either).
 * `wide` is the dtype asked for (float64 or complex128).  Returns 0 with
 * *dtype set to the dtype to ask for instead or left NULL (the call keeps
 * `wide`), or -1 with the error set.  The one decision for such a dtype=
 * and for such data (float64_data_check). */
static int
float64_lowered(td_install *st, td_wrapper *w, td_request req,
                td_resolution res, PyObject *wide, PyObject **dtype)
{
    switch (td_float64_action(td_get_profile(), td_get_accel_float64(), req,
                              res, td_get_float64()))
    {
    case TD_DTYPE_KEEP:
        return 0;
    case TD_DTYPE_ERROR:
        td_float64_error(st, w->api, wide);
        return -1;
    case TD_DTYPE_TO_FLOAT32:
        break;
    }
    *dtype = td_narrow_dtype(st, wide);
    /* The program computes in float32 where it asked for float64: the
     * report says so at its call site, and the log warns of the first one
     * even where the report is off (_log.sink), since numbers change. */
    if ((td_get_report()
         || !atomic_exchange_explicit(&td_downcast_told_v, 1,
                                      memory_order_relaxed))
        && td_record(st->records, st, w->api, st->str_downcast,
                     td_dtype_name(st, wide), td_dtype_name(st, *dtype)) < 0)
    {
        return -1;
    }
    return 0;
}

/* A conversion without a device leaves `tensor` where it is: a float64
 * (or complex128: `wide`) conversion of a tensor on an accelerator without
 * float64 lands there.  Sets *lowered to float32 (complex64) where it is
 * lowered, else NULL; -1 with the error set under TORCHDEVICE_FLOAT64=error. */
static int
float64_where_it_is(td_install *st, td_wrapper *w, PyObject *tensor,
                    PyObject *wide, PyObject **lowered)
{
    *lowered = NULL;
    PyObject *dev = PyObject_GetAttr(tensor, st->str_device);
    if (dev == NULL) {
        PyErr_Clear();      /* no device to tell by: torch decides */
        return 0;
    }
    td_request req = td_request_from_object(st, dev);
    Py_DECREF(dev);
    return float64_lowered(st, w, req, TD_STAYS, wide, lowered);
}

/* A dtype=torch.float64 (or complex128) in slot dslot: *subst is filled
 * when it must be replaced.  Returns 0, or -1 with an error set. */
static int
float64_check(td_install *st, td_wrapper *w, td_request req, td_resolution res,
              PyObject *const *args, Py_ssize_t dslot, td_subst *subst,
              int *nsubst)
{
    if (dslot < 0 || td_narrow_dtype(st, args[dslot]) == NULL) {
        return 0;
    }
    PyObject *lowered = NULL;
    if (float64_lowered(st, w, req, res, args[dslot], &lowered) < 0) {
        return -1;
    }
    if (lowered != NULL) {
        subst[*nsubst].index = dslot;
        subst[*nsubst].value = lowered;
        (*nsubst)++;
    }
    return 0;
}

/* The first positional from `from` on that is a dtype (as_tensor(data,
 * dtype), torch.softmax(x, 0, dtype)), or -1: the call names its dtype
 * there. */
static Py_ssize_t
dtype_by_position(td_install *st, PyObject *const *args, Py_ssize_t nargs,
                  Py_ssize_t from)
{
    for (Py_ssize_t i = from; i < nargs; i++) {
        if (Py_TYPE(args[i]) == st->dtype_type) {
            return i;
        }
    }
    return -1;
}

/* Whether `data` holds float64 or complex128: a tensor or array (its
 * dtype), or a nested list whose first leaf does (torch infers from every
 * leaf; the first stands for them).  Python numbers take torch's default
 * dtype.  1 with *wide set to torch's dtype (borrowed), 0 (neither, or
 * nothing to tell by: torch decides), or -1 on error. */
static int
holds_float64(td_install *st, PyObject *data, PyObject **wide)
{
    PyObject *leaf = Py_NewRef(data);
    for (int depth = 0; depth < 64 && (PyList_Check(leaf)
                                       || PyTuple_Check(leaf)); depth++)
    {
        if (PySequence_Size(leaf) <= 0) {
            Py_DECREF(leaf);
            PyErr_Clear();
            return 0;
        }
        Py_SETREF(leaf, PySequence_GetItem(leaf, 0));
        if (leaf == NULL) {
            return -1;
        }
    }
    if (PyFloat_CheckExact(leaf) || PyLong_CheckExact(leaf)
        || PyBool_Check(leaf) || PyComplex_CheckExact(leaf))
    {
        Py_DECREF(leaf);
        return 0;
    }
    PyObject *dtype = NULL;
    int found = td_optional_attr(leaf, st->str_dtype, &dtype);
    Py_DECREF(leaf);
    if (found <= 0) {
        PyErr_Clear();          /* a dtype that raises: torch's to judge */
        return 0;
    }
    /* Where set, *wide is the installation's own dtype, which it holds. */
    *wide = td_narrow_dtype(st, dtype) != NULL ? dtype : NULL;
    if (Py_TYPE(dtype) != st->dtype_type) {
        /* numpy's dtypes (and pandas') compare equal to their names. */
        PyObject *names[2] = {st->str_float64, st->str_complex128};
        PyObject *dtypes[2] = {st->float64, st->complex128};
        for (int i = 0; i < 2 && *wide == NULL; i++) {
            int is = PyObject_RichCompareBool(dtype, names[i], Py_EQ);
            if (is < 0) {
                PyErr_Clear();
            }
            else if (is) {
                *wide = dtypes[i];
            }
        }
    }
    Py_DECREF(dtype);
    return *wide != NULL;
}

/* A call that names no dtype keeps its data's (the tensor moved, the array
 * a constructor copies): float64 data landing where float64 is not
 * computed is a float64 request like dtype=torch.float64 (docs/policy.md;
 * CUDA programs move numpy's float64 arrays all the time).  Sets *dtype to
 * the dtype to ask for instead (float32), leaves it NULL when the call
 * stays as it is; -1 with an error set under TORCHDEVICE_FLOAT64=error. */
static int
float64_data_check(td_install *st, td_wrapper *w, td_request req,
                   td_resolution res, PyObject *data, PyObject **dtype)
{
    /* The policy first: it is cheaper than looking at the data. */
    if (td_float64_action(td_get_profile(), td_get_accel_float64(), req, res,
                          TD_FLOAT64_DOWNCAST) == TD_DTYPE_KEEP)
    {
        return 0;
    }
    PyObject *wide = NULL;
    int is = holds_float64(st, data, &wide);
    if (is <= 0) {
        return is;
    }
    return float64_lowered(st, w, req, res, wide, dtype);
}

/* callee(*head, *args, **kwargs): a Python helper of ours handed the
 * call's own arguments after `nhead` of its own. */
static PyObject *
call_with_head(PyObject *callee, PyObject *const *head, Py_ssize_t nhead,
               PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject **stack = PyMem_New(PyObject *, nhead + nargs + nkw);
    if (stack == NULL) {
        return PyErr_NoMemory();
    }
    memcpy(stack, head, (size_t)nhead * sizeof(PyObject *));
    memcpy(stack + nhead, args, (size_t)(nargs + nkw) * sizeof(PyObject *));
    PyObject *result = PyObject_Vectorcall(callee, stack,
                                           (size_t)(nhead + nargs), kwnames);
    PyMem_Free(stack);
    return result;
}

/* made_dtype(fn, *args, **kwargs): the installation's probe, called with
 * the call's own arguments after fn. */
static PyObject *
probe_made_dtype(td_install *st, PyObject *fn, PyObject *const *args,
                 Py_ssize_t nargs, PyObject *kwnames)
{
    return call_with_head(st->made_dtype, &fn, 1, args, nargs, kwnames);
}

/* A constructor that names no dtype, where the program made float64 torch's
 * default dtype (torch.set_default_dtype): what it makes on a device
 * without float64 is a float64 request when its result is floating.  Which
 * results are depends on the arguments (arange(3) is int64, arange(0.5)
 * and tensor([1.0]) are not), so the call is made on the meta device first,
 * which allocates nothing.  Costs one call of get_default_dtype, and only
 * where float64 would be lowered.  *dtype as in float64_data_check. */
static int
default_float64_check(td_install *st, td_wrapper *w, td_request req,
                      td_resolution res, PyObject *const *args,
                      Py_ssize_t nargs, PyObject *kwnames, PyObject **dtype)
{
    if (td_float64_action(td_get_profile(), td_get_accel_float64(), req, res,
                          TD_FLOAT64_DOWNCAST) == TD_DTYPE_KEEP)
    {
        return 0;
    }
    PyObject *def = PyObject_CallNoArgs(st->default_dtype);
    if (def == NULL) {
        return -1;
    }
    int is = def == st->float64;
    Py_DECREF(def);
    if (!is) {
        return 0;
    }
    PyObject *data = data_arg(w, args, nargs, kwnames);
    if (data != NULL) {
        /* Data with a dtype (a tensor, an array) makes its own dtype, which
         * float64_data_check has seen: no need to copy it twice. */
        PyObject *dtype_attr = NULL;
        int has = td_optional_attr(data, st->str_dtype, &dtype_attr);
        Py_XDECREF(dtype_attr);
        if (has > 0) {
            return 0;
        }
        PyErr_Clear();          /* a dtype that raises: the probe tells */
    }
    PyObject *made = probe_made_dtype(st, w->wrapped, args, nargs, kwnames);
    if (made == NULL) {
        return -1;
    }
    /* Complex data made under a float64 default is complex128. */
    PyObject *wide = td_narrow_dtype(st, made) != NULL ? made : NULL;
    Py_DECREF(made);    /* wide is the installation's own, which it holds */
    return wide != NULL ? float64_lowered(st, w, req, res, wide, dtype) : 0;
}

static int
maybe_report(td_install *st, td_wrapper *w, td_request req, td_resolution res,
             PyObject *arg)
{
    if ((res.redirected || res.toggle_override) && td_get_report()) {
        return td_report(st, w->api, req, res, arg);
    }
    return 0;
}

/* A call that raises leaves the CPU override as it found it: the flip a
 * "cpu:-1" request made while resolving is undone (errors keep state
 * whole, docs/policy.md). */
static PyObject *
undo_toggle_on_error(PyObject *result, td_resolution res)
{
    if (result == NULL && res.toggle_override) {
        td_toggle_cpu_override();
    }
    return result;
}

/* 1 when `gen` (a generator= argument) lives on the host, 0 when not or
 * when it is None, -1 on error. */
static int
is_host_generator(td_install *st, PyObject *gen)
{
    if (gen == Py_None) {
        return 0;
    }
    PyObject *dev = PyObject_GetAttr(gen, st->str_device);
    if (dev == NULL) {
        PyErr_Clear();          /* not a generator: torch will say so */
        return 0;
    }
    td_request req = td_request_from_object(st, dev);
    Py_DECREF(dev);
    return req.kind == TD_REQ_CPU;
}

/* A constructor drawn where its generator is, not where the call goes:
 * the result (`drawn`, a new reference) is moved to `target`.  A
 * constructor without a device that draws from a host generator, where the
 * policy moves it, draws on the host, as natively (a device draw would need
 * a device generator, and torch refuses a host one there); torch's own
 * draws from an accelerator generator come back to the host
 * (torch_draw_device). */
static PyObject *
move_drawn(td_install *st, PyObject *drawn, td_target target)
{
    if (drawn == NULL || !PyObject_TypeCheck(drawn, st->tensor_type)) {
        return drawn;
    }
    PyObject *moved = PyObject_CallMethodOneArg(
        drawn, st->str_to, td_target_device(st, target));
    Py_DECREF(drawn);
    return moved;
}

/* In mode "accelerate" the program's generators land on the accelerator
 * (torch.Generator() and torch.Generator("cpu") are requests like any
 * other), but torch's own code keeps its tensors on the host, and draws
 * from the program's generator without a device: the DataLoader's samplers
 * call randperm(n, generator=g).  torch refuses the mix ("Expected a 'cpu'
 * device type for generator").  The numbers are drawn where the generator
 * is, from it, as the program asked, and brought to the host torch's code
 * works on.  Only torch's code: a program mixing them gets torch's error,
 * as on CUDA.  Returns a new reference to the device to draw on, or NULL
 * (no error set) when the call is torch's to make as it is. */
static PyObject *
torch_draw_device(td_install *st, td_request req, td_resolution res,
                  PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (res.target != TD_TARGET_KEEP || req.kind != TD_REQ_NONE
        || kwnames == NULL || td_get_mode() != TD_MODE_ACCELERATE)
    {
        return NULL;
    }
    Py_ssize_t g = find_kw(kwnames, nargs, st->str_generator);
    if (g < 0 || args[g] == Py_None) {
        return NULL;
    }
    PyObject *dev = PyObject_GetAttr(args[g], st->str_device);
    if (dev == NULL) {
        PyErr_Clear();          /* not a generator: torch will say so */
        return NULL;
    }
    if (td_request_from_object(st, dev).kind == TD_REQ_CPU
        || !td_called_from_torch(st->str_name))
    {
        Py_DECREF(dev);
        return NULL;
    }
    return dev;
}

/* A *_like function or Tensor.new_* without a device makes its tensor
 * where its input tensor is, and an operation (sum, cumsum, softmax) its
 * result: dtype=torch.float64 there is a float64 request that lands on
 * that tensor's device, as .to(torch.float64) is (float64_where_it_is;
 * docs/policy.md).  The dtype by keyword, or by position after the tensor
 * (torch.softmax(x, 0, torch.float64)).  Only where some device lacks
 * float64. */
static PyObject *
call_like_where_it_is(td_wrapper *w, td_install *st, PyObject *const *args,
                      Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t dslot = find_kw(kwnames, nargs, w->dtype_kw);
    if (dslot < 0) {
        dslot = dtype_by_position(st, args, nargs, w->data_pos + 1);
    }
    PyObject *data = data_arg(w, args, nargs, kwnames);
    PyObject *lowered = NULL;
    if (dslot >= 0 && td_narrow_dtype(st, args[dslot]) != NULL
        && data != NULL && PyObject_TypeCheck(data, st->tensor_type)
        && float64_where_it_is(st, w, data, args[dslot], &lowered) < 0)
    {
        return NULL;
    }
    if (lowered == NULL) {
        return PyObject_Vectorcall(w->wrapped, args, nargs, kwnames);
    }
    td_subst lower = {dslot, lowered};
    PyObject *result = forward(st, w->wrapped, args, nargs, kwnames, &lower,
                               1, NULL, NULL);
    if (result != NULL) {
        td_mark_lowered(st, result);
    }
    return result;
}

/* The slot of the call's pin_memory=True, or -1: anything but True is
 * torch's to judge. */
static Py_ssize_t
pin_memory_slot(td_install *st, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    Py_ssize_t pin = find_kw(kwnames, nargs, st->str_pin_memory);
    return pin >= 0 && args[pin] == Py_True ? pin : -1;
}

static PyObject *
call_factory_now(td_wrapper *w, td_install *st, PyObject *const *args,
                 Py_ssize_t nargs, PyObject *kwnames, Py_ssize_t slot)
{
    PyObject *arg = slot >= 0 ? args[slot] : NULL;
    td_subst subst[2];
    int nsubst = 0;
    td_request req = td_request_of_arg(st, arg);
    if (req.kind == TD_REQ_NONE && !w->none_policy) {
        return td_get_accel_float64()
            ? PyObject_Vectorcall(w->wrapped, args, nargs, kwnames)
            : call_like_where_it_is(w, st, args, nargs, kwnames);
    }
    td_resolution res = td_resolve_now(st, req);
    /* Pinned memory is host memory: a staging buffer for copies to the
     * device (safetensors' loader for device="cuda", a program's own).
     * Mode "accelerate" sends host requests to the device, where torch
     * refuses it ("Only dense CPU tensors can be pinned"). */
    if ((req.kind == TD_REQ_NONE || req.kind == TD_REQ_CPU)
        && res.target != TD_TARGET_KEEP && res.target != TD_TARGET_CPU
        && !res.toggle_override
        && pin_memory_slot(st, args, nargs, kwnames) >= 0)
    {
        res.target = TD_TARGET_KEEP;
        res.redirected = 0;
    }
    if (req.kind == TD_REQ_NONE && res.target != TD_TARGET_KEEP) {
        /* torch's default-device context decides instead (devarg.c). */
        int active = td_default_device_active(st);
        if (active < 0) {
            return NULL;
        }
        if (active) {
            res.target = TD_TARGET_KEEP;
            res.redirected = 0;
        }
    }
    PyObject *add_dtype = NULL;
    if (!td_get_accel_float64()) {
        PyObject *data = data_arg(w, args, nargs, kwnames);
        Py_ssize_t dslot = find_kw(kwnames, nargs, w->dtype_kw);
        /* A dtype named by keyword, or by position after the data
         * (as_tensor(data, dtype)). */
        int names_dtype = (dslot >= 0 && args[dslot] != Py_None)
            || dtype_by_position(st, args, nargs, w->data_pos + 1) >= 0;
        /* Unnamed, the dtype is the data's, else what the call makes
         * (torch's default dtype, for floating results). */
        if (float64_check(st, w, req, res, args, dslot, subst, &nsubst) < 0
            || (!names_dtype && data != NULL
                && float64_data_check(st, w, req, res, data, &add_dtype) < 0)
            || (!names_dtype && add_dtype == NULL && w->none_policy
                && find_kw(kwnames, nargs, st->str_out) < 0
                && default_float64_check(st, w, req, res, args, nargs,
                                         kwnames, &add_dtype) < 0))
        {
            return undo_toggle_on_error(NULL, res);
        }
        if (add_dtype != NULL && dslot >= 0) {
            subst[nsubst].index = dslot;        /* dtype=None */
            subst[nsubst].value = add_dtype;
            nsubst++;
            add_dtype = NULL;
        }
    }
    /* Only the float64 rule has substituted anything so far. */
    int lowered = nsubst > 0 || add_dtype != NULL;
    if (res.target == TD_TARGET_KEEP && nsubst == 0 && add_dtype == NULL) {
        PyObject *draw = torch_draw_device(st, req, res, args, nargs,
                                           kwnames);
        if (draw == NULL) {
            return PyObject_Vectorcall(w->wrapped, args, nargs, kwnames);
        }
        if (slot >= 0) {
            subst[0].index = slot;
            subst[0].value = draw;
        }
        PyObject *drawn = forward(st, w->wrapped, args, nargs, kwnames,
                                  subst, slot >= 0, slot >= 0 ? NULL : draw,
                                  NULL);
        Py_DECREF(draw);
        return move_drawn(st, drawn, TD_TARGET_CPU);
    }
    if (maybe_report(st, w, req, res, arg) < 0) {
        return undo_toggle_on_error(NULL, res);
    }
    int host_draw = 0;
    if ((req.kind == TD_REQ_NONE || req.kind == TD_REQ_CPU)
        && res.target != TD_TARGET_KEEP && res.target != TD_TARGET_CPU)
    {
        Py_ssize_t g = find_kw(kwnames, nargs, st->str_generator);
        host_draw = g >= 0 ? is_host_generator(st, args[g]) : 0;
        if (host_draw < 0) {
            return undo_toggle_on_error(NULL, res);
        }
    }
    PyObject *add = NULL;
    if (res.target != TD_TARGET_KEEP && !host_draw) {
        PyObject *target = td_target_device(st, res.target);
        if (slot >= 0) {
            subst[nsubst].index = slot;
            subst[nsubst].value = target;
            nsubst++;
        }
        else {
            add = target;
        }
    }
    PyObject *result = forward(st, w->wrapped, args, nargs, kwnames, subst,
                               nsubst, add, add_dtype);
    if (host_draw) {
        result = move_drawn(st, result, res.target);
    }
    if (lowered && result != NULL) {
        td_mark_lowered(st, result);
    }
    return undo_toggle_on_error(result, res);
}

/* A tensor made for an accelerator request is on the accelerator for the
 * program, whatever device it landed on (moves.c). */
static PyObject *
call_factory(td_wrapper *w, td_install *st, PyObject *const *args,
             Py_ssize_t nargs, PyObject *kwnames, Py_ssize_t slot)
{
    PyObject *result = call_factory_now(w, st, args, nargs, kwnames, slot);
    if (result == NULL || slot < 0 || !td_moves_active()) {
        return result;
    }
    td_intent intent = td_intent_of_arg(st, args[slot]);
    /* The data a constructor (as_tensor, asarray) may return as is. */
    PyObject *data = w->none_policy && intent != TD_INTENT_NONE
                     ? data_arg(w, args, nargs, kwnames) : NULL;
    if (intent == TD_INTENT_ACCEL) {
        return td_constructed_on_accelerator(st, data, result);
    }
    if (intent == TD_INTENT_HOST && data != NULL) {
        return td_constructed_on_host(st, data, result);
    }
    return result;
}

/* Without an accelerator there is no pinned memory (wrapper_pin): a
 * factory's pin_memory=True makes the tensor unpinned, as pin_memory()
 * leaves it, where torch would refuse ("pin_memory=True requires a CUDA
 * or other accelerator backend").
 * Returns the slot of pin_memory=True, or -1. */
static Py_ssize_t
pin_to_clear(td_install *st, Py_ssize_t nargs, PyObject *const *args,
             PyObject *kwnames)
{
    if (td_get_profile() != TD_PROFILE_CPU) {
        return -1;
    }
    return pin_memory_slot(st, args, nargs, kwnames);
}

/* A `__torch_function__` override keyed on the function the program called
 * (this wrapper) is offered the call before torch offers it with its
 * original (TorchDevice/_overrides.py).  torch.Tensor itself, the only
 * direct subclass of TensorBase, has no override: it pays nothing.
 * Returns NotImplemented (new reference) where no override takes it. */
static PyObject *
offer_override(td_wrapper *w, td_install *st, PyObject *const *args,
               Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *data = w->dispatch == Py_None
                     ? NULL : data_arg(w, args, nargs, kwnames);
    if (data == NULL || Py_TYPE(data)->tp_base == st->tensor_type) {
        return Py_NewRef(Py_NotImplemented);
    }
    PyObject *head[2] = {(PyObject *)w, data};
    return call_with_head(w->dispatch, head, 2, args, nargs, kwnames);
}

static PyObject *
wrapper_factory(td_wrapper *w, td_install *st, PyObject *const *args,
                Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *taken = offer_override(w, st, args, nargs, kwnames);
    if (taken != Py_NotImplemented) {
        return taken;       /* the override's result, or NULL */
    }
    Py_DECREF(taken);
    Py_ssize_t slot = find_kw(kwnames, nargs, w->device_kw);
    if (slot < 0 && w->device_pos >= 0 && w->device_pos < nargs) {
        slot = w->device_pos;
    }
    Py_ssize_t pin = pin_to_clear(st, nargs, args, kwnames);
    if (pin < 0) {
        return call_factory(w, st, args, nargs, kwnames, slot);
    }
    Py_ssize_t total = nargs + PyTuple_GET_SIZE(kwnames);
    PyObject **copy = PyMem_Malloc((size_t)total * sizeof(PyObject *));
    if (copy == NULL) {
        return PyErr_NoMemory();
    }
    memcpy(copy, args, (size_t)total * sizeof(PyObject *));
    copy[pin] = Py_False;
    PyObject *result = call_factory(w, st, copy, nargs, kwnames, slot);
    PyMem_Free(copy);
    return result;
}

/* A float64 conversion lowered to float32 is torch's no-op for a float32
 * tensor (the tensor itself), where the conversion the program asked for
 * makes a new tensor on CUDA: it gets one, so that in-place edits of the
 * result do not reach the input.  Takes `result` (NULL: the call's error,
 * passed on). */
static PyObject *
lowered_copy(td_install *st, PyObject *self, PyObject *result,
             PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (result != self) {
        return result;
    }
    Py_DECREF(result);
    Py_ssize_t mf = find_kw(kwnames, nargs, st->str_memory_format);
    if (mf < 0) {
        return PyObject_CallOneArg(st->tensor_clone, self);
    }
    PyObject *names = PyTuple_Pack(1, st->str_memory_format);
    if (names == NULL) {
        return NULL;
    }
    PyObject *cargs[2] = {self, args[mf]};
    PyObject *copy = PyObject_Vectorcall(st->tensor_clone, cargs, 1, names);
    Py_DECREF(names);
    return copy;
}

/* The slot of a float64 dtype in a .to() call without a device (.to(dtype),
 * .to(dtype=...), and t.to(None, dtype) inside Module.to(dtype)) of a
 * tensor, or -1.  On CUDA a program converts its "cuda" tensors to float64
 * and computes on; where they are on MPS that conversion raises.  The
 * tensor stays where it is, so it is a float64 request that lands there
 * (float64_where_it_is; docs/policy.md). */
static Py_ssize_t
float64_dtype_slot(td_wrapper *w, td_install *st, PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t dslot = find_kw(kwnames, nargs, w->dtype_kw);
    Py_ssize_t pos = w->device_pos, dpos = w->dtype_pos;
    if (dslot < 0 && pos >= 0 && nargs > pos) {
        /* .to(dtype, ...) or .to(None, dtype, ...) */
        dslot = Py_TYPE(args[pos]) == st->dtype_type ? pos
                : (args[pos] == Py_None && dpos >= 0 && nargs > dpos)
                ? dpos : -1;
    }
    if (dslot < 0 || td_narrow_dtype(st, args[dslot]) == NULL
        || !PyObject_TypeCheck(args[0], st->tensor_type))
    {
        return -1;
    }
    return dslot;
}

/* Tensor.double(): the same conversion as .to(torch.float64), and the same
 * rule where the tensor is on an accelerator without float64 (Module.double()
 * calls it for each floating tensor).  Lowered, it is torch's own
 * .to(torch.float32) with the call's memory_format.  Tensor.cdouble() is the
 * same with complex128; each keeps its own name in the report. */
static PyObject *
wrapper_double(td_wrapper *w, td_install *st, PyObject *const *args,
               Py_ssize_t nargs, PyObject *kwnames)
{
    if (td_get_accel_float64() || nargs != 1
        || !PyObject_TypeCheck(args[0], st->tensor_type))
    {
        return PyObject_Vectorcall(w->wrapped, args, nargs, kwnames);
    }
    PyObject *wide = w->kind == TD_KIND_CDOUBLE ? st->complex128
                                                : st->float64;
    PyObject *lowered = NULL;
    if (float64_where_it_is(st, w, args[0], wide, &lowered) < 0) {
        return NULL;
    }
    if (lowered == NULL) {
        return PyObject_Vectorcall(w->wrapped, args, nargs, kwnames);
    }
    return lowered_copy(st, args[0],
                        forward(st, st->tensor_to, args, nargs, kwnames,
                                NULL, 0, NULL, lowered),
                        args, nargs, kwnames);
}

/* Tensor.to(device, dtype, ...), .to(dtype, ...), .to(other, ...) and
 * .to(device=..., dtype=...); Module.to takes the same forms.  args[0] is
 * the instance. */
static PyObject *
wrapper_to_now(td_wrapper *w, td_install *st, PyObject *const *args,
               Py_ssize_t nargs, PyObject *kwnames, td_intent intent)
{
    Py_ssize_t slot = find_kw(kwnames, nargs, w->device_kw);
    Py_ssize_t dslot = -1;
    Py_ssize_t pos = w->device_pos, dpos = w->dtype_pos;
    if (slot < 0 && pos >= 0 && nargs > pos && args[pos] != Py_None
        && td_is_device_arg(st, args[pos]))
    {
        slot = pos;
        if (dpos >= 0 && nargs > dpos && Py_TYPE(args[dpos]) == st->dtype_type)
        {
            dslot = dpos;
        }
    }
    if (slot < 0 || args[slot] == Py_None) {
        Py_ssize_t f64 = td_get_accel_float64() ? -1
            : float64_dtype_slot(w, st, args, nargs, kwnames);
        PyObject *lowered = NULL;
        if (f64 >= 0
            && float64_where_it_is(st, w, args[0], args[f64], &lowered) < 0)
        {
            return NULL;
        }
        if (lowered != NULL) {
            td_subst lower = {f64, lowered};
            return lowered_copy(st, args[0],
                                forward(st, w->wrapped, args, nargs, kwnames,
                                        &lower, 1, NULL, NULL),
                                args, nargs, kwnames);
        }
        return PyObject_Vectorcall(w->wrapped, args, nargs, kwnames);
    }
    if (dslot < 0) {
        dslot = find_kw(kwnames, nargs, w->dtype_kw);
    }
    td_subst subst[2];
    int nsubst = 0;
    PyObject *add_dtype = NULL;
    td_request req = td_request_of_arg(st, args[slot]);
    td_resolution res = td_resolve_now(st, req);
    if (!td_get_accel_float64()) {
        if (float64_check(st, w, req, res, args, dslot, subst, &nsubst) < 0
            || ((dslot < 0 || args[dslot] == Py_None) && w->data_pos == 0
                && PyObject_TypeCheck(args[0], st->tensor_type)
                && float64_data_check(st, w, req, res, args[0],
                                      &add_dtype) < 0))
        {
            return undo_toggle_on_error(NULL, res);
        }
        /* Where the dtype goes: its None slot (Module.to calls
         * t.to(device, None, non_blocking)), else a keyword. */
        Py_ssize_t none_slot = dslot >= 0 ? dslot
            : (slot == pos && dpos >= 0 && nargs > dpos) ? dpos : -1;
        if (add_dtype != NULL && none_slot >= 0) {
            if (args[none_slot] == Py_None) {
                subst[nsubst].index = none_slot;
                subst[nsubst].value = add_dtype;
                nsubst++;
            }
            add_dtype = NULL;   /* else: not a dtype; torch will say so */
        }
        else if (add_dtype != NULL && slot != pos && nargs > 1) {
            add_dtype = NULL;   /* positionals beside device=: torch's */
        }
    }
    if (res.target == TD_TARGET_KEEP && nsubst == 0 && add_dtype == NULL) {
        return PyObject_Vectorcall(w->wrapped, args, nargs, kwnames);
    }
    if (maybe_report(st, w, req, res, args[slot]) < 0) {
        return undo_toggle_on_error(NULL, res);
    }
    if (res.target != TD_TARGET_KEEP) {
        /* The device carries the request's intent (moves.c), as .cuda()'s
         * does: a tensor subclass's __torch_function__ hands it back to
         * Tensor.to, which must see the move the program asked for. */
        subst[nsubst].index = slot;
        subst[nsubst].value = td_intent_device(st, res.target, intent);
        nsubst++;
    }
    return undo_toggle_on_error(
        forward(st, w->wrapped, args, nargs, kwnames, subst, nsubst, NULL,
                add_dtype),
        res);
}

/* The device argument of a .to() call, or NULL. */
static PyObject *
to_device_arg(td_wrapper *w, td_install *st, PyObject *const *args,
              Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t slot = find_kw(kwnames, nargs, w->device_kw);
    if (slot >= 0) {
        return args[slot];
    }
    Py_ssize_t pos = w->device_pos;
    if (pos >= 0 && nargs > pos && args[pos] != Py_None
        && td_is_device_arg(st, args[pos]))
    {
        return args[pos];
    }
    return NULL;
}

/* The tensor of a .to(other) call (Module.to(tensor)), or NULL. */
static PyObject *
to_other_arg(td_install *st, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames)
{
    if (nargs > 1) {
        return PyObject_TypeCheck(args[1], st->tensor_type) ? args[1] : NULL;
    }
    Py_ssize_t k = find_kw(kwnames, nargs, st->str_tensor);
    return k >= 0 && PyObject_TypeCheck(args[k], st->tensor_type)
           ? args[k] : NULL;
}

/* A module's move: torch re-parses its device argument before each
 * tensor's .to(), so the intent rides along in this thread (moves.c). */
static PyObject *
module_move(PyObject *fn, PyObject *const *args, size_t nargsf,
            PyObject *kwnames, td_intent intent)
{
    int previous = td_swap_module_intent(intent);
    PyObject *result = PyObject_Vectorcall(fn, args, nargsf, kwnames);
    td_swap_module_intent(previous);
    return result;
}

/* Tensor.to with CUDA's copies (moves.c), around the device policy. */
static PyObject *
wrapper_to(td_wrapper *w, td_install *st, PyObject *const *args,
           Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs < 1 || !td_moves_active()) {
        return wrapper_to_now(w, st, args, nargs, kwnames, TD_INTENT_NONE);
    }
    PyObject *dev = to_device_arg(w, st, args, nargs, kwnames);
    td_intent intent = td_intent_of_arg(st, dev);
    if (dev == NULL) {
        /* .to(other) moves to where the program sees `other`: on CUDA,
         * x.to(y) copies a host x to y's GPU.  Where that is not known
         * (results of operations), torch's answer stands. */
        PyObject *other = to_other_arg(st, args, nargs, kwnames);
        if (other != NULL) {
            intent = td_intent_of_tensor(st, other);
        }
    }
    if (!PyObject_TypeCheck(args[0], st->tensor_type)) {
        if (intent == TD_INTENT_NONE) {
            return wrapper_to_now(w, st, args, nargs, kwnames, intent);
        }
        int previous = td_swap_module_intent(intent);
        PyObject *result = wrapper_to_now(w, st, args, nargs, kwnames, intent);
        td_swap_module_intent(previous);
        return result;
    }
    if (intent == TD_INTENT_NONE && dev != NULL) {
        intent = (td_intent)td_module_intent();
    }
    if (intent == TD_INTENT_NONE) {
        return wrapper_to_now(w, st, args, nargs, kwnames, intent);
    }
    const void *begun = td_move_begin();
    return td_move_done(st, args[0], intent, begun,
                        wrapper_to_now(w, st, args, nargs, kwnames, intent));
}

/* .cuda(device=None, non_blocking=False, memory_format=...), .cpu(...),
 * .mps(...): when the policy keeps the request, the original runs; when it
 * moves it, the move becomes fallback(self, target, **keywords). */
static PyObject *
wrapper_move(td_wrapper *w, td_install *st, PyObject *const *args,
             Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs < 1) {
        PyErr_Format(PyExc_TypeError, "%U() needs an instance", w->api);
        return NULL;
    }
    Py_ssize_t slot = find_kw(kwnames, nargs, w->device_kw);
    if (slot < 0 && w->device_pos >= 0 && nargs > w->device_pos) {
        slot = w->device_pos;
    }
    PyObject *arg = slot >= 0 ? args[slot] : NULL;
    td_request req = {w->request, -1};
    if (arg != NULL && arg != Py_None) {
        req = td_request_from_object(st, arg);
        if (PyLong_CheckExact(arg)
            || td_intent_of_arg(st, arg) == TD_INTENT_ACCEL)
        {
            /* .cuda(1) means cuda:1; .cuda(torch.device("cuda")) the
             * device that became. */
            req.kind = w->request;
        }
        if (req.kind == TD_REQ_OTHER || req.kind == TD_REQ_META) {
            /* Torch validates what it does not recognise. */
            if (w->wrapped != Py_None) {
                return PyObject_Vectorcall(w->wrapped, args, nargs, kwnames);
            }
            req.kind = w->request;
        }
    }
    td_resolution res = td_resolve_now(st, req);
    /* moves.c: where the program's move crosses devices, it copies. */
    td_intent intent = TD_INTENT_NONE;
    if (td_moves_active()) {
        intent = td_intent_of_kind(w->request);
        if (!PyObject_TypeCheck(args[0], st->tensor_type)
            && res.target == TD_TARGET_KEEP && w->wrapped != Py_None)
        {
            /* A module: each of its tensors decides (wrapper_to/_move). */
            return undo_toggle_on_error(
                module_move(w->wrapped, args, (size_t)nargs, kwnames,
                            intent), res);
        }
    }
    PyObject *add_dtype = NULL;
    if (!td_get_accel_float64() && w->data_pos == 0
        && PyObject_TypeCheck(args[0], st->tensor_type)
        && float64_data_check(st, w, req, res, args[0], &add_dtype) < 0)
    {
        return undo_toggle_on_error(NULL, res);
    }
    if (res.target == TD_TARGET_KEEP && w->wrapped != Py_None
        && add_dtype == NULL)
    {
        const void *begun = td_move_begin();
        return td_move_done(
            st, args[0], intent, begun,
            PyObject_Vectorcall(w->wrapped, args, nargs, kwnames));
    }
    if (maybe_report(st, w, req, res, arg) < 0) {
        return undo_toggle_on_error(NULL, res);
    }
    PyObject *target = intent != TD_INTENT_NONE
        ? td_intent_device(st, res.target, intent)
        : td_target_device(st, res.target);
    if (target == NULL) {
        /* Kept, but torch has no such method (Tensor.mps): move there. */
        target = st->target[req.kind == TD_REQ_MPS ? TD_TARGET_MPS
                            : req.kind == TD_REQ_CUDA ? TD_TARGET_CUDA
                                                      : TD_TARGET_CPU];
    }
    /* Rebuild as fallback(self, target, non_blocking=..., **kw[, dtype]). */
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *small[TD_SMALL_STACK];
    PyObject *names = NULL, *result = NULL;
    Py_ssize_t extra_pos =
        (w->device_pos >= 0 && nargs > w->device_pos + 1) ? 1 : 0;
    Py_ssize_t n = 2 + nkw + extra_pos + (add_dtype != NULL);
    if (n > TD_SMALL_STACK || nargs > 3
        || (w->device_pos < 0 && nargs > 1))
    {
        PyErr_Format(PyExc_TypeError, "%U() got too many arguments", w->api);
        return undo_toggle_on_error(NULL, res);
    }
    names = PyTuple_New(n - 2);
    if (names == NULL) {
        return undo_toggle_on_error(NULL, res);
    }
    small[0] = args[0];
    small[1] = target;
    Py_ssize_t k = 0;
    if (extra_pos) {
        small[2] = args[2];
        PyTuple_SET_ITEM(names, k++, Py_NewRef(st->str_non_blocking));
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (w->device_kw != NULL && kw_is(name, w->device_kw)) {
            continue;
        }
        small[2 + k] = args[nargs + i];
        PyTuple_SET_ITEM(names, k++, Py_NewRef(name));
    }
    if (add_dtype != NULL) {
        small[2 + k] = add_dtype;
        PyTuple_SET_ITEM(names, k++, Py_NewRef(st->str_dtype));
    }
    if (k != n - 2) {
        /* device= was among the keywords: shrink the names tuple. */
        PyObject *shrunk = PyTuple_GetSlice(names, 0, k);
        Py_SETREF(names, shrunk);
        if (names == NULL) {
            return undo_toggle_on_error(NULL, res);
        }
    }
    const void *begun = td_move_begin();
    if (intent != TD_INTENT_NONE
        && !PyObject_TypeCheck(args[0], st->tensor_type))
    {
        result = module_move(w->fallback, small, 2, k ? names : NULL,
                             intent);
    }
    else {
        result = PyObject_Vectorcall(w->fallback, small, 2,
                                     k ? names : NULL);
    }
    Py_DECREF(names);
    return undo_toggle_on_error(
        td_move_done(st, args[0], intent, begun, result), res);
}

/* `t.is_cpu`: 1, 0, or -1 with an error set. */
static int
tensor_is_cpu(td_install *st, PyObject *t)
{
    PyObject *is_cpu = PyObject_GetAttr(t, st->str_is_cpu);
    if (is_cpu == NULL) {
        return -1;
    }
    int on_host = PyObject_IsTrue(is_cpu);
    Py_DECREF(is_cpu);
    return on_host;
}

static PyObject *
wrapper_numpy(td_wrapper *w, td_install *st, PyObject *const *args,
              Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs < 1) {
        return PyObject_Vectorcall(w->wrapped, args, nargs, kwnames);
    }
    if (td_get_profile() == TD_PROFILE_CPU) {
        Py_ssize_t f = find_kw(kwnames, nargs, st->str_force);
        if (f < 0 || args[f] != Py_True || !td_moves_active()
            || !PyObject_TypeCheck(args[0], st->tensor_type))
        {
            return PyObject_Vectorcall(w->wrapped, args, nargs, kwnames);
        }
        /* numpy(force=True) is CUDA's copy to the host. */
        PyObject *source = td_numpy_source(st, args[0]);
        if (source == NULL) {
            return NULL;
        }
        td_subst s = {0, source};
        PyObject *result = forward(st, w->wrapped, args, nargs, kwnames, &s,
                                   1, NULL, NULL);
        Py_DECREF(source);
        return result;
    }
    int on_host = tensor_is_cpu(st, args[0]);
    if (on_host < 0) {
        return NULL;
    }
    if (on_host) {
        return PyObject_Vectorcall(w->wrapped, args, nargs, kwnames);
    }
    /* The original .cpu(): the redirected one may stay on the device. */
    PyObject *host = PyObject_CallOneArg(st->tensor_cpu, args[0]);
    if (host == NULL) {
        return NULL;
    }
    td_subst s = {0, host};
    PyObject *result = forward(st, w->wrapped, args, nargs, kwnames, &s, 1,
                               NULL, NULL);
    Py_DECREF(host);
    return result;
}

/* Without an accelerator there is no pinned memory: nothing is pinned, and
 * pin_memory() is the copy CUDA's is where moves copy (the tensor itself
 * where they alias).  With one, a host tensor that the policy
 * placed on the accelerator (accelerate mode: "cpu" and None land there)
 * is already where pinning is for: pin_memory() gives a copy, as CUDA's
 * does (the tensor itself where moves alias), instead of torch's "only
 * dense CPU tensors can be pinned".  Otherwise torch decides: a tensor the
 * program put on the accelerator raises as it does on CUDA. */
static PyObject *
wrapper_pin(td_wrapper *w, td_install *st, PyObject *const *args,
            Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs < 1) {
        return PyObject_Vectorcall(w->wrapped, args, nargs, kwnames);
    }
    if (td_get_profile() == TD_PROFILE_CPU) {
        if (w->kind == TD_KIND_IS_PINNED) {
            Py_RETURN_FALSE;
        }
        if (td_get_move_copies()
            && PyObject_TypeCheck(args[0], st->tensor_type))
        {
            return td_pinned_copy(st, args[0]);
        }
        return Py_NewRef(args[0]);
    }
    if (w->kind == TD_KIND_PIN_MEMORY && td_get_mode() == TD_MODE_ACCELERATE
        && PyObject_TypeCheck(args[0], st->tensor_type))
    {
        int on_host = tensor_is_cpu(st, args[0]);
        if (on_host < 0) {
            return NULL;
        }
        if (!on_host && !td_on_accelerator(st, args[0])) {
            return td_get_move_copies()
                       ? PyObject_CallOneArg(st->tensor_clone, args[0])
                       : Py_NewRef(args[0]);
        }
    }
    return PyObject_Vectorcall(w->wrapped, args, nargs, kwnames);
}

static PyObject *
wrapper_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                   PyObject *kwnames)
{
    td_wrapper *w = (td_wrapper *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    /* Held for the whole call: disable() in another thread cannot free
     * what this call uses (tdcore.h). */
    td_install *st = td_install_acquire();
    if (st == NULL) {
        /* Not installed (a wrapper kept past disable()): be the original. */
        if (w->wrapped == Py_None) {
            PyErr_Format(PyExc_AttributeError, "%U is not available while "
                         "TorchDevice is disabled", w->api);
            return NULL;
        }
        return PyObject_Vectorcall(w->wrapped, args, nargsf, kwnames);
    }
    PyObject *result = NULL;
    switch ((td_kind)w->kind) {
    case TD_KIND_FACTORY:
        result = wrapper_factory(w, st, args, nargs, kwnames);
        break;
    case TD_KIND_TO:
        result = wrapper_to(w, st, args, nargs, kwnames);
        break;
    case TD_KIND_MOVE:
        result = wrapper_move(w, st, args, nargs, kwnames);
        break;
    case TD_KIND_NUMPY:
        result = wrapper_numpy(w, st, args, nargs, kwnames);
        break;
    case TD_KIND_PIN_MEMORY:
    case TD_KIND_IS_PINNED:
        result = wrapper_pin(w, st, args, nargs, kwnames);
        break;
    case TD_KIND_DOUBLE:
    case TD_KIND_CDOUBLE:
        result = wrapper_double(w, st, args, nargs, kwnames);
        break;
    case TD_KIND_COUNT:
        PyErr_SetString(PyExc_SystemError, "corrupt TorchDevice wrapper kind");
        break;
    }
    Py_DECREF(st);
    return result;
}

static int
copy_attr(PyObject *dict, PyObject *src, const char *name)
{
    PyObject *v = PyObject_GetAttrString(src, name);
    if (v == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    int rc = PyDict_SetItemString(dict, name, v);
    Py_DECREF(v);
    return rc;
}

/* Reads one field of the grammar entry: an int, or a str interned (NULL
 * for ""). */
static int
grammar_int(PyObject *grammar, const char *name, Py_ssize_t *out)
{
    PyObject *v = PyObject_GetAttrString(grammar, name);
    if (v == NULL) {
        return -1;
    }
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int
grammar_str(PyObject *grammar, const char *name, PyObject **out)
{
    PyObject *v = PyObject_GetAttrString(grammar, name);
    if (v == NULL) {
        return -1;
    }
    if (!PyUnicode_CheckExact(v)) {
        PyErr_Format(PyExc_TypeError, "grammar.%s must be str", name);
        Py_DECREF(v);
        return -1;
    }
    if (PyUnicode_GET_LENGTH(v) == 0) {
        Py_DECREF(v);
        *out = NULL;
        return 0;
    }
    PyUnicode_InternInPlace(&v);
    *out = v;
    return 0;
}

static int
read_grammar(td_wrapper *w, PyObject *grammar)
{
    PyObject *missing = NULL;
    if (grammar_str(grammar, "keyword", &w->device_kw) < 0
        || grammar_str(grammar, "dtype_keyword", &w->dtype_kw) < 0
        || grammar_str(grammar, "data_keyword", &w->data_kw) < 0
        || grammar_int(grammar, "position", &w->device_pos) < 0
        || grammar_int(grammar, "dtype_position", &w->dtype_pos) < 0
        || grammar_int(grammar, "data_position", &w->data_pos) < 0
        || grammar_str(grammar, "missing", &missing) < 0)
    {
        return -1;
    }
    int ok = missing != NULL;
    if (ok) {
        w->none_policy =
            PyUnicode_CompareWithASCIIString(missing, "policy") == 0;
        ok = w->none_policy
             || PyUnicode_CompareWithASCIIString(missing, "keep") == 0
             || PyUnicode_CompareWithASCIIString(missing, "request") == 0;
    }
    Py_XDECREF(missing);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "grammar.missing must be 'keep', "
                        "'policy' or 'request'");
        return -1;
    }
    /* A missing device the policy fills is added as device=. */
    if (w->none_policy
        && (w->device_kw == NULL
            || PyUnicode_CompareWithASCIIString(w->device_kw, "device") != 0))
    {
        PyErr_SetString(PyExc_ValueError,
                        "grammar: missing='policy' needs keyword 'device'");
        return -1;
    }
    return 0;
}

static PyObject *
wrapper_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"wrapped", "kind", "api", "grammar", "fallback",
                             "request", "dispatch", NULL};
    PyObject *wrapped, *api, *grammar, *fallback = Py_None;
    PyObject *dispatch = Py_None;
    const char *request = NULL;
    int kind;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OiUO|OzO:Wrapper", kwlist,
                                     &wrapped, &kind, &api, &grammar,
                                     &fallback, &request, &dispatch))
    {
        return NULL;
    }
    if (dispatch != Py_None
        && (kind != TD_KIND_FACTORY || !PyCallable_Check(dispatch)))
    {
        PyErr_SetString(PyExc_TypeError,
                        "dispatch must be None, or callable for a factory");
        return NULL;
    }
    if (kind < 0 || kind >= TD_KIND_COUNT) {
        PyErr_Format(PyExc_ValueError, "unknown wrapper kind %d", kind);
        return NULL;
    }
    if (wrapped != Py_None && !PyCallable_Check(wrapped)) {
        PyErr_SetString(PyExc_TypeError, "wrapped must be callable or None");
        return NULL;
    }
    if (kind == TD_KIND_MOVE && !PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "a move wrapper needs a fallback");
        return NULL;
    }
    td_req_kind req = TD_REQ_OTHER;
    if (request != NULL) {
        req = td_parse_device_string(request, strlen(request), NULL).kind;
    }
    if (kind == TD_KIND_MOVE && req != TD_REQ_CUDA && req != TD_REQ_CPU
        && req != TD_REQ_MPS)
    {
        PyErr_SetString(PyExc_ValueError,
                        "request must be 'cuda', 'cpu' or 'mps'");
        return NULL;
    }
    if (kind != TD_KIND_MOVE && wrapped == Py_None) {
        PyErr_SetString(PyExc_TypeError, "only a move wrapper may wrap None");
        return NULL;
    }

    td_wrapper *w = (td_wrapper *)type->tp_alloc(type, 0);
    if (w == NULL) {
        return NULL;
    }
    w->vectorcall = wrapper_vectorcall;
    w->wrapped = Py_NewRef(wrapped);
    w->fallback = Py_NewRef(fallback);
    w->api = Py_NewRef(api);
    w->grammar = Py_NewRef(grammar);
    w->dispatch = Py_NewRef(dispatch);
    w->kind = kind;
    w->request = req;
    w->dict = PyDict_New();
    if (w->dict == NULL || read_grammar(w, grammar) < 0
        || PyDict_SetItemString(w->dict, "__wrapped__", wrapped) < 0)
    {
        goto error;
    }
    if (wrapped != Py_None) {
        static const char *names[] = {"__name__", "__qualname__",
                                      "__module__", "__doc__"};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            if (copy_attr(w->dict, wrapped, names[i]) < 0) {
                goto error;
            }
        }
    }
    return (PyObject *)w;
error:
    Py_DECREF(w);
    return NULL;
}

PyObject *
td_bind_like_function(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type))
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(self);
    }
    return PyMethod_New(self, obj);
}

static int
wrapper_traverse(PyObject *self, visitproc visit, void *arg)
{
    td_wrapper *w = (td_wrapper *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(w->wrapped);
    Py_VISIT(w->fallback);
    Py_VISIT(w->api);
    Py_VISIT(w->grammar);
    Py_VISIT(w->dispatch);
    Py_VISIT(w->dict);
    return 0;
}

static int
wrapper_clear(PyObject *self)
{
    td_wrapper *w = (td_wrapper *)self;
    Py_CLEAR(w->wrapped);
    Py_CLEAR(w->fallback);
    Py_CLEAR(w->api);
    Py_CLEAR(w->grammar);
    Py_CLEAR(w->dispatch);
    Py_CLEAR(w->device_kw);
    Py_CLEAR(w->dtype_kw);
    Py_CLEAR(w->data_kw);
    Py_CLEAR(w->dict);
    return 0;
}

TD_GC_DEALLOC_WEAKREF(wrapper_dealloc, td_wrapper, wrapper_clear)

static PyObject *
wrapper_repr(PyObject *self)
{
    td_wrapper *w = (td_wrapper *)self;
    return PyUnicode_FromFormat("<TorchDevice wrapper of %R>", w->wrapped);
}

PyObject *
td_reduce_by_name(PyObject *self, PyObject *Py_UNUSED(unused))
{
    /* A str: pickle stores a global reference (__module__, the str) and
     * checks that it finds this very object there.  The patch table names
     * where it installed the object; else its __qualname__. */
    PyObject *name = PyObject_GetAttrString(self, "_td_pickle_name");
    if (name == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        name = PyObject_GetAttrString(self, "__qualname__");
    }
    if (name == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "cannot pickle %R: it is not installed by TorchDevice's "
                     "patch table (no __qualname__)", self);
    }
    return name;
}

static PyObject *
wrapper_get_kind(PyObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromLong(((td_wrapper *)self)->kind);
}

static PyObject *
wrapper_get_api(PyObject *self, void *Py_UNUSED(c))
{
    return Py_NewRef(((td_wrapper *)self)->api);
}

/* The torch.compile polyfills (TorchDevice/_compile.py) rebuild a wrapper's
 * behaviour in Python from these. */
static PyObject *
wrapper_get_grammar(PyObject *self, void *Py_UNUSED(c))
{
    return Py_NewRef(((td_wrapper *)self)->grammar);
}

static PyObject *
wrapper_get_fallback(PyObject *self, void *Py_UNUSED(c))
{
    return Py_NewRef(((td_wrapper *)self)->fallback);
}

static PyMethodDef wrapper_methods[] = {
    {"__reduce__", td_reduce_by_name, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef wrapper_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"td_kind", wrapper_get_kind, NULL, "wrapper kind (int)", NULL},
    {"td_api", wrapper_get_api, NULL, "API name used in the report", NULL},
    {"td_grammar", wrapper_get_grammar, NULL,
     "the _grammar.DeviceArg the wrapper reads its arguments by", NULL},
    {"td_fallback", wrapper_get_fallback, NULL,
     "MOVE: the `to` used when the target moves", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef wrapper_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(td_wrapper, vectorcall),
     READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(td_wrapper, dict), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(td_wrapper, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot wrapper_slots[] = {
    {Py_tp_new, wrapper_new},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, td_bind_like_function},
    {Py_tp_traverse, wrapper_traverse},
    {Py_tp_clear, wrapper_clear},
    {Py_tp_dealloc, wrapper_dealloc},
    {Py_tp_repr, wrapper_repr},
    {Py_tp_methods, wrapper_methods},
    {Py_tp_getset, wrapper_getset},
    {Py_tp_members, wrapper_members},
    {0, NULL},
};

PyType_Spec td_wrapper_spec = {
    .name = "TorchDevice._tdcore.Wrapper",
    .basicsize = sizeof(td_wrapper),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
              | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR
              | Py_TPFLAGS_IMMUTABLETYPE),
    .slots = wrapper_slots,
};
