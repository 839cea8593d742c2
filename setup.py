"""The C decoding step (nslm/models/_cstep.c), the one compiled part of nslm; everything else is in pyproject.toml.

It is optional: where no C compiler is found the install goes on without it and nslm decodes with NumPy
(nslm.models.decode.c_library() is then None). -fopenmp-simd honours the step's `omp simd` loops and links
no OpenMP runtime.
"""

import sys

from setuptools import Extension, setup

args = [] if sys.platform == "win32" else ["-O3", "-fopenmp-simd"]
setup(ext_modules=[Extension("nslm.models._cstep", ["src/nslm/models/_cstep.c"], extra_compile_args=args,
                             optional=True)])
