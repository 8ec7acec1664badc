/* Process-wide settings read on every intercepted call.
 *
 * They are atomics rather than module state because the torch.device hook
 * runs inside torch's static type, which every thread and interpreter shares;
 * relaxed ordering is enough since each flag is independent and readers only
 * need a value that some writer stored.
 */
#include "tdcore.h"

#include <stdatomic.h>

static atomic_int td_profile_v = TD_PROFILE_CPU;
static atomic_int td_mode_v = TD_MODE_ACCELERATE;
static atomic_int td_float64_v = TD_FLOAT64_DOWNCAST;
/* The capability record's float64 (docs/hardware.md): whether the
 * profile's accelerator computes float64. */
static atomic_int td_accel_float64_v = 1;
static atomic_int td_override_v = 0;
static atomic_int td_report_v = 0;
/* Set at the program's first "mps" request, never cleared: where MPS is
 * not announced, torch.mps does what an MPS-written program asks of it only
 * once the program has asked for the device (mps_reverse.c). */
static atomic_int td_mps_requested_v = 0;

/* The scoped form (TorchDevice.cpu_override) belongs to the thread that
 * opened it, like torch's own context managers (no_grad, the default
 * device): with one process-wide value, scopes of concurrent threads end
 * out of order and the last exit can leave the override on after every
 * scope closed.  -1: no scope open in this thread; else the value of the
 * innermost one, which hides the process-wide value. */
static TD_THREAD_LOCAL int td_scope_v = -1;

td_profile
td_get_profile(void)
{
    return (td_profile)atomic_load_explicit(&td_profile_v,
                                            memory_order_relaxed);
}

td_mode
td_get_mode(void)
{
    return (td_mode)atomic_load_explicit(&td_mode_v, memory_order_relaxed);
}

td_float64_policy
td_get_float64(void)
{
    return (td_float64_policy)atomic_load_explicit(&td_float64_v,
                                                   memory_order_relaxed);
}

int
td_get_accel_float64(void)
{
    return atomic_load_explicit(&td_accel_float64_v, memory_order_relaxed);
}

int
td_get_cpu_override(void)
{
    int scoped = td_scope_v;
    if (scoped >= 0) {
        return scoped;
    }
    return atomic_load_explicit(&td_override_v, memory_order_relaxed);
}

int
td_exchange_cpu_override(int value)
{
    return atomic_exchange(&td_override_v, value ? 1 : 0);
}

/* "cpu:-1" flips what the calling thread sees: its innermost scope, or
 * the process-wide value outside any scope. */
void
td_toggle_cpu_override(void)
{
    if (td_scope_v >= 0) {
        td_scope_v ^= 1;
        return;
    }
    atomic_fetch_xor(&td_override_v, 1);
}

void
td_note_mps_request(void)
{
    if (!atomic_load_explicit(&td_mps_requested_v, memory_order_relaxed)) {
        atomic_store_explicit(&td_mps_requested_v, 1, memory_order_relaxed);
    }
}

int
td_mps_requested(void)
{
    return atomic_load_explicit(&td_mps_requested_v, memory_order_relaxed);
}

int
td_get_report(void)
{
    return atomic_load_explicit(&td_report_v, memory_order_relaxed);
}

void
td_set_config(td_profile profile, td_mode mode, td_float64_policy f64,
              int accel_float64)
{
    atomic_store(&td_profile_v, (int)profile);
    atomic_store(&td_mode_v, (int)mode);
    atomic_store(&td_float64_v, (int)f64);
    atomic_store(&td_accel_float64_v, accel_float64 ? 1 : 0);
}

void
td_set_report(int on)
{
    atomic_store(&td_report_v, on ? 1 : 0);
}

static PyObject *
flags_get_cpu_override(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    return PyBool_FromLong(td_get_cpu_override());
}

static PyObject *
flags_set_cpu_override(PyObject *Py_UNUSED(m), PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0) {
        return NULL;
    }
    return PyBool_FromLong(td_exchange_cpu_override(on));
}

static PyObject *
flags_swap_scoped_cpu_override(PyObject *Py_UNUSED(m), PyObject *arg)
{
    int overflow = 0;
    long value = PyLong_AsLongAndOverflow(arg, &overflow);
    if (value == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow || value < -1 || value > 1) {
        PyErr_SetString(PyExc_ValueError, "scope value must be -1, 0 or 1");
        return NULL;
    }
    int previous = td_scope_v;
    td_scope_v = (int)value;
    return PyLong_FromLong(previous);
}

static PyObject *
flags_set_report(PyObject *Py_UNUSED(m), PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0) {
        return NULL;
    }
    td_set_report(on);
    Py_RETURN_NONE;
}

static PyObject *
flags_get_report(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    return PyBool_FromLong(td_get_report());
}

PyMethodDef td_flags_methods[] = {
    {"get_cpu_override", flags_get_cpu_override, METH_NOARGS,
     "get_cpu_override() -> bool\n\nWhether the CPU override is on for the "
     "calling thread."},
    {"set_cpu_override", flags_set_cpu_override, METH_O,
     "set_cpu_override(on) -> bool\n\nSets the process-wide CPU override; "
     "returns the previous value."},
    {"swap_scoped_cpu_override", flags_swap_scoped_cpu_override, METH_O,
     "swap_scoped_cpu_override(value) -> previous\n\nOpens (0 or 1) or "
     "closes (the previous value; -1: none) the calling thread's scoped "
     "CPU override."},
    {"set_report", flags_set_report, METH_O,
     "set_report(on)\n\nTurns call-site recording on or off."},
    {"get_report", flags_get_report, METH_NOARGS,
     "get_report() -> bool"},
    {NULL, NULL, 0, NULL},
};
