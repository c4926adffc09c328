#!/usr/bin/env python3
"""The reference pipeline of issue 10: what a provider's engineer would write in an afternoon.

Pillow (libjpeg-turbo), zlib (through zipfile) and the `cryptography` package, one process per
core. It does what the gateway does with the same generated photos, to the same limits:

* re-encode each attachment until its JPEG fits (the bureau counts base64 text: 100 KB, i.e.
  76800 JPEG bytes, and 150 KB / 115200 for the verification form): quality 85, then 60, then
  smaller (bilinear, never below 600x400), starting from a size estimated from the input;
* put the base64 JPEGs into the GBK data file (the golden first filing as a template), zip it
  (deflate, zlib's default level), MD5 the zip, AES-128-CBC/PKCS#7 it, base64 the result.

`--draft` lets libjpeg-turbo decode at 1/2, 1/4 or 1/8 scale when that is still at least the
target size (Pillow's `Image.draft`, the DCT scaling `thumbnail` uses): not what the afternoon
version does, reported beside it.

Prints one JSON object. Run by `cargo bench --bench reference` (benches/reference.rs), which
writes the images and the data file it reads; alone:
    python3 benches/reference/reference.py --images DIR --datafile FILE
"""

import argparse
import base64
import hashlib
import io
import json
import math
import multiprocessing
import os
import re
import sys
import time
import zipfile

from PIL import Image
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "..", "fixtures", "golden", "first.xml")
KEY, IV = b"0123456789abcdef", b"fedcba9876543210"
MIN_W, MIN_H = 600, 400
# The first filing's five attachments: licence, ID front, ID back, curtain photo (100 KB each)
# and the verification form (150 KB).
LIMITS = [76800, 76800, 76800, 76800, 115200]


def prepare_jpeg(data, max_bytes, draft=False):
    if len(data) <= max_bytes:
        return data
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    min_scale = min(1.0, max(MIN_W / w, MIN_H / h))
    # Re-encoding a camera JPEG at quality 60 gives roughly half its size.
    estimate = len(data) * 0.48
    scale = 1.0
    if estimate > max_bytes * 1.2:
        scale = max(min_scale, min(1.0, math.sqrt(max_bytes / estimate) * 0.95))
    mode = "L" if im.mode == "L" else "RGB"
    if draft and scale < 1.0:
        im.draft(mode, (int(w * scale), int(h * scale)))
    im = im.convert(mode)
    while True:
        size = (max(MIN_W, round(w * scale)), max(MIN_H, round(h * scale)))
        img = im if size == im.size else im.resize(size, Image.BILINEAR)
        for quality in (85, 60):
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=quality)
            out = buf.getvalue()
            if len(out) <= max_bytes:
                return out
        if scale <= min_scale:
            raise ValueError(f"cannot fit in {max_bytes} bytes at {MIN_W}x{MIN_H}")
        step = max(0.5, min(0.9, math.sqrt(max_bytes / len(out)) * 0.95))
        scale = max(min_scale, scale * step)


def template():
    """The golden first filing's <Baxx>, compact, split around its five Fjnr placeholders."""
    with open(GOLDEN, encoding="utf-8") as f:
        xml = re.sub(r">\s+<", "><", f.read())
    baxx = xml[xml.index("<Baxx>"): xml.index("</Baxx>") + len("</Baxx>")]
    return re.split(r"UExBQ0VIT0xERVI\d", baxx)


def pack(gbk, name):
    """zip → MD5 → AES-128-CBC → base64: (beianInfo, beianInfoHash)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, gbk)
    zipped = buf.getvalue()
    digest = base64.b64encode(hashlib.md5(zipped).digest())
    padder = padding.PKCS7(128).padder()
    padded = padder.update(zipped) + padder.finalize()
    enc = Cipher(algorithms.AES(KEY), modes.CBC(IV)).encryptor()
    info = base64.b64encode(enc.update(padded) + enc.finalize())
    return info, digest


_IMAGES = None
_ARGS = None
_PARTS = None


def _init(images, args):
    global _IMAGES, _ARGS, _PARTS
    _IMAGES, _ARGS, _PARTS = images, args, template()


def build_file(k):
    """Data file number k: re-encode its filings' photos, fill the template, package."""
    args = _ARGS
    body = []
    for i in range(k * args.per_file, min(args.filings, (k + 1) * args.per_file)):
        pieces = [_PARTS[0]]
        for j, limit in enumerate(LIMITS):
            data = _IMAGES[(i * len(LIMITS) + j) % len(_IMAGES)]
            jpeg = prepare_jpeg(data, limit, args.draft)
            pieces.append(base64.b64encode(jpeg).decode("ascii"))
            pieces.append(_PARTS[j + 1])
        body.append("".join(pieces))
    xml = ('<?xml version="1.0" encoding="GBK"?><UploadData version="V.3.0"><ICP><XZBA>'
           + "".join(body) + "</XZBA><Qqdwid>1100001234</Qqdwid></ICP></UploadData>")
    gbk = xml.encode("gbk")
    pack(gbk, f"1100001234U{k + 1:010d}.xml")
    return len(gbk)


def check_gateway_package(datafile, gbk):
    """An independent reader's view of the gateway's package of the same data file (written
    beside it as .info / .hash): base64 → AES-CBC → PKCS#7 → MD5 → zip → the same bytes."""
    try:
        info = open(datafile + ".info", "rb").read()
        digest = open(datafile + ".hash", "rb").read()
    except FileNotFoundError:
        return None
    dec = Cipher(algorithms.AES(KEY), modes.CBC(IV)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    zipped = unpadder.update(dec.update(base64.b64decode(info)) + dec.finalize()) + unpadder.finalize()
    if base64.b64encode(hashlib.md5(zipped).digest()) != digest:
        return False
    with zipfile.ZipFile(io.BytesIO(zipped)) as z:
        names = z.namelist()
        return z.testzip() is None and len(names) == 1 and z.read(names[0]) == gbk


def best_of(n, f):
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", required=True, help="directory of photo-*.jpg")
    p.add_argument("--datafile", help="a GBK data file for the packaging figures")
    p.add_argument("--filings", type=int, default=24)
    p.add_argument("--per-file", type=int, default=4)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--draft", action="store_true")
    args = p.parse_args()

    names = sorted(n for n in os.listdir(args.images) if n.startswith("photo-"))
    images = [open(os.path.join(args.images, n), "rb").read() for n in names]
    out = {"workers": args.workers, "draft": args.draft, "filings": args.filings,
           "images": len(images)}

    # One core: re-encoding one photo to the 100 KB limit (best of 3 passes over the set).
    for data in images:  # every output is checked once
        jpeg = prepare_jpeg(data, LIMITS[0], args.draft)
        im = Image.open(io.BytesIO(jpeg))
        assert len(jpeg) <= LIMITS[0] and im.size[0] >= MIN_W and im.size[1] >= MIN_H
    t = best_of(3, lambda: [prepare_jpeg(d, LIMITS[0], args.draft) for d in images])
    out["reencode_ms"] = t / len(images) * 1000

    # One core: packaging the same data file as the gateway.
    if args.datafile:
        gbk = open(args.datafile, "rb").read()
        mb = len(gbk) / 1e6
        out["datafile_bytes"] = len(gbk)

        def deflate():
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("1100001234U0000000001.xml", gbk)
            return buf.getvalue()

        out["deflate_mb_s"] = mb / best_of(3, deflate)
        out["zip_ratio"] = len(deflate()) / len(gbk)
        out["chain_mb_s"] = mb / best_of(3, lambda: pack(gbk, "1100001234U0000000001.xml"))
        out["gateway_package_ok"] = check_gateway_package(args.datafile, gbk)

    # The mix: one process per core, one data file per task.
    files = math.ceil(args.filings / args.per_file)
    with multiprocessing.Pool(args.workers, _init, (images, args)) as pool:
        pool.map(abs, range(args.workers))  # workers started
        t = time.perf_counter()
        sizes = pool.map(build_file, range(files), chunksize=1)
        elapsed = time.perf_counter() - t
    out["seconds"] = elapsed
    out["filings_per_s"] = args.filings / elapsed
    out["mb_per_s"] = sum(sizes) / 1e6 / elapsed
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
