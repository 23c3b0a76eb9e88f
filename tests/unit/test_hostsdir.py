import errno
import os
import stat
import subprocess
import sys

import pytest

from pxefilterd import hostsdir
from pxefilterd import macs
from pxefilterd import repair as repair_mod
from pxefilterd.policy import Action

M1, M2 = '52:54:00:00:00:01', '52:54:00:00:00:02'


@pytest.fixture
def store(tmp_path):
    path = tmp_path / 'hostsdir'
    path.mkdir()
    s = hostsdir.HostsDir(str(path))
    s.lock()
    yield s
    s.unlock()


@pytest.fixture
def repair(store):
    return repair_mod.Repair(store)


def listing(store):
    return {name: open(os.path.join(store.path, name), 'rb').read()
            for name in os.listdir(store.path)}


def test_render_and_parse_are_the_four_forms():
    assert hostsdir.render(M1, Action.DENY) == b'52:54:00:00:00:01,ignore\n'
    assert hostsdir.render(M1, Action.ALLOW) == b'52:54:00:00:00:01\n'
    assert hostsdir.render(macs.WILDCARD, Action.DENY) == \
        b'*:*:*:*:*:*,ignore\n20-:,ignore\n'
    assert hostsdir.render(macs.WILDCARD, Action.ALLOW) == \
        b'*:*:*:*:*:*\n20-:\n'
    for action in Action:
        assert hostsdir.parse(M1, hostsdir.render(M1, action)) is action
    # dnsmasq reads ",IGNORE" as a host name (= allow): never valid here
    assert hostsdir.parse(M1, b'52:54:00:00:00:01,IGNORE\n') is None
    assert hostsdir.parse(M1, b'52:54:00:00:00:01,ign') is None
    assert hostsdir.parse(M2, b'52:54:00:00:00:01\n') is None


def test_names():
    assert hostsdir.file_name(macs.WILDCARD) == 'unknown_hosts_filter'
    assert hostsdir.key_for_name('unknown_hosts_filter') == macs.WILDCARD
    assert hostsdir.key_for_name(M1) == M1
    assert hostsdir.key_for_name('52:54:00:AB:CD:EF') is None
    assert hostsdir.key_for_name('52-54-00-00-00-01') is None
    assert hostsdir.key_for_name('.hidden') is None


def test_apply_writes_files_0644_and_index(store):
    n = store.apply({M1: Action.DENY, M2: Action.ALLOW,
                     macs.WILDCARD: Action.DENY})
    assert n == 3
    assert listing(store) == {
        M1: b'52:54:00:00:00:01,ignore\n', M2: b'52:54:00:00:00:02\n',
        'unknown_hosts_filter': b'*:*:*:*:*:*,ignore\n20-:,ignore\n'}
    for name in os.listdir(store.path):
        mode = stat.S_IMODE(os.stat(os.path.join(store.path, name)).st_mode)
        assert mode == 0o644
    assert store.index == {M1: Action.DENY, M2: Action.ALLOW,
                           macs.WILDCARD: Action.DENY}
    assert sorted(store.cached()) == [M1, M2]
    # nothing left behind in the staging directory but the lock
    assert os.listdir(store.staging) == ['lock']


def test_apply_is_atomic_rename_from_sibling(store, monkeypatch):
    renames = []
    real_rename = os.rename

    def spy(src, dst):
        renames.append((os.path.dirname(src), os.path.dirname(dst)))
        # the destination never exists half-written: the source is complete
        assert open(src, 'rb').read() == hostsdir.render(M1, Action.DENY)
        real_rename(src, dst)

    monkeypatch.setattr(os, 'rename', spy)
    store.apply({M1: Action.DENY})
    assert renames == [(store.staging, store.path)]
    assert os.path.dirname(store.path) == os.path.dirname(store.staging)


def test_write_refuses_invalid_keys(store):
    for bad in ('../x', 'AA:BB:CC:DD:EE:FF', '52:54:00:00:00:01\n', '', 'x/y'):
        with pytest.raises(ValueError):
            store.write(bad, Action.ALLOW)
    assert os.listdir(store.path) == []


def test_transient_error_keeps_index_exact(store, monkeypatch):
    store.apply({M1: Action.DENY})
    real_write = os.write
    calls = []

    def failing_write(fd, data):
        calls.append(data)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_write(fd, data)

    monkeypatch.setattr(os, 'write', failing_write)
    with pytest.raises(hostsdir.TransientWriteError, match='No space'):
        store.apply({M1: Action.ALLOW, M2: Action.DENY})
    assert store.index == {M1: Action.ALLOW}
    assert listing(store) == {M1: b'52:54:00:00:00:01\n'}
    assert os.listdir(store.staging) == ['lock']   # temp file removed


def test_vanished_directory_is_fatal(store, tmp_path):
    os.rmdir(store.path)
    with pytest.raises(hostsdir.HostsDirError) as info:
        store.apply({M1: Action.DENY})
    assert not isinstance(info.value, hostsdir.TransientWriteError)


def test_purge_removes_files_and_quarantines_the_rest(store):
    store.apply({M1: Action.DENY})
    open(os.path.join(store.path, 'garbage'), 'w').write('x')
    os.symlink('/etc/passwd', os.path.join(store.path, 'link'))
    os.mkdir(os.path.join(store.path, 'subdir'))
    assert store.purge() == 2
    assert os.listdir(store.path) == []
    quarantined = sorted(n.split('.')[0] for n in os.listdir(
        os.path.join(store.staging, hostsdir.QUARANTINE_DIR)))
    assert quarantined == ['link', 'subdir']
    assert store.index == {}
    assert os.path.exists('/etc/passwd')


@pytest.mark.parametrize('kind', ['symlink', 'directory', 'fifo'])
@pytest.mark.parametrize('name', [M1, 'unknown_hosts_filter', 'evil'])
def test_special_entries_are_quarantined_and_our_record_rewritten(
        store, kind, name, repair):
    """dnsmasq follows symlinks: a symlink named like a MAC (or the
    wildcard, or anything) could feed it any record.  It is moved away and
    our own file put back."""
    store.apply({M1: Action.DENY, macs.WILDCARD: Action.ALLOW})
    target = os.path.join(os.path.dirname(store.path), 'target')
    with open(target, 'w') as f:
        f.write('%s\n*:*:*:*:*:*,ignore\n' % M1)   # allow M1, deny all
    path = os.path.join(store.path, name)
    if os.path.lexists(path):
        os.unlink(path)
    if kind == 'symlink':
        os.symlink(target, path)
    elif kind == 'directory':
        os.mkdir(path)
    else:
        os.mkfifo(path)
    message = repair.heal(name)
    assert 'moved to' in message
    assert stat.S_ISREG(os.lstat(os.path.join(store.path, M1)).st_mode)
    assert listing(store)[M1] == b'52:54:00:00:00:01,ignore\n'
    assert listing(store)['unknown_hosts_filter'] == \
        b'*:*:*:*:*:*\n20-:\n'
    if name == 'evil':
        assert 'evil' not in os.listdir(store.path)
        # the records the symlink's target held are re-asserted
        if kind == 'symlink':
            assert '2 of our records re-asserted' in message


def test_rescan_quarantines_special_entries(store, repair):
    store.apply({M1: Action.DENY})
    os.symlink('/etc/passwd', os.path.join(store.path, M2))
    messages = repair.rescan()
    assert any('symlink' in m for m in messages)
    assert not os.path.islink(os.path.join(store.path, M2))
    assert listing(store)[M2] == b'52:54:00:00:00:02,ignore\n'


def test_load_indexes_valid_and_flags_invalid(store):
    open(os.path.join(store.path, M1), 'wb').write(b'52:54:00:00:00:01\n')
    open(os.path.join(store.path, M2), 'wb').write(b'52:54:00:00:00:02,IGN')
    open(os.path.join(store.path, 'AA:BB:CC:DD:EE:FF'), 'w').write('x')
    foreign = store.load()
    assert foreign == ['AA:BB:CC:DD:EE:FF']
    assert store.index == {M1: Action.ALLOW, M2: None}


def test_lock_is_exclusive_and_names_the_holder(tmp_path):
    path = tmp_path / 'hd'
    path.mkdir()
    holder = subprocess.Popen(
        [sys.executable, '-c',
         'import sys,time; from pxefilterd import hostsdir; '
         'h = hostsdir.HostsDir(sys.argv[1]); h.lock(); print("ok", '
         'flush=True); time.sleep(30)', str(path)],
        stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b'ok\n'
        second = hostsdir.HostsDir(str(path))
        with pytest.raises(hostsdir.HostsDirLocked,
                           match='pid %d' % holder.pid):
            second.lock(wait=0.2)
    finally:
        holder.kill()
        holder.wait()
    second.lock(wait=2)   # free once the holder is gone
    second.unlock()


def test_lock_cleans_leftover_temp_files(tmp_path):
    path = tmp_path / 'hd'
    path.mkdir()
    s = hostsdir.HostsDir(str(path))
    s.check()
    open(os.path.join(s.staging, M1 + '.tmp'), 'w').write('52:54')
    s.lock()
    assert os.listdir(s.staging) == ['lock']
    s.unlock()


def test_lock_never_follows_a_link(tmp_path):
    # what the daemon's user could plant for a root-run writer
    root = tmp_path / 'root'
    root.mkdir()
    (root / 'shadow').write_bytes(b'secret\n')
    (root / 'x.tmp').write_bytes(b'keep\n')
    path = tmp_path / 'hd'
    path.mkdir()
    s = hostsdir.HostsDir(str(path))
    os.symlink(root, s.staging)
    with pytest.raises(hostsdir.HostsDirError, match='symlink'):
        s.lock()
    os.unlink(s.staging)
    os.mkdir(s.staging)
    os.symlink(root / 'shadow', os.path.join(s.staging, 'lock'))
    with pytest.raises(hostsdir.HostsDirError, match='symlink'):
        s.lock()
    assert s.lock_fd is None
    assert sorted(os.listdir(root)) == ['shadow', 'x.tmp']
    assert (root / 'shadow').read_bytes() == b'secret\n'


def test_survey_indexes_without_changing_anything(store):
    open(os.path.join(store.path, M1), 'wb').write(b'52:54:00:00:00:01\n')
    open(os.path.join(store.path, 'README'), 'w').write('x')
    os.symlink('/etc/passwd', os.path.join(store.path, M2))
    os.mkdir(os.path.join(store.path, 'sub'))
    before = sorted(os.listdir(store.path))
    assert store.survey() == (['README'], [M2, 'sub'])
    assert store.index == {M1: Action.ALLOW}
    assert sorted(os.listdir(store.path)) == before
    # load: the same index, and what is not a regular file moved away
    assert store.load() == ['README']
    assert store.index == {M1: Action.ALLOW}
    assert sorted(os.listdir(store.path)) == [M1, 'README']


def test_read_file_never_follows_a_link(tmp_path):
    (tmp_path / 'target').write_bytes(b'secret')
    os.symlink(tmp_path / 'target', tmp_path / 'link')
    with pytest.raises(OSError) as exc:
        hostsdir.read_file(str(tmp_path / 'link'))
    assert exc.value.errno == errno.ELOOP
    os.mkfifo(tmp_path / 'fifo')
    assert hostsdir.read_file(str(tmp_path / 'fifo')) == b''   # no block
    (tmp_path / 'big').write_bytes(b'x' * 100000)
    assert len(hostsdir.read_file(str(tmp_path / 'big'))) == 4096
    assert len(hostsdir.read_file(str(tmp_path / 'big'), None)) == 100000


def test_check_reports_missing_and_readonly(tmp_path):
    with pytest.raises(hostsdir.HostsDirError, match='does not exist'):
        hostsdir.HostsDir(str(tmp_path / 'nope')).check()
    if os.geteuid() != 0:
        ro = tmp_path / 'ro'
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(hostsdir.HostsDirError, match='not writable'):
            hostsdir.HostsDir(str(ro)).check()


class TestHeal:
    @pytest.fixture
    def healed(self, store):
        store.track_own_writes = True
        store.apply({macs.WILDCARD: Action.DENY, M1: Action.DENY,
                     M2: Action.ALLOW})
        return store

    def path(self, store, name):
        return os.path.join(store.path, name)

    def test_own_rename_is_skipped_without_reading(self, healed, monkeypatch,
                                                   repair):
        monkeypatch.setattr(repair_mod.Repair, '_read',
                            staticmethod(lambda p: pytest.fail('read')))
        assert repair.heal(M1, created=True) is None

    def test_unchanged_file_is_fine(self, healed, repair):
        assert repair.heal(M1) is None

    def test_edit_is_reverted(self, healed, repair):
        open(self.path(healed, M1), 'w').write('52:54:00:00:00:01\n')
        msg = repair.heal(M1)
        assert 'rewritten to deny' in msg
        assert listing(healed)[M1] == b'52:54:00:00:00:01,ignore\n'

    def test_in_place_same_size_edit_after_own_write(self, healed, repair):
        # the inode is ours but the content is not: a modify event
        open(self.path(healed, M1), 'r+').write('52:54:00:00:00:01,IGNORE\n')
        assert repair.heal(M1, created=False)
        assert listing(healed)[M1] == b'52:54:00:00:00:01,ignore\n'

    def test_truncate_and_delete_are_rewritten(self, healed, repair):
        open(self.path(healed, M2), 'w').close()
        assert 'rewritten to allow' in repair.heal(M2)
        os.unlink(self.path(healed, M1))
        assert 'was deleted' in repair.heal(M1)
        assert listing(healed)[M1] == b'52:54:00:00:00:01,ignore\n'
        assert listing(healed)[M2] == b'52:54:00:00:00:02\n'

    def test_new_mac_file_gets_unknown_state(self, healed, repair):
        m3 = '52:54:00:00:00:03'
        open(self.path(healed, m3), 'w').write(m3 + '\n')
        assert 'rewritten to deny' in repair.heal(m3, created=True)
        assert listing(healed)[m3] == (m3 + ',ignore\n').encode()
        assert healed.index[m3] is Action.DENY

    def test_foreign_file_quarantined_and_records_reasserted(self, healed,
                                                             repair):
        open(self.path(healed, 'evil'), 'w').write(
            '52:54:00:00:00:01\n*:*:*:*:*:*\n')
        before = os.stat(self.path(healed, M1)).st_ino
        msg = repair.heal('evil', created=True)
        assert '2 of our records re-asserted' in msg
        assert 'evil' not in os.listdir(healed.path)
        qdir = os.path.join(healed.staging, hostsdir.QUARANTINE_DIR)
        assert len(os.listdir(qdir)) == 1
        # rewritten (new inode) so that ours is the newest record dnsmasq read
        assert os.stat(self.path(healed, M1)).st_ino != before
        assert listing(healed)[M1] == b'52:54:00:00:00:01,ignore\n'

    def test_rescan_finds_everything(self, healed, repair):
        os.unlink(self.path(healed, M1))
        open(self.path(healed, M2), 'w').write('junk')
        open(self.path(healed, 'junk'), 'w').write('junk')
        msgs = repair.rescan()
        assert len(msgs) == 3
        assert listing(healed) == {
            M1: b'52:54:00:00:00:01,ignore\n', M2: b'52:54:00:00:00:02\n',
            'unknown_hosts_filter': b'*:*:*:*:*:*,ignore\n20-:,ignore\n'}
        assert repair.rescan() == []


class TestBaseFile:
    @pytest.fixture
    def based(self, tmp_path):
        path = tmp_path / 'hostsdir'
        path.mkdir()
        s = hostsdir.HostsDir(str(path), base_path=str(tmp_path / 'hosts'))
        s.lock()
        yield s
        s.unlock()

    def test_rebase_writes_one_file_and_keeps_only_the_wildcard(self, based):
        based.apply({M1: Action.ALLOW, macs.WILDCARD: Action.ALLOW})
        based.rebase({M1: Action.DENY, M2: Action.ALLOW}, Action.DENY)
        assert listing(based) == {
            'unknown_hosts_filter': b'*:*:*:*:*:*,ignore\n20-:,ignore\n'}
        assert open(based.base_path, 'rb').read() == (
            b'52:54:00:00:00:01,ignore\n52:54:00:00:00:02\n')
        mode = stat.S_IMODE(os.stat(based.base_path).st_mode)
        assert mode == 0o644
        assert based.current() == {M1: Action.DENY, M2: Action.ALLOW,
                                   macs.WILDCARD: Action.DENY}
        assert sorted(based.cached()) == [M1, M2]

    def test_per_mac_file_overrides_base_line(self, based):
        based.rebase({M1: Action.DENY}, Action.DENY)
        based.apply({M1: Action.ALLOW})
        assert based.current()[M1] is Action.ALLOW
        assert based.base[M1] is Action.DENY

    def test_load_base_reads_valid_lines(self, based):
        with open(based.base_path, 'wb') as f:
            f.write(b'52:54:00:00:00:01,ignore\n52:54:00:00:00:02,IGNORE\n'
                    b'junk\n52:54:00:00:00:02\n')
        assert based.load_base() == 2
        assert based.base == {M1: Action.DENY, M2: Action.ALLOW}

    def test_base_inside_hostsdir_is_refused(self, tmp_path):
        path = tmp_path / 'hd'
        path.mkdir()
        with pytest.raises(hostsdir.HostsDirError, match='must not be'):
            hostsdir.HostsDir(str(path), base_path=str(path / 'x')).check()

    def test_removed_file_is_not_healed_back(self, based):
        based.track_own_writes = True
        based.apply({M1: Action.DENY})
        based.remove([M1])
        assert repair_mod.Repair(based).heal(M1) is None
        assert M1 not in listing(based)


# -- InfiniBand client ids ----------------------------------------------------

IB1 = 'id:ff:00:00:00:00:00:02:00:00:02:c9:00:00:02:c9:03:00:0a:0b:01'


def test_client_id_records_and_the_two_unknown_records():
    assert hostsdir.render(IB1, Action.DENY) == (IB1 + ',ignore\n').encode()
    assert hostsdir.render(IB1, Action.ALLOW) == (IB1 + '\n').encode()
    assert hostsdir.key_for_name(IB1) == IB1
    assert hostsdir.key_for_name(IB1.upper()) is None     # not ours
    assert hostsdir.key_for_name('id:ff') is None
    # the Ethernet wildcard and the InfiniBand one share one file and one
    # verdict; the old one-line form is not ours any more (rewritten)
    assert hostsdir.parse(macs.WILDCARD, b'*:*:*:*:*:*,ignore\n') is None
    assert hostsdir.parse(macs.WILDCARD,
                          b'*:*:*:*:*:*\n20-:,ignore\n') is None


def test_client_id_files_are_written_indexed_and_healed(store, repair):
    store.track_own_writes = True
    store.apply({macs.WILDCARD: Action.DENY, IB1: Action.ALLOW})
    assert listing(store)[IB1] == (IB1 + '\n').encode()
    with open(os.path.join(store.path, IB1), 'w') as f:
        f.write(IB1 + ',ignore\n')
    assert 'rewritten to allow' in repair.heal(IB1)
    store.index.clear()
    assert store.load() == []
    assert store.index == {macs.WILDCARD: Action.DENY, IB1: Action.ALLOW}
    with pytest.raises(ValueError):
        store.write('id:FF:00', Action.ALLOW)


def test_a_foreign_zero_length_record_reasserts_the_unknown_records(
        store, repair):
    """A foreign "20-:" (or ":") allow would let unknown IPoIB clients
    boot; dnsmasq has read it, so our wildcard file is written again."""
    store.track_own_writes = True
    store.apply({macs.WILDCARD: Action.DENY, IB1: Action.DENY})
    wildcard = os.path.join(store.path, hostsdir.WILDCARD_FILE)
    before = os.stat(wildcard).st_ino
    with open(os.path.join(store.path, 'evil'), 'w') as f:
        f.write('20-:\n%s\n' % IB1.upper())
    msg = repair.heal('evil', created=True)
    assert '2 of our records re-asserted' in msg
    assert os.stat(wildcard).st_ino != before


def test_a_foreign_allow_for_an_unknown_mac_gets_the_unknown_state(
        store, repair):
    """dnsmasq has read the foreign record (an allow for a MAC ironic does
    not know, which beats our wildcard deny): a newer record of ours, with
    the wildcard's verdict, must follow."""
    store.track_own_writes = True
    store.apply({macs.WILDCARD: Action.DENY, M1: Action.DENY})
    stranger = '52:54:00:00:00:99'
    with open(os.path.join(store.path, 'evil'), 'w') as f:
        f.write(stranger + '\n')
    assert '1 of our records re-asserted' in repair.heal('evil',
                                                         created=True)
    assert listing(store)[stranger] == (stranger + ',ignore\n').encode()
    assert store.index[stranger] is Action.DENY


def test_a_mac_named_symlink_reasserts_everything_its_target_says(
        store, tmp_path, repair):
    store.track_own_writes = True
    store.apply({macs.WILDCARD: Action.DENY, M1: Action.DENY,
                 M2: Action.DENY})
    target = tmp_path / 'target'
    target.write_text('%s\n%s\n*:*:*:*:*:*\n' % (M1, M2))
    os.unlink(os.path.join(store.path, M1))
    os.symlink(target, os.path.join(store.path, M1))
    msg = repair.heal(M1, created=True)
    assert 'was a symlink' in msg and '3 of our records re-asserted' in msg
    assert listing(store)[M2] == (M2 + ',ignore\n').encode()


def test_an_entry_that_vanishes_while_it_is_quarantined_is_no_error(
        store, monkeypatch, repair):
    store.track_own_writes = True
    store.apply({macs.WILDCARD: Action.DENY, M1: Action.DENY})
    with open(os.path.join(store.path, 'evil'), 'w') as f:
        f.write(M1 + '\n')
    real_rename = os.rename

    def gone_first(src, dst):
        if src.endswith('/evil'):
            os.unlink(src)           # someone removed it meanwhile
        return real_rename(src, dst)

    monkeypatch.setattr(os, 'rename', gone_first)
    msg = repair.heal('evil', created=True)
    assert 'vanished' in msg and '1 of our records re-asserted' in msg


# -- security review: EMFILE is transient, any name is repairable, foreign
# -- records must be forgotten by dnsmasq, no hostsdir writable by others ---

def _failing_in(directory, err, real_open=os.open):
    def fake_open(path, *args, **kwargs):
        if os.fspath(path).startswith(directory):
            raise OSError(err, os.strerror(err))
        return real_open(path, *args, **kwargs)
    return fake_open


@pytest.mark.parametrize('err', [errno.EMFILE, errno.ENFILE])
def test_out_of_descriptors_is_transient_for_writes(store, monkeypatch, err):
    """"Too many open files" used to be a fatal hostsdir error: the daemon
    exited whenever something else had used up its descriptors."""
    monkeypatch.setattr(os, 'open', _failing_in(store.staging, err))
    with pytest.raises(hostsdir.TransientWriteError,
                       match='Too many open files'):
        store.write(M1, Action.DENY)
    monkeypatch.undo()
    store.write(M1, Action.DENY)
    assert listing(store) == {M1: b'52:54:00:00:00:01,ignore\n'}


def test_out_of_descriptors_is_transient_for_rescan_and_heal(store,
                                                             monkeypatch,
                                                             repair):
    store.apply({M1: Action.DENY, macs.WILDCARD: Action.DENY})
    (open(os.path.join(store.path, 'evil'), 'w')).write(M1 + '\n')

    def no_fds(*args, **kwargs):
        raise OSError(errno.EMFILE, 'Too many open files')
    monkeypatch.setattr(os, 'scandir', no_fds)
    with pytest.raises(hostsdir.TransientWriteError):
        repair.rescan()
    monkeypatch.undo()
    monkeypatch.setattr(os, 'open', _failing_in(store.path, errno.EMFILE))
    with pytest.raises(hostsdir.TransientWriteError):
        repair.heal('evil', created=True)
    monkeypatch.undo()
    assert repair.heal('evil', created=True).startswith('foreign file')


def test_an_entry_name_of_any_length_is_quarantined(store, repair):
    """A 250-character name made the quarantine rename raise ENAMETOOLONG
    (name + a time suffix > NAME_MAX) and the daemon exit."""
    store.apply({M1: Action.DENY, macs.WILDCARD: Action.DENY})
    for name in ('x' * 250, 'a\nb' + 'y' * 240, '\u00e9' * 127):
        with open(os.path.join(store.path, name), 'w') as f:
            f.write(M1 + '\n')
    messages = repair.rescan()
    assert len(messages) == 3
    assert sorted(listing(store)) == sorted([M1, 'unknown_hosts_filter'])
    quarantined = os.listdir(os.path.join(store.staging, 'quarantine'))
    assert len(quarantined) == 3
    assert all(len(n.encode()) <= 255 and '\n' not in n for n in quarantined)
    # the message names the entry without letting it forge a log line
    assert not any('\n' in m for m in messages)


@pytest.mark.parametrize('content', [b'52:54:0:0:0:2\n', b'525400000002\n',
                                     b'01-52:54:00:00:00:02\n', b'junk\n',
                                     b''])
def test_every_foreign_entry_is_reported_for_dnsmasq_to_forget(store,
                                                               content,
                                                               repair):
    """dnsmasq reads forms of MAC no scan here recognises: whatever a
    foreign file holds, the repair reports it (the service reloads)."""
    store.apply({M1: Action.DENY, M2: Action.DENY,
                 macs.WILDCARD: Action.DENY})
    assert repair.take_foreign() == []
    with open(os.path.join(store.path, 'evil'), 'wb') as f:
        f.write(content)
    assert repair.heal('evil', created=True)
    found = repair.take_foreign()
    assert len(found) == 1 and 'evil' in found[0]
    assert repair.take_foreign() == []


def test_a_mac_file_holding_another_form_is_reported(store, repair):
    store.apply({M1: Action.ALLOW, M2: Action.DENY,
                 macs.WILDCARD: Action.DENY})
    with open(os.path.join(store.path, M1), 'wb') as f:
        f.write(b'52:54:0:0:0:2\n')       # M2, allowed, in another form
    assert 'rewritten to allow' in repair.heal(M1)
    assert len(repair.take_foreign()) == 1
    # one of our own forms, edited: rewriting it is enough
    with open(os.path.join(store.path, M2), 'wb') as f:
        f.write(b'52:54:00:00:00:02\n')
    assert 'rewritten to deny' in repair.heal(M2)
    assert repair.take_foreign() == []


@pytest.mark.parametrize('mode,group,refused', [
    (0o755, None, False), (0o775, None, False), (0o1777, None, True),
    (0o757, None, True), (0o775, 4242, True), (0o755, 4242, False)])
def test_a_hostsdir_others_can_write_is_refused(tmp_path, mode, group,
                                                refused):
    path = tmp_path / 'hostsdir'
    path.mkdir()
    if group is not None:
        if os.geteuid() != 0:
            pytest.skip('needs root to give the directory another group')
        os.chown(path, -1, group)
    path.chmod(mode)
    store = hostsdir.HostsDir(str(path))
    if refused:
        with pytest.raises(hostsdir.HostsDirError, match='writ'):
            store.check()
    else:
        store.check()


def test_a_staging_dir_others_can_write_is_refused(tmp_path):
    path = tmp_path / 'hostsdir'
    path.mkdir()
    store = hostsdir.HostsDir(str(path))
    store.check()
    os.chmod(store.staging, 0o777)
    with pytest.raises(hostsdir.HostsDirError, match='staging'):
        store.check()


def test_root_checks_a_hostsdir_on_behalf_of_its_owner(tmp_path):
    """``pxefilterd-ctl check-config`` run by root must accept the shipped
    layout: owned by pxefilterd, 0755 (or 0775 with its own group)."""
    if os.geteuid() != 0:
        pytest.skip('needs root')
    path = tmp_path / 'hostsdir'
    path.mkdir()
    staging = tmp_path / '.hostsdir.staging'
    staging.mkdir()
    for d in (path, staging):
        os.chown(d, 4242, 4242)
        d.chmod(0o755)
    hostsdir.HostsDir(str(path)).check()
    st = os.stat(path)
    assert hostsdir.unsafe_mode(st) is None
    path.chmod(0o775)      # group 4242 is not uid 4242's (no such user)
    assert 'group 4242' in hostsdir.unsafe_mode(os.stat(path))
