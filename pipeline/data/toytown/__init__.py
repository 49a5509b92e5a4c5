"""toytown: the embedded multi-domain street-scene segmentation benchmark.

`generate(DIR, seed)` ray-casts small procedural street scenes and writes them in the real
dataset layouts (DIR/unity as SYNTHIA, DIR/gta5 as GTA5, DIR/cityscapes as Cityscapes, plus
DIR/phfa-data.toml), so the same readers serve toy and real data. Two synthetic source
domains (unity, gta5) and one camera-like target (cityscapes) share one scene grammar and
differ the way simulators differ from cameras, in appearance and in layout statistics.

The domain gap lives in one place: styles.py (one DomainStyle per domain). The other
modules read its fields and never test a domain's name:
ids (class codes, label encodings), precision (number type, quantisation), textures, camera,
scene (sampling), objects, raycast, raster (things, shadows, post-processing), writer (files,
generate).

Everything is derived from (seed, domain, index) with numpy's default_rng, so on one machine the
output is byte-identical for a seed whatever the order or number of worker processes and threads.
Across x86-64 machines (AVX2, AVX-512) the labels stay byte-identical for the same seed and
package versions, and an image's pixels stay within 1 grey level, all but a rare few (at most
0.1 %) identical: precision.py says how the arithmetic is arranged for that.
"""
from .writer import CITIES, DEFAULT_COUNTS, FEW_SHOT, generate, render_image

__all__ = ["CITIES", "DEFAULT_COUNTS", "FEW_SHOT", "generate", "render_image"]
