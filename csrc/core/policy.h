/* The redirection policy as a pure function: no Python objects, no globals.
 *
 * Everything that decides *where* a tensor goes lives here so that it can be
 * tested for every hardware profile on any machine (docs/policy.md).
 */
#ifndef TD_POLICY_H
#define TD_POLICY_H

#include <stddef.h>

typedef enum {
    TD_PROFILE_CPU = 0,
    TD_PROFILE_CUDA = 1,
    TD_PROFILE_MPS = 2,
    /* Neither CUDA nor MPS: the accelerator torch.accelerator names (XPU,
     * HPU, a PrivateUse1 backend, ...), used as one device. */
    TD_PROFILE_ACCEL = 3,
} td_profile;

typedef enum {
    /* The seed's default: None and "cpu" go to the accelerator too. */
    TD_MODE_ACCELERATE = 0,
    /* Only accelerator requests are redirected; None and "cpu" stay put. */
    TD_MODE_CPU_STAYS_CPU = 1,
} td_mode;

typedef enum {
    TD_FLOAT64_DOWNCAST = 0,
    TD_FLOAT64_ERROR = 1,
} td_float64_policy;

typedef enum {
    TD_REQ_NONE = 0,       /* no device given */
    TD_REQ_CPU = 1,
    TD_REQ_CUDA = 2,
    TD_REQ_MPS = 3,
    TD_REQ_META = 4,
    TD_REQ_CPU_TOGGLE = 5, /* "cpu:-1" / torch.device("cpu", -1) */
    TD_REQ_OTHER = 6,      /* anything else: left to torch, errors included */
    TD_REQ_ACCEL = 7,      /* the generic accelerator's own type */
    /* A host torch.device TorchDevice did not hand out: read off a tensor
     * (x.device) or made before it was enabled.  It names where a tensor
     * is, not a request, so it is never redirected. */
    TD_REQ_HOST_PLACE = 8,
} td_req_kind;

typedef struct {
    td_req_kind kind;
    long index;            /* -1 when no index was given */
} td_request;

/* The index of a TD_REQ_CUDA request made with the int -1: what
 * Tensor.get_device() answers for a tensor on the CPU.  Where "cuda" lands
 * on the CPU every tensor of the program answers it, and CUDA code hands
 * it back (`torch.zeros(n, device=x.get_device())`) meaning x's GPU.
 * Elsewhere it is left to torch, which refuses it as CUDA would.  Outside
 * the range of torch's device index (int8, at most int16): torch wraps
 * "cuda:254" round to a device of index -2, which must read as that
 * device, not as this request. */
#define TD_INDEX_HOST (-65536L)

typedef enum {
    TD_TARGET_KEEP = 0,    /* pass the request to torch unchanged */
    TD_TARGET_CPU = 1,
    TD_TARGET_CUDA = 2,    /* "cuda" without index: the current CUDA device */
    TD_TARGET_MPS = 3,     /* mps:0; MPS has one device */
    TD_TARGET_ACCEL = 4,   /* the generic accelerator's device (profile
                              accelerator) */
    TD_TARGET_COUNT = 5,   /* size of tables indexed by td_target */
} td_target;

/* The generic accelerator's device type, as requests name it: "xpu",
 * "hpu", a PrivateUse1 backend's name.  `name` is NULL where there is none
 * (profiles cpu, cuda, mps): then no request is TD_REQ_ACCEL. */
typedef struct {
    const char *name;
    size_t len;
    int code;              /* its c10::DeviceType value */
} td_accel_type;

typedef struct {
    td_target target;
    int toggle_override;   /* caller flips the CPU override */
    int redirected;        /* the device torch sees differs from the request */
} td_resolution;

/* A tensor's own device (a *_like call, a result where it is): nothing to
 * redirect. */
#define TD_STAYS ((td_resolution){TD_TARGET_KEEP, 0, 0})

typedef enum {
    TD_DTYPE_KEEP = 0,
    TD_DTYPE_TO_FLOAT32 = 1,
    TD_DTYPE_ERROR = 2,
} td_dtype_action;

/* Parses a device string with torch's grammar: "type" or "type:N", N a
 * non-negative decimal without leading zeros.  Only the types the policy
 * cares about are classified (the generic accelerator's when `accel` names
 * one; it may be NULL); everything else, malformed strings included,
 * becomes TD_REQ_OTHER so that torch raises its own error for it. */
td_request td_parse_device_string(const char *s, size_t n,
                                  const td_accel_type *accel);

/* The policy table.  `from_torch` is true when the request was made by
 * torch's own Python code: a host-side "cpu" or None there is never promoted
 * to the accelerator. */
td_resolution td_resolve(td_request req, td_profile profile, td_mode mode,
                         int cpu_override, int from_torch);

/* What a float64 request becomes on the device a resolution lands on;
 * `accel_float64` says whether the profile's accelerator computes float64
 * (its capability record, docs/hardware.md: MPS does not). */
td_dtype_action td_float64_action(td_profile profile, int accel_float64,
                                  td_request req, td_resolution res,
                                  td_float64_policy p);

const char *td_profile_name(td_profile p);
const char *td_target_name(td_target t);

#endif /* TD_POLICY_H */
