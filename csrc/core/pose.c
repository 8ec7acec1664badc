/* What a torch.device the program asked for reads as.
 *
 * Where a "cuda" request lands on another kind of device (the CPU, MPS, a
 * generic accelerator) or an "mps" request on CUDA, the hook
 * (devicehook.c) hands out a genuine device of the kind really used, so
 * that everything torch does with it happens there.  But code written for
 * CUDA checks what it got: Lightning refuses to start unless
 * `device.type == "cuda"`, and programs pick their CUDA path (autocast,
 * pinning, synchronize, all answered by the masquerade) from
 * `device.type` or `str(device)`, as they already do from the string
 * "cuda", and code that runs one process per GPU rebuilds or selects
 * devices from `device.index`.  So those objects, one per (target, kind
 * asked for, index asked for), read as what was asked for: `type`,
 * `index`, `str()`, `repr()` and pickling.
 * torch's own code, TorchDevice's, and whoever the masquerade tells the
 * truth (cuda_query.c) read the device really used, which is what they
 * route work by; C code reads the device's fields and never sees a name.
 * Devices read off a tensor (`x.device`) are torch's and always say where
 * the tensor is (docs/policy.md, "What a device reads as").
 */
#include "tdcore.h"

/* ---- the poses ------------------------------------------------------------ */

static int
pose_kind_of(td_req_kind kind)
{
    return kind == TD_REQ_CUDA ? TD_POSE_CUDA
           : kind == TD_REQ_MPS ? TD_POSE_MPS : -1;
}

/* Whether requests of a pose kind land on `target` as another kind. */
static int
poses_on(td_target target, int kind)
{
    switch (target) {
    case TD_TARGET_CPU:
    case TD_TARGET_ACCEL:
        return 1;
    case TD_TARGET_MPS:
        return kind == TD_POSE_CUDA;
    case TD_TARGET_CUDA:
        return kind == TD_POSE_MPS;
    case TD_TARGET_KEEP:
    case TD_TARGET_COUNT:
        break;
    }
    return 0;
}

int
td_poses_setup(td_install *st)
{
    for (int t = 0; t < TD_TARGET_COUNT; t++) {
        for (int k = 0; k < TD_POSE_KINDS; k++) {
            if (st->target[t] == NULL || !poses_on((td_target)t, k)) {
                continue;
            }
            if (td_new_device_like(st, st->target[t], &st->pose[t][k]) < 0) {
                return -1;
            }
            if (st->pose[t][k] == st->target[t]) {
                PyErr_SetString(PyExc_RuntimeError,
                                "install(): torch.device is still hooked");
                return -1;
            }
        }
    }
    st->pose_at = PyDict_New();
    st->pose_asked = PyDict_New();
    return st->pose_at != NULL && st->pose_asked != NULL ? 0 : -1;
}

/* torch's DeviceIndex is an int8_t: no device has a larger index. */
#define POSE_MAX_INDEX 127L

/* One number for (target, kind asked for, index asked for). */
static long
pose_slot(td_target target, int kind, long index)
{
    return ((long)target * TD_POSE_KINDS + kind) * (POSE_MAX_INDEX + 1)
           + index;
}

/* The pose's target, kind and index asked for (-1: none); 0 when `dev` is
 * none of them.  Never fails. */
static int
pose_find(td_install *st, PyObject *dev, td_target *target, int *kind,
          long *index)
{
    if (Py_TYPE(dev) != st->device_type) {
        return 0;
    }
    for (int t = 0; t < TD_TARGET_COUNT; t++) {
        for (int k = 0; k < TD_POSE_KINDS; k++) {
            if (st->pose[t][k] == dev) {
                *target = (td_target)t;
                *kind = k;
                *index = -1;
                return 1;
            }
        }
    }
    /* Programs that name no index never pay for the lookup below. */
    if (st->pose_asked == NULL || PyDict_GET_SIZE(st->pose_asked) == 0) {
        return 0;
    }
    PyObject *addr = PyLong_FromVoidPtr(dev);
    PyObject *slot = NULL;
    int found = addr != NULL ? td_dict_get_ref(st->pose_asked, addr, &slot)
                             : -1;
    Py_XDECREF(addr);
    if (found <= 0) {
        if (found < 0) {
            PyErr_Clear();
        }
        return 0;
    }
    long v = PyLong_AsLong(slot);
    Py_DECREF(slot);
    *index = v % (POSE_MAX_INDEX + 1);
    v /= POSE_MAX_INDEX + 1;
    *kind = (int)(v % TD_POSE_KINDS);
    *target = (td_target)(v / TD_POSE_KINDS);
    return 1;
}

/* The pose for "cuda:N" (new reference).  Made at first use: a program
 * names a few of the 128 indices torch allows, and one pose per index,
 * kind and target made at install would be a thousand devices.  An entry
 * is never removed while the installation lives, and the dict operations
 * are atomic, so two threads asking at once get the same object. */
static PyObject *
indexed_pose(td_install *st, td_target target, int kind, long index)
{
    PyObject *slot = PyLong_FromLong(pose_slot(target, kind, index));
    if (slot == NULL) {
        return NULL;
    }
    PyObject *pose = NULL, *made = NULL, *addr = NULL;
    if (td_dict_get_ref(st->pose_at, slot, &pose) != 0) {
        goto done;   /* found, or an error */
    }
    if (td_new_device_like(st, st->target[target], &made) < 0) {
        goto done;
    }
    /* Known by its address before another thread can be handed it, so
     * that it reads as asked from its first read. */
    addr = PyLong_FromVoidPtr(made);
    if (addr == NULL || PyDict_SetItem(st->pose_asked, addr, slot) < 0) {
        goto done;
    }
    PyObject *kept = PyDict_SetDefault(st->pose_at, slot, made);
    if (kept != made) {
        /* Another thread's pose won, or none was stored: this address
         * must not stay known once `made` is freed. */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (PyDict_DelItem(st->pose_asked, addr) < 0) {
            PyErr_Clear();
        }
        PyErr_Restore(et, ev, tb);
    }
    pose = Py_XNewRef(kept);
done:
    Py_XDECREF(addr);
    Py_XDECREF(made);
    Py_DECREF(slot);
    return pose;
}

/* The name a pose kind reads as (borrowed). */
static PyObject *
kind_name(td_install *st, int kind)
{
    return kind == TD_POSE_CUDA ? st->str_cuda : st->str_mps;
}

PyObject *
td_pose_name(td_install *st, PyObject *dev)
{
    td_target target;
    int kind;
    long index;
    if (!pose_find(st, dev, &target, &kind, &index)) {
        return NULL;
    }
    return kind_name(st, kind);
}

int
td_pose_cuda_index(td_install *st, PyObject *dev, long *index)
{
    td_target target;
    int kind;
    return pose_find(st, dev, &target, &kind, index) && kind == TD_POSE_CUDA;
}

int
td_pose_kept(td_install *st, PyObject *dev)
{
    td_target target;
    int kind;
    long index;
    if (!pose_find(st, dev, &target, &kind, &index)) {
        return 0;
    }
    td_request req = {kind == TD_POSE_CUDA ? TD_REQ_CUDA : TD_REQ_MPS, -1};
    td_resolution res = td_resolve(req, td_get_profile(), td_get_mode(),
                                   td_get_cpu_override(), 0);
    return res.target == target && !res.toggle_override;
}

PyObject *
td_request_device(td_install *st, td_target target, td_request req,
                  td_intent intent)
{
    int k = pose_kind_of(req.kind);
    if (k >= 0 && target != TD_TARGET_KEEP && st->pose[target][k] != NULL) {
        if (req.index >= 0 && req.index <= POSE_MAX_INDEX) {
            return indexed_pose(st, target, k, req.index);
        }
        return Py_NewRef(st->pose[target][k]);
    }
    PyObject *dev = td_intent_device(st, target, intent);
    if (dev == NULL) {
        PyErr_SetString(PyExc_SystemError, "no device for this request");
        return NULL;
    }
    return Py_NewRef(dev);
}

/* asked_device(device) -> (name, index) | None: what a device the program
 * asked for reads as, for TorchDevice's own Python code, which reads the
 * device really used (torch.get_default_device reports the context's
 * device as the program asked for it: docs/policy.md). */
static PyObject *
pose_asked_device(PyObject *Py_UNUSED(module), PyObject *dev)
{
    td_install *st = td_install_acquire();
    if (st == NULL) {
        Py_RETURN_NONE;
    }
    td_target target;
    int kind;
    long index;
    PyObject *result = NULL;
    if (!pose_find(st, dev, &target, &kind, &index)) {
        result = Py_NewRef(Py_None);
    }
    else {
        PyObject *name = kind_name(st, kind);
        result = index < 0 ? Py_BuildValue("(OO)", name, Py_None)
                           : Py_BuildValue("(Ol)", name, index);
    }
    Py_DECREF(st);
    return result;
}

PyMethodDef td_pose_methods[] = {
    {"asked_device", pose_asked_device, METH_O,
     "asked_device(device) -> (name, index) | None\n\nThe kind and index "
     "(None: none named) a device the program asked for reads as, where "
     "it reads as another kind than the device really used."},
    {NULL, NULL, 0, NULL},
};

/* ---- torch.device's face ---------------------------------------------------
 *
 * torch.device is a static type of torch's: its `type` and `index`
 * getters, its `__reduce__` (pickle, copy.deepcopy) and its str/repr slots
 * are swapped in place, as tp_new is (slots.c), and put back at uninstall.
 * The process-wide state is changed with the GIL held. */

enum { FACE_TYPE, FACE_INDEX, FACE_REDUCE, FACE_ENTRIES };
static const char *const face_names[FACE_ENTRIES] = {"type", "index",
                                                     "__reduce__"};
/* torch's descriptors, while hooked */
static PyObject *orig_entry[FACE_ENTRIES];
/* torch's functions, kept after unhooking: a running hook may still call
 * them.  Their definitions are torch's static tables. */
static getter orig_get[2];          /* [FACE_TYPE], [FACE_INDEX] */
static void *orig_closure[2];
static PyCFunction orig_reduce;
static reprfunc orig_str;
static reprfunc orig_repr;

/* The name `dev` reads as to the calling code (new reference), with the
 * index asked for in *index (-1: none, as torch.device("cuda") has), or
 * NULL without an exception when it reads as itself. */
static PyObject *
shown_name(PyObject *dev, long *index)
{
    td_install *st = td_install_acquire();
    if (st == NULL) {
        return NULL;
    }
    td_target target;
    int kind;
    PyObject *result = NULL;
    if (pose_find(st, dev, &target, &kind, index)
        && td_masq_shows_pose(td_type_state(Py_TYPE(st))))
    {
        result = Py_NewRef(kind_name(st, kind));
    }
    Py_DECREF(st);
    return result;
}

static PyObject *
face_type(PyObject *self, void *Py_UNUSED(closure))
{
    long index;
    PyObject *name = shown_name(self, &index);
    if (name != NULL) {
        return name;
    }
    return orig_get[FACE_TYPE](self, orig_closure[FACE_TYPE]);
}

static PyObject *
face_index(PyObject *self, void *Py_UNUSED(closure))
{
    long index;
    PyObject *name = shown_name(self, &index);
    if (name == NULL) {
        return orig_get[FACE_INDEX](self, orig_closure[FACE_INDEX]);
    }
    Py_DECREF(name);
    if (index < 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLong(index);
}

/* What torch's own functions make of a device named `name` with `index`
 * (-1: none): "cuda", "cuda:0"; "device(type='cuda', index=0)";
 * (torch.device, ("cuda", 0)). */
typedef enum { AS_STR, AS_REPR, AS_REDUCE } face_form;

static PyObject *
face_format(PyObject *self, PyObject *name, long index, face_form form)
{
    int bare = index < 0;
    switch (form) {
    case AS_STR:
        return bare ? Py_NewRef(name)
                    : PyUnicode_FromFormat("%U:%ld", name, index);
    case AS_REPR:
        return bare ? PyUnicode_FromFormat("device(type='%U')", name)
                    : PyUnicode_FromFormat("device(type='%U', index=%ld)",
                                           name, index);
    case AS_REDUCE:
        return bare ? Py_BuildValue("(O(O))", Py_TYPE(self), name)
                    : Py_BuildValue("(O(Ol))", Py_TYPE(self), name, index);
    }
    return NULL;
}

/* What torch answers where the calling code reads the device itself. */
static PyObject *
face_own(PyObject *self, face_form form)
{
    switch (form) {
    case AS_STR:
        return orig_str(self);
    case AS_REPR:
        return orig_repr(self);
    case AS_REDUCE:
        break;
    }
    return orig_reduce(self, NULL);
}

static PyObject *
face_shown(PyObject *self, face_form form)
{
    long index;
    PyObject *name = shown_name(self, &index);
    if (name == NULL) {
        return face_own(self, form);
    }
    PyObject *result = face_format(self, name, index, form);
    Py_DECREF(name);
    return result;
}

static PyObject *
face_str(PyObject *self)
{
    return face_shown(self, AS_STR);
}

static PyObject *
face_repr(PyObject *self)
{
    return face_shown(self, AS_REPR);
}

/* A copy or an unpickled device is made by torch.device(name, index)
 * again, so it is the pose again where TorchDevice is enabled, and the
 * device asked for where it is not. */
static PyObject *
face_reduce(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return face_shown(self, AS_REDUCE);
}

static PyGetSetDef face_getset[2] = {
    {"type", face_type, NULL, NULL, NULL},
    {"index", face_index, NULL, NULL, NULL},
};
static PyMethodDef face_method = {"__reduce__", face_reduce, METH_NOARGS,
                                  NULL};

static int
face_refused(PyTypeObject *type)
{
    PyErr_Format(PyExc_RuntimeError,
                 "TorchDevice cannot show what %.100s objects were asked "
                 "for: this torch release's `type`, `index`, `__reduce__`, "
                 "str or repr is not of the kind it expects. TorchDevice is "
                 "not enabled.", type->tp_name);
    return -1;
}

/* torch's getter behind descriptor `d`, or NULL where it is not one. */
static PyGetSetDef *
getter_of(PyObject *d)
{
    if (d == NULL || !Py_IS_TYPE(d, &PyGetSetDescr_Type)) {
        return NULL;
    }
    PyGetSetDef *def = ((PyGetSetDescrObject *)d)->d_getset;
    return def->get != NULL ? def : NULL;
}

int
td_face_hook(PyTypeObject *type)
{
    PyObject *dict = type->tp_dict;   /* borrowed; a static type's own */
    PyObject *orig[FACE_ENTRIES];
    for (int i = 0; i < FACE_ENTRIES; i++) {
        orig[i] = dict ? PyDict_GetItemString(dict, face_names[i]) : NULL;
    }
    PyGetSetDef *get_def[2] = {getter_of(orig[FACE_TYPE]),
                               getter_of(orig[FACE_INDEX])};
    if (get_def[FACE_TYPE] == NULL || get_def[FACE_INDEX] == NULL
        || orig[FACE_REDUCE] == NULL
        || !Py_IS_TYPE(orig[FACE_REDUCE], &PyMethodDescr_Type)
        || type->tp_str == NULL || type->tp_repr == NULL)
    {
        return face_refused(type);
    }
    PyMethodDef *reduce_def =
        ((PyMethodDescrObject *)orig[FACE_REDUCE])->d_method;
    if ((reduce_def->ml_flags & ~METH_COEXIST) != METH_NOARGS) {
        return face_refused(type);
    }
    face_getset[FACE_TYPE].doc = get_def[FACE_TYPE]->doc;
    face_getset[FACE_INDEX].doc = get_def[FACE_INDEX]->doc;
    face_method.ml_doc = reduce_def->ml_doc;
    PyObject *mine[FACE_ENTRIES] = {
        PyDescr_NewGetSet(type, &face_getset[FACE_TYPE]),
        PyDescr_NewGetSet(type, &face_getset[FACE_INDEX]),
        PyDescr_NewMethod(type, &face_method),
    };
    int rc = -1;
    for (int i = 0; i < FACE_ENTRIES; i++) {
        if (mine[i] == NULL) {
            goto done;
        }
    }
    for (int i = 0; i < FACE_ENTRIES; i++) {
        Py_INCREF(orig[i]);
        if (PyDict_SetItemString(dict, face_names[i], mine[i]) < 0) {
            Py_DECREF(orig[i]);
            /* Put back what was swapped already. */
            for (int j = 0; j < i; j++) {
                (void)PyDict_SetItemString(dict, face_names[j], orig_entry[j]);
                Py_CLEAR(orig_entry[j]);
            }
            goto done;
        }
        orig_entry[i] = orig[i];
    }
    for (int i = FACE_TYPE; i <= FACE_INDEX; i++) {
        orig_get[i] = get_def[i]->get;
        orig_closure[i] = get_def[i]->closure;
    }
    orig_reduce = reduce_def->ml_meth;
    orig_str = type->tp_str;
    orig_repr = type->tp_repr;
    type->tp_str = face_str;
    type->tp_repr = face_repr;
    rc = 0;
done:
    for (int i = 0; i < FACE_ENTRIES; i++) {
        Py_XDECREF(mine[i]);
    }
    PyType_Modified(type);
    return rc;
}

void
td_face_unhook(PyTypeObject *type)
{
    if (type->tp_str == face_str) {
        type->tp_str = orig_str;
    }
    if (type->tp_repr == face_repr) {
        type->tp_repr = orig_repr;
    }
    /* Teardown may run with an exception set. */
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    for (int i = 0; i < FACE_ENTRIES; i++) {
        PyObject *saved = orig_entry[i];
        orig_entry[i] = NULL;
        if (saved != NULL && type->tp_dict != NULL
            && PyDict_SetItemString(type->tp_dict, face_names[i], saved) < 0)
        {
            PyErr_WriteUnraisable(NULL);
        }
        Py_XDECREF(saved);
    }
    PyErr_Restore(et, ev, tb);
    PyType_Modified(type);
}
