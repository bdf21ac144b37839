"""An image pipeline for training data: read raw image files, decode them with Pillow in
``map_batches`` (a class, so each worker sets up once), make thumbnails, and write them as
WebDataset shards a training loader streams; then read the shards back.

    python examples/images.py [WORKDIR]

Needs Pillow (``pip install pillow``).
"""

from __future__ import annotations

import io
import os
import sys
import tempfile

import pyarrow as pa
from PIL import Image

import millpond

SIZE = (32, 32)


def make_images(directory: str, count: int = 24) -> str:
    """A few PNGs of different sizes and colours, as a folder of raw files."""
    os.makedirs(directory, exist_ok=True)
    for i in range(count):
        colour = (i * 10 % 256, 255 - i * 7 % 256, i * 3 % 256)
        image = Image.new("RGB", (64 + 8 * i, 48 + 4 * i), colour)
        image.save(os.path.join(directory, f"img-{i:03d}.png"))
    return directory


class Thumbnailer:
    """Decodes each file's bytes and encodes a JPEG thumbnail; its label is the image's
    dominant channel (a stand-in for a real annotation)."""

    def __init__(self, size: tuple[int, int] = SIZE) -> None:
        self.size = size

    def __call__(self, batch: pa.Table) -> pa.Table:
        keys, jpgs, labels, metas = [], [], [], []
        for path, data in zip(batch["path"].to_pylist(), batch["bytes"].to_pylist()):
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                red, green, blue = image.convert("RGB").getpixel((0, 0))
                thumb = image.convert("RGB")
                thumb.thumbnail(self.size)
                out = io.BytesIO()
                thumb.save(out, format="JPEG", quality=85)
            keys.append(os.path.splitext(os.path.basename(path))[0])
            jpgs.append(out.getvalue())
            labels.append(max(range(3), key=lambda c: (red, green, blue)[c]))
            metas.append(f'{{"width": {width}, "height": {height}}}')
        return pa.table(
            {
                "__key__": keys,
                "jpg": pa.array(jpgs, pa.large_binary()),
                "cls": labels,
                "json": metas,
            }
        )


def main(workdir: str) -> None:
    images = make_images(os.path.join(workdir, "images"))
    shards = os.path.join(workdir, "thumbnails")
    with millpond.init(data_root=os.path.join(workdir, "millpond")) as sp:
        files = sp.read_files(images, npartitions=2)
        thumbs = files.map_batches(Thumbnailer, batch_size=8)
        thumbs.write_webdataset(shards, maxcount=5, mode="overwrite")
        print(f"wrote {len(os.listdir(shards))} shards to {shards}")

        back = sp.read_webdataset(shards)
        print(f"read back {back.count()} thumbnails")
        print(
            back.groupby("cls").agg("count(*) AS n").sort("cls").to_pandas().to_string(index=False)
        )
        first = back.sort("__key__").take(1)[0]
        with Image.open(io.BytesIO(first["jpg"])) as image:
            print(f"{first['__key__']}: {image.format} {image.size}, meta {first['json']}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="millpond-images-"))
