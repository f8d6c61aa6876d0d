"""Gaussian splatting written plainly in PyTorch: the oracle for the gsplat path and the CPU renderer.

The math is gsplat 1.5.3's classic 3DGS rasterizer, step by step:

1. Camera-frame means and covariances: mu_c = R mu + t, Sigma_c = R Sigma R^T (R, t of ego->camera).
2. EWA projection: Sigma_2d = J Sigma_c J^T + eps2d I with the perspective Jacobian J evaluated at the
   mean, its x/z and y/z clamped to 30% beyond the field of view (gsplat's ``persp_proj``); for the
   orthographic camera model J = [[fx, 0, 0], [0, fy, 0]] and the centre maps to (fx x + cx, fy y + cy)
   (gsplat's ``ortho_proj``).
3. Culling: centres outside [near, far] in z, singular 2D covariances and opacities <= 1/255 are dropped.
4. Per pixel (sampled at its centre), per Gaussian: alpha = min(0.999, o exp(-d^T Sigma_2d^-1 d / 2));
   alphas below 1/255 are skipped.
5. Front-to-back compositing in order of the centres' camera z: w_i = alpha_i T_i with
   T_i = prod_{j<i} (1 - alpha_j); a pixel stops before the Gaussian that would take its transmittance
   to <= 1e-4 (that Gaussian and all behind it are left out).

gsplat only visits Gaussians whose opacity-aware bounding box (the region where alpha >= 1/255)
touches a pixel's tile; every Gaussian it leaves out there has alpha < 1/255 at that pixel, so the
dense evaluation here gives the same image. Everything is dense over pixels x Gaussians, chunked over
pixels, and differentiable by autograd.

``tile_size`` switches to tiles of pixels that each evaluate only the Gaussians whose bounding box
touches them (in depth order, as gsplat's per-tile lists). It computes the same image (the Gaussians a
tile leaves out have alpha < 1/255 on it, i.e. exactly 0 after the skip), and it is much faster when
many small Gaussians each cover a few pixels, e.g. a voxel grid rendered as Gaussians.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gausstr_core.gaussians import Gaussians
from gausstr_core.geometry import invert_rigid
from gausstr_core.render.common import (
    ALPHA_THRESHOLD,
    CAMERA_MODELS,
    EPS2D,
    FOV_CLIP_MARGIN,
    MAX_ALPHA,
    MIN_TRANSMITTANCE,
    RenderOutput,
    check_render_inputs,
    gsplat_intrinsics,
)

# Elements of one (images x pixels x Gaussians) block of whole rows; ~10 such float tensors live at
# once: ~160 MB on a CPU, ~1.3 GB on a GPU, where fewer, larger blocks save kernel launches.
_BLOCK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 25}


def project_gaussians(
    gaussians: Gaussians,
    intrinsics: Tensor,
    cam_to_ego: Tensor,
    image_size: tuple[int, int],
    near: float,
    far: float,
    camera_model: str = "pinhole",
    return_radii: bool = False,
):
    """Project Gaussians into every camera exactly as gsplat's ``fully_fused_projection`` does.

    Args:
        gaussians: B scenes of N Gaussians.
        intrinsics: (B, V, 3, 3) OpenCV intrinsics of the rendered image (for "ortho": fx, fy in
            pixels per metre).
        cam_to_ego: (B, V, 4, 4).
        image_size: (H, W) of the rendered image.
        camera_model: "pinhole" or "ortho".
        return_radii: also return gsplat's opacity-aware bounding-box half sizes.
    Returns:
        means2d (B, V, N, 2) in gsplat pixel coordinates (pixel (i, j) is sampled at (j + .5, i + .5)),
        conics (B, V, N, 3) = upper triangle (a, b, c) of the inverse 2D covariance,
        depths (B, V, N) camera z of the centres, valid (B, V, N) bool (not culled), and with
        ``return_radii`` radii (B, V, N, 2) in pixels (x, y), no gradient.
    """
    if camera_model not in CAMERA_MODELS:
        raise ValueError(f"camera_model must be one of {CAMERA_MODELS}, got {camera_model!r}")
    h, w = image_size
    view = invert_rigid(cam_to_ego)
    rot, trans = view[..., :3, :3], view[..., :3, 3]  # (B, V, 3, 3), (B, V, 3)
    means_c = torch.einsum("bvij,bnj->bvni", rot, gaussians.means) + trans[:, :, None]
    cov_c = rot[:, :, None] @ gaussians.covariances()[:, None] @ rot[:, :, None].transpose(-1, -2)

    k = gsplat_intrinsics(intrinsics)
    fx, fy = k[..., 0, 0, None], k[..., 1, 1, None]  # (B, V, 1)
    cx, cy = k[..., 0, 2, None], k[..., 1, 2, None]
    x, y, z = means_c.unbind(-1)
    valid = (z >= near) & (z <= far)
    # Culled Gaussians still flow through the arithmetic below; a safe z keeps their (discarded)
    # values finite so that no NaN leaks into the gradients of the kept ones.
    z = torch.where(valid, z, torch.ones_like(z))

    zero = torch.zeros_like(z)
    if camera_model == "ortho":
        fx_n, fy_n = fx.expand_as(z), fy.expand_as(z)
        jac = torch.stack(
            [
                torch.stack([fx_n, zero, zero], dim=-1),
                torch.stack([zero, fy_n, zero], dim=-1),
            ],
            dim=-2,
        )  # (B, V, N, 2, 3)
    else:
        tan_fovx, tan_fovy = 0.5 * w / fx, 0.5 * h / fy
        lim_x_pos = (w - cx) / fx + FOV_CLIP_MARGIN * tan_fovx
        lim_x_neg = cx / fx + FOV_CLIP_MARGIN * tan_fovx
        lim_y_pos = (h - cy) / fy + FOV_CLIP_MARGIN * tan_fovy
        lim_y_neg = cy / fy + FOV_CLIP_MARGIN * tan_fovy
        tx = z * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x / z))
        ty = z * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y / z))
        jac = torch.stack(
            [
                torch.stack([fx / z, zero, -fx * tx / (z * z)], dim=-1),
                torch.stack([zero, fy / z, -fy * ty / (z * z)], dim=-1),
            ],
            dim=-2,
        )  # (B, V, N, 2, 3)
    cov2d = jac @ cov_c @ jac.transpose(-1, -2)
    a = cov2d[..., 0, 0] + EPS2D
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c = cov2d[..., 1, 1] + EPS2D
    det = a * c - b * b
    valid = valid & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)

    if camera_model == "ortho":
        means2d = torch.stack([fx * x + cx, fy * y + cy], dim=-1)
    else:
        means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)
    opacities = gaussians.opacities[:, None].detach()
    valid = valid & (opacities > ALPHA_THRESHOLD)
    # gsplat's opacity-aware bounding box: beyond it alpha < 1/255. Gaussians whose box misses the
    # image cannot touch a pixel; dropping them here only saves work.
    with torch.no_grad():
        extend = torch.sqrt(2 * torch.log(opacities.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp(max=3.33)
        radius_x = torch.ceil(extend * a.detach().clamp_min(0).sqrt())
        radius_y = torch.ceil(extend * c.detach().clamp_min(0).sqrt())
        u, v = means2d.detach().unbind(-1)
        inside = (u + radius_x > 0) & (u - radius_x < w) & (v + radius_y > 0) & (v - radius_y < h)
    if return_radii:
        return means2d, conics, z, valid & inside, torch.stack([radius_x, radius_y], dim=-1)
    return means2d, conics, z, valid & inside


def composite(
    ys: Tensor, xs: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor
) -> tuple[Tensor, Tensor]:
    """Front-to-back blending weights of depth-sorted Gaussians at a block of pixel rows.

    Args:
        ys: (R,) row and xs: (W,) column sample positions in gsplat pixel coordinates.
        means2d: (S, N, 2), conics (S, N, 3) positive definite, opacities (S, N): S images, Gaussians
            sorted front to back (culled ones padded with opacity 0).
    Returns:
        weights (S, R * W, N) = alpha_i T_i of the Gaussians that contribute, 0 elsewhere, and the
        accumulated alpha (S, R * W), pixels in row-major order.
    """
    s, n = opacities.shape
    dx = means2d[:, None, :, 0] - xs[None, :, None]  # (S, W, N)
    dy = means2d[:, None, :, 1] - ys[None, :, None]  # (S, R, N)
    ca, cb, cc = (conics[:, None, :, i] for i in range(3))
    # sigma = (a dx^2 + c dy^2) / 2 + b dx dy, with the row and column terms computed once each.
    row_term, col_term = (0.5 * cc * dy * dy)[:, :, None], (0.5 * ca * dx * dx)[:, None]
    sigma = (col_term + row_term + (cb * dx)[:, None] * dy[:, :, None]).reshape(s, -1, n)
    alpha = (opacities[:, None] * torch.exp(-sigma)).clamp(max=MAX_ALPHA)
    # gsplat skips sigma < 0 (only rounding can produce it) and alpha < 1/255.
    alpha = alpha * ((sigma >= 0) & (alpha >= ALPHA_THRESHOLD))
    # Transmittance only decreases, so "stop before T <= 1e-4" keeps a prefix of the sorted list, and
    # the transmittance in front of each kept Gaussian is that of the full list.
    t_incl = torch.cumprod(1 - alpha, dim=-1)
    kept = t_incl.detach() > MIN_TRANSMITTANCE
    t_before = torch.cat([torch.ones_like(t_incl[..., :1]), t_incl[..., :-1]], dim=-1)
    weights = alpha * t_before * kept
    t_final = t_incl.masked_fill(~kept, 1.0).amin(-1)
    return weights, 1 - t_final


def _take(values: Tensor, order: Tensor) -> Tensor:
    """values (B, V, N) or (B, V, N, K) gathered along N by order (B, V, n)."""
    index = order if values.dim() == 3 else order[..., None].expand(*order.shape, values.shape[-1])
    return torch.gather(values, 2, index)


def render_reference(
    gaussians: Gaussians,
    intrinsics: Tensor,
    cam_to_ego: Tensor,
    image_size: tuple[int, int],
    near: float = 0.1,
    far: float = 100.0,
    block_elements: int | None = None,
    camera_model: str = "pinhole",
    tile_size: int | None = None,
) -> RenderOutput:
    """Render features and depth of B scenes into V cameras with plain PyTorch (any device).

    Args:
        gaussians: means (B, N, 3), scales, rotations, opacities (B, N), features (B, N, C).
        intrinsics: (B, V, 3, 3) OpenCV intrinsics of the H x W rendered image.
        cam_to_ego: (B, V, 4, 4).
        image_size: (H, W).
        near, far: centres outside [near, far] in camera z are culled [m].
        block_elements: images x pixels x Gaussians evaluated at once (bounds the peak memory);
            None = 4M on a CPU, 32M on a GPU.
        camera_model: "pinhole" or "ortho" (see ``project_gaussians``).
        tile_size: None = every pixel evaluates every visible Gaussian; k = tiles of k x k pixels
            that each evaluate only the Gaussians touching them (same image, see the module
            docstring).
    Returns:
        RenderOutput with features (B, V, C, H, W), depth and alpha (B, V, H, W), in the dtype of
        the Gaussians' means.
    """
    b, v, h, w = check_render_inputs(gaussians, intrinsics, cam_to_ego, image_size, near, far, camera_model)
    if tile_size is not None and tile_size < 1:
        raise ValueError(f"tile_size must be >= 1 or None, got {tile_size}")
    image_size = (h, w)
    n, c = gaussians.num_gaussians, gaussians.features.shape[-1]
    dtype = gaussians.means.dtype
    if n == 0:
        zeros = gaussians.means.new_zeros(b, v, h, w)
        return RenderOutput(gaussians.means.new_zeros(b, v, c, h, w), zeros, zeros.clone())
    intrinsics, cam_to_ego = intrinsics.to(dtype), cam_to_ego.to(dtype)
    means2d, conics, depths, valid, radii = project_gaussians(
        gaussians, intrinsics, cam_to_ego, image_size, near, far, camera_model, return_radii=True
    )

    # Sort once per image by centre depth (gsplat sorts each tile's list by the same key); the
    # stable sort breaks ties by Gaussian index, as gsplat's stable radix sort does. Culled Gaussians
    # sort last and are cut off, so each image only evaluates the (padded) set it can see.
    key = torch.where(valid, depths.detach(), torch.full_like(depths.detach(), float("inf")))
    n = max(1, int(valid.sum(-1).max()))
    order = torch.sort(key, dim=-1, stable=True).indices[..., :n]  # (B, V, n)
    means2d, conics, depths, valid, radii = (_take(t, order) for t in (means2d, conics, depths, valid, radii))
    n_all = gaussians.num_gaussians
    opacities = _take(gaussians.opacities[:, None].expand(b, v, n_all), order)
    features = _take(gaussians.features[:, None].expand(b, v, n_all, c).to(dtype), order)
    # Padding (culled) entries: opacity 0 and a unit conic, so that they are finite and never drawn.
    opacities = torch.where(valid, opacities, torch.zeros_like(opacities))
    conics = torch.where(valid[..., None], conics, conics.new_tensor([1.0, 0.0, 1.0]))

    s = b * v
    flat = lambda t: t.reshape(s, *t.shape[2:])
    means2d, conics, depths = flat(means2d), flat(conics), flat(depths)
    opacities, features, valid, radii = flat(opacities), flat(features), flat(valid), flat(radii)
    values = torch.cat([features, depths[..., None]], dim=-1)  # (S, N, C + 1): features and depth
    if block_elements is None:
        block_elements = _BLOCK_ELEMENTS.get(means2d.device.type, _BLOCK_ELEMENTS["cpu"])

    if tile_size is not None:
        rendered, alpha = _composite_tiles(
            means2d, conics, opacities, values, valid, radii, (h, w), tile_size, block_elements
        )
        rendered = rendered.reshape(b, v, h, w, c + 1)
        return RenderOutput(
            features=rendered[..., :c].permute(0, 1, 4, 2, 3),
            depth=rendered[..., c],
            alpha=alpha.reshape(b, v, h, w),
        )

    ys = torch.arange(h, device=means2d.device, dtype=dtype) + 0.5
    xs = torch.arange(w, device=means2d.device, dtype=dtype) + 0.5
    rows = max(1, block_elements // max(1, s * n * w))
    rendered, alphas = [], []
    for start in range(0, h, rows):
        weights, alpha = composite(ys[start : start + rows], xs, means2d, conics, opacities)
        rendered.append(weights @ values)  # (S, R * W, C + 1)
        alphas.append(alpha)
    rendered = torch.cat(rendered, dim=1).reshape(b, v, h, w, c + 1)
    return RenderOutput(
        features=rendered[..., :c].permute(0, 1, 4, 2, 3),
        depth=rendered[..., c],
        alpha=torch.cat(alphas, dim=1).reshape(b, v, h, w),
    )


def _composite_tiles(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    values: Tensor,
    valid: Tensor,
    radii: Tensor,
    image_size: tuple[int, int],
    tile: int,
    block_elements: int,
) -> tuple[Tensor, Tensor]:
    """Tile-binned compositing of S images of depth-sorted Gaussians.

    Args:
        means2d (S, n, 2), conics (S, n, 3), opacities (S, n) (0 for padding), values (S, n, K),
        valid (S, n), radii (S, n, 2): as in ``render_reference``, sorted front to back.
        image_size: (H, W); tile: tile edge in pixels; block_elements: tiles x pixels x Gaussians per
            evaluated block.
    Returns:
        rendered (S, H * W, K) = sum_i w_i values_i, and alpha (S, H * W).
    """
    s, n = opacities.shape
    h, w = image_size
    k = values.shape[-1]
    dev, dtype = means2d.device, means2d.dtype
    ty, tx = -(-h // tile), -(-w // tile)
    num_tiles = s * ty * tx
    with torch.no_grad():
        # The tiles each Gaussian's box touches: pixel centres j + 0.5 in [u - r, u + r], widened by a
        # pixel on each side (an extra Gaussian only adds alphas that the 1/255 skip zeroes).
        u, v = means2d.detach().unbind(-1)
        rx, ry = radii.unbind(-1)
        first_x = torch.floor((u - rx - 1.5) / tile).clamp(0, tx - 1).long()
        last_x = torch.floor((u + rx + 0.5) / tile).clamp(0, tx - 1).long()
        first_y = torch.floor((v - ry - 1.5) / tile).clamp(0, ty - 1).long()
        last_y = torch.floor((v + ry + 0.5) / tile).clamp(0, ty - 1).long()
        span_x = last_x - first_x + 1
        touched = span_x * (last_y - first_y + 1) * (valid & (opacities > 0))
        # (Gaussian, tile) pairs, enumerated image by image in depth order; a stable sort by tile
        # keeps each tile's list front to back (gsplat's per-tile lists).
        touched, span_x, first_x, first_y = (t.reshape(-1) for t in (touched, span_x, first_x, first_y))
        pairs = int(touched.sum())
        gid = torch.repeat_interleave(torch.arange(s * n, device=dev), touched, output_size=pairs)
        local = torch.arange(pairs, device=dev) - (torch.cumsum(touched, 0) - touched)[gid]
        row, col = first_y[gid] + local // span_x[gid], first_x[gid] + local % span_x[gid]
        tile_id = (gid // n) * (ty * tx) + row * tx + col
        tile_id, perm = torch.sort(tile_id, stable=True)
        gid = gid[perm]
        counts = torch.bincount(tile_id, minlength=num_tiles)
        starts = torch.cumsum(counts, 0) - counts
        busiest = torch.argsort(counts, descending=True)
    flat = lambda t: t.reshape(s * n, *t.shape[2:])
    means2d, conics, opacities, values = flat(means2d), flat(conics), flat(opacities), flat(values)
    lo = torch.stack(
        torch.meshgrid(
            torch.arange(tx, device=dev, dtype=dtype) * tile,
            torch.arange(ty, device=dev, dtype=dtype) * tile,
            indexing="xy",
        ),
        dim=-1,
    )
    origins = lo.reshape(ty * tx, 2)  # (x, y) of each tile's corner
    centres = torch.arange(tile, device=dev, dtype=dtype) + 0.5
    done, parts, alphas = [], [], []
    start = 0
    counts_host = counts[busiest].tolist()
    while start < num_tiles and counts_host[start] > 0:
        length = counts_host[start]  # the longest list of the remaining tiles (sorted descending)
        chunk = max(1, block_elements // (tile * tile * length))
        tiles = busiest[start : start + chunk]
        start += tiles.numel()
        slot = torch.arange(length, device=dev)
        present = slot < counts[tiles, None]  # (Tc, L)
        index = gid[(starts[tiles, None] + slot).clamp(max=max(pairs - 1, 0))]  # global Gaussian ids
        m2d = means2d[index] - origins[tiles % (ty * tx)][:, None]
        op = torch.where(present, opacities[index], torch.zeros((), device=dev, dtype=dtype))
        weights, alpha = composite(centres, centres, m2d, conics[index], op)
        done.append(tiles)
        parts.append(weights @ values[index])
        alphas.append(alpha)
    out = values.new_zeros(num_tiles, tile * tile, k)
    out_alpha = values.new_zeros(num_tiles, tile * tile)
    if done:  # tiles no Gaussian touches stay 0
        done = torch.cat(done)
        out = out.index_copy(0, done, torch.cat(parts))
        out_alpha = out_alpha.index_copy(0, done, torch.cat(alphas))
    # (S, ty, tx, tile_y, tile_x, K) -> (S, H, W, K)
    size = (s, ty * tile, tx * tile)
    out = out.reshape(s, ty, tx, tile, tile, k).permute(0, 1, 3, 2, 4, 5).reshape(*size, k)
    out_alpha = out_alpha.reshape(s, ty, tx, tile, tile).permute(0, 1, 3, 2, 4).reshape(size)
    return out[:, :h, :w].reshape(s, h * w, k), out_alpha[:, :h, :w].reshape(s, h * w)
