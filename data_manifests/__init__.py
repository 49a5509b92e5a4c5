"""Dataset descriptions phfa ships (layout, native size, splits, valid ids, known-bad files).

Installed as `pipeline.data_manifests` and read with importlib.resources, so a wheel carries them."""
