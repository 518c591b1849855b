"""TPU compile from CPU (needs the `tpu` extra: libtpu), topology names, and the report."""

import importlib.util

import pytest

from metalm_jax import testing
from metalm_jax.aot import compile_for_topology, format_report, parse_topology

# libtpu aborts on the suite's CPU-only compile flags: they are taken out (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("libtpu_reads_xla_flags")


def test_topology_names():
    assert parse_topology("v5p-128") == ("v5p:4x4x4", "v5p", 64)
    assert parse_topology("v4-128") == ("v4:4x4x4", "v4", 64)
    assert parse_topology("v5e-64") == ("v5e:8x8", "v5e", 64)
    assert parse_topology("v6e-8") == ("v6e:2x4", "v6e", 8)
    assert parse_topology("v5p:2x2x2") == ("v5p:2x2x2", "v5p", 8)
    with pytest.raises(ValueError, match="--topology 'tpu-9'"):
        parse_topology("tpu-9")


def test_kernel_names_from_compiled_or_lowered_text():
    """pallas_kernels reads compiled HLO and, where libtpu cannot print that, StableHLO."""
    from metalm_jax.aot import _kernels, pallas_kernels

    hlo = (
        '%a = custom-call(), custom_call_target="tpu_custom_call", config="splash_mha_fwd_x"'
        '\n%b = custom-call(), custom_call_target="tpu_custom_call", backend_config="other"'
    )
    assert pallas_kernels(hlo) == {"splash_mha_fwd_x": 1, "other": 1}
    stablehlo = '%0 = stablehlo.custom_call @tpu_custom_call(%q) {kernel_name = "splash_mha_dq_y"}'

    class Text:
        def __init__(self, text):
            self.text = text

        def as_text(self):
            if self.text is None:
                raise RuntimeError("INTERNAL: RET_CHECK failure\ndetails")
            return self.text

    assert _kernels(Text(hlo), Text(stablehlo)) == {"splash_mha_fwd_x": 1, "other": 1}
    got = _kernels(Text(None), Text(stablehlo))
    assert got.startswith("splash_mha_dq_y x1 (kernels defined in the lowered program")
    assert "RET_CHECK failure" in got and "details" not in got


@pytest.mark.slow  # 6-14 s (default tier: tests/conftest.py)
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed")
def test_compile_micro_model_for_v5e(monkeypatch):
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5p-8")  # quiets libtpu's host probing
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
    cfg = testing.micro_config()
    cfg.train.batch_size = 8
    report = compile_for_topology(cfg, "v5e-4")
    assert report["chips"] == 4 and report["devices"] == 4
    assert report["fits"] and 0 < report["temp_bytes"] < report["hbm_bytes"]
    assert report["model_flops_per_step"] > 0
    text = format_report(report)
    assert "v5e:2x2" in text and "fits" in text


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed")
def test_scanned_config_gets_its_estimate_from_an_unrolled_copy(monkeypatch):
    """A scanned decoder hides its layers from the cost model (the loop body counts once): with
    unrolled_estimate the FLOPs and MFU come from an unrolled copy, which counts every layer, so
    the compiler's FLOPs cover the model's explicit count (no remat here)."""
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5p-8")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
    cfg = testing.micro_config()
    cfg.train.batch_size = 8
    cfg.model.decoder.scan = True
    cfg.model.attention = "dense"
    lines = []
    report = compile_for_topology(cfg, "v5p-8", unrolled_estimate=True, log=lines.append)
    assert "unrolled copy" in lines[0] and "unrolled copy" in report["estimate_from"]
    counted = report["compiler_flops_per_device"] * report["chips"]
    assert 0.9 < counted / report["model_flops_per_step"] < 2.5, report
    assert 0 < report["estimated_mfu"] < 1
    assert "from an unrolled copy" in format_report(report)


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed")
@pytest.mark.slow  # over 10 s (default tier: tests/conftest.py)
def test_compile_micro_vision_language_model(monkeypatch):
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5p-8")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
    cfg = testing.micro_vl_config()
    cfg.train.batch_size = 8
    report = compile_for_topology(cfg, "v5e-4")
    assert report["fits"] and report["model_flops_per_step"] > 0


def test_one_chip_table_for_topologies_and_mfu():
    import jax

    from metalm_jax.parallel.chips import CHIPS, chip_for
    from metalm_jax.training.metrics import peak_flops

    # the longest device-kind prefix wins: "TPU v5 lite" is a v5e, not a v5p
    assert chip_for("TPU v5 lite") is CHIPS["v5e"] and chip_for("TPU v5e") is CHIPS["v5e"]
    assert chip_for("TPU v5") is CHIPS["v5p"] and chip_for("TPU v5p") is CHIPS["v5p"]
    assert chip_for("TPU v6 lite") is CHIPS["v6e"] and chip_for("TPU v4") is CHIPS["v4"]
    assert chip_for("NVIDIA H100 80GB HBM3") is CHIPS["h100"] and chip_for("TPU v9") is None
    # the topology names count what the table says (TensorCores on v4 / v5p, chips on v5e / v6e)
    assert parse_topology("v4-8")[2] == 8 // CHIPS["v4"].cores_per_chip == 4
    assert parse_topology("v6e-8")[2] == 8
    # MFU's peak: the whole host on CPU, an override per device otherwise
    assert peak_flops(0.0) == CHIPS["cpu"].peak_flops * jax.process_count()
    assert peak_flops(2.0) == 2.0 * len(jax.devices())


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed")
def test_splash_attention_kernels_in_the_v5p_program(monkeypatch):
    """model.attention=auto on a TPU topology: decoder (causal) and text encoder (bidirectional)
    attention compile to splash kernels, forward, dq and dkv for each of their 2 + 2 layers."""
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5p-8")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
    cfg = testing.micro_config()
    cfg.train.batch_size = 8
    cfg.data.seq_len = cfg.model.decoder.max_len = 128  # splash: L a multiple of 128
    cfg.spans.enc_length = 128
    cfg.model.text_encoder.rel_bias = False  # splash takes no additive bias
    assert cfg.model.attention == "auto"
    report = compile_for_topology(cfg, "v5p-8")
    kernels = report["pallas_kernels"]
    for kind in ("fwd", "dq", "dkv"):
        names = [n for n in kernels if n.startswith(f"splash_mha_{kind}_segmented")]
        assert sum(kernels[n] for n in names) == 4, kernels
    assert "splash_mha_fwd_segmented" in format_report(report)
