# All metadata lives in pyproject.toml; this file only hooks the builds in:
# cffi's for _rawmux, and csrc/build.py's Extension for _rawmux_compat.
import importlib.util
import os

from setuptools import setup

_spec = importlib.util.spec_from_file_location(
    "rawmux_build", os.path.join("csrc", "build.py"))
_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build)

setup(cffi_modules=["csrc/build.py:ffibuilder"],
      ext_modules=[_build.compat_extension()])
