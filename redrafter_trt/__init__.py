"""redrafter-trt: turn an Apple ReDrafter drafter plus a Llama/Qwen2 base into a TensorRT-LLM
explicit_draft_tokens checkpoint, check it, run it in PyTorch, and drive trtllm-build."""

__version__ = "0.1.0"
