"""Weight files: safetensors in, pickles refused, whatever bytes the safetensors header happens to start with."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from nslm.errors import NslmError
from nslm.weights import load_weights, read_safetensors


def test_a_safetensors_header_length_starting_with_the_pickle_byte_still_loads(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "model.safetensors"
    for pad in range(0, 400):  # the metadata's length moves the header length; find one whose low byte is 0x80
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    other = torch.nn.Linear(3, 2)
    load_weights(other, path)
    assert torch.equal(other.weight, model.weight)


def test_a_pickle_is_refused_with_its_reason(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}, protocol=4))
    with pytest.raises(NslmError, match="is a pickle"):
        read_safetensors(path)
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(NslmError, match="is a pickle"):
        read_safetensors(path)
