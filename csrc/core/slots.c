/* Swapping the tp_new slot of torch's static types: torch.device,
 * torch.Generator, torch.Stream and torch.Event (devicehook.c,
 * streams/stream_generic.c); and, as one more step with the same undo
 * order, torch.device's `type` and str/repr (pose.c).
 *
 * Calling a type runs its tp_vectorcall when it has one, and only
 * otherwise tp_new: a torch release that gives one of these types a
 * vectorcall entry would bypass the hook, and TorchDevice would silently
 * stop redirecting.  So a type with one is refused, loudly, before anything
 * changes.  Every swap is undone by td_slot_unhook, and td_slots_unhook_all
 * undoes them in the reverse order they were made (install failures,
 * uninstall, module teardown).
 *
 * The slots belong to types every interpreter shares: this state is
 * process-wide, changed only with the GIL held.  torch's own tp_new is kept
 * after unhooking, because a hook that is already running calls it.
 */
#include "tdcore.h"

#include <stdatomic.h>

typedef struct {
    PyTypeObject *type;     /* strong while hooked */
    newfunc original;
    newfunc hook;
} td_slot_entry;

static td_slot_entry slots[TD_SLOT_COUNT];
static td_slot order[TD_SLOT_COUNT];    /* hooked slots, oldest first */
static int norder;

/* Tests inject a failure into one install step (td_install_steps). */
static atomic_int fail_step = -1;

static const char *const step_names[TD_SLOT_COUNT] = {
    "torch.device", "torch.device.type", "torch.Generator", "torch.Stream",
    "torch.Event",
};

int
td_slot_hook(td_slot slot, PyObject *type_obj, newfunc hook)
{
    if (!PyType_Check(type_obj)) {
        PyErr_Format(PyExc_TypeError, "%s: a type is needed, not %.100s",
                     step_names[slot], Py_TYPE(type_obj)->tp_name);
        return -1;
    }
    PyTypeObject *type = (PyTypeObject *)type_obj;
    td_slot_entry *e = &slots[slot];
    if (e->type == type
        && (slot == TD_SLOT_DEVICE_FACE || type->tp_new == hook))
    {
        return 0;
    }
    if (e->type != NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "TorchDevice: %s is already hooked on another type",
                     step_names[slot]);
        return -1;
    }
    if (atomic_load(&fail_step) == (int)slot) {
        PyErr_Format(PyExc_RuntimeError,
                     "TorchDevice: injected failure hooking %s",
                     step_names[slot]);
        return -1;
    }
    if (slot == TD_SLOT_DEVICE_FACE) {
        if (td_face_hook(type) < 0) {
            return -1;
        }
        e->type = (PyTypeObject *)Py_NewRef(type);
        e->original = NULL;
        e->hook = NULL;
        order[norder++] = slot;
        return 0;
    }
    if (type->tp_vectorcall != NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "TorchDevice cannot redirect %s (%.100s): this torch "
                     "release calls the type through a vectorcall entry, "
                     "which bypasses the tp_new hook TorchDevice relies on. "
                     "TorchDevice is not enabled.", step_names[slot],
                     type->tp_name);
        return -1;
    }
    e->type = (PyTypeObject *)Py_NewRef(type);
    e->original = type->tp_new;
    e->hook = hook;
    type->tp_new = hook;
    PyType_Modified(type);
    order[norder++] = slot;
    return 0;
}

void
td_slot_unhook(td_slot slot)
{
    td_slot_entry *e = &slots[slot];
    PyTypeObject *type = e->type;
    if (type == NULL) {
        return;
    }
    if (slot == TD_SLOT_DEVICE_FACE) {
        td_face_unhook(type);
    }
    else if (type->tp_new == e->hook) {
        type->tp_new = e->original;
        PyType_Modified(type);
    }
    e->type = NULL;
    for (int i = 0; i < norder; i++) {
        if (order[i] == slot) {
            for (int j = i; j + 1 < norder; j++) {
                order[j] = order[j + 1];
            }
            norder--;
            break;
        }
    }
    Py_DECREF(type);
}

void
td_slots_unhook_all(void)
{
    while (norder > 0) {
        td_slot_unhook(order[norder - 1]);
    }
}

PyTypeObject *
td_slot_type(td_slot slot)
{
    return slots[slot].type;
}

newfunc
td_slot_original(td_slot slot)
{
    return slots[slot].original;
}

/* ---- Python API (tests and diagnostics) ---------------------------------- */

/* The names of steps `which[0..n)`, or of every step when `which` is NULL. */
static PyObject *
step_names_tuple(const td_slot *which, int n)
{
    PyObject *names = PyTuple_New(n);
    if (names == NULL) {
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        int step = which ? (int)which[i] : i;
        PyObject *s = PyUnicode_FromString(step_names[step]);
        if (s == NULL) {
            Py_DECREF(names);
            return NULL;
        }
        PyTuple_SET_ITEM(names, i, s);
    }
    return names;
}

static PyObject *
slots_hooked(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    return step_names_tuple(order, norder);
}

static PyObject *
slots_steps(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    return step_names_tuple(NULL, TD_SLOT_COUNT);
}

static PyObject *
slots_inject_failure(PyObject *Py_UNUSED(m), PyObject *name)
{
    int value = -1;
    if (name != Py_None) {
        for (int i = 0; i < TD_SLOT_COUNT; i++) {
            if (PyUnicode_Check(name)
                && PyUnicode_CompareWithASCIIString(name, step_names[i]) == 0)
            {
                value = i;
            }
        }
        if (value < 0) {
            PyErr_Format(PyExc_ValueError, "no install step named %R", name);
            return NULL;
        }
    }
    atomic_store(&fail_step, value);
    Py_RETURN_NONE;
}

PyMethodDef td_slot_methods[] = {
    {"hooked_slots", slots_hooked, METH_NOARGS,
     "hooked_slots() -> tuple\n\nThe types whose tp_new is hooked, in the "
     "order they were hooked."},
    {"install_steps", slots_steps, METH_NOARGS,
     "install_steps() -> tuple\n\nThe slot swaps install() and "
     "streams_setup() make, in order."},
    {"_inject_install_failure", slots_inject_failure, METH_O,
     "_inject_install_failure(step or None)\n\nMakes the named install "
     "step fail (tests of the undo path)."},
    {NULL, NULL, 0, NULL},
};
