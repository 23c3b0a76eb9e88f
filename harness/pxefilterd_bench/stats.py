"""Small statistics over lists of measurements (pure)."""

import math
import statistics


def percentile(values, p):
    """Return the ``p``-th percentile (0-100) with linear interpolation.

    The same definition as numpy's default: p50 of [1, 2, 3, 4] is 2.5.
    Raises ValueError for an empty list.
    """
    data = sorted(values)
    if not data:
        raise ValueError('percentile of no values')
    if not 0 <= p <= 100:
        raise ValueError('percentile must be within 0..100: %r' % (p,))
    pos = (len(data) - 1) * p / 100.0
    low = math.floor(pos)
    high = math.ceil(pos)
    if low == high:
        return data[low]
    return data[low] + (data[high] - data[low]) * (pos - low)


def summary(values):
    """Return ``{n, min, p50, p95, max, mean}`` of ``values`` (None if empty).
    """
    values = list(values)
    if not values:
        return {'n': 0, 'min': None, 'p50': None, 'p95': None,
                'max': None, 'mean': None}
    return {'n': len(values), 'min': min(values),
            'p50': percentile(values, 50), 'p95': percentile(values, 95),
            'max': max(values), 'mean': statistics.fmean(values)}


def median(values):
    return percentile(values, 50)
