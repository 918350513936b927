"""``vllm.lora`` of the fake vLLM."""
