"""Loads an exported directory with transformers (and peft) alone, in a process where importing
megamerge fails, and saves every class's outputs for the test to compare against megamerge's.

usage: python hf_export_worker.py REQUEST_JSON
REQUEST_JSON: a list of jobs (one interpreter start for all of them), each
    {"hf_dir", "out", "sequences", "classes": [auto class names], "adapter": dir or null,
     "generate": new bases for a greedy model.generate from "prompts" (optional)}
"""

import sys

sys.modules["megamerge"] = None  # any import of megamerge now raises ImportError

import json

import torch
import transformers
from safetensors.torch import save_file

OUTPUT_FIELDS = ("last_hidden_state", "token_mask", "base_to_token", "base_hidden_state", "logits")


def run_job(request: dict) -> None:
    hf_dir = request["hf_dir"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir, trust_remote_code=True)
    batch = tokenizer(request["sequences"], padding=True, return_tensors="pt")
    results = {"input_ids": batch["input_ids"].contiguous(),
               "attention_mask": batch["attention_mask"].contiguous()}
    for auto_name in request["classes"]:
        model = getattr(transformers, auto_name).from_pretrained(hf_dir, trust_remote_code=True).eval()
        if request.get("adapter"):
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, request["adapter"]).eval()
        with torch.no_grad():
            out = model(**batch)
        for field in OUTPUT_FIELDS:
            value = getattr(out, field, None)
            if value is not None:
                results[f"{auto_name}.{field}"] = value.contiguous()
        if request.get("generate"):
            prompts = tokenizer(request["prompts"], return_tensors="pt")
            generated = model.generate(**prompts, max_new_tokens=request["generate"], do_sample=False)
            results[f"{auto_name}.generated"] = generated.contiguous()
    save_file(results, request["out"], metadata={"transformers": transformers.__version__})


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        for job in json.load(f):
            run_job(job)
