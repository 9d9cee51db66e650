"""microCLIP: unsupervised adaptation of CLIP to fine-grained data (arXiv 2510.02270).

The package is importable without Gradio or matplotlib; see ARCHITECTURE.md and docs/method.md.
"""

__version__ = "0.1.0"
