"""The pure parts of the inspection harness: the ramdisk cache key and
lookup, the iPXE script, the benchmark plan and rows."""

import json

from pxefilterd_bench import cli
from pxefilterd_bench import inspection as bench_inspection
from pxefilterd_bench.report import Report
from pxefilterd_harness import inspection, ramdisk


def _inputs(root, **contents):
    for name in ramdisk.INPUTS:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(contents.get(name, 'content of %s' % name))


def test_key_changes_with_every_input(tmp_path):
    _inputs(tmp_path)
    key = ramdisk.inputs_key(tmp_path)
    assert key == ramdisk.inputs_key(tmp_path)
    for name in ramdisk.INPUTS:
        _inputs(tmp_path, **{name: 'changed'})
        assert ramdisk.inputs_key(tmp_path) != key
        _inputs(tmp_path)
    assert ramdisk.inputs_key(tmp_path) == key


def test_key_of_a_missing_input_is_an_error(tmp_path):
    _inputs(tmp_path)
    (tmp_path / 'pins/ipa.txt').unlink()
    try:
        ramdisk.inputs_key(tmp_path)
    except ramdisk.RamdiskError as exc:
        assert 'ipa.txt' in str(exc)
    else:
        raise AssertionError('no error for a missing input')


def test_the_checkout_is_found_and_keyed():
    root = ramdisk.repo_root()
    assert (root / 'tools/ramdisk/build.sh').is_file()
    assert len(ramdisk.inputs_key(root)) == 64


def test_cached_needs_build_json_and_both_files(tmp_path, monkeypatch):
    monkeypatch.setenv('PXEFILTERD_RAMDISK_CACHE', str(tmp_path))
    key = 'k' * 64
    directory = tmp_path / key
    directory.mkdir()
    assert ramdisk.cached(key) is None
    (directory / 'vmlinuz').write_bytes(b'kernel')
    (directory / 'initramfs').write_bytes(b'root')
    assert ramdisk.cached(key) is None          # no build.json: unfinished
    (directory / 'build.json').write_text(json.dumps(
        {'seconds': 200.5, 'kernel': '6.1', 'initramfs_bytes': 3 << 20}))
    found = ramdisk.cached(key)
    assert found.kernel == directory / 'vmlinuz'
    assert found.initramfs == directory / 'initramfs'
    assert '3.0 MiB' in found.describe() and '(cached)' in found.describe()
    (directory / 'initramfs').unlink()
    assert ramdisk.cached(key) is None


def test_ipxe_script_boots_the_ramdisk_with_the_callback():
    script = inspection.ipxe_script(
        'http://198.51.100.1:8080',
        'http://198.51.100.1:6385/v1/continue_inspection')
    lines = script.splitlines()
    assert lines[0] == '#!ipxe'
    kernel = next(line for line in lines if line.startswith('kernel '))
    assert kernel.startswith('kernel http://198.51.100.1:8080/vmlinuz ')
    assert ('ipa-inspection-callback-url=http://198.51.100.1:6385/v1/'
            'continue_inspection') in kernel.split()
    assert 'BOOTIF=01-${netX/mac:hexhyp}' in kernel.split()
    assert 'initrd http://198.51.100.1:8080/initramfs' in lines
    assert lines[-1] == 'boot'


def test_plan_runs_inspections_in_a_full_run_only():
    parser = cli.build_parser()
    assert cli.make_plan(parser.parse_args([]))['inspection_count'] == 5
    quick = cli.make_plan(parser.parse_args(['--quick']))
    assert quick['inspection_count'] == 0
    given = cli.make_plan(parser.parse_args(['--quick', '--agent-boots',
                                             '2', '--only', 'inspection']))
    assert given['inspection_count'] == 2
    assert given['families'] == ['inspection']


def test_rows_per_step_and_failures():
    report = Report()
    ok = {'offer': 3.0, 'posted': 45.0, 'changed': 0.2, 'denied': 0.5,
          'total': 45.7}
    results = [ok, dict(ok, denied=1.5, total=46.7),
               {'mac': 'x', 'problem': 'InspectionError: no posted'}]
    bench_inspection.add_rows(report, '3 inspections', results)
    rows = {r.metric: r for r in report.rows}
    assert rows['power-on -> agent posted p50'].value == 45.0
    assert rows['power-on -> agent posted p50'].note == 'n=2'
    denied = rows['state change -> MAC denied p95']
    assert denied.target == ('<=', 2.0) and denied.met
    failed = rows['inspections that did not complete']
    assert failed.value == 1 and not failed.met
    assert 'no posted' in failed.note
