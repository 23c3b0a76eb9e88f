"""Benchmark results: rows, a readable table, and the JSON document.

Pure code (no I/O except :meth:`Report.write_json`), unit tested.

A :class:`Row` is one figure: what was measured (``scenario``, ``case``,
``metric``), ours (``value``), optionally the baseline's figure for the
same thing (``ratio`` is then ours/baseline) and a target (``met`` says
whether ``value`` meets it).  A scenario that could not run or failed is a
row with ``status`` ``skipped`` or ``error`` and the reason in ``error``.
Scenarios may also leave raw data (per-request times, every latency) in
:attr:`Report.details`; the JSON has all of it.
"""

import dataclasses
import json
import math
import os
import typing

_OPS = {
    '<=': lambda value, limit: value <= limit,
    '<': lambda value, limit: value < limit,
    '>=': lambda value, limit: value >= limit,
    '>': lambda value, limit: value > limit,
    '==': lambda value, limit: value == limit,
}


def _number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and not (isinstance(value, float) and math.isnan(value)))


@dataclasses.dataclass
class Row:
    """One figure of the benchmark.

    :ivar target: ``(op, limit)`` with op one of ``<= < >= > ==`` and limit
        in the row's unit, or None.
    :ivar status: ``ok``, ``error`` (the scenario raised: ``error`` holds
        the message) or ``skipped`` (could not run here: ``error`` says
        why).
    """

    scenario: str
    case: str
    metric: str
    value: typing.Any = None
    unit: str = ''
    baseline: typing.Any = None
    target: typing.Optional[typing.Tuple[str, float]] = None
    note: str = ''
    status: str = 'ok'
    error: typing.Optional[str] = None

    def __post_init__(self):
        if self.target is not None and self.target[0] not in _OPS:
            raise ValueError('unknown target operator %r' % (self.target,))

    @property
    def ratio(self):
        """ours / baseline, or None when either is missing or zero."""
        if not (_number(self.value) and _number(self.baseline)):
            return None
        if self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def met(self):
        """True/False when there is a target and a number, else None."""
        if self.target is None or not _number(self.value):
            return None
        op, limit = self.target
        return bool(_OPS[op](self.value, limit))

    def to_dict(self):
        data = dataclasses.asdict(self)
        data['target'] = list(self.target) if self.target else None
        data['ratio'] = self.ratio
        data['met'] = self.met
        return data


class Report:
    """Everything one run measured, in order."""

    def __init__(self, meta=None):
        self.meta = dict(meta or {})
        self.rows = []
        self.details = {}
        self.crashed = []

    def add(self, *args, **kwargs):
        """Append ``Row(*args, **kwargs)`` and return it."""
        row = Row(*args, **kwargs)
        self.rows.append(row)
        return row

    def extend(self, rows):
        self.rows.extend(rows)

    def error(self, scenario, case, message):
        """Record that a scenario raised; it counts as a crash."""
        self.crashed.append('%s / %s' % (scenario, case))
        return self.add(scenario, case, 'ERROR', status='error',
                        error=str(message))

    def skip(self, scenario, case, reason):
        """Record that a scenario could not run here (not a crash)."""
        return self.add(scenario, case, 'SKIPPED', status='skipped',
                        error=str(reason))

    def detail(self, key, data):
        """Keep raw data under ``details[key]`` (JSON-serialisable)."""
        self.details[key] = data

    def to_dict(self):
        return {
            'meta': self.meta,
            'rows': [row.to_dict() for row in self.rows],
            'details': self.details,
            'crashed': list(self.crashed),
        }

    def write_json(self, path):
        """Write :meth:`to_dict` to ``path`` atomically (temp + rename)."""
        path = os.path.abspath(path)
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.to_dict(), f, indent=1, sort_keys=False,
                      default=_json_default)
            f.write('\n')
        os.replace(tmp, path)

    def table(self, width=240):
        return format_table(self.rows, width=width)


def _json_default(value):
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return repr(value)


def format_value(value, unit=''):
    """Format a figure for the table: 3 significant digits, unit attached.

    Seconds below 1 are shown in ms; integers get thousands separators.
    """
    if value is None:
        return '-'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if not _number(value):
        return str(value)
    if unit == 's':
        if value != 0 and abs(value) < 1:
            return '%s ms' % _sig(value * 1000)
        return '%s s' % _sig(value)
    if isinstance(value, int):
        text = '{:,}'.format(value)
    else:
        text = _sig(value)
    return '%s %s' % (text, unit) if unit else text


def _sig(value, digits=3):
    if value == 0:
        return '0'
    if abs(value) >= 10 ** digits:
        return '{:,}'.format(int(round(value)))
    return '%.*g' % (digits, value)


def format_target(target, unit=''):
    if target is None:
        return ''
    op, limit = target
    return '%s %s' % (op, format_value(limit, unit))


def format_table(rows, width=240):
    """Return the rows as text tables, one per scenario, in order."""
    headers = ('case', 'metric', 'ours', 'baseline', 'ours/base', 'target',
               'met', 'note')
    groups = {}
    for row in rows:
        groups.setdefault(row.scenario, []).append(row)
    out = []
    for scenario, group in groups.items():
        lines = []
        for row in group:
            if row.status != 'ok':
                lines.append((row.case, row.metric,
                              _truncate(row.error or '', 120), '', '', '',
                              '', ''))
                continue
            ratio = row.ratio
            met = row.met
            lines.append((
                row.case, row.metric, format_value(row.value, row.unit),
                format_value(row.baseline, row.unit)
                if row.baseline is not None else '',
                '%.2f' % ratio if ratio is not None else '',
                format_target(row.target, row.unit),
                '' if met is None else ('yes' if met else 'NO'),
                row.note))
        widths = [max(len(h), *(len(line[i]) for line in lines))
                  for i, h in enumerate(headers)]
        # The message of an error row may be long: do not let it widen
        # the column for every other row.
        widths[2] = min(widths[2], 40)
        out.append('== %s ==' % scenario)
        out.append(_line(headers, widths, width))
        out.append(_line(['-' * w for w in widths], widths, width))
        for line in lines:
            out.append(_line(line, widths, width))
        out.append('')
    return '\n'.join(out)


def _line(cells, widths, width):
    text = '  '.join(str(c).ljust(w) for c, w in zip(cells, widths))
    return _cut(text.rstrip(), width)


def _truncate(text, limit):
    return _cut(' '.join(str(text).split()), limit)


def _cut(text, limit):
    return text if len(text) <= limit else text[:limit - 3] + '...'
