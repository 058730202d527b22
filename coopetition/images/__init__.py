"""Image banks: the reference's Omniglot ResNet-18 feature files (``bank omniglot``), an offline Omniglot-like bank
rendered from fonts (``bank glyphs``) and the statistics that compare any bank with them (``bank inspect``).

Everything here needs the optional extra ``coopetition[images]`` (pillow, h5py, matplotlib for its fonts,
scikit-image for HOG); torchvision is used only where it is importable, to download Omniglot or the weights.
"""
