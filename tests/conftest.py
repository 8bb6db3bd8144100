"""How tests/lab and tests/integration run in parallel (pytest-xdist,
`make integration`; doc/internals/testing.md).

With `--dist loadgroup` every test file is one unit of work: all its tests
run in one worker, in file order, so a module-scoped fixture (a lab, Samba,
a KDC, the outside services) starts once per file, as in a serial run.
Files that hold one machine-wide resource share a unit (SHARED below), so
they never wait for each other in two workers.  The heaviest files are
handed out first (SLOW below), so no long file starts last.  Without xdist
(`-n 0`, or one file run by hand) nothing here changes anything."""
import os

import pytest

# Files that hold a machine-wide resource: same group, same worker, one after
# the other.  samba_env.SambaDcerpcd needs 127.0.0.1:135 (Samba cannot move
# its endpoint mapper); its lock file would serialise them anyway, with a
# worker idle meanwhile.
SHARED = {
    "test_auth_terminate.py": "samba-epm135",
    "test_samba_direct.py": "samba-epm135",
    "test_samba_relay.py": "samba-epm135",
}

# The longest files (pytest --durations under xdist, at load 10-13 on 2
# cores): handed out first, longest first.  Only the order changes; a file
# not listed (every new one) comes after these, in collection order.
SLOW = [
    "test_mime_dump.py", "test_winbind.py", "test_svc.py", "test_module_api.py",
    "samba-epm135", "test_lab_auth.py", "test_http_front.py", "test_ntlm_wire.py",
    "test_bad_input.py", "test_rop_wire.py", "test_fx_sync.py", "test_mapihttp_load.py",
    "test_krb5_gss.py", "test_krb5_relay.py", "test_packet_export.py", "test_rop_lifetime.py",
    "test_ops.py", "test_lab_ics.py",
]


def _group(item):
    name = os.path.basename(str(item.fspath))
    return SHARED.get(name, name)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # only xdist's workers collect (their own --dist option reads "no")
    if not hasattr(config, "workerinput"):
        return
    rank = {g: i for i, g in enumerate(SLOW)}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    # stable: the tests of a file keep their order
    items.sort(key=lambda it: rank.get(_group(it), len(SLOW)))
