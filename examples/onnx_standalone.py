"""FastSAM from an exported ONNX file with onnxruntime, numpy and Pillow only: no PyTorch, no fastsam.

    python examples/onnx_standalone.py MODEL.onnx IMAGE --out DIR [--imgsz N --conf C --iou T]
        [--point X,Y] [--box X1,Y1,X2,Y2]

Writes DIR/<stem>.npz (``masks`` N x H x W bool at the image's size, ``boxes`` N x 4 xyxy in image
pixels, ``scores`` N descending; with a prompt also ``point_mask`` / ``box_mask`` H x W and the chosen
``point_indices`` / ``box_index``) and DIR/<stem>.png (the masks, or the prompted ones, over the image).
The reference for porting FastSAM's post-processing to another language: each step below is what
``fastsam segment`` does, in the same float32 arithmetic, so the masks are the same.
Model file (``fastsam export WEIGHTS --format onnx``): input ``images`` (1, 3, H, W) RGB in [0, 1];
outputs ``preds`` (1, 4 + nc + nm, A) = box centre/size in input pixels, class scores, mask
coefficients, and ``protos`` (1, nm, H/4, W/4); its metadata_props["fastsam"] (JSON) holds the rest.
"""

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


class Failure(Exception):
    """A problem with the user's input: one line on stderr, exit code 2."""


def linear_taps(n_in, n_out, clamp_weights):
    """OpenCV INTER_LINEAR taps along one axis: source indices and 11-bit fixed-point weights.
    Outside the source OpenCV copies the border pixel along x but keeps the weights along y."""
    f = ((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    f = f - i0.astype(np.float32)
    if clamp_weights:
        f[(i0 < 0) | (i0 >= n_in - 1)] = 0
    w0 = np.rint((np.float32(1) - f) * np.float32(2048)).astype(np.int64)
    i1 = np.clip(i0 + 1, 0, n_in - 1)
    return np.clip(i0, 0, n_in - 1), i1, w0, np.rint(f * np.float32(2048)).astype(np.int64)


def resize_linear(img, w, h):
    """cv2.resize(img, (w, h), INTER_LINEAR) on uint8 HWC in OpenCV's integer arithmetic (its SIMD
    rounding; a 2x reduction is a 2x2 mean)."""
    if img.shape[0] == 2 * h and img.shape[1] == 2 * w:
        s = img.astype(np.int32)
        return ((s[0::2, 0::2] + s[0::2, 1::2] + s[1::2, 0::2] + s[1::2, 1::2] + 2) >> 2).astype(np.uint8)
    x0, x1, a0, a1 = linear_taps(img.shape[1], w, True)
    y0, y1, b0, b1 = linear_taps(img.shape[0], h, False)
    src = img.astype(np.int64)
    rows = src[:, x0] * a0[:, None] + src[:, x1] * a1[:, None]  # along x: 19-bit sums
    b0, b1 = b0[:, None, None], b1[:, None, None]
    out = (((rows[y0] >> 4) * b0) >> 16) + (((rows[y1] >> 4) * b1) >> 16)
    return ((out + 2) >> 2).astype(np.uint8)


def letterbox(img, imgsz, shape=None):
    """Scale so the long side is imgsz, pad (value 114) to multiples of 32 (a static model: to its
    exact shape, centred). Returns the (1, 3, H, W) float32 input."""
    h0, w0 = img.shape[:2]
    th, tw = shape or (imgsz, imgsz)
    r = min(th / h0, tw / w0)
    w, h = max(round(w0 * r), 1), max(round(h0 * r), 1)
    dw, dh = ((tw - w) / 2, (th - h) / 2) if shape else ((imgsz - w) % 32 / 2, (imgsz - h) % 32 / 2)
    if (w, h) != (w0, h0):
        img = resize_linear(img, w, h)
    top, left = round(dh - 0.1), round(dw - 0.1)
    canvas = np.full((h + top + round(dh + 0.1), w + left + round(dw + 0.1), 3), 114, np.uint8)
    canvas[top : top + h, left : left + w] = img
    return (canvas.transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32)


def nms(boxes, scores, iou, k):
    """Greedy NMS in score order (ties keep input order), stopping after k kept boxes."""
    order = np.argsort(-scores, kind="stable")
    b = boxes[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    alive, keep = np.ones(len(b), bool), []
    for i in range(len(b)):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) == k:
            break
        j = i + 1 + np.flatnonzero(alive[i + 1 :])
        w = np.maximum(np.float32(0), np.minimum(b[i, 2], b[j, 2]) - np.maximum(b[i, 0], b[j, 0]))
        h = np.maximum(np.float32(0), np.minimum(b[i, 3], b[j, 3]) - np.maximum(b[i, 1], b[j, 1]))
        inter = w * h
        alive[j[(inter / (area[i] + area[j] - inter)).astype(np.float64) > iou]] = False
    return order[keep]


def detect(preds, nc, conf, iou, max_det, in_h, in_w):
    """(4 + nc + nm, A) -> boxes (input pixels, after the full-image rule), scores, coefficients."""
    p = preds.T
    scores, cls = p[:, 4 : 4 + nc].max(1), p[:, 4 : 4 + nc].argmax(1)
    p, scores, cls = p[scores > conf], scores[scores > conf], cls[scores > conf]
    if len(p) > 30000:  # the original's cap on NMS candidates
        top = np.argsort(-scores, kind="stable")[:30000]
        p, scores, cls = p[top], scores[top], cls[top]
    boxes = np.concatenate([p[:, :2] - p[:, 2:4] / 2, p[:, :2] + p[:, 2:4] / 2], 1)
    keep = nms(boxes + cls[:, None].astype(np.float32) * 7680, scores, iou, max_det)  # classes apart
    boxes, scores, coefs = boxes[keep], scores[keep], p[keep, 4 + nc :]
    # the original's full-image rule: snap sides within 20 px of the border onto it, and a box
    # covering > 0.9 (IoU) of the frame becomes the frame, so its mask is not cropped
    boxes[:, :2] = np.where(boxes[:, :2] < 20, 0, boxes[:, :2])
    boxes[:, 2] = np.where(boxes[:, 2] > in_w - 20, in_w, boxes[:, 2])
    boxes[:, 3] = np.where(boxes[:, 3] > in_h - 20, in_h, boxes[:, 3])
    inter = (np.minimum(boxes[:, 2], in_w) - np.maximum(boxes[:, 0], 0)).clip(0) * (
        np.minimum(boxes[:, 3], in_h) - np.maximum(boxes[:, 1], 0)
    ).clip(0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    full = inter / (np.float32(in_w * in_h) + area - inter + np.float32(1e-7)) > 0.9
    boxes[full] = (0, 0, in_w, in_h)
    return boxes, scores, coefs


def bilinear_taps(n_in, n_out):
    """Source indices and float32 weights of a bilinear resize (PyTorch, align_corners=False)."""
    src = np.maximum(np.float32(n_in) / np.float32(n_out) * (np.arange(n_out, dtype=np.float32) + 0.5) - 0.5, 0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam = np.clip(src.astype(np.float32) - i0.astype(np.float32), 0, 1).astype(np.float32)
    return i0, np.where(i0 < n_in - 1, i0 + 1, i0), np.float32(1) - lam, lam


def lerp_rows(src, taps, offset):
    i0, i1, w0, w1 = taps
    out = src[i0 - offset] * w0[:, None]
    out += src[i1 - offset] * w1[:, None]
    return out


def masks_at_image_size(protos, coefs, boxes, h0, w0):
    """Mask k = (coefs[k] @ protos) cut to the un-padded area, resized bilinearly to (h0, w0),
    > 0 inside box k. Only the prototype window under each box is computed."""
    _nm, mh, mw = protos.shape
    g = min(mh / h0, mw / w0)
    pad_h, pad_w = (mh - h0 * g) / 2, (mw - w0 * g) / 2
    grid = np.ascontiguousarray(
        protos[:, int(pad_h) : int(mh - pad_h), int(pad_w) : int(mw - pad_w)].transpose(1, 2, 0)
    )
    ty, tx = bilinear_taps(grid.shape[0], h0), bilinear_taps(grid.shape[1], w0)
    masks = np.zeros((len(boxes), h0, w0), bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        r0, c0 = min(max(math.ceil(y1), 0), h0), min(max(math.ceil(x1), 0), w0)
        r1, c1 = max(min(max(math.ceil(y2), 0), h0), r0), max(min(max(math.ceil(x2), 0), w0), c0)
        if r1 == r0 or c1 == c0:
            continue
        rows, cols = [t[r0:r1] for t in ty], [t[c0:c1] for t in tx]
        ia, ja = int(rows[0][0]), int(cols[0][0])
        logits = grid[ia : int(rows[1][-1]) + 1, ja : int(cols[1][-1]) + 1] @ coefs[k]
        across = np.ascontiguousarray(lerp_rows(np.ascontiguousarray(logits.T), cols, ja).T)
        masks[k, r0:r1, c0:c1] = lerp_rows(across, rows, ia) > 0
    return masks


def numbers(text, n, what):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise Failure(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return values


def write_atomic(path, write, suffix):
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run(args):
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise Failure(f"{args.model}: not a readable ONNX model ({str(exc).splitlines()[0][:200]})") from None
    meta_text = session.get_modelmeta().custom_metadata_map.get("fastsam")
    if not meta_text:
        raise Failure(f"{args.model}: has no fastsam metadata (make it with 'fastsam export')")
    meta = json.loads(meta_text)
    nc, shape = meta["model"]["num_classes"], meta["input"]["shape"]
    imgsz = args.imgsz or (max(shape) if shape else meta["imgsz"])
    if shape and imgsz != max(shape):
        raise Failure(f"{args.model}: static export for {shape[0]}x{shape[1]}; --imgsz {imgsz} needs another export")
    imgsz = math.ceil(imgsz / 32) * 32
    try:
        with Image.open(args.image) as im:
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (OSError, SyntaxError, ValueError) as exc:
        raise Failure(f"{args.image}: not a readable image ({exc})") from None
    h0, w0 = rgb.shape[:2]
    point = numbers(args.point, 2, "--point") if args.point else None
    box = numbers(args.box, 4, "--box") if args.box else None
    if point and not (0 <= point[0] < w0 and 0 <= point[1] < h0):
        raise Failure(f"--point {args.point} lies outside the {w0}x{h0} image")
    if box and not (box[0] < box[2] and box[1] < box[3] and box[0] < w0 and box[1] < h0 and box[2] > 0 and box[3] > 0):
        raise Failure(f"--box {args.box} is empty or outside the {w0}x{h0} image")
    out = Path(args.out)
    stem = Path(args.image).stem
    if Path(args.image).resolve() in {(out / f"{stem}{s}").resolve() for s in (".npz", ".png")}:
        raise Failure(f"{args.image}: the output would replace the input; choose another --out")

    x = letterbox(rgb, imgsz, shape)
    preds, protos = session.run(["preds", "protos"], {"images": x})
    boxes, scores, coefs = detect(preds[0], nc, args.conf, args.iou, 300, x.shape[2], x.shape[3])
    # boxes: input pixels -> image pixels (undo padding and scale), clipped to the image
    g = min(x.shape[2] / h0, x.shape[3] / w0)
    pad_x, pad_y = round((x.shape[3] - w0 * g) / 2 - 0.1), round((x.shape[2] - h0 * g) / 2 - 0.1)
    boxes[:, 0::2] = ((boxes[:, 0::2] - np.float32(pad_x)) / np.float32(g)).clip(0, w0)
    boxes[:, 1::2] = ((boxes[:, 1::2] - np.float32(pad_y)) / np.float32(g)).clip(0, h0)
    masks = masks_at_image_size(protos[0], coefs, boxes, h0, w0)
    result, shown = {"masks": masks, "boxes": boxes, "scores": scores}, masks
    if point:  # the original's point prompt: the union of the masks containing the point
        hits = np.flatnonzero(masks[:, int(point[1]), int(point[0])])
        result.update(point_indices=hits, point_mask=masks[hits].any(0))
        shown = result["point_mask"][None]
    if box:  # the original's box prompt: the mask with the highest IoU with the filled box
        bx1, by1 = max(round(box[0]), 0), max(round(box[1]), 0)
        bx2, by2 = min(round(box[2]), w0), min(round(box[3]), h0)
        inter = masks[:, by1:by2, bx1:bx2].sum((1, 2))
        union = (bx2 - bx1) * (by2 - by1) + masks.sum((1, 2)) - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0)
        best = int(iou.argmax()) if len(iou) and iou.max() > 0 else -1
        result.update(box_index=np.int64(best), box_mask=masks[best] if best >= 0 else np.zeros((h0, w0), bool))
        shown = np.concatenate([shown if point else shown[:0], result["box_mask"][None]])
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{stem}.npz", lambda p: np.savez_compressed(p, **result), ".npz")
    overlay = rgb.astype(np.float32)
    colours = np.random.default_rng(0).integers(40, 256, (len(shown), 3))
    for k in np.argsort([-m.sum() for m in shown], kind="stable"):  # large masks first, small on top
        overlay[shown[k]] = 0.5 * overlay[shown[k]] + 0.5 * colours[k]
    write_atomic(out / f"{stem}.png", lambda p: Image.fromarray(overlay.astype(np.uint8)).save(p, "PNG"), ".png")
    print(f"{args.image}: {len(masks)} masks -> {out / stem}.npz, .png")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("image", type=Path)
    ap.add_argument("--out", required=True)
    ap.add_argument("--imgsz", type=int, help="network input long side (default: the model's)")
    ap.add_argument("--conf", type=float, default=0.4)
    ap.add_argument("--iou", type=float, default=0.9)
    ap.add_argument("--point", help="X,Y in image pixels")
    ap.add_argument("--box", help="X1,Y1,X2,Y2 in image pixels")
    args = ap.parse_args(argv)
    try:
        for path in (args.model, args.image):
            if not path.is_file():
                raise Failure(f"{path}: file not found")
        if args.imgsz is not None and args.imgsz <= 0:
            raise Failure(f"--imgsz must be positive, got {args.imgsz}")
        run(args)
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"error: {exc.name} is needed: pip install onnxruntime numpy pillow", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
