"""The one compiled module, vimark.server._hotpath (server/hotpath.py says what it does), built
from server/_hotpath.c and server/_hotpath_index.c.

It is optional: where the build fails (no C compiler, no Python headers) setuptools skips it with a
warning and vimark runs the same verdicts in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vimark.server._hotpath",
            ["server/_hotpath.c", "server/_hotpath_index.c"],
            depends=["server/_hotpath_index.h"],
            optional=True,
            extra_compile_args=[
                "-O2",
                "-std=c11",
                "-Wall",
                "-Wextra",
                "-Wno-unused-parameter",
                "-Werror=implicit-function-declaration",
            ],
        )
    ]
)
