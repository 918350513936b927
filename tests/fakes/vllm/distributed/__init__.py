"""``vllm.distributed`` of the fake vLLM."""
