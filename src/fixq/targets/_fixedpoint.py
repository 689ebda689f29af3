"""gemmlowp's fixed-point primitives (fixedpoint/fixedpoint.h) on numpy int64 arrays holding int16 or int32
raw values, operation for operation as the scalar C++ computes them: what TFLite's int8 HARD_SWISH and its
reference SOFTMAX are built from.  ``bits`` is the raw type's width (16 or 32)."""
import numpy as np


def wrap(x, bits):
    """Two's-complement wrap of int64 `x` to a `bits`-bit integer (C's int32 / int16 addition)."""
    half = np.int64(1) << (bits - 1)
    return ((np.asarray(x, np.int64) + half) & ((half << 1) - 1)) - half


def srdhm(a, b, bits=32):
    """SaturatingRoundingDoublingHighMul: ``(a*b + nudge) / 2^(bits-1)`` (C division), nudge ``2^(bits-2)``
    or ``1 - 2^(bits-2)`` by the product's sign; ``min*min`` saturates to max."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1) << (bits - 2), 1 - (np.int64(1) << (bits - 2)))
    num = ab + nudge
    q = np.abs(num) >> (bits - 1)
    out = np.where(num < 0, -q, q)  # C division truncates toward zero
    lo = -(np.int64(1) << (bits - 1))
    return np.where((a == lo) & (b == lo), -lo - 1, out)


def sdhm(a, b, bits=16):
    """TFLite's SaturatingDoublingHighMul (hard_swish.h): ``(a*b) / 2^(bits-1)``, C division (toward zero)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    q = np.abs(ab) >> (bits - 1)
    lo = -(np.int64(1) << (bits - 1))
    return np.where((a == lo) & (b == lo), -lo - 1, np.where(ab < 0, -q, q))


def rdbpot(x, exponent):
    """RoundingDivideByPOT: arithmetic shift right, ties away from zero."""
    x = np.asarray(x, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def sat_shift_left(x, exponent, bits):
    """SaturatingRoundingMultiplyByPOT<exponent > 0>: a left shift saturating to the raw type."""
    hi = (np.int64(1) << (bits - 1)) - 1
    return np.clip(np.asarray(x, np.int64) << exponent, -hi - 1, hi)


def multiply_pot(x, exponent, bits=32):
    """SaturatingRoundingMultiplyByPOT<exponent>: saturating left shift, or RoundingDivideByPOT."""
    if exponent > 0:
        return sat_shift_left(x, exponent, bits)
    return rdbpot(x, -exponent) if exponent < 0 else np.asarray(x, np.int64)


def _exp_quarter(a):
    """exp_on_interval_between_negative_one_quarter_and_0_excl on Q0.31 raws."""
    constant_term, one_third = 1895147668, 715827883
    x = wrap(a + (1 << 28), 32)
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    poly = rdbpot(wrap(srdhm(wrap(x4_over_4 + x3, 32), one_third) + x2, 32), 1)
    return wrap(constant_term + srdhm(constant_term, wrap(x + poly, 32)), 32)


def exp_on_negative_values(a, integer_bits):
    """exp_on_negative_values of raws `a` in Q(integer_bits).(31 - integer_bits), a <= 0: a Q0.31 raw."""
    frac = 31 - integer_bits
    quarter = np.int64(1) << (frac - 2)
    a = np.asarray(a, np.int64)
    a_mod = wrap((a & (quarter - 1)) - quarter, 32)
    result = _exp_quarter(multiply_pot(a_mod, integer_bits))
    remainder = wrap(a_mod - a, 32)
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                                 (2, 39332535), (3, 720401), (4, 242)):
        if integer_bits > exponent:
            result = np.where(remainder & (np.int64(1) << (frac + exponent)), srdhm(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(np.int64(1) << (36 - integer_bits)), 0, result)
    return np.where(a == 0, (np.int64(1) << 31) - 1, result)


def one_over_one_plus_x_for_x_in_0_1(a):
    """1 / (1 + a) for Q0.31 raws a in [0, 1): Newton-Raphson in Q2.29, a Q0.31 raw."""
    a = np.asarray(a, np.int64)
    s = a + (2**31 - 1)  # RoundingHalfSum(a, One()) in int64, then (sum + sign) / 2
    half_denominator = np.where(s >= 0, (s + 1) // 2, -((-s + 1) // 2))
    x = wrap(1515870810 + srdhm(half_denominator, -1010580540), 32)
    one = np.int64(1) << 29
    for _ in range(3):
        t = wrap(one - srdhm(half_denominator, x), 32)
        x = wrap(x + multiply_pot(srdhm(x, t), 2), 32)
    return multiply_pot(x, 1)
