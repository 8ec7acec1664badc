"""The seed's device object: `TorchDevice("cuda")` is the device a request
resolves to under the policy in force.

It also carries the documented API of the original TorchDevice (0.0.x), so
that programs written for it run unchanged (docs/compatibility.md):
`TorchDevice.apply_patches()`, `TorchDevice.get_default_device()`,
`TorchDevice(device_type="cuda", device_index=0)`, and the class attributes
`TorchDevice._cpu_override` / `TorchDevice._default_device`, which read the
live state."""
from __future__ import annotations

from typing import Optional, Union

import torch

from . import _tdcore


class _OriginalAPI(type):
    """Class attributes of the original TorchDevice class, as views of the
    state in force (the original kept them as plain class attributes)."""

    @property
    def _cpu_override(cls) -> bool:
        """Whether the CPU override ("cpu:-1") is on (for this thread)."""
        return bool(_tdcore.get_cpu_override())

    @_cpu_override.setter
    def _cpu_override(cls, on: bool) -> None:
        _tdcore.set_cpu_override(bool(on))

    @property
    def _default_device(cls) -> str:
        """The type of the device a factory without device= lands on."""
        return TorchDevice.get_default_device()


class TorchDevice(str, metaclass=_OriginalAPI):
    """A resolved device.

    It is a ``str`` holding the resolved device ("cpu", "mps:0", "cuda"), so
    torch accepts it wherever a device is accepted, with or without
    TorchDevice enabled; ``.device`` is the real ``torch.device``.

    ``TorchDevice()`` resolves the default device (what a factory with no
    ``device=`` gets); ``TorchDevice("cuda")``, ``TorchDevice("cuda", 1)``,
    ``TorchDevice(torch.device(...))`` resolve a request.  The original's
    keywords are accepted too: ``TorchDevice(device_type="cuda",
    device_index=0)``.
    """

    device: torch.device

    def __new__(cls, device: Union[str, int, torch.device, None] = None,
                index: Optional[int] = None, *,
                device_type: Union[str, torch.device, None] = None,
                device_index: Optional[int] = None) -> "TorchDevice":
        from . import _patches

        if device_type is not None:
            if device is not None:
                raise TypeError("TorchDevice() got both device and "
                                "device_type")
            device = device_type
        if device_index is not None:
            if index is not None:
                raise TypeError("TorchDevice() got both index and "
                                "device_index")
            index = device_index
        resolved = _patches.resolve_device(device, index)
        self = super().__new__(cls, str(resolved))
        self.device = resolved
        return self

    @property
    def type(self) -> str:
        return self.device.type

    @property
    def index(self) -> Optional[int]:
        return self.device.index

    def __repr__(self) -> str:
        return f"TorchDevice({self.device!r})"

    def __reduce__(self):
        return (str, (str(self),))

    # --- control, reachable as TorchDevice.enable() etc. -------------------
    @staticmethod
    def enable() -> None:
        from . import enable
        enable()

    @staticmethod
    def disable() -> None:
        from . import disable
        disable()

    @staticmethod
    def is_enabled() -> bool:
        from . import is_enabled
        return is_enabled()

    @staticmethod
    def cpu_override(on: bool = True):
        from . import cpu_override
        return cpu_override(on)

    # --- the original TorchDevice's class methods (docs/compatibility.md) ---
    @staticmethod
    def apply_patches() -> None:
        """The original's explicit start: enables TorchDevice (importing it
        already did; calling it again changes nothing)."""
        from . import enable
        enable()

    @staticmethod
    def get_default_device() -> str:
        """"cuda", "mps", "cpu" or the accelerator's type ("xpu", ...):
        where a factory without device= lands now (the profile's device, or
        "cpu" under the CPU override)."""
        from . import _patches
        return _patches.resolve_device().type
