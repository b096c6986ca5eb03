"""The 7B-architecture efficiency benchmark (random weights): one format per process beside its own fp16."""
