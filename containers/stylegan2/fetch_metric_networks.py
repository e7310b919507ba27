"""Build step of containers/stylegan2/Dockerfile: bake NVlabs' metric and projection networks into the image.

NVlabs' code downloads them at run time through ``dnnlib.util.open_url``, which looks for
``<md5(url)>_<name>`` in ``$DNNLIB_CACHE_DIR/downloads``; baked in, jobs need no internet.
"""

import hashlib
import os
import urllib.request

cdn = os.environ["NVLABS_CDN"]
if not cdn.startswith("https://"):
    raise SystemExit(f"NVLABS_CDN must be an https:// URL, not {cdn!r}")
cache = os.path.join(os.environ["DNNLIB_CACHE_DIR"], "downloads")
for name in ("inception-2015-12-05.pt", "vgg16.pt"):
    url = f"{cdn}/{name}"
    # md5 names the cache entry as dnnlib does; it is not a security check
    target = os.path.join(cache, hashlib.md5(url.encode(), usedforsecurity=False).hexdigest() + "_" + name)
    urllib.request.urlretrieve(url, target)  # noqa: S310 - https only (checked above)
    if name == "vgg16.pt":
        os.link(target, os.environ["REELFORGE_STYLEGAN2_VGG16"])
