"""model.dtype: `auto` picks bfloat16 only where the hardware multiplies it natively (else bf16 is ~85x slower)."""

from __future__ import annotations

import pytest
import torch

from sumrl.models.load import dtype_for


@pytest.mark.parametrize("name,expected", [("float32", torch.float32), ("bfloat16", torch.bfloat16),
                                           ("float16", torch.float16)])
def test_an_explicit_dtype_is_taken_as_given(name, expected):
    assert dtype_for(name, "cpu") == expected


@pytest.mark.parametrize("native_bf16,expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_cpu_follows_native_bf16_support(monkeypatch, native_bf16, expected):
    # The CPU's capability is patched: this machine has one answer; the rule must hold for both.
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native_bf16)
    assert dtype_for("auto", "cpu") == expected


def test_auto_on_this_machine_matches_what_its_cpu_can_do():
    assert dtype_for("auto", "cpu") == (torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported()
                                           else torch.float32)
