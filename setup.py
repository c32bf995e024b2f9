"""The one thing pyproject.toml cannot say yet without an "experimental" warning: the C part.

The conversion walk's common cases in C (indexer/_walk.c), built for the stable ABI: one
``_walk.abi3.so`` serves CPython 3.11 and later (the Lambda runtime included). Optional: without
a C compiler the install goes on and indexer.convert runs the same walk in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "indexer._walk",
            sources=["indexer/_walk.c"],
            py_limited_api=True,
            define_macros=[("Py_LIMITED_API", "0x030B0000")],
            optional=True,
        )
    ],
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
