"""Pure-numpy int64 reference of the elementwise contract (used only by tests).

Written from the TFLite sources, independently of the C core: QuantizeMultiplier
(quantization_util.cc), MultiplyByQuantizedMultiplier double / single rounding
(common.h), int8 ADD (kernels/add.cc + reference_integer_ops AddFunc) and MUL
(kernels/mul.cc + reference_integer_ops MulElementwise); the fp32 mode as
docs/arithmetic.md states it.
"""
import numpy as np

from reference import mbqm_double, mbqm_single, quantize_multiplier


def add_multipliers(sa, sb, so):
    """(ma, sha), (mb, shb), (mo, sho) of TFLite int8 ADD, reals in double from the float32 scales."""
    sa, sb, so = float(np.float32(sa)), float(np.float32(sb)), float(np.float32(so))
    tm = 2.0 * max(sa, sb)
    return (quantize_multiplier(sa / tm), quantize_multiplier(sb / tm),
            quantize_multiplier(tm / (2.0**20 * so)))


def mul_multiplier(sa, sb, so):
    sa, sb, so = float(np.float32(sa)), float(np.float32(sb)), float(np.float32(so))
    return quantize_multiplier(sa * sb / so)


def _clamp_round_f32(f, zo, lo, hi):
    f = np.minimum(np.maximum(f, np.float32(lo - zo)), np.float32(hi - zo))
    return np.rint(f).astype(np.int64) + zo  # rint: half to even


def eltwise(op, a, b, sa, za, sb, zb, so, zo, lo, hi, rounding):
    """The contract on broadcast int arrays; returns int64."""
    va = np.asarray(a, np.int64) - za
    vb = np.asarray(b, np.int64) - zb
    va, vb = np.broadcast_arrays(va, vb)
    if rounding == "fp32":
        fa = va.astype(np.float32) * np.float32(sa)
        fb = vb.astype(np.float32) * np.float32(sb)
        f = (fa + fb if op == "add" else fa * fb) / np.float32(so)
        return _clamp_round_f32(f, zo, lo, hi)
    mbqm = mbqm_double if rounding == "double" else mbqm_single
    if op == "add":
        (ma, sha), (mb, shb), (mo, sho) = add_multipliers(sa, sb, so)
        x = mbqm(va << 20, ma, sha) + mbqm(vb << 20, mb, shb)
    else:
        mo, sho = mul_multiplier(sa, sb, so)
        x = va * vb
    return np.clip(mbqm(x, mo, sho) + zo, lo, hi)
