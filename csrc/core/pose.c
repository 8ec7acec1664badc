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
 * "cuda".  So those objects, one per (target, kind asked for) made at
 * install, read as the kind asked for: `type`, `str()` and `repr()`.
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
    return 0;
}

/* The pose's target and kind; 0 when `dev` is none of them. */
static int
pose_find(td_install *st, PyObject *dev, td_target *target, int *kind)
{
    if (Py_TYPE(dev) != st->device_type) {
        return 0;
    }
    for (int t = 0; t < TD_TARGET_COUNT; t++) {
        for (int k = 0; k < TD_POSE_KINDS; k++) {
            if (st->pose[t][k] == dev) {
                *target = (td_target)t;
                *kind = k;
                return 1;
            }
        }
    }
    return 0;
}

PyObject *
td_pose_name(td_install *st, PyObject *dev)
{
    td_target target;
    int kind;
    if (!pose_find(st, dev, &target, &kind)) {
        return NULL;
    }
    return kind == TD_POSE_CUDA ? st->str_cuda : st->str_mps;
}

int
td_pose_kept(td_install *st, PyObject *dev)
{
    td_target target;
    int kind;
    if (!pose_find(st, dev, &target, &kind)) {
        return 0;
    }
    td_request req = {kind == TD_POSE_CUDA ? TD_REQ_CUDA : TD_REQ_MPS, -1};
    td_resolution res = td_resolve(req, td_get_profile(), td_get_mode(),
                                   td_get_cpu_override(), 0);
    return res.target == target && !res.toggle_override;
}

PyObject *
td_request_device(td_install *st, td_target target, td_req_kind kind,
                  td_intent intent)
{
    int k = pose_kind_of(kind);
    if (k >= 0 && target != TD_TARGET_KEEP && st->pose[target][k] != NULL) {
        return st->pose[target][k];
    }
    return td_intent_device(st, target, intent);
}

/* ---- torch.device's face ---------------------------------------------------
 *
 * torch.device is a static type of torch's: its `type` getter, its
 * `__reduce__` (pickle, copy.deepcopy) and its str/repr slots are swapped
 * in place, as tp_new is (slots.c), and put back at uninstall.  The
 * process-wide state is changed with the GIL held. */

enum { FACE_TYPE, FACE_REDUCE, FACE_ENTRIES };
static const char *const face_names[FACE_ENTRIES] = {"type", "__reduce__"};
/* torch's descriptors, while hooked */
static PyObject *orig_entry[FACE_ENTRIES];
/* torch's functions, kept after unhooking: a running hook may still call
 * them.  Their definitions are torch's static tables. */
static getter orig_get;
static void *orig_closure;
static PyCFunction orig_reduce;
static reprfunc orig_str;
static reprfunc orig_repr;

/* The name `dev` reads as to the calling code (new reference), or NULL
 * without an exception when it reads as itself. */
static PyObject *
shown_name(PyObject *dev)
{
    td_install *st = td_install_acquire();
    if (st == NULL) {
        return NULL;
    }
    PyObject *name = td_pose_name(st, dev);
    PyObject *result = NULL;
    if (name != NULL && td_masq_shows_pose(td_type_state(Py_TYPE(st)))) {
        result = Py_NewRef(name);
    }
    Py_DECREF(st);
    return result;
}

static PyObject *
face_type(PyObject *self, void *Py_UNUSED(closure))
{
    PyObject *name = shown_name(self);
    if (name != NULL) {
        return name;
    }
    return orig_get(self, orig_closure);
}

/* What torch's own functions make of a device named `name`: "cuda",
 * "cuda:0"; "device(type='cuda', index=0)"; (torch.device, ("cuda", 0)). */
typedef enum { AS_STR, AS_REPR, AS_REDUCE } face_form;

static PyObject *
face_format(PyObject *self, PyObject *name, face_form form)
{
    PyObject *index = PyObject_GetAttrString(self, "index");
    if (index == NULL) {
        return NULL;
    }
    PyObject *result = NULL;
    int bare = index == Py_None;
    switch (form) {
    case AS_STR:
        result = bare ? Py_NewRef(name)
                      : PyUnicode_FromFormat("%U:%S", name, index);
        break;
    case AS_REPR:
        result = bare ? PyUnicode_FromFormat("device(type='%U')", name)
                      : PyUnicode_FromFormat("device(type='%U', index=%S)",
                                             name, index);
        break;
    case AS_REDUCE:
        result = bare ? Py_BuildValue("(O(O))", Py_TYPE(self), name)
                      : Py_BuildValue("(O(OO))", Py_TYPE(self), name, index);
        break;
    }
    Py_DECREF(index);
    return result;
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
    PyObject *name = shown_name(self);
    if (name == NULL) {
        return face_own(self, form);
    }
    PyObject *result = face_format(self, name, form);
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

static PyGetSetDef face_getset = {"type", face_type, NULL, NULL, NULL};
static PyMethodDef face_method = {"__reduce__", face_reduce, METH_NOARGS,
                                  NULL};

static int
face_refused(PyTypeObject *type)
{
    PyErr_Format(PyExc_RuntimeError,
                 "TorchDevice cannot show what %.100s objects were asked "
                 "for: this torch release's `type`, `__reduce__`, str or "
                 "repr is not of the kind it expects. TorchDevice is not "
                 "enabled.", type->tp_name);
    return -1;
}

int
td_face_hook(PyTypeObject *type)
{
    PyObject *dict = type->tp_dict;   /* borrowed; a static type's own */
    PyObject *orig[FACE_ENTRIES];
    for (int i = 0; i < FACE_ENTRIES; i++) {
        orig[i] = dict ? PyDict_GetItemString(dict, face_names[i]) : NULL;
    }
    if (orig[FACE_TYPE] == NULL || orig[FACE_REDUCE] == NULL
        || !Py_IS_TYPE(orig[FACE_TYPE], &PyGetSetDescr_Type)
        || !Py_IS_TYPE(orig[FACE_REDUCE], &PyMethodDescr_Type)
        || type->tp_str == NULL || type->tp_repr == NULL)
    {
        return face_refused(type);
    }
    PyGetSetDef *get_def = ((PyGetSetDescrObject *)orig[FACE_TYPE])->d_getset;
    PyMethodDef *reduce_def =
        ((PyMethodDescrObject *)orig[FACE_REDUCE])->d_method;
    if (get_def->get == NULL
        || (reduce_def->ml_flags & ~METH_COEXIST) != METH_NOARGS)
    {
        return face_refused(type);
    }
    face_getset.doc = get_def->doc;
    face_method.ml_doc = reduce_def->ml_doc;
    PyObject *mine[FACE_ENTRIES] = {
        PyDescr_NewGetSet(type, &face_getset),
        PyDescr_NewMethod(type, &face_method),
    };
    int rc = -1;
    if (mine[FACE_TYPE] == NULL || mine[FACE_REDUCE] == NULL) {
        goto done;
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
    orig_get = get_def->get;
    orig_closure = get_def->closure;
    orig_reduce = reduce_def->ml_meth;
    orig_str = type->tp_str;
    orig_repr = type->tp_repr;
    type->tp_str = face_str;
    type->tp_repr = face_repr;
    rc = 0;
done:
    Py_XDECREF(mine[FACE_TYPE]);
    Py_XDECREF(mine[FACE_REDUCE]);
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
