"""One module per notebook family: its parameter classes (defaults = the CPU smoke profile), the code it runs, and
the checks its record passes. :data:`NOTEBOOKS` says which class each notebook's runs take."""

from __future__ import annotations

import importlib

NOTEBOOKS = {
    "00_baseline": "baseline:BaselineParams",
    "01_teacher": "teacher:TeacherParams",
    "10_bnb_int8": "quantization:BnbInt8Params",
    "11_bnb_nf4": "quantization:BnbNF4Params",
    "12_gptq": "quantization:GPTQParams",
    "13_smoothquant": "quantization:SmoothQuantParams",
    "14_smoothquant_nf4": "quantization:SmoothQuantNF4Params",
    "15_gptq_bits": "quantization:GPTQBitsParams",
    "16_calibration_size": "quantization:CalibrationSizeParams",
    "20_wanda": "pruning:WandaParams",
    "21_wanda_2of4": "pruning:Wanda24Params",
    "22_sparsegpt": "pruning:SparseGPTParams",
    "23_dsnot": "pruning:DSnoTParams",
    "24_wanda_gptq": "pruning:WandaGPTQParams",
    "25_layer_pruning": "pruning:LayerPruneParams",
    "26_head_pruning": "pruning:HeadPruneParams",
    "27_prune_depth": "pruning:PruneDepthParams",
    "30_kd_data": "distillation:KDParams",
    "31_model_a": "students:StudentParams",
    "32_model_b": "students:ModelBParams",
    "33_ood_size": "students:OODSizeParams",
    "40_efficiency_7b": "studylib.bench.params:BenchmarkParams",
}


def params_class(notebook: str):
    """The parameter class of a notebook's runs."""
    from studylib.core.params import ParamsError

    if notebook not in NOTEBOOKS:
        raise ParamsError(f"unknown notebook {notebook!r}; known: {', '.join(NOTEBOOKS)}")
    module, _, name = NOTEBOOKS[notebook].partition(":")
    return getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
