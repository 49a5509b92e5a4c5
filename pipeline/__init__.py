"""phfa: Progressive Hierarchical Feature Alignment for synthetic-to-real segmentation."""
__version__ = "0.1.0"
