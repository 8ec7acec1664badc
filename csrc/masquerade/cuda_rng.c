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

static td_state *
module_state(PyObject *module)
{
    return (td_state *)PyModule_GetState(module);
}

static PyObject *
generator(td_state *st)
{
    PyObject *gen = TD_MASQ(st)->generator;
    if (gen == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "TorchDevice: the CUDA masquerade is not installed");
    }
    return gen;   /* borrowed */
}

static PyObject *
call_gen(td_state *st, PyObject *method, PyObject *arg)
{
    PyObject *gen = generator(st);
    if (gen == NULL) {
        return NULL;
    }
    atomic_store_explicit(&TD_MASQ(st)->initialized, 1,
                          memory_order_relaxed);
    if (arg == NULL) {
        return PyObject_CallMethodNoArgs(gen, method);
    }
    return PyObject_CallMethodOneArg(gen, method, arg);
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

static PyObject *
rng_manual_seed(PyObject *module, PyObject *seed)
{
    td_state *st = module_state(module);
    /* int(seed), as torch.cuda.manual_seed does: floats and numpy ints. */
    PyObject *as_int = PyNumber_Long(seed);
    if (as_int == NULL) {
        return NULL;
    }
    PyObject *r = call_gen(st, TD_MASQ(st)->str_manual_seed, as_int);
    Py_DECREF(as_int);
    if (r != NULL && td_masq_record(st, "torch.cuda.manual_seed") < 0) {
        Py_CLEAR(r);
    }
    return none_or_null(r);
}

static PyObject *
rng_seed(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_state *st = module_state(module);
    return none_or_null(call_gen(st, TD_MASQ(st)->str_seed, NULL));
}

static PyObject *
rng_initial_seed(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_state *st = module_state(module);
    return call_gen(st, TD_MASQ(st)->str_initial_seed, NULL);
}

/* Finds (state, device) in a call; `want_state` says whether the state
 * argument comes first. */
static int
state_device_args(td_state *st, const char *fname, int want_state,
                  PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                  PyObject **state, PyObject **device)
{
    Py_ssize_t max = want_state ? 2 : 1;
    *state = NULL;
    *device = NULL;
    if (nargs > max) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments",
                     fname, max);
        return -1;
    }
    if (want_state && nargs > 0) {
        *state = args[0];
    }
    if (nargs == max) {
        *device = args[max - 1];
    }
    for (Py_ssize_t i = 0; kwnames && i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_Compare(name, st->str_device) == 0) {
            *device = args[nargs + i];
        }
        else if (want_state
                 && PyUnicode_CompareWithASCIIString(name, "new_state") == 0)
        {
            *state = args[nargs + i];
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument %R", fname,
                         name);
            return -1;
        }
    }
    if (want_state && *state == NULL) {
        PyErr_Format(PyExc_TypeError,
                     "%s() missing 1 required positional argument: "
                     "'new_state'", fname);
        return -1;
    }
    long index;
    return td_masq_device_index(st, *device, 1, &index);
}

static PyObject *
rng_get_state(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    td_state *st = module_state(module);
    PyObject *state, *device;
    if (state_device_args(st, "get_rng_state", 0, args, nargs, kwnames,
                          &state, &device) < 0)
    {
        return NULL;
    }
    return call_gen(st, TD_MASQ(st)->str_get_state, NULL);
}

static PyObject *
rng_set_state(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    td_state *st = module_state(module);
    PyObject *state, *device;
    if (state_device_args(st, "set_rng_state", 1, args, nargs, kwnames,
                          &state, &device) < 0)
    {
        return NULL;
    }
    return none_or_null(call_gen(st, TD_MASQ(st)->str_set_state, state));
}

static PyObject *
rng_get_state_all(PyObject *module, PyObject *Py_UNUSED(a))
{
    td_state *st = module_state(module);
    PyObject *s = call_gen(st, TD_MASQ(st)->str_get_state, NULL);
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
static PyObject *
rng_set_state_all(PyObject *module, PyObject *states)
{
    td_state *st = module_state(module);
    PyObject *it = PyObject_GetIter(states), *item;
    if (it == NULL) {
        return NULL;
    }
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *r = call_gen(st, TD_MASQ(st)->str_set_state, item);
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

#define FASTKW(f) (PyCFunction)(void (*)(void))(f), \
                  METH_FASTCALL | METH_KEYWORDS

PyMethodDef td_cuda_rng_methods[] = {
    {"manual_seed", rng_manual_seed, METH_O,
     "manual_seed(seed)\n\nSeeds the generator of the device really used."},
    {"manual_seed_all", rng_manual_seed, METH_O, "manual_seed_all(seed)"},
    {"seed", rng_seed, METH_NOARGS, "seed()"},
    {"seed_all", rng_seed, METH_NOARGS, "seed_all()"},
    {"initial_seed", rng_initial_seed, METH_NOARGS, "initial_seed() -> int"},
    {"get_rng_state", FASTKW(rng_get_state),
     "get_rng_state(device='cuda') -> ByteTensor"},
    {"set_rng_state", FASTKW(rng_set_state),
     "set_rng_state(new_state, device='cuda')"},
    {"get_rng_state_all", rng_get_state_all, METH_NOARGS,
     "get_rng_state_all() -> [ByteTensor]"},
    {"set_rng_state_all", rng_set_state_all, METH_O,
     "set_rng_state_all(new_states)"},
    {NULL, NULL, 0, NULL},
};
