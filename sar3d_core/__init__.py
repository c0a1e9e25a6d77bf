"""SAR3D, step by step: the tested core of the tutorials (Chen et al., CVPR 2025)."""

__version__ = "0.1.0"
