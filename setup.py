"""Build of TorchDevice's C extension.

`_tdcore` includes no torch headers, so it builds without torch and one
build serves every supported torch release.  Set TORCHDEVICE_STRICT_BUILD=1
(CI does) to turn every warning into an error.
"""
import os
import sys
from glob import glob

import setuptools
from setuptools import Extension, setup

flags = ["-std=c11", "-Wall", "-Wextra"]
if os.environ.get("TORCHDEVICE_STRICT_BUILD") == "1":
    flags += ["-Werror", "-Wshadow", "-Wstrict-prototypes"]
extra = os.environ.get("TORCHDEVICE_EXTRA_CFLAGS", "").split()
link_extra = os.environ.get("TORCHDEVICE_EXTRA_LDFLAGS", "").split()
if sys.platform == "win32":
    flags = []

# The license as setuptools >= 77 wants it (an SPDX expression: it
# deprecated the older field and announces builds with it fail from
# 2027-02-18), and as older ones, which know only the field, read it.
if int(setuptools.__version__.split(".")[0]) >= 77:
    license_args = {"license_expression": "Apache-2.0",
                    "license_files": ["LICENSE"]}
else:
    license_args = {"license": "Apache-2.0"}

setup(
    **license_args,
    ext_modules=[
        Extension(
            "TorchDevice._tdcore",
            sources=sorted(glob("csrc/*/*.c")),
            depends=sorted(glob("csrc/*/*.h")),
            include_dirs=["csrc"],
            extra_compile_args=flags + extra,
            extra_link_args=link_extra,
        )
    ],
)
