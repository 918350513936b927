"""Beam search as a decoding factor (issue 13): the hf backend runs transformers' own beam search
(deterministic: temperature and top-p do not apply); every other backend refuses it clearly."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from collapselab.config.spec import DecodingSpec, ModelSpec  # noqa: E402
from collapselab.errors import ModelError  # noqa: E402
from collapselab.models.base import ChatPrompt, load_model  # noqa: E402
from collapselab.models.formatting import render_prompt_ids  # noqa: E402


def test_hf_beam_search_is_transformers_own(tiny_model_dir):
    model = load_model(ModelSpec(id=f"hf/{tiny_model_dir}", dtype="float32", batch_size=2))
    try:
        prompts = [ChatPrompt("p1", "Write about the river.", "Be brief."),
                   ChatPrompt("p2", "A letter to a sister, please.", "Be brief.")]
        beams = DecodingSpec(num_beams=3, temperature=0.7, max_new_tokens=6, system_prompt="Be brief.")
        out = model.generate(prompts, beams)
        again = model.generate(prompts, beams.model_copy(update={"seed": 99, "temperature": 1.5}))
        assert [g.text for g in out] == [g.text for g in again]  # no sampling: seed and temperature do nothing
        for prompt, g in zip(prompts, out, strict=True):  # one prompt at a time, no padding: the reference
            ids = render_prompt_ids(model.tokenizer, prompt, model.is_chat)
            with torch.inference_mode():
                mask = torch.ones(1, len(ids), dtype=torch.long)
                ref = model.model.generate(torch.tensor([ids]), attention_mask=mask,
                                           num_beams=3, do_sample=False, max_new_tokens=6,
                                           eos_token_id=model.stop_ids, pad_token_id=model.pad_id)
            tokens = ref[0, len(ids):].tolist()
            end = next((j for j, t in enumerate(tokens) if t in set(model.stop_ids)), None)
            text = model.tokenizer.decode(tokens if end is None else tokens[:end], skip_special_tokens=True).strip()
            assert g.text == text
    finally:
        model.close()


def test_other_backends_refuse_beam_search():
    model = load_model(ModelSpec(id="mock/echo"))
    with pytest.raises(ModelError, match="num_beams 4 asks for beam search, which the 'mock' backend does not"):
        model.generate([ChatPrompt("p", "hello there")], DecodingSpec(num_beams=4))
