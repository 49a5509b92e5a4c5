"""phfa: Progressive Hierarchical Feature Alignment for synthetic-to-real segmentation.

    from pipeline import Segmenter
    mask = Segmenter.from_run("runs/demo").predict("street.jpg")   # see pipeline/api.py
"""
__version__ = "0.1.0"
__all__ = ["Segmenter", "__version__"]


def __getattr__(name: str):
    # imported on first use: `import pipeline.config` (the CLI's checks) must not pull in torch
    if name == "Segmenter":
        from pipeline.api import Segmenter
        return Segmenter
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
