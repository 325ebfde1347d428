"""The ground-truth encoder: part heatmaps, background and part affinity fields (PAFs).

Coordinates
-----------
Joints are in input-pixel coordinates with pixel centres at integers (OpenCV's convention:
pixel (row r, column c) covers [c - 0.5, c + 0.5] x [r - 0.5, r + 0.5]; warpAffine and the
augmentation use the same convention, so a keypoint at x lands on pixel column round(x)).
A map of `grid_hw = (h, w)` cells at `stride` s samples the input at the cell centres

    cell (i, j)  <->  x = j * s + (s - 1) / 2,   y = i * s + (s - 1) / 2

so at stride 8 the cell covers input pixels 8j .. 8j + 7 and its centre is 8j + 3.5 (the
reference trainers' convention). With stride 1 the grid is the pixel grid itself, which is
how full-resolution maps are rendered. `cv2.resize(maps, None, fx=s, fy=s)` puts the value of
cell j at upsampled pixel x = j * s + (s - 1) / 2, i.e. exactly at the input pixel it
describes, so maps upsampled that way (as inference does) need no shift: a peak at pixel x of
the upsampled map is a joint at x in the same pixel-centre coordinates as the annotations.

Heatmaps
--------
One Gaussian exp(-d^2 / (2 sigma^2)) per labelled joint (COCO visibility 1 or 2; 0 is
unlabelled and gives no target), sigma in input pixels, truncated to 0 where it falls below
0.01 (exponent > 4.6052, as both reference trainers do). Because of the truncation every
Gaussian is exactly zero outside a window of a few cells around its joint, so only that window
is computed. People are combined by MAX, not by the clipped sum of CMU's Caffe trainer: with
max every joint keeps a peak of exactly 1 and two nearby joints of different people stay two
separate peaks; a clipped sum raises the saddle between them to a plateau of 1 on which the
decoder's local-maximum test finds neither joint (and the network learns a blob). Channel 18
is the background, 1 - max over the 18 parts.

PAFs
----
Limb i (model.skeleton.LIMBS[i] = (a, b)) uses channels 2i (x) and 2i + 1 (y). For each person
with both ends labelled, every cell whose centre p satisfies 0 <= (p - A) . u <= |B - A| and
|(p - A) x u| <= thickness * stride (the paper's rectangle; thickness in cells, so 1.0 = 8 px
at stride 8) gets the unit vector u = (B - A) / |B - A|. Where limbs of the same type from
several people overlap, the cell holds their mean (sum / count, the paper's definition; the
reference trainers overwrite instead), so such a cell is shorter than unit length. Zero-length
limbs (both ends at the same point) are skipped: they have no direction and divided by zero
in the reference code (NaN targets).

Everything is vectorised over joints and limbs: windows of all people and parts are laid out
in one flat array and combined with np.maximum.at (heatmaps) or summed per touched
(cell, limb) pair (PAFs); no Python loop over pixels, people or limbs.
"""
import math

import numpy as np

from model.skeleton import (LIMBS, NUM_HEATMAPS, NUM_LIMBS, NUM_PAFS, NUM_PARTS,
                            NUM_TARGET_CHANNELS)

# exp(-4.6052) = 0.01: the references' cut-off of a Gaussian's tail.
GAUSSIAN_CUTOFF = 4.6052


def _as_people(joints):
    joints = np.asarray(joints, np.float64)
    if joints.size == 0:
        return joints.reshape(0, NUM_PARTS, 3)
    if joints.ndim == 2:
        joints = joints[None]
    if joints.ndim != 3 or joints.shape[1:] != (NUM_PARTS, 3):
        raise ValueError(f"joints must be (P, {NUM_PARTS}, 3), got {joints.shape}")
    return joints


def _labelled(joints):
    return (joints[..., 2] > 0) & np.isfinite(joints[..., 0]) & np.isfinite(joints[..., 1])


def gaussian_radius_cells(sigma, stride):
    """Half width (in cells) of the window outside which every Gaussian value is zero."""
    reach = sigma * math.sqrt(2.0 * GAUSSIAN_CUTOFF)
    # + 0.5: the window is centred on the cell nearest to the joint, up to half a cell away.
    return int(math.ceil(reach / stride + 0.5))


def part_maps(joints, grid_hw, stride=8, sigma=7.0):
    """(h, w, 18) float32: max over people of each labelled joint's truncated Gaussian."""
    joints = _as_people(joints)
    h, w = int(grid_hw[0]), int(grid_hw[1])
    offset = (stride - 1) / 2.0
    r = gaussian_radius_cells(sigma, stride)
    people, parts = np.nonzero(_labelled(joints))
    # Windows (2r + 1 cells wide) centred within r cells of the grid may touch it; the others
    # are dropped. The canvas is padded by 2r cells on every side so every kept window fits
    # without clipping, and the grid is cut out of it at the end.
    gx = (joints[people, parts, 0] - offset) / stride
    gy = (joints[people, parts, 1] - offset) / stride
    cx = np.rint(gx).astype(np.int64)
    cy = np.rint(gy).astype(np.int64)
    keep = (cx >= -r) & (cx < w + r) & (cy >= -r) & (cy < h + r)
    pad = 2 * r
    hw2 = (h + 2 * pad, w + 2 * pad)
    canvas = np.zeros(hw2[0] * hw2[1] * NUM_PARTS, np.float32)
    if keep.any():
        parts, gx, gy, cx, cy = parts[keep], gx[keep], gy[keep], cx[keep], cy[keep]
        d = np.arange(-r, r + 1)
        cols = cx[:, None] + d                       # (n, k) cell indices of each window
        rows = cy[:, None] + d
        inv = stride * stride / (2.0 * sigma * sigma)
        ex = (cols - gx[:, None]) ** 2 * inv         # separable exponent, in cell units
        ey = (rows - gy[:, None]) ** 2 * inv
        e = ey[:, :, None] + ex[:, None, :]          # (n, k, k)
        g = np.where(e <= GAUSSIAN_CUTOFF, np.exp(-e), 0.0).astype(np.float32)
        flat = (((rows[:, :, None] + pad) * hw2[1] + (cols[:, None, :] + pad)) * NUM_PARTS
                + parts[:, None, None])
        np.maximum.at(canvas, flat.ravel(), g.ravel())
    return canvas.reshape(hw2 + (NUM_PARTS,))[pad:pad + h, pad:pad + w]


def _output(out, grid_hw, channels):
    shape = (int(grid_hw[0]), int(grid_hw[1]), channels)
    if out is None:
        return np.empty(shape, np.float32)
    if out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {shape}, got {out.dtype} {out.shape}")
    return out


def make_heatmaps(joints, grid_hw, stride=8, sigma=7.0, out=None):
    """(h, w, 19) float32: the 18 part heatmaps and the background channel.

    joints: (P, 18, 3) (or (18, 3)) in CMU order, x, y in input pixels, COCO visibility.
    grid_hw: (h, w) cells; cell (i, j) samples x = j*stride + (stride-1)/2 (see module doc).
    sigma: Gaussian standard deviation in input pixels.
    out: optional float32 (h, w, 19) array (e.g. a slice of a batch) to write into."""
    out = _output(out, grid_hw, NUM_HEATMAPS)
    _fill_heatmaps(out, joints, stride, sigma)
    return out


def _fill_heatmaps(out, joints, stride, sigma):
    parts = part_maps(joints, out.shape[:2], stride, sigma)
    out[..., :NUM_PARTS] = parts
    out[..., NUM_PARTS] = 1.0 - parts.max(axis=2, initial=0.0)


def make_pafs(joints, grid_hw, stride=8, thickness=1.0, out=None):
    """(h, w, 38) float32 part affinity fields; limb i in channels 2i (x), 2i+1 (y).

    Unit vectors A -> B on the cells within `thickness` cells of each limb segment whose ends
    are both labelled; the mean where several people's limbs of one type overlap; zero
    elsewhere. Zero-length limbs are skipped. out: optional float32 (h, w, 38) to write into."""
    out = _output(out, grid_hw, NUM_PAFS)
    _fill_pafs(out, joints, stride, thickness)
    return out


def _fill_pafs(out, joints, stride, thickness):
    joints = _as_people(joints)
    h, w = out.shape[:2]
    offset = (stride - 1) / 2.0
    reach = thickness * stride
    labelled = _labelled(joints)
    a_idx, b_idx = LIMBS[:, 0], LIMBS[:, 1]
    people, limbs = np.nonzero(labelled[:, a_idx] & labelled[:, b_idx])
    A = joints[people, a_idx[limbs], :2]
    B = joints[people, b_idx[limbs], :2]
    vec = B - A
    length = np.hypot(vec[:, 0], vec[:, 1])
    ok = length > 1e-6
    A, B, vec, length, limbs = A[ok], B[ok], vec[ok], length[ok], limbs[ok]
    u = vec / length[:, None] if len(length) else vec
    # Bounding window of each segment widened by the reach, in cell indices, clipped.
    lo = np.minimum(A, B) - reach
    hi = np.maximum(A, B) + reach
    x0 = np.maximum(np.ceil((lo[:, 0] - offset) / stride), 0).astype(np.int64)
    y0 = np.maximum(np.ceil((lo[:, 1] - offset) / stride), 0).astype(np.int64)
    x1 = np.minimum(np.floor((hi[:, 0] - offset) / stride), w - 1).astype(np.int64)
    y1 = np.minimum(np.floor((hi[:, 1] - offset) / stride), h - 1).astype(np.int64)
    nx = np.maximum(x1 - x0 + 1, 0)
    ny = np.maximum(y1 - y0 + 1, 0)
    sizes = nx * ny
    total = int(sizes.sum())
    out[...] = 0.0
    if total == 0:
        return
    # All windows laid end to end: element k belongs to segment seg[k] at local cell local[k].
    seg = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.cumsum(sizes) - sizes
    local = np.arange(total) - starts[seg]
    nxs = nx[seg]
    col = x0[seg] + local % nxs
    row = y0[seg] + local // nxs
    dx = col * stride + offset - A[seg, 0]
    dy = row * stride + offset - A[seg, 1]
    ux, uy = u[seg, 0], u[seg, 1]
    along = dx * ux + dy * uy
    inside = (along >= 0) & (along <= length[seg]) & (np.abs(dx * uy - dy * ux) <= reach)
    seg, cell = seg[inside], (row * w + col)[inside]
    # Only the touched (cell, limb) pairs are summed: a few thousand, not h * w * 19.
    key, inverse, count = np.unique(cell * NUM_LIMBS + limbs[seg], return_inverse=True,
                                    return_counts=True)
    mean_x = np.bincount(inverse, weights=u[seg, 0]) / count
    mean_y = np.bincount(inverse, weights=u[seg, 1]) / count
    cell, limb = np.divmod(key, NUM_LIMBS)
    row, col = np.divmod(cell, w)
    out[row, col, 2 * limb] = mean_x
    out[row, col, 2 * limb + 1] = mean_y


def make_targets(joints, grid_hw, stride=8, sigma=7.0, paf_thickness=1.0, out=None):
    """(h, w, 57) float32 training target: 38 PAF, 18 parts, 1 background channels."""
    out = _output(out, grid_hw, NUM_TARGET_CHANNELS)
    _fill_pafs(out[..., :NUM_PAFS], joints, stride, paf_thickness)
    _fill_heatmaps(out[..., NUM_PAFS:], joints, stride, sigma)
    return out
