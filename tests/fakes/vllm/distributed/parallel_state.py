"""``vllm.distributed.parallel_state`` of the fake vLLM: the teardown functions, logged."""

from .. import log_event


def destroy_model_parallel():
    log_event("teardown", what="model_parallel")


def destroy_distributed_environment():
    log_event("teardown", what="distributed")
