import os

import pytest
from hypothesis import given, settings, strategies as st

from appliance.errors import IntegrityError
from appliance.crypto import envelope

KEY = os.urandom(32)


@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=700))
@settings(max_examples=60, deadline=None)
def test_roundtrip_any_size_and_segment(data: bytes, segment: int) -> None:
    blob = envelope.seal(KEY, data, "ctx", segment=segment)
    assert len(blob) == envelope.encrypted_size(len(data), segment)
    assert envelope.open_sealed(KEY, blob, "ctx", "f") == data


def test_stream_matches_whole() -> None:
    data = os.urandom(5000)
    pieces = [data[i : i + 333] for i in range(0, len(data), 333)]
    blob = b"".join(envelope.seal_stream(KEY, pieces, "ctx", segment=1000))
    assert envelope.open_sealed(KEY, blob, "ctx", "f") == data


@given(st.data())
@settings(max_examples=150, deadline=None)
def test_any_flipped_bit_is_detected(data: st.DataObject) -> None:
    blob = bytearray(envelope.seal(KEY, b"secret payload " * 40, "ctx", segment=128))
    pos = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    blob[pos] ^= 1 << bit
    with pytest.raises(IntegrityError, match="the-file"):
        envelope.open_sealed(KEY, bytes(blob), "ctx", "the-file")


@pytest.mark.parametrize("cut", [1, 16, 128 + 16, 2 * (128 + 16)])
def test_truncation_detected(cut: int) -> None:
    blob = envelope.seal(KEY, os.urandom(1000), "ctx", segment=128)
    with pytest.raises(IntegrityError):
        envelope.open_sealed(KEY, blob[:-cut], "ctx", "f")


def test_wrong_context_or_key_rejected() -> None:
    blob = envelope.seal(KEY, b"x", "object:a")
    with pytest.raises(IntegrityError):
        envelope.open_sealed(KEY, blob, "object:b", "f")
    with pytest.raises(IntegrityError):
        envelope.open_sealed(os.urandom(32), blob, "object:a", "f")


def test_same_plaintext_encrypts_differently() -> None:
    assert envelope.seal(KEY, b"same", "c") != envelope.seal(KEY, b"same", "c")
