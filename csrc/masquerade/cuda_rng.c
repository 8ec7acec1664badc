/* torch.cuda's random-number functions, answered by the default generator
 * of the device the code really runs on, so that seeding "cuda" makes the
 * redirected computation reproducible.
 *
 * Python equivalent (GEN: torch.default_generator on the CPU, the default
 * MPS generator on MPS):
 *
 *     def manual_seed(seed): GEN.manual_seed(int(seed))
 *     def seed(): GEN.seed()
 *     def initial_seed(): return GEN.initial_seed()
 *     def get_rng_state(device="cuda"): return GEN.get_state()
 *     def set_rng_state(new_state, device="cuda"): GEN.set_state(new_state)
 *     def get_rng_state_all(): return [GEN.get_state()]
 *     def set_rng_state_all(new_states): for s in new_states: GEN.set_state(s)
 *
 * On the CPU profile the generator that "cuda" code uses is the CPU one,
 * so seeding either seeds both: that is the truth of where the numbers come
 * from.
 */
#include "masquerade.h"

static PyObject *
generator(td_masq *m)
{
    PyObject *gen = m->generator;
    if (gen == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "TorchDevice: the CUDA masquerade is not installed");
    }
    return gen;   /* borrowed */
}

static PyObject *
call_gen(td_masq *m, PyObject *method, PyObject *arg)
{
    PyObject *gen = generator(m);
    if (gen == NULL) {
        return NULL;
    }
    atomic_store_explicit(&TD_MC(m)->initialized, 1, memory_order_relaxed);
    if (arg == NULL) {
        return PyObject_CallMethodNoArgs(gen, method);
    }
    return PyObject_CallMethodOneArg(gen, method, arg);
}

/* A new reference to `state` on the host.  An RNG state is host data (a
 * CPU ByteTensor) wherever the generator is, but a state a program saved
 * and loaded with map_location="cuda" comes back on the accelerator, and
 * its `.cpu()` stays there in accelerate mode (docs/policy.md): torch's
 * original Tensor.cpu brings it home, as `.cpu()` does on CUDA.  Anything
 * that is not a tensor goes to the generator, which reports it. */
static PyObject *
host_state(PyObject *state)
{
    td_install *inst = td_install_acquire();
    if (inst == NULL) {
        return Py_NewRef(state);
    }
    PyObject *result = NULL;
    PyObject *is_cpu = PyObject_GetAttr(state, inst->str_is_cpu);
    if (is_cpu == NULL) {
        PyErr_Clear();
        result = Py_NewRef(state);
        goto done;
    }
    int host = PyObject_IsTrue(is_cpu);
    Py_DECREF(is_cpu);
    if (host > 0) {
        result = Py_NewRef(state);
    }
    else if (host == 0) {
        result = PyObject_CallOneArg(inst->tensor_cpu, state);
    }
done:
    Py_DECREF(inst);
    return result;
}

static PyObject *
set_state(td_masq *m, PyObject *state)
{
    PyObject *host = host_state(state);
    if (host == NULL) {
        return NULL;
    }
    PyObject *r = call_gen(m, m->str_set_state, host);
    Py_DECREF(host);
    return r;
}

static PyObject *
none_or_null(PyObject *r)
{
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

TD_MASQ_O(rng_manual_seed)
{
    /* int(seed), as torch.cuda.manual_seed does: floats and numpy ints. */
    PyObject *as_int = PyNumber_Long(arg);
    if (as_int == NULL) {
        return NULL;
    }
    PyObject *r = call_gen(m, m->str_manual_seed, as_int);
    Py_DECREF(as_int);
    if (r != NULL && td_masq_record(st, m, "torch.cuda.manual_seed") < 0) {
        Py_CLEAR(r);
    }
    return none_or_null(r);
}

TD_MASQ_NOARGS(rng_seed)
{
    return none_or_null(call_gen(m, m->str_seed, NULL));
}

TD_MASQ_NOARGS(rng_initial_seed)
{
    return call_gen(m, m->str_initial_seed, NULL);
}

/* Finds (new_state, device) in a call of set_rng_state, or (device) in
 * one of get_rng_state, and validates the device. */
static int
state_device_args(td_masq *m, const char *fname, int want_state,
                  PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                  PyObject **state, PyObject **device)
{
    static const char *const names[] = {"new_state", "device"};
    td_args_spec spec = {fname, names + !want_state, 1 + want_state,
                         want_state, 1 + want_state};
    PyObject *a[2] = {NULL, NULL};
    if (td_args_parse(&spec, args, nargs, kwnames, a) < 0) {
        return -1;
    }
    *state = want_state ? a[0] : NULL;
    *device = want_state ? a[1] : a[0];
    long index;
    return td_masq_device_index(m, *device, 1, &index);
}

TD_MASQ_FASTKW(rng_get_state)
{
    PyObject *state, *device;
    if (state_device_args(m, "get_rng_state", 0, args, nargs, kwnames,
                          &state, &device) < 0)
    {
        return NULL;
    }
    return call_gen(m, m->str_get_state, NULL);
}

TD_MASQ_FASTKW(rng_set_state)
{
    PyObject *state, *device;
    if (state_device_args(m, "set_rng_state", 1, args, nargs, kwnames,
                          &state, &device) < 0)
    {
        return NULL;
    }
    return none_or_null(set_state(m, state));
}

TD_MASQ_NOARGS(rng_get_state_all)
{
    PyObject *s = call_gen(m, m->str_get_state, NULL);
    if (s == NULL) {
        return NULL;
    }
    PyObject *list = PyList_New(1);
    if (list == NULL) {
        Py_DECREF(s);
        return NULL;
    }
    PyList_SET_ITEM(list, 0, s);
    return list;
}

/* Every state names the one device, so the last one wins, as it would if
 * CUDA had collapsed the indexes too. */
TD_MASQ_O(rng_set_state_all)
{
    PyObject *it = PyObject_GetIter(arg), *item;
    if (it == NULL) {
        return NULL;
    }
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *r = set_state(m, item);
        Py_DECREF(item);
        if (r == NULL) {
            Py_DECREF(it);
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyMethodDef td_cuda_rng_methods[] = {
    {"manual_seed", rng_manual_seed, METH_O,
     "manual_seed(seed)\n\nSeeds the generator of the device really used."},
    {"manual_seed_all", rng_manual_seed, METH_O, "manual_seed_all(seed)"},
    {"seed", rng_seed, METH_NOARGS, "seed()"},
    {"seed_all", rng_seed, METH_NOARGS, "seed_all()"},
    {"initial_seed", rng_initial_seed, METH_NOARGS, "initial_seed() -> int"},
    {"get_rng_state", TD_FASTKW(rng_get_state),
     "get_rng_state(device='cuda') -> ByteTensor"},
    {"set_rng_state", TD_FASTKW(rng_set_state),
     "set_rng_state(new_state, device='cuda')"},
    {"get_rng_state_all", rng_get_state_all, METH_NOARGS,
     "get_rng_state_all() -> [ByteTensor]"},
    {"set_rng_state_all", rng_set_state_all, METH_O,
     "set_rng_state_all(new_states)"},
    {NULL, NULL, 0, NULL},
};
