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
 *     def set_rng_state(new_state, device="cuda"):
 *         if saved_by_cuda(new_state):      # a GPU's checkpoint
 *             GEN.manual_seed(seed_of(new_state)); warn()
 *         else:
 *             GEN.set_state(new_state)
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

/* `obj.name()` as a C integer; -1 with an exception set on failure. */
static Py_ssize_t
call_size(PyObject *obj, const char *name)
{
    PyObject *r = PyObject_CallMethod(obj, name, NULL);
    if (r == NULL) {
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    return n;
}

/* A state saved by CUDA's generator, which no other generator can take:
 * its 64-bit seed and 64-bit Philox offset, 16 bytes (torch 2.1 and later;
 * before, 800 bytes of retired MTGP32 states came first: 816 bytes, 808
 * without the offset).  A checkpoint written on an NVIDIA GPU holds one, and
 * a program resuming from it restores it.  Returns 1 and the two numbers
 * when `state` is one and the generator's own states differ in size, 0 when
 * the generator should be handed `state` (and report on it), -1 on error. */
static int
cuda_saved_state(td_masq *m, PyObject *state, unsigned long long *seed,
                 unsigned long long *offset)
{
    Py_ssize_t n = call_size(state, "numel");
    if (n < 0) {
        PyErr_Clear();          /* not a tensor: the generator says so */
        return 0;
    }
    if (n != 16 && n != 808 && n != 816) {
        return 0;
    }
    PyObject *dtype = PyObject_GetAttrString(state, "dtype");
    PyObject *text = dtype ? PyObject_Str(dtype) : NULL;
    Py_XDECREF(dtype);
    if (text == NULL) {
        return -1;
    }
    int is_bytes = PyUnicode_CompareWithASCIIString(text, "torch.uint8") == 0;
    Py_DECREF(text);
    if (!is_bytes) {
        return 0;
    }
    PyObject *own = call_gen(m, m->str_get_state, NULL);
    if (own == NULL) {
        return -1;
    }
    Py_ssize_t own_n = call_size(own, "numel");
    Py_DECREF(own);
    if (own_n < 0) {
        return -1;
    }
    if (own_n == n) {
        return 0;               /* the generator's own format */
    }
    PyObject *list = PyObject_CallMethod(state, "tolist", NULL);
    if (list == NULL) {
        return -1;
    }
    if (!PyList_Check(list) || PyList_GET_SIZE(list) != n) {
        Py_DECREF(list);
        return 0;
    }
    /* torch copies the two numbers in the machine's byte order: little
     * endian on every platform it builds for. */
    Py_ssize_t base = n == 16 ? 0 : 800;
    unsigned long long v[2] = {0, 0};
    for (Py_ssize_t k = 0; k < (n == 808 ? 1 : 2); k++) {
        for (Py_ssize_t i = 7; i >= 0; i--) {
            PyObject *item = PyList_GET_ITEM(list, base + 8 * k + i);
            long byte = PyLong_AsLong(item);
            if (byte == -1 && PyErr_Occurred()) {
                Py_DECREF(list);
                return -1;
            }
            v[k] = (v[k] << 8) | (unsigned long long)(byte & 0xff);
        }
    }
    Py_DECREF(list);
    *seed = v[0];
    *offset = v[1];
    return 1;
}

/* Seeds the generator from a CUDA state: with the seed itself where the
 * offset is 0 (what torch.cuda.manual_seed(seed) leaves, so the program
 * draws what it draws after that call here), else with the seed mixed
 * with the offset, so that resuming from successive checkpoints does not
 * repeat one stream.  CUDA's own stream cannot be continued elsewhere. */
static PyObject *
seed_from_cuda_state(td_masq *m, const char *api,
                     unsigned long long seed, unsigned long long offset)
{
    unsigned long long mixed = offset == 0
        ? seed : seed ^ (offset * 0x9E3779B97F4A7C15ULL);
    PyObject *as_int = PyLong_FromUnsignedLongLong(mixed);
    if (as_int == NULL) {
        return NULL;
    }
    PyObject *r = call_gen(m, m->str_manual_seed, as_int);
    Py_DECREF(as_int);
    if (r == NULL) {
        return NULL;
    }
    if (PyErr_WarnFormat(
            PyExc_UserWarning, 1,
            "TorchDevice: %s got the state of an NVIDIA GPU's generator "
            "(seed %llu, offset %llu), which the %S generator cannot "
            "continue; it was seeded from that state instead, so the random "
            "numbers from here on differ from the GPU run's "
            "(docs/masquerade.md)", api, seed, offset,
            m->target_type ? m->target_type : Py_None) < 0)
    {
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

static PyObject *
set_state(td_masq *m, const char *api, PyObject *state)
{
    PyObject *host = host_state(state);
    if (host == NULL) {
        return NULL;
    }
    unsigned long long seed, offset;
    PyObject *r = NULL;
    int cuda = cuda_saved_state(m, host, &seed, &offset);
    if (cuda > 0) {
        r = seed_from_cuda_state(m, api, seed, offset);
    }
    else if (cuda == 0) {
        r = call_gen(m, m->str_set_state, host);
    }
    Py_DECREF(host);
    return r;
}

/* r, once the call is in the report (r is NULL where that fails). */
static PyObject *
recorded(td_state *st, td_masq *m, const char *api, PyObject *r)
{
    if (r != NULL && td_masq_record(st, m, api) < 0) {
        Py_CLEAR(r);
    }
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

static PyObject *
manual_seed_as(td_state *st, td_masq *m, const char *api, PyObject *seed)
{
    /* int(seed), as torch.cuda.manual_seed does: floats and numpy ints. */
    PyObject *as_int = PyNumber_Long(seed);
    if (as_int == NULL) {
        return NULL;
    }
    PyObject *r = call_gen(m, m->str_manual_seed, as_int);
    Py_DECREF(as_int);
    return none_or_null(recorded(st, m, api, r));
}

TD_MASQ_O(rng_manual_seed)
{
    return manual_seed_as(st, m, "torch.cuda.manual_seed", arg);
}

TD_MASQ_O(rng_manual_seed_all)
{
    return manual_seed_as(st, m, "torch.cuda.manual_seed_all", arg);
}

static PyObject *
seed_as(td_state *st, td_masq *m, const char *api)
{
    return none_or_null(recorded(st, m, api,
                                 call_gen(m, m->str_seed, NULL)));
}

TD_MASQ_NOARGS(rng_seed)
{
    return seed_as(st, m, "torch.cuda.seed");
}

TD_MASQ_NOARGS(rng_seed_all)
{
    return seed_as(st, m, "torch.cuda.seed_all");
}

TD_MASQ_NOARGS(rng_initial_seed)
{
    return recorded(st, m, "torch.cuda.initial_seed",
                    call_gen(m, m->str_initial_seed, NULL));
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
    return recorded(st, m, "torch.cuda.get_rng_state",
                    call_gen(m, m->str_get_state, NULL));
}

TD_MASQ_FASTKW(rng_set_state)
{
    PyObject *state, *device;
    if (state_device_args(m, "set_rng_state", 1, args, nargs, kwnames,
                          &state, &device) < 0)
    {
        return NULL;
    }
    static const char api[] = "torch.cuda.set_rng_state";
    return none_or_null(recorded(st, m, api, set_state(m, api, state)));
}

TD_MASQ_NOARGS(rng_get_state_all)
{
    PyObject *s = recorded(st, m, "torch.cuda.get_rng_state_all",
                           call_gen(m, m->str_get_state, NULL));
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
        PyObject *r = set_state(m, "torch.cuda.set_rng_state_all", item);
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
    return none_or_null(recorded(st, m, "torch.cuda.set_rng_state_all",
                                 Py_NewRef(Py_None)));
}

PyMethodDef td_cuda_rng_methods[] = {
    {"manual_seed", rng_manual_seed, METH_O,
     "manual_seed(seed)\n\nSeeds the generator of the device really used."},
    {"manual_seed_all", rng_manual_seed_all, METH_O,
     "manual_seed_all(seed)"},
    {"seed", rng_seed, METH_NOARGS, "seed()"},
    {"seed_all", rng_seed_all, METH_NOARGS, "seed_all()"},
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
