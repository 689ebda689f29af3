"""Independent formulations of the calibration thresholds, used only by tests.

Written the way the published code is written (NVIDIA pytorch-quantization
calib/histogram.py, ONNX Runtime calibrate.py), loop by loop, on a histogram
built directly with np.histogram over the whole data (no streaming), so the
tests compare two different routes to the same number.
"""
from collections import Counter

import numpy as np


def _entropy(p, q):
    """scipy.stats.entropy(p, q) written out (scipy is not a dependency)."""
    p = np.asarray(p, np.float64) / np.sum(p)
    q = np.asarray(q, np.float64) / np.sum(q)
    out = 0.0
    for pi, qi in zip(p, q):
        if pi > 0:
            if qi == 0:
                return np.inf
            out += pi * np.log(pi / qi)
    return out


def trt_entropy_amax(calib_hist, calib_bin_edges, num_bits=8, unsigned=False, stride=1, start_bin=128):
    """pytorch-quantization _compute_amax_entropy, transcribed (np.digitize, Counter, per-bin loops)."""
    bins = np.array(calib_hist, dtype=np.float64)
    bins[0] = bins[1]
    nbins = 1 << (num_bits - 1 + int(unsigned))
    divergences, arguments = [], []
    new_density_counts = np.zeros(nbins, dtype=np.float64)
    for i in range(start_bin, len(bins) + 1, stride):
        new_density_counts.fill(0)
        space = np.linspace(0, i, num=nbins + 1)
        digitized_space = np.digitize(range(i), space) - 1
        digitized_space[bins[:i] == 0] = -1
        for idx, digitized in enumerate(digitized_space):
            if digitized != -1:
                new_density_counts[digitized] += bins[idx]
        counter = Counter(digitized_space)
        for key, val in counter.items():
            if key != -1:
                new_density_counts[key] = new_density_counts[key] / val
        new_density = np.zeros(i, dtype=np.float64)
        for idx, digitized in enumerate(digitized_space):
            if digitized != -1:
                new_density[idx] = new_density_counts[digitized]
        reference_density = np.array(bins[:len(digitized_space)])
        reference_density[-1] += np.sum(bins[i:])
        divergences.append(_entropy(reference_density, new_density))
        arguments.append(i)
    divergences = np.array(divergences)
    last_argmin = len(divergences) - 1 - np.argmin(divergences[::-1])
    return float(calib_bin_edges[last_argmin * stride + start_bin])


def trt_mse_amax(calib_hist, calib_bin_edges, num_bits=8, unsigned=False, stride=1, start_bin=128):
    """pytorch-quantization _compute_amax_mse, with fake_tensor_quant written out."""
    counts = np.asarray(calib_hist, np.float64)
    edges = np.asarray(calib_bin_edges, np.float64)
    centers = (edges[1:] + edges[:-1]) / 2
    max_bound = 2.0 ** (num_bits - 1 + int(unsigned)) - 1
    mses, arguments = [], []
    for i in range(start_bin, len(centers), stride):
        amax = centers[i]
        scale = max_bound / amax
        quant_centers = np.clip(np.round(centers * scale), -max_bound - 1, max_bound) / scale
        mses.append(np.mean((quant_centers - centers) ** 2 * counts))
        arguments.append(i)
    return float(centers[arguments[int(np.argmin(mses))]])


def trt_percentile_amax(calib_hist, calib_bin_edges, percentile):
    """pytorch-quantization _compute_amax_percentile: lower edge of the bin where the CDF crosses p."""
    total = calib_hist.sum()
    cdf = np.cumsum(calib_hist / total)
    idx = np.searchsorted(cdf, percentile / 100)
    return float(calib_bin_edges[idx])
