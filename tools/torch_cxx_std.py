"""Print the C++ standard (e.g. ``c++20``) that the installed torch's headers require.

Reads the ``__cplusplus < ...L`` guard in ``ATen/ATen.h`` instead of assuming one torch version
(torch <= 2.x needed C++17: 201703L; torch 2.14 needs C++20: 202002L).
"""
import os
import re

import torch.utils.cpp_extension as ext

_STANDARDS = {201402: 'c++14', 201703: 'c++17', 202002: 'c++20', 202302: 'c++23'}


def torch_cxx_std() -> str:
    """Return the ``-std=`` value torch's headers demand (default ``c++17``)."""
    for inc in ext.include_paths():
        header = os.path.join(inc, 'ATen', 'ATen.h')
        if os.path.exists(header):
            m = re.search(r'__cplusplus\s*<\s*(\d+)L', open(header).read())
            if m:
                return _STANDARDS.get(int(m.group(1)), 'c++17')
    return 'c++17'


if __name__ == '__main__':
    print(torch_cxx_std())
