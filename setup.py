"""mmvssm: vision-Mamba backbones (Vim, VMamba/VSSM, MambaOut, ARM) for mmdet 3.x / mmseg 1.x.

The CPU selective-scan kernel (``mmvssm._C``) is a torch C++ extension built here.
Set ``MMVSSM_NO_EXT=1`` to skip it (the pure-PyTorch backend is then used).
"""
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    ns = {}
    with open(os.path.join(HERE, 'mmvssm', 'version.py')) as f:
        exec(f.read(), ns)
    return ns['__version__']


def cpu_extension():
    """The fused CPU scan kernel, compiled with the C++ standard torch's headers need."""
    if os.environ.get('MMVSSM_NO_EXT') == '1':
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension
    sys.path.insert(0, os.path.join(HERE, 'tools'))
    from torch_cxx_std import torch_cxx_std
    csrc = os.path.join('mmvssm', 'ops', 'csrc')
    sources = sorted(os.path.join(csrc, f) for f in os.listdir(os.path.join(HERE, csrc)) if f.endswith('.cpp'))
    if not sources:
        return [], {}
    flags = [f'-std={torch_cxx_std()}', '-O3', '-fopenmp', '-ffp-contract=fast']
    if os.environ.get('MMVSSM_MARCH', 'x86-64-v3') and os.uname().machine == 'x86_64':
        flags.append('-march=' + os.environ.get('MMVSSM_MARCH', 'x86-64-v3'))
    depends = sorted(os.path.join(csrc, f) for f in os.listdir(os.path.join(HERE, csrc))
                     if f.endswith(('.inc', '.h')))
    ext = CppExtension('mmvssm._C', sources, depends=depends, extra_compile_args={'cxx': flags},
                       extra_link_args=['-fopenmp'])
    return [ext], {'build_ext': BuildExtension.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = cpu_extension()

setup(
    name='mmvssm',
    version=read_version(),
    description='Vision-Mamba backbones (Vim, VMamba, MambaOut, ARM) for mmdetection 3.x and mmsegmentation 1.x',
    long_description=open(os.path.join(HERE, 'README.md')).read() if os.path.exists(os.path.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmvssm', 'mmvssm.*']),
    python_requires='>=3.9',
    install_requires=[
        'torch>=2.1',
        'mmengine>=0.10.0,<0.11',
        'mmcv>=2.0.0,<2.2.0',
        'timm>=0.9',
        'numpy',
    ],
    extras_require={
        'det': ['mmdet>=3.0.0,<3.4', 'pycocotools'],
        'seg': ['mmsegmentation>=1.0.0,<1.3', 'ftfy', 'regex'],
        'cuda': ['mamba-ssm>=1.1', 'causal-conv1d>=1.1'],
        'dev': ['pytest', 'psutil', 'matplotlib'],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
