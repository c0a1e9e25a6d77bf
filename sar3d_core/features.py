"""Another name for ``featnet``, the offline evaluation network.

Kept so that scripts importing ``sar3d_core.features`` and the recorded command
``python -m sar3d_core.features ...`` (``data_samples/feature_net/metrics.json``) keep working.
"""
from .featnet import *  # noqa: F401,F403
from .featnet import _label_tensor, _labels_of, _loss, main  # noqa: F401

if __name__ == "__main__":
    main()
