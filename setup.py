# All metadata lives in pyproject.toml; this file only hooks the cffi build in.
from setuptools import setup

setup(cffi_modules=["csrc/build.py:ffibuilder"])
