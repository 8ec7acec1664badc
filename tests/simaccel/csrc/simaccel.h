// The simulated accelerator: torch's PrivateUse1 backend, renamed "simaccel"
// by the Python loader, whose memory is host memory and whose kernels are
// torch's CPU kernels.  Test infrastructure only (tests/simaccel/README.md).
//
// Two translation units share this header:
//   runtime.cpp  allocator and memory statistics, device guard with streams
//                and events, generators, PrivateUse1 hooks, the settings the
//                Python loader drives (torch.ops.simaccel.*), AMP policy;
//   kernels.cpp  the aten kernels the device implements itself (creation,
//                copies, resize_, set_, views) and the CPU fallback for
//                every other operator, with the "behave like MPS" rules.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/Storage.h>

namespace simaccel {

constexpr c10::DeviceType kDeviceType = c10::DeviceType::PrivateUse1;
constexpr int kMaxDevices = 16;

// Number of simulated devices: SIMACCEL_DEVICE_COUNT (1 to 16), default 1,
// read once when the library is loaded.
c10::DeviceIndex device_count() noexcept;
c10::DeviceIndex current_device() noexcept;

// The device allocator (host memory, counted per device).
c10::Allocator* device_allocator();

// Makes `host` (CPU memory that a CPU kernel just produced) the memory of a
// device storage on `device`, without copying; the bytes are counted as
// allocated on that device until the device storage lets go of them.
c10::Storage adopt_host_storage(const c10::Storage& host, c10::DeviceIndex device);
// The same, as the data pointer of an existing device storage.
c10::DataPtr adopt_host_memory(const c10::Storage& host, c10::DeviceIndex device);

// The CPU generator that holds the state of a simaccel generator: CPU
// kernels draw from it, so device random numbers follow the device's seed.
at::Generator host_generator(const at::Generator& device_generator);
const at::Generator& default_generator(c10::DeviceIndex device);

// "Behave like MPS" switch; set by the loader from SIMACCEL_MPS_RULES or
// simaccel.set_mps_rules().  When on, float64 and complex128 are refused on
// the device.
bool mps_rules() noexcept;
// When on (SIMACCEL_ENABLE_FALLBACK=1), operators listed as unsupported run
// on the host with a warning instead of raising NotImplementedError.
bool fallback_enabled() noexcept;

// Raises MPS's TypeError for float64 and complex128 when the MPS rules are
// on.
void check_dtype(c10::ScalarType dtype);

}  // namespace simaccel
