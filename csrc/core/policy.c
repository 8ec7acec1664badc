/* Pure policy: see policy.h.  No Python, no state, no allocation. */
#include "policy.h"

#include <string.h>

static int
type_is(const char *s, size_t n, const char *name)
{
    size_t k = strlen(name);
    return n == k && memcmp(s, name, k) == 0;
}

td_request
td_parse_device_string(const char *s, size_t n, const td_accel_type *accel)
{
    td_request r = {TD_REQ_OTHER, -1};
    size_t colon = n;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ':') {
            colon = i;
            break;
        }
    }
    td_req_kind kind;
    if (type_is(s, colon, "cpu")) {
        kind = TD_REQ_CPU;
    }
    else if (type_is(s, colon, "cuda")) {
        kind = TD_REQ_CUDA;
    }
    else if (type_is(s, colon, "mps")) {
        kind = TD_REQ_MPS;
    }
    else if (type_is(s, colon, "meta")) {
        kind = TD_REQ_META;
    }
    else if (accel != NULL && accel->name != NULL && colon == accel->len
             && memcmp(s, accel->name, colon) == 0)
    {
        kind = TD_REQ_ACCEL;
    }
    else {
        return r;
    }
    if (colon == n) {
        r.kind = kind;
        return r;
    }
    const char *d = s + colon + 1;
    size_t nd = n - colon - 1;
    if (kind == TD_REQ_CPU && nd == 2 && d[0] == '-' && d[1] == '1') {
        r.kind = TD_REQ_CPU_TOGGLE;
        return r;
    }
    /* torch rejects an empty index, signs, leading zeros and any trailing
     * character; an index that does not fit an int is a torch error too, so
     * such strings stay TD_REQ_OTHER and torch reports them. */
    if (nd == 0 || nd > 10 || (d[0] == '0' && nd > 1)) {
        return r;
    }
    long long v = 0;
    for (size_t i = 0; i < nd; i++) {
        if (d[i] < '0' || d[i] > '9') {
            return r;
        }
        v = v * 10 + (d[i] - '0');
    }
    if (v > 2147483647LL) {
        return r;
    }
    r.kind = kind;
    r.index = (long)v;
    return r;
}

static td_target
accelerator_of(td_profile profile)
{
    switch (profile) {
    case TD_PROFILE_CUDA:
        return TD_TARGET_CUDA;
    case TD_PROFILE_MPS:
        return TD_TARGET_MPS;
    case TD_PROFILE_ACCEL:
        return TD_TARGET_ACCEL;
    case TD_PROFILE_CPU:
        break;
    }
    return TD_TARGET_KEEP;
}

td_resolution
td_resolve(td_request req, td_profile profile, td_mode mode,
           int cpu_override, int from_torch)
{
    td_resolution res = {TD_TARGET_KEEP, 0, 0};
    /* The host rows: None, "cpu", "cpu:N". */
    int promote = mode == TD_MODE_ACCELERATE && !cpu_override && !from_torch;

    switch (req.kind) {
    case TD_REQ_NONE:
        if (promote) {
            res.target = accelerator_of(profile);
        }
        break;
    case TD_REQ_CPU:
        if (promote) {
            res.target = accelerator_of(profile);
        }
        break;
    case TD_REQ_CPU_TOGGLE:
        /* The string is not valid torch syntax, so it always becomes a
         * plain cpu device.  Torch's own code never asks for it.  It
         * toggles in both modes: in "cpu-stays-cpu" the override moves
         * nothing (host requests stay anyway), but programs written for the
         * original TorchDevice read the flag back. */
        res.target = TD_TARGET_CPU;
        res.toggle_override = !from_torch;
        break;
    case TD_REQ_CUDA:
        if (req.index == TD_INDEX_HOST && profile != TD_PROFILE_CPU) {
            break;
        }
        /* Every index names the one device used, as on MPS. */
        if (profile == TD_PROFILE_MPS) {
            res.target = TD_TARGET_MPS;
        }
        else if (profile == TD_PROFILE_ACCEL) {
            res.target = TD_TARGET_ACCEL;
        }
        else if (profile == TD_PROFILE_CPU) {
            res.target = TD_TARGET_CPU;
        }
        break;
    case TD_REQ_MPS:
        if (profile == TD_PROFILE_CUDA) {
            res.target = TD_TARGET_CUDA;
        }
        else if (profile == TD_PROFILE_ACCEL) {
            res.target = TD_TARGET_ACCEL;
        }
        else if (profile == TD_PROFILE_CPU) {
            res.target = TD_TARGET_CPU;
        }
        break;
    case TD_REQ_META:
    case TD_REQ_OTHER:
    case TD_REQ_ACCEL:     /* the device's own type: native */
    case TD_REQ_HOST_PLACE:
        break;
    }
    res.redirected = res.target != TD_TARGET_KEEP
                     && req.kind != TD_REQ_CPU_TOGGLE
                     && !(req.kind == TD_REQ_CPU && res.target == TD_TARGET_CPU);
    return res;
}

td_dtype_action
td_float64_action(td_profile profile, int accel_float64, td_request req,
                  td_resolution res, td_float64_policy p)
{
    if (accel_float64) {
        return TD_DTYPE_KEEP;
    }
    /* Where the request lands: the accelerator, redirected there or asked
     * for by its own type. */
    int lands_on_accel =
        res.target == TD_TARGET_MPS || res.target == TD_TARGET_ACCEL
        || (res.target == TD_TARGET_KEEP
            && ((profile == TD_PROFILE_MPS && req.kind == TD_REQ_MPS)
                || (profile == TD_PROFILE_ACCEL
                    && req.kind == TD_REQ_ACCEL)));
    if (!lands_on_accel) {
        return TD_DTYPE_KEEP;
    }
    return p == TD_FLOAT64_ERROR ? TD_DTYPE_ERROR : TD_DTYPE_TO_FLOAT32;
}

const char *
td_profile_name(td_profile p)
{
    switch (p) {
    case TD_PROFILE_CUDA:
        return "cuda";
    case TD_PROFILE_MPS:
        return "mps";
    case TD_PROFILE_ACCEL:
        return "accelerator";
    case TD_PROFILE_CPU:
        break;
    }
    return "cpu";
}

const char *
td_target_name(td_target t)
{
    switch (t) {
    case TD_TARGET_CPU:
        return "cpu";
    case TD_TARGET_CUDA:
        return "cuda";
    case TD_TARGET_MPS:
        return "mps";
    case TD_TARGET_ACCEL:
        return "accel";
    case TD_TARGET_KEEP:
    case TD_TARGET_COUNT:
        break;
    }
    return "keep";
}
