"""Loading weights safely (dequantizer/weights.py): a model's config may name only known building blocks, and a
checkpoint that holds code is refused, without torch's advice to unpickle it."""

import pytest
import torch

from dequantizer import dequantize
from dequantizer.errors import DequantizerError
from dequantizer.weights import check_targets
from helpers import noise


def test_model_configs_may_not_name_arbitrary_code():
    check_targets({"_target_": "dequantizer.models.Generator", "activation": {"_target_": "torch.nn.PReLU"}})
    with pytest.raises(DequantizerError, match="refusing to build 'os.system'"):
        check_targets({"_target_": "dequantizer.models.Generator", "activation": {"_target_": "os.system"}})


def test_malicious_pickle_checkpoint_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {}, "hyper_parameters": {"generator": {}}, "evil": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(DequantizerError, match="refusing to load .*evil.ckpt: it holds code objects") as error:
        dequantize(noise(30, 40), model=tmp_path / "evil.ckpt")
    assert "weights_only" not in str(error.value)  # never repeat torch's advice to unpickle an untrusted file
