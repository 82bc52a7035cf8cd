import pytest
from blobs.tests.factories import make_user, make_blob, pattern
from blobs.services import blob_open, blob_verify

@pytest.mark.django_db
def test_roundtrip(settings):
    settings.BLOBS = {**settings.BLOBS, "SEGMENT_SIZE": 4096}
    u = make_user()
    data = pattern(50_000)
    b = make_blob(u, data)
    r = blob_open(blob=b)
    assert b"".join(r.iter_range(0, b.size)) == data
    assert b"".join(r.iter_range(1000, 9000)) == data[1000:9000]
    assert blob_verify(blob=b).ok
