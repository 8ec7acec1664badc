"""The seed's device object: `TorchDevice("cuda")` is the device a request
resolves to under the policy in force."""
from __future__ import annotations

from typing import Optional, Union

import torch


class TorchDevice(str):
    """A resolved device.

    It is a ``str`` holding the resolved device ("cpu", "mps:0", "cuda"), so
    torch accepts it wherever a device is accepted, with or without
    TorchDevice enabled; ``.device`` is the real ``torch.device``.

    ``TorchDevice()`` resolves the default device (what a factory with no
    ``device=`` gets); ``TorchDevice("cuda")``, ``TorchDevice("cuda", 1)``,
    ``TorchDevice(torch.device(...))`` resolve a request.
    """

    device: torch.device

    def __new__(cls, device: Union[str, int, torch.device, None] = None,
                index: Optional[int] = None) -> "TorchDevice":
        from . import _patches

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
