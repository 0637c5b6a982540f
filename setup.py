"""Build hook: pyproject.toml holds the metadata; this only wires in cffi."""

from setuptools import setup

setup(cffi_modules=["native/ffi_build.py:ffibuilder"])
