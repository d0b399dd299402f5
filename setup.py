"""The one thing setup.cfg cannot declare: the optional compiled encoder.

``manager/_lineproto_c.c`` is the manager's hot loop in C (see its header).
It is optional: without a C compiler and Python's headers the build skips it
and manager/lineproto.py runs its pure-Python path, which gives the same
lines, about 0.6 µs per point slower (the manager logs which one it uses).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("manager._lineproto_c", ["manager/_lineproto_c.c"],
                             optional=True, extra_compile_args=["-O2", "-Wall"])])
